"""The tensors rate control may quantize, and each one's rate–distortion points.

A :class:`Setting` is what the writer will do with a tensor (the dead-zone quantizer at a
relative step and dead zone, or lossless); a :class:`Point` prices it: estimated coded bytes
and the squared error it leaves in the weights. Every tensor gets the same grid of settings
(relative steps a quarter octave apart), so that its rate–distortion curve is known before
any model is run.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> from onnxz.walker import iter_tensor_slots
>>> import onnx.helper as h, onnx.numpy_helper as nh
>>> w = np.random.default_rng(0).laplace(0, 0.1, (64, 64)).astype(np.float32)
>>> graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
...     [h.make_tensor_value_info("x", 1, [1, 64])], [h.make_tensor_value_info("y", 1, [1, 64])],
...     [nh.from_array(w, "w")])
>>> from onnxz.policy import PackOptions
>>> (c,) = find_candidates(h.make_model(graph), PackOptions())
>>> fine, coarse = c.price(Setting.step(1 / 16)), c.price(Setting.step(1 / 4))
>>> fine.bytes > coarse.bytes and fine.sse < coarse.sse
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import onnx

from onnxz.codecs import (
    LosslessCodec,
    NotQuantizable,
    PredictiveCodec,
    TensorCodec,
    TrellisZstdCodec,
)
from onnxz.codecs.base import LossyCodec, QuantizedTensor
from onnxz.codecs.deadzone import from_float64, robust_spread, to_float64
from onnxz.codecs.predictive import ENCODER_MAX_ROW, Predicted
from onnxz.codecs.rounding import MantissaRounding, round_mantissa
from onnxz.dtypes import ElementType, element_type
from onnxz.parallel import WorkerPool
from onnxz.policy import (
    AUXILIARY_BITS,
    AUXILIARY_MIN_ELEMENTS,
    DEFAULT_DEADZONE,
    DEFAULT_STEP_REL,
    WEIGHT_MIN_ELEMENTS,
    PackOptions,
)
from onnxz.ratecontrol.feedback import ErrorFeedback
from onnxz.walker import (
    Path,
    TensorSlot,
    element_count,
    iter_tensor_slots,
    payload_type,
    read_payload,
    row_length,
)

T = TypeVar("T")

INDEX_BYTES = {"deadzone": 48, "mantissa": 0, "trellis": 48}
"""Index bytes a tensor coded by a method adds over a lossless one (its codec parameters),
counted in its rate so that tiny tensors are only quantized where it pays (mantissa
rounding is coded losslessly: nothing more)."""

STEP_GRID = tuple(2.0 ** (k / 4) for k in range(-44, 13))
"""Relative steps rate control chooses from: 2^-11 (1/2048, about 77 dB of weight SNR at
13 bits per weight) to 2^3, a quarter octave apart. A step whose symbols no table holds is
declined for that tensor (:class:`~onnxz.codecs.NotQuantizable`). The steps below 2^-9 made
EfficientNet-Lite0's `top1>=0.995` file 7,955,949 → 6,546,456 bytes (100% of held-out labels
kept either way)."""

NEAR_LOSSLESS_BITS = (20, 18, 16, 14, 12)
"""Mantissa bits of the near-lossless points of a weight tensor's curve (rounding, then the
lossless codec; float32 keeps 23), between its finest step and lossless (about 27 bits per
weight): without them a strict target buys a tensor's last decibels only by storing it
exactly (EfficientNet-Lite0 at `top1>=0.995` with steps down to 2^-9: 62 weight tensors
lossless, 6.2 of its 10.1 MB; with these points 7.96 MB). 12 bits is about 80 dB at 16 bits
per weight; the step grid stops at 2^-11, where symbols begin to pass the coder's alphabet.
Priced by :func:`near_lossless_point`."""

ROUNDED_KEPT = 3
"""Settings whose fed-back values a candidate keeps (see :meth:`Candidate.rounded`)."""

PRICE_SAMPLE = 1 << 18
"""Elements a tensor's settings are priced on (see :class:`PriceSample`)."""

PARALLEL_PRICING_MIN_ELEMENTS = 1 << 16
"""Below this many elements to price in all (each tensor's price sample), tensors are
priced in this process: starting workers would cost more than they save. Above it, two
workers price the corpus's models 1.1–1.7× faster on 2 cores (magika 1.2–1.3 → 0.8 s,
PP-OCR cls's 183 tensors 2.3–2.8 → 1.8 s, NudeNet's 127 tensors 10–12 → 7 s; session
35): a tensor costs a few milliseconds per setting however small it is."""



@dataclass(frozen=True)
class Setting:
    """What to do with one tensor: ``method`` ``lossless``, or a lossy codec of
    :data:`METHODS` — ``deadzone`` with step ``step_rel`` × the tensor's spread and dead
    zone ``deadzone``, ``mantissa`` rounding to ``bits`` mantissa bits. ``absolute_step``
    replaces ``step_rel`` × spread where the writer codes levels chosen elsewhere (a tensor
    rounded with error feedback, :mod:`onnxz.ratecontrol.feedback`)."""

    method: str = "lossless"
    step_rel: float | None = None
    deadzone: float = 0.5
    bits: int | None = None
    absolute_step: float | None = None

    @classmethod
    def step(cls, step_rel: float, deadzone: float = 0.5) -> Setting:
        """The dead-zone quantizer at ``step_rel``."""
        return cls("deadzone", step_rel, deadzone)

    @property
    def lossless(self) -> bool:
        return self.method == "lossless"

    def codec(self, row: int) -> TensorCodec:
        """The codec the writer uses for this setting on a tensor of rows of ``row``
        elements (see :func:`row_length`)."""
        return LosslessCodec() if self.lossless else self.quantizer(row)

    def quantizer(self, row: int) -> LossyCodec:
        """The lossy codec of a lossy setting, for rows of ``row`` elements."""
        if self.lossless:
            raise ValueError("a lossless setting has no quantizer")
        return METHODS[self.method](self, row)

    def __str__(self) -> str:
        if self.method == "deadzone":
            return f"deadzone step {self.step_rel!r} δ {self.deadzone!r}"
        return self.method if self.bits is None else f"{self.method} {self.bits} bits"


METHODS: dict[str, Callable[[Setting, int], LossyCodec]] = {
    # the dead-zone quantizer; its levels predicted along rows where that is much cheaper
    "deadzone": lambda s, row: (
        PredictiveCodec(s.step_rel, s.deadzone, row=row) if s.absolute_step is None
        else PredictiveCodec(None, s.deadzone, row=row, step=s.absolute_step)),
    "mantissa": lambda s, row: MantissaRounding(s.bits),  # type: ignore[arg-type]
    # trellis-coded quantization (format 1.1) at step_rel; the dead zone does not apply
    "trellis": lambda s, row: TrellisZstdCodec(s.step_rel),  # type: ignore[arg-type]
}
"""The lossy codecs rate control may choose, by name: each makes its codec from a setting
and the row length of the tensor it codes."""


LOSSLESS = Setting()


@dataclass(frozen=True)
class Point:
    """A setting priced: estimated ``bytes`` in the file and ``sse`` = Σ (x − x̂)² of the
    weights (float64, after rounding to the tensor's type)."""

    setting: Setting
    bytes: float
    sse: float


@dataclass(frozen=True)
class PriceSample:
    """A tensor as its settings are priced: some of its ``values`` (evenly spaced; all of a
    small tensor), the whole tensor's element count ``size`` and ``spread``, and the row
    length its levels are predicted along (1: none). Tensors of more than
    :data:`PRICE_SAMPLE` elements are priced on a sample, scaled to the whole: the search
    only needs the curve, the file gets the exact encoding. Picklable, so that tensors are
    priced in worker processes (:func:`price_curve`)."""

    values: np.ndarray
    size: int
    etype: ElementType
    spread: float
    row: int = 1

    @property
    def scale(self) -> float:
        """Elements of the whole tensor per element of the sample."""
        return self.size / self.values.size

    def price(self, setting: Setting) -> Point | None:
        """``setting`` priced (None if the quantizer declines it)."""
        try:
            quantized = setting.quantizer(self.row).quantize(self.values, self.etype,
                                                             self.spread)
        except NotQuantizable:
            return None
        return Point(setting, quantized.estimated_bytes() * self.scale
                     + INDEX_BYTES[setting.method],
                     self.scaled_sse(quantized.reconstruction(self.etype)))

    def lossless_point(self, chunk_elements: int) -> Point:
        """The lossless coding priced as :meth:`price` prices a setting (the whole tensor's
        coding tries zstd up to level 19 on every plane, 15 s of a 90 MB sentence encoder's
        pack for one point per tensor)."""
        coded = LosslessCodec().encode(self.values, self.etype, chunk_elements).coded_bytes
        return Point(LOSSLESS, coded * self.size / self.values.size, 0.0)

    def scaled_sse(self, reconstruction: np.ndarray) -> float:
        """Σ (x − x̂)² of the sample against its ``reconstruction``, scaled to the whole
        tensor."""
        error = to_float64(reconstruction, self.etype) - to_float64(self.values, self.etype)
        return float(np.einsum("i,i->", error, error)) * self.size / self.values.size


@dataclass
class Candidate:
    """A tensor rate control chooses a setting for: a weight tensor, or an ``auxiliary``
    one (biases, normalization parameters, small weights: lossless or mantissa rounding).

    ``points`` are ordered from finest (lossless first) to coarsest; ``energy`` is Σ x².
    ``row`` is the row length its quantizer predicts levels along (1: none; see
    :func:`prediction_row`).
    ``sensitivity`` (objective units per unit of weight squared error) is filled in by the
    sensitivity pass; ``exercised`` is False when no sample moved the outputs through this
    tensor (its sensitivity is then a typical one, see
    :func:`onnxz.ratecontrol.allocation.measure_sensitivities`).
    """

    slot: TensorSlot
    etype: ElementType
    values: np.ndarray
    points: list[Point]
    energy: float
    spread: float
    auxiliary: bool = False
    row: int = 1
    sensitivity: float | None = None
    exercised: bool = True
    feedback: ErrorFeedback | None = None
    twins: list[TensorSlot] = field(default_factory=list)
    _rounded: dict[Setting, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.slot.path

    @property
    def name(self) -> str:
        return self.slot.tensor.name

    @property
    def size(self) -> int:
        return int(self.values.size)

    def reconstruction(self, setting: Setting, values: np.ndarray | None = None
                       ) -> np.ndarray:
        """The values a decoder returns for this tensor under ``setting`` — or for
        ``values`` in its place (quantized as the writer quantizes them, from their own
        spread)."""
        if setting.lossless:
            return self.values if values is None else values
        if values is None and self.fed_back(setting):
            return self.rounded(setting)
        if values is None:
            return self.quantized(setting).reconstruction(self.etype)
        return setting.quantizer(self.row).quantize(values, self.etype).reconstruction(
            self.etype)

    def fed_back(self, setting: Setting) -> bool:
        """Whether ``setting`` is rounded with :attr:`feedback` (a dead-zone step, once
        :meth:`use_feedback` gave one)."""
        return (self.feedback is not None and setting.method == "deadzone"
                and setting.step_rel is not None)

    def _gain(self, setting: Setting) -> float:
        """The factor on a point's priced error: the feedback's gain at its step, or 1."""
        if not self.fed_back(setting):
            return 1.0
        assert self.feedback is not None and setting.step_rel is not None
        return self.feedback.gain(setting.step_rel)

    def rounded(self, setting: Setting) -> np.ndarray:
        """The values of a dead-zone ``setting`` rounded with :attr:`feedback` (the last
        few kept: the search applies a plan many times)."""
        assert self.feedback is not None
        if setting not in self._rounded:
            if len(self._rounded) >= ROUNDED_KEPT:
                del self._rounded[next(iter(self._rounded))]
            assert setting.step_rel is not None
            self._rounded[setting] = from_float64(self.feedback.reconstruction(
                to_float64(self.values, self.etype), setting.step_rel * self.spread,
                setting.deadzone), self.etype)
        return self._rounded[setting]

    def use_feedback(self, feedback: ErrorFeedback) -> None:
        """Round dead-zone settings with ``feedback`` from now on; their priced error
        becomes the weight error that plain rounding would need for the same output error
        (× the gain at their step, :meth:`ErrorFeedback.gain`), which is what the
        allocation trades against the sensitivity measured with plain rounding."""
        self.feedback = feedback
        self.points = [replace(p, sse=p.sse * self._gain(p.setting)) for p in self.points]

    def dead_zone_steps(self) -> list[float]:
        """The relative steps of this tensor's dead-zone points."""
        return [p.setting.step_rel for p in self.points
                if p.setting.method == "deadzone" and p.setting.step_rel is not None]

    def coded_setting(self, setting: Setting) -> Setting:
        """The setting the writer codes this tensor with: a fed-back dead-zone setting at
        its absolute step (the levels are the rounded values' own)."""
        if not self.fed_back(setting):
            return setting
        assert setting.step_rel is not None
        return replace(setting, absolute_step=setting.step_rel * self.spread)

    def quantized(self, setting: Setting) -> QuantizedTensor:
        """The tensor through ``setting``'s quantizer (as the writer will quantize it)."""
        return setting.quantizer(self.row).quantize(self.values, self.etype, self.spread)

    def price(self, setting: Setting) -> Point | None:
        """``setting`` priced on this tensor's :meth:`price_sample` (None if the quantizer
        declines it), its error × the feedback's gain at its step where it is fed back."""
        point = self.price_sample().price(setting)
        if point is None or not self.fed_back(setting):
            return point
        return replace(point, sse=point.sse * self._gain(setting))

    def price_sample(self) -> PriceSample:
        """This tensor as its settings are priced: about :data:`PRICE_SAMPLE` evenly spaced
        elements (all of a small one), whole rows of its shape (:func:`row_length`) if 2 ≤
        row ≤ the predictor's longest row, else single elements."""
        row = row_length(self.slot.tensor.dims)
        values = self.values
        if self.size > PRICE_SAMPLE and 2 <= row <= ENCODER_MAX_ROW:
            rows = values.reshape(-1, row)
            values = rows[:: max(1, rows.shape[0] // (PRICE_SAMPLE // row))].reshape(-1)
        elif self.size > PRICE_SAMPLE:
            values = values[:: max(1, self.size // PRICE_SAMPLE)]
        return PriceSample(values, self.size, self.etype, self.spread, self.row)

    @property
    def relative_sensitivity(self) -> float | None:
        """The objective if this tensor's error energy equalled its own energy (sensitivity
        × Σx²): comparable between tensors of any size and scale."""
        return None if self.sensitivity is None else self.sensitivity * self.energy

    def weight_snr_db(self, point: Point) -> float:
        """10·log10(Σx² / Σ(x − x̂)²) of this tensor at ``point`` (+inf when exact)."""
        if point.sse == 0:
            return math.inf
        return 10 * math.log10(self.energy / point.sse) if self.energy else -math.inf


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the float weight tensors rate control would consider, wherever their
    payloads are (external data included: the model need not be loaded)."""
    total = 0
    for slot in iter_tensor_slots(model):
        etype = None if slot.tensor.HasField("segment") else element_type(
            slot.tensor.data_type)
        if etype is not None and etype.is_quantizable and slot.is_weight:
            total += element_count(slot.tensor) * etype.width
    return total


def find_candidates(model: onnx.ModelProto, options: PackOptions,
                    settings: Sequence[Setting] | None = None,
                    min_elements: int = WEIGHT_MIN_ELEMENTS, workers: int = 1
                    ) -> list[Candidate]:
    """The tensors rate control chooses for, each priced losslessly and at its settings:
    the float weight tensors of ``model`` (Conv/Gemm/MatMul/RNN weights, embedding tables,
    found through the walker) with at least ``min_elements`` elements, at every setting
    (default: the near-lossless roundings of :data:`NEAR_LOSSLESS_BITS`, then
    :data:`STEP_GRID` at δ = 0.5); and, as auxiliary candidates, every other
    float tensor of at least :data:`AUXILIARY_MIN_ELEMENTS` elements, with mantissa rounding
    to :data:`AUXILIARY_BITS` bits. Payloads under ``options.inline_max_bytes`` are
    candidates too: the writer leaves them in the graph as a decoder would give them.
    ``workers`` processes price the tensors (:func:`price_curve`) where there are at least
    :data:`PARALLEL_PRICING_MIN_ELEMENTS` elements to price; the result is the same for any
    number."""
    near_lossless = () if settings is not None else tuple(
        Setting("mantissa", bits=b) for b in NEAR_LOSSLESS_BITS)
    grid = (tuple(settings) if settings is not None
            else tuple(Setting.step(s) for s in STEP_GRID))
    rounding = (Setting("mantissa", bits=AUXILIARY_BITS),)
    found = _unpriced_candidates(model, min_elements)

    def job(candidate: Candidate) -> PricingJob:
        if candidate.auxiliary:
            return PricingJob(candidate.price_sample(), 1, (), rounding,
                              options.chunk_elements)
        rounded = tuple(s for s in near_lossless
                        if s.bits < candidate.etype.mantissa_bits)  # type: ignore[operator]
        return PricingJob(candidate.price_sample(), row_length(candidate.slot.tensor.dims),
                          rounded, grid, options.chunk_elements)

    priced = sum(min(c.size, PRICE_SAMPLE) for c in found)
    with WorkerPool(workers if priced >= PARALLEL_PRICING_MIN_ELEMENTS else 1) as pool:
        for candidate, (row, points) in zip(found, pool.map(price_curve, map(job, found)),
                                            strict=True):
            candidate.row, candidate.points = row, points
    return found


def _unpriced_candidates(model: onnx.ModelProto, min_elements: int) -> list[Candidate]:
    """:func:`find_candidates`'s tensors without their points: a tensor whose type, shape
    and values are another's is that one's twin; one with a value that is not finite is
    left out."""
    found: list[Candidate] = []
    alike: dict[tuple[str, tuple[int, ...], bytes], Candidate] = {}
    for slot, etype, values in _float_payloads(model):
        key = (etype.name, tuple(slot.tensor.dims), hashlib.sha256(values.data).digest())
        twin_of = alike.get(key)
        if twin_of is not None and np.array_equal(twin_of.values.view(np.uint8),
                                                  values.view(np.uint8)):
            twin_of.twins.append(slot)
            continue
        x = to_float64(values, etype)
        if not np.isfinite(x).all():
            continue
        energy = float(np.einsum("i,i->", x, x))  # not BLAS: its threads spin on a busy machine
        spread = robust_spread(x, overwrite=True)  # works in x: no second copy
        del x  # freed before the next tensor's copy
        weight = slot.is_weight and values.size >= min_elements
        candidate = Candidate(slot, etype, values, [], energy, spread, auxiliary=not weight)
        found.append(candidate)
        alike.setdefault(key, candidate)
    return found


@dataclass(frozen=True)
class PricingJob:
    """One tensor's pricing as a worker process gets it: its :class:`PriceSample` (row
    1), the row length of its shape (prediction along rows is tried where 2 ≤ row ≤ the
    predictor's longest row; 1 for an auxiliary tensor), the ``near_lossless`` roundings
    priced from the lossless point, then the ``settings``."""

    sample: PriceSample
    shape_row: int
    near_lossless: tuple[Setting, ...]
    settings: tuple[Setting, ...]
    chunk_elements: int


def price_curve(job: PricingJob) -> tuple[int, list[Point]]:
    """The row length a tensor's levels are predicted along (:func:`prediction_row`) and
    its points, finest first: lossless, the near-lossless roundings, then the settings
    (those the quantizer declines left out)."""
    lossless = job.sample.lossless_point(job.chunk_elements)
    row = prediction_row(job.sample, job.shape_row)
    sample = replace(job.sample, row=row)
    points = [lossless]
    points += filter(None, (near_lossless_point(sample, lossless, s)
                            for s in job.near_lossless))
    points += filter(None, (sample.price(s) for s in job.settings))
    return row, points


def tied(by_path: Mapping[Path, T], candidates: Sequence[Candidate]) -> dict[Path, T]:
    """``by_path`` (settings, points or values by candidate path) with each candidate's
    entry given to its twins too: a twin is coded as the candidate is, so the writer stores
    it as a copy (SPEC.md §6.7) and it costs no bytes of its own."""
    out = dict(by_path)
    for c in candidates:
        if c.path in by_path:
            out.update((twin.path, by_path[c.path]) for twin in c.twins)
    return out


def near_lossless_point(sample: PriceSample, lossless: Point, setting: Setting
                        ) -> Point | None:
    """``setting`` (mantissa rounding) priced, ``lossless`` the tensor's lossless point.
    Where the lossless coding stores the mantissa as it comes (at least its bits per
    element: trained weights, whose low bits are noise), without coding it: the lossless
    size less the dropped bits, within 1% of the coded size on the corpus's weight tensors,
    and the error on the sample, scaled. Elsewhere (a compressible tensor, such as an STFT
    basis at 8 bits per element) by coding the rounded sample
    (:meth:`PriceSample.price`)."""
    assert setting.method == "mantissa" and setting.bits is not None
    etype = sample.etype
    if lossless.bytes * 8 < sample.size * etype.mantissa_bits:
        return sample.price(setting)
    dropped = sample.size * (etype.mantissa_bits - setting.bits) / 8
    return Point(setting, lossless.bytes - dropped,
                 sample.scaled_sse(round_mantissa(sample.values, etype, setting.bits)))


def prediction_row(sample: PriceSample, shape_row: int) -> int:
    """The tensor's row length ``shape_row`` (:func:`row_length`) if predicting its levels
    along rows pays at the default step (on its price sample), else 1: decided once per
    tensor, so that the step grid is priced without trying prediction at every step on
    tensors it does not help (nearly all)."""
    if not 2 <= shape_row <= ENCODER_MAX_ROW:
        return 1
    try:
        quantized = PredictiveCodec(DEFAULT_STEP_REL, DEFAULT_DEADZONE, row=shape_row
                                    ).quantize(sample.values, sample.etype, sample.spread)
    except NotQuantizable:
        return 1
    return shape_row if isinstance(quantized, Predicted) else 1


def may_choose(model: onnx.ModelProto, min_elements: int = WEIGHT_MIN_ELEMENTS) -> bool:
    """Whether :func:`find_candidates` may find a tensor to quantize or round: a float tensor
    that is not a weight (it may be rounded), or a weight of ``min_elements`` or more whose
    elements are not all equal (one with no spread cannot be quantized). Stops at the first;
    reads no more than the payloads, so that rate control need not run a model in which it
    has nothing to choose (an all-zero weight of 256 MiB, say)."""
    for slot, _, values in _float_payloads(model):
        if not (slot.is_weight and values.size >= min_elements):
            return True
        if values.min() != values.max():
            return True
    return False


def _float_payloads(model: onnx.ModelProto
                    ) -> Iterator[tuple[TensorSlot, ElementType, np.ndarray]]:
    """Each float tensor rate control considers, with its element type and values (flat):
    of at least :data:`AUXILIARY_MIN_ELEMENTS` elements, not a quantization parameter (those
    stay exact: :data:`onnxz.walker.QUANTIZATION_PARAMETERS`)."""
    for slot in iter_tensor_slots(model):
        if slot.is_quantization_parameter:
            continue
        etype = payload_type(slot.tensor)
        if etype is None or not etype.is_quantizable:
            continue
        values = read_payload(slot.tensor, etype)
        if values.size >= AUXILIARY_MIN_ELEMENTS:
            yield slot, etype, values
