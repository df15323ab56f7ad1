"""Rewrite parts of an onnxz file and fix up every CRC, so a damaged field gets past them.

For tests and tools that craft files: the index, the graph section, a chunk's bytes, the
version. Independent of onnxz (SPEC.md §2 byte layout only).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

HEADER_BODY = struct.Struct("<8sHH")  # signature, major, minor; then the u32 CRC
FOOTER_BODY = struct.Struct("<QQQIHH")  # index offset, length, raw length, CRC, major, minor
FOOTER_SIZE = 40
ALIGNMENT = 64


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Footer:
    index_offset: int
    index_length: int
    index_raw_length: int
    index_crc32: int
    major: int
    minor: int

    @classmethod
    def of(cls, data: bytes) -> Footer:
        return cls(*FOOTER_BODY.unpack_from(data, len(data) - FOOTER_SIZE))

    def pack(self) -> bytes:
        body = FOOTER_BODY.pack(self.index_offset, self.index_length, self.index_raw_length,
                                self.index_crc32, self.major, self.minor)
        return body + struct.pack("<I", crc32(body)) + b"ONZ\x00"


def index_bytes(data: bytes) -> bytes:
    """The msgpack bytes of a well-formed file's index."""
    f = Footer.of(data)
    return zstandard.ZstdDecompressor().decompress(
        data[f.index_offset:f.index_offset + f.index_length], max_output_size=f.index_raw_length)


def read_index(data: bytes) -> Any:
    """The msgpack fields of a well-formed file's index."""
    return msgpack.unpackb(index_bytes(data), raw=False, strict_map_key=False)


def with_index(data: bytes, fields: Any = None, *, raw: bytes | None = None,
               frame: Callable[[bytes], bytes] | None = None) -> bytes:
    """``data`` with its index replaced by ``fields`` (or by the msgpack bytes ``raw``),
    compressed into a zstd frame by ``frame`` (default: one-shot, with content size)."""
    if raw is None:
        raw = msgpack.packb(fields, use_bin_type=True)
    f = Footer.of(data)
    section = (frame or zstandard.ZstdCompressor().compress)(raw)
    footer = Footer(f.index_offset, len(section), len(raw), crc32(section), f.major, f.minor)
    return data[:f.index_offset] + section + footer.pack()


def with_version(data: bytes, major: int, minor: int) -> bytes:
    """``data`` with the version in the header and the footer set to ``major.minor``."""
    header = HEADER_BODY.pack(data[:8], major, minor)
    f = Footer.of(data)
    footer = Footer(f.index_offset, f.index_length, f.index_raw_length, f.index_crc32,
                    major, minor)
    return header + struct.pack("<I", crc32(header)) + data[16:-FOOTER_SIZE] + footer.pack()


def with_footer(data: bytes, footer: Footer) -> bytes:
    """``data`` with another (checksummed) footer."""
    return data[:-FOOTER_SIZE] + footer.pack()


def with_gap_before_footer(data: bytes, gap: bytes) -> bytes:
    """``data`` with ``gap`` (unused bytes) between the index section and the footer."""
    return data[:-FOOTER_SIZE] + gap + data[-FOOTER_SIZE:]


def with_graph(data: bytes, raw_graph: bytes) -> bytes:
    """``data`` with the graph section holding ``raw_graph``, the index moved after it."""
    return with_graph_frame(data, zstandard.ZstdCompressor().compress(raw_graph), len(raw_graph))


def with_graph_frame(data: bytes, frame: bytes, raw_length: int) -> bytes:
    """``data`` with the graph section replaced by ``frame``, declared to hold ``raw_length``
    bytes; the index moves after it."""
    fields = read_index(data)
    g = fields["graph"]
    fields["graph"] = {**g, "length": len(frame), "raw_length": raw_length,
                       "crc32": crc32(frame)}
    body = data[:g["offset"]] + frame
    body += b"\0" * (-len(body) % ALIGNMENT)
    f = Footer.of(data)
    return with_index(body + Footer(len(body), 0, 0, 0, f.major, f.minor).pack(), fields)


def read_graph(data: bytes) -> bytes:
    """The serialized ModelProto of a well-formed file."""
    g = read_index(data)["graph"]
    return zstandard.ZstdDecompressor().decompress(
        data[g["offset"]:g["offset"] + g["length"]], max_output_size=g["raw_length"])


def with_chunk_bytes(data: bytes, tensor: int, chunk: int, stored: bytes) -> bytes:
    """``data`` with chunk ``chunk`` of tensor entry ``tensor`` overwritten by ``stored``
    (same length) and its CRC in the index updated."""
    fields = read_index(data)
    entry = fields["tensors"][tensor]["chunks"][chunk]
    offset, length = entry[0], sum(entry[1])
    assert len(stored) == length, "a chunk keeps its length"
    entry[3] = crc32(stored)
    return with_index(data[:offset] + stored + data[offset + length:], fields)
