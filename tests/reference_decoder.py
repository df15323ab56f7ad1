"""An independent onnxz 1.x decoder (1.0, the 1.1 codecs mulaw, minifloat and trellis, the
1.2 codec predictive, the 1.3 codec deadzone_zstd, the 1.4 codec trellis_zstd, the 1.5
lossless mode palette, the 1.6 lossless mode copy and the 1.7 lossless mode magnitude),
written from SPEC.md alone.

It imports nothing from onnxz: only the standard library, onnx (to parse the graph
section's ModelProto), zstandard and msgpack (the section formats SPEC.md names). Every
computation is plain Python integers and binary64 floats, one element at a time: slow, but
each function is a direct reading of the section it cites. Checks run in the order of the
table in SPEC.md §10.2; a failed check raises the class that table names.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import onnx
import zstandard

SIGNATURE = b"\x89ONZ\r\n\x1a\n"
END_MARKER = b"ONZ\x00"
HEADER_SIZE = 16
FOOTER_SIZE = 40
MAJOR = 1
PAYLOAD_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                  "uint64_data")
ZSTD_FEED = 64  # compressed bytes per decompression step, so output never runs far ahead
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_ZSTD_WINDOW = 1 << 27
MAX_NESTING = 64


class DecodeError(Exception):
    """A check of SPEC.md failed; ``kind`` is its class (§10.2)."""

    kind: ClassVar[str] = ""


class FormatError(DecodeError):
    kind = "format"


class CorruptDataError(DecodeError):
    kind = "corrupt"


class LimitExceededError(FormatError):
    kind = "limit"


@dataclass(frozen=True)
class Limits:
    """The reader limits of §10.1, with their reference defaults."""

    max_index_size: int = 1 << 28
    max_graph_size: int = 1 << 31
    max_output_size: int | None = None
    max_expansion: float = 1000.0
    min_output_size: int = 1 << 30

    def budget(self, file_size: int) -> int:
        if self.max_output_size is not None:
            return self.max_output_size
        return max(self.min_output_size, math.floor(self.max_expansion * file_size))


@dataclass(frozen=True)
class DType:
    """One row of the element type table of §4.2 (e = m = 0: not an IEEE-style float)."""

    name: str
    number: int
    width: int
    e: int = 0
    m: int = 0


DTYPES = {d.name: d for d in (
    DType("float32", 1, 4, 8, 23), DType("float16", 10, 2, 5, 10),
    DType("bfloat16", 16, 2, 8, 7), DType("float64", 11, 8, 11, 52),
    DType("int8", 3, 1), DType("uint8", 2, 1), DType("int16", 5, 2), DType("uint16", 4, 2),
    DType("int32", 6, 4), DType("uint32", 12, 4), DType("int64", 7, 8), DType("uint64", 13, 8),
    DType("bool", 9, 1), DType("float8e4m3fn", 17, 1), DType("float8e4m3fnuz", 18, 1),
    DType("float8e5m2", 19, 1), DType("float8e5m2fnuz", 20, 1),
)}
QUANTIZABLE = ("float32", "float16", "bfloat16", "float64")

ChunkDecode = Callable[[list[bytes], int], bytes]
"""A codec's decoder for one tensor: (a chunk's parts, its count) -> the elements' bytes."""


@dataclass(frozen=True)
class Section:
    offset: int
    length: int
    raw_length: int
    crc32: int


@dataclass(frozen=True)
class ChunkRef:
    """A chunk entry (§4.3)."""

    offset: int
    sizes: tuple[int, ...]
    count: int
    crc32: int

    @property
    def end(self) -> int:
        return self.offset + sum(self.sizes)


@dataclass(frozen=True)
class TensorRef:
    """A tensor entry (§4.2)."""

    name: str
    path: tuple[str | int, ...]
    dtype: str
    shape: tuple[int, ...]
    codec: str
    params: dict
    chunks: tuple[ChunkRef, ...]
    crc32: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Decoded:
    """A decoded file: the restored model and each restored tensor's bytes by path."""

    model: onnx.ModelProto
    tensors: dict[tuple[str | int, ...], bytes]


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def decode(data: bytes, limits: Limits = Limits()) -> Decoded:
    """Decode the bytes of an onnxz file (§5.2)."""
    graph, tensors = open_index(data, limits)
    model = _parse_graph(_zstd_exact(_section_bytes(data, graph, "graph"), graph.raw_length,
                                     "graph"))
    for t in tensors:
        if t.dtype not in DTYPES:
            raise FormatError(f"tensor {t.name!r}: dtype {t.dtype!r} is not known")
    for i, t in enumerate(tensors):
        if is_copy(t):
            check_copy(tensors, i)
    minor = struct.unpack_from("<H", data, 10)[0]
    for t in tensors:  # §6.8: mode magnitude needs a file of 1.7 or later
        if t.codec == "lossless" and t.params.get("mode") == "magnitude" and minor < 7:
            raise FormatError(f"tensor {t.name!r}: mode magnitude in a 1.{minor} file")
    total = sum(t.count * DTYPES[t.dtype].width for t in tensors)
    if total > limits.budget(len(data)):
        raise LimitExceededError(f"tensors: {total} decoded bytes exceed the budget")
    restored = {}
    in_order: list[bytes] = []
    for t in tensors:
        slot = resolve(model, t.path)
        _check_slot(slot, t)
        decoded = _decode_tensor(data, t, in_order)
        slot.raw_data = decoded
        restored[t.path] = decoded
        in_order.append(decoded)
    numbers = {d.number for d in DTYPES.values()}
    for slot in walk_slots(model):
        if (slot.data_type in numbers and not slot.HasField("segment")
                and slot.data_location != onnx.TensorProto.EXTERNAL
                and math.prod(slot.dims) != 0
                and not any(len(getattr(slot, f)) for f in PAYLOAD_FIELDS)):
            raise FormatError(f"graph: tensor {slot.name!r} has no data and no index entry")
    return Decoded(model, restored)


def walk_slots(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The TensorProtos of §5.2 item 4: initializers, TENSOR/TENSORS attributes, and those
    of GRAPH/GRAPHS attribute subgraphs, in the graph and in the functions' nodes."""
    def graph(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from g.initializer
        yield from nodes(g.node)

    def nodes(items: Sequence[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
        for node in items:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from a.tensors
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        yield from graph(g)

    yield from graph(model.graph)
    for f in model.functions:
        yield from nodes(f.node)


def _parse_graph(raw: bytes) -> onnx.ModelProto:
    try:
        return onnx.ModelProto.FromString(raw)
    except Exception as exc:  # protobuf's parse errors have no common public base
        raise FormatError(f"graph: not a ModelProto ({exc})") from exc


# --- header, footer, index (§2, §4) ------------------------------------------------------

def open_index(data: bytes, limits: Limits = Limits()) -> tuple[Section, list[TensorRef]]:
    """The checks of stage "open" (§10.2): the graph section entry and the tensor entries."""
    size = len(data)
    if size >= len(SIGNATURE) and data[:8] != SIGNATURE:
        if data[1:4] == b"ONZ":
            raise CorruptDataError("header: signature damaged")
        raise FormatError("header: not an onnxz file")
    if size < HEADER_SIZE + FOOTER_SIZE:
        raise FormatError(f"file: {size} bytes is too short")
    major, minor, header_crc = struct.unpack_from("<HHI", data, 8)
    if crc32(data[:12]) != header_crc:
        raise CorruptDataError("header: CRC mismatch")
    if major != MAJOR:
        raise FormatError(f"header: version {major}.{minor} is not supported")
    footer = data[size - FOOTER_SIZE:]
    (index_offset, index_length, index_raw_length, index_crc, f_major, f_minor,
     footer_crc) = struct.unpack_from("<QQQIHHI", footer)
    if footer[36:] != END_MARKER:
        raise CorruptDataError("footer: no end marker")
    if crc32(footer[:32]) != footer_crc:
        raise CorruptDataError("footer: CRC mismatch")
    if (f_major, f_minor) != (major, minor):
        raise CorruptDataError("footer: version differs from the header's")
    if not (index_offset >= HEADER_SIZE and index_offset + index_length <= size - FOOTER_SIZE):
        raise FormatError("footer: index section outside the file")
    if index_raw_length > limits.max_index_size:
        raise LimitExceededError("index: larger than max_index_size")
    index_section = Section(index_offset, index_length, index_raw_length, index_crc)
    raw = _zstd_exact(_section_bytes(data, index_section, "index"), index_raw_length, "index")
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False,
                                 object_pairs_hook=_str_keyed_map, ext_hook=_no_ext)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack's errors: ValueError subclasses, TypeError, ...
        raise FormatError(f"index: not one msgpack value ({exc})") from exc
    _check_depth(fields, 1)
    graph, tensors = _parse_index(fields)
    _check_layout(graph, tensors, index_offset, limits)
    return graph, tensors


def _section_bytes(data: bytes, section: Section, what: str) -> bytes:
    stored = data[section.offset:section.offset + section.length]
    if crc32(stored) != section.crc32:
        raise CorruptDataError(f"{what}: CRC mismatch")
    return stored


def _zstd_exact(frame: bytes, size: int, what: str) -> bytes:
    """The content of the one zstd frame that ``frame`` is, which MUST hold exactly ``size``
    bytes (§1 items 1-5, §6.4)."""
    if frame[:4] != ZSTD_MAGIC:
        raise CorruptDataError(f"{what}: not a zstd frame")
    try:
        header = zstandard.get_frame_parameters(frame)
        if header.window_size > MAX_ZSTD_WINDOW or header.dict_id:
            raise CorruptDataError(f"{what}: zstd window above 2^27 or a dictionary id")
        declared = header.content_size
        if declared not in (zstandard.CONTENTSIZE_UNKNOWN, size):
            raise CorruptDataError(f"{what}: frame declares {declared} bytes, not {size}")
        stream = zstandard.ZstdDecompressor().decompressobj()
        out, fed = b"", 0
        while fed < len(frame) and not stream.eof:
            out += stream.decompress(frame[fed:fed + ZSTD_FEED])
            fed += ZSTD_FEED
            if len(out) > size:
                raise CorruptDataError(f"{what}: more than {size} bytes")
    except zstandard.ZstdError as exc:
        raise CorruptDataError(f"{what}: invalid zstd frame ({exc})") from exc
    if not stream.eof or len(out) != size:
        raise CorruptDataError(f"{what}: zstd frame incomplete or not {size} bytes")
    if stream.unused_data or fed < len(frame):
        raise CorruptDataError(f"{what}: bytes after the zstd frame")
    return out


def _str_keyed_map(pairs: list[tuple[Any, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise FormatError("index: a map key is not a str, or repeats")
    return dict(pairs)


def _no_ext(code: int, data: bytes) -> Any:
    raise FormatError(f"index: msgpack ext type {code}")


def _check_depth(value: Any, depth: int) -> None:
    """§4: maps and arrays nest at most 64 deep; no ext value (msgpack decodes type -1, the
    timestamp, itself)."""
    if isinstance(value, msgpack.Timestamp):
        raise FormatError("index: msgpack ext type -1")
    if isinstance(value, dict | list):
        if depth > MAX_NESTING:
            raise FormatError("index: nested more than 64 deep")
        for item in value.values() if isinstance(value, dict) else value:
            _check_depth(item, depth + 1)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _uint(v: Any, bits: int = 64) -> int:
    if not (_is_int(v) and 0 <= v < 1 << bits):
        raise FormatError(f"index: {v!r} is not a u{bits}")
    return v


def _typed(fields: Any, key: str, kind: type) -> Any:
    """``fields[key]``, which MUST exist with msgpack type ``kind`` (§1)."""
    if not isinstance(fields, dict):
        raise FormatError("index: a map was expected")
    value = fields.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"index: {key!r} missing or not a {kind.__name__}")
    return value


def _parse_index(fields: Any) -> tuple[Section, list[TensorRef]]:
    """§4.1–§4.3 and §4.5 items 1–3."""
    g = _typed(fields, "graph", dict)
    graph = Section(*(_uint(_typed(g, k, int), bits) for k, bits in
                      (("offset", 64), ("length", 64), ("raw_length", 64), ("crc32", 32))))
    tensors = [_parse_tensor(t) for t in _typed(fields, "tensors", list)]
    paths = {tuple((type(p), p) for p in t.path) for t in tensors}
    if len(paths) != len(tensors):
        raise FormatError("index: two tensors have equal paths")
    return graph, tensors


def _parse_tensor(t: Any) -> TensorRef:
    name = _typed(t, "name", str)
    path = tuple(_typed(t, "path", list))
    if not path or not all(isinstance(p, str) or _is_int(p) for p in path):
        raise FormatError(f"tensor {name!r}: path is not a non-empty array of str/int")
    shape = tuple(_uint(d) for d in _typed(t, "shape", list))
    chunks = []
    for c in _typed(t, "chunks", list):
        if not isinstance(c, list) or len(c) < 4 or not isinstance(c[1], list):
            raise FormatError(f"tensor {name!r}: malformed chunk entry")
        chunks.append(ChunkRef(_uint(c[0]), tuple(_uint(s) for s in c[1]), _uint(c[2]),
                               _uint(c[3], 32)))
    tensor = TensorRef(name, path, _typed(t, "dtype", str), shape, _typed(t, "codec", str),
                       _typed(t, "params", dict), tuple(chunks),
                       _uint(_typed(t, "crc32", int), 32))
    check_counts(tensor)
    return tensor


def check_counts(t: TensorRef) -> None:
    """§4.5 item 3: fewer than 2^64 elements, and the chunks hold exactly that many."""
    if t.count >= 1 << 64:
        raise LimitExceededError(f"tensor {t.name!r}: 2^64 elements or more")
    if sum(c.count for c in t.chunks) != t.count:
        raise FormatError(f"tensor {t.name!r}: chunk counts do not sum to the element count")


def _check_layout(graph: Section, tensors: list[TensorRef], index_offset: int,
                  limits: Limits) -> None:
    """§4.5 items 4–6."""
    if not (graph.offset >= HEADER_SIZE and graph.offset + graph.length <= index_offset):
        raise FormatError("index: graph section outside the file body")
    if graph.raw_length > limits.max_graph_size:
        raise LimitExceededError("graph: larger than max_graph_size")
    end = HEADER_SIZE
    for c in sorted((c for t in tensors for c in t.chunks), key=lambda c: (c.offset, c.end)):
        if c.offset % 64 or c.offset < end or c.end > graph.offset:
            raise FormatError("index: chunk misaligned, outside the chunk area or overlapping")
        end = c.end


# --- restoring a tensor (§5) --------------------------------------------------------------

def resolve(model: onnx.ModelProto, path: Sequence[str | int]) -> onnx.TensorProto:
    """The TensorProto at ``path``, by the grammar of §5.1."""
    steps = list(path)

    def take() -> str | int:
        if not steps:
            raise FormatError(f"path {list(path)}: ends too early")
        return steps.pop(0)

    def index(items: Sequence) -> Any:
        i = take()
        if not (_is_int(i) and 0 <= i < len(items)):
            raise FormatError(f"path {list(path)}: bad index {i!r}")
        return items[i]

    def graph_path(g: onnx.GraphProto) -> onnx.TensorProto:
        if steps and steps[0] == "initializer":
            take()
            return index(g.initializer)
        return node_path(g.node)

    def node_path(nodes: Sequence[onnx.NodeProto]) -> onnx.TensorProto:
        if take() != "node":
            raise FormatError(f"path {list(path)}: 'node' expected")
        node = index(nodes)
        if take() != "attribute":
            raise FormatError(f"path {list(path)}: 'attribute' expected")
        attr = index(node.attribute)
        step = take()
        A = onnx.AttributeProto
        if step == "t" and attr.type == A.TENSOR:
            return attr.t
        if step == "tensors" and attr.type == A.TENSORS:
            return index(attr.tensors)
        if step == "g" and attr.type == A.GRAPH:
            return graph_path(attr.g)
        if step == "graphs" and attr.type == A.GRAPHS:
            return graph_path(index(attr.graphs))
        raise FormatError(f"path {list(path)}: step {step!r} in an attribute of type "
                          f"{attr.type}")

    head = take()
    if head == "graph":
        tensor = graph_path(model.graph)
    elif head == "functions":
        tensor = node_path(index(model.functions).node)
    else:
        raise FormatError(f"path {list(path)}: must start with 'graph' or 'functions'")
    if steps:
        raise FormatError(f"path {list(path)}: continues past a tensor")
    return tensor


def _check_slot(slot: onnx.TensorProto, t: TensorRef) -> None:
    """§5.2 items 3.2 and 3.3."""
    if (slot.name, slot.data_type, list(slot.dims)) != (t.name, DTYPES[t.dtype].number,
                                                        list(t.shape)):
        raise FormatError(f"tensor {t.name!r}: index does not match the graph")
    if (slot.HasField("segment") or slot.data_location == onnx.TensorProto.EXTERNAL
            or any(len(getattr(slot, f)) for f in PAYLOAD_FIELDS)):
        raise FormatError(f"tensor {t.name!r}: graph slot already holds data")


def _decode_tensor(data: bytes, t: TensorRef, earlier: list[bytes]) -> bytes:
    """§5.2 items 3.4 and 3.5; ``earlier`` holds the decoded tensors before ``t``, in the
    order of ``tensors`` (a copy's source is one of them, §6.7)."""
    chunk_parts = []
    for c in t.chunks:
        stored = data[c.offset:c.end]
        if crc32(stored) != c.crc32:
            raise CorruptDataError(f"tensor {t.name!r}: chunk CRC mismatch")
        starts = [c.offset + sum(c.sizes[:k]) for k in range(len(c.sizes))]
        chunk_parts.append([data[s:s + n] for s, n in zip(starts, c.sizes, strict=True)])
    dtype = DTYPES[t.dtype]
    if is_copy(t):  # §6.7: the source's decoded elements, checked against the copy's crc32
        out = earlier[t.params["of"]]
        if crc32(out) != t.crc32:
            raise CorruptDataError(f"tensor {t.name!r}: decoded tensor CRC mismatch")
        return out
    if t.codec == "lossless":
        decode_chunk = _lossless_decoder(t.params, dtype)
    elif t.codec == "deadzone":
        decode_chunk = _deadzone_decoder(t.params, dtype)
    elif t.codec == "mulaw":
        decode_chunk = _mulaw_decoder(t.params, dtype)
    elif t.codec == "minifloat":
        decode_chunk = _minifloat_decoder(t.params, dtype)
    elif t.codec == "trellis":
        decode_chunk = _trellis_decoder(t.params, dtype)
    elif t.codec == "predictive":
        decode_chunk = _predictive_decoder(t.params, dtype)
    elif t.codec == "deadzone_zstd":
        decode_chunk = _deadzone_zstd_decoder(t.params, dtype)
    elif t.codec == "trellis_zstd":
        decode_chunk = _trellis_zstd_decoder(t.params, dtype)
    else:
        raise FormatError(f"tensor {t.name!r}: codec {t.codec!r} is not known to this reader")
    out = b""
    for c, parts in zip(t.chunks, chunk_parts, strict=True):
        piece = decode_chunk(parts, c.count)
        if len(piece) != c.count * dtype.width:
            raise FormatError(f"tensor {t.name!r}: chunk decoded to the wrong size")
        out += piece
    if crc32(out) != t.crc32:
        raise CorruptDataError(f"tensor {t.name!r}: decoded tensor CRC mismatch")
    return out


# --- codec lossless (§6) ------------------------------------------------------------------

def is_copy(t: TensorRef) -> bool:
    """§6.7: codec `lossless` whose params' `mode` is `copy`."""
    return t.codec == "lossless" and t.params.get("mode") == "copy"


def check_copy(tensors: list[TensorRef], i: int) -> None:
    """§6.7 checks 1–4 of the copy at position ``i``, before any tensor is decoded."""
    t = tensors[i]
    k = t.params.get("of")
    if not _is_int(k) or not 0 <= k < i:
        raise FormatError(f"tensor {t.name!r}: copy 'of' is not an earlier position")
    source = tensors[k]
    if is_copy(source):
        raise FormatError(f"tensor {t.name!r}: copy of a copy")
    if source.dtype != t.dtype or source.count != t.count:
        raise FormatError(f"tensor {t.name!r}: copy of another dtype or element count")
    if any(c.sizes or c.crc32 != 0 for c in t.chunks):
        raise FormatError(f"tensor {t.name!r}: copy chunk with parts or a CRC-32 other than 0")


def plane_widths(dtype: DType) -> list[int]:
    """§6.1: W planes of 8 bits, or E then SM cut into 8-bit groups from the top."""
    if not dtype.e:
        return [8] * dtype.width
    widths, rest = [dtype.e], 1 + dtype.m
    while rest > 0:
        widths.append(min(8, rest))
        rest -= widths[-1]
    return widths


@dataclass(frozen=True)
class Plane:
    """A plane-coding map (§6.2) with its plane width ``bits``."""

    method: str
    bits: int
    table: Table | None = None
    value: int = 0


def _lossless_decoder(params: dict, dtype: DType) -> ChunkDecode:
    mode = _typed(params, "mode", str)
    if mode == "zstd":
        def decode_zstd(parts: list[bytes], count: int) -> bytes:
            if len(parts) != 1:
                raise FormatError("lossless zstd: a chunk has one part")
            return _zstd_exact(parts[0], count * dtype.width, "lossless zstd part")
        return decode_zstd
    if mode == "palette":
        return _palette_decoder(params, dtype)
    if mode == "magnitude":
        if not dtype.e:
            raise FormatError(f"lossless magnitude: {dtype.name} is not a float type")
        widths = magnitude_widths(dtype)
        join = _join_magnitude
    elif mode == "planes":
        widths = plane_widths(dtype)
        join = _join
    else:
        raise FormatError(f"lossless: mode {mode!r} is not known to this reader")
    entries = _typed(params, "planes", list)
    if len(entries) != len(widths):
        raise FormatError(f"lossless: {dtype.name} has {len(widths)} planes")
    planes = [_parse_plane(p, b) for p, b in zip(entries, widths, strict=True)]

    def decode_planes(parts: list[bytes], count: int) -> bytes:
        if len(parts) != len(planes):
            raise FormatError(f"lossless: {dtype.name} chunks have {len(planes)} parts")
        parts = [_checked_part(plane, part, count)
                 for plane, part in zip(planes, parts, strict=True)]
        symbols, ended = zip(*(plane_symbols(plane, part, count)
                               for plane, part in zip(planes, parts, strict=True)), strict=True)
        if not all(ended):  # §10.2: after every plane's symbols were range-checked
            raise CorruptDataError("lossless: ANS stream does not end in the initial state")
        return b"".join(join(dtype, widths, [s[j] for s in symbols]) for j in range(count))
    return decode_planes


def _checked_part(plane: Plane, part: bytes, count: int) -> bytes:
    """§10.2 "part by part": the part's layout checked; a ``zstd`` part's content (§6.5)."""
    if plane.method == "constant" and part:
        raise CorruptDataError("lossless: constant plane with stored bytes")
    if plane.method == "packed" and len(part) != -(-count * plane.bits // 8):
        raise CorruptDataError("lossless: packed plane of the wrong length")
    if plane.method == "ans":
        _check_stream(part, count)
    if plane.method == "zstd":
        return _zstd_exact(part, count * -(-plane.bits // 8), "lossless zstd plane")
    return part


def _palette_decoder(params: dict, dtype: DType) -> ChunkDecode:
    """§6.6: n values of W bytes; one index plane of b = max(1, ceil(log2 n)) bits per chunk,
    each index below n and replaced by its value's bytes."""
    values = _typed(params, "values", bytes)
    n, rest = divmod(len(values), dtype.width)
    if rest or not 1 <= n <= 1 << 16:
        raise FormatError(f"lossless palette: {len(values)} bytes are not 1 to 65536 values")
    bits = 1
    while 1 << bits < n:
        bits += 1
    plane = _parse_plane(_typed(params, "index", dict), bits)
    table = [values[i * dtype.width:(i + 1) * dtype.width] for i in range(n)]

    def decode_palette(parts: list[bytes], count: int) -> bytes:
        if len(parts) != 1:
            raise FormatError("lossless palette: a chunk has one part")
        symbols, ended = plane_symbols(plane, _checked_part(plane, parts[0], count), count)
        if any(x >= n for x in symbols):
            raise FormatError("lossless palette: index beyond the table")
        if not ended:  # §10.2: after the range checks
            raise CorruptDataError("lossless: ANS stream does not end in the initial state")
        return b"".join(table[x] for x in symbols)
    return decode_palette


def plane_symbols(plane: Plane, part: bytes, count: int) -> tuple[list[int], bool]:
    """§6.2: the plane's ``count`` symbols, and whether its ANS stream (if any) ended in the
    state §8.3 requires (checked by the caller, after all planes)."""
    if plane.method == "ans":
        assert plane.table is not None
        values, ended = ans_decode(part, count, plane.table)
        if any(not 0 <= v < 1 << plane.bits for v in values):
            raise FormatError("lossless: ANS symbol outside the plane's range")
        return values, ended
    if plane.method == "packed":
        return unpack_bits(part, plane.bits, count), True
    if plane.method == "zstd":  # ``part`` is the frame's content here
        return zstd_symbols(part, plane.bits, count), True
    return [plane.value] * count, True


def _parse_plane(p: Any, bits: int) -> Plane:
    method = _typed(p, "method", str)
    if method == "ans":
        return Plane("ans", bits, table=Table.parse(_typed(p, "table", dict)))
    if method in ("packed", "zstd"):
        return Plane(method, bits)
    if method == "constant":
        value = _typed(p, "value", int)
        if not 0 <= value < 1 << bits:
            raise FormatError(f"lossless: constant {value} outside {bits} bits")
        return Plane("constant", bits, value=value)
    raise FormatError(f"lossless: plane method {method!r} is not known to this reader")


def unpack_bits(part: bytes, bits: int, count: int) -> list[int]:
    """§6.3: bit k of the string is bit 7 − (k mod 8) of byte k // 8."""
    out = []
    for j in range(count):
        v = 0
        for k in range(j * bits, (j + 1) * bits):
            v = (v << 1) | ((part[k // 8] >> (7 - k % 8)) & 1)
        out.append(v)
    return out


def zstd_symbols(content: bytes, bits: int, count: int) -> list[int]:
    """§6.5: symbol j is bytes j·B .. j·B + B − 1 of the content, little-endian, B = ceil(b/8);
    each MUST be below 2^b."""
    size = -(-bits // 8)
    values = [int.from_bytes(content[j * size:(j + 1) * size], "little") for j in range(count)]
    if any(v >> bits for v in values):
        raise FormatError("lossless: zstd plane symbol outside the plane's range")
    return values


def _join(dtype: DType, widths: list[int], planes: list[int]) -> bytes:
    """§6.1 reassembly of one element from its plane symbols (``widths``: the planes')."""
    if not dtype.e:
        w = 0
        for i, p in enumerate(planes):
            w |= p << (8 * (dtype.width - 1 - i))
    else:
        sm, rest = 0, 1 + dtype.m
        for p, b in zip(planes[1:], widths[1:], strict=True):
            rest -= b
            sm |= p << rest
        w = ((planes[0] << dtype.m) | ((sm >> dtype.m) << (8 * dtype.width - 1))
             | (sm & ((1 << dtype.m) - 1)))
    return w.to_bytes(dtype.width, "little")


def magnitude_widths(dtype: DType) -> list[int]:
    """§6.8: the magnitude's top 7 bits, its other W − 1 bytes, the sign bit."""
    return [7] + [8] * (dtype.width - 1) + [1]


def _join_magnitude(dtype: DType, widths: list[int], planes: list[int]) -> bytes:
    """§6.8 reassembly: w = S << (8·W − 1) | Σ plane_i << 8·(W − 1 − i), i < W."""
    w = planes[-1] << (8 * dtype.width - 1)
    for i, p in enumerate(planes[:-1]):
        w |= p << (8 * (dtype.width - 1 - i))
    return w.to_bytes(dtype.width, "little")


# --- codec deadzone (§7) ------------------------------------------------------------------

def _deadzone_decoder(params: dict, dtype: DType) -> ChunkDecode:
    step, deadzone, escape, table = _deadzone_params(params, dtype, "deadzone")

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        q = _decode_symbols(parts, count, table, escape, 1 << 53, "deadzone")
        return b"".join(_reconstruct(v, step, deadzone, dtype) for v in q)
    return decode_chunk


def _deadzone_params(params: dict, dtype: DType, codec: str
                     ) -> tuple[float, float, bool, Table]:
    """§7.1 (and §16.1): step, deadzone, escape and the table, checked."""
    step, deadzone, escape = _quantizer_params(params, dtype, codec)
    return step, deadzone, escape, Table.parse(_typed(params, "table", dict))


def _quantizer_params(params: dict, dtype: DType, codec: str) -> tuple[float, float, bool]:
    """§7.1 (and §16.1, §17.1): step, deadzone and escape, checked."""
    step = _number(params, "step")
    deadzone = _number(params, "deadzone")
    if not (math.isfinite(step) and step > 0 and 0.0 <= deadzone <= 1.0):
        raise FormatError(f"{codec}: step must be finite and > 0, deadzone in [0, 1]")
    rule = _typed(params, "reconstruction", str)
    if rule != "midpoint":
        raise FormatError(f"{codec}: reconstruction {rule!r} is not known to this reader")
    escape = _typed(params, "escape", bool)
    if dtype.name not in QUANTIZABLE:
        raise FormatError(f"{codec}: cannot reconstruct into {dtype.name}")
    return step, deadzone, escape


def _decode_symbols(parts: list[bytes], count: int, table: Table, escape: bool, limit: int,
                    codec: str) -> list[int]:
    """§7.2 (and §15.3): the chunk's symbols with the escaped ones replaced, each within
    ±``limit``."""
    if len(parts) != 2:
        raise FormatError(f"{codec}: a chunk has two parts")
    return list(_symbols(parts, count, table, escape, limit, codec))


def _symbols(parts: list[bytes], count: int, table: Table, escape: bool, limit: int,
             codec: str) -> Iterator[int]:
    """§7.2 on parts 0 and 1: each symbol, escapes replaced, once it passed its checks; the
    checks that follow the last symbol (§10.2) run when the iteration ends, so a caller's own
    check of each element (§16.3) comes before them."""
    _check_stream(parts[0], count)
    escaped = _escaped_values(parts[1], escape, limit, codec)
    q, ended = ans_decode(parts[0], count, table)
    replaced = EscapeReplacer(iter(q), escaped, table.offset + len(table.F) - 1 if escape
                             else None, limit, codec)
    yield from replaced.symbols()
    if not ended:
        raise CorruptDataError(f"{codec}: ANS stream does not end in the initial state")
    replaced.check_all_used()


def _escaped_values(part: bytes, escape: bool, limit: int, codec: str) -> list[int]:
    """§7.2: part 1's values (corrupt data if present without ``escape``)."""
    if not escape and part:
        raise CorruptDataError(f"{codec}: escape bytes without escape symbol")
    escaped = [unzigzag(u) for u in read_uvarints(part)] if escape else []
    if any(abs(v) > limit for v in escaped):
        raise FormatError(f"{codec}: escaped |q| > {limit}")
    return escaped


@dataclass
class EscapeReplacer:
    """§7.2: ``raw`` symbols with each escape symbol ``esc`` (None: none) replaced by the
    next escaped value, every other symbol checked against ±``limit``."""

    raw: Iterator[int]
    escaped: list[int]
    esc: int | None
    limit: int
    codec: str
    used: int = 0

    def symbols(self) -> Iterator[int]:
        for s in self.raw:
            if s == self.esc:
                if self.used == len(self.escaped):
                    raise FormatError(f"{self.codec}: more escape symbols than escape values")
                s, self.used = self.escaped[self.used], self.used + 1
            elif abs(s) > self.limit:
                raise FormatError(f"{self.codec}: |q| > {self.limit}")
            yield s

    def check_all_used(self) -> None:
        if self.used != len(self.escaped):
            raise FormatError(f"{self.codec}: more escape values than escape symbols")


# --- codec deadzone_zstd (§17) ------------------------------------------------------------

def _deadzone_zstd_decoder(params: dict, dtype: DType) -> ChunkDecode:
    codec = "deadzone_zstd"
    step, deadzone, escape = _quantizer_params(params, dtype, codec)
    symbols = _zstd_symbols(params, escape, 1 << 53, codec)

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        return b"".join(_reconstruct(v, step, deadzone, dtype) for v in symbols(parts, count))
    return decode_chunk


def _zstd_symbols(params: dict, escape: bool, limit: int,
                  codec: str) -> Callable[[list[bytes], int], list[int]]:
    """§17.1 and §17.2 (and §18.1, §18.2): the range's parameters checked, and a function
    from a chunk's parts to its symbols with the escaped ones replaced, each within
    ±``limit``."""
    offset = _typed(params, "offset", int)
    n = _typed(params, "size", int)
    k = _typed(params, "low_bits", int)
    if not (2 <= n <= 65536 and offset >= -(1 << 63) and offset + n - 1 < 1 << 63):
        raise FormatError(f"{codec}: size or offset out of range")
    if not (0 <= k <= 8 and (n - 1) >> k <= 255):
        raise FormatError(f"{codec}: low_bits {k} out of range for {n} symbols")

    def chunk_symbols(parts: list[bytes], count: int) -> list[int]:
        if len(parts) != 3:
            raise FormatError(f"{codec}: a chunk has three parts")
        high = _zstd_exact(parts[0], count, f"{codec} high bytes")
        if not escape and parts[1]:  # §10.2: every part's corrupt checks come first
            raise CorruptDataError(f"{codec}: escape bytes without escape symbol")
        if len(parts[2]) != -(-count * k // 8):
            raise CorruptDataError(f"{codec}: low-bits part of the wrong length")
        escaped = _escaped_values(parts[1], escape, limit, codec)
        low = unpack_bits(parts[2], k, count) if k else [0] * count

        def raw() -> Iterator[int]:
            for h, lo in zip(high, low, strict=True):
                p = (h << k) | lo
                if p >= n:
                    raise FormatError(f"{codec}: position {p} beyond {n} symbols")
                yield offset + p
        replaced = EscapeReplacer(raw(), escaped, offset + n - 1 if escape else None,
                                 limit, codec)
        q = list(replaced.symbols())
        replaced.check_all_used()
        return q
    return chunk_symbols


def _number(params: dict, key: str) -> float:
    """A float parameter; a msgpack int is accepted and converted to binary64 (§7.1)."""
    value = params.get(key)
    if isinstance(value, float) or _is_int(value):
        return float(value)
    raise FormatError(f"{key!r} missing or not a number")


def _reconstruct(q: int, step: float, deadzone: float, dtype: DType) -> bytes:
    """§7.3: the midpoint in binary64, rounded to the dtype."""
    return to_dtype(midpoint(q, step, deadzone), dtype)


def midpoint(q: int, step: float, deadzone: float) -> float:
    """§7.3 r, in binary64 (Python floats), in exactly the order given there."""
    if q == 0:
        return 0.0
    a = float(abs(q))
    t = deadzone - 0.5
    u = a + t
    r = step * u
    return -r if q < 0 else r


def to_dtype(r: float, dtype: DType) -> bytes:
    """§7.3: r rounded to the dtype (bfloat16 through binary32), as little-endian bytes."""
    if dtype.name == "float64":
        return struct.pack("<d", r)
    if dtype.name == "bfloat16":
        b = round_binary64(r, 8, 23)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).to_bytes(2, "little")
    return round_binary64(r, dtype.e, dtype.m).to_bytes(dtype.width, "little")


# --- codecs mulaw (§13) and minifloat (§14) -----------------------------------------------

def _one_table_decoder(name: str, table: Table, value: Callable[[int], float], dtype: DType
                       ) -> ChunkDecode:
    """A chunk of one part, the ANS stream of its symbols (§13.1, §14.1), each symbol s
    becoming the bytes of ``value(s)`` rounded to the dtype (§7.3)."""
    if dtype.name not in QUANTIZABLE:
        raise FormatError(f"{name}: cannot reconstruct into {dtype.name}")

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        if len(parts) != 1:
            raise FormatError(f"{name}: a chunk has one part")
        _check_stream(parts[0], count)
        symbols, ended = ans_decode(parts[0], count, table)
        if not ended:
            raise CorruptDataError(f"{name}: ANS stream does not end in the initial state")
        return b"".join(to_dtype(value(s), dtype) for s in symbols)
    return decode_chunk


def _mulaw_decoder(params: dict, dtype: DType) -> ChunkDecode:
    scale, base = _number(params, "scale"), _number(params, "base")
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(base) and base > 1):
        raise FormatError("mulaw: scale must be finite and > 0, base finite and > 1")
    grid = _typed(params, "grid", str)
    if grid not in ("midrise", "midtread"):
        raise FormatError(f"mulaw: grid {grid!r} is not known to this reader")
    table = Table.parse(_typed(params, "table", dict))
    J = max(-table.offset, table.offset + len(table.F) - 1)
    if J > 1 << 16:
        raise FormatError("mulaw: symbols beyond ±2^16")
    P = [1.0]  # §13.2: one binary64 multiplication per step, left to right
    for _ in range(2 * J):
        P.append(P[-1] * base)

    def value(q: int) -> float:  # §13.3
        if q == 0:
            return 0.0
        n = 2 * abs(q) - 1 if grid == "midrise" else 2 * abs(q)
        v = P[n] - 1.0
        r = scale * v
        return -r if q < 0 else r
    return _one_table_decoder("mulaw", table, value, dtype)


def _minifloat_decoder(params: dict, dtype: DType) -> ChunkDecode:
    p = _typed(params, "exponent_bits", int)
    q = _typed(params, "mantissa_bits", int)
    b = _typed(params, "bias", int)
    if not (p >= 1 and q >= 0 and p + q <= 15 and b <= 1075 - q and (1 << p) - b <= 1024):
        raise FormatError("minifloat: exponent_bits, mantissa_bits or bias out of range")
    table = Table.parse(_typed(params, "table", dict))
    if max(-table.offset, table.offset + len(table.F) - 1) > (1 << (p + q)) - 1:
        raise FormatError("minifloat: symbols beyond ±(2^(p+q) − 1)")

    def value(s: int) -> float:  # §14.2, §14.3: exact, so Python's ldexp is the value
        m = abs(s)
        e, f = m >> q, m & ((1 << q) - 1)
        a = math.ldexp(f, 1 - b - q) if e == 0 else math.ldexp((1 << q) + f, e - b - q)
        return -a if s < 0 else a
    return _one_table_decoder("minifloat", table, value, dtype)


def round_binary64(x: float, e: int, m: int) -> int:
    """Bits of ``x`` rounded to the IEEE format of e exponent and m mantissa bits.

    Round to nearest, ties to even, subnormals kept, beyond the range ±infinity; exact
    integer arithmetic on the value of ``x`` (``x`` is finite or infinite, never NaN).
    """
    sign = (1 << (e + m)) if math.copysign(1.0, x) < 0 else 0
    x = abs(x)
    infinity = ((1 << e) - 1) << m
    if math.isinf(x):
        return sign | infinity
    if x == 0:
        return sign
    bias = (1 << (e - 1)) - 1
    num, den = x.as_integer_ratio()
    k = den.bit_length() - 1  # x = num / 2**k
    exponent = num.bit_length() - 1 - k  # 2**exponent <= x < 2**(exponent + 1)
    biased = max(exponent + bias, 1)
    shift = (biased - bias - m) + k  # x / 2**(ulp exponent) = num / 2**shift
    if shift <= 0:
        n = num << -shift
    else:
        n, rem = num >> shift, num & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and n & 1):
            n += 1
    bits = ((biased - 1) << m) + n  # a carry out of the mantissa bumps the exponent
    return sign | min(bits, infinity)


# --- codec trellis (§15) ------------------------------------------------------------------

TRELLIS_NEXT = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))  # §15.3


def _trellis_decoder(params: dict, dtype: DType) -> ChunkDecode:
    step, segment, escape = _trellis_params(params, dtype, "trellis")
    if ("table" in params) == ("buckets" in params):
        raise FormatError("trellis: exactly one of table and buckets")
    if "table" in params:
        table = Table.parse(_typed(params, "table", dict))
    else:
        table = _bucket_table(_typed(params, "buckets", dict), escape)

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        k = _decode_symbols(parts, count, table, escape, 1 << 52, "trellis")
        return _trellis_values(k, step, segment, dtype)
    return decode_chunk


def _trellis_zstd_decoder(params: dict, dtype: DType) -> ChunkDecode:
    """§18: the levels as §17.2 reads symbols, the values as §15.3–§15.4."""
    step, segment, escape = _trellis_params(params, dtype, "trellis_zstd")
    levels = _zstd_symbols(params, escape, 1 << 52, "trellis_zstd")

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        return _trellis_values(levels(parts, count), step, segment, dtype)
    return decode_chunk


def _trellis_params(params: dict, dtype: DType, codec: str) -> tuple[float, int, bool]:
    """§15.1: (step, segment, escape), checked."""
    step = _number(params, "step")
    if not (math.isfinite(step) and step > 0):
        raise FormatError(f"{codec}: step must be finite and > 0")
    segment = _typed(params, "segment", int)
    if segment < 1 or segment > 1 << 16 or segment & (segment - 1):
        raise FormatError(f"{codec}: segment must be 2^j, 0 <= j <= 16")
    escape = _typed(params, "escape", bool)
    if dtype.name not in QUANTIZABLE:
        raise FormatError(f"{codec}: cannot reconstruct into {dtype.name}")
    return step, segment, escape


def _trellis_values(levels: list[int], step: float, segment: int, dtype: DType) -> bytes:
    """§15.3 and §15.4: a chunk's levels through the state machine, reconstructed."""
    out = []
    state = 0
    for i, level in enumerate(levels):
        if i % segment == 0:
            state = 0
        q = state & 1
        state = TRELLIS_NEXT[state][abs(level) & 1]
        r = 0.0 if level == 0 else step * float(2 * abs(level) - q)
        out.append(to_dtype(-r if level < 0 else r, dtype))
    return b"".join(out)


def _bucket_table(fields: dict, escape: bool) -> Table:
    """§15.2: the frequency table a bucket table stands for."""
    M = _typed(fields, "magnitude", int)
    r = _typed(fields, "resolution", int)
    P = _typed(fields, "precision", int)
    raw = _typed(fields, "freqs", bytes)
    if not (1 <= M <= 32767 and 0 <= r <= 8 and 8 <= P <= 24):
        raise FormatError("bucket table: magnitude, resolution or precision out of range")

    def bucket(m: int) -> int:
        if m < 1 << (r + 1):
            return m
        s = m.bit_length() - 1 - r
        return (s << r) + (m >> s)

    B = bucket(M)
    g = read_uvarints(raw)
    if len(g) != B + escape:
        raise FormatError(f"bucket table: {len(g)} frequencies, expected {B + escape}")
    if min(g) < 1 or max(g) > 1 << 24:
        raise FormatError("bucket table: frequencies must be in 1..2^24")
    g_esc = g[B] if escape else 0
    per_m = [g[bucket(m) - 1] for m in range(1, M + 1)]
    zero = (1 << P) - 2 * sum(per_m) - g_esc
    if zero < 1:
        raise FormatError("bucket table: nothing left for the zero symbol")
    freqs = per_m[::-1] + [zero] + per_m + ([g_esc] if escape else [])
    F = tuple(f << (24 - P) for f in freqs)
    C = [0]
    for f in F:
        C.append(C[-1] + f)
    return Table(-M, F, tuple(C))


# --- codec predictive (§16) ---------------------------------------------------------------

PREDICTIVE_MAX_ROW = 1 << 16
PREDICTIVE_MAX_RESIDUAL = 1 << 35
PREDICTIVE_MAX_LEVEL = 1 << 31


def _predictive_decoder(params: dict, dtype: DType) -> ChunkDecode:
    """§16: the residuals of parts 0 and 1 (§16.2), the levels rebuilt along the chunk's rows
    with part 2's coefficients (§16.3), reconstructed as §7.3 (§16.4)."""
    step, deadzone, escape, table = _deadzone_params(params, dtype, "predictive")
    row = _typed(params, "row", int)
    if not 1 <= row <= PREDICTIVE_MAX_ROW:
        raise FormatError(f"predictive: row {row} outside 1..65536")

    def decode_chunk(parts: list[bytes], count: int) -> bytes:
        if len(parts) != 3:
            raise FormatError("predictive: a chunk has three parts")
        rows = -(-count // row)
        if len(parts[2]) != 4 * rows:
            raise CorruptDataError(f"predictive: {len(parts[2])} bytes of coefficients for "
                                   f"{rows} rows")
        coefficients = [struct.unpack_from("<hh", parts[2], 4 * r) for r in range(rows)]
        out = []
        q1 = q2 = 0
        residuals = _symbols(parts[:2], count, table, escape, PREDICTIVE_MAX_RESIDUAL,
                             "predictive")
        for i, e in enumerate(residuals):
            r, j = divmod(i, row)
            if j == 0:
                q1 = q2 = 0  # the predictor restarts at every row of the chunk
            a, b = coefficients[r]
            q = e + prediction(a, b, q1, q2)
            if abs(q) > PREDICTIVE_MAX_LEVEL:
                raise FormatError(f"predictive: level |q| > 2^31 at element {i}")
            out.append(_reconstruct(q, step, deadzone, dtype))
            q2, q1 = q1, q
        return b"".join(out)
    return decode_chunk


def prediction(a: int, b: int, q1: int, q2: int) -> int:
    """§16.3: (a·q1 + b·q2 + 2048) >> 12, the shift arithmetic (Python's ``>>`` on ints
    floors, as the rule wants)."""
    return (a * q1 + b * q2 + 2048) >> 12


# --- frequency tables and ANS (§8), varints (§9) ------------------------------------------

@dataclass(frozen=True)
class Table:
    """A frequency table (§8.1) as the coder uses it: F_i and C_i at 24-bit precision."""

    offset: int
    F: tuple[int, ...]
    C: tuple[int, ...]

    @classmethod
    def parse(cls, fields: dict) -> Table:
        offset = _typed(fields, "offset", int)
        precision = _typed(fields, "precision", int)
        n = _typed(fields, "size", int)
        raw = _typed(fields, "freqs", bytes)
        if not (2 <= n <= 65536 and 8 <= precision <= 24):
            raise FormatError("table: size or precision out of range")
        f = read_uvarints(raw)
        if len(f) != n:
            raise FormatError(f"table: {len(f)} frequencies, size says {n}")
        if min(f) < 1 or max(f) > 1 << 24 or sum(f) != 1 << precision:
            raise FormatError("table: frequencies must be in 1..2^24 and sum to 2^precision")
        if not (offset >= -(1 << 63) and offset + n - 1 < 1 << 63):
            raise FormatError("table: offset out of range")
        F = tuple(x << (24 - precision) for x in f)
        C = [0]
        for x in F:
            C.append(C[-1] + x)
        return cls(offset, F, tuple(C))


def _check_stream(stream: bytes, count: int) -> None:
    """§8.2."""
    if count == 0 and stream:
        raise CorruptDataError("ANS: bytes for zero symbols")
    if len(stream) % 4:
        raise CorruptDataError("ANS: length not a multiple of 4")
    if stream and stream[-4:] == b"\0\0\0\0":
        raise CorruptDataError("ANS: last word is zero")


def ans_decode(stream: bytes, count: int, table: Table) -> tuple[list[int], bool]:
    """§8.3: the ``count`` symbol values, and whether the stream ended with state 0, pos 0."""
    w = struct.unpack(f"<{len(stream) // 4}I", stream)
    L = len(w)
    if L == 0:
        state, pos = 0, 0
    elif L == 1:
        state, pos = w[0], 0
    else:
        state, pos = (w[L - 1] << 32) | w[L - 2], L - 2
    out = []
    for _ in range(count):
        quantile = state & ((1 << 24) - 1)
        i = _find(table.C, quantile)
        state = (state >> 24) * table.F[i] + (quantile - table.C[i])
        if state < 1 << 32 and pos > 0:
            pos -= 1
            state = (state << 32) | w[pos]
        out.append(table.offset + i)
    return out, state == 0 and pos == 0


def _find(C: tuple[int, ...], quantile: int) -> int:
    """The unique i with C[i] <= quantile < C[i + 1] (binary search)."""
    lo, hi = 0, len(C) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if C[mid] <= quantile:
            lo = mid
        else:
            hi = mid - 1
    return lo


def read_uvarints(data: bytes) -> list[int]:
    """Every unsigned LEB128 value of ``data``, which they MUST fill exactly (§9)."""
    out, value, length = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << (7 * length)
        length += 1
        if length > 10:
            raise FormatError("varint: longer than 10 bytes")
        if byte < 0x80:
            if length > 1 and byte == 0:
                raise FormatError("varint: not the shortest encoding")
            if length == 10 and byte > 1:
                raise FormatError("varint: value >= 2^64")
            out.append(value)
            value, length = 0, 0
    if length:
        raise FormatError("varint: missing final byte")
    return out


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)
