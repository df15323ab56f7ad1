"""Lossy codec: the dead-zone uniform scalar quantizer, symbols coded with ANS.

With step Δ and dead zone δ (SPEC.md § "deadzone"):

    q  = 0                              if |x| < δΔ
    q  = sign(x) · ceil(|x|/Δ − δ)      otherwise
    x̂  = sign(q) · Δ · (|q| + δ − 0.5)  (0 for q = 0)

δ = 0 is a midrise quantizer, δ = 0.5 a midtread one. Symbols outside the table's range
[lo, hi] are coded as the escape symbol hi + 1 and their value follows as a zigzag varint.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> q = quantize(np.array([0.04, -0.26, 0.5, 1.0]), step=0.1, deadzone=0.5)
>>> q.tolist()
[0, -3, 5, 10]
>>> dequantize(q, 0.1, 0.5).round(6).tolist()
[0.0, -0.3, 0.5, 1.0]
"""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import (
    BATCH,
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    LossyCodec,
    QuantizedTensor,
    batches,
    field,
    split_counts,
)
from onnxz.codecs.varint import (
    decode_uvarints,
    encode_uvarints,
    two_byte_zigzag,
    zigzag_decode,
    zigzag_encode,
)
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError

DIRECT_MAX = 8192
"""Batches of at most this many elements are reconstructed element by element instead of
through a lookup table of the range's symbols (which costs ~7 µs to build whatever its size:
PP-OCR cls's 1,936-element tensors with 971 symbols decode in 10 µs instead of 14.5). Since
:func:`dequantize` takes two passes at the default dead zone, direct is 1-5 µs faster up to
~8,000 elements (PP-OCR cls and det: 2,200 to 8,064), as fast at 9,216 to 10,000, and the
table faster from ~18,000 (measured 2026-12-04)."""

MAX_SYMBOL = 1 << 53
"""Largest |q| (exact in float64); a tensor needing more is coded losslessly instead."""

MAD_TO_STD = 1.4826
"""Scales the median absolute deviation to the standard deviation of a normal law."""

RECONSTRUCTION = "midpoint"


@dataclass(frozen=True)
class Quantized(QuantizedTensor):
    """One tensor through the quantizer: step Δ, dead zone δ, the symbols ``q`` (int32 when
    they fit, else int64), the range [lo, hi] coded directly (others are escaped), the
    histogram ``counts`` of the coded symbols (the escape symbol last), the table and the
    ``histogram`` of ``q`` (its distinct symbols, ascending, and their counts)."""

    step: float
    deadzone: float
    q: np.ndarray
    lo: int
    hi: int
    counts: np.ndarray
    table: ans.FrequencyTable
    histogram: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of_symbols(cls, step: float, deadzone: float, q: np.ndarray) -> Quantized:
        """Choose the range and fit the table for the symbols ``q``."""
        present, present_counts = ans.histogram(q)
        lo, hi = choose_range_of_histogram(present, present_counts)
        counts = coded_counts(present, present_counts, lo, hi)
        return cls(step, deadzone, q, lo, hi, counts, ans.FrequencyTable.fit_counts(counts, lo),
                   (present, present_counts))

    @property
    def escaped(self) -> int:
        """How many symbols lie outside [lo, hi]."""
        return self.q.size - int(self.counts[: self.hi - self.lo + 1].sum())

    def reconstruction(self, etype: ElementType) -> np.ndarray:
        """What a decoder returns: the dequantized values rounded to ``etype``."""
        out = np.empty(self.q.size, dtype=etype.numpy)
        for start in range(0, self.q.size, ENCODE_BATCH):
            part = slice(start, start + ENCODE_BATCH)
            out[part] = from_float64(dequantize(self.q[part], self.step, self.deadzone), etype)
        return out

    def estimated_bytes(self) -> float:
        """Coded size in bytes without running the coder: ideal code length of the symbols
        under the stored table (ANS stays within ~0.01% plus a word), the table, and the
        escaped values' varints (about 3 bytes each)."""
        return (self.table.cost_bits(self.counts) / 8 + self.table.stored_size
                + 3 * self.escaped)


class NotQuantizable(ValueError):
    """The tensor cannot be dead-zone quantized (non-finite, constant, or too wide)."""


def quantize(x: np.ndarray, step: float, deadzone: float) -> np.ndarray:
    """Integer symbols (int64) of float64 values ``x``."""
    mag = np.abs(x)
    q = np.ceil(mag / step - deadzone)
    q[mag < deadzone * step] = 0
    return (np.sign(x) * q).astype(np.int64)


@np.errstate(over="ignore")  # as a decorator: half the cost of a with block per call
def dequantize(q: np.ndarray, step: float, deadzone: float) -> np.ndarray:
    """Float64 reconstruction ``sign(q)·step·(|q| + (deadzone − 0.5))``, 0 where q = 0.

    A product beyond the float64 range is ±infinity (SPEC.md §7.3), not an error. Computed
    in place in one float64 array (|q| ≤ 2^53 is exact in it): 5× faster than temporaries on
    65,536 symbols. With the default dead zone of 0.5 the value is q·step, to the bit (a
    product's rounding is symmetric): two passes instead of five (2,600 symbols: 5.0 ->
    2.2 µs), and a zero symbol comes out as +0.0 by itself (0 × a finite step), so the
    zeros are not looked for.
    """
    values = q.astype(np.float64)
    if deadzone == 0.5:
        values *= step
        mag = values
    else:
        mag = np.abs(values)
        mag += deadzone - 0.5
        mag *= step
        np.copysign(mag, values, out=mag)
    if deadzone != 0.5 or not math.isfinite(step):
        mag[q == 0] = 0.0
    return mag


def to_float64(values: np.ndarray, etype: ElementType) -> np.ndarray:
    """Values of a float element type as float64 (bfloat16 arrives as its uint16 bits)."""
    if etype.name == "bfloat16":
        return (values.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    return values.astype(np.float64)


@np.errstate(over="ignore")
def from_float64(x: np.ndarray, etype: ElementType) -> np.ndarray:
    """Round float64 to ``etype`` to nearest, ties to even (bfloat16 via float32); values
    beyond the type's range become ±infinity (SPEC.md §7.3)."""
    if etype.name == "bfloat16":
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
        return rounded.astype(np.uint16)
    return x.astype(etype.numpy)


def robust_spread(x: np.ndarray, overwrite: bool = False) -> float:
    """Robust spread of float64 values: 1.4826 × median(|x − median(x)|), or their std if
    that is 0. With ``overwrite`` the work happens in ``x`` itself (no copy).

    Unlike the standard deviation it ignores a few huge values (BatchNorm-variance-like
    outliers), so they cannot make the step coarse for all the other weights.
    """
    std = _std(x) if overwrite else None
    mad = _mad_in_place(x if overwrite else np.array(x, dtype=np.float64))
    if mad > 0:
        return MAD_TO_STD * mad
    return std if std is not None else _std(x)


def _std(x: np.ndarray) -> float:
    """The population standard deviation of float64 ``x``; above :data:`ENCODE_BATCH`
    elements summed a batch at a time, without a full-size temporary."""
    if x.size <= ENCODE_BATCH:
        return float(x.std())
    mean = float(x.mean())
    total = 0.0
    for start in range(0, x.size, ENCODE_BATCH):
        deviation = x[start : start + ENCODE_BATCH] - mean
        total += float(np.dot(deviation, deviation))
    return math.sqrt(total / x.size)


def _mad_in_place(work: np.ndarray) -> float:
    """median(|x − median(x)|) of the float64 array ``work``, which it overwrites: the
    medians partition it in place, so no other full-size copy is made."""
    center = np.median(work, overwrite_input=True)
    np.subtract(work, center, out=work)
    np.abs(work, out=work)
    return float(np.median(work, overwrite_input=True))


ENCODE_BATCH = 1 << 20
"""Elements quantized at a time: the encoder's float64 temporaries stay this small."""

SNR_SAMPLE = 1 << 18
"""Elements a weight-SNR target's step is searched on (then checked on the whole tensor)."""


def coded_counts(present: np.ndarray, present_counts: np.ndarray, lo: int,
                 hi: int) -> np.ndarray:
    """The histogram a table over [lo, hi] codes, from the distinct symbols ``present`` and
    their counts: the counts of lo … hi, then those outside as the escape symbol hi + 1 if
    there are any; at least 2 entries (a table has at least 2 symbols)."""
    inside = (present >= lo) & (present <= hi)
    escaped = int(present_counts.sum()) - int(present_counts[inside].sum())
    size = hi - lo + 1 + (escaped > 0)
    counts = np.zeros(max(size, 2), dtype=np.int64)
    counts[present[inside] - lo] = present_counts[inside]
    if escaped:
        counts[size - 1] = escaped
    return counts


def trimmed_ranges(values: np.ndarray, counts: np.ndarray) -> Iterator[tuple[int, int]]:
    """The symbol ranges [lo, hi] that leave out the t smallest and the t largest symbols,
    for t = 0, 1, 2, 4, ... up to half of them, given the distinct symbols (ascending) and
    their counts: the candidates a writer chooses its coded range among."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    t = 0
    while t <= n // 2:
        lo = int(values[np.searchsorted(cum, t + 1)])
        hi = int(values[np.searchsorted(cum, n - t)])
        if lo <= hi:
            yield lo, hi
        t = 1 if t == 0 else 2 * t


def choose_range_of_histogram(values: np.ndarray, counts: np.ndarray) -> tuple[int, int]:
    """The symbol range [lo, hi] coded directly (values outside are escaped), given the
    distinct symbols (ascending) and their counts: of the :func:`trimmed_ranges`, the one of
    least estimated cost (coded bits + table + escapes); :class:`NotQuantizable` if no
    trimmed range fits a table (:data:`ans.MAX_ALPHABET`)."""
    n = int(counts.sum())
    best: tuple[float, int, int] | None = None
    for lo, hi in trimmed_ranges(values, counts):
        if hi - lo + 2 <= ans.MAX_ALPHABET:
            inside = (values >= lo) & (values <= hi)
            escaped = n - int(counts[inside].sum())
            p = counts[inside] / n
            bits = float(-(counts[inside] * np.log2(p)).sum())
            if escaped:
                bits += escaped * (-np.log2(escaped / n) + 8 * 3)
            bits += 8 * 1.5 * (hi - lo + 1)
            if best is None or bits < best[0]:
                best = (bits, lo, hi)
    if best is None:
        raise NotQuantizable(f"its symbols span more than {ans.MAX_ALPHABET - 1} levels even "
                             "with half of them escaped (a step too fine for its values)")
    return best[1], best[2]


LIVE_CHANNEL_FRACTION = 1e-2
"""A channel whose mean square is below this fraction of the median channel's is not held
to ``channel_snr_db``: a folded batch norm's dead channels (EfficientNet-Lite0's stem has
four at 3e-18 to 2e-11 of the median channel's mean square, the next at 0.055), whose own
SNR only a vanishing step would keep."""


class DeadzoneCodec(LossyCodec):
    """Dead-zone quantizer with step ``step_rel × spread(tensor)``, dead zone ``deadzone``.

    With ``step`` instead, every tensor gets that absolute step; with ``clip``, magnitudes
    beyond it are clipped first (:meth:`global_range`: the research's one range [−1, 1]).
    With ``target_snr_db``, the largest step that keeps that weight SNR over the tensor;
    with ``channel_snr_db`` too, no larger than the step at which every channel of
    ``channel`` consecutive elements (an output channel of a convolution) keeps that SNR of
    its own mean square by the uniform quantizer's Δ²/12 (channels below
    :data:`LIVE_CHANNEL_FRACTION` of the median channel's aside).
    """

    codec_id = "deadzone"

    def __init__(self, step_rel: float | None, deadzone: float, *, step: float | None = None,
                 clip: float | None = None, target_snr_db: float | None = None,
                 channel_snr_db: float | None = None, channel: int | None = None) -> None:
        if sum(v is not None for v in (step_rel, step, target_snr_db)) != 1:
            raise ValueError("give exactly one of step_rel, step and target_snr_db")
        for name, value in (("step_rel", step_rel), ("step", step), ("clip", clip)):
            if value is not None and (not value > 0 or not np.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name, value in (("target_snr_db", target_snr_db), ("channel_snr_db", channel_snr_db)):
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if (channel_snr_db is None) != (channel is None) or (
                channel_snr_db is not None and target_snr_db is None):
            raise ValueError("channel_snr_db and channel go together, with target_snr_db")
        if channel is not None and (not isinstance(channel, int) or channel < 1):
            raise ValueError(f"channel must be a positive int, got {channel!r}")
        if not 0.0 <= deadzone <= 1.0:
            raise ValueError(f"deadzone must be in [0, 1], got {deadzone}")
        self.step_rel = None if step_rel is None else float(step_rel)
        self.step = None if step is None else float(step)
        self.clip = None if clip is None else float(clip)
        self.target_snr_db = None if target_snr_db is None else float(target_snr_db)
        self.channel_snr_db = None if channel_snr_db is None else float(channel_snr_db)
        self.channel = channel
        self.deadzone = float(deadzone)

    @classmethod
    def global_range(cls, bits: int, deadzone: float) -> DeadzoneCodec:
        """One range [−1, 1] for the whole model cut into 2**bits steps (the research's
        setting): step 2/2**bits, weights clipped to [−1, 1]. Midrise (δ = 0) has exactly
        2**bits levels; δ > 0 adds the level 0 (and ±1 for midtread)."""
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in 1..16, got {bits}")
        return cls(None, deadzone, step=2.0 / (1 << bits), clip=1.0)

    def quantize(self, values: np.ndarray, etype: ElementType,
                 spread: float | None = None) -> Quantized:
        """The tensor's symbols and frequency table, before entropy coding (what rate
        control prices); :class:`NotQuantizable` if it cannot be quantized. ``spread`` is
        the tensor's robust spread if the caller knows it (not used with an absolute
        ``step`` or ``clip``).

        Memory beyond the input: one float64 copy while the spread is measured, then the
        symbols (int32 when they fit); quantization works a batch at a time. With ``clip``,
        values are clipped to ±clip first.
        """
        max_abs = 0.0
        for start in range(0, values.size, ENCODE_BATCH):
            x = to_float64(values[start : start + ENCODE_BATCH], etype)
            if not np.isfinite(x).all():  # before clipping, which would make ±inf finite
                raise NotQuantizable("has non-finite values")
            if self.clip is not None:
                np.clip(x, -self.clip, self.clip, out=x)
            max_abs = max(max_abs, float(np.abs(x).max(initial=0.0)))
        if self.step is not None:
            step = self.step
        elif self.target_snr_db is not None:
            step = self.step_for_snr(values, etype, self.target_snr_db)
            if self.channel_snr_db is not None:
                step = min(step, self._channel_step(values, etype))
        elif spread is not None and self.clip is None:
            step = self.step_rel * spread  # type: ignore[operator]
        else:
            step = self.step_rel * robust_spread(  # type: ignore[operator]
                self._float64(values, etype), overwrite=True)
        if not step > 0 or not np.isfinite(step):
            raise NotQuantizable("has zero spread")
        if max_abs / step >= MAX_SYMBOL:
            raise NotQuantizable("would need symbols beyond 2**53")
        q = np.empty(values.size, dtype=np.int32 if max_abs / step < 2**30 else np.int64)
        for start in range(0, values.size, ENCODE_BATCH):
            part = slice(start, start + ENCODE_BATCH)
            q[part] = quantize(self._float64(values[part], etype), step, self.deadzone)
        return Quantized.of_symbols(step, self.deadzone, q)

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        """Code what :meth:`quantize` returned, a chunk at a time (the reconstruction a
        batch at a time)."""
        assert isinstance(quantized, Quantized)
        chunks = encode_symbol_chunks(quantized.q, quantized.lo, quantized.hi, quantized.table,
                                      chunk_elements)
        return EncodedTensor(
            DeadzoneCodec.codec_id,  # also for subclasses that code some tensors otherwise
            self.stored_params(quantized),
            chunks,
            quantized.reconstruction(etype),
            entropy_bits=ans.entropy_bits_of_counts(quantized.counts),
            table_bytes=quantized.table.stored_size,
        )

    def stored_params(self, quantized: Quantized) -> dict[str, Any]:
        """The index parameters of §7.1 for symbols coded as ``quantized`` holds them."""
        params = {
            "step": quantized.step,
            "deadzone": self.deadzone,
            "reconstruction": RECONSTRUCTION,
            "escape": quantized.escaped > 0,
            "table": quantized.table.to_fields(),
        }
        if self.step_rel is not None:
            params["step_rel"] = self.step_rel
        return params

    def step_for_snr(self, values: np.ndarray, etype: ElementType, snr_db: float) -> float:
        """The largest step whose reconstruction keeps ``snr_db`` of weight SNR
        (10·log10(Σx² / Σ(x − x̂)²), x̂ rounded to ``etype``): found by bisection on an
        evenly strided sample of :data:`SNR_SAMPLE` elements, then checked on the whole
        tensor (a batch at a time) and made finer until it holds there too."""
        allowed = 10.0 ** (-snr_db / 10)
        sample = self._float64(values[:: max(1, values.size // SNR_SAMPLE)], etype)
        energy = float(np.dot(sample, sample))
        if energy == 0:
            raise NotQuantizable("has zero spread")
        lo = hi = math.sqrt(12 * allowed * energy / sample.size)
        while self._error_ratio(sample, hi, etype) <= allowed and hi < 1e300:
            hi *= 2
        while self._error_ratio(sample, lo, etype) > allowed and lo > 1e-300:
            lo /= 2
        for _ in range(30):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if self._error_ratio(sample, mid, etype) <= allowed else (lo, mid)
        step = lo
        for _ in range(64):
            error = energy = 0.0
            for start in range(0, values.size, ENCODE_BATCH):
                x = self._float64(values[start : start + ENCODE_BATCH], etype)
                energy += float(np.dot(x, x))
                error += self._error_ratio(x, step, etype) * float(np.dot(x, x))
            if error <= allowed * energy:
                break
            step /= 2 ** (1 / 16)
        return step

    def _channel_step(self, values: np.ndarray, etype: ElementType) -> float:
        """The step at which the live channel of least mean square keeps ``channel_snr_db``
        by Δ²/12 (infinite if the tensor is not whole channels or none is live); the mean
        squares are read a batch of channels at a time."""
        assert self.channel is not None and self.channel_snr_db is not None
        if values.size % self.channel:
            return math.inf
        per_batch = max(1, ENCODE_BATCH // self.channel) * self.channel
        energy = np.concatenate([
            np.mean(np.square(self._float64(values[start : start + per_batch], etype)
                              ).reshape(-1, self.channel), axis=1)
            for start in range(0, values.size, per_batch)])
        live = energy[energy >= LIVE_CHANNEL_FRACTION * np.median(energy)]
        if not live.size or not live.min() > 0:
            return math.inf
        return math.sqrt(12 * float(live.min()) * 10 ** (-self.channel_snr_db / 10))

    def _error_ratio(self, x: np.ndarray, step: float, etype: ElementType) -> float:
        """Σ(x − x̂)² / Σx² at ``step``."""
        y = to_float64(from_float64(dequantize(quantize(x, step, self.deadzone), step,
                                               self.deadzone), etype), etype)
        energy = float(np.dot(x, x))
        return float(np.dot(x - y, x - y)) / energy if energy else 0.0

    def _float64(self, values: np.ndarray, etype: ElementType) -> np.ndarray:
        """``values`` as float64 (a new array), clipped to ±clip when set."""
        x = to_float64(values, etype)
        if self.clip is not None:
            np.clip(x, -self.clip, self.clip, out=x)
        return x

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        return DeadzoneDecoder(*parse_params(params, etype, cls.codec_id), etype)


def parse_quantizer(params: Mapping[str, Any], etype: ElementType,
                    codec: str) -> tuple[float, float, bool]:
    """(step, deadzone, escape) of §7.1's parameters, validated for ``etype``;
    :class:`FormatError` naming ``codec`` otherwise."""
    step = float(field(params, "step", (float, int)))
    deadzone = float(field(params, "deadzone", (float, int)))
    if not (math.isfinite(step) and step > 0 and 0.0 <= deadzone <= 1.0):
        raise FormatError(f"{codec} codec: invalid step {step} or dead zone {deadzone}")
    reconstruction = field(params, "reconstruction", str)
    if reconstruction != RECONSTRUCTION:
        raise FormatError(f"{codec} codec: unknown reconstruction {reconstruction!r}")
    if not etype.is_quantizable:
        raise FormatError(f"{codec} codec: cannot reconstruct into {etype.name}")
    return step, deadzone, field(params, "escape", bool)


def parse_params(params: Mapping[str, Any], etype: ElementType,
                 codec: str) -> tuple[float, float, bool, ans.FrequencyTable]:
    """(step, deadzone, escape, table) of §7.1's parameters, validated for ``etype``;
    :class:`FormatError` naming ``codec`` otherwise."""
    table = ans.FrequencyTable.from_fields(field(params, "table", dict))
    return (*parse_quantizer(params, etype, codec), table)


@dataclass(frozen=True)
class SymbolRange:
    """The symbols a stream without a frequency table codes: ``offset`` … ``offset + size −
    1`` (a :class:`~onnxz.codecs.ans.FrequencyTable` is one too, with frequencies)."""

    offset: int
    size: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any], codec: str) -> SymbolRange:
        """``offset`` and ``size`` of a codec's parameters, with the table's rules (§8.1)."""
        offset, size = field(params, "offset", int), field(params, "size", int)
        if not 2 <= size <= ans.MAX_ALPHABET or offset < -(1 << 63) or (
                offset + size - 1 >= 1 << 63):
            raise FormatError(f"{codec} codec: invalid symbol range offset {offset}, "
                              f"size {size}")
        return cls(offset, size)


class EscapedSymbolDecoder(ChunkDecoder):
    """Decodes chunks of ANS-coded integer symbols with escapes (SPEC.md §7.2): part 0 the
    symbols, part 1 the escaped values. Each batch of symbols becomes values through
    :meth:`fill`, by default :meth:`reconstruct` of the symbols with escapes replaced."""

    codec_id: ClassVar[str]
    max_symbol: ClassVar[int] = MAX_SYMBOL
    batch: int = BATCH
    """Elements decoded at a time (batches start at multiples of it within a chunk)."""

    def __init__(self, escape: bool, symbols: ans.FrequencyTable | SymbolRange,
                 etype: ElementType) -> None:
        self.escape, self.range, self.etype = escape, symbols, etype
        # the escape symbol (the last, with escapes) is no value: its value is in part 1
        last = symbols.offset + symbols.size - 1 - int(escape)
        self.out_of_range: np.ndarray | None = None
        """Which positions of the range hold a symbol beyond ±``max_symbol`` (None when
        none can: the range's ends say so)."""
        if symbols.offset < -self.max_symbol or last > self.max_symbol:
            values = self.table_symbols()  # every one: out_of_range is not known yet
            self.out_of_range = (values < -self.max_symbol) | (values > self.max_symbol)
            if escape:
                self.out_of_range[-1] = False

    def table_symbols(self) -> np.ndarray:
        """The symbols of the range (int64), in order; those beyond ±``max_symbol`` as 0 once
        :attr:`out_of_range` is known (the values a lookup table is built from)."""
        symbols = np.arange(self.range.offset, self.range.offset + self.range.size,
                            dtype=np.int64)
        if self.out_of_range is not None:
            symbols[self.out_of_range] = 0
        return symbols

    @abstractmethod
    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        """Float64 values of the symbols ``q`` (int64), the first at ``start`` in the chunk
        (a multiple of :data:`BATCH`)."""

    def fill(self, target: np.ndarray, index: np.ndarray, where: np.ndarray,
             escaped: np.ndarray, start: int) -> None:
        """Write into ``target`` the values of a batch: ``index`` the symbols' positions in
        the table, ``where`` the positions of escape symbols and ``escaped`` their values,
        the batch at ``start`` in the chunk."""
        q = self.symbols_of(index, where, escaped)
        target[...] = from_float64(self.reconstruct(q, start), self.etype)

    def symbols_of(self, index: np.ndarray, where: np.ndarray, escaped: np.ndarray
                   ) -> np.ndarray:
        """The symbols (int64) of a batch's positions ``index``, the escaped values put in
        at ``where`` (see :meth:`fill`)."""
        q = index.astype(np.int64)
        q += self.range.offset
        q[where] = escaped
        return q

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 2:
            raise FormatError(f"{self.codec_id} chunk: expected 2 parts (symbols, escapes)")
        self.decode_symbols(parts, out, self.fill)

    def decode_symbols(self, parts: Sequence[bytes], out: np.ndarray,
                       fill: Callable[..., None]) -> None:
        """Decode the symbols (:meth:`symbol_indexes`) and escaped values (part 1) of a
        chunk into ``out``, :attr:`batch` elements at a time, each batch through ``fill``
        (see :meth:`fill`)."""
        name = self.codec_id
        symbols = self.symbol_indexes(parts, out.size)
        escaped = self._escaped(parts[1])
        escape_index = self.range.size - 1
        none = np.zeros(0, dtype=np.intp)
        used = 0
        for batch in batches(out.size, self.batch):
            index = symbols.take_indices(batch.stop - batch.start)
            if self.out_of_range is not None and self.out_of_range[index].any():
                raise FormatError(f"{name} chunk: symbol beyond {self._limit}")
            where = (index == escape_index).nonzero()[0] if self.escape else none
            if used + where.size > escaped.size:
                raise FormatError(f"{name} chunk: more escape symbols than escaped values")
            fill(out[batch], index, where, escaped[used : used + where.size], batch.start)
            used += where.size
        symbols.finish()
        if used != escaped.size:
            raise FormatError(f"{name} chunk: more escaped values than escape symbols")

    def symbol_indexes(self, parts: Sequence[bytes], count: int) -> ans.AnsDecoder:
        """The source of a chunk's ``count`` symbol positions in the range
        (``take_indices(n)``, then ``finish()``): part 0, an ANS stream under the range's
        frequency table (§8)."""
        assert isinstance(self.range, ans.FrequencyTable)
        return ans.AnsDecoder(parts[0], self.range, count)

    @property
    def _limit(self) -> str:
        return f"2**{self.max_symbol.bit_length() - 1}"

    def _escaped(self, data: bytes) -> np.ndarray:
        """The values of part 1 (int64), each within ±``max_symbol``."""
        if not self.escape:
            if data:
                raise CorruptDataError(f"{self.codec_id} chunk: escape bytes without escape "
                                       "symbol")
            return np.zeros(0, dtype=np.int64)
        fast = two_byte_zigzag(data)  # the usual case; |values| ≤ 2^13, within any max_symbol
        if fast is not None:
            return fast
        values = decode_uvarints(data)
        if values.max(initial=0) > 2 * self.max_symbol:
            raise FormatError(f"{self.codec_id} chunk: escaped symbol beyond {self._limit}")
        return zigzag_decode(values)


class DeadzoneDecoder(EscapedSymbolDecoder):
    """Reconstructs the midpoints of the dead-zone quantizer's intervals (SPEC.md §7.3).

    A batch of more than :data:`DIRECT_MAX` elements decodes to one lookup per element in a
    table of every symbol's value in the output type (built once, at the first such batch;
    the arithmetic of §7.3 for the few escaped values); a smaller one is reconstructed
    directly, as building the table would cost more. Both are bit-identical to computing
    each element.
    """

    codec_id = "deadzone"

    def __init__(self, step: float, deadzone: float, escape: bool,
                 symbols: ans.FrequencyTable | SymbolRange, etype: ElementType) -> None:
        super().__init__(escape, symbols, etype)
        self.step, self.deadzone = step, deadzone

    @functools.cached_property
    def lookup(self) -> np.ndarray:
        """Every symbol's value in the output type, in the range's order."""
        return from_float64(self.reconstruct(self.table_symbols(), 0), self.etype)

    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        return dequantize(q, self.step, self.deadzone)

    def fill(self, target: np.ndarray, index: np.ndarray, where: np.ndarray,
             escaped: np.ndarray, start: int) -> None:
        if index.size <= DIRECT_MAX:
            super().fill(target, index, where, escaped, start)
            return
        # positions are checked before (or in the table by construction); "wrap" spares
        # the buffered copy of ``out`` that numpy makes under the default mode "raise"
        self.lookup.take(index, out=target, mode="wrap")
        if where.size:
            target[where] = from_float64(self.reconstruct(escaped, start), self.etype)


def encode_symbol_chunks(q: np.ndarray, lo: int, hi: int, table: ans.FrequencyTable,
                         chunk_elements: int) -> tuple[Chunk, ...]:
    """The chunks of a tensor's symbols ``q`` as :class:`EscapedSymbolDecoder` reads them,
    made a chunk at a time: ``q`` within [lo, hi], the others as the escape symbol hi + 1,
    ANS-coded under ``table``; the values outside as zigzag varints."""
    chunks = []
    start = 0
    for count in split_counts(q.size, chunk_elements):
        coded, escaped = escaped_symbols(q[start : start + count], lo, hi)
        chunks.append(Chunk(count, (ans.encode(coded, table), escaped)))
        start += count
    return tuple(chunks)


def escaped_symbols(q: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, bytes]:
    """A chunk's symbols ``q`` as coded (those outside [lo, hi] become the escape symbol
    hi + 1) and its escape part (their values as zigzag varints, §7.2)."""
    outside = (q < lo) | (q > hi)
    return np.where(outside, hi + 1, q), encode_uvarints(zigzag_encode(q[outside]))
