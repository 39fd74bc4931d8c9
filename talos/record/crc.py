"""CRC-32C (Castagnoli), the checksum of every record batch.

This is the one seam to google-crc32c (hardware CRC, about 23 GB/s). Its C
entry points accept only immutable ``bytes``; other buffers go to the native
accelerator (``_native.c``, hardware CRC too, read in place) when it is built,
else to google-crc32c in cache-sized copies, so a memoryview over a large
segment costs little more than the CRC itself and never a full-size copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import google_crc32c

from talos.accel import load_native

if TYPE_CHECKING:
    from talos.record import _native
else:
    _native = load_native()

_value: Callable[[bytes], int] = google_crc32c.value
_extend: Callable[[int, bytes], int] = google_crc32c.extend

# Copies of this size stay in the L2 cache between the copy and the CRC; one
# copy is fastest below it, chunks win above it (measured on the dev machine).
_CHUNK = 256 * 1024

Buffer = bytes | bytearray | memoryview


def crc32c(data: Buffer) -> int:
    """CRC-32C of ``data``."""
    return crc32c_extend(0, data)


def crc32c_extend(crc: int, data: Buffer) -> int:
    """CRC-32C of the bytes summed into ``crc`` followed by ``data``."""
    if type(data) is bytes:
        return _extend(crc, data)
    if _native is not None and (type(data) is not memoryview or data.c_contiguous):
        return _native.crc32c(data, crc)  # reads the buffer where it is, no copy
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.itemsize != 1 or view.ndim != 1:
        view = view.cast("B")
    owner = view.obj
    size = view.nbytes
    if type(owner) is bytes and len(owner) == size and view.c_contiguous:
        return _extend(crc, owner)
    if size <= _CHUNK:
        return _extend(crc, view.tobytes())
    for start in range(0, size, _CHUNK):
        crc = _extend(crc, view[start : start + _CHUNK].tobytes())
    return crc
