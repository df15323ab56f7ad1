"""A lossy encoder for 1.0 readers: floats rounded to fewer mantissa bits, then the lossless
codec. The low mantissa planes become constant zero and cost nothing; the stream is an
ordinary ``lossless`` one (SPEC.md §6), so no reader needs anything new.

Rounding keeps the exponent range of the type (unlike a cast to float16, which overflows
above 65504 — PP-OCRv4's BatchNorm variances reach 9.8e7) and bounds the relative error by
2^−(q+1). With q = 10 it is float16's precision, which models are routinely run at.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> x = np.array([1.0, 1.0 + 2.0**-12, 1.0 + 3 * 2.0**-11, 9.8e7], np.float32)
>>> round_mantissa(x, BY_NAME["float32"], 10).tolist()
[1.0, 1.0, 1.001953125, 97976320.0]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from onnxz.codecs.base import EncodedTensor, LossyCodec, QuantizedTensor
from onnxz.codecs.lossless import LosslessCodec
from onnxz.dtypes import ElementType

UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def round_mantissa(values: np.ndarray, etype: ElementType, bits: int) -> np.ndarray:
    """``values`` rounded to ``bits`` mantissa bits, to nearest, ties to even; a value that
    would round up to infinity keeps its exact value (non-finite values are kept too)."""
    drop = etype.mantissa_bits - bits
    if drop <= 0:
        return values.copy()
    kind = UNSIGNED[etype.width]
    words = values.view(kind)
    one = kind(1)
    keep = (words >> kind(drop)) & one
    rounded = ((words + (one << kind(drop - 1)) - one + keep) >> kind(drop)) << kind(drop)
    exponent = (rounded >> kind(etype.mantissa_bits)) & kind((1 << etype.exponent_bits) - 1)
    all_ones = kind((1 << etype.exponent_bits) - 1)
    old_exponent = (words >> kind(etype.mantissa_bits)) & all_ones
    unchanged = (exponent == all_ones) | (old_exponent == all_ones)
    return np.where(unchanged, words, rounded).view(values.dtype)


@dataclass(frozen=True)
class Rounded(QuantizedTensor):
    """A tensor with rounded mantissas, its lossless encoding computed once."""

    encoded: EncodedTensor

    def estimated_bytes(self) -> float:
        return float(self.encoded.coded_bytes)

    def reconstruction(self, etype: ElementType) -> np.ndarray:
        return self.encoded.reconstruction


class MantissaRounding(LossyCodec):
    """Round to ``bits`` mantissa bits, then code losslessly (the stream is ``lossless``)."""

    codec_id = LosslessCodec.codec_id

    def __init__(self, bits: int, chunk_elements: int = 1 << 20) -> None:
        self.bits, self.chunk_elements = bits, chunk_elements

    def quantize(self, values: np.ndarray, etype: ElementType,
                 spread: float | None = None) -> Rounded:
        rounded = round_mantissa(values, etype, self.bits)
        return Rounded(LosslessCodec().encode(rounded, etype, self.chunk_elements))

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        assert isinstance(quantized, Rounded)
        encoded = (quantized.encoded if chunk_elements == self.chunk_elements else
                   LosslessCodec().encode(quantized.encoded.reconstruction, etype,
                                          chunk_elements))
        return replace(encoded, rounded_bits=self.bits)

    @classmethod
    def decoder(cls, params, etype):  # the stream is the lossless codec's
        return LosslessCodec.decoder(params, etype)
