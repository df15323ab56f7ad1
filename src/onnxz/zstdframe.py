"""One zstd frame, decompressed to exactly its declared size in bounded memory (SPEC.md §1).

Decompression is fed a little compressed data at a time, so a frame that expands far beyond
what its container declares is stopped before it can fill memory; a frame without a content
size in its header costs no more than one with it.
"""

from __future__ import annotations

import zstandard

from onnxz.errors import CorruptDataError

FEED = 1 << 10
"""Compressed bytes per step. zstd expands 4 bytes to at most 128 KiB (an RLE block), so a
step never produces more than 32 MiB."""


def decompress_exact(frame: bytes, size: int, what: str) -> bytes:
    """The content of the zstd frame at the start of ``frame``: exactly ``size`` bytes.

    Bytes after the frame are ignored. A damaged or incomplete frame, or content of another
    size, is a :class:`CorruptDataError` whose message starts with ``what``.
    """
    pieces: list[bytes] = []
    produced = 0
    try:
        declared = zstandard.frame_content_size(frame)
        if declared not in (-1, size):
            raise CorruptDataError(f"{what}: zstd frame declares {declared} bytes, not {size}")
        stream = zstandard.ZstdDecompressor().decompressobj()
        for start in range(0, len(frame), FEED):
            pieces.append(stream.decompress(frame[start : start + FEED]))
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
    return b"".join(pieces)
