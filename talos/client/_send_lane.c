/*
 * The producer's send() for its most common record, in C (optional; see producer.py).
 *
 * A keyless, headerless record with a bytes value, no partition and no
 * timestamp, going into the sticky partition's open batch that has room:
 * at 100 B every send but the one in about two thousand that opens a batch.
 * In Python that case costs about 1.5 us, most of it bytecode around a 0.1 us
 * append; here it is one call.
 *
 * SendLane.send(value) does exactly what Producer.send() does for that case,
 * under the same producer lock, on the same Python objects (the topic's
 * TopicBatches, its open batches, the producer's counters), and returns the
 * record's future. Whenever the case does not apply it returns None before
 * changing anything, and send() takes its Python path. Nothing is kept here
 * that the Python code does not also see.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

/* Interned attribute names. */
static PyObject *s_closed, *s_sticky, *s_open, *s_cap, *s_outcome, *s_size, *s_builder,
    *s_count, *s_outstanding, *s_append, *s_acquire, *s_release;
static PyObject *empty_tuple;

typedef struct {
    PyObject_HEAD
    PyObject *producer; /* Producer: _closed, _outstanding */
    PyObject *batches;  /* TopicBatches: sticky, cap */
    PyObject *open;     /* its open batch per partition (one list for its lifetime) */
    PyObject *mutex;    /* the producer's threading.Lock */
    PyObject *future;   /* RecordFuture(outcome, index) */
    Py_ssize_t fast_value_max;
    Py_ssize_t value_overhead;
} SendLane;

static int
SendLane_init(SendLane *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"producer", "batches", "mutex", "future", "fast_value_max",
                             "value_overhead", NULL};
    PyObject *producer, *batches, *mutex, *future;
    Py_ssize_t fast_value_max, value_overhead;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOnn", kwlist, &producer, &batches, &mutex,
                                     &future, &fast_value_max, &value_overhead))
        return -1;
    Py_INCREF(producer);
    Py_XSETREF(self->producer, producer);
    PyObject *open = PyObject_GetAttr(batches, s_open);
    if (open == NULL)
        return -1;
    if (!PyList_CheckExact(open)) {
        Py_DECREF(open);
        PyErr_SetString(PyExc_TypeError, "batches.open: must be a list");
        return -1;
    }
    Py_XSETREF(self->open, open);
    Py_INCREF(batches);
    Py_XSETREF(self->batches, batches);
    Py_INCREF(mutex);
    Py_XSETREF(self->mutex, mutex);
    Py_INCREF(future);
    Py_XSETREF(self->future, future);
    self->fast_value_max = fast_value_max;
    self->value_overhead = value_overhead;
    return 0;
}

static int
SendLane_traverse(SendLane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->producer);
    Py_VISIT(self->batches);
    Py_VISIT(self->open);
    Py_VISIT(self->mutex);
    Py_VISIT(self->future);
    return 0;
}

static int
SendLane_clear(SendLane *self)
{
    Py_CLEAR(self->producer);
    Py_CLEAR(self->batches);
    Py_CLEAR(self->open);
    Py_CLEAR(self->mutex);
    Py_CLEAR(self->future);
    return 0;
}

static void
SendLane_dealloc(SendLane *self)
{
    PyObject_GC_UnTrack(self);
    SendLane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An int attribute as a C integer; -1 with an exception set on failure. */
static int
get_ssize(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
set_ssize(PyObject *obj, PyObject *name, Py_ssize_t value)
{
    PyObject *v = PyLong_FromSsize_t(value);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

/* The open batch of the sticky partition, or NULL (no error) when there is none. */
static PyObject *
sticky_batch(SendLane *self, Py_ssize_t sticky)
{
    if (sticky >= PyList_GET_SIZE(self->open))
        return NULL;
    PyObject *batch = PyList_GET_ITEM(self->open, sticky);
    return batch == Py_None ? NULL : Py_NewRef(batch);
}

static int
lock_call(PyObject *mutex, PyObject *method)
{
    PyObject *r = PyObject_CallMethodNoArgs(mutex, method);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The appending part, with the lock held. NULL and no error: not this case (nothing changed). */
static PyObject *
append_locked(SendLane *self, Py_ssize_t sticky, PyObject *value, long long ts)
{
    PyObject *batch = sticky_batch(self, sticky);
    if (batch == NULL)
        return NULL;
    PyObject *result = NULL, *outcome = NULL, *builder = NULL, *ts_obj = NULL;
    Py_ssize_t size, cap, count, outstanding;
    outcome = PyObject_GetAttr(batch, s_outcome);
    if (outcome == NULL || outcome == Py_None) /* the Python path makes it */
        goto done;
    if (get_ssize(batch, s_size, &size) < 0 || get_ssize(self->batches, s_cap, &cap) < 0)
        goto done;
    if (size + PyBytes_GET_SIZE(value) + self->value_overhead >= cap) /* it would seal */
        goto done;
    builder = PyObject_GetAttr(batch, s_builder);
    ts_obj = PyLong_FromLongLong(ts);
    if (builder == NULL || ts_obj == NULL)
        goto done;
    PyObject *args[5] = {builder, value, Py_None, ts_obj, empty_tuple};
    PyObject *encoded = PyObject_VectorcallMethod(
        s_append, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (encoded == NULL)
        goto done;
    Py_ssize_t record = PyLong_AsSsize_t(encoded);
    Py_DECREF(encoded);
    if (record == -1 && PyErr_Occurred())
        goto done;
    /* The record is in: from here on an error can only be an allocation failure. */
    if (set_ssize(batch, s_size, size + record) < 0 || get_ssize(batch, s_count, &count) < 0 ||
        set_ssize(batch, s_count, count + 1) < 0 ||
        get_ssize(self->producer, s_outstanding, &outstanding) < 0 ||
        set_ssize(self->producer, s_outstanding, outstanding + 1) < 0)
        goto done;
    PyObject *index = PyLong_FromSsize_t(count);
    if (index == NULL)
        goto done;
    PyObject *fargs[2] = {outcome, index};
    result = PyObject_Vectorcall(self->future, fargs, 2, NULL);
    Py_DECREF(index);
done:
    Py_XDECREF(ts_obj);
    Py_XDECREF(builder);
    Py_XDECREF(outcome);
    Py_DECREF(batch);
    return result;
}

static PyObject *
SendLane_send(SendLane *self, PyObject *value)
{
    if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) > self->fast_value_max)
        Py_RETURN_NONE;
    PyObject *closed = PyObject_GetAttr(self->producer, s_closed);
    if (closed == NULL)
        return NULL;
    int is_closed = PyObject_IsTrue(closed);
    Py_DECREF(closed);
    if (is_closed != 0)
        return is_closed < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t sticky;
    if (get_ssize(self->batches, s_sticky, &sticky) < 0)
        return NULL;
    if (sticky < 0)
        Py_RETURN_NONE;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* time.time_ns() // 1_000_000 */
    long long ts = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (lock_call(self->mutex, s_acquire) < 0)
        return NULL;
    PyObject *result = append_locked(self, sticky, value, ts);
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb); /* release the lock whatever happened */
    if (lock_call(self->mutex, s_release) < 0) {
        Py_XDECREF(result);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return NULL;
    }
    PyErr_Restore(type, exc, tb);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static PyMethodDef SendLane_methods[] = {
    {"send", (PyCFunction)SendLane_send, METH_O,
     "send(value) -> the record's future, or None: take Producer.send()'s Python path"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SendLaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "talos.client._send_lane.SendLane",
    .tp_basicsize = sizeof(SendLane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Producer.send() for a keyless record into the sticky partition's open batch.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SendLane_init,
    .tp_traverse = (traverseproc)SendLane_traverse,
    .tp_clear = (inquiry)SendLane_clear,
    .tp_dealloc = (destructor)SendLane_dealloc,
    .tp_methods = SendLane_methods,
};

static struct PyModuleDef send_lane_module = {
    PyModuleDef_HEAD_INIT, "talos.client._send_lane",
    "Producer.send() for its most common record, in C (optional; see producer.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

static int
intern(PyObject **slot, const char *name)
{
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__send_lane(void)
{
    if (intern(&s_closed, "_closed") < 0 || intern(&s_sticky, "sticky") < 0 ||
        intern(&s_open, "open") < 0 || intern(&s_cap, "cap") < 0 ||
        intern(&s_outcome, "outcome") < 0 || intern(&s_size, "size") < 0 ||
        intern(&s_builder, "builder") < 0 || intern(&s_count, "count") < 0 ||
        intern(&s_outstanding, "_outstanding") < 0 || intern(&s_append, "append") < 0 ||
        intern(&s_acquire, "acquire") < 0 || intern(&s_release, "release") < 0)
        return NULL;
    empty_tuple = PyTuple_New(0);
    if (empty_tuple == NULL)
        return NULL;
    if (PyType_Ready(&SendLaneType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&send_lane_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SendLaneType);
    if (PyModule_AddObject(m, "SendLane", (PyObject *)&SendLaneType) < 0) {
        Py_DECREF(&SendLaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
