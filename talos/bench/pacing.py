"""Fixed-rate pacing and benchmark payloads (plain functions, no I/O)."""

from __future__ import annotations

import random
import string
import struct
import time

from talos.errors import InvalidArgument

_STAMP = struct.Struct("<q")
STAMP_BYTES = _STAMP.size
# Letters compress about like text does, so --compression shows a realistic gain.
_ALPHABET = (string.ascii_letters + string.digits).encode()


def payload(size: int, seed: int = 7) -> bytes:
    """``size`` pseudo-random letters, the same for a given seed."""
    if size < 0:
        raise InvalidArgument(f"size: must be >= 0, got {size}")
    rng = random.Random(seed)
    return bytes(rng.choice(_ALPHABET) for _ in range(size))


def stamped(body: bytes, now_ns: int) -> bytes:
    """``body`` with its first 8 bytes replaced by a wall-clock time (end-to-end latency)."""
    if len(body) < STAMP_BYTES:
        raise InvalidArgument(f"size: end-to-end messages need at least {STAMP_BYTES} bytes")
    return _STAMP.pack(now_ns) + body[STAMP_BYTES:]


def stamp_of(value: bytes) -> int:
    """The wall-clock time in ns that :func:`stamped` wrote, or -1."""
    if len(value) < STAMP_BYTES:
        return -1
    ns: int = _STAMP.unpack_from(value)[0]
    return ns


class Pacer:
    """Sends at a fixed offered rate: message i is due at start + i / rate.

    The schedule does not drift when a send is late (latency is measured from
    the send, the usual open-loop compromise of perf-test tools).
    """

    def __init__(self, rate: float, start: float) -> None:
        if rate <= 0:
            raise InvalidArgument(f"rate: must be > 0 messages/s, got {rate}")
        self.interval = 1.0 / rate
        self.start = start

    def due(self, index: int) -> float:
        return self.start + index * self.interval

    def wait(self, index: int) -> None:
        """Sleep until message ``index`` is due; never spin (two cores are shared)."""
        left = self.start + index * self.interval - time.perf_counter()
        if left > 0:
            time.sleep(left)
