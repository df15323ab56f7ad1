"""The onnxz container: bytes on disk, per SPEC.md. Knows nothing of ONNX or codecs.

Layout: a 16-byte header, chunk payloads (each 64-byte aligned), the graph section, the
index section, and a 40-byte footer that locates the index. Every section and chunk
carries a CRC-32; the reader validates declared sizes against the file size and
:class:`ReadLimits` before it allocates anything.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, compress
from pathlib import Path
from typing import IO, Any

import msgpack
import zstandard
from zlib_ng.zlib_ng import crc32 as _zlib_ng_crc32

from onnxz.arguments import integer, real_number
from onnxz.errors import CorruptDataError, FormatError, InvalidArgumentError, LimitExceededError
from onnxz.zstdframe import decompress_exact

MAGIC = b"\x89ONZ\r\n\x1a\n"
ONNX_FIRST_BYTE = b"\x08"
"""A serialized ONNX model's first byte (the tag of ``ir_version``, field 1, a varint):
named in the error for a file without :data:`MAGIC` that starts with it."""
END_MAGIC = b"ONZ\x00"
MAJOR, MINOR = 1, 0
"""The version this library writes at least; :meth:`ContainerWriter.require_minor` raises the
minor version when a file uses a feature a later 1.x minor version defines (SPEC.md §3)."""
ALIGNMENT = 64
MAX_NESTING = 64
"""Deepest nesting of maps and arrays in the index; the index map itself is level 1 (§4)."""
MAX_ELEMENTS = 1 << 64
"""A tensor's element count must be below this (SPEC.md §10.1: a fixed limit)."""

_HEADER_BODY = struct.Struct("<8sHH")  # magic, major, minor; then u32 CRC-32 of these 12 bytes
_FOOTER_BODY = struct.Struct("<QQQIHH")  # index offset, length, raw length, CRC-32, major, minor
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER_BODY.size + _CRC.size  # 16
FOOTER_SIZE = _FOOTER_BODY.size + _CRC.size + len(END_MAGIC)  # 40
GRAPH_ZSTD_LEVEL = 19


def physical_memory() -> int:
    """Bytes of RAM of this machine (1 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 30


@dataclass(frozen=True)
class ReadLimits:
    """Reader limits; a file that declares more raises :class:`LimitExceededError`.

    ``max_output_size`` bounds the decoded bytes of all tensors together; when None it is
    ``max(min_output_size, max_expansion × file size)``. ``min_output_size`` defaults to this
    machine's physical memory: any model that fits in memory here unpacks here, however well
    it compressed, while a small file still cannot make the reader allocate more than the
    machine has.
    """

    max_index_size: int = 256 << 20
    max_graph_size: int = 2 << 30
    max_output_size: int | None = None
    max_expansion: float = 1000.0
    min_output_size: int = field(default_factory=physical_memory)

    def __post_init__(self) -> None:
        integer(self.max_index_size, "max_index_size", 0)
        integer(self.max_graph_size, "max_graph_size", 0)
        if self.max_output_size is not None:
            integer(self.max_output_size, "max_output_size", 0)
        if not real_number(self.max_expansion, "max_expansion") >= 0:
            raise InvalidArgumentError(f"max_expansion must be ≥ 0, not {self.max_expansion}")
        integer(self.min_output_size, "min_output_size", 0)

    def output_budget(self, file_size: int) -> int:
        """Decoded bytes a file of ``file_size`` bytes may produce: ``max_output_size`` if
        set, else the larger of ``min_output_size`` and ``max_expansion`` × its size."""
        if self.max_output_size is not None:
            return self.max_output_size
        return max(self.min_output_size, int(self.max_expansion * file_size))


def check_limits(limits: object) -> ReadLimits | None:
    """``limits`` if it is a :class:`ReadLimits` or None, else :class:`InvalidArgumentError`."""
    if limits is not None and not isinstance(limits, ReadLimits):
        raise InvalidArgumentError(f"limits must be a ReadLimits, not {type(limits).__name__}")
    return limits


@dataclass(frozen=True)
class ChunkEntry:
    """Where one chunk is: ``offset`` in the file, byte ``sizes`` of its parts in order."""

    offset: int
    sizes: tuple[int, ...]
    count: int
    crc32: int

    @property
    def length(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the index (SPEC.md § "Tensor entry")."""

    name: str
    path: tuple[str | int, ...]
    dtype: str
    shape: tuple[int, ...]
    codec: str
    params: Mapping[str, Any]
    chunks: tuple[ChunkEntry, ...]
    crc32: int
    entropy_bits: float | None = None
    table_bytes: int = 0
    sensitivity: float | None = None
    rounded_bits: int | None = None
    """Mantissa bits the values were rounded to before lossless coding (informative; the
    stream is an ordinary one), None if they were not."""

    @property
    def element_count(self) -> int:
        return math.prod(self.shape)

    @property
    def coded_bytes(self) -> int:
        return sum(c.length for c in self.chunks)


@dataclass(frozen=True)
class SectionEntry:
    """A zstd-compressed section: its place, compressed ``length`` and ``raw_length``."""

    offset: int
    length: int
    raw_length: int
    crc32: int


@dataclass(frozen=True)
class Index:
    graph: SectionEntry
    tensors: tuple[TensorEntry, ...]
    writer: str = ""
    version: tuple[int, int] = (MAJOR, MINOR)
    extra: Mapping[str, Any] = field(default_factory=dict)


def crc32(data: bytes | memoryview, value: int = 0) -> int:
    """CRC-32 (ISO-HDLC, zlib's) of ``data``, continuing from ``value``: zlib-ng's, the same
    function as ``zlib.crc32`` at 7-12× its speed here (2.4 → 28 GB/s on x86-64; every
    stored chunk and decoded tensor is checked, 15% of a lossless unpack's time with zlib's).

    >>> crc32(b"123456789") == 0xCBF43926
    True
    """
    return _zlib_ng_crc32(data, value) & 0xFFFFFFFF


_CRC_POLY = 0xEDB88320  # CRC-32's polynomial, bit-reversed (the lowest bit is x^31)


def _multiply_mod_poly(a: int, b: int) -> int:
    """a(x) × b(x) modulo CRC-32's polynomial, both in its bit-reversed representation."""
    product = 0
    for bit in range(31, -1, -1):
        if a & (1 << bit):
            product ^= b
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


def _x_to_the_2_to_the(k: int) -> int:
    """x^(2^k) modulo CRC-32's polynomial (bit-reversed), by squaring x ``k`` times."""
    power = 1 << 30  # x^1
    for _ in range(k):
        power = _multiply_mod_poly(power, power)
    return power


_X_TO_THE_2_TO_THE = tuple(_x_to_the_2_to_the(k) for k in range(64))


def crc32_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC-32 of bytes A then B, from the CRC-32s of A and of B (``length_b`` bytes long),
    as zlib's ``crc32_combine``: A's CRC is carried over B's 8 × ``length_b`` bits (a
    multiplication by x^(8 × length_b)) and B's is added. ``crc32_combine(0, crc_b, n)`` is
    ``crc_b``; so is a sequence of parts combined left to right, whatever their sizes."""
    shift = 1 << 31  # x^0
    bits = 8 * length_b
    k = 0
    while bits:
        if bits & 1:
            shift = _multiply_mod_poly(_X_TO_THE_2_TO_THE[k], shift)
        bits >>= 1
        k += 1
    return _multiply_mod_poly(shift, crc_a) ^ crc_b


class ContainerWriter:
    """Writes a container to an open binary file, one tensor at a time, index last.

    >>> import io
    >>> out = io.BytesIO()
    >>> w = ContainerWriter(out, writer="doctest")
    >>> chunk = w.add_chunk([b"abc", b"de"], count=5)
    >>> chunk.offset, chunk.sizes
    (64, (3, 2))
    >>> _ = w.finish(b"graph bytes", [])
    >>> out.getvalue()[:8] == MAGIC
    True
    """

    def __init__(self, file: IO[bytes], writer: str) -> None:
        self._file = file
        self._writer = writer
        self.minor = MINOR
        self._write(_header(MINOR))

    def require_minor(self, minor: int) -> None:
        """Make the file declare at least ``1.minor`` (the lowest version defining every
        feature it uses, SPEC.md §3). The header is rewritten by :meth:`finish`, so the
        file must be seekable when this raises the version."""
        self.minor = max(self.minor, minor)

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)

    def _align(self) -> int:
        pos = self._file.tell()
        pad = -pos % ALIGNMENT
        if pad:
            self._write(b"\0" * pad)
        return pos + pad

    def add_chunk(self, parts: Sequence[bytes], count: int) -> ChunkEntry:
        """Write one chunk's parts back to back at the next aligned offset."""
        offset = self._align()
        crc = 0
        for part in parts:
            self._write(part)
            crc = crc32(part, crc)
        return ChunkEntry(offset, tuple(len(p) for p in parts), count, crc)

    def finish(
        self, graph: bytes, tensors: Sequence[TensorEntry], extra: Mapping[str, Any] | None = None
    ) -> Index:
        """Write the graph section, the index (with optional ``extra`` fields), the footer."""
        offset = self._align()
        packed_graph = zstandard.ZstdCompressor(level=GRAPH_ZSTD_LEVEL).compress(graph)
        self._write(packed_graph)
        graph_entry = SectionEntry(offset, len(packed_graph), len(graph), crc32(packed_graph))
        index = Index(graph_entry, tuple(tensors), self._writer, extra=dict(extra or {}))
        raw_index = msgpack.packb(_index_to_fields(index), use_bin_type=True)
        packed_index = zstandard.ZstdCompressor(level=GRAPH_ZSTD_LEVEL).compress(raw_index)
        index_offset = self._align()
        self._write(packed_index)
        body = _FOOTER_BODY.pack(index_offset, len(packed_index), len(raw_index),
                                 crc32(packed_index), MAJOR, self.minor)
        self._write(body + _CRC.pack(crc32(body)) + END_MAGIC)
        if self.minor != MINOR:
            end = self._file.tell()
            self._file.seek(0)
            self._write(_header(self.minor))
            self._file.seek(end)
        return replace(index, version=(MAJOR, self.minor))


@dataclass(frozen=True)
class ChunkFile:
    """An open container file as another process finds it: the descriptor the reader holds
    (``fd``), its absolute ``path``, and the file's identity (``device``, ``inode``)."""

    fd: int
    path: str
    device: int
    inode: int

    def open(self) -> int:
        """A new read-only descriptor of the same file, for :func:`read_chunk`; the caller
        closes it. A forked worker duplicates the descriptor it inherited (so a file renamed
        or deleted while it is read still reads, as in the reader); elsewhere the path is
        opened again, and :class:`CorruptDataError` if it now names another file."""
        try:
            if self._is_ours(os.fstat(self.fd)):
                return os.dup(self.fd)
        except OSError:
            pass  # not inherited (a spawned worker): open the path
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise CorruptDataError(f"cannot open the file again ({exc.strerror})") from exc
        if not self._is_ours(os.fstat(fd)):
            os.close(fd)
            raise CorruptDataError("the file was replaced while it was being read")
        return fd

    def _is_ours(self, stat: os.stat_result) -> bool:
        return (stat.st_dev, stat.st_ino) == (self.device, self.inode)


class ContainerReader:
    """Reads a container file: header, footer and index are validated on open.

    Every read is a positioned read (``os.pread``) whose length is checked, so a file that
    is truncated or rewritten while it is open gives :class:`CorruptDataError`, never a
    crash (a memory map would turn a truncated page into SIGBUS). Chunks are read only
    when asked for, each checked against its CRC-32. Reads do not move a shared file
    position, so one reader may serve several threads.
    """

    def __init__(self, path: str | Path, limits: ReadLimits | None = None) -> None:
        self.limits = limits or ReadLimits()
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            stat = os.fstat(self._fd)
            self.file = ChunkFile(self._fd, os.path.abspath(self.path), stat.st_dev,
                                  stat.st_ino)
            size = stat.st_size
            if size < HEADER_SIZE + FOOTER_SIZE:
                if size >= len(MAGIC):
                    _check_magic(self.read_at(0, len(MAGIC), "header"))
                    raise FormatError(f"header: file truncated: {size} bytes, an onnxz "
                                      f"file has at least {HEADER_SIZE + FOOTER_SIZE}")
                raise FormatError(f"not an onnxz file: only {size} bytes")
            self.file_size = size
            self.index = self._read_index()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        """Exactly ``length`` bytes at ``offset``; :class:`CorruptDataError` if the file
        now ends sooner (truncated while open)."""
        return read_exactly(self._fd, offset, length, what)

    def _read_index(self) -> Index:
        header_bytes = self.read_at(0, HEADER_SIZE, "header")
        header = header_bytes[: _HEADER_BODY.size]
        magic, major, minor = _HEADER_BODY.unpack(header)
        _check_magic(magic)
        (header_crc,) = _CRC.unpack_from(header_bytes, _HEADER_BODY.size)
        if crc32(header) != header_crc:
            raise CorruptDataError("header: checksum mismatch")
        _check_version(major, minor)
        footer = self.read_at(self.file_size - FOOTER_SIZE, FOOTER_SIZE, "footer")
        body = footer[: _FOOTER_BODY.size]
        (index_offset, index_length, index_raw_length, index_crc, f_major,
         f_minor) = _FOOTER_BODY.unpack(body)
        (footer_crc,) = _CRC.unpack_from(footer, _FOOTER_BODY.size)
        if footer[-len(END_MAGIC) :] != END_MAGIC:
            raise CorruptDataError("footer: end marker missing (file truncated?)")
        if crc32(body) != footer_crc:
            raise CorruptDataError("footer: checksum mismatch")
        if (f_major, f_minor) != (major, minor):
            raise CorruptDataError("footer: version differs from header")
        body_end = self.file_size - FOOTER_SIZE
        if not HEADER_SIZE <= index_offset <= body_end - index_length:
            raise FormatError("footer: index section lies outside the file")
        if index_raw_length > self.limits.max_index_size:
            raise LimitExceededError(
                f"index: {index_raw_length} bytes exceeds max_index_size "
                f"{self.limits.max_index_size}"
            )
        raw = self._section(
            SectionEntry(index_offset, index_length, index_raw_length, index_crc), "index"
        )
        try:
            fields = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                                     object_pairs_hook=_unique_keys, ext_hook=_no_ext)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise FormatError(f"index: not valid msgpack ({exc})") from exc
        _check_nesting(fields)
        index = _index_from_fields(fields, (major, minor))
        self._validate_layout(index, index_offset)
        return index

    def _validate_layout(self, index: Index, index_offset: int) -> None:
        g = index.graph
        if not HEADER_SIZE <= g.offset <= index_offset - g.length:
            raise FormatError("index: graph section lies outside the file body")
        if g.raw_length > self.limits.max_graph_size:
            raise LimitExceededError(
                f"graph: {g.raw_length} bytes exceeds max_graph_size {self.limits.max_graph_size}"
            )
        spans = sorted(
            (c.offset, c.offset + c.length, t.name) for t in index.tensors for c in t.chunks
        )
        previous_end = HEADER_SIZE
        for start, end, name in spans:
            if start % ALIGNMENT:
                raise FormatError(f"index: tensor {name!r} has a chunk not {ALIGNMENT}-aligned")
            if start < previous_end or end > g.offset:
                raise FormatError(f"index: tensor {name!r} has a chunk outside the data area "
                                  "or overlapping another")
            previous_end = end

    def _section(self, entry: SectionEntry, what: str) -> bytes:
        data = self.read_at(entry.offset, entry.length, what)
        if crc32(data) != entry.crc32:
            raise CorruptDataError(f"{what}: checksum mismatch")
        return decompress_exact(data, entry.raw_length, what)

    def graph_bytes(self) -> bytes:
        """The decompressed, checksum-verified graph section (a serialized ModelProto)."""
        return self._section(self.index.graph, "graph")

    def chunk_bytes(self, chunk: ChunkEntry, tensor_name: str) -> bytes:
        """The stored bytes of one chunk (all its parts), checksum-verified."""
        return read_chunk(self._fd, chunk, tensor_name)

    def chunk_parts(self, chunk: ChunkEntry, tensor_name: str) -> list[memoryview]:
        """The parts of one chunk, checksum-verified."""
        return split_parts(self.chunk_bytes(chunk, tensor_name), chunk.sizes)


def read_chunk(fd: int, chunk: ChunkEntry, tensor_name: str) -> bytes:
    """The stored bytes of one chunk of tensor ``tensor_name`` (all its parts) from an open
    container file, checksum-verified: :class:`CorruptDataError` if they do not match."""
    data = read_exactly(fd, chunk.offset, chunk.length, f"tensor {tensor_name!r}")
    if crc32(data) != chunk.crc32:
        raise CorruptDataError(f"tensor {tensor_name!r}: chunk checksum mismatch")
    return data


def split_parts(data: bytes, sizes: Sequence[int]) -> list[memoryview]:
    """A chunk's bytes cut into its parts (views, no copies)."""
    view = memoryview(data)
    parts, start = [], 0
    for size in sizes:
        parts.append(view[start : start + size])
        start += size
    return parts


def read_exactly(fd: int, offset: int, length: int, what: str) -> bytes:
    """``length`` bytes at ``offset`` of an open file, by positioned reads.

    A file that ends before ``offset + length`` (truncated after it was opened, or a size
    that lies) is a :class:`CorruptDataError` whose message starts with ``what``.
    """
    pieces: list[bytes] = [b""]
    done = 0
    while done < length:
        try:
            piece = os.pread(fd, min(length - done, 1 << 30), offset + done)
        except OSError as exc:
            raise CorruptDataError(f"{what}: read failed ({exc.strerror})") from exc
        if not piece:
            raise CorruptDataError(
                f"{what}: file ends at byte {offset + done}, expected {length} bytes at "
                f"offset {offset} (truncated or changed while reading?)")
        pieces.append(piece)
        done += len(piece)
    return pieces[-1] if len(pieces) <= 2 else b"".join(pieces)


_STR = frozenset({str})
_INT = frozenset({int})
_MAP = frozenset({dict})
_CONTAINERS = frozenset({dict, list})
_PATH_STEP = frozenset({str, int})


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack map hook: no key given twice (SPEC.md §4). That every key is a str is
    checked with the nesting (:func:`_check_nesting`), for a whole level at once."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise FormatError("index: a map repeats a key")
    return out


def _no_ext(code: int, data: bytes) -> Any:
    """msgpack ext hook: no version of the index uses ext values (SPEC.md §4)."""
    raise FormatError(f"index: a msgpack ext value (type {code})")


def _check_nesting(fields: Any) -> None:
    """At most :data:`MAX_NESTING` levels of maps and arrays, every map key a str, and no
    timestamp (the ext type msgpack decodes itself), in known and ignored places alike
    (SPEC.md §4). Looks at one level at a time: the keys of all its maps, and the values of
    all its maps and arrays, their types as a set (msgpack builds exact dicts and lists);
    the containers among them, picked by type without a Python loop, make the next level."""
    level, depth = [fields] if type(fields) in _CONTAINERS else [], 1
    while level:
        if depth > MAX_NESTING:
            raise FormatError(f"index: maps and arrays nest more than {MAX_NESTING} deep")
        maps = list(compress(level, map(_MAP.__contains__, map(type, level))))
        if not set(map(type, chain.from_iterable(maps))) <= _STR:
            raise FormatError("index: a map key is not a str")
        values = list(chain.from_iterable(
            [c.values() if type(c) is dict else c for c in level]))
        types = list(map(type, values))
        kinds = set(types)
        if msgpack.Timestamp in kinds:
            raise FormatError("index: a msgpack ext value (timestamp)")
        level = (list(compress(values, map(_CONTAINERS.__contains__, types)))
                 if not kinds.isdisjoint(_CONTAINERS) else [])
        depth += 1


def _header(minor: int) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, MAJOR, minor)
    return body + _CRC.pack(crc32(body))


def _check_magic(magic: bytes) -> None:
    if magic != MAGIC:
        if magic[1:4] == MAGIC[1:4]:
            raise CorruptDataError("header: signature damaged (text-mode transfer?)")
        raise FormatError("not an onnxz file (signature mismatch"
                          + ("; an ONNX model? `onnxz pack` makes the .onnxz)"
                             if magic[:1] == ONNX_FIRST_BYTE else ")"))


def _check_version(major: int, minor: int) -> None:
    if major != MAJOR:
        raise FormatError(
            f"header: onnxz format {major}.{minor} is not supported by this reader "
            f"(reads {MAJOR}.x)"
        )


# --- index <-> msgpack fields ---------------------------------------------------------------

def _index_to_fields(index: Index) -> dict[str, Any]:
    return {
        **index.extra,
        "writer": index.writer,
        "graph": _section_fields(index.graph),
        "tensors": [_tensor_fields(t) for t in index.tensors],
    }


def _section_fields(s: SectionEntry) -> dict[str, int]:
    return {"offset": s.offset, "length": s.length, "raw_length": s.raw_length, "crc32": s.crc32}


def _tensor_fields(t: TensorEntry) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": t.name,
        "path": list(t.path),
        "dtype": t.dtype,
        "shape": list(t.shape),
        "codec": t.codec,
        "params": dict(t.params),
        "chunks": [[c.offset, list(c.sizes), c.count, c.crc32] for c in t.chunks],
        "crc32": t.crc32,
        "table_bytes": t.table_bytes,
    }
    if t.entropy_bits is not None:
        fields["entropy_bits"] = round(t.entropy_bits)
    if t.sensitivity is not None:
        fields["sensitivity"] = informative(t.sensitivity)
    if t.rounded_bits is not None:
        fields["rounded_bits"] = t.rounded_bits
    return fields


INFORMATIVE_BITS = 8
"""Significant bits of the informative ``sensitivity`` stored in the index (≤ 0.4%, 0.02 dB:
finer than ``onnxz info`` shows it). ``entropy_bits`` is stored as a whole number of bits.
A float64 with 44 zero low bits compresses; a full one costs 8 bytes per tensor in the
zstd frame (PP-OCR cls, 150 tensors: index 9,241 → 7,649 bytes, 1.3% of its file)."""


def informative(value: float) -> float:
    """``value`` rounded to :data:`INFORMATIVE_BITS` significant bits (inf and nan kept).

    >>> informative(0.1), informative(1000.0)
    (0.10009765625, 1000.0)
    """
    if not math.isfinite(value) or value == 0:
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * (1 << INFORMATIVE_BITS)), exponent - INFORMATIVE_BITS)


def _get(fields: Any, key: str, kind: type, where: str) -> Any:
    """``fields[key]``, of exactly the type ``kind`` (msgpack builds exact types: a bool is
    never an int here); :class:`FormatError` otherwise."""
    if type(fields) is not dict:
        raise FormatError(f"{where}: expected a map")
    value = fields.get(key)
    if type(value) is not kind:
        raise FormatError(f"{where}: field {key!r} missing or of the wrong type")
    return value


def _uint(value: Any, where: str, bits: int = 64) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise FormatError(f"{where}: expected an unsigned integer, got {value!r}")
    return value


def _uints(values: list[Any], where: str) -> tuple[int, ...]:
    """The unsigned 64-bit integers ``values`` as a tuple; checked all at once, and the
    first that is not one named as :func:`_uint` names it."""
    if not (set(map(type, values)) <= _INT and (not values or (
            min(values) >= 0 and max(values) < 1 << 64))):
        for value in values:
            _uint(value, where)
    return tuple(values)


def _index_from_fields(fields: Any, version: tuple[int, int]) -> Index:
    g = _get(fields, "graph", dict, "index")
    graph = SectionEntry(*(_uint(_get(g, k, int, "index.graph"), "index.graph", bits)
                           for k, bits in (("offset", 64), ("length", 64), ("raw_length", 64),
                                           ("crc32", 32))))
    tensors = tuple(
        _tensor_from_fields(t, i) for i, t in enumerate(_get(fields, "tensors", list, "index"))
    )
    if len(set(map(tuple, (t.path for t in tensors)))) != len(tensors):
        raise FormatError("index: two tensors share one path")
    known = {"writer", "graph", "tensors"}
    writer = fields.get("writer", "")
    return Index(graph, tensors, writer if isinstance(writer, str) else "", version,
                 {k: v for k, v in fields.items() if k not in known})


def _tensor_from_fields(t: Any, i: int) -> TensorEntry:
    where = f"index.tensors[{i}]"
    name = _get(t, "name", str, where)
    where = f"tensor {name!r}"
    path = tuple(_get(t, "path", list, where))
    if not path or not set(map(type, path)) <= _PATH_STEP:
        raise FormatError(f"{where}: invalid path")
    shape = _uints(_get(t, "shape", list, where), where)
    chunks = []
    for c in _get(t, "chunks", list, where):
        if type(c) is not list or len(c) < 4 or type(c[1]) is not list:
            raise FormatError(f"{where}: malformed chunk entry")
        chunks.append(ChunkEntry(_uint(c[0], where), _uints(c[1], where),
                                 _uint(c[2], where), _uint(c[3], where, 32)))
    entropy = t.get("entropy_bits")
    table_bytes = t.get("table_bytes")
    sensitivity = t.get("sensitivity")
    rounded = t.get("rounded_bits")
    entry = TensorEntry(
        name=name,
        path=path,
        dtype=_get(t, "dtype", str, where),
        shape=shape,
        codec=_get(t, "codec", str, where),
        params=_get(t, "params", dict, where),
        chunks=tuple(chunks),
        crc32=_uint(_get(t, "crc32", int, where), where, 32),
        entropy_bits=float(entropy) if isinstance(entropy, int | float) else None,
        table_bytes=table_bytes if isinstance(table_bytes, int) and table_bytes >= 0 else 0,
        sensitivity=float(sensitivity) if isinstance(sensitivity, int | float)
        and not isinstance(sensitivity, bool) else None,
        rounded_bits=rounded if type(rounded) is int and rounded >= 0 else None,
    )
    count = math.prod(shape)
    if count >= MAX_ELEMENTS:
        raise LimitExceededError(f"{where}: shape {list(shape)} has {count} elements, 2^64 "
                                 "or more")
    held = sum([c.count for c in chunks])
    if held != count:
        raise FormatError(f"{where}: chunks hold {held} elements, shape {list(shape)} needs "
                          f"{count}")
    return entry
