"""One zstd frame, decompressed to exactly its declared size in bounded memory (SPEC.md §1).

Decompression is fed a little compressed data at a time, so a frame that expands far beyond
what its container declares is stopped before it can fill memory; a frame without a content
size in its header costs no more than one with it.
"""

from __future__ import annotations

import threading

import zstandard

from onnxz.errors import CorruptDataError

FEED = 1 << 10
"""Compressed bytes per step. zstd expands 4 bytes to at most 128 KiB (an RLE block), so a
step never produces more than 32 MiB."""

MAGIC = b"\x28\xb5\x2f\xfd"
"""The Zstandard frame magic number: a skippable or legacy frame does not start with it."""

MAX_WINDOW = 1 << 27
"""Largest Window_Size a frame may declare (libzstd's default decoder limit, SPEC.md §1)."""


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompression context (creating one costs ~25 µs, as much as
    decompressing a small frame; a context must not be shared between threads)."""
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def decompress_exact(frame: bytes, size: int, what: str) -> bytes:
    """The content of the zstd frame that is all of ``frame``: exactly ``size`` bytes.

    A damaged or incomplete frame, a skippable or legacy frame, a window above 2^27 bytes, a
    dictionary id, content of another size or bytes after the frame are a
    :class:`CorruptDataError` whose message starts with ``what``. A frame that declares
    ``size`` (as onnxz writes them) is decompressed in one call (zstd stops a frame that
    outgrows its declared size within a block); any other is fed :data:`FEED` bytes at a
    time, and a frame the one call does not accept is retried that way for the error.
    """
    if frame[:4] != MAGIC:
        raise CorruptDataError(f"{what}: not a zstd frame (no zstd magic number)")
    pieces: list[bytes] = []
    produced = 0
    try:
        header = zstandard.get_frame_parameters(frame)
        if header.window_size > MAX_WINDOW:
            raise CorruptDataError(
                f"{what}: zstd window of {header.window_size} bytes exceeds 2^27")
        if header.dict_id:
            raise CorruptDataError(f"{what}: zstd frame needs dictionary {header.dict_id}")
        declared = header.content_size
        if declared not in (zstandard.CONTENTSIZE_UNKNOWN, size):
            raise CorruptDataError(f"{what}: zstd frame declares {declared} bytes, not {size}")
        if declared == size:
            whole = _decompressor().decompressobj(write_size=max(size, 1))
            content = whole.decompress(frame)
            if whole.eof and len(content) == size and not whole.unused_data:
                return content
        stream = _decompressor().decompressobj()
        end = 0
        for end in range(FEED, len(frame) + FEED, FEED):
            pieces.append(stream.decompress(frame[end - FEED : end]))
            produced += len(pieces[-1])
            if produced > size:
                raise CorruptDataError(f"{what}: zstd frame holds more than {size} bytes")
            if stream.eof:
                break
    except zstandard.ZstdError as exc:
        raise CorruptDataError(f"{what}: zstd data is damaged ({exc})") from exc
    if not stream.eof:
        raise CorruptDataError(f"{what}: zstd frame is incomplete")
    if produced != size:
        raise CorruptDataError(f"{what}: zstd frame holds {produced} bytes, not {size}")
    if stream.unused_data or end < len(frame):
        raise CorruptDataError(f"{what}: bytes after the zstd frame")
    return b"".join(pieces)
