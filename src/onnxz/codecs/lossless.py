"""Bit-exact codec: float bit planes entropy-coded, or zstd, whichever is smaller.

A float element splits into planes (SPEC.md § "lossless"): the exponent field, then the
sign bit followed by the mantissa, cut into 8-bit groups from the top (the last group may be
shorter). Other types split into bytes, most significant first. Each plane is coded by one
method: ``ans`` (order-0 model over the plane's values), ``packed`` (the raw bits),
or ``constant`` (every element the same value).

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> x = np.linspace(-1, 1, 5000, dtype=np.float32)
>>> enc = LosslessCodec().encode(x, BY_NAME["float32"], chunk_elements=4096)
>>> [c.count for c in enc.chunks]
[4096, 904]
>>> decoder = LosslessCodec.decoder(enc.params, BY_NAME["float32"])
>>> out = np.empty_like(x)
>>> decoder.decode_into(enc.chunks[0].parts, out[:4096])
>>> decoder.decode_into(enc.chunks[1].parts, out[4096:])
>>> bool((out == x).all())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from onnxz.codecs import ans
from onnxz.codecs.base import (
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    TensorCodec,
    batches,
    field,
    split_counts,
)
from onnxz.dtypes import ElementType
from onnxz.errors import CorruptDataError, FormatError
from onnxz.zstdframe import decompress_exact

ZSTD_LEVEL = 19
ZSTD_FAST_LEVEL = 9
ZSTD_FAST_ABOVE = 1 << 22  # bytes; bigger tensors get the faster level


@dataclass(frozen=True)
class PlaneLayout:
    """Where one plane's bits sit in the element: ``(word >> shift) & (2**bits - 1)``.

    The sign-and-mantissa planes of a float take ``sign << mantissa_bits | mantissa``.
    """

    bits: int
    shift: int
    from_sign_mantissa: bool


def plane_layouts(etype: ElementType) -> list[PlaneLayout]:
    """The normative plane split of an element type."""
    width_bits = 8 * etype.width
    if not etype.is_float:
        return [PlaneLayout(8, width_bits - 8 * (i + 1), False) for i in range(etype.width)]
    layouts = [PlaneLayout(etype.exponent_bits, etype.mantissa_bits, False)]
    remaining = 1 + etype.mantissa_bits
    while remaining > 0:
        bits = min(8, remaining)
        remaining -= bits
        layouts.append(PlaneLayout(bits, remaining, True))
    return layouts


def _words(values: np.ndarray, etype: ElementType) -> np.ndarray:
    return values.view(f"<u{etype.width}").astype(np.uint64)


def split_planes(values: np.ndarray, etype: ElementType) -> list[np.ndarray]:
    """The planes of ``values`` as int64 symbol arrays, in layout order."""
    words = _words(values, etype)
    sign_mantissa = None
    if etype.is_float:
        m = np.uint64(etype.mantissa_bits)
        sign = words >> np.uint64(8 * etype.width - 1)
        sign_mantissa = (sign << m) | (words & ((np.uint64(1) << m) - np.uint64(1)))
    planes = []
    for layout in plane_layouts(etype):
        source = sign_mantissa if layout.from_sign_mantissa else words
        mask = (np.uint64(1) << np.uint64(layout.bits)) - np.uint64(1)
        planes.append(((source >> np.uint64(layout.shift)) & mask).astype(np.int64))
    return planes


def join_planes(planes: Sequence[np.ndarray], etype: ElementType) -> np.ndarray:
    """Inverse of :func:`split_planes`."""
    words = np.zeros(planes[0].size, dtype=np.uint64)
    sign_mantissa = np.zeros_like(words)
    for layout, plane in zip(plane_layouts(etype), planes, strict=True):
        shifted = plane.astype(np.uint64) << np.uint64(layout.shift)
        if layout.from_sign_mantissa:
            sign_mantissa |= shifted
        else:
            words |= shifted
    if etype.is_float:
        m = np.uint64(etype.mantissa_bits)
        sign = sign_mantissa >> m
        words |= (sign << np.uint64(8 * etype.width - 1)) | (
            sign_mantissa & ((np.uint64(1) << m) - np.uint64(1))
        )
    return words.astype(f"<u{etype.width}").view(etype.numpy)


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Each symbol's low ``bits`` bits, most significant first, concatenated; zero-padded."""
    if bits == 8:
        return symbols.astype(np.uint8).tobytes()
    as_bits = np.unpackbits(symbols.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)
    return np.packbits(as_bits[:, 16 - bits :]).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (``data`` holds exactly ``ceil(count × bits / 8)`` bytes)."""
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    weights = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return (flat.reshape(count, bits).astype(np.uint64) @ weights).astype(np.int64)


@dataclass(frozen=True)
class PlaneCoding:
    """How one plane is coded: ``ans`` with a table, ``packed``, or ``constant``."""

    method: str
    table: ans.FrequencyTable | None = None
    value: int = 0

    def to_fields(self) -> dict[str, Any]:
        if self.method == "ans":
            assert self.table is not None
            return {"method": "ans", "table": self.table.to_fields()}
        if self.method == "constant":
            return {"method": "constant", "value": self.value}
        return {"method": self.method}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> PlaneCoding:
        method = field(fields, "method", str)
        if method == "ans":
            return cls("ans", table=ans.FrequencyTable.from_fields(field(fields, "table", dict)))
        if method == "constant":
            return cls("constant", value=field(fields, "value", int))
        if method == "packed":
            return cls("packed")
        raise FormatError(f"lossless codec: unknown plane method {method!r}")

    @classmethod
    def choose(cls, plane: np.ndarray, bits: int, n_chunks: int) -> tuple[PlaneCoding, float]:
        """The cheapest coding of ``plane`` and its estimated size in bytes."""
        return cls.choose_by_histogram(np.bincount(plane, minlength=1 << bits), bits, n_chunks)

    @classmethod
    def choose_by_histogram(cls, histogram: np.ndarray, bits: int, n_chunks: int
                            ) -> tuple[PlaneCoding, float]:
        """:meth:`choose` given the plane's histogram (``histogram[v]`` = count of value v)."""
        present = np.flatnonzero(histogram)
        lo, hi = int(present[0]), int(present[-1])
        if lo == hi:
            return cls("constant", value=lo), 0.0
        packed = (int(histogram.sum()) * bits + 7) / 8
        counts = histogram[lo : hi + 1]
        table = ans.FrequencyTable.fit_counts(counts, lo)
        coded = table.cost_bits(counts) / 8 + table.stored_size + 4 * n_chunks
        if coded < packed:
            return cls("ans", table=table), coded
        return cls("packed"), packed

    def encode(self, plane: np.ndarray, bits: int) -> bytes:
        if self.method == "ans":
            assert self.table is not None
            return ans.encode(plane, self.table)
        if self.method == "packed":
            return pack_bits(plane, bits)
        return b""


class PlaneReader:
    """One plane of one chunk (``count`` symbols of ``bits`` bits), read a batch at a time.

    The part's length is checked on construction, the end of an ANS stream by :meth:`finish`.
    """

    def __init__(self, coding: PlaneCoding, data: bytes, bits: int, count: int) -> None:
        self.coding, self.data, self.bits = coding, data, bits
        self.done = 0
        self.stream: ans.AnsDecoder | None = None
        if coding.method == "ans":
            assert coding.table is not None
            self.stream = ans.AnsDecoder(data, coding.table, count)
        elif coding.method == "packed" and len(data) != (count * bits + 7) // 8:
            raise CorruptDataError(f"packed plane: {len(data)} bytes for {count} x {bits} bits")
        elif coding.method == "constant" and data:
            raise CorruptDataError("constant plane: unexpected bytes")

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` symbols (every call but the last takes a multiple of 8 of them, so a
        packed plane splits on byte boundaries)."""
        start, self.done = self.done, self.done + n
        if self.stream is not None:
            symbols = self.stream.take(n)
            if symbols.min() < 0 or symbols.max() >= 1 << self.bits:
                raise FormatError(f"lossless plane: symbol outside {self.bits}-bit range")
            return symbols
        if self.coding.method == "packed":
            first, end = start * self.bits // 8, (self.done * self.bits + 7) // 8
            return unpack_bits(self.data[first:end], self.bits, n)
        return np.full(n, self.coding.value, dtype=np.int64)

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.finish()


class PlanesDecoder(ChunkDecoder):
    """Mode ``planes``: one part per plane, joined element by element."""

    def __init__(self, codings: Sequence[PlaneCoding], etype: ElementType) -> None:
        self.codings, self.etype = codings, etype
        self.layouts = plane_layouts(etype)

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != len(self.layouts):
            raise FormatError(f"lossless codec: {self.etype.name} needs {len(self.layouts)} planes")
        readers = [PlaneReader(c, bytes(data), lay.bits, out.size)
                   for c, data, lay in zip(self.codings, parts, self.layouts, strict=True)]
        for batch in batches(out.size):
            n = batch.stop - batch.start
            out[batch] = join_planes([r.take(n) for r in readers], self.etype)
        for r in readers:
            r.finish()


class ZstdDecoder(ChunkDecoder):
    """Mode ``zstd``: the chunk's elements as one zstd frame."""

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 1:
            raise FormatError("lossless zstd chunk: expected 1 part")
        raw = decompress_exact(parts[0], out.nbytes, "lossless zstd chunk")
        out.view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)


class LosslessCodec(TensorCodec):
    """Bit-exact for every element type; picks bit planes or zstd per tensor."""

    codec_id = "lossless"

    def encode(
        self, values: np.ndarray, etype: ElementType, chunk_elements: int
    ) -> EncodedTensor:
        counts = split_counts(values.size, chunk_elements)
        layouts = plane_layouts(etype)
        starts = np.cumsum([0, *counts])
        # Planes are split a chunk at a time (twice: histograms, then coding), so memory
        # holds one chunk's planes, never the whole tensor's.
        histograms = [np.zeros(1 << lay.bits, dtype=np.int64) for lay in layouts]
        for s, n in zip(starts, counts, strict=False):
            for histogram, plane, lay in zip(histograms, split_planes(values[s : s + n], etype),
                                             layouts, strict=True):
                histogram += np.bincount(plane, minlength=1 << lay.bits)
        codings = [
            PlaneCoding.choose_by_histogram(h, lay.bits, len(counts))[0]
            for h, lay in zip(histograms, layouts, strict=True)
        ]
        plane_chunks = tuple(
            Chunk(n, tuple(c.encode(p, lay.bits) for c, p, lay in zip(
                codings, split_planes(values[s : s + n], etype), layouts, strict=True)))
            for s, n in zip(starts, counts, strict=False)
        )
        level = ZSTD_LEVEL if values.nbytes <= ZSTD_FAST_ABOVE else ZSTD_FAST_LEVEL
        compressor = zstandard.ZstdCompressor(level=level)
        raw = values.astype(etype.numpy, copy=False)
        zstd_chunks = tuple(
            Chunk(n, (compressor.compress(raw[s : s + n].tobytes()),))
            for s, n in zip(starts, counts, strict=False)
        )
        planes_size = sum(len(p) for c in plane_chunks for p in c.parts)
        table_bytes = sum(c.table.stored_size for c in codings if c.table is not None)
        if sum(len(c.parts[0]) for c in zstd_chunks) <= planes_size + table_bytes:
            return EncodedTensor(self.codec_id, {"mode": "zstd"}, zstd_chunks, values)
        coded = [h for c, h in zip(codings, histograms, strict=True) if c.method == "ans"]
        return EncodedTensor(
            self.codec_id,
            {"mode": "planes", "planes": [c.to_fields() for c in codings]},
            plane_chunks,
            values,
            entropy_bits=sum(ans.entropy_bits_of_counts(h) for h in coded) if coded else None,
            table_bytes=table_bytes,
        )

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        mode = field(params, "mode", str)
        if mode == "zstd":
            return ZstdDecoder()
        if mode != "planes":
            raise FormatError(f"lossless codec: unknown mode {mode!r}")
        layouts = plane_layouts(etype)
        plane_fields = field(params, "planes", list)
        if len(plane_fields) != len(layouts):
            raise FormatError(f"lossless codec: {etype.name} needs {len(layouts)} planes")
        codings = [PlaneCoding.from_fields(f) for f in plane_fields]
        for coding, layout in zip(codings, layouts, strict=True):
            if coding.method == "constant" and not 0 <= coding.value < 1 << layout.bits:
                raise FormatError(
                    f"constant plane: value {coding.value} outside {layout.bits}-bit range")
        return PlanesDecoder(codings, etype)
