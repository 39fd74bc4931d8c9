/*
 * talos.record._native: the per-message loops of talos/record/batch.py in C.
 *
 * The byte layout is documented at the top of batch.py; this file follows it
 * and the pure-Python code there line for line, so both give the same bytes,
 * the same records and the same CorruptBatch messages for any input. Where an
 * exact answer needs Python's unbounded ints (a varint above 64 bits, a
 * timestamp outside i64) this code returns NotImplemented and the caller runs
 * the pure-Python path instead; where an input is not of the plain types
 * handled here (bytes, str, int, tuple/list), the encoder asks the pure-Python
 * encoder for the record's bytes, so argument errors read the same too.
 *
 * It is optional: batch.py falls back to pure Python when it is missing, and
 * TALOS_PURE=1 forces the fallback.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_HW_CRC 1
#endif

#define HEADER_SIZE 77
#define LENGTH_PREFIX 13
#define CRC_START 17
#define TAIL_SIZE (HEADER_SIZE - CRC_START)
#define MAX_VARINT_BYTES 10
#define MIN_RECORD_BYTES 5

/* Set by init(): talos.errors.CorruptBatch, the pure-Python one-record encoder,
 * and the pure-Python TupleMaker class (recognised so records are built here). */
static PyObject *CorruptBatch = NULL;
static PyObject *encode_record_py = NULL;
static PyObject *tuple_maker_class = NULL;
static PyObject *empty_tuple = NULL;
static PyObject *zero = NULL;

/* ---- CRC-32C (Castagnoli) ------------------------------------------------------------- */

static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            crc_table[k][n] = (crc_table[k - 1][n] >> 8) ^ crc_table[0][crc_table[k - 1][n] & 0xff];
}

static uint32_t
crc_soft(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#ifdef HAVE_HW_CRC
/* The SSE4.2 crc32 instruction, 8 bytes at a time in one stream (a few GB/s: far
 * above what a batch needs; google-crc32c's interleaved streams stay for bytes). */
__attribute__((target("sse4.2"))) static uint32_t
crc_hw_run(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    return ~crc_hw_run(~crc, p, n);
}

static int use_hw_crc = 0;
#endif

static uint32_t
crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
#ifdef HAVE_HW_CRC
    if (use_hw_crc)
        return crc_hw(crc, p, n);
#endif
    return crc_soft(crc, p, n);
}

/* ---- varints ------------------------------------------------------------------------ */

enum { V_OK = 0, V_TOO_LONG = 1, V_PAST_END = 2, V_BIG = 3 };

/* batch.varint.read_uvarint: V_BIG when the value is complete but needs more than 64 bits. */
static inline int
read_uvarint(const uint8_t *d, Py_ssize_t n, Py_ssize_t *pos, uint64_t *out)
{
    Py_ssize_t p = *pos, start = p;
    Py_ssize_t end = n < p + MAX_VARINT_BYTES ? n : p + MAX_VARINT_BYTES;
    uint64_t result = 0;
    int shift = 0, big = 0;
    while (p < end) {
        uint8_t byte = d[p++];
        uint64_t group = byte & 0x7f;
        if (shift == 63 && group > 1)
            big = 1;
        if (shift < 64)
            result |= group << shift;
        if (byte < 0x80) {
            *pos = p;
            *out = result;
            return big ? V_BIG : V_OK;
        }
        shift += 7;
    }
    return (p - start >= MAX_VARINT_BYTES) ? V_TOO_LONG : V_PAST_END;
}

static int
varint_error(int status)
{
    PyErr_SetString(CorruptBatch, status == V_TOO_LONG ? "varint longer than 10 bytes"
                                                       : "varint runs past the end of the records");
    return -1;
}

static inline int
uvarint_size(uint64_t v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *
put_uvarint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint64_t
zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* ---- Builder: the records area of a batch being built ------------------------------- */

/*
 * The records are appended straight into a bytes object that starts with
 * HEADER_SIZE reserved bytes; _seal() writes the header there and hands the
 * object out, so the finished batch is never copied. The builder keeps a
 * reference to it and copies it back only if it is used again afterwards.
 */
typedef struct {
    PyObject_HEAD
    PyObject *buf;   /* bytes owned by this builder alone (refcount 1), or NULL */
    PyObject *built; /* the last batch handed out by _seal(), or NULL */
    Py_ssize_t len;  /* bytes used in buf, HEADER_SIZE included */
    Py_ssize_t cap;
    Py_ssize_t count;
    long long first_ts;
    long long max_ts;
    int broken; /* an allocation failed while resizing: the records are gone */
} Builder;

static int
builder_broken(Builder *self)
{
    PyErr_SetString(PyExc_MemoryError,
                    "batch builder lost its records to an allocation failure; discard it");
    return -1;
}

static int
builder_reserve(Builder *self, Py_ssize_t extra)
{
    if (self->broken)
        return builder_broken(self);
    if (self->buf == NULL) {
        Py_ssize_t cap = HEADER_SIZE + 256;
        if (self->built != NULL) {
            cap = self->len > cap ? self->len : cap;
        }
        PyObject *buf = PyBytes_FromStringAndSize(NULL, cap);
        if (buf == NULL)
            return -1;
        if (self->built != NULL) {
            memcpy(PyBytes_AS_STRING(buf), PyBytes_AS_STRING(self->built), self->len);
            Py_CLEAR(self->built);
        } else {
            self->len = HEADER_SIZE;
        }
        self->buf = buf;
        self->cap = cap;
    }
    if (extra > PY_SSIZE_T_MAX - self->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = self->len + extra;
    if (need > self->cap) {
        Py_ssize_t cap = self->cap < PY_SSIZE_T_MAX / 2 ? self->cap * 2 : PY_SSIZE_T_MAX;
        if (cap < need)
            cap = need;
        if (_PyBytes_Resize(&self->buf, cap) < 0) { /* it freed the old buffer */
            self->broken = 1;
            return -1;
        }
        self->cap = cap;
    }
    return 0;
}

static PyObject *
Builder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Builder *self = (Builder *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->len = HEADER_SIZE;
    return (PyObject *)self;
}

static int
Builder_init(Builder *self, PyObject *args, PyObject *kwds)
{
    /* The Python subclass validates its own arguments; here only the state is reset. */
    Py_CLEAR(self->buf);
    Py_CLEAR(self->built);
    self->len = HEADER_SIZE;
    self->cap = 0;
    self->count = 0;
    self->first_ts = 0;
    self->max_ts = 0;
    return 0;
}

static void
Builder_dealloc(Builder *self)
{
    Py_CLEAR(self->buf);
    Py_CLEAR(self->built);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The parts of one header the fast path encodes: a str name (as UTF-8) and bytes or None. */
typedef struct {
    const char *name;
    Py_ssize_t name_len;
    PyObject *value; /* bytes or Py_None */
} HeaderPart;

#define MAX_FAST_HEADERS 32

static PyObject *
builder_append_slow(Builder *self, PyObject *value, PyObject *key, PyObject *ts, PyObject *headers)
{
    PyObject *args[6];
    PyObject *count = PyLong_FromSsize_t(self->count);
    PyObject *first = PyLong_FromLongLong(self->first_ts);
    if (count == NULL || first == NULL) {
        Py_XDECREF(count);
        Py_XDECREF(first);
        return NULL;
    }
    args[0] = value;
    args[1] = key;
    args[2] = ts;
    args[3] = headers;
    args[4] = count;
    args[5] = first;
    PyObject *parts = PyObject_Vectorcall(encode_record_py, args, 6, NULL);
    Py_DECREF(count);
    Py_DECREF(first);
    if (parts == NULL)
        return NULL;
    /* (length prefix, record): both bytes, made by the pure encoder */
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 2 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(parts, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(parts, 1))) {
        Py_DECREF(parts);
        PyErr_SetString(PyExc_SystemError, "encode_record must return (bytes, bytes)");
        return NULL;
    }
    long long t = PyLong_AsLongLong(ts);
    if (t == -1 && PyErr_Occurred()) {
        Py_DECREF(parts);
        return NULL;
    }
    PyObject *a = PyTuple_GET_ITEM(parts, 0), *b = PyTuple_GET_ITEM(parts, 1);
    Py_ssize_t size = PyBytes_GET_SIZE(a) + PyBytes_GET_SIZE(b);
    if (builder_reserve(self, size) < 0) {
        Py_DECREF(parts);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(self->buf) + self->len;
    memcpy(out, PyBytes_AS_STRING(a), PyBytes_GET_SIZE(a));
    memcpy(out + PyBytes_GET_SIZE(a), PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(parts);
    self->len += size;
    if (self->count == 0)
        self->first_ts = self->max_ts = t;
    else if (t > self->max_ts)
        self->max_ts = t;
    self->count++;
    return PyLong_FromSsize_t(size);
}

static const char *const append_kwlist[] = {"value", "key", "timestamp_ms", "headers"};

static PyObject *
Builder_append(Builder *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *params[4] = {NULL, Py_None, zero, empty_tuple};
    if (nargs > 4) {
        PyErr_Format(PyExc_TypeError, "append() takes at most 4 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        params[i] = args[i];
    if (kwnames != NULL) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, k);
            int found = 0;
            for (int j = 0; j < 4; j++) {
                if (PyUnicode_CompareWithASCIIString(name, append_kwlist[j]) == 0) {
                    if (j < nargs) {
                        PyErr_Format(PyExc_TypeError, "append() got multiple values for '%s'",
                                     append_kwlist[j]);
                        return NULL;
                    }
                    params[j] = args[nargs + k];
                    found = 1;
                    break;
                }
            }
            if (!found) {
                PyErr_Format(PyExc_TypeError, "append() got an unexpected keyword argument %R",
                             name);
                return NULL;
            }
        }
    }
    if (params[0] == NULL) {
        PyErr_SetString(PyExc_TypeError, "append() missing required argument 'value'");
        return NULL;
    }
    PyObject *value = params[0], *key = params[1], *headers = params[3];
    PyObject *ts_obj = params[2];
    long long ts = 0;
    if (!PyLong_CheckExact(ts_obj))
        goto slow;
    int overflow = 0;
    ts = PyLong_AsLongLongAndOverflow(ts_obj, &overflow);
    if (overflow)
        goto slow;
    if (ts == -1 && PyErr_Occurred())
        return NULL;
    if (value != Py_None && !PyBytes_CheckExact(value))
        goto slow;
    if (key != Py_None && !PyBytes_CheckExact(key))
        goto slow;
    if (!PyTuple_CheckExact(headers)) {
        if (!PyList_CheckExact(headers))
            goto slow;
        if (PyList_GET_SIZE(headers) == 0) {
            headers = empty_tuple;
        } else { /* a snapshot: nothing may change the list under the pointers kept below */
            PyObject *snapshot = PyList_AsTuple(headers);
            if (snapshot == NULL)
                return NULL;
            PyObject *result = Builder_append(self, (PyObject *[]){value, key, ts_obj, snapshot},
                                              4, NULL);
            Py_DECREF(snapshot);
            return result;
        }
    }

    int64_t delta = 0;
    if (self->count && __builtin_sub_overflow((int64_t)ts, (int64_t)self->first_ts, &delta))
        goto slow;

    /* Size of the record after its length prefix. */
    uint64_t zdelta = zigzag(delta);
    Py_ssize_t body = uvarint_size(zdelta);
    Py_ssize_t key_len = 0, value_len = 0;
    if (key == Py_None) {
        body += 1;
    } else {
        key_len = PyBytes_GET_SIZE(key);
        body += uvarint_size((uint64_t)key_len << 1) + key_len;
    }
    if (value == Py_None) {
        body += 1;
    } else {
        value_len = PyBytes_GET_SIZE(value);
        body += uvarint_size((uint64_t)value_len << 1) + value_len;
    }
    Py_ssize_t nheaders = PyTuple_GET_SIZE(headers);
    HeaderPart parts[MAX_FAST_HEADERS];
    if (nheaders > MAX_FAST_HEADERS)
        goto slow;
    body += uvarint_size((uint64_t)nheaders);
    for (Py_ssize_t i = 0; i < nheaders; i++) {
        PyObject *pair = PyTuple_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto slow;
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *hvalue = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(name) || (hvalue != Py_None && !PyBytes_CheckExact(hvalue)))
            goto slow;
        parts[i].name = PyUnicode_AsUTF8AndSize(name, &parts[i].name_len);
        if (parts[i].name == NULL) { /* a lone surrogate: the pure path says which header */
            PyErr_Clear();
            goto slow;
        }
        parts[i].value = hvalue;
        body += uvarint_size((uint64_t)parts[i].name_len) + parts[i].name_len;
        if (hvalue == Py_None)
            body += 1;
        else
            body += uvarint_size((uint64_t)PyBytes_GET_SIZE(hvalue) << 1) +
                    PyBytes_GET_SIZE(hvalue);
    }
    Py_ssize_t size = uvarint_size((uint64_t)body << 1) + body;
    if (builder_reserve(self, size) < 0)
        return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(self->buf) + self->len;
    out = put_uvarint(out, (uint64_t)body << 1);
    out = put_uvarint(out, zdelta);
    if (key == Py_None) {
        *out++ = 1;
    } else {
        out = put_uvarint(out, (uint64_t)key_len << 1);
        memcpy(out, PyBytes_AS_STRING(key), key_len);
        out += key_len;
    }
    if (value == Py_None) {
        *out++ = 1;
    } else {
        out = put_uvarint(out, (uint64_t)value_len << 1);
        memcpy(out, PyBytes_AS_STRING(value), value_len);
        out += value_len;
    }
    out = put_uvarint(out, (uint64_t)nheaders);
    for (Py_ssize_t i = 0; i < nheaders; i++) {
        out = put_uvarint(out, (uint64_t)parts[i].name_len);
        memcpy(out, parts[i].name, parts[i].name_len);
        out += parts[i].name_len;
        if (parts[i].value == Py_None) {
            *out++ = 1;
        } else {
            Py_ssize_t n = PyBytes_GET_SIZE(parts[i].value);
            out = put_uvarint(out, (uint64_t)n << 1);
            memcpy(out, PyBytes_AS_STRING(parts[i].value), n);
            out += n;
        }
    }
    self->len += size;
    if (self->count == 0)
        self->first_ts = self->max_ts = ts;
    else if (ts > self->max_ts)
        self->max_ts = ts;
    self->count++;
    return PyLong_FromSsize_t(size);

slow:
    return builder_append_slow(self, value, key, ts_obj, headers);
}

/* _seal(base_offset, tail): writes magic, base offset, length, CRC and the 60-byte tail
 * (attributes .. origin_offset, packed by the caller) in front of the records and returns
 * the whole batch. Uncompressed batches only. */
static PyObject *
Builder_seal(Builder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_seal(base_offset, tail)");
        return NULL;
    }
    long long base_offset = PyLong_AsLongLong(args[0]);
    if (base_offset == -1 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != TAIL_SIZE) {
        PyErr_Format(PyExc_ValueError, "tail: must be %d bytes", TAIL_SIZE);
        return NULL;
    }
    if (builder_reserve(self, 0) < 0)
        return NULL;
    Py_ssize_t total = self->len;
    if (total - LENGTH_PREFIX > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "batch too long");
        return NULL;
    }
    if (total != self->cap) {
        if (_PyBytes_Resize(&self->buf, total) < 0) {
            self->broken = 1;
            return NULL;
        }
        self->cap = total;
    }
    uint8_t *b = (uint8_t *)PyBytes_AS_STRING(self->buf);
    uint32_t length = (uint32_t)(total - LENGTH_PREFIX);
    uint64_t base = (uint64_t)base_offset;
    b[0] = 1;
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(base >> (8 * i));
    for (int i = 0; i < 4; i++)
        b[9 + i] = (uint8_t)(length >> (8 * i));
    memcpy(b + CRC_START, PyBytes_AS_STRING(args[1]), TAIL_SIZE);
    uint32_t crc = crc32c(0, b + CRC_START, (size_t)(total - CRC_START));
    for (int i = 0; i < 4; i++)
        b[13 + i] = (uint8_t)(crc >> (8 * i));
    PyObject *batch = self->buf;
    self->buf = NULL;
    Py_XSETREF(self->built, batch);
    Py_INCREF(batch);
    return batch;
}

/* The records area as bytes (for compression). */
static PyObject *
Builder_records(Builder *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *src = self->buf != NULL ? self->buf : self->built;
    if (src == NULL)
        return PyBytes_FromStringAndSize(NULL, 0);
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(src) + HEADER_SIZE, self->len - HEADER_SIZE);
}

static PyObject *
Builder_get_count(Builder *self, void *closure)
{
    return PyLong_FromSsize_t(self->count);
}

static PyObject *
Builder_get_size(Builder *self, void *closure)
{
    return PyLong_FromSsize_t(self->len);
}

static PyObject *
Builder_get_first_ts(Builder *self, void *closure)
{
    return PyLong_FromLongLong(self->first_ts);
}

static PyObject *
Builder_get_max_ts(Builder *self, void *closure)
{
    return PyLong_FromLongLong(self->max_ts);
}

static PyMethodDef Builder_methods[] = {
    {"append", (PyCFunction)(void (*)(void))Builder_append, METH_FASTCALL | METH_KEYWORDS,
     "append(value, key=None, timestamp_ms=0, headers=()) -> encoded size of the record"},
    {"_seal", (PyCFunction)(void (*)(void))Builder_seal, METH_FASTCALL,
     "_seal(base_offset, tail) -> the finished uncompressed batch"},
    {"_records", (PyCFunction)Builder_records, METH_NOARGS, "the records area as bytes"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Builder_getset[] = {
    {"record_count", (getter)Builder_get_count, NULL, "records appended", NULL},
    {"size_in_bytes", (getter)Builder_get_size, NULL, "batch size if built now, uncompressed",
     NULL},
    {"_count", (getter)Builder_get_count, NULL, NULL, NULL},
    {"_first_ts", (getter)Builder_get_first_ts, NULL, NULL, NULL},
    {"_max_ts", (getter)Builder_get_max_ts, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "talos.record._native.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The records area of a batch being built (base of batch.BatchBuilder).",
    .tp_new = Builder_new,
    .tp_init = (initproc)Builder_init,
    .tp_dealloc = (destructor)Builder_dealloc,
    .tp_methods = Builder_methods,
    .tp_getset = Builder_getset,
};

/* ---- checking and decoding the records of one batch --------------------------------- */

#define NOT_IMPLEMENTED 1 /* return value: the caller must use the pure-Python path */

static int
index_error(void)
{
    PyErr_SetString(CorruptBatch, "a record runs past the end of the batch");
    return -1;
}

/* The inline varint reads of batch.py. READ1: the one-byte case inline; READ2: one and
 * two bytes inline. Both then call read_uvarint, as the Python does, so an index past the
 * buffer and a varint cut short give the same error as there. ``big`` is set to V_BIG's
 * meaning (a value wider than 64 bits) for the caller to decide. */
#define READ1(z)                                                                              \
    do {                                                                                      \
        if (p >= n)                                                                           \
            return index_error();                                                             \
        big = 0;                                                                              \
        if (d[p] < 0x80) {                                                                    \
            (z) = d[p++];                                                                     \
        } else {                                                                              \
            int st_ = read_uvarint(d, n, &p, &(z));                                           \
            if (st_ == V_BIG)                                                                 \
                big = 1;                                                                      \
            else if (st_ != V_OK)                                                             \
                return varint_error(st_);                                                     \
        }                                                                                     \
    } while (0)

#define READ2(z)                                                                              \
    do {                                                                                      \
        if (p >= n)                                                                           \
            return index_error();                                                             \
        big = 0;                                                                              \
        if (d[p] < 0x80) {                                                                    \
            (z) = d[p++];                                                                     \
        } else {                                                                              \
            if (p + 1 >= n)                                                                   \
                return index_error();                                                         \
            if (d[p + 1] < 0x80) {                                                            \
                (z) = (uint64_t)(d[p] & 0x7f) | ((uint64_t)d[p + 1] << 7);                    \
                p += 2;                                                                       \
            } else {                                                                          \
                int st_ = read_uvarint(d, n, &p, &(z));                                       \
                if (st_ == V_BIG)                                                             \
                    big = 1;                                                                  \
                else if (st_ != V_OK)                                                         \
                    return varint_error(st_);                                                 \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* p + (z >> 1) > limit, for a z that may be wider than 64 bits (big). */
static inline int
runs_past(Py_ssize_t p, uint64_t z, int big, Py_ssize_t limit)
{
    if (big || p > limit)
        return 1;
    return (z >> 1) > (uint64_t)(limit - p);
}

static int
record_error(Py_ssize_t index, const char *what)
{
    PyErr_Format(CorruptBatch, "record %zd: %s", index, what);
    return -1;
}

/* batch._check_headers / _decode_headers: out is NULL when only checking.
 * Returns 0, -1 (error set) or NOT_IMPLEMENTED. */
static int
do_headers(const uint8_t *d, Py_ssize_t n, Py_ssize_t *pos, Py_ssize_t record_end,
           Py_ssize_t index, PyObject **out)
{
    Py_ssize_t p = *pos;
    uint64_t count, size, z;
    int st = read_uvarint(d, n, &p, &count);
    if (st == V_BIG)
        return NOT_IMPLEMENTED; /* the message prints the count */
    if (st != V_OK)
        return varint_error(st);
    if (p > record_end || count > (uint64_t)((record_end - p) / 2)) {
        PyErr_Format(CorruptBatch, "record %zd: %llu headers do not fit", index,
                     (unsigned long long)count);
        return -1;
    }
    PyObject *list = NULL;
    if (out != NULL) {
        list = PyTuple_New((Py_ssize_t)count);
        if (list == NULL)
            return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        st = read_uvarint(d, n, &p, &size);
        if (st != V_OK && st != V_BIG) {
            Py_XDECREF(list);
            return varint_error(st);
        }
        if (st == V_BIG || p > record_end || size > (uint64_t)(record_end - p)) {
            Py_XDECREF(list);
            return record_error(index, "bad header key length");
        }
        PyObject *name = PyUnicode_DecodeUTF8((const char *)d + p, (Py_ssize_t)size, NULL);
        if (name == NULL) {
            Py_XDECREF(list);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                return -1;
            PyErr_Clear();
            return record_error(index, "header key is not UTF-8");
        }
        p += (Py_ssize_t)size;
        st = read_uvarint(d, n, &p, &z);
        if (st != V_OK && st != V_BIG) {
            Py_DECREF(name);
            Py_XDECREF(list);
            return varint_error(st);
        }
        PyObject *value = NULL;
        if (st == V_OK && z == 1) {
            value = Py_None;
            Py_INCREF(value);
        } else if ((z & 1) || runs_past(p, z, st == V_BIG, record_end)) {
            Py_DECREF(name);
            Py_XDECREF(list);
            return record_error(index, "bad header value length");
        } else {
            if (list != NULL) {
                value = PyBytes_FromStringAndSize((const char *)d + p, (Py_ssize_t)(z >> 1));
                if (value == NULL) {
                    Py_DECREF(name);
                    Py_DECREF(list);
                    return -1;
                }
            }
            p += (Py_ssize_t)(z >> 1);
        }
        if (list != NULL) {
            PyObject *pair = PyTuple_Pack(2, name, value);
            Py_DECREF(name);
            Py_DECREF(value);
            if (pair == NULL) {
                Py_DECREF(list);
                return -1;
            }
            PyTuple_SET_ITEM(list, (Py_ssize_t)i, pair);
        } else {
            Py_DECREF(name);
            Py_XDECREF(value);
        }
    }
    *pos = p;
    if (out != NULL)
        *out = list;
    return 0;
}

/* How a decoded record becomes a Python object. */
typedef struct {
    PyObject *make;        /* called with (value, key, headers, timestamp_ms, offset) */
    PyTypeObject *tuple_t; /* or: a tuple subclass built directly as prefix + (offset, ...) */
    PyObject *prefix;      /* tuple */
} Maker;

static PyObject *
make_record(Maker *m, PyObject *value, PyObject *key, PyObject *headers, long long ts,
            long long offset)
{
    PyObject *ts_obj = PyLong_FromLongLong(ts);
    PyObject *off_obj = PyLong_FromLongLong(offset);
    PyObject *rec = NULL;
    if (ts_obj == NULL || off_obj == NULL)
        goto done;
    if (m->tuple_t != NULL) {
        Py_ssize_t k = PyTuple_GET_SIZE(m->prefix);
        rec = m->tuple_t->tp_alloc(m->tuple_t, k + 5);
        if (rec == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < k; i++) {
            PyObject *item = PyTuple_GET_ITEM(m->prefix, i);
            Py_INCREF(item);
            PyTuple_SET_ITEM(rec, i, item);
        }
        Py_INCREF(key);
        Py_INCREF(value);
        Py_INCREF(headers);
        PyTuple_SET_ITEM(rec, k, off_obj);
        PyTuple_SET_ITEM(rec, k + 1, key);
        PyTuple_SET_ITEM(rec, k + 2, value);
        PyTuple_SET_ITEM(rec, k + 3, headers);
        PyTuple_SET_ITEM(rec, k + 4, ts_obj);
        return rec;
    }
    PyObject *args[5] = {value, key, headers, ts_obj, off_obj};
    rec = PyObject_Vectorcall(m->make, args, 5, NULL);
done:
    Py_XDECREF(ts_obj);
    Py_XDECREF(off_obj);
    return rec;
}

/* batch._check_records (records == NULL) and batch._decode_records (records != NULL).
 * Returns 0, -1 (error set) or NOT_IMPLEMENTED. */
static int
walk_records(const uint8_t *d, Py_ssize_t n, Py_ssize_t p, Py_ssize_t end, uint64_t count,
             long long base_offset, long long first_ts, Maker *maker, PyObject *records)
{
    int big = 0;
    uint64_t z;
    int decoding = records != NULL;
    if (count > (uint64_t)((end - p) / MIN_RECORD_BYTES)) {
        PyErr_Format(CorruptBatch, "%zd bytes cannot hold %llu records", end - p,
                     (unsigned long long)count);
        return -1;
    }
    for (Py_ssize_t index = 0; (uint64_t)index < count; index++) {
        READ2(z);
        if ((z & 1) || runs_past(p, z, big, end))
            return record_error(index, "bad length");
        Py_ssize_t record_end = p + (Py_ssize_t)(z >> 1);
        int64_t timestamp = 0;
        if (decoding) {
            READ2(z);
            if (big)
                return NOT_IMPLEMENTED;
            int64_t delta = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
            if (__builtin_add_overflow((int64_t)first_ts, delta, &timestamp))
                return NOT_IMPLEMENTED;
        } else {
            READ1(z);
        }
        PyObject *key = NULL, *value = NULL, *headers = NULL;
        if (decoding)
            READ2(z);
        else
            READ1(z);
        if (!big && z == 1) {
            key = Py_None;
        } else if ((z & 1) || runs_past(p, z, big, record_end)) {
            return record_error(index, "bad key length");
        } else {
            if (decoding) {
                key = PyBytes_FromStringAndSize((const char *)d + p, (Py_ssize_t)(z >> 1));
                if (key == NULL)
                    return -1;
            }
            p += (Py_ssize_t)(z >> 1);
        }
#define FAIL_KEY(expr)                                                                        \
    do {                                                                                      \
        if (key != NULL && key != Py_None)                                                    \
            Py_DECREF(key);                                                                   \
        return (expr);                                                                        \
    } while (0)
        /* READ2 returns on error: wrap it so a decoded key is not leaked. */
        if (p >= n)
            FAIL_KEY(index_error());
        big = 0;
        if (d[p] < 0x80) {
            z = d[p++];
        } else {
            if (p + 1 >= n)
                FAIL_KEY(index_error());
            if (d[p + 1] < 0x80) {
                z = (uint64_t)(d[p] & 0x7f) | ((uint64_t)d[p + 1] << 7);
                p += 2;
            } else {
                int st = read_uvarint(d, n, &p, &z);
                if (st == V_BIG)
                    big = 1;
                else if (st != V_OK)
                    FAIL_KEY(varint_error(st));
            }
        }
        if (!big && z == 1) {
            value = Py_None;
        } else if ((z & 1) || runs_past(p, z, big, record_end)) {
            FAIL_KEY(record_error(index, "bad value length"));
        } else {
            if (decoding) {
                value = PyBytes_FromStringAndSize((const char *)d + p, (Py_ssize_t)(z >> 1));
                if (value == NULL)
                    FAIL_KEY(-1);
            }
            p += (Py_ssize_t)(z >> 1);
        }
#undef FAIL_KEY
#define FAIL(expr)                                                                            \
    do {                                                                                      \
        if (key != NULL && key != Py_None)                                                    \
            Py_DECREF(key);                                                                   \
        if (value != NULL && value != Py_None)                                                \
            Py_DECREF(value);                                                                 \
        Py_XDECREF(headers);                                                                  \
        return (expr);                                                                        \
    } while (0)
        if (p >= n)
            FAIL(index_error());
        if (d[p] == 0) {
            p += 1;
            if (decoding) {
                headers = empty_tuple;
                Py_INCREF(headers);
            }
        } else {
            int st = do_headers(d, n, &p, record_end, index, decoding ? &headers : NULL);
            if (st != 0)
                FAIL(st);
        }
        if (p != record_end)
            FAIL(record_error(index, "length does not match its fields"));
        if (decoding) {
            PyObject *rec = make_record(maker, value, key, headers, timestamp,
                                        base_offset + (long long)index);
            if (rec == NULL)
                FAIL(-1);
            int rc = PyList_Append(records, rec);
            Py_DECREF(rec);
            if (rc < 0)
                FAIL(-1);
            if (key != Py_None)
                Py_DECREF(key);
            if (value != Py_None)
                Py_DECREF(value);
            Py_DECREF(headers);
        }
#undef FAIL
    }
    if (p != end) {
        PyErr_Format(CorruptBatch, "%zd bytes after the last record", end - p);
        return -1;
    }
    return 0;
}

static int
get_span(PyObject *const *args, Py_buffer *view, Py_ssize_t *start, Py_ssize_t *end)
{
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return -1;
    *start = PyLong_AsSsize_t(args[1]);
    *end = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        PyBuffer_Release(view);
        return -1;
    }
    if (*start < 0 || *end < *start || *end > view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "start/end: outside the buffer");
        return -1;
    }
    return 0;
}

/* check_records(data, start, end, count): None, CorruptBatch, or NotImplemented. */
static PyObject *
native_check_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "check_records(data, start, end, count)");
        return NULL;
    }
    Py_buffer view;
    Py_ssize_t start, end;
    unsigned long long count = PyLong_AsUnsignedLongLong(args[3]);
    if (count == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (get_span(args, &view, &start, &end) < 0)
        return NULL;
    int rc = walk_records((const uint8_t *)view.buf, view.len, start, end, count, 0, 0, NULL,
                          NULL);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    if (rc == NOT_IMPLEMENTED)
        Py_RETURN_NOTIMPLEMENTED;
    Py_RETURN_NONE;
}

/* decode_records(data, start, end, count, base_offset, first_ts, make): a list, CorruptBatch,
 * or NotImplemented. */
static PyObject *
native_decode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_records(data, start, end, count, base_offset, first_ts, make)");
        return NULL;
    }
    unsigned long long count = PyLong_AsUnsignedLongLong(args[3]);
    long long base_offset = PyLong_AsLongLong(args[4]);
    long long first_ts = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    Maker maker = {args[6], NULL, NULL};
    PyObject *cls = NULL, *prefix = NULL;
    if (tuple_maker_class != NULL && (PyObject *)Py_TYPE(args[6]) == tuple_maker_class) {
        cls = PyObject_GetAttrString(args[6], "cls");
        prefix = cls ? PyObject_GetAttrString(args[6], "prefix") : NULL;
        if (prefix == NULL) {
            Py_XDECREF(cls);
            return NULL;
        }
        if (PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type) &&
            PyTuple_CheckExact(prefix)) {
            maker.tuple_t = (PyTypeObject *)cls;
            maker.prefix = prefix;
        }
    }
    Py_buffer view;
    Py_ssize_t start, end;
    PyObject *records = NULL;
    if (get_span(args, &view, &start, &end) < 0)
        goto out;
    records = PyList_New(0);
    if (records != NULL) {
        int rc = walk_records((const uint8_t *)view.buf, view.len, start, end, count, base_offset,
                              first_ts, &maker, records);
        if (rc != 0) {
            Py_CLEAR(records);
            if (rc == NOT_IMPLEMENTED) {
                records = Py_NotImplemented;
                Py_INCREF(records);
            }
        }
    }
    PyBuffer_Release(&view);
out:
    Py_XDECREF(cls);
    Py_XDECREF(prefix);
    return records;
}

/* crc32c(data, crc=0): CRC-32C of any contiguous buffer, without copying it. */
static PyObject *
native_crc32c(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c(data, crc=0)");
        return NULL;
    }
    unsigned long crc = 0;
    if (nargs == 2) {
        crc = PyLong_AsUnsignedLong(args[1]);
        if (crc == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        if (crc > 0xffffffffUL) {
            PyErr_SetString(PyExc_ValueError, "crc: must fit in 32 bits");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint32_t result;
    if (view.len >= 64 * 1024) {
        Py_BEGIN_ALLOW_THREADS result = crc32c((uint32_t)crc, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        result = crc32c((uint32_t)crc, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(result);
}

/* init(CorruptBatch, encode_record, TupleMaker): the pure-Python pieces this module uses. */
static PyObject *
native_init(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "init(CorruptBatch, encode_record, TupleMaker)");
        return NULL;
    }
    Py_XSETREF(CorruptBatch, Py_NewRef(args[0]));
    Py_XSETREF(encode_record_py, Py_NewRef(args[1]));
    Py_XSETREF(tuple_maker_class, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init", (PyCFunction)(void (*)(void))native_init, METH_FASTCALL, NULL},
    {"check_records", (PyCFunction)(void (*)(void))native_check_records, METH_FASTCALL, NULL},
    {"decode_records", (PyCFunction)(void (*)(void))native_decode_records, METH_FASTCALL, NULL},
    {"crc32c", (PyCFunction)(void (*)(void))native_crc32c, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "talos.record._native",
    "Native record batch encoding and decoding (optional; see batch.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw_crc = __builtin_cpu_supports("sse4.2") != 0;
#endif
    empty_tuple = PyTuple_New(0);
    zero = PyLong_FromLong(0);
    if (empty_tuple == NULL || zero == NULL)
        return NULL;
    if (PyType_Ready(&BuilderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
#ifdef HAVE_HW_CRC
    PyModule_AddIntConstant(m, "HARDWARE_CRC", use_hw_crc);
#else
    PyModule_AddIntConstant(m, "HARDWARE_CRC", 0);
#endif
    return m;
}
