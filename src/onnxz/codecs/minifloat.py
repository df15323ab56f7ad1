"""Lossy codec: low-bit floats (sign, p exponent bits, q mantissa bits), ANS-coded.

Every weight is rounded to the nearest number of a small float format with exponent bias b:
code m = e·2^q + f (0 ≤ m < 2^(p+q)) stands for f·2^(1−b−q) when e = 0 (subnormal) and
(2^q + f)·2^(e−b−q) otherwise; every code is finite (no infinities or NaNs), larger codes
are larger magnitudes. The symbol is ±m (the sign of the weight), ANS-coded (SPEC.md §14).
The bias is per tensor, so that the format's largest exponent is the one of the tensor's
largest magnitude; or, for the research's global range, b = 2^p − 1 (largest value just
under 2) with weights clipped to [−1, 1].

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> codec = MinifloatCodec(exponent_bits=2, mantissa_bits=1)      # 4-bit E2M1
>>> x = np.array([0.0, 0.3, -1.0, 5.0, 6.0])
>>> codec.bias_for(x)
1
>>> codec.symbols(x, bias=1).tolist()
[0, 1, -2, 6, 7]
>>> enc = codec.encode(x, BY_NAME["float32"], chunk_elements=1024)
>>> enc.reconstruction.tolist()
[0.0, 0.5, -1.0, 4.0, 6.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import ChunkDecoder, EncodedTensor, TensorCodec, field
from onnxz.codecs.deadzone import NotQuantizable, to_float64
from onnxz.codecs.symbols import SymbolDecoder, encode_symbols, symbol_bounds
from onnxz.dtypes import ElementType
from onnxz.errors import FormatError

LAYOUTS: dict[int, tuple[int, int]] = {
    16: (5, 10),  # IEEE half's layout (its top exponent holds finite values here)
    12: (5, 6),
    10: (5, 4),
    8: (4, 3),
    7: (4, 2),
    6: (3, 2),
    5: (3, 1),
    4: (2, 1),
}
"""Total width in bits (sign included) -> (exponent bits, mantissa bits) of ``--bits``."""

MAX_CODE_BITS = 15
"""p + q ≤ 15: the symbols ±(2^(p+q) − 1) then fit one frequency table (SPEC.md §8.1)."""


def check_layout(exponent_bits: int, mantissa_bits: int, bias: int) -> str | None:
    """Why (p, q, b) is not a valid format (SPEC.md §14.1), or None if it is."""
    if not (exponent_bits >= 1 and mantissa_bits >= 0
            and exponent_bits + mantissa_bits <= MAX_CODE_BITS):
        return f"exponent/mantissa bits {exponent_bits}/{mantissa_bits} out of range"
    if not (bias <= 1075 - mantissa_bits and (1 << exponent_bits) - bias <= 1024):
        return f"bias {bias} puts values outside binary64"
    return None


def reconstruct(s: np.ndarray, mantissa_bits: int, bias: int) -> np.ndarray:
    """Binary64 values of symbols ``s`` (exact: SPEC.md §14.3); s = 0 gives +0."""
    m = np.abs(s)
    e = m >> mantissa_bits
    f = m & ((1 << mantissa_bits) - 1)
    significand = np.where(e == 0, f, f + (1 << mantissa_bits)).astype(np.float64)
    exponent = np.maximum(e, 1) - bias - mantissa_bits
    mag = np.ldexp(significand, exponent.astype(np.int32))
    return np.where(s < 0, -mag, mag)


class MinifloatCodec(TensorCodec):
    """Rounds weights to a float format of 1 + p + q bits, then ANS-codes the codes.

    ``global_range``: one bias for every tensor (b = 2^p − 1) and weights clipped to
    [−1, 1], as in the research; otherwise the bias follows each tensor's largest magnitude.
    """

    codec_id = "minifloat"

    def __init__(self, exponent_bits: int = 4, mantissa_bits: int = 3,
                 global_range: bool = False) -> None:
        problem = check_layout(exponent_bits, mantissa_bits, 0)
        if problem:
            raise ValueError(problem)
        self.exponent_bits, self.mantissa_bits = int(exponent_bits), int(mantissa_bits)
        self.global_range = global_range

    @classmethod
    def of_width(cls, bits: int, global_range: bool = False) -> MinifloatCodec:
        """The codec of one of the standard widths of :data:`LAYOUTS`."""
        if bits not in LAYOUTS:
            raise ValueError(f"no minifloat layout of {bits} bits (have: "
                             f"{', '.join(map(str, sorted(LAYOUTS)))})")
        return cls(*LAYOUTS[bits], global_range=global_range)

    @property
    def max_code(self) -> int:
        return (1 << (self.exponent_bits + self.mantissa_bits)) - 1

    def bias_for(self, x: np.ndarray) -> int:
        """The bias whose top exponent 2^p − 1 is the exponent of max|x| (or 1 for 0)."""
        if self.global_range:
            return (1 << self.exponent_bits) - 1
        top = float(np.abs(x).max(initial=0))
        exponent = math.frexp(top)[1] - 1 if top > 0 else 0  # 2**exponent <= top
        return (1 << self.exponent_bits) - 1 - exponent

    def symbols(self, x: np.ndarray, bias: int) -> np.ndarray:
        """±codes of binary64 ``x``: round to nearest (ties to even), saturate at the top."""
        q = self.mantissa_bits
        a = np.abs(x)
        exponent = np.where(a > 0, np.frexp(a)[1] - 1, 1 - bias)  # floor(log2 a)
        k = np.maximum(exponent, 1 - bias)  # exponent of the binade (subnormals: 1 − b)
        n = np.rint(np.ldexp(a, (q - k).astype(np.int32)))  # a in units of 2^(k − q)
        m = np.minimum((k + bias - 1).astype(np.int64) * (1 << q) + n.astype(np.int64),
                       self.max_code)
        return np.where(x < 0, -m, m)

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        x = to_float64(values, etype)
        if not np.isfinite(x).all():
            raise NotQuantizable("has non-finite values")
        if self.global_range:
            x = np.clip(x, -1.0, 1.0)
        bias = self.bias_for(x)
        if check_layout(self.exponent_bits, self.mantissa_bits, bias):
            raise NotQuantizable("has magnitudes beyond the float formats' reach")
        s = self.symbols(x, bias)
        params = {"exponent_bits": self.exponent_bits, "mantissa_bits": self.mantissa_bits,
                  "bias": bias}
        values_hat = reconstruct(s, self.mantissa_bits, bias)
        return encode_symbols(self.codec_id, params, s, values_hat, etype, chunk_elements)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        p = field(params, "exponent_bits", int)
        q = field(params, "mantissa_bits", int)
        bias = field(params, "bias", int)
        problem = check_layout(p, q, bias)
        if problem:
            raise FormatError(f"minifloat codec: {problem}")
        if not etype.is_quantizable:
            raise FormatError(f"minifloat codec: cannot reconstruct into {etype.name}")
        table = ans.FrequencyTable.from_fields(field(params, "table", dict))
        lo, hi = symbol_bounds(table)
        limit = (1 << (p + q)) - 1
        if max(-lo, hi) > limit:
            raise FormatError(f"minifloat codec: symbols {lo}..{hi} beyond ±{limit}")
        return SymbolDecoder(cls.codec_id, table, lambda s: reconstruct(s, q, bias), etype)
