"""ONNX element types as onnxz sees them: storage width and, for floats, the bit layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto


@dataclass(frozen=True)
class ElementType:
    """How one ONNX element type is stored: little-endian words of ``width`` bytes.

    ``exponent_bits``/``mantissa_bits`` are set for IEEE-style floats (sign bit on top);
    ``numpy`` is the numpy dtype with the same bytes (bfloat16 and float8 use unsigned ints).
    """

    onnx_type: int
    name: str
    width: int
    numpy: np.dtype
    exponent_bits: int = 0
    mantissa_bits: int = 0

    def __hash__(self) -> int:
        """The ONNX type number (one per element type): the caches keyed by element type
        look it up without hashing every field."""
        return self.onnx_type

    @property
    def is_float(self) -> bool:
        return self.exponent_bits > 0

    @property
    def is_quantizable(self) -> bool:
        """Float types the dead-zone quantizer can reconstruct into."""
        return self.name in ("float32", "float16", "bfloat16", "float64")


_TYPES = (
    ElementType(TensorProto.FLOAT, "float32", 4, np.dtype("<f4"), 8, 23),
    ElementType(TensorProto.FLOAT16, "float16", 2, np.dtype("<f2"), 5, 10),
    ElementType(TensorProto.BFLOAT16, "bfloat16", 2, np.dtype("<u2"), 8, 7),
    ElementType(TensorProto.DOUBLE, "float64", 8, np.dtype("<f8"), 11, 52),
    ElementType(TensorProto.INT8, "int8", 1, np.dtype("i1")),
    ElementType(TensorProto.UINT8, "uint8", 1, np.dtype("u1")),
    ElementType(TensorProto.INT16, "int16", 2, np.dtype("<i2")),
    ElementType(TensorProto.UINT16, "uint16", 2, np.dtype("<u2")),
    ElementType(TensorProto.INT32, "int32", 4, np.dtype("<i4")),
    ElementType(TensorProto.UINT32, "uint32", 4, np.dtype("<u4")),
    ElementType(TensorProto.INT64, "int64", 8, np.dtype("<i8")),
    ElementType(TensorProto.UINT64, "uint64", 8, np.dtype("<u8")),
    ElementType(TensorProto.BOOL, "bool", 1, np.dtype("u1")),
    ElementType(TensorProto.FLOAT8E4M3FN, "float8e4m3fn", 1, np.dtype("u1")),
    ElementType(TensorProto.FLOAT8E4M3FNUZ, "float8e4m3fnuz", 1, np.dtype("u1")),
    ElementType(TensorProto.FLOAT8E5M2, "float8e5m2", 1, np.dtype("u1")),
    ElementType(TensorProto.FLOAT8E5M2FNUZ, "float8e5m2fnuz", 1, np.dtype("u1")),
)

BY_ONNX_TYPE: dict[int, ElementType] = {t.onnx_type: t for t in _TYPES}
BY_NAME: dict[str, ElementType] = {t.name: t for t in _TYPES}


def element_type(onnx_type: int) -> ElementType | None:
    """The :class:`ElementType` of an ONNX ``TensorProto.DataType``, or None if not handled."""
    return BY_ONNX_TYPE.get(onnx_type)
