"""What every tensor codec provides, and the data that flows out of one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from onnxz.dtypes import ElementType
from onnxz.errors import FormatError


@dataclass(frozen=True)
class Chunk:
    """One independently decodable piece of a tensor: ``count`` elements in ``parts``."""

    count: int
    parts: tuple[bytes, ...]


@dataclass(frozen=True)
class EncodedTensor:
    """A codec's output: its parameters (as stored in the index) and the chunks.

    ``reconstruction`` is what a decoder will return (the input itself for a lossless
    codec). ``entropy_bits`` is the zeroth-order entropy of the entropy-coded symbols (None
    if the codec did not entropy-code any), ``table_bytes`` the bytes of frequency tables.
    ``format_minor`` is the lowest 1.x minor version that defines everything this encoding
    uses (SPEC.md §3); the writer declares the largest over all tensors. ``rounded_bits`` is
    the mantissa bits the values were rounded to before a lossless codec coded them (None:
    not rounded; informative, recorded in the index).
    """

    codec_id: str
    params: dict[str, Any]
    chunks: tuple[Chunk, ...]
    reconstruction: np.ndarray
    entropy_bits: float | None = None
    table_bytes: int = 0
    format_minor: int = 0
    rounded_bits: int | None = None

    @property
    def coded_bytes(self) -> int:
        return sum(len(p) for c in self.chunks for p in c.parts)


class ChunkDecoder(ABC):
    """Decodes the chunks of one tensor, its parameters already validated."""

    @abstractmethod
    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        """Decode one chunk into ``out``: its ``count`` elements, of dtype ``etype.numpy``.

        Works :data:`BATCH` elements at a time, so the memory a chunk needs beyond ``out``
        is bounded whatever ``count`` it declares.
        """


class TensorCodec(ABC):
    """Turns the flat little-endian elements of one tensor into chunks, and back.

    Encoding settings live on the instance; decoding needs only the stored ``params``.
    """

    codec_id: ClassVar[str]

    @abstractmethod
    def encode(
        self, values: np.ndarray, etype: ElementType, chunk_elements: int
    ) -> EncodedTensor:
        """Encode a flat array of dtype ``etype.numpy``."""

    @classmethod
    @abstractmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        """The decoder of a tensor's chunks; :class:`FormatError` if ``params`` are invalid."""


class QuantizedTensor(ABC):
    """A tensor through a lossy codec's quantizer, before entropy coding: what rate control
    prices (:meth:`estimated_bytes`) and what a decoder will return (:meth:`reconstruction`)."""

    @abstractmethod
    def estimated_bytes(self) -> float:
        """Coded bytes of the tensor's chunks and tables, without running the coder."""

    @abstractmethod
    def reconstruction(self, etype: ElementType) -> np.ndarray:
        """The decoded values, of dtype ``etype.numpy``, flat."""


class LossyCodec(TensorCodec):
    """A codec that approximates: :meth:`quantize` first, then entropy coding.

    ``encode(values)`` is ``encode_quantized(quantize(values))``; rate control calls
    :meth:`quantize` alone to price many settings and encodes only the chosen one.
    """

    @abstractmethod
    def quantize(self, values: np.ndarray, etype: ElementType,
                 spread: float | None = None) -> QuantizedTensor:
        """Quantize a flat array of dtype ``etype.numpy``. ``spread`` is the tensor's robust
        spread if the caller already knows it (it is computed otherwise); raises
        :class:`onnxz.codecs.NotQuantizable` if the tensor cannot be quantized."""

    @abstractmethod
    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        """Entropy-code what :meth:`quantize` returned."""

    def encode(self, values: np.ndarray, etype: ElementType,
               chunk_elements: int) -> EncodedTensor:
        return self.encode_quantized(self.quantize(values, etype), etype, chunk_elements)


BATCH = 1 << 16
"""Elements a decoder works on at a time (a multiple of 8: packed planes split on bytes)."""


def batches(count: int, size: int = BATCH) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` elements covering ``range(count)``."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def split_counts(total: int, chunk_elements: int) -> list[int]:
    """Element counts of the chunks of a ``total``-element tensor (the last may be short)."""
    if total == 0:
        return []
    full, rest = divmod(total, chunk_elements)
    return [chunk_elements] * full + ([rest] if rest else [])


def field(params: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """``params[key]`` checked to be of ``kind``; a :class:`FormatError` otherwise.

    A bool is never an int here (SPEC.md §1), and ``params`` must be a map.
    """
    if type(params) is not dict and not isinstance(params, Mapping):  # dict: the fast, usual case
        raise FormatError(f"codec parameters: expected a map, got {type(params).__name__}")
    value = params.get(key)
    if type(value) is kind:  # the usual case, decided at once
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise FormatError(f"codec parameter {key!r}: expected {kind}, got {type(value).__name__}")
    return value
