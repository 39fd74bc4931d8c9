"""The process heap (glibc malloc): keep freed memory for reuse, give it back on purpose.

On a virtual machine, a page a process touches for the first time costs a
fault in the guest and often one in the host. Measured on the 2-core VM of
bench/README.md: writing into never-touched pages runs at 0.25-1 GB per
CPU-second, into pages already mapped at 8 GB per CPU-second. glibc, left to
itself, serves blocks of 128 KiB and more from fresh mmaps and hands the free
top of its heap back to the kernel; a producer's batches (256 KiB, grown by
realloc, freed on the I/O thread) and a broker's requests then fault in new
pages again and again. Keeping freed memory (up to the thresholds below)
made 1 KB produce 20% faster with it in the producer process and 10-15% with
it in the broker.

A library should not change a process-wide setting behind its user's back:
the broker (our own process) calls :func:`keep_freed_memory`, and so does an
application that produces a lot (the README recommends it; Talos's bench
load generator does). The other systems' load generators in ``make bench``
keep glibc's defaults: this setting and ``gc.freeze()`` together made Redis's
Python client 6-9% slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

# mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Free memory at the top of the heap kept mapped before glibc trims it.
TRIM_THRESHOLD = 64 * 1024 * 1024
#: Blocks from this size are mmapped (glibc's own dynamic ceiling on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024


def _load_libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def keep_freed_memory() -> bool:
    """Keep up to TRIM_THRESHOLD of freed heap and serve blocks below MMAP_THRESHOLD from it.

    A threshold already given through glibc's environment (MALLOC_TRIM_THRESHOLD_,
    MALLOC_MMAP_THRESHOLD_) is left as given. False where malloc is not glibc's.
    """
    if _LIBC is None:
        return False
    for param, value, env in (
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
    ):
        if env not in os.environ and not _LIBC.mallopt(param, value):
            log.debug("mallopt(%d, %d) refused", param, value)
    return True


def release_free_heap() -> None:
    """glibc's malloc_trim(0): returns free heap pages to the OS. Python's allocator
    frees memory to malloc but malloc keeps it, so without this a broker's RSS stays at
    its peak after producer entries expire. A no-op without glibc."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
