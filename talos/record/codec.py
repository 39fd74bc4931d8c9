"""Compression of a batch's records area, as a whole (zstd frames, lz4 frames).

Decompression is bounded: a frame that declares or produces more than
``max_size`` bytes is rejected as corrupt, so a hostile producer cannot make
consumers allocate without limit.
"""

from __future__ import annotations

import enum
import threading

import lz4.frame
import zstandard

from talos.errors import CorruptBatch, InvalidArgument

Buffer = bytes | bytearray | memoryview

# Far above any batch a producer builds (max_message_bytes is at most 64 MiB).
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1
    LZ4 = 2


_NAMES = {codec.name.lower(): codec for codec in Codec}


def parse_codec(name: str) -> Codec:
    """The codec a configuration names (``compression = "zstd"``)."""
    codec = _NAMES.get(name.lower()) if isinstance(name, str) else None
    if codec is None:
        raise InvalidArgument(f"compression: must be one of {', '.join(_NAMES)}, got {name!r}")
    return codec


def check_codec(codec: int) -> Codec:
    """``codec`` as a Codec; InvalidArgument if it names none."""
    try:
        return Codec(codec)
    except ValueError:
        allowed = ", ".join(f"{c.value} ({c.name.lower()})" for c in Codec)
        raise InvalidArgument(f"codec: must be one of {allowed}, got {codec!r}") from None


# zstd contexts are reusable (3x faster than a fresh one) but not thread-safe.
_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    try:
        return _local.compressor  # type: ignore[no-any-return]
    except AttributeError:
        _local.compressor = zstandard.ZstdCompressor(write_content_size=True)
        return _local.compressor  # type: ignore[no-any-return]


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    try:
        return _local.decompressor  # type: ignore[no-any-return]
    except AttributeError:
        _local.decompressor = zstandard.ZstdDecompressor()
        return _local.decompressor  # type: ignore[no-any-return]


def compress(codec: int, data: Buffer) -> bytes:
    codec = check_codec(codec)
    if codec is Codec.ZSTD:
        return bytes(_zstd_compressor().compress(data))
    if codec is Codec.LZ4:
        return bytes(lz4.frame.compress(data))
    return bytes(data)


def decompress(codec: int, data: Buffer, max_size: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Inverse of :func:`compress`; exactly one complete frame, else CorruptBatch."""
    codec = check_codec(codec)
    if codec is Codec.ZSTD:
        return _zstd_decompress(data, max_size)
    if codec is Codec.LZ4:
        return _lz4_decompress(data, max_size)
    return bytes(data)


def _zstd_decompress(data: Buffer, max_size: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(data)
        if declared > max_size:
            raise CorruptBatch(f"zstd frame declares {declared} bytes, more than {max_size}")
        stream = _zstd_decompressor().decompressobj()
        out = stream.decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptBatch(f"zstd: {exc}") from None
    if not stream.eof:
        raise CorruptBatch("zstd: truncated frame")
    if stream.unused_data:
        raise CorruptBatch(f"zstd: {len(stream.unused_data)} bytes after the frame")
    if len(out) > max_size:
        raise CorruptBatch(f"zstd frame holds more than {max_size} bytes")
    return bytes(out)


def _lz4_decompress(data: Buffer, max_size: int) -> bytes:
    stream = lz4.frame.LZ4FrameDecompressor()
    try:
        out = stream.decompress(data, max_length=max_size + 1)
    except RuntimeError as exc:
        raise CorruptBatch(f"lz4: {exc}") from None
    if len(out) > max_size:
        raise CorruptBatch(f"lz4 frame holds more than {max_size} bytes")
    if not stream.eof:
        raise CorruptBatch("lz4: truncated frame")
    if stream.unused_data:
        raise CorruptBatch(f"lz4: {len(stream.unused_data)} bytes after the frame")
    return bytes(out)
