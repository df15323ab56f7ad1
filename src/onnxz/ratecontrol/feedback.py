"""Calibration-aware rounding: choose each weight's level with the rounding errors of the
weights before it fed back through the layer's inputs (GPTQ, Frantar et al. 2022).

A linear layer's output error is ΔW·x, not ΔW alone. With H = Σ x·xᵀ over the calibration
inputs (per input column of the weight matrix), rounding the columns one at a time and
moving each column's rounding error onto the columns not yet rounded, weighted by H⁻¹,
leaves an error that x hardly sees: ‖ΔW·X‖² falls while the levels — and so the bits — stay
those of the same step. Nothing changes in the format: the file stores dead-zone levels at
the tensor's step, only other ones.

Where it applies: the weights of the layers :mod:`.layers` finds (Conv, Gemm, MatMul, and
the W and R weights of recurrent layers, also inside an If branch every sample takes), and
from their output side the classifier heads :mod:`.heads` finds (the same loop and guards
with the roles of inputs and outputs swapped), that are float32 (the writer quantizes the
fed-back values again at their step: in float16, a level beyond 2¹⁰ could come back as its
neighbour). H is summed over at most
:data:`~.layers.ROWS_PER_SAMPLE` input rows per sample (windows, tokens), from the original
model's layer inputs. Whether the feedback helps is checked per tensor before it is used:
each half of the samples must give H :data:`~.layers.MIN_ROWS_PER_COLUMN` rows per
column (a layer after global pooling sees one row per sample: its rounding would fit the
samples), and,
rounded with H of the first half, its error is measured under H of the second half
(:attr:`ErrorFeedback.gain`, the error relative to plain rounding) and of the first; a
tensor where it does not hold up (:data:`MAX_GAIN`), or holds up far better on the samples
it saw (:data:`MAX_OPTIMISM`), is rounded plainly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(4000, 3)) @ rng.normal(size=(3, 8))   # correlated inputs
>>> x += 0.1 * rng.normal(size=x.shape)
>>> w = rng.normal(size=(1, 16, 8))                             # one group, 16 rows, 8 columns
>>> h = (x.T @ x)[None]
>>> plain = np.round(w / 0.5) * 0.5
>>> fed = round_with_feedback(w, upper_inverse_factor(h), 0.5, 0.5)
>>> bool(np.all(np.abs(fed / 0.5 - np.round(fed / 0.5)) < 1e-9))  # still on the grid
True
>>> from onnxz.ratecontrol.layers import output_error
>>> bool(output_error(w - fed, h) < 0.5 * output_error(w - plain, h))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxz.codecs.deadzone import dequantize, quantize
from onnxz.ratecontrol.heads import HeadLayer
from onnxz.ratecontrol.layers import (
    DAMPING,
    InputMoments,
    LinearLayer,
    evenly_spaced,
)

MAX_LEVEL = 1 << 21
"""Levels stay below this (at the finest step priced) where the feedback is used: the
writer quantizes the fed-back float32 values again, exact for levels below 2²²."""

MAX_GAIN = 0.9
"""The feedback is used on a tensor only if its output error on the held-back half of the
samples is below this share of plain rounding's (0.46 dB)."""

MAX_OPTIMISM = 2.0
"""The feedback is used on a tensor only if its gain on the half of the samples it was
rounded with is at most this much better than on the other half (3 dB). Rate control
checks its files on the calibration samples, which the rounding has seen: where it fits
them far better than other inputs (a squeeze-excitation layer's pooled inputs: 0.13
against 0.90 on PP-LCNet at 3.9 rows per column), those checks would promise what
held-out inputs do not get."""

GAIN_STEP = 1 / 8
"""Relative step at which the gain decides whether a tensor gets the feedback (rate
control's sensitivity probe)."""

BLOCK = 128
"""Columns rounded together before the columns after them are updated at once."""

GAIN_OCTAVES = 1.0
"""The gains are measured at steps this many octaves apart (the others take the nearest)."""

GAIN_ROWS = 256
"""Rows of the weight matrix (over all groups) the gains are measured on."""


def upper_inverse_factor(h: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """The upper Cholesky factor of (H + damping × H's mean diagonal)⁻¹ per group (GPTQ's
    ``Hinv``); a column no input reached gets the damping alone (it is rounded plainly)."""
    h = h.copy()
    for g in range(h.shape[0]):
        diagonal = np.diagonal(h[g])
        mean = float(diagonal.mean())
        h[g][np.diag_indices_from(h[g])] += damping * mean if mean > 0 else 1.0
        dead = np.diagonal(h[g]) <= 0
        h[g][dead, dead] = 1.0
    inverse = np.linalg.inv(h)
    return np.linalg.cholesky(inverse).transpose(0, 2, 1)


def round_with_feedback(w: np.ndarray, factor: np.ndarray, step: float,
                        deadzone: float) -> np.ndarray:
    """Dead-zone reconstructions (float64, like ``w``: (groups, rows, columns)) of the
    weights, column by column, each column's rounding error fed forward to the columns
    after it through ``factor`` (:func:`upper_inverse_factor`)."""
    w = np.array(w, dtype=np.float64)
    out = np.empty_like(w)
    columns = w.shape[2]
    for start in range(0, columns, BLOCK):  # GPTQ's lazy batches: the rest once per block
        stop = min(start + BLOCK, columns)
        block = w[:, :, start:stop]
        errors = np.empty_like(block)
        for i in range(stop - start):
            column, at = block[:, :, i], start + i
            rounded = dequantize(quantize(column, step, deadzone), step, deadzone)
            out[:, :, at] = rounded
            errors[:, :, i] = (column - rounded) / factor[:, at, at][:, None]
            block[:, :, i + 1:] -= errors[:, :, i, None] * factor[:, None, at, at + 1:stop]
        w[:, :, stop:] -= errors @ factor[:, start:stop, stop:]
    return out


@dataclass(frozen=True)
class HalvesCheck:
    """A tensor rounded with the first half of the samples' H, judged under either half's:
    ``rows`` up to :data:`GAIN_ROWS` rows (over all groups) of its weight matrix (all of them
    where the moments measure the error exactly: a head's), ``factor`` the first half's
    :func:`upper_inverse_factor`."""

    rows: np.ndarray
    factor: np.ndarray
    moments: InputMoments
    spread: float

    @classmethod
    def of(cls, layer: LinearLayer | HeadLayer, values: np.ndarray, spread: float,
           moments: InputMoments) -> HalvesCheck:
        w = layer.matrix(values)
        rows = (np.arange(w.shape[1]) if moments.whole_matrix
                else evenly_spaced(w.shape[1], max(1, GAIN_ROWS // layer.groups)))
        return cls(w[:, rows, :], upper_inverse_factor(moments.first, layer.damping), moments,
                   spread)

    def gains(self, step_rel: float) -> tuple[float, float]:
        """The output error with feedback relative to plain rounding's at ``step_rel`` ×
        the spread: under the second half's H (held out), and under the first's (seen)."""
        step = step_rel * self.spread
        plain = self.rows - dequantize(quantize(self.rows, step, 0.5), step, 0.5)
        fed = self.rows - round_with_feedback(self.rows, self.factor, step, 0.5)
        held_out, seen = (self.moments.error(fed, half) / error
                          if (error := self.moments.error(plain, half)) > 0 else 1.0
                          for half in (1, 0))
        return held_out, seen


def checked(layer: LinearLayer | HeadLayer, values: np.ndarray, spread: float,
            moments: InputMoments, finest_step_rel: float) -> tuple[HalvesCheck | None, str]:
    """Which guard of the module docstring the tensor fails ("" if none), and its
    :class:`HalvesCheck` if the rows were enough to make one (None otherwise)."""
    if not moments.enough:
        return None, "too few input rows per column"
    if not (spread > 0 and np.trace(moments.second, axis1=1, axis2=2).any()):
        return None, "no spread or no input"
    if not np.abs(values).max() < MAX_LEVEL * finest_step_rel * spread:
        return None, "levels too large to quantize again exactly"
    check = HalvesCheck.of(layer, values, spread, moments)
    held_out, seen = check.gains(GAIN_STEP)
    if not held_out < MAX_GAIN:
        return check, "no gain on the held-out half"
    if not held_out <= MAX_OPTIMISM * seen:
        return check, "fits the samples it saw far better"
    return check, ""


@dataclass
class ErrorFeedback:
    """One weight tensor's calibration-aware rounding: its layer, the factor of its inputs'
    H (both halves), and per relative step its ``gains``: the layer's output error with
    feedback relative to plain rounding's, on the half of the samples that the rounding
    did not see (see the module docstring), measured on up to :data:`GAIN_ROWS` rows per
    group of the weight matrix."""

    layer: LinearLayer | HeadLayer
    factor: np.ndarray
    gains: dict[float, float]

    @classmethod
    def measure(cls, layer: LinearLayer | HeadLayer, values: np.ndarray, spread: float,
                moments: InputMoments, steps_rel: Sequence[float]) -> ErrorFeedback | None:
        """The feedback for ``values`` (float64, flat) with its gain at each of
        ``steps_rel`` (an octave apart: :data:`GAIN_OCTAVES`), if it passes
        :func:`checked`; else None."""
        if not steps_rel:
            return None
        check, why_not = checked(layer, values, spread, moments, min(steps_rel))
        if why_not:
            return None
        assert check is not None
        measured = sorted({s for s in steps_rel
                           if abs(math.log2(s) / GAIN_OCTAVES - round(math.log2(s) / GAIN_OCTAVES))
                           < 1e-9} or set(steps_rel))
        gains = {s: min(check.gains(s)[0], 1.0) for s in measured}
        return cls(layer, upper_inverse_factor(moments.first + moments.second, layer.damping),
                   gains)

    def gain(self, step_rel: float) -> float:
        """The gain at the measured step nearest ``step_rel`` (in ratio)."""
        nearest = min(self.gains, key=lambda s: abs(np.log(s / step_rel)))
        return self.gains[nearest]

    def reconstruction(self, values: np.ndarray, step: float, deadzone: float) -> np.ndarray:
        """The tensor's dead-zone reconstruction (float64, flat) at ``step``, with feedback."""
        return self.layer.weight_of(round_with_feedback(self.layer.matrix(values),
                                                        self.factor, step, deadzone))
