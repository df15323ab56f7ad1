"""Lossy codec: the dead-zone quantizer, its symbols coded by zstd instead of ANS.

The levels, the escapes and the reconstruction are those of ``deadzone`` (SPEC.md §7);
only part 0 differs (§17). Each symbol's position i in the range [offset, offset + size)
is split into a high byte h = i >> k and k low bits l = i & (2^k − 1): a zstd frame holds
the N high bytes (part 0), the low bits are stored packed as §6.3 packs a plane (part 2).
zstd codes the high bytes as Huffman-coded literals, which decode an order of magnitude
faster than ANS; the low bits of a fine step are nearly uniform and cost their width
either way. The writer picks the range (the ANS table's, or a wider one where escapes cost
more than low bits: :func:`zstd_range`) and k, the fewest low bits that leave at most 256
high bytes (or one or two more, if smaller), and uses this codec where it is at most
:data:`MAX_GROWTH` of the ``deadzone`` size: fine steps (the default's), where it costs
−4% to +2% and decodes 2–6× faster. At coarse steps zstd's Huffman codes lose more (a code
is at least one bit) and ANS stays.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> x = np.random.default_rng(0).laplace(0, 0.1, 1 << 16).astype(np.float32)
>>> fast = DeadzoneZstdCodec(1 / 16, 0.5).encode(x, BY_NAME["float32"], 1 << 20)
>>> plain = DeadzoneCodec(1 / 16, 0.5).encode(x, BY_NAME["float32"], 1 << 20)
>>> fast.codec_id, bool((fast.reconstruction == plain.reconstruction).all())
('deadzone_zstd', True)
>>> 1.0 < fast.coded_bytes / plain.coded_bytes < 1.03     # a little larger, much faster
True
>>> split_index(np.array([0, 5, 700]), low_bits=2)          # (high bytes, low bits)
(array([  0,   1, 175], dtype=uint8), array([0, 1, 0], dtype=uint8))
"""

from __future__ import annotations

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
    QuantizedTensor,
    field,
    split_counts,
)
from onnxz.codecs.deadzone import (
    DeadzoneCodec,
    DeadzoneDecoder,
    EscapedSymbolDecoder,
    Quantized,
    SymbolRange,
    escaped_symbols,
    parse_quantizer,
    trimmed_ranges,
)
from onnxz.codecs.lossless import pack_bits, unpack_bits
from onnxz.codecs.varint import uvarint_lengths, zigzag_encode
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError
from onnxz.zstdframe import decompress_exact

FORMAT_MINOR = 3
"""The codec is a format 1.3 addition (SPEC.md §3)."""

MAX_LOW_BITS = 8
"""Largest k a reader accepts (a range of at most 65,536 symbols needs k ≤ 8)."""

ZSTD_LEVEL = 1
"""zstd level of the writer: higher levels find no more in quantization levels and encode
over 100× slower (measured on magika's and PP-OCRv4 det's weights)."""

MAX_GROWTH = 1.02
"""The writer uses ``deadzone_zstd`` for a tensor when its parts are at most this share of
the ``deadzone`` estimate (ANS symbols and table): a decoder 2–6× faster is worth 2% of a
lossy file, not more (at 3 bits per weight, the lossless planes' price of decode time,
:data:`~onnxz.codecs.lossless.BYTES_PER_DECODE_NS`, would accept 17% more). Measured
(2026-12-01): 1% kept the 3.4 GB generated model's default (8.4 bits per weight, where zstd's
Huffman codes, at most 11 bits long, cost 1.02%) ANS-coded; 2% makes that file 1.0% larger
and its decoding 6.1× faster, and the smallest rate-controlled files of the corpus 0–0.25%
larger."""

WIDER_MIN_GAIN = 0.01
"""The writer codes a tensor's symbols with a range of its own (:func:`zstd_range`) only
where that is estimated at least this share smaller than with the ANS table's range: both
are then compressed and the smaller kept, which doubles the coding time (an 8M-element
weight at 50 dB without this rule: 0.44 → 0.92 s, for 0.07%)."""

EXTRA_LOW_BITS = 2
"""The writer also tries this many more low bits than the fewest, keeping the smallest (a
few more uniform bits can code cheaper than Huffman codes of a skewed high byte)."""


def split_index(index: np.ndarray, low_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbol positions -> (high bytes, low ``low_bits`` bits), both uint8."""
    index = index.astype(np.int64, copy=False)
    return ((index >> low_bits).astype(np.uint8),
            (index & ((1 << low_bits) - 1)).astype(np.uint8))


def fewest_low_bits(size: int) -> int:
    """The smallest k for which every position below ``size`` has a high byte ≤ 255."""
    return max(0, (size - 1).bit_length() - 8)


def encode_parts(index: np.ndarray, low_bits: int,
                 compressor: zstandard.ZstdCompressor) -> tuple[bytes, bytes]:
    """Parts 0 and 2 of a chunk (§17.2): a zstd frame of the high bytes, the low bits
    packed."""
    high, low = split_index(index, low_bits)
    packed = pack_bits(low, low_bits) if low_bits and index.size else b""
    return compressor.compress(high.tobytes()), packed


@dataclass(frozen=True)
class ZstdSymbols:
    """A tensor's symbols coded as §17.2 says: the range of ``size`` positions from ``lo``
    (with ``escape``, the last is the escape symbol), the low-bit count ``low_bits``, the
    ``chunks`` (parts 0, 1 and 2 each) and ``stored``, the bytes of all their parts."""

    stored: int
    lo: int
    size: int
    escape: bool
    low_bits: int
    chunks: tuple[Chunk, ...]


def zstd_symbols(q: np.ndarray, lo: int, hi: int, chunk_elements: int,
                 low_bits: int | None = None) -> ZstdSymbols | None:
    """The symbols ``q`` (int64) coded with the range [lo, hi] (those outside escaped as
    §7.2 escapes them) and the smallest k of the fewest the range needs to
    :data:`EXTRA_LOW_BITS` more, or with ``low_bits`` (at least the fewest); None if the
    range is too wide for this coding."""
    counts = split_counts(q.size, chunk_elements)
    starts = np.cumsum([0, *counts])
    pieces = [escaped_symbols(q[s : s + n], lo, hi) for s, n in zip(starts, counts,
                                                                    strict=False)]
    escaped_bytes = sum(len(escaped) for _, escaped in pieces)  # > 0 iff a value is escaped
    escape = escaped_bytes > 0
    size = range_size(lo, hi, escape)
    fewest = fewest_low_bits(size)
    if fewest > MAX_LOW_BITS:
        return None
    choices = (range(fewest, min(fewest + EXTRA_LOW_BITS, MAX_LOW_BITS) + 1)
               if low_bits is None else (max(fewest, low_bits),))
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    best = None
    for k in choices:
        parts = [encode_parts(coded - lo, k, compressor) for coded, _ in pieces]
        stored = escaped_bytes + sum(len(high) + len(low) for high, low in parts)
        if best is None or stored < best.stored:
            chunks = tuple(Chunk(n, (high, escaped, low)) for n, (_, escaped), (high, low)
                           in zip(counts, pieces, parts, strict=True))
            best = ZstdSymbols(stored, lo, size, escape, k, chunks)
    return best


def range_size(lo: int, hi: int, escape: bool) -> int:
    """Positions of the range [lo, hi] as §17.2 stores it: one more for the escape symbol,
    and at least two."""
    return max(hi - lo + 1 + escape, 2)


def estimated_bits(values: np.ndarray, counts: np.ndarray, lo: int, hi: int) -> float | None:
    """Estimated bits of the symbols coded with the range [lo, hi], given the distinct
    symbols ``values`` (ascending) and their ``counts`` (None if the range needs k >
    :data:`MAX_LOW_BITS`): the high bytes at their entropy plus 4 bits of Huffman table
    each, k low bits a symbol, at the best of the k tried, and the escaped values'
    varints."""
    n = int(counts.sum())
    inside = (values >= lo) & (values <= hi)
    escaped = n - int(counts[inside].sum())
    size = range_size(lo, hi, escaped > 0)
    fewest = fewest_low_bits(size)
    if fewest > MAX_LOW_BITS:
        return None
    positions, weights = values[inside] - lo, counts[inside]
    if escaped:
        positions, weights = np.append(positions, size - 1), np.append(weights, escaped)
    escape_bits = 8 * escape_bytes(values, counts, lo, hi)
    best = None
    for k in range(fewest, min(fewest + EXTRA_LOW_BITS, MAX_LOW_BITS) + 1):
        high = np.bincount(positions >> k, weights=weights)
        high = high[high > 0]
        bits = float(-(high * np.log2(high / n)).sum()) + 4 * high.size + n * k + escape_bits
        best = bits if best is None else min(best, bits)
    return best


def escape_bytes(values: np.ndarray, counts: np.ndarray, lo: int, hi: int) -> int:
    """Bytes of the escapes (§7.2's zigzag varints) of the symbols outside [lo, hi], given
    the distinct symbols ``values`` and their ``counts``."""
    outside = (values < lo) | (values > hi)
    return int((uvarint_lengths(zigzag_encode(values[outside])) * counts[outside]).sum())


def zstd_range(values: np.ndarray, counts: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """The range to code the distinct symbols ``values`` (ascending, with their ``counts``)
    with: the ANS table's [lo, hi] (§7.4), or the one of the
    :func:`~onnxz.codecs.deadzone.trimmed_ranges` estimated smallest
    (:func:`estimated_bits`) where that is at least :data:`WIDER_MIN_GAIN` smaller. No table
    is stored, so a wide range costs only its low bits, where the table's range escapes
    symbols at 2 bytes each: PP-OCR cls's default kept the table's range, whose escapes
    (a third of some small tensors' symbols) made its quantized tensors 5% larger."""
    table = estimated_bits(values, counts, lo, hi)
    best = (math.inf if table is None else table * (1 - WIDER_MIN_GAIN), lo, hi)
    for candidate in trimmed_ranges(values, counts):
        bits = estimated_bits(values, counts, *candidate)
        if bits is not None and bits < best[0]:
            best = (bits, *candidate)
    return best[1], best[2]


def zstd_coding(q: np.ndarray, histogram: tuple[np.ndarray, np.ndarray], lo: int, hi: int,
                ans_bytes: float, chunk_elements: int,
                low_bits: int | None = None) -> ZstdSymbols | None:
    """The writer's choice (§17.4, §18.4) for the symbols ``q`` (int64; their distinct
    values, ascending, and counts: ``histogram``) that the ANS-coded
    codec codes with the range [lo, hi] in ``ans_bytes`` (estimated symbols and table, its
    escapes aside): :func:`zstd_symbols` with that range or :func:`zstd_range`'s, whichever
    is smaller, if the symbols are to be written that way — with ``low_bits`` given,
    whenever a range allows it, else when all their parts are at most :data:`MAX_GROWTH`
    of the ANS-coded codec's (its escapes included); None: write the ANS-coded codec."""
    own = zstd_range(*histogram, lo, hi)
    ranges = [(lo, hi)] if own == (lo, hi) else [(lo, hi), own]
    coded = min((c for r in ranges if (c := zstd_symbols(q, *r, chunk_elements, low_bits))),
                key=lambda c: c.stored, default=None)  # a tie keeps the table's range
    if coded is None or low_bits is not None:
        return coded
    ans_total = ans_bytes + escape_bytes(*histogram, lo, hi)
    return coded if coded.stored <= MAX_GROWTH * ans_total else None


def checked_low_bits(low_bits: int | None) -> int | None:
    """A writer's forced ``low_bits`` (None: its own choice); ValueError beyond 0..8."""
    if low_bits is not None and not 0 <= low_bits <= MAX_LOW_BITS:
        raise ValueError(f"low_bits must be in 0..{MAX_LOW_BITS}, got {low_bits!r}")
    return low_bits


def parse_symbol_range(params: Mapping[str, Any], codec: str) -> tuple[SymbolRange, int]:
    """``offset``, ``size`` and ``low_bits`` of §17.1, ``low_bits`` checked against the
    range; :class:`FormatError` naming ``codec`` otherwise."""
    symbols = SymbolRange.from_params(params, codec)
    low_bits = field(params, "low_bits", int)
    if not 0 <= low_bits <= MAX_LOW_BITS or (symbols.size - 1) >> low_bits > 255:
        raise FormatError(f"{codec} codec: low_bits {low_bits} cannot split "
                          f"{symbols.size} symbols into a byte and low bits")
    return symbols, low_bits


class DeadzoneZstdCodec(DeadzoneCodec):
    """The dead-zone quantizer (settings as :class:`DeadzoneCodec`); each tensor is written
    as ``deadzone_zstd`` when that is at most :data:`MAX_GROWTH` of its ``deadzone`` size,
    else as ``deadzone``. With ``low_bits``, every tensor is written as ``deadzone_zstd``
    with that k (at least the fewest its range needs)."""

    codec_id = "deadzone_zstd"

    def __init__(self, step_rel: float | None, deadzone: float, *,
                 low_bits: int | None = None, **options: Any) -> None:
        super().__init__(step_rel, deadzone, **options)
        self.low_bits = checked_low_bits(low_bits)

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        assert isinstance(quantized, Quantized)
        ans_bytes = (quantized.table.cost_bits(quantized.counts) / 8
                     + quantized.table.stored_size)
        coded = zstd_coding(quantized.q, quantized.histogram, quantized.lo, quantized.hi,
                            ans_bytes, chunk_elements, self.low_bits)
        if coded is None:
            return super().encode_quantized(quantized, etype, chunk_elements)
        params = {k: v for k, v in self.stored_params(quantized).items() if k != "table"}
        params |= {"escape": coded.escape, "offset": coded.lo, "size": coded.size,
                   "low_bits": coded.low_bits}
        return EncodedTensor(
            DeadzoneZstdCodec.codec_id, params, coded.chunks, quantized.reconstruction(etype),
            entropy_bits=ans.entropy_bits_of_counts(quantized.counts),
            format_minor=FORMAT_MINOR)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        step, deadzone, escape = parse_quantizer(params, etype, cls.codec_id)
        symbols, low_bits = parse_symbol_range(params, cls.codec_id)
        return DeadzoneZstdDecoder(step, deadzone, escape, symbols, etype, low_bits=low_bits)


class ZstdSymbolDecoder(EscapedSymbolDecoder):
    """Reads a chunk's symbols from parts 0 and 2 as §17.2 says, its escapes from part 1
    as §7.2 does; the values come from the codec's own :meth:`fill`/:meth:`reconstruct`
    (a subclass lists this class before its ANS decoder, whose constructor it extends with
    ``low_bits``)."""

    def __init__(self, *args: Any, low_bits: int) -> None:
        super().__init__(*args)
        self.low_bits = low_bits
        self.check_size = self.range.size < 256 << low_bits

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 3:
            raise FormatError(f"{self.codec_id} chunk: expected 3 parts (high bytes, "
                              "escapes, low bits)")
        packed = -(-out.size * self.low_bits // 8)
        if len(parts[2]) != packed:
            raise CorruptDataError(f"{self.codec_id} chunk: {len(parts[2])} bytes of low "
                                   f"bits for {out.size} symbols of {self.low_bits} bits")
        self.decode_symbols(parts, out, self.fill)

    def symbol_indexes(self, parts: Sequence[bytes], count: int) -> ZstdIndexes:
        high = decompress_exact(parts[0], count, f"{self.codec_id} chunk")
        return ZstdIndexes(np.frombuffer(high, dtype=np.uint8), parts[2], self.low_bits,
                           self.range.size if self.check_size else None, self.codec_id)


class DeadzoneZstdDecoder(ZstdSymbolDecoder, DeadzoneDecoder):
    """Decodes parts 0 and 2 as §17.2 says, part 1 (escapes) as ``deadzone`` does."""

    codec_id = "deadzone_zstd"


@dataclass
class ZstdIndexes:
    """A chunk's symbol positions, handed out in order: each batch joined from its high
    bytes (``high``, the chunk's zstd frame decompressed) and its packed low bits (``low``,
    ``low_bits`` each), so that the temporaries are a batch long, not a chunk long (a
    large chunk's would be fresh pages, faulted in on every decode); each batch checked
    against the range's ``size`` when its high bytes could reach beyond it. Every batch
    but the last is a multiple of 8 symbols long (:data:`BATCH`), so the low bits split on
    byte boundaries."""

    high: np.ndarray
    low: bytes
    low_bits: int
    size: int | None
    codec_id: str
    used: int = 0

    def take_indices(self, n: int) -> np.ndarray:
        start, self.used = self.used, self.used + n
        assert start % 8 == 0, "a batch after the first starts on a byte of low bits"
        batch = self.high[start : self.used].astype(np.uint16)
        if self.low_bits:
            batch <<= np.uint16(self.low_bits)
            batch |= unpack_bits(self.low[start * self.low_bits // 8 :
                                          (self.used * self.low_bits + 7) // 8],
                                 self.low_bits, n)
        if self.size is not None and batch.size and int(batch.max()) >= self.size:
            raise FormatError(f"{self.codec_id} chunk: symbol position beyond the "
                              f"{self.size} symbols")
        return batch

    def finish(self) -> None:
        """Nothing to check: the frame held exactly the chunk's symbols."""
