"""Lossy codec: trellis-coded (dependent) quantization, levels coded with ANS.

Two scalar quantizers share the step Δ: Q0 reconstructs the even multiples of Δ, Q1 the odd
ones and zero. Which one an element uses is decided by the 8-state machine of MPEG NNR
(ISO/IEC 15938-17) driven by the parity of the previous levels, so the decoder needs no side
information: with level k and quantizer q of the element's state (SPEC.md § "trellis"),

    x̂ = sign(k) · Δ · (2|k| − q)        (0 for k = 0)

The encoder chooses the levels of a whole segment at once (Viterbi over the 8 states, cost
= squared error + λ · bits under the tensor's table), which places the reconstruction points
of the union lattice (spacing Δ) where the weights are while coding levels of a quantizer of
step 2Δ: at equal weight SNR 3–10% fewer bits than the dead-zone quantizer on the
development corpus (``tools/bench_coding.py``). The state restarts at 0 every ``segment``
elements of a chunk, so the encoder's Viterbi runs on all segments of a tensor together
(vectorized) and the decoder's state sequence is a cumulative XOR of parities
(:func:`quantizer_sequence`).

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> x = np.random.default_rng(0).laplace(0, 0.1, 4096)
>>> quantized = TrellisCodec(step_rel=1 / 8).quantize(x, BY_NAME["float64"])
>>> error = quantized.reconstruction(BY_NAME["float64"]) - x
>>> bool(np.abs(error).max() <= 2 * quantized.step)    # never beyond one step of Q0/Q1
True
>>> k = np.array([1, 0, -2, 3, 1, 0, 0, 2])
>>> quantizer_sequence(k, 8).tolist()                  # Q0 or Q1 of each element
[0, 0, 1, 1, 0, 1, 1, 0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import ChunkDecoder, EncodedTensor, LossyCodec, QuantizedTensor, field
from onnxz.codecs.buckets import MAX_MAGNITUDE, BucketTable
from onnxz.codecs.deadzone import (
    EscapedSymbolDecoder,
    NotQuantizable,
    SymbolRange,
    choose_range_of_histogram,
    coded_counts,
    encode_symbol_chunks,
    from_float64,
    robust_spread,
    to_float64,
)
from onnxz.dtypes import ElementType
from onnxz.errors import FormatError

TRANSITIONS = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))
"""``TRANSITIONS[state][parity]``: the next state after a level of that parity (|k| mod 2);
the quantizer of a state is ``state & 1``. MPEG NNR's 8-state machine."""

MAX_LEVEL = 1 << 52
"""Largest |k|: 2|k| − q stays an exact binary64 integer."""

MAX_SEGMENT_LOG2 = 16
"""``segment`` is a power of two up to 2**16 (so decoder batches start on a segment)."""

SEGMENT = 256
"""Elements between state resets the encoder writes (measured: 0.3% fewer bits than 64)."""

LAMBDA = 0.1
"""λ of the encoder's Viterbi cost in units of (2Δ)²: squared error + λ · bits (measured best
of 0.05 / 0.1 / 0.15 on the corpus)."""

VITERBI_BLOCK = 1 << 18
"""Elements the Viterbi works on at once (its memory is ~80 bytes per element)."""

ESCAPE_BYTES = 3
"""Estimated bytes of one escaped level (its varint and the escape symbol)."""


def quantizer_sequence(levels: np.ndarray, segment: int) -> np.ndarray:
    """The quantizer (0 or 1, int64) of every element of a piece of a chunk that starts at
    a segment boundary, from the levels alone.

    The state machine is linear over GF(2): with p_i = |k_i| mod 2, the quantizer of element
    n of a segment is q_n = q_{n−4} ⊕ p_{n−2} ⊕ p_{n−3} (terms before the segment are 0),
    i.e. a cumulative XOR along each residue class mod 4 — no loop over elements.
    """
    n = levels.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    width = min(segment, n)
    rows = -(-n // width)
    padded = -(-width // 4) * 4
    p = np.zeros((rows, padded), dtype=np.uint8)
    flat = np.zeros(rows * width, dtype=np.uint8)
    flat[:n] = levels & 1  # the parity of |k| is that of k in two's complement
    p[:, :width] = flat.reshape(rows, width)
    d = np.zeros_like(p)
    d[:, 2:] = p[:, :-2]
    d[:, 3:] ^= p[:, :-3]
    q = np.bitwise_xor.accumulate(d.reshape(rows, -1, 4), axis=1).reshape(rows, padded)
    return q[:, :width].reshape(-1)[:n].astype(np.int64)


def dequantize(levels: np.ndarray, step: float, segment: int) -> np.ndarray:
    """Float64 reconstruction ``sign(k)·step·(2|k| − q)`` of levels starting at a segment
    boundary (SPEC.md § "trellis"); ±infinity beyond the float64 range."""
    return _reconstructed(levels, quantizer_sequence(levels, segment), step)


def _reconstructed(levels: np.ndarray, quantizers: np.ndarray, step: float) -> np.ndarray:
    """``sign(k)·step·(2|k| − q)`` of levels k (int64) with their quantizers q (0 or 1),
    +0.0 where k = 0 (SPEC.md §15.4)."""
    with np.errstate(over="ignore"):
        mag = step * (2 * np.abs(levels) - quantizers).astype(np.float64)
    return np.where(levels == 0, 0.0, np.copysign(mag, levels.astype(np.float64)))


def viterbi_levels(x: np.ndarray, step: float, segment: int, lam: float,
                   magnitude_bits: np.ndarray) -> np.ndarray:
    """The levels (int64) minimizing Σ (x − x̂)² / Δ² + ``lam`` · bits per segment, every
    segment starting in state 0. ``magnitude_bits[c]`` prices a level of magnitude c (the
    last entry also any larger one).

    All segments advance together: one step of the loop handles element i of every segment.
    """
    n = x.size
    rows = -(-n // segment)
    padded = np.zeros(rows * segment)
    padded[:n] = x
    m = np.abs(padded.reshape(rows, segment).T) / step  # (segment, rows)
    top = magnitude_bits.size - 1
    zero = m * m + lam * magnitude_bits[0]
    # per edge kind (quantizer q, level parity p) -> index 2q + p: the cost and magnitude of
    # the best level of that kind (parity 0 also may be zero)
    cost = np.empty((4, segment, rows))
    magnitude = np.empty((4, segment, rows), dtype=np.int64)
    for q in (0, 1):
        f = np.floor((m + q) / 2).astype(np.int64)  # largest magnitude with 2f − q ≤ m
        for p, c in ((0, (f + 1) & ~1), (1, f | 1)):  # nearest magnitudes of each parity
            d = m - (np.maximum(2 * c - 1, 0) if q else 2 * c)
            d = d * d + lam * magnitude_bits[np.minimum(c, top)]
            if p == 0:
                use_zero = zero < d
                d = np.where(use_zero, zero, d)
                c = np.where(use_zero, 0, c)
            cost[2 * q + p] = d
            magnitude[2 * q + p] = c
    # the two edges into each state t: from state from_[j, t] with a level of parity par[j, t]
    edges = [[(s, p) for s in range(8) for p in (0, 1) if TRANSITIONS[s][p] == t]
             for t in range(8)]
    from_ = np.array([[e[j][0] for e in edges] for j in (0, 1)])
    par = np.array([[e[j][1] for e in edges] for j in (0, 1)])
    kind = 2 * (from_ & 1) + par
    cost0, cost1 = cost[kind[0]], cost[kind[1]]  # (8, segment, rows): the edges' costs
    total = np.full((8, rows), np.inf)
    total[0] = 0.0
    second = np.empty((segment, 8, rows), dtype=bool)
    for i in range(segment):
        c0 = total[from_[0]] + cost0[:, i]
        c1 = total[from_[1]] + cost1[:, i]
        np.less(c1, c0, out=second[i])
        total = np.minimum(c0, c1)
    state = np.argmin(total, axis=0)
    out = np.empty((segment, rows), dtype=np.int64)
    r = np.arange(rows)
    for i in range(segment - 1, -1, -1):
        j = second[i, state, r].astype(np.intp)
        out[i] = magnitude[kind[j, state], i, r]
        state = from_[j, state]
    levels = out.T.reshape(-1)[:n]
    return np.where(x < 0, -levels, levels)


def magnitude_code_lengths(levels: np.ndarray, largest: int) -> np.ndarray:
    """Bits of a level of each magnitude 0 … ``largest`` + 1 under the empirical
    distribution of ``levels`` (a sign bit included for non-zero ones), smoothed so that
    unseen magnitudes stay possible."""
    counts = np.bincount(np.minimum(np.abs(levels), largest + 1), minlength=largest + 2) + 0.1
    bits = -np.log2(counts / counts.sum())
    bits[1:] += 1.0
    return bits


@dataclass(frozen=True)
class TrellisQuantized(QuantizedTensor):
    """One tensor through the trellis quantizer: step Δ, the state-reset ``segment``, the
    levels (int64), the range [lo, hi] coded directly (others are escaped), the histogram
    ``counts`` of the coded symbols (the escape symbol hi + 1 last), the coder's table,
    if the table is stored as buckets, that, and the ``histogram`` of the levels (their
    distinct values, ascending, and their counts)."""

    step: float
    segment: int
    levels: np.ndarray
    lo: int
    hi: int
    counts: np.ndarray
    table: ans.FrequencyTable
    buckets: BucketTable | None
    histogram: tuple[np.ndarray, np.ndarray]

    @property
    def table_bytes(self) -> int:
        return self.buckets.stored_size if self.buckets else self.table.stored_size

    @property
    def escaped(self) -> int:
        """How many levels lie outside [lo, hi]."""
        return self.levels.size - int(self.counts[: self.hi - self.lo + 1].sum())

    def reconstruction(self, etype: ElementType) -> np.ndarray:
        return from_float64(dequantize(self.levels, self.step, self.segment), etype)

    def estimated_bytes(self) -> float:
        """Ideal code length of the symbols under the table, the table, the escapes."""
        return (self.table.cost_bits(self.counts) / 8 + self.table_bytes
                + ESCAPE_BYTES * self.escaped)


def choose_table(present: np.ndarray, present_counts: np.ndarray
                 ) -> tuple[int, int, np.ndarray, ans.FrequencyTable, BucketTable | None]:
    """(lo, hi, counts, table, buckets) of least estimated size (``counts``: the histogram
    the table codes, see :func:`~onnxz.codecs.deadzone.coded_counts`) for the levels whose
    distinct values (ascending) and counts are given: an explicit table over a trimmed
    range (as the dead-zone codec), or a bucket table over −M … M with the levels beyond M
    escaped (M tried from the largest magnitude down, escaping 1, 2, 4, … levels)."""
    total = int(present_counts.sum())
    lo, hi = choose_range_of_histogram(present, present_counts)
    counts = coded_counts(present, present_counts, lo, hi)
    table = ans.FrequencyTable.fit_counts(counts, lo)
    escaped = total - int(counts[: hi - lo + 1].sum())
    best = (table.cost_bits(counts) / 8 + table.stored_size + ESCAPE_BYTES * escaped,
            lo, hi, None)
    mags = np.abs(present)
    cap = min(int(mags.max()), MAX_MAGNITUDE)
    dense = np.zeros(cap + 2, dtype=np.int64)  # [cap + 1]: beyond
    np.add.at(dense, np.minimum(mags, cap + 1), present_counts)
    above = np.cumsum(dense[::-1])[::-1] - dense  # levels with a larger magnitude
    tried = 2 * cap + 2
    t = 0
    while t <= total // 64:
        magnitude = max(1, min(int(np.argmax(above <= t)), cap))
        if magnitude < 0.75 * tried:  # escaping pays only if it shrinks the table
            tried = magnitude
            escaped = int(above[magnitude])
            buckets = BucketTable.fit_counts(dense[:magnitude + 1], escaped)
            if buckets is not None:
                size = (buckets.cost_bits(dense[:magnitude + 1], escaped) / 8
                        + buckets.stored_size + ESCAPE_BYTES * escaped)
                if size < best[0]:
                    best = (size, -magnitude, magnitude, buckets)
        t = 1 if t == 0 else 2 * t
    _, lo, hi, buckets = best
    if buckets is None:
        return lo, hi, counts, table, None
    return lo, hi, coded_counts(present, present_counts, lo, hi), buckets.expand(), buckets


def quantize_tensor(x: np.ndarray, step: float, segment: int = SEGMENT) -> TrellisQuantized:
    """Trellis-quantize finite float64 values ``x`` with step Δ = ``step``."""
    if not step > 0 or not np.isfinite(step):
        raise NotQuantizable("has zero spread")
    if float(np.abs(x).max()) / (2 * step) >= MAX_LEVEL:
        raise NotQuantizable("would need levels beyond 2**52")
    first = np.rint(x / (2 * step)).astype(np.int64)  # Q0 alone: the initial rate model
    bits = magnitude_code_lengths(first, min(int(np.abs(first).max()) + 1, MAX_MAGNITUDE))
    block = max(segment, VITERBI_BLOCK - VITERBI_BLOCK % segment)  # whole segments
    levels = np.concatenate([viterbi_levels(x[i:i + block], step, segment, 4 * LAMBDA, bits)
                             for i in range(0, x.size, block)])
    histogram = ans.histogram(levels)
    return TrellisQuantized(step, segment, levels, *choose_table(*histogram), histogram)


class TrellisCodec(LossyCodec):
    """Trellis-coded quantizer with step Δ = ``step_rel`` × spread(tensor)."""

    codec_id = "trellis"

    def __init__(self, step_rel: float, segment: int = SEGMENT) -> None:
        if not step_rel > 0 or not np.isfinite(step_rel):
            raise ValueError(f"step_rel must be a positive number, got {step_rel}")
        if segment < 1 or segment & (segment - 1) or segment > 1 << MAX_SEGMENT_LOG2:
            raise ValueError(f"segment must be a power of two up to 2**16, got {segment}")
        self.step_rel = float(step_rel)
        self.segment = segment

    def quantize(self, values: np.ndarray, etype: ElementType,
                 spread: float | None = None) -> TrellisQuantized:
        x = to_float64(values, etype)
        if not np.isfinite(x).all():
            raise NotQuantizable("has non-finite values")
        step = self.step_rel * (robust_spread(x) if spread is None else spread)
        return quantize_tensor(x, step, self.segment)

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        assert isinstance(quantized, TrellisQuantized)
        q = quantized
        # chunks hold whole segments (the levels were chosen segment by segment)
        chunk_elements = max(q.segment, chunk_elements - chunk_elements % q.segment)
        params: dict[str, Any] = {
            "step": q.step,
            "segment": q.segment,
            "escape": q.escaped > 0,
        }
        if q.buckets is not None:
            params["buckets"] = q.buckets.to_fields()
        else:
            params["table"] = q.table.to_fields()
        params["step_rel"] = self.step_rel
        return EncodedTensor(
            TrellisCodec.codec_id, params,  # also for a subclass that falls back to it
            encode_symbol_chunks(q.levels, q.lo, q.hi, q.table, chunk_elements),
            q.reconstruction(etype),
            entropy_bits=ans.entropy_bits_of_counts(q.counts),
            table_bytes=q.table_bytes,
            format_minor=1,
        )

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        step, segment, escape = parse_trellis(params, etype, cls.codec_id)
        if ("table" in params) == ("buckets" in params):
            raise FormatError("trellis codec: expected exactly one of 'table' and 'buckets'")
        if "table" in params:
            table = ans.FrequencyTable.from_fields(field(params, "table", dict))
        else:
            table = BucketTable.from_fields(field(params, "buckets", dict), escape).expand()
        return TrellisDecoder(step, segment, escape, table, etype)


def parse_trellis(params: Mapping[str, Any], etype: ElementType,
                  codec: str) -> tuple[float, int, bool]:
    """(step, segment, escape) of §15.1's parameters, validated for ``etype``;
    :class:`FormatError` naming ``codec`` otherwise."""
    step = float(field(params, "step", (float, int)))
    if not (np.isfinite(step) and step > 0):
        raise FormatError(f"{codec} codec: invalid step {step}")
    segment = field(params, "segment", int)
    if segment < 1 or segment & (segment - 1) or segment > 1 << MAX_SEGMENT_LOG2:
        raise FormatError(f"{codec} codec: segment {segment} is not a power of two "
                          "up to 2**16")
    if not etype.is_quantizable:
        raise FormatError(f"{codec} codec: cannot reconstruct into {etype.name}")
    return step, segment, field(params, "escape", bool)


class TrellisDecoder(EscapedSymbolDecoder):
    """Levels from part 0 and 1 as for the dead-zone codec; quantizers from their parities.

    Every symbol of the range is reconstructed once per quantizer, into a lookup table of
    the output type; a batch then decodes to its quantizer sequence and one table lookup per
    element (escaped levels computed), bit-identical to computing each element.
    """

    codec_id = "trellis"
    max_symbol = MAX_LEVEL

    def __init__(self, step: float, segment: int, escape: bool,
                 symbols: ans.FrequencyTable | SymbolRange, etype: ElementType) -> None:
        super().__init__(escape, symbols, etype)
        self.step, self.segment = step, segment
        levels = self.table_symbols()
        self.lookup = from_float64(np.concatenate(
            [_reconstructed(levels, np.full(levels.size, quantizer), step)
             for quantizer in (0, 1)]), etype)

    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        return dequantize(q, self.step, self.segment)  # batches start on a segment

    def fill(self, target: np.ndarray, index: np.ndarray, where: np.ndarray,
             escaped: np.ndarray, start: int) -> None:
        quantizers = quantizer_sequence(self.symbols_of(index, where, escaped),
                                        self.segment)  # batches start on a segment
        self.lookup.take(quantizers * self.range.size + index, out=target, mode="wrap")
        if where.size:
            target[where] = from_float64(
                _reconstructed(escaped, quantizers[where], self.step), self.etype)
