"""Random access to an onnxz file: list its tensors, decode one by name, or all in order.

>>> import onnxz
>>> with onnxz.open("model.onnxz") as reader:                        # doctest: +SKIP
...     [(t.name, t.shape, t.codec) for t in reader.tensors][:2]
...     w = reader.tensor("encoder.layer.0.weight")    # numpy array, only its chunks read

Every decoded tensor is checked against its CRC-32 (and every chunk against its own) before
it is returned. Decoding many chunks uses worker processes (:mod:`onnxz.parallel`).
"""

from __future__ import annotations

import functools
import os
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from onnxz.container import ContainerReader, ReadLimits, TensorEntry
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError, LimitExceededError, TensorNotFoundError
from onnxz.fileio import check_input
from onnxz.parallel import DecodeJob, WorkerPool, check_workers, decode_chunks
from onnxz.report import ContainerInfo, TensorInfo
from onnxz.walker import element_count, has_payload, iter_tensors, payload_type, resolve

TASK_ELEMENTS = 1 << 20
"""Elements per unit of work sent to a worker (small tensors are grouped up to this)."""

PARALLEL_MIN_ELEMENTS = 1 << 22
"""Below this many elements to decode, workers are not started (they would cost more
time to start than they save)."""


class Reader:
    """An open onnxz file. Use as a context manager, or call :meth:`close`.

    ``tensors`` lists every stored tensor's metadata (:class:`onnxz.TensorInfo`: name,
    dtype, shape, codec, step, sizes) without decoding anything; :meth:`tensor` decodes one
    by name, reading only that tensor's chunks. ``workers`` processes decode large requests
    (None: the available cores).
    """

    def __init__(self, path: str | os.PathLike, *, limits: ReadLimits | None = None,
                 workers: int | None = None) -> None:
        self.workers = check_workers(workers)
        self.path = check_input(path)
        self._container = ContainerReader(self.path, limits)
        self.entries: tuple[TensorEntry, ...] = self._container.index.tensors
        for entry in self.entries:
            if entry.dtype not in BY_NAME:
                self.close()
                raise FormatError(f"tensor {entry.name!r}: unknown dtype {entry.dtype!r}")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @functools.cached_property
    def info(self) -> ContainerInfo:
        """What :func:`onnxz.info` reports on this file."""
        return ContainerInfo.from_index(str(self.path), self._container.file_size,
                                        self._container.index)

    @property
    def graph_raw_bytes(self) -> int:
        """Size of the serialized graph (the ModelProto without the stored payloads)."""
        return self._container.index.graph.raw_length

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        """Metadata of every stored tensor, in file order."""
        return self.info.tensors

    @property
    def limits(self) -> ReadLimits:
        return self._container.limits

    def entry(self, name: str) -> TensorEntry:
        """The index entry of the one stored tensor called ``name``."""
        found = [e for e in self.entries if e.name == name]
        if len(found) != 1:
            what = "no stored tensor" if not found else f"{len(found)} stored tensors"
            raise TensorNotFoundError(f"{self.path}: {what} named {name!r}")
        return found[0]

    def tensor(self, name: str) -> np.ndarray:
        """The decoded tensor ``name`` with its shape; only its own chunks are read.

        The array's dtype is the element type's numpy type (bfloat16 as its uint16 bit
        patterns, float8 types as uint8).
        """
        entry = self.entry(name)
        self._check_budget([entry])
        ((_, values),) = self.decode([entry])
        return values.reshape(entry.shape)

    def graph(self) -> onnx.ModelProto:
        """The stored ModelProto, the payloads of the stored tensors still empty."""
        try:
            return onnx.ModelProto.FromString(self._container.graph_bytes())
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise FormatError(f"graph: not a valid ONNX ModelProto ({exc})") from exc

    def slots(self, model: onnx.ModelProto) -> list[onnx.TensorProto]:
        """The TensorProto of each entry in ``model`` (the :meth:`graph`), checked against the
        index, and the check that no other tensor lost its payload (SPEC.md §5.2)."""
        slots = []
        for entry in self.entries:
            tensor = resolve(model, entry.path)
            if (tensor.name, tensor.data_type, tuple(tensor.dims)) != (
                entry.name, BY_NAME[entry.dtype].onnx_type, entry.shape
            ):
                raise FormatError(f"tensor {entry.name!r}: index does not match the graph")
            if payload_type(tensor) is None or has_payload(tensor):
                raise FormatError(f"tensor {entry.name!r}: graph slot already holds data")
            slots.append(tensor)
        stored = {tuple(e.path) for e in self.entries}
        for tensor_path, tensor in iter_tensors(model):
            if (payload_type(tensor) and element_count(tensor) and not has_payload(tensor)
                    and tuple(tensor_path) not in stored):
                raise FormatError(f"graph: tensor {tensor.name!r} at {list(tensor_path)} has "
                                  "no data and no index entry (SPEC.md §5.2)")
        return slots

    def check_output_budget(self) -> None:
        """:class:`LimitExceededError` if decoding every tensor would pass the limits."""
        self._check_budget(self.entries)

    def _check_budget(self, entries: Sequence[TensorEntry]) -> None:
        total = sum(e.element_count * BY_NAME[e.dtype].width for e in entries)
        budget = self.limits.output_budget(self._container.file_size)
        if total > budget:
            raise LimitExceededError(
                f"tensors: decoded size {total} bytes would exceed the limit of {budget} bytes "
                "(raise it with --max-output-size or ReadLimits.max_output_size)")

    def decode(self, entries: Iterable[TensorEntry] | None = None
               ) -> Iterator[tuple[TensorEntry, np.ndarray]]:
        """Each entry (default: all) with its decoded, CRC-checked flat values, in order.

        Chunks are read lazily and decoded by the worker processes, a bounded number at a
        time, so memory holds about one tensor plus the chunks in flight.
        """
        entries = list(self.entries if entries is None else entries)
        total = sum(e.element_count for e in entries)
        workers = self.workers if total >= PARALLEL_MIN_ELEMENTS else 1
        owners: deque[list[int]] = deque()
        with WorkerPool(workers) as pool:
            current, buffer, filled = -1, np.empty(0), 0
            for arrays in pool.map(decode_chunks, self._tasks(entries, owners, workers > 1)):
                for index, part in zip(owners.popleft(), arrays, strict=True):
                    entry = entries[index]
                    if part.size == entry.element_count:  # one job, CRC checked by it
                        yield entry, part
                        continue
                    if index != current:
                        current, filled = index, 0
                        buffer = np.empty(entry.element_count, dtype=part.dtype)
                    buffer[filled : filled + part.size] = part
                    filled += part.size
                    if filled == entry.element_count:
                        yield entry, _checked(entry, buffer)

    def _tasks(self, entries: list[TensorEntry], owners: deque[list[int]], split: bool
               ) -> Iterator[tuple[DecodeJob, ...]]:
        """Jobs grouped into tasks of about TASK_ELEMENTS elements (a tensor is cut into
        several jobs only if ``split``); ``owners`` gets, per task, the entry index of each
        of its jobs."""
        jobs: list[DecodeJob] = []
        indices: list[int] = []
        size = 0
        for index, entry in enumerate(entries):
            groups = (_chunk_groups(entry) if split else [entry.chunks]) or [()]  # () if empty
            for group in groups:
                jobs.append(DecodeJob(
                    entry.name, entry.codec, entry.params, entry.dtype,
                    tuple((self._container.chunk_bytes(c, entry.name), c.sizes, c.count)
                          for c in group),
                    entry.crc32 if len(groups) == 1 else None))
                indices.append(index)
                size += jobs[-1].count
                if size >= TASK_ELEMENTS:
                    owners.append(indices)
                    yield tuple(jobs)
                    jobs, indices, size = [], [], 0
        if jobs:
            owners.append(indices)
            yield tuple(jobs)


def _chunk_groups(entry: TensorEntry) -> list[tuple]:
    """The entry's chunks in consecutive groups of about TASK_ELEMENTS elements."""
    groups: list[tuple] = []
    group: list = []
    size = 0
    for chunk in entry.chunks:
        group.append(chunk)
        size += chunk.count
        if size >= TASK_ELEMENTS:
            groups.append(tuple(group))
            group, size = [], 0
    if group and groups and size == 0:  # empty chunks at the end join the last group,
        groups[-1] += tuple(group)      # so every group decodes some elements
    elif group:
        groups.append(tuple(group))
    return groups


def _checked(entry: TensorEntry, values: np.ndarray) -> np.ndarray:
    if zlib.crc32(values.view(np.uint8)) & 0xFFFFFFFF != entry.crc32:
        raise CorruptDataError(f"tensor {entry.name!r}: decoded tensor checksum mismatch")
    return values
