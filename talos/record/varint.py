"""Base-128 varints (7 bits a byte, low group first) and zigzag for signed values.

The batch codec inlines the one-byte case on its hot loops and calls these for
the rest.
"""

from __future__ import annotations

from talos.errors import CorruptBatch

# A zigzag-encoded 64-bit value needs at most 10 bytes (a timestamp delta may
# span two i64 values, hence 65 bits, still 10 bytes).
MAX_VARINT_BYTES = 10

# One-byte encodings, shared so the common case allocates nothing.
ONE_BYTE: tuple[bytes, ...] = tuple(bytes((n,)) for n in range(0x80))


def zigzag(n: int) -> int:
    """Map signed to unsigned so small magnitudes stay short: 0,-1,1,-2 -> 0,1,2,3."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def uvarint(n: int) -> bytes:
    """Encoding of ``n >= 0``."""
    if n < 0x80:
        return ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zvarint(n: int) -> bytes:
    """Encoding of a signed ``n`` (zigzag, then varint)."""
    return uvarint(n << 1 if n >= 0 else ((-n) << 1) - 1)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); CorruptBatch if longer than 10 bytes or cut off."""
    result = 0
    shift = 0
    start = pos
    end = min(len(data), pos + MAX_VARINT_BYTES)
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    if pos - start >= MAX_VARINT_BYTES:
        raise CorruptBatch(f"varint longer than {MAX_VARINT_BYTES} bytes")
    raise CorruptBatch("varint runs past the end of the records")
