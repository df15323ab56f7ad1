"""Lossy codec: μ-law companding, a uniform quantizer in the companded domain, ANS-coded.

A weight x of a tensor with range X (its largest magnitude, or a fixed range with clipping)
is companded to y = ln(1 + μ|x|/X) / ln(1 + μ) in [0, 1] and quantized uniformly with L
levels per sign: ``midrise`` cells ((j−1)/L, j/L] reconstructed at y = (j − ½)/L (2L levels,
no zero), ``midtread`` y = j/L (2L + 1 levels, zero included). The inverse,
x̂ = (X/μ)·((1 + μ)^y − 1), is computed by the decoder with multiplications only (SPEC.md
§13): x̂ = scale·(g^n − 1), g = (1 + μ)^(1/(2L)) and n = 2j − 1 (midrise) or 2j (midtread),
g^n a left-to-right product, so that every decoder gets the same bits.

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> codec = MulawCodec(mu=255.0, bits=4, grid="midtread")
>>> x = np.array([0.0, 0.01, -0.2, 1.0])
>>> codec.symbols(x, x_max=1.0).tolist()
[0, 2, -6, 8]
>>> enc = codec.encode(x, BY_NAME["float64"], chunk_elements=1024)
>>> enc.reconstruction.round(4).tolist()
[0.0, 0.0118, -0.2471, 1.0]
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

GRIDS = ("midrise", "midtread")
MAX_BITS = 16
"""At most 2**16 levels: the symbols ±L then fit one frequency table (SPEC.md §8.1)."""


def power_table(base: float, count: int) -> np.ndarray:
    """P_0 … P_{count−1}: P_0 = 1, P_k = P_{k−1} × base, each product rounded in binary64.

    ``np.multiply.accumulate`` multiplies left to right, one rounding per element, as
    SPEC.md §13.3 prescribes (checked against a Python loop by the tests).
    """
    factors = np.full(count, base, dtype=np.float64)
    factors[0] = 1.0
    with np.errstate(over="ignore"):
        return np.multiply.accumulate(factors)


def reconstruct(q: np.ndarray, scale: float, powers: np.ndarray, grid: str) -> np.ndarray:
    """Binary64 values of symbols ``q`` (SPEC.md §13.3); q = 0 gives +0.

    ``powers`` is :func:`power_table` of the base, long enough for n = 2·max|q|.
    """
    n = 2 * np.abs(q) - (grid == "midrise")
    with np.errstate(over="ignore", invalid="ignore"):
        mag = scale * (powers[np.maximum(n, 0)] - 1.0)
    return np.where(q == 0, 0.0, np.where(q < 0, -mag, mag))


class MulawCodec(TensorCodec):
    """μ-law compander with 2**``bits`` levels (midrise; 2**bits + 1 midtread), ANS-coded.

    The range X is each tensor's largest magnitude; with ``x_max`` given it is that fixed
    value for every tensor and larger magnitudes are clipped (the research's global range).
    """

    codec_id = "mulaw"

    def __init__(self, mu: float = 255.0, bits: int = 8, grid: str = "midrise",
                 x_max: float | None = None) -> None:
        if not (mu > 0 and math.isfinite(mu)):
            raise ValueError(f"mu must be a positive number, got {mu}")
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
        if x_max is not None and not (x_max > 0 and math.isfinite(x_max)):
            raise ValueError(f"x_max must be a positive number, got {x_max}")
        self.mu, self.bits, self.grid, self.x_max = float(mu), int(bits), grid, x_max

    @property
    def levels(self) -> int:
        """L: quantization levels per sign."""
        return 1 << (self.bits - 1)

    @property
    def base(self) -> float:
        """g = (1 + μ)^(1/(2L)), the ratio of successive half-level powers."""
        return math.exp(math.log1p(self.mu) / (2 * self.levels))

    def symbols(self, x: np.ndarray, x_max: float) -> np.ndarray:
        """Integer symbols ±j of binary64 values ``x`` for range ``x_max`` (clipped)."""
        y = np.log1p(self.mu * np.minimum(np.abs(x) / x_max, 1.0)) / math.log1p(self.mu)
        if self.grid == "midrise":
            j = np.clip(np.floor(y * self.levels) + 1, 1, self.levels)
            return np.where(x < 0, -j, j).astype(np.int64)
        j = np.rint(y * self.levels)
        return (np.sign(x) * j).astype(np.int64)

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        x = to_float64(values, etype)
        if not np.isfinite(x).all():
            raise NotQuantizable("has non-finite values")
        x_max = self.x_max if self.x_max is not None else float(np.abs(x).max(initial=0))
        if not x_max > 0:
            raise NotQuantizable("is all zeros")
        q = self.symbols(x, x_max)
        scale, base = x_max / self.mu, self.base
        powers = power_table(base, 2 * self.levels + 1)
        params = {"scale": scale, "base": base, "grid": self.grid,
                  "mu": self.mu, "x_max": x_max, "levels": self.levels}
        return encode_symbols(self.codec_id, params, q,
                              reconstruct(q, scale, powers, self.grid), etype, chunk_elements)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        scale = float(field(params, "scale", (float, int)))
        base = float(field(params, "base", (float, int)))
        if not (math.isfinite(scale) and scale > 0 and math.isfinite(base) and base > 1):
            raise FormatError(f"mulaw codec: invalid scale {scale} or base {base}")
        grid = field(params, "grid", str)
        if grid not in GRIDS:
            raise FormatError(f"mulaw codec: unknown grid {grid!r}")
        if not etype.is_quantizable:
            raise FormatError(f"mulaw codec: cannot reconstruct into {etype.name}")
        table = ans.FrequencyTable.from_fields(field(params, "table", dict))
        lo, hi = symbol_bounds(table)
        if max(-lo, hi) > 1 << MAX_BITS:
            raise FormatError(f"mulaw codec: symbols {lo}..{hi} beyond ±2**{MAX_BITS}")
        powers = power_table(base, 2 * max(-lo, hi) + 1)
        return SymbolDecoder(cls.codec_id, table,
                             lambda q: reconstruct(q, scale, powers, grid), etype)
