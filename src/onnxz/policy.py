"""Which codec each tensor gets when no rate control chooses: lossless, or one uniform
quantizer for every weight tensor (``step_rel``); the lossy default is rate control's."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxz.arguments import boolean, integer, real_number
from onnxz.codecs import DeadzoneCodec, LosslessCodec, TensorCodec
from onnxz.dtypes import ElementType
from onnxz.errors import InvalidArgumentError
from onnxz.walker import TensorSlot

DEFAULT_STEP_REL = 1 / 64
"""Step Δ, as a fraction of each tensor's robust spread (see ``deadzone.robust_spread``), of
a uniform pack given a dead zone but no step."""

DEFAULT_DEADZONE = 0.5
"""Default dead zone δ (0.5 = plain midtread uniform quantizer)."""


@dataclass(frozen=True)
class PackOptions:
    """Settings of one pack.

    ``step_rel``: one quantization step Δ for every weight tensor, relative to each
    tensor's spread: 1.4826 × the median absolute deviation (the standard deviation for
    normal data, robust to outliers). None (the default): rate control chooses each
    tensor's step (see :func:`onnxz.save`).
    ``deadzone``: δ of the dead-zone quantizer (0 = midrise, 0.5 = midtread).
    Tensors smaller than ``min_quantized_elements``, non-float tensors and tensors that do
    not feed a weight input (Conv/Gemm/MatMul/RNN weights, Gather tables) stay lossless.
    Payloads under ``inline_max_bytes`` stay inside the graph section.
    """

    lossless: bool = False
    step_rel: float | None = None
    deadzone: float = DEFAULT_DEADZONE
    min_quantized_elements: int = 1024
    inline_max_bytes: int = 128
    chunk_elements: int = 1 << 20

    def __post_init__(self) -> None:
        boolean(self.lossless, "lossless")
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

    def codec_for(self, slot: TensorSlot, etype: ElementType, count: int) -> TensorCodec:
        """The codec to try first for ``slot`` (a lossy one may still decline)."""
        if (
            self.lossless
            or not etype.is_quantizable
            or not slot.is_weight
            or count < self.min_quantized_elements
        ):
            return LosslessCodec()
        return DeadzoneCodec(DEFAULT_STEP_REL if self.step_rel is None else self.step_rel,
                             self.deadzone)

    @property
    def uniform(self) -> bool:
        """True when the options fix the codecs themselves (lossless, or one step)."""
        return self.lossless or self.step_rel is not None
