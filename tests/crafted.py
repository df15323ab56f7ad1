"""Encodings the onnxz writer never chooses by itself, for conformance vectors and tests.

Each codec here is a :class:`onnxz.codecs.TensorCodec` built from the library's own pieces
(frequency tables, ANS, varints, plane split, dead-zone reconstruction) with one choice taken
out of the writer's hands: the dead-zone symbols and step, the plane methods and table
precision, the zstd frames, the chunk sizes (zero-element chunks included). Packing with
:class:`CraftedOptions` then goes through the normal writer, which checksums the codec's
reconstruction; ``tools/make_vectors.py`` decodes every such file with onnxz and with the
independent reference decoder before it publishes it.

Example: the dead-zone symbols −32 … 31 at step 0.5 for the tensor named ``w``::

    options = CraftedOptions(crafted=(("w", ExplicitDeadzone(np.arange(64) - 32, 0.5)),))
    onnxz.save(model, path, options=options)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from onnxz import PackOptions
from onnxz.codecs import ans
from onnxz.codecs.base import Chunk, EncodedTensor, TensorCodec, split_counts
from onnxz.codecs.deadzone import DeadzoneCodec, dequantize, from_float64
from onnxz.codecs.lossless import (
    MAGNITUDE_MINOR,
    PALETTE_MINOR,
    LosslessCodec,
    PlaneCoding,
    magnitude_layouts,
    palette_layout,
    plane_layouts,
    split_planes,
)
from onnxz.codecs.varint import encode_uvarints, zigzag_encode
from onnxz.dtypes import ElementType
from onnxz.walker import TensorSlot


@dataclass(frozen=True)
class CraftedOptions(PackOptions):
    """Pack options whose codec for the tensors named in ``crafted`` is the one given."""

    crafted: tuple[tuple[str, TensorCodec], ...] = ()

    @property
    def uniform(self) -> bool:
        return True  # the codecs are given: no rate control

    def codec_for(self, slot: TensorSlot, etype: ElementType, count: int) -> TensorCodec:
        for name, codec in self.crafted:
            if slot.tensor.name == name:
                return codec
        return super().codec_for(slot, etype, count)


def table_for(symbols: np.ndarray, offset: int, size: int,
              precision: int | None = None) -> ans.FrequencyTable:
    """A table over ``offset … offset + size − 1`` fitted to ``symbols``: the writer's
    precision, or the one given (frequencies ≥ 1 even for values that never occur)."""
    counts = np.bincount(symbols - offset, minlength=size)
    if precision is None:
        return ans.FrequencyTable.fit_counts(counts, offset)
    return ans.FrequencyTable(offset, precision, ans._quantize_counts(counts, precision))


def chunk_slices(counts: Sequence[int]) -> list[slice]:
    starts = np.cumsum([0, *counts])
    return [slice(int(s), int(s) + n) for s, n in zip(starts, counts, strict=False)]


class ExplicitDeadzone(DeadzoneCodec):
    """The dead-zone codec with the symbols ``q`` (one per element), ``step`` and
    ``deadzone`` given: stored as given (an int stays a msgpack int). Symbols outside
    ``coded`` = (lo, hi) are escaped; ``precision`` fixes the table's; ``counts`` the chunks'
    element counts; ``edit`` rewrites each chunk's (symbols, escapes) parts, to damage them
    past the chunk CRC (which the writer computes on what it writes)."""

    def __init__(self, q: Sequence[int] | np.ndarray, step: float | int,
                 deadzone: float | int = 0.5, coded: tuple[int, int] | None = None,
                 precision: int | None = None, counts: Sequence[int] | None = None,
                 edit: Callable[[bytes, bytes], tuple[bytes, bytes]] | None = None) -> None:
        self.q = np.asarray(q, dtype=np.int64)
        self.step, self.deadzone = step, deadzone
        self.coded, self.precision, self.counts = coded, precision, counts
        self.edit = edit or (lambda symbols, escapes: (symbols, escapes))

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        q = self.q
        assert q.size == values.size, "one symbol per element"
        lo, hi = self.coded or (int(q.min()), int(q.max()))
        outside = (q < lo) | (q > hi)
        escape = bool(outside.any())
        symbols = np.where(outside, hi + 1, q)
        table = table_for(symbols, lo, hi - lo + 1 + escape, self.precision)
        chunks = tuple(
            Chunk(part.stop - part.start,
                  self.edit(ans.encode(symbols[part], table),
                            encode_uvarints(zigzag_encode(q[part][outside[part]]))))
            for part in chunk_slices(self.counts or split_counts(q.size, chunk_elements)))
        params = {"step": self.step, "deadzone": self.deadzone, "reconstruction": "midpoint",
                  "escape": escape, "table": table.to_fields()}
        reconstruction = from_float64(dequantize(q, float(self.step), float(self.deadzone)),
                                      etype)
        return EncodedTensor(self.codec_id, params, chunks, reconstruction,
                             table_bytes=table.stored_size)


class ForcedPlanes(LosslessCodec):
    """Lossless ``planes`` mode (or ``magnitude``, format 1.7, if ``mode`` says so) with plane
    p coded by ``methods[p]`` (``ans``, ``packed``, ``zstd`` or ``constant``) instead of the
    cheapest; ``ans`` tables at ``precision`` if given, over ``table_ranges[p]`` =
    (offset, size) if given; chunks of ``counts`` elements; ``edit`` rewrites the planes'
    symbols before they are coded (for invalid vectors)."""

    def __init__(self, methods: Sequence[str], precision: int | None = None,
                 table_ranges: dict[int, tuple[int, int]] | None = None,
                 counts: Sequence[int] | None = None, mode: str = "planes",
                 edit: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None) -> None:
        self.methods, self.precision = tuple(methods), precision
        self.table_ranges, self.counts = dict(table_ranges or {}), counts
        self.mode, self.edit = mode, edit

    def _coding(self, p: int, plane: np.ndarray) -> PlaneCoding:
        method = self.methods[p]
        if method == "constant":
            assert (plane == plane[0]).all()
            return PlaneCoding("constant", value=int(plane[0]))
        if method == "ans":
            offset, size = self.table_ranges.get(
                p, (int(plane.min()), max(int(plane.max() - plane.min()) + 1, 2)))
            return PlaneCoding("ans", table=table_for(plane, offset, size, self.precision))
        return PlaneCoding(method)

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        layouts = magnitude_layouts(etype) if self.mode == "magnitude" else plane_layouts(etype)
        planes = split_planes(values, etype, layouts)
        if self.edit is not None:
            planes = self.edit(planes)
        codings = [self._coding(p, plane) for p, plane in enumerate(planes)]
        chunks = tuple(
            Chunk(part.stop - part.start,
                  tuple(c.encode(plane[part], lay.bits)
                        for c, plane, lay in zip(codings, planes, layouts, strict=True)))
            for part in chunk_slices(self.counts or split_counts(values.size, chunk_elements)))
        return EncodedTensor(
            self.codec_id, {"mode": self.mode, "planes": [c.to_fields() for c in codings]},
            chunks, values,
            table_bytes=sum(c.table.stored_size for c in codings if c.table is not None),
            format_minor=MAGNITUDE_MINOR if self.mode == "magnitude" else 0)


class ForcedPalette(LosslessCodec):
    """Lossless ``palette`` mode (format 1.5) whatever its size, the index plane coded by
    ``method`` (``ans``, ``packed``, ``constant`` or ``zstd``). The table is the tensor's
    distinct element words ascending, or ``table`` (words in any order, repeats and unused
    values allowed; each element takes the first position holding its word); ``edit``
    rewrites the index symbols before they are coded (for invalid vectors); chunks of
    ``counts`` elements."""

    def __init__(self, method: str, table: Sequence[int] | None = None,
                 counts: Sequence[int] | None = None,
                 edit: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.method, self.table, self.counts, self.edit = method, table, counts, edit

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        word = np.dtype(f"<u{etype.width}")
        words = values.reshape(-1).view(word)
        table = (np.unique(words) if self.table is None
                 else np.array(self.table, dtype=np.uint64).astype(word))
        first = {int(w): i for i, w in reversed(list(enumerate(table.tolist())))}
        index = np.array([first[int(w)] for w in words.tolist()], dtype=np.int64)
        if self.edit is not None:
            index = self.edit(index)
        layout = palette_layout(table.size)
        index = index.astype(layout.numpy)
        if self.method == "constant":
            coding = PlaneCoding("constant", value=int(index[0]))
        elif self.method == "ans":
            lo = int(index.min())
            coding = PlaneCoding("ans", table=table_for(
                index.astype(np.int64), lo, max(int(index.max()) - lo + 1, 2)))
        else:
            coding = PlaneCoding(self.method)
        chunks = tuple(Chunk(part.stop - part.start, (coding.encode(index[part], layout.bits),))
                       for part in chunk_slices(
                           self.counts or split_counts(values.size, chunk_elements)))
        return EncodedTensor(
            self.codec_id,
            {"mode": "palette", "values": table.tobytes(), "index": coding.to_fields()},
            chunks, values, format_minor=PALETTE_MINOR,
            table_bytes=table.nbytes + (coding.table.stored_size if coding.table else 0))


class ZstdFrames(LosslessCodec):
    """Lossless ``zstd`` mode with each chunk's part made by ``frame`` from the chunk's bytes
    (a frame without content size, or a deliberately bad part); chunks of ``counts``."""

    def __init__(self, frame: Callable[[bytes], bytes], counts: Sequence[int] | None = None
                 ) -> None:
        self.frame, self.counts = frame, counts

    def encode(self, values: np.ndarray, etype: ElementType, chunk_elements: int
               ) -> EncodedTensor:
        raw = values.astype(etype.numpy, copy=False)
        chunks = tuple(
            Chunk(part.stop - part.start, (self.frame(raw[part].tobytes()),))
            for part in chunk_slices(self.counts or split_counts(values.size, chunk_elements)))
        return EncodedTensor(self.codec_id, {"mode": "zstd"}, chunks, values)


def streamed_frame(data: bytes, block: int = 64, window_log: int | None = None) -> bytes:
    """A zstd frame as a streaming writer makes it: no content size in the header (a
    Window_Descriptor instead), a new block every ``block`` bytes of content."""
    params = zstandard.ZstdCompressionParameters.from_level(
        19, write_checksum=1, **({"window_log": window_log} if window_log else {}))
    writer = zstandard.ZstdCompressor(compression_params=params).compressobj()
    pieces = [writer.compress(data[i:i + block]) + writer.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
              for i in range(0, len(data), block)]
    return b"".join(pieces) + writer.flush()


def skippable_frame(content: bytes = b"onnxz") -> bytes:
    """A zstd skippable frame (magic 0x184D2A50): not a zstd frame for onnxz (SPEC.md §1)."""
    return b"\x50\x2a\x4d\x18" + len(content).to_bytes(4, "little") + content
