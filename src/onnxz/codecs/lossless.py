"""Bit-exact codec: float bit planes entropy-coded, zstd, or a palette, whichever is smaller.

A float element splits into planes (SPEC.md § "lossless"): the exponent field, then the
sign bit followed by the mantissa, cut into 8-bit groups from the top (the last group may be
shorter). Other types split into bytes, most significant first. Each plane is coded by one
method: ``ans`` (order-0 model over the plane's values), ``zstd`` (the plane's symbols as a
zstd frame: Huffman-coded literals, decoded ~30x faster than ANS; format 1.1), ``packed``
(the raw bits), or ``constant`` (every element the same value). The writer picks per plane
the smallest, counting decode time as bytes (:data:`BYTES_PER_DECODE_NS`) so that large
planes go to the fast decoders unless ANS saves more than that.

A tensor with few distinct values (weights on a grid such as multiples of 1/160) is coded
in mode ``palette`` (format 1.5) when that is smaller: its sorted table of distinct values,
stored exactly, and one plane of indices into it, coded by the same plane methods.

A 16-bit float tensor is coded in mode ``magnitude`` (format 1.7) when that is smaller: the
same plane methods over another split, the magnitude's bytes (the top one 7 bits: a float16's
exponent with its top 2 mantissa bits) and the sign bit apart. Magnitudes whose sign varies
repeat where the words do not (a Fourier basis), and an exponent coded with the top mantissa
bits it shapes costs fewer bits than the two apart.

A tensor whose encoding equals an earlier tensor's is written in mode ``copy`` (format 1.6):
its entry names the earlier one (``of``) and its chunks hold no bytes. Copies are resolved by
the writer and the reader, which know the index (:mod:`onnxz.api`, :mod:`onnxz.reader`); a
codec only sees one tensor, so :meth:`LosslessCodec.decoder` refuses the mode.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> x = np.linspace(-1, 1, 5000, dtype=np.float32)
>>> enc = LosslessCodec().encode(x, BY_NAME["float32"], chunk_elements=4096)
>>> [c.count for c in enc.chunks]
[4096, 904]
>>> decoder = LosslessCodec.decoder(enc.params, BY_NAME["float32"])
>>> out = np.empty_like(x)
>>> decoder.decode_into(enc.chunks[0].parts, out[:4096])
>>> decoder.decode_into(enc.chunks[1].parts, out[4096:])
>>> bool((out == x).all())
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from onnxz.codecs import ans
from onnxz.codecs.base import (
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    TensorCodec,
    batches,
    field,
    split_counts,
)
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError
from onnxz.zstdframe import decompress_exact

ZSTD_LEVEL = 19
ZSTD_FAST_LEVEL = 9
ZSTD_FAST_ABOVE = 1 << 22  # bytes; bigger tensors get the faster level

PLANE_ZSTD_LEVELS = (15, 19)
"""Levels tried for a ``zstd`` plane, smallest kept (15 often beats 19 on exponent planes)."""

DECODE_NS_PER_SYMBOL = {"ans": 30.0, "zstd": 1.0, "packed": 5.0, "packed8": 0.0,
                        "constant": 0.0}
"""Decode time per symbol on one core, measured here: constriction's ANS ~30 ns, zstd's
Huffman literals ~1 ns, bit-unpacking a plane narrower or wider than a byte ~5 ns (a byte
plane is used as it is stored)."""

BYTES_PER_DECODE_NS = 1 / 480
"""What a nanosecond of decoding per symbol is worth in stored bytes when a plane's method
is chosen: ANS then costs 1/16 byte (half a bit) per symbol more than its size, so a large
plane goes to zstd unless ANS saves more than that (small planes, where zstd's frame and
table overhead dominate, keep ANS)."""

MIN_ZSTD_GAIN = 0.995
"""A plane tries the slow zstd levels only if level 1 already gets below this share of its
packed size (incompressible mantissa bytes skip them)."""

PLANE_METHODS_1_1 = frozenset({"zstd"})
"""Plane methods that format 1.1 added (a file using one declares 1.1)."""

PALETTE_MINOR = 5
"""Mode ``palette`` is defined by format 1.5."""

COPY_MINOR = 6
"""Mode ``copy`` is defined by format 1.6."""

MAGNITUDE_MINOR = 7
"""Mode ``magnitude`` is defined by format 1.7."""

MAGNITUDE_WRITER_WIDTHS = frozenset({2})
"""Float widths (bytes) the writer tries mode ``magnitude`` on. The corpus's float32 weights
cast to float16 take 0.4-5.1% fewer bytes with it, cast to bfloat16 0-5.3% (the Silero VAD
models most, whose magnitudes repeat under other signs); stored as float32 at most 0.01%
(its exponent's low bit leaves the plane of the others), not worth a second coding of every
float32 tensor (measured 2026-12-03, tensor by tensor, the smaller mode kept)."""

PALETTE_MAX_VALUES = 1 << 16
"""The most values a ``palette`` table may hold (SPEC.md §6.6): indices of at most 16 bits."""

PALETTE_WRITER_MAX_VALUES = 4096
"""The writer tries ``palette`` only for tensors of at most this many distinct values, and at
most a quarter of their element count (larger tables rarely pay for themselves)."""

PALETTE_SAMPLE = 1 << 15
"""Elements whose distinct values are counted first: more than
:data:`PALETTE_WRITER_MAX_VALUES` among them rules ``palette`` out without sorting the tensor
(a continuous weight fails here in a few milliseconds)."""


@dataclass(frozen=True)
class PlaneLayout:
    """Where one plane's bits sit in the element: ``(word >> shift) & (2**bits - 1)``.

    The sign-and-mantissa planes of a float take ``sign << mantissa_bits | mantissa``.
    """

    bits: int
    shift: int
    from_sign_mantissa: bool

    @property
    def symbol_bytes(self) -> int:
        """Bytes per symbol in a ``zstd`` plane's content (little-endian)."""
        return (self.bits + 7) // 8

    @property
    def numpy(self) -> np.dtype:
        """The unsigned dtype that holds one symbol."""
        return _U1 if self.bits <= 8 else _U2


_U1, _U2 = np.dtype("u1"), np.dtype("<u2")


@functools.cache
def plane_layouts(etype: ElementType) -> tuple[PlaneLayout, ...]:
    """The normative plane split of an element type."""
    width_bits = 8 * etype.width
    if not etype.is_float:
        return tuple(PlaneLayout(8, width_bits - 8 * (i + 1), False) for i in range(etype.width))
    layouts = [PlaneLayout(etype.exponent_bits, etype.mantissa_bits, False)]
    remaining = 1 + etype.mantissa_bits
    while remaining > 0:
        bits = min(8, remaining)
        remaining -= bits
        layouts.append(PlaneLayout(bits, remaining, True))
    return tuple(layouts)


@functools.cache
def magnitude_layouts(etype: ElementType) -> tuple[PlaneLayout, ...]:
    """The planes of mode ``magnitude`` (SPEC.md §6.8) of a float type: the magnitude (the
    word without its sign bit) in bytes from the most significant, the first 7 bits wide,
    then the sign bit."""
    top = 8 * etype.width - 1
    return (PlaneLayout(7, top - 7, False),
            *(PlaneLayout(8, shift, False) for shift in range(top - 15, -1, -8)),
            PlaneLayout(1, top, False))


@functools.cache
def _word_type(etype: ElementType) -> np.dtype:
    return np.dtype(f"<u{etype.width}")


def split_planes(values: np.ndarray, etype: ElementType,
                 layouts: tuple[PlaneLayout, ...] | None = None) -> list[np.ndarray]:
    """The planes of ``values`` (flattened) as symbol arrays (uint8, uint16 above 8 bits), in
    layout order (``layouts``: the normative split of mode ``planes`` if not given); built a
    batch at a time (:func:`~onnxz.codecs.base.batches`), so the working memory beyond the
    planes is small."""
    word = _word_type(etype).type
    words = values.reshape(-1).view(_word_type(etype))
    layouts = layouts or plane_layouts(etype)
    planes = [np.empty(words.size, layout.numpy) for layout in layouts]
    with_sign_mantissa = any(layout.from_sign_mantissa for layout in layouts)
    for part in batches(words.size):
        batch = words[part]
        sign_mantissa = None
        if with_sign_mantissa:
            m = word(etype.mantissa_bits)
            sign = batch >> word(8 * etype.width - 1)
            sign_mantissa = (sign << m) | (batch & word((1 << etype.mantissa_bits) - 1))
        for plane, layout in zip(planes, layouts, strict=True):
            source = sign_mantissa if layout.from_sign_mantissa else batch
            mask = word((1 << layout.bits) - 1)
            plane[part] = (source >> word(layout.shift)) & mask
    return planes


def join_planes(planes: Sequence[np.ndarray | int], etype: ElementType,
                out: np.ndarray | None = None,
                layouts: tuple[PlaneLayout, ...] | None = None) -> np.ndarray:
    """Inverse of :func:`split_planes` (SPEC.md §6.1 reassembly, §6.8 for the ``magnitude``
    ``layouts``), in the element's width;
    written into ``out`` (contiguous, of ``etype.numpy``) if given, and returned. A plane
    may be an int, the value of every one of its symbols (a ``constant`` plane; given
    ``out``, or with an array among the planes).

    Each plane is shifted into place in whole little-endian words (several times faster
    than storing bytes with a stride). The plane that holds a float's sign in its top bit
    is read as signed bytes: shifted in the word's width, the sign fills every bit above
    the plane's others, and one mask keeps it at the word's top (two passes; splitting the
    sign off took five). A plane of zeros adds nothing and is skipped, a plane at shift 0
    is OR-ed in as it is."""
    if out is None:
        size = next(p.size for p in planes if isinstance(p, np.ndarray))
        out = np.empty(size, dtype=etype.numpy)
    words = out.view(_word_type(etype))
    word = words.dtype
    part = None
    filled = False
    for (shift, sign_mask), plane in zip(_placements(etype, layouts or plane_layouts(etype)),
                                         planes, strict=True):
        if isinstance(plane, int):
            value = plane << shift
            if sign_mask is not None:  # the 8-bit plane's value as a signed byte
                value = ((plane ^ 0x80) - 0x80 << shift) & sign_mask
            if not filled:
                words.fill(value)
            elif value:
                words |= word.type(value)
        elif filled and not shift and sign_mask is None:
            np.bitwise_or(words, plane, out=words)
        else:
            if filled and part is None:
                part = np.empty_like(words)
            target = words if not filled else part
            if sign_mask is None:
                np.left_shift(plane, shift, out=target, dtype=word)
            else:
                np.left_shift(plane.view(np.int8), shift, out=target, dtype=word,
                              casting="unsafe")
                target &= word.type(sign_mask)
            if filled:
                words |= target
        filled = True
    return out


@functools.cache
def _placements(etype: ElementType, layouts: tuple[PlaneLayout, ...]
                ) -> tuple[tuple[int, int | None], ...]:
    """Per plane of ``layouts`` (in order): its shift in the word and, for the plane that
    holds a float's sign with mantissa bits, the mask of the bits it sets (the sign at the
    word's top, its other 7 bits at the shift). That plane is the first of sign and
    mantissa, 8 bits wide for every float type (1 + mantissa bits ≥ 8), its top bit the
    sign. (The sign plane of mode ``magnitude`` is an ordinary plane at the top bit.)"""
    top = 8 * etype.width - 1
    placements = []
    for layout in layouts:
        holds_sign = layout.from_sign_mantissa and layout.shift + layout.bits > etype.mantissa_bits
        assert not holds_sign or layout.bits == 8
        placements.append((layout.shift, 1 << top | 0x7F << layout.shift if holds_sign else None))
    return tuple(placements)


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Each symbol's low ``bits`` bits, most significant first, concatenated; zero-padded."""
    if bits == 8:
        return symbols.astype(np.uint8).tobytes()
    as_bits = np.unpackbits(symbols.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)
    return np.packbits(as_bits[:, 16 - bits :]).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (``data`` holds exactly ``ceil(count × bits / 8)`` bytes);
    returns uint8 symbols, or uint16 above 8 bits."""
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8)
    if bits == 1:
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count)
    if 8 % bits == 0:  # 2 or 4 bits: a byte's symbols spread into the bytes of one word
        return _spread(np.frombuffer(data, dtype=np.uint8), bits)[:count]
    if bits < 8:  # a group of symbols fills whole bytes: read them as one big-endian integer
        group = _bit_group(bits)
        groups = -(-count // group.symbols)
        # Each group's bytes and the next ones, as big-endian words of a strided view (the
        # bytes beyond the group fall below the shifts), made contiguous native words in one
        # cast: 25-45% faster than reversing each group into a zero-padded word (measured
        # on 400 to 65,536 symbols of 3, 5, 6 and 7 bits).
        padding = bytes(groups * group.nbytes + group.window.itemsize - group.nbytes - len(data))
        words = np.ndarray(groups, group.window, bytes(data) + padding,
                           strides=(group.nbytes,)).astype(group.word)
        out = np.empty((groups, group.symbols), dtype=np.uint8)
        if group.symbols == 8 and groups <= BROADCAST_GROUPS:  # all 8 in one call
            np.right_shift(words[:, None], group.shifts, out=out, casting="unsafe")
        else:  # one pass per position, over all groups
            for j, shift in enumerate(group.shifts):
                np.right_shift(words, shift, out=out[:, j], casting="unsafe")
        out &= np.uint8((1 << bits) - 1)
        return out.reshape(-1)[:count]
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    weights = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    symbols = flat.reshape(count, bits).astype(np.uint64) @ weights
    return symbols.astype(np.uint16)


def _spread(raw: np.ndarray, bits: int) -> np.ndarray:
    """The symbols of ``bits`` ∈ {2, 4} bits packed in the bytes ``raw``, one a byte, most
    significant first. Up to :data:`SPREAD_TABLE_BYTES` bytes (and 2-bit symbols always),
    each byte's symbols are looked up in a table of the 256 bytes, one word a byte. Beyond,
    one multiplication copies each byte to every symbol's place in a wider word (the copies
    8 + ``bits`` bits apart, so none overlaps), a shift and a mask keep the symbols, each in
    its own byte (3x faster than a shift per position, measured 2026-12-02 on 2,200 to 2^20
    symbols).

    >>> _spread(np.array([0b00011011], dtype=np.uint8), 2).tolist()
    [0, 1, 2, 3]
    """
    if bits == 2 or raw.size <= SPREAD_TABLE_BYTES:
        return _spread_table(bits).take(raw).view(np.uint8)
    per_byte = 8 // bits
    words = np.multiply(raw, sum(1 << j * (8 + bits) for j in range(per_byte)),
                        dtype=np.dtype(f"<u{2 * per_byte}"))
    words >>= 8 - bits
    words &= sum(((1 << bits) - 1) << 8 * j for j in range(per_byte))
    return words.astype(f"<u{per_byte}").view(np.uint8)


SPREAD_TABLE_BYTES = 8192
"""Packed 4-bit symbols up to this many bytes are spread by table lookup (3x faster than the
multiplication on 2,000 symbols, as fast at 16,384; 1.6x slower at 65,536, where the
lookups' index conversion costs more than the arithmetic). For 2-bit symbols the table is
never slower (measured 2026-12-03)."""


@functools.cache
def _spread_table(bits: int) -> np.ndarray:
    """Per byte value, the ``8 // bits`` symbols of ``bits`` bits it packs, most significant
    first, as the bytes of one little-endian word (what :func:`_spread` looks up)."""
    per_byte = 8 // bits
    byte = np.arange(256)
    symbols = [(byte >> (8 - bits * (j + 1))) & ((1 << bits) - 1) for j in range(per_byte)]
    return np.stack(symbols, axis=1).astype(np.uint8).reshape(-1).view(f"<u{per_byte}")


BROADCAST_GROUPS = 512
""":func:`unpack_bits` shifts the 8 symbols of up to this many groups of an odd width out in
one broadcast call (1.5-3x faster on such small planes, where a call per position costs
more than the work); beyond it, and for 6 bits (4 positions), a call per position, over
contiguous words, is faster (measured 2026-12-02)."""


@dataclass(frozen=True)
class _BitGroup:
    """The fewest ``symbols`` of a width below 8 bits that fill whole bytes (``nbytes``), read
    with the bytes after them as one big-endian ``window`` (a word wider than the group),
    then as the same value in a native ``word``; symbol j of a group is
    ``(word >> shifts[j])`` masked."""

    symbols: int
    nbytes: int
    window: np.dtype
    word: np.dtype
    shifts: np.ndarray  # of ``word``


@functools.cache
def _bit_group(bits: int) -> _BitGroup:
    symbols = 8 // math.gcd(8, bits)
    nbytes = symbols * bits // 8
    width = 4 if nbytes < 4 else 8
    below = 8 * (width - nbytes)  # the window's bytes after the group
    return _BitGroup(symbols, nbytes, np.dtype(f">u{width}"), np.dtype(f"<u{width}"),
                     np.array([bits * (symbols - 1 - j) + below for j in range(symbols)],
                              dtype=f"<u{width}"))


def zstd_plane(symbols: np.ndarray, bits: int, level: int) -> bytes:
    """A ``zstd`` part: one frame of the symbols, each as ``ceil(bits / 8)`` little-endian
    bytes."""
    raw = symbols.astype("u1" if bits <= 8 else "<u2").tobytes()
    return zstandard.ZstdCompressor(level=level).compress(raw)


@dataclass(frozen=True)
class PlaneCoding:
    """How one plane is coded: ``ans`` with a table, ``zstd``, ``packed``, or ``constant``."""

    method: str
    table: ans.FrequencyTable | None = None
    value: int = 0

    def to_fields(self) -> dict[str, Any]:
        if self.method == "ans":
            assert self.table is not None
            return {"method": "ans", "table": self.table.to_fields()}
        if self.method == "constant":
            return {"method": "constant", "value": self.value}
        return {"method": self.method}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> PlaneCoding:
        method = field(fields, "method", str)
        if method == "ans":
            return cls("ans", table=ans.FrequencyTable.from_fields(field(fields, "table", dict)))
        if method == "constant":
            return cls("constant", value=field(fields, "value", int))
        if method in _WITHOUT_FIELDS:
            return _WITHOUT_FIELDS[method]
        raise FormatError(f"lossless codec: unknown plane method {method!r}")

    def check_constant(self, layout: PlaneLayout) -> None:
        """A ``constant`` plane's value must fit its plane (SPEC.md §6.2; format error)."""
        if self.method == "constant" and not 0 <= self.value < 1 << layout.bits:
            raise FormatError(
                f"constant plane: value {self.value} outside {layout.bits}-bit range")

    def encode(self, plane: np.ndarray, bits: int, level: int = PLANE_ZSTD_LEVELS[-1]
               ) -> bytes:
        """One chunk's part: ``plane`` (symbols of ``bits`` bits) coded by this method
        (``level`` is the zstd level of a ``zstd`` part)."""
        if self.method == "ans":
            assert self.table is not None
            return ans.encode(plane, self.table)
        if self.method == "packed":
            return pack_bits(plane, bits)
        if self.method == "zstd":
            return zstd_plane(plane, bits, level)
        return b""


_WITHOUT_FIELDS = {method: PlaneCoding(method) for method in ("packed", "zstd")}
"""The plane codings that have no fields, shared (a tensor's planes are mostly these)."""


@dataclass(frozen=True)
class CodedPlane:
    """One plane of a tensor, coded: its method and one part per chunk."""

    coding: PlaneCoding
    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Stored bytes: the parts and the table."""
        table = self.coding.table.stored_size if self.coding.table is not None else 0
        return sum(len(p) for p in self.parts) + table


def code_plane(plane: np.ndarray, layout: PlaneLayout, counts: Sequence[int]) -> CodedPlane:
    """The plane in its cheapest method: stored bytes plus decode time per symbol
    (:data:`DECODE_NS_PER_SYMBOL`) priced at :data:`BYTES_PER_DECODE_NS`. Ties go to the
    method tried first (constant, packed, ans, zstd)."""
    starts = np.cumsum([0, *counts])
    pieces = [plane[s : s + n] for s, n in zip(starts, counts, strict=False)]
    lo, hi = int(plane.min()), int(plane.max())
    if lo == hi:
        return CodedPlane(PlaneCoding("constant", value=lo), tuple(b"" for _ in pieces))

    def time_cost(method: str) -> float:
        if method == "packed" and layout.bits == 8:
            method = "packed8"
        return BYTES_PER_DECODE_NS * DECODE_NS_PER_SYMBOL[method] * plane.size

    def coded(coding: PlaneCoding, level: int = PLANE_ZSTD_LEVELS[-1]) -> CodedPlane:
        return CodedPlane(coding, tuple(coding.encode(p, layout.bits, level) for p in pieces))

    packed = coded(PlaneCoding("packed"))
    best, best_cost = packed, packed.size + time_cost("packed")
    counts_hist = ans.dense_histogram(plane, lo, hi - lo + 1)
    table = ans.FrequencyTable.fit_counts(counts_hist, lo)
    ans_estimate = (table.cost_bits(counts_hist) / 8 + table.stored_size + 4 * len(pieces)
                    + time_cost("ans"))
    if ans_estimate < best_cost:
        best = coded(PlaneCoding("ans", table=table))
        best_cost = best.size + time_cost("ans")
    tries = [coded(PlaneCoding("zstd"), 1)]
    if tries[0].size < MIN_ZSTD_GAIN * packed.size:
        tries += [coded(PlaneCoding("zstd"), level) for level in PLANE_ZSTD_LEVELS]
    for candidate in tries:
        if candidate.size + time_cost("zstd") < best_cost:
            best, best_cost = candidate, candidate.size + time_cost("zstd")
    return best


class PlaneReader:
    """One plane of one chunk (``count`` symbols of ``bits`` bits), read a batch at a time.

    Construction checks the part (SPEC.md §10.2 "part by part": ANS stream layout, packed
    length, empty constant part) and decompresses a ``zstd`` part whole (at most the
    chunk's element count times the symbol width, less than the output itself); symbol
    ranges are checked as batches are taken where a symbol could leave the plane's range
    (an ANS table reaching beyond it, a ``zstd`` plane narrower than its bytes), the end of
    an ANS stream by :meth:`finish`.
    """

    def __init__(self, coding: PlaneCoding, data: bytes | memoryview, layout: PlaneLayout,
                 count: int) -> None:
        self.coding, self.data, self.layout = coding, data, layout
        self.bits = layout.bits
        self.done = 0
        self.stream: ans.AnsDecoder | None = None
        self.symbols: np.ndarray | None = None
        self.check_range = False
        if coding.method == "ans":
            assert coding.table is not None
            self.stream = ans.AnsDecoder(data, coding.table, count)
            self.check_range = not coding.table.within(0, 1 << self.bits)
        elif coding.method == "zstd":
            content = decompress_exact(data, count * layout.symbol_bytes, "zstd plane")
            self.symbols = np.frombuffer(content, dtype=layout.numpy)
            self.check_range = self.bits % 8 != 0
        elif coding.method == "packed" and len(data) != (count * self.bits + 7) // 8:
            raise CorruptDataError(
                f"packed plane: {len(data)} bytes for {count} x {self.bits} bits")
        elif coding.method == "constant" and data:
            raise CorruptDataError("constant plane: unexpected bytes")

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` symbols (every call but the last takes a multiple of 8 of them, so a
        packed plane splits on byte boundaries)."""
        start, self.done = self.done, self.done + n
        if self.stream is not None:
            if not self.check_range:  # positions and offset within the plane's range
                symbols = self.stream.take_indices(n)
                symbols += self.stream.offset
                return symbols.astype(self.layout.numpy)
            symbols = self.stream.take(n)
        elif self.symbols is not None:
            symbols = self.symbols[start : self.done]
        elif self.coding.method == "packed":
            first, end = start * self.bits // 8, (self.done * self.bits + 7) // 8
            return unpack_bits(self.data[first:end], self.bits, n)
        else:
            return np.full(n, self.coding.value, dtype=self.layout.numpy)
        if self.check_range and (symbols.min() < 0 or symbols.max() >= 1 << self.bits):
            raise FormatError(f"lossless plane: symbol outside {self.bits}-bit range")
        return symbols.astype(self.layout.numpy, copy=False)

    def take_plane(self, n: int) -> np.ndarray | int:
        """:meth:`take`, or the plane's value if it is ``constant`` (see :func:`join_planes`)."""
        return self.coding.value if self.coding.method == "constant" else self.take(n)

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.finish()


class PlanesDecoder(ChunkDecoder):
    """Modes ``planes`` and ``magnitude``: one part per plane of ``layouts``, joined element
    by element."""

    def __init__(self, codings: Sequence[PlaneCoding], etype: ElementType,
                 layouts: tuple[PlaneLayout, ...]) -> None:
        self.codings, self.etype, self.layouts = codings, etype, layouts

    @classmethod
    def from_params(cls, params: Mapping[str, Any], etype: ElementType,
                    layouts: tuple[PlaneLayout, ...]) -> PlanesDecoder:
        """The plane-coding maps of ``params['planes']``, one per layout (SPEC.md §6.2)."""
        plane_fields = field(params, "planes", list)
        if len(plane_fields) != len(layouts):
            raise FormatError(f"lossless codec: {etype.name} needs {len(layouts)} planes")
        codings = [PlaneCoding.from_fields(f) for f in plane_fields]
        for coding, layout in zip(codings, layouts, strict=True):
            coding.check_constant(layout)
        return cls(codings, etype, layouts)

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != len(self.layouts):
            raise FormatError(f"lossless codec: {self.etype.name} needs {len(self.layouts)} planes")
        readers = [PlaneReader(c, data, lay, out.size)
                   for c, data, lay in zip(self.codings, parts, self.layouts, strict=True)]
        for batch in batches(out.size):
            n = batch.stop - batch.start
            join_planes([r.take_plane(n) for r in readers], self.etype, out[batch],
                        self.layouts)
        for r in readers:
            r.finish()


class ZstdDecoder(ChunkDecoder):
    """Mode ``zstd``: the chunk's elements as one zstd frame."""

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 1:
            raise FormatError("lossless zstd chunk: expected 1 part")
        raw = decompress_exact(parts[0], out.nbytes, "lossless zstd chunk")
        out.view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)


def palette_layout(size: int) -> PlaneLayout:
    """The index plane of a ``size``-value table: ``max(1, ceil(log2(size)))`` bits."""
    return PlaneLayout(max(1, (size - 1).bit_length()), 0, False)


def palette_of(values: np.ndarray, etype: ElementType) -> np.ndarray | None:
    """The tensor's distinct element words (its bit patterns as unsigned integers, so -0.0
    and +0.0, and NaNs of different payloads, are different values), ascending; None when
    ``palette`` is not worth trying (1-byte types, where a byte plane already is an index;
    too many distinct values, :data:`PALETTE_WRITER_MAX_VALUES`)."""
    words = values.reshape(-1).view(_word_type(etype))
    if etype.width == 1 or words.size < 8:
        return None
    if np.unique(words[:PALETTE_SAMPLE]).size > PALETTE_WRITER_MAX_VALUES:
        return None
    table = np.unique(words)
    if table.size > min(PALETTE_WRITER_MAX_VALUES, words.size // 4):
        return None
    return table


def palette_indices(values: np.ndarray, etype: ElementType, table: np.ndarray,
                    layout: PlaneLayout) -> np.ndarray:
    """Each element's position in ``table`` (which holds all of them), a batch at a time."""
    words = values.reshape(-1).view(_word_type(etype))
    index = np.empty(words.size, layout.numpy)
    for part in batches(words.size, 1 << 20):
        index[part] = np.searchsorted(table, words[part])
    return index


def encode_palette(values: np.ndarray, etype: ElementType, counts: Sequence[int],
                   beat: int) -> EncodedTensor | None:
    """Mode ``palette`` (SPEC.md §6.6) if the tensor has few distinct values and its table
    and index plane take fewer than ``beat`` bytes; else None."""
    table = palette_of(values, etype)
    if table is None:
        return None
    layout = palette_layout(table.size)
    index = palette_indices(values, etype, table, layout)
    plane = code_plane(index, layout, counts)
    if plane.size + table.nbytes >= beat:
        return None
    coding = plane.coding
    return EncodedTensor(
        LosslessCodec.codec_id,
        {"mode": "palette", "values": table.tobytes(),
         "index": coding.to_fields()},
        tuple(Chunk(n, (plane.parts[i],)) for i, n in enumerate(counts)),
        values,
        entropy_bits=ans.entropy_bits(index) if coding.method == "ans" else None,
        table_bytes=table.nbytes + (coding.table.stored_size if coding.table is not None else 0),
        format_minor=PALETTE_MINOR,
    )


class PaletteDecoder(ChunkDecoder):
    """Mode ``palette``: one index plane per chunk, each index looked up in the table."""

    def __init__(self, table: np.ndarray, coding: PlaneCoding, layout: PlaneLayout) -> None:
        self.table, self.coding, self.layout = table, coding, layout
        self.check_range = table.size < 1 << layout.bits

    @classmethod
    def from_params(cls, params: Mapping[str, Any], etype: ElementType) -> PaletteDecoder:
        """SPEC.md §6.6: the table's length checked before anything is built from it."""
        values = field(params, "values", bytes)
        size, rest = divmod(len(values), etype.width)
        if rest or not 1 <= size <= PALETTE_MAX_VALUES:
            raise FormatError(
                f"lossless palette: {len(values)} bytes of values is not 1 to "
                f"{PALETTE_MAX_VALUES} {etype.name} values")
        layout = palette_layout(size)
        coding = PlaneCoding.from_fields(field(params, "index", dict))
        coding.check_constant(layout)
        return cls(np.frombuffer(values, dtype=_word_type(etype)), coding, layout)

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 1:
            raise FormatError("lossless palette chunk: expected 1 part")
        reader = PlaneReader(self.coding, parts[0], self.layout, out.size)
        words = out.view(self.table.dtype)
        for batch in batches(out.size):
            index = reader.take(batch.stop - batch.start)
            if self.check_range and index.size and int(index.max()) >= self.table.size:
                raise FormatError(
                    f"lossless palette: index {int(index.max())} beyond its table of "
                    f"{self.table.size} values")
            self.table.take(index, out=words[batch], mode="wrap")
        reader.finish()


@dataclass(frozen=True)
class _PlaneSplit:
    """A tensor's planes in mode ``planes`` or ``magnitude``, each coded (:func:`code_plane`),
    with their symbols (for the entropy figures)."""

    mode: str
    symbols: list[np.ndarray]
    planes: list[CodedPlane]

    @classmethod
    def coded(cls, mode: str, values: np.ndarray, etype: ElementType,
              layouts: tuple[PlaneLayout, ...], counts: Sequence[int]) -> _PlaneSplit:
        symbols = split_planes(values, etype, layouts)
        return cls(mode, symbols, [code_plane(p, lay, counts)
                                   for p, lay in zip(symbols, layouts, strict=True)])

    @property
    def size(self) -> int:
        """Stored bytes: parts and tables."""
        return sum(p.size for p in self.planes)

    def encoded(self, codec_id: str, values: np.ndarray, counts: Sequence[int]
                ) -> EncodedTensor:
        ans_planes = [(p, sym) for p, sym in zip(self.planes, self.symbols, strict=True)
                      if p.coding.method == "ans"]
        if self.mode == "magnitude":
            minor = MAGNITUDE_MINOR
        else:
            minor = 1 if any(p.coding.method in PLANE_METHODS_1_1 for p in self.planes) else 0
        return EncodedTensor(
            codec_id,
            {"mode": self.mode, "planes": [p.coding.to_fields() for p in self.planes]},
            tuple(Chunk(n, tuple(p.parts[i] for p in self.planes))
                  for i, n in enumerate(counts)),
            values,
            entropy_bits=(sum(ans.entropy_bits(sym) for _, sym in ans_planes)
                          if ans_planes else None),
            table_bytes=sum(p.coding.table.stored_size for p, _ in ans_planes
                            if p.coding.table is not None),
            format_minor=minor,
        )


class LosslessCodec(TensorCodec):
    """Bit-exact for every element type; picks bit planes or zstd per tensor."""

    codec_id = "lossless"

    def encode(
        self, values: np.ndarray, etype: ElementType, chunk_elements: int
    ) -> EncodedTensor:
        counts = split_counts(values.size, chunk_elements)
        planes = _PlaneSplit.coded("planes", values, etype, plane_layouts(etype), counts)
        if etype.is_float and etype.width in MAGNITUDE_WRITER_WIDTHS:
            magnitude = _PlaneSplit.coded("magnitude", values, etype, magnitude_layouts(etype),
                                          counts)
            if magnitude.size < planes.size:
                planes = magnitude
        level = ZSTD_LEVEL if values.nbytes <= ZSTD_FAST_ABOVE else ZSTD_FAST_LEVEL
        compressor = zstandard.ZstdCompressor(level=level)
        raw = values.astype(etype.numpy, copy=False)
        starts = np.cumsum([0, *counts])
        zstd_chunks = tuple(
            Chunk(n, (compressor.compress(raw[s : s + n].tobytes()),))
            for s, n in zip(starts, counts, strict=False)
        )
        zstd_size = sum(len(c.parts[0]) for c in zstd_chunks)
        palette = encode_palette(values, etype, counts, min(zstd_size, planes.size))
        if palette is not None:
            return palette
        if zstd_size <= planes.size:
            return EncodedTensor(self.codec_id, {"mode": "zstd"}, zstd_chunks, values)
        return planes.encoded(self.codec_id, values, counts)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        mode = field(params, "mode", str)
        if mode == "zstd":
            return ZstdDecoder()
        if mode == "palette":
            return PaletteDecoder.from_params(params, etype)
        if mode == "copy":  # the reader decodes a copy with its source's decoder
            raise FormatError("lossless copy: decoded from its source's chunks, not its own")
        if mode == "magnitude":
            if not etype.is_float:
                raise FormatError(f"lossless magnitude: {etype.name} is not a float type "
                                  "(float16, bfloat16, float32, float64)")
            return PlanesDecoder.from_params(params, etype, magnitude_layouts(etype))
        if mode != "planes":
            raise FormatError(f"lossless codec: unknown mode {mode!r}")
        return PlanesDecoder.from_params(params, etype, plane_layouts(etype))
