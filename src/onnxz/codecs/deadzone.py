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

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import (
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    LossyCodec,
    QuantizedTensor,
    batches,
    field,
    split_counts,
)
from onnxz.codecs.varint import decode_uvarints, encode_uvarints, zigzag_decode, zigzag_encode
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError

MAX_SYMBOL = 1 << 53
"""Largest |q| (exact in float64); a tensor needing more is coded losslessly instead."""

MAD_TO_STD = 1.4826
"""Scales the median absolute deviation to the standard deviation of a normal law."""

RECONSTRUCTION = "midpoint"


@dataclass(frozen=True)
class Quantized(QuantizedTensor):
    """One tensor through the quantizer: step Δ, dead zone δ, the symbols ``q`` (int64),
    the coded ``symbols`` (escapes replaced by the escape symbol), which were escaped, and
    the frequency table."""

    step: float
    deadzone: float
    q: np.ndarray
    symbols: np.ndarray
    outside: np.ndarray
    table: ans.FrequencyTable

    def reconstruction(self, etype: ElementType) -> np.ndarray:
        """What a decoder returns: the dequantized values rounded to ``etype``."""
        return from_float64(dequantize(self.q, self.step, self.deadzone), etype)

    def estimated_bytes(self) -> float:
        """Coded size in bytes without running the coder: ideal code length of the symbols
        under the stored table (ANS stays within ~0.01% plus a word), the table, and the
        escaped values' varints (about 3 bytes each)."""
        counts = np.bincount(self.symbols - self.table.offset, minlength=self.table.size)
        escaped = int(self.outside.sum())
        return self.table.cost_bits(counts) / 8 + self.table.stored_size + 3 * escaped


class NotQuantizable(ValueError):
    """The tensor cannot be dead-zone quantized (non-finite, constant, or too wide)."""


def quantize(x: np.ndarray, step: float, deadzone: float) -> np.ndarray:
    """Integer symbols (int64) of float64 values ``x``."""
    mag = np.abs(x)
    q = np.ceil(mag / step - deadzone)
    q[mag < deadzone * step] = 0
    return (np.sign(x) * q).astype(np.int64)


def dequantize(q: np.ndarray, step: float, deadzone: float) -> np.ndarray:
    """Float64 reconstruction ``sign(q)·step·(|q| + (deadzone − 0.5))``, 0 where q = 0.

    A product beyond the float64 range is ±infinity (SPEC.md §7.3), not an error.
    """
    with np.errstate(over="ignore"):
        mag = step * (np.abs(q).astype(np.float64) + (deadzone - 0.5))
    return np.where(q == 0, 0.0, np.copysign(mag, q.astype(np.float64)))


def to_float64(values: np.ndarray, etype: ElementType) -> np.ndarray:
    """Values of a float element type as float64 (bfloat16 arrives as its uint16 bits)."""
    if etype.name == "bfloat16":
        return (values.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    return values.astype(np.float64)


def from_float64(x: np.ndarray, etype: ElementType) -> np.ndarray:
    """Round float64 to ``etype`` to nearest, ties to even (bfloat16 via float32); values
    beyond the type's range become ±infinity (SPEC.md §7.3)."""
    with np.errstate(over="ignore"):
        if etype.name == "bfloat16":
            bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
            rounded = (bits + 0x7FFF + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
            return rounded.astype(np.uint16)
        return x.astype(etype.numpy)


def robust_spread(x: np.ndarray) -> float:
    """Robust spread of a tensor: 1.4826 × median(|x − median(x)|), or std if that is 0.

    Unlike the standard deviation it ignores a few huge values (BatchNorm-variance-like
    outliers), so they cannot make the step coarse for all the other weights.
    """
    mad = float(np.median(np.abs(x - np.median(x))))
    return MAD_TO_STD * mad if mad > 0 else float(x.std())


def quantize_tensor(x: np.ndarray, step: float, deadzone: float) -> Quantized:
    """Quantize finite float64 values ``x`` with step Δ = ``step`` and choose the table."""
    if not step > 0 or not np.isfinite(step):
        raise NotQuantizable("has zero spread")
    if float(np.abs(x).max()) / step >= MAX_SYMBOL:
        raise NotQuantizable("would need symbols beyond 2**53")
    q = quantize(x, step, deadzone)
    lo, hi = choose_range(q)
    outside = (q < lo) | (q > hi)
    escape = bool(outside.any())
    symbols = np.where(outside, hi + 1, q)
    table = ans.FrequencyTable.fit(symbols, offset=lo, size=hi - lo + 1 + escape)
    return Quantized(step, deadzone, q, symbols, outside, table)


def choose_range(q: np.ndarray) -> tuple[int, int]:
    """Symbol range [lo, hi] coded directly; values outside are escaped.

    Tries trimming the t smallest and t largest symbols for t = 0, 1, 2, 4, ... and keeps
    the range of least estimated cost (coded bits + table + escapes).
    """
    values, counts = ans.histogram(q)
    n = int(counts.sum())
    cum = np.cumsum(counts)
    best: tuple[float, int, int] | None = None
    t = 0
    while t <= n // 2:
        lo = int(values[np.searchsorted(cum, t + 1)])
        hi = int(values[np.searchsorted(cum, n - t)])
        if lo <= hi and hi - lo + 2 <= ans.MAX_ALPHABET:
            inside = (values >= lo) & (values <= hi)
            escaped = n - int(counts[inside].sum())
            p = counts[inside] / n
            bits = float(-(counts[inside] * np.log2(p)).sum())
            if escaped:
                bits += escaped * (-np.log2(escaped / n) + 8 * 3)
            bits += 8 * 1.5 * (hi - lo + 1)
            if best is None or bits < best[0]:
                best = (bits, lo, hi)
        t = 1 if t == 0 else 2 * t
    assert best is not None
    return best[1], best[2]


class DeadzoneCodec(LossyCodec):
    """Dead-zone quantizer with step ``step_rel × spread(tensor)``, dead zone ``deadzone``.

    With ``step`` instead, every tensor gets that absolute step; with ``clip``, magnitudes
    beyond it are clipped first (:meth:`global_range`: the research's one range [−1, 1]).
    """

    codec_id = "deadzone"

    def __init__(self, step_rel: float | None, deadzone: float, *, step: float | None = None,
                 clip: float | None = None) -> None:
        if (step_rel is None) == (step is None):
            raise ValueError("give exactly one of step_rel and step")
        for name, value in (("step_rel", step_rel), ("step", step), ("clip", clip)):
            if value is not None and (not value > 0 or not np.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not 0.0 <= deadzone <= 1.0:
            raise ValueError(f"deadzone must be in [0, 1], got {deadzone}")
        self.step_rel = None if step_rel is None else float(step_rel)
        self.step = None if step is None else float(step)
        self.clip = None if clip is None else float(clip)
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
        the tensor's robust spread if known (ignored with an absolute ``step`` or ``clip``)."""
        x = to_float64(values, etype)
        if not np.isfinite(x).all():
            raise NotQuantizable("has non-finite values")
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        if self.step is not None:
            return quantize_tensor(x, self.step, self.deadzone)
        assert self.step_rel is not None
        known = spread is not None and self.clip is None
        return quantize_tensor(x, self.step_rel * (spread if known else robust_spread(x)),
                               self.deadzone)

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        assert isinstance(quantized, Quantized)
        q, symbols, outside, table = (quantized.q, quantized.symbols, quantized.outside,
                                      quantized.table)
        chunks = encode_symbol_chunks(q, symbols, outside, table, chunk_elements)
        params = {
            "step": quantized.step,
            "deadzone": self.deadzone,
            "reconstruction": RECONSTRUCTION,
            "escape": bool(outside.any()),
            "table": table.to_fields(),
        }
        if self.step_rel is not None:
            params["step_rel"] = self.step_rel
        return EncodedTensor(
            self.codec_id,
            params,
            chunks,
            quantized.reconstruction(etype),
            entropy_bits=ans.entropy_bits(symbols),
            table_bytes=table.stored_size,
        )

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        step = float(field(params, "step", (float, int)))
        deadzone = float(field(params, "deadzone", (float, int)))
        if not (np.isfinite(step) and step > 0 and 0.0 <= deadzone <= 1.0):
            raise FormatError(f"deadzone codec: invalid step {step} or dead zone {deadzone}")
        reconstruction = field(params, "reconstruction", str)
        if reconstruction != RECONSTRUCTION:
            raise FormatError(f"deadzone codec: unknown reconstruction {reconstruction!r}")
        if not etype.is_quantizable:
            raise FormatError(f"deadzone codec: cannot reconstruct into {etype.name}")
        escape = field(params, "escape", bool)
        table = ans.FrequencyTable.from_fields(field(params, "table", dict))
        return DeadzoneDecoder(step, deadzone, escape, table, etype)


class EscapedSymbolDecoder(ChunkDecoder):
    """Decodes chunks of ANS-coded integer symbols with escapes (SPEC.md §7.2): part 0 the
    symbols, part 1 the escaped values; each batch of symbols goes to :meth:`reconstruct`."""

    codec_id: ClassVar[str]
    max_symbol: ClassVar[int] = MAX_SYMBOL

    def __init__(self, escape: bool, table: ans.FrequencyTable, etype: ElementType) -> None:
        self.escape, self.table, self.etype = escape, table, etype

    @abstractmethod
    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        """Float64 values of the symbols ``q`` (int64), the first at ``start`` in the chunk
        (a multiple of :data:`BATCH`)."""

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        name = self.codec_id
        if len(parts) != 2:
            raise FormatError(f"{name} chunk: expected 2 parts (symbols, escapes)")
        symbols = ans.AnsDecoder(parts[0], self.table, out.size)
        escaped = self._escaped(parts[1])
        escape_symbol = self.table.offset + self.table.size - 1
        used = 0
        for batch in batches(out.size):
            q = symbols.take(batch.stop - batch.start)
            if self.escape:
                is_escape = q == escape_symbol
                k = int(is_escape.sum())
                if used + k > escaped.size:
                    raise FormatError(f"{name} chunk: more escape symbols than escaped values")
                q[is_escape] = escaped[used : used + k]
                used += k
            if ((q < -self.max_symbol) | (q > self.max_symbol)).any():
                raise FormatError(f"{name} chunk: symbol beyond {self._limit}")
            out[batch] = from_float64(self.reconstruct(q, batch.start), self.etype)
        symbols.finish()
        if used != escaped.size:
            raise FormatError(f"{name} chunk: more escaped values than escape symbols")

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
        values = decode_uvarints(data)
        if values.max(initial=0) > 2 * self.max_symbol:
            raise FormatError(f"{self.codec_id} chunk: escaped symbol beyond {self._limit}")
        return zigzag_decode(values)


class DeadzoneDecoder(EscapedSymbolDecoder):
    """Reconstructs the midpoints of the dead-zone quantizer's intervals (SPEC.md §7.3)."""

    codec_id = "deadzone"

    def __init__(self, step: float, deadzone: float, escape: bool, table: ans.FrequencyTable,
                 etype: ElementType) -> None:
        super().__init__(escape, table, etype)
        self.step, self.deadzone = step, deadzone

    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        return dequantize(q, self.step, self.deadzone)


def encode_symbol_chunks(q: np.ndarray, symbols: np.ndarray, outside: np.ndarray,
                         table: ans.FrequencyTable, chunk_elements: int) -> tuple[Chunk, ...]:
    """The chunks of a tensor's symbols as :class:`EscapedSymbolDecoder` reads them: ``symbols``
    (``q`` with escapes replaced by the escape symbol) ANS-coded under ``table``, and the
    values ``q`` where ``outside`` as zigzag varints."""
    chunks = []
    start = 0
    for count in split_counts(q.size, chunk_elements):
        part = slice(start, start + count)
        escapes = q[part][outside[part]]
        chunks.append(Chunk(count, (ans.encode(symbols[part], table),
                                    encode_uvarints(zigzag_encode(escapes)))))
        start += count
    return tuple(chunks)
