"""Lossy codec: the dead-zone quantizer, its levels coded as residuals of a row predictor.

Some weight tensors are smooth along their rows: an STFT or filterbank basis stored as a
convolution kernel, positional tables, learned filters. Their quantization levels q are
then predicted well from the two before them in the row, with two integer coefficients
(a, b) per row (SPEC.md § "predictive"):

    p_i = (a·q_{i−1} + b·q_{i−2} + 2^11) >> 12      (q_{−1} = q_{−2} = 0 at a row's start)
    e_i = q_i − p_i                                  (what the ANS stream codes)

The levels, hence the reconstruction, are exactly the dead-zone quantizer's (§7): only the
coding changes. A decoder rebuilds q_i = e_i + p_i along each row in integer arithmetic,
so any decoder gets the same levels bit for bit. The encoder fits (a, b) per row by least
squares on the levels and uses this codec only where it is clearly cheaper than coding the
levels directly (silero-vad's STFT basis at step_rel 1/8: 1.5 instead of 5.1 bits per
weight); other tensors stay ``deadzone``.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> n = np.arange(256)
>>> basis = np.stack([np.cos(np.pi * k * n / 256) for k in range(64)]).astype(np.float32)
>>> codec = PredictiveCodec(step_rel=1 / 64, deadzone=0.5, row=256)
>>> predicted = codec.quantize(basis.ravel(), BY_NAME["float32"])
>>> plain = DeadzoneZstdCodec(1 / 64, 0.5).quantize(basis.ravel(), BY_NAME["float32"])
>>> isinstance(predicted, Predicted), predicted.estimated_bytes() < plain.estimated_bytes() / 2
(True, True)
>>> bool((predicted.reconstruction(BY_NAME["float32"])
...       == plain.reconstruction(BY_NAME["float32"])).all())     # the same levels
True
>>> levels = np.array([[3, 6, 9, 12], [5, 5, 5, 5]])
>>> c = np.array([[8192, -4096], [4096, 0]])         # 2·q[i−1] − q[i−2]; q[i−1]
>>> residuals(levels, c).tolist()
[[3, 0, 0, 0], [5, 0, 0, 0]]
>>> predicted_levels(residuals(levels, c), c).tolist()
[[3, 6, 9, 12], [5, 5, 5, 5]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import (
    BATCH,
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    QuantizedTensor,
    field,
)
from onnxz.codecs.deadzone import (
    EscapedSymbolDecoder,
    Quantized,
    dequantize,
    encode_symbol_chunks,
    from_float64,
    parse_params,
)
from onnxz.codecs.deadzone_zstd import DeadzoneZstdCodec
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError

SHIFT = 12
"""Fraction bits of the coefficients: a stored a stands for a / 2**12."""

MAX_LEVEL = 1 << 31
"""Largest |q| of this codec (so that a·q fits 48 bits); larger tensors stay ``deadzone``."""

MAX_RESIDUAL = 1 << 35
"""Largest |e| a stream may hold (what a and b of at most 2**15 can produce, and more)."""

MAX_ROW = 1 << 16
"""Largest row length a reader accepts (its loop runs once per element of a row)."""

ENCODER_MAX_ROW = 1024
"""Longest row the encoder predicts along: decoding loops over a row's positions, each step
vectorized over the rows of a batch, so long rows decode slowly."""

REQUIRED_SAVING = 0.95
"""The encoder predicts only when that makes the tensor at most this fraction of its
``deadzone`` size (prediction decodes slower, so a marginal gain is not worth it)."""

COEFFICIENT_BYTES = 4
"""Bytes of one row's coefficients in a chunk's part 2: a then b, little-endian int16."""

ROWS_BATCH = 4 * BATCH
"""Elements a decoder rebuilds at a time (whole rows): its loop runs once per position of a
row for each batch, so batches are larger than other codecs' (memory stays bounded)."""

TRIAL_ROWS = 256
"""Rows, evenly spaced, on which the encoder tries prediction before the whole tensor."""

PREDICT_BATCH = 1 << 20
"""Elements (whole rows) the encoder fits and predicts at a time."""

INDEX_BYTES = 8
"""Estimated index bytes this codec adds over ``deadzone`` (the ``row`` parameter)."""

CHECK_EVERY = 4
"""Positions between checks of the levels' magnitude. From |q| ≤ 2**31 a level grows at most
16-fold (plus 2**35) per position, so four positions on a·q still fits 64 bits."""


def residuals(levels: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """e = q − p of levels ``(rows, row)`` (int64) under per-row ``coefficients`` ``(rows,
    2)``: every prediction from the true levels, so no loop (the encoder's direction)."""
    a, b = coefficients[:, :1], coefficients[:, 1:]
    prev1 = np.zeros_like(levels)
    prev2 = np.zeros_like(levels)
    prev1[:, 1:] = levels[:, :-1]
    prev2[:, 2:] = levels[:, :-2]
    return levels - ((a * prev1 + b * prev2 + (1 << (SHIFT - 1))) >> SHIFT)


def predicted_levels(errors: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """The levels ``(rows, row)`` whose :func:`residuals` are ``errors``: one step per
    position of a row, all rows at once. The levels are kept position-major (so every step
    works on contiguous vectors) after two positions of zeros (q₋₂ = q₋₁ = 0), so that a step
    weighs the two levels before it by (b, a) in one product. Each position starts as
    e·2^12 + 2^11, the residual and the rounding term in one (e is an integer, so
    ``(e·2^12 + 2^11 + a·q₋₁ + b·q₋₂) >> 12`` is e + p): a step is one product, two
    additions and the shift. :class:`FormatError` if a level exceeds :data:`MAX_LEVEL`
    (checked every :data:`CHECK_EVERY` positions, before any product could overflow)."""
    rows, width = errors.shape
    levels = np.empty((width + 2, rows), dtype=np.int64)
    levels[:2] = 0
    np.left_shift(errors.T, SHIFT, out=levels[2:])
    levels[2:] += 1 << (SHIFT - 1)
    weights = np.ascontiguousarray(coefficients[:, ::-1].T)  # (2, rows): b, then a
    products = np.empty((2, rows), dtype=np.int64)
    older, newer = products  # b·q[i−2] and a·q[i−1]
    for i in range(width):
        np.multiply(weights, levels[i : i + 2], out=products)
        level = levels[i + 2]
        level += older
        level += newer
        level >>= SHIFT
        if i % CHECK_EVERY == CHECK_EVERY - 1 or i == width - 1:
            recent = levels[2 + i - i % CHECK_EVERY : i + 3]
            if recent.max() > MAX_LEVEL or recent.min() < -MAX_LEVEL:
                raise FormatError(
                    f"predictive chunk: level beyond 2**{MAX_LEVEL.bit_length() - 1}")
    return levels[2:].T


def fit_coefficients(levels: np.ndarray) -> np.ndarray:
    """Per row of ``levels`` ``(rows, row)``, the (a, b) that code it in the fewest bits as
    far as the sum of |e| tells: the least-squares order-2 predictor rounded to integers,
    or (0, 0) (no prediction) where that is no better."""
    q = levels.astype(np.float64)
    x1, x2, y = q[:, 1:-1], q[:, :-2], q[:, 2:]
    s11, s22, s12 = (x1 * x1).sum(1), (x2 * x2).sum(1), (x1 * x2).sum(1)
    s1y, s2y = (x1 * y).sum(1), (x2 * y).sum(1)
    det = s11 * s22 - s12 * s12
    solvable = det > 1e-9 * s11 * s22
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(solvable, (s1y * s22 - s2y * s12) / det,
                     np.where(s11 > 0, s1y / s11, 0.0))
        b = np.where(solvable, (s2y * s11 - s1y * s12) / det, 0.0)
    limit = (1 << 15) - 1
    coefficients = np.clip(np.rint(np.stack([a, b], 1) * (1 << SHIFT)), -limit, limit)
    coefficients = np.nan_to_num(coefficients).astype(np.int64)
    worse = np.abs(residuals(levels, coefficients)).sum(1) >= np.abs(levels).sum(1)
    coefficients[worse] = 0
    return coefficients


@dataclass(frozen=True)
class Predicted(QuantizedTensor):
    """A tensor's dead-zone ``levels`` and how they are coded: the per-row
    ``coefficients`` ``(rows, 2)`` (int64) and the ``errors`` (their residuals, with
    range, histogram and table as :class:`~onnxz.codecs.deadzone.Quantized` holds them)."""

    levels: Quantized
    row: int
    coefficients: np.ndarray
    errors: Quantized

    def reconstruction(self, etype: ElementType) -> np.ndarray:
        return self.levels.reconstruction(etype)

    def estimated_bytes(self) -> float:
        return (self.errors.estimated_bytes() + COEFFICIENT_BYTES * self.coefficients.shape[0]
                + INDEX_BYTES)


def predict(levels: Quantized, row: int) -> Predicted | None:
    """``levels`` coded along rows of ``row`` elements (the last may be short), or None if
    their magnitudes are beyond this codec. Works :data:`PREDICT_BATCH` elements of whole
    rows at a time: beyond the residuals and coefficients, memory stays that small."""
    q = levels.q
    if q.size == 0 or int(np.abs(q).max()) > MAX_LEVEL // 2:
        return None
    rows = -(-q.size // row)
    coefficients = np.empty((rows, 2), dtype=np.int64)
    errors = np.empty(q.size, dtype=np.int64)
    per_batch = max(1, PREDICT_BATCH // row)
    for first in range(0, rows, per_batch):
        part = q[first * row : (first + per_batch) * row]
        grid = np.zeros((-(-part.size // row), row), dtype=np.int64)
        grid.reshape(-1)[: part.size] = part
        batch = fit_coefficients(grid)
        coefficients[first : first + batch.shape[0]] = batch
        errors[first * row : first * row + part.size] = residuals(grid, batch).reshape(-1)[
            : part.size]
    if int(np.abs(errors).max()) > MAX_RESIDUAL:
        return None
    return Predicted(levels, row, coefficients,
                     Quantized.of_symbols(levels.step, levels.deadzone, errors))


def pays(levels: Quantized, row: int) -> Predicted | None:
    """:func:`predict` if that makes the tensor at most :data:`REQUIRED_SAVING` of its size,
    tried first on :data:`TRIAL_ROWS` evenly spaced rows (a tensor it does not help costs
    only that), else None."""
    whole_rows = levels.q.size // row
    if whole_rows > TRIAL_ROWS:
        picked = np.linspace(0, whole_rows - 1, TRIAL_ROWS).astype(np.int64)
        sample = levels.q[: whole_rows * row].reshape(whole_rows, row)[picked].reshape(-1)
        trial = Quantized.of_symbols(levels.step, levels.deadzone, sample)
        if not _cheaper(predict(trial, row), trial):
            return None
    predicted = predict(levels, row)
    return predicted if _cheaper(predicted, levels) else None


def _cheaper(predicted: Predicted | None, levels: Quantized) -> bool:
    return predicted is not None and (predicted.estimated_bytes()
                                      <= REQUIRED_SAVING * levels.estimated_bytes())


class PredictiveCodec(DeadzoneZstdCodec):
    """The dead-zone quantizer (``step_rel``, ``deadzone`` as :class:`DeadzoneCodec`) whose
    levels are predicted along rows of ``row`` elements where that is clearly cheaper; the
    tensor is written as :class:`DeadzoneZstdCodec` writes it otherwise (``deadzone`` or
    ``deadzone_zstd``)."""

    codec_id = "predictive"

    def __init__(self, step_rel: float | None, deadzone: float, *, row: int,
                 **options: Any) -> None:
        super().__init__(step_rel, deadzone, **options)
        if not isinstance(row, int) or row < 1:
            raise ValueError(f"row must be a positive int, got {row!r}")
        self.row = row

    def quantize(self, values: np.ndarray, etype: ElementType,
                 spread: float | None = None) -> Quantized | Predicted:
        """The dead-zone levels, as :class:`Predicted` when that is clearly cheaper."""
        levels = super().quantize(values, etype, spread)
        if not 2 <= self.row <= ENCODER_MAX_ROW or values.size < 2 * self.row:
            return levels
        return pays(levels, self.row) or levels

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        if not isinstance(quantized, Predicted):
            return super().encode_quantized(quantized, etype, chunk_elements)
        row, errors = quantized.row, quantized.errors
        chunk_elements = max(row, chunk_elements - chunk_elements % row)  # whole rows
        chunks = []
        first_row = 0
        for chunk in encode_symbol_chunks(errors.q, errors.lo, errors.hi, errors.table,
                                          chunk_elements):
            rows = -(-chunk.count // row)
            stored = quantized.coefficients[first_row : first_row + rows].astype("<i2")
            chunks.append(Chunk(chunk.count, (*chunk.parts, stored.tobytes())))
            first_row += rows
        params = self.stored_params(errors) | {"row": row}
        return EncodedTensor(
            self.codec_id, params, tuple(chunks), quantized.reconstruction(etype),
            entropy_bits=ans.entropy_bits_of_counts(errors.counts),
            table_bytes=errors.table.stored_size, format_minor=2)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        step, deadzone, escape, table = parse_params(params, etype, cls.codec_id)
        row = field(params, "row", int)
        if not 1 <= row <= MAX_ROW:
            raise FormatError(f"predictive codec: row {row} out of range 1..{MAX_ROW}")
        return PredictiveDecoder(step, deadzone, escape, table, etype, row)


class PredictiveDecoder(EscapedSymbolDecoder):
    """Residuals from parts 0 and 1 as the dead-zone codec's symbols, coefficients from part
    2, levels rebuilt a batch of whole rows at a time."""

    codec_id = "predictive"
    max_symbol = MAX_RESIDUAL

    def __init__(self, step: float, deadzone: float, escape: bool, table: ans.FrequencyTable,
                 etype: ElementType, row: int) -> None:
        super().__init__(escape, table, etype)
        self.step, self.deadzone, self.row = step, deadzone, row
        self.batch = max(1, ROWS_BATCH // row) * row

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 3:
            raise FormatError("predictive chunk: expected 3 parts (symbols, escapes, "
                              "coefficients)")
        rows = -(-out.size // self.row)
        if len(parts[2]) != COEFFICIENT_BYTES * rows:
            raise CorruptDataError(f"predictive chunk: {len(parts[2])} bytes of coefficients "
                                   f"for {rows} rows")
        stored = np.frombuffer(parts[2], dtype="<i2").astype(np.int64).reshape(rows, 2)
        self.decode_symbols(parts[:2], out, partial(self._fill_rows, stored))

    def _fill_rows(self, coefficients: np.ndarray, target: np.ndarray, index: np.ndarray,
                   where: np.ndarray, escaped: np.ndarray, start: int) -> None:
        errors = self.symbols_of(index, where, escaped)
        first = start // self.row  # batches hold whole rows
        whole = errors.size - errors.size % self.row
        levels = np.empty_like(errors)
        if whole:
            rows = whole // self.row
            levels[:whole] = predicted_levels(errors[:whole].reshape(rows, self.row),
                                              coefficients[first : first + rows]).reshape(-1)
        if whole < errors.size:  # a chunk's short last row
            levels[whole:] = predicted_levels(errors[whole:].reshape(1, -1),
                                              coefficients[-1:]).reshape(-1)
        low, high = int(levels.min()), int(levels.max())
        if high - low < levels.size:  # a table of every level in the range, one lookup each
            table = from_float64(self.reconstruct(np.arange(low, high + 1), start), self.etype)
            table.take(levels - low, out=target, mode="wrap")
        else:
            target[...] = from_float64(self.reconstruct(levels, start), self.etype)

    def reconstruct(self, q: np.ndarray, start: int) -> np.ndarray:
        """The values of levels ``q`` (§7.3), each on its own (so a table of them is exact)."""
        return dequantize(q, self.step, self.deadzone)
