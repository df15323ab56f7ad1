"""Tensor codecs, one module each, found by the id stored in the index.

To add a codec: write a module with a :class:`TensorCodec` subclass and list it in
``REGISTRY`` below (and give it a section in SPEC.md).
"""

from __future__ import annotations

from onnxz.codecs.base import Chunk, EncodedTensor, TensorCodec
from onnxz.codecs.deadzone import DeadzoneCodec, NotQuantizable
from onnxz.codecs.deadzone_zstd import DeadzoneZstdCodec
from onnxz.codecs.lossless import LosslessCodec
from onnxz.codecs.minifloat import MinifloatCodec
from onnxz.codecs.mulaw import MulawCodec
from onnxz.codecs.predictive import PredictiveCodec
from onnxz.codecs.trellis import TrellisCodec
from onnxz.codecs.trellis_zstd import TrellisZstdCodec
from onnxz.errors import FormatError

REGISTRY: dict[str, type[TensorCodec]] = {
    LosslessCodec.codec_id: LosslessCodec,
    DeadzoneCodec.codec_id: DeadzoneCodec,
    MulawCodec.codec_id: MulawCodec,
    MinifloatCodec.codec_id: MinifloatCodec,
    TrellisCodec.codec_id: TrellisCodec,
    PredictiveCodec.codec_id: PredictiveCodec,
    DeadzoneZstdCodec.codec_id: DeadzoneZstdCodec,
    TrellisZstdCodec.codec_id: TrellisZstdCodec,
}


def codec_class(codec_id: str) -> type[TensorCodec]:
    """The codec class for an index's codec id; :class:`FormatError` if unknown."""
    try:
        return REGISTRY[codec_id]
    except KeyError:
        raise FormatError(
            f"codec {codec_id!r} is not known to this reader (known: {', '.join(REGISTRY)})"
        ) from None


__all__ = [
    "REGISTRY",
    "Chunk",
    "DeadzoneCodec",
    "DeadzoneZstdCodec",
    "EncodedTensor",
    "LosslessCodec",
    "MinifloatCodec",
    "MulawCodec",
    "NotQuantizable",
    "PredictiveCodec",
    "TensorCodec",
    "TrellisCodec",
    "TrellisZstdCodec",
    "codec_class",
]
