"""Random access to an onnxz file: list its tensors, decode one by name, or all in order.

>>> import onnxz
>>> with onnxz.open("model.onnxz") as reader:                        # doctest: +SKIP
...     [(t.name, t.shape, t.codec) for t in reader.tensors][:2]
...     w = reader.tensor("encoder.layer.0.weight")    # numpy array, only its chunks read

Every decoded tensor is checked against its CRC-32 (and every chunk against its own) before
it is returned. A tensor stored as a ``copy`` of an earlier one (SPEC.md §6.7) is decoded
from its source's chunks. Decoding many chunks uses worker processes (:mod:`onnxz.parallel`).
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from onnxz.codecs.lossless import MAGNITUDE_MINOR, LosslessCodec
from onnxz.container import (
    ChunkEntry,
    ContainerReader,
    ReadLimits,
    TensorEntry,
    check_limits,
    crc32,
    crc32_combine,
)
from onnxz.dtypes import BY_NAME
from onnxz.errors import (
    CorruptDataError,
    FormatError,
    InvalidModelError,
    LimitExceededError,
    TensorNotFoundError,
)
from onnxz.fileio import check_input
from onnxz.parallel import DecodeJob, check_workers, decode_in_workers, decode_job
from onnxz.report import ContainerInfo, TensorInfo
from onnxz.walker import (
    element_count,
    has_payload,
    iter_tensors,
    payload_type,
    read_payload,
    resolve,
)

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
        limits = check_limits(limits)  # arguments before the file, as in onnxz.open
        self.path = check_input(path, "path")
        self._container = ContainerReader(self.path, limits)
        self.entries: tuple[TensorEntry, ...] = self._container.index.tensors
        try:
            self._sources = copy_sources(self.entries)
            check_modes_declared(self.entries, self._container.index.version)
        except FormatError:
            try:
                self._container.graph_bytes()  # SPEC.md §10.2: a damaged graph comes first
            finally:
                self.close()
            raise

    def close(self) -> None:
        """Close the file (``with onnxz.open(...)`` does it on leaving the block)."""
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
        """The limits this reader checks (given, or the defaults)."""
        return self._container.limits

    def entry(self, name: str) -> TensorEntry:
        """The index entry of the one stored tensor called ``name``."""
        found = [e for e in self.entries if e.name == name]
        if len(found) != 1:
            what = "no stored tensor" if not found else f"{len(found)} stored tensors"
            raise TensorNotFoundError(f"{self.path}: {what} named {name!r}")
        return found[0]

    def tensor(self, name: str) -> np.ndarray:
        """The decoded tensor ``name`` with its shape; only its own chunks are read (for a
        ``copy``, its source's). A tensor the writer left in the graph (a small payload) is
        read from the graph.

        The array's dtype is the element type's numpy type (bfloat16 as its uint16 bit
        patterns, float8 types as uint8).
        """
        if not any(e.name == name for e in self.entries):
            kept = self._in_graph(name)
            if kept is not None:
                return kept
        entry = self.entry(name)
        self._check_budget([entry])
        ((_, values),) = self.decode([entry])
        return values.reshape(entry.shape)

    def _in_graph(self, name: str) -> np.ndarray | None:
        """The payload of the one tensor called ``name`` that the graph holds, if exactly one
        does and its type is one onnxz stores."""
        found = [t for _, t in iter_tensors(self.graph()) if t.name == name and has_payload(t)]
        etype = payload_type(found[0]) if len(found) == 1 else None
        if etype is None:
            return None
        try:
            return read_payload(found[0], etype).reshape(tuple(found[0].dims))
        except InvalidModelError as exc:
            raise FormatError(f"graph: {exc}") from exc

    def graph(self) -> onnx.ModelProto:
        """The stored ModelProto, the payloads of the stored tensors still empty."""
        try:
            return onnx.ModelProto.FromString(self._container.graph_bytes())
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise FormatError(f"graph: not a valid ONNX ModelProto ({exc})") from exc

    def slots(self, model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
        """The TensorProto of each entry in ``model`` (the :meth:`graph`), checked against the
        index as it is asked for, and after the last one the check that no other tensor lost
        its payload (SPEC.md §5.2). Take each before decoding its entry and after decoding
        the ones before (SPEC.md §10.2 checks tensor by tensor: a damaged chunk of the first
        is reported before a wrong path of the fourth)."""
        found = dict(iter_tensors(model))  # each entry takes its slot out: the rest have none
        for entry in self.entries:
            tensor = found.pop(entry.path, None)
            if tensor is None:  # not a place the walk finds: resolve says why
                tensor = resolve(model, entry.path)
            if (tensor.name, tensor.data_type, tuple(tensor.dims[:])) != (
                entry.name, BY_NAME[entry.dtype].onnx_type, entry.shape
            ):
                raise FormatError(f"tensor {entry.name!r}: index does not match the graph")
            if payload_type(tensor) is None or has_payload(tensor):
                raise FormatError(f"tensor {entry.name!r}: graph slot already holds data")
            yield tensor
        for tensor_path, tensor in found.items():  # most hold their payload
            if not has_payload(tensor) and payload_type(tensor) and element_count(tensor):
                raise FormatError(f"graph: tensor {tensor.name!r} at {list(tensor_path)} has "
                                  "no data and no index entry (SPEC.md §5.2)")

    def check_in_order(self, model: onnx.ModelProto) -> None:
        """Take every tensor as SPEC.md §10.2 orders the checks, its slot in ``model``
        before its chunks, and raise the first fault (none if the file has none)."""
        for _ in zip(self.slots(model), self.decode(), strict=True):
            pass

    def check_output_budget(self) -> None:
        """:class:`LimitExceededError` if decoding every tensor would pass the limits."""
        self._check_budget(self.entries)

    def _check_budget(self, entries: Sequence[TensorEntry]) -> None:
        total = sum(map(decoded_bytes, entries))
        budget = self.limits.output_budget(self._container.file_size)
        if total > budget:
            raise LimitExceededError(
                f"tensors: decoded size {total} bytes would exceed the limit of {budget} bytes "
                "(raise it with --max-output-size or ReadLimits.max_output_size)")

    def decode(self, entries: Iterable[TensorEntry] | None = None
               ) -> Iterator[tuple[TensorEntry, np.ndarray]]:
        """Each entry (default: all) with its decoded, CRC-checked flat values, in order.

        With one worker (or less than PARALLEL_MIN_ELEMENTS to decode) each tensor is
        decoded here, a chunk at a time. Otherwise worker processes decode tasks of about
        TASK_ELEMENTS elements into shared memory, a bounded number ahead, and this process
        copies them into each tensor's array. Either way memory holds about the tensor handed
        out and the one being decoded, not the model.
        """
        entries = list(self.entries if entries is None else entries)
        if (self.workers == 1 or not entries
                or sum(e.element_count for e in entries) < PARALLEL_MIN_ELEMENTS):
            for entry in entries:
                yield entry, self._decoded_here(entry)
            return
        owners: deque[list[tuple[_Filling, int]]] = deque()
        handed_out = 0
        try:
            for crcs in decode_in_workers(self.workers, self._container.file,
                                          _tasks(entries, self._coded, owners)):
                for (filling, nbytes), crc in zip(owners.popleft(), crcs, strict=True):
                    filling.crc = crc32_combine(filling.crc, crc, nbytes)
                    filling.jobs_left -= 1
                    if not filling.jobs_left:
                        values = _checked(filling.entry, filling.values, filling.crc)
                        yield filling.entry, values
                        handed_out += 1
        except (FormatError, CorruptDataError):
            # A worker checks its own jobs, not the rest of their tensor, nor the CRC of the
            # tensor before: decode the rest here, one tensor at a time, for the error
            # SPEC.md §10.2 names first.
            for entry in entries[handed_out:]:
                self._decoded_here(entry)
            raise

    def _decoded_here(self, entry: TensorEntry) -> np.ndarray:
        """``entry``'s flat values, decoded in this process, CRC-checked."""
        coded = self._coded(entry)
        values = np.empty(entry.element_count, dtype=BY_NAME[entry.dtype].numpy)
        decode_job(_job(entry, coded, coded.chunks), self._container.chunk_bytes, values)
        return _checked(entry, values, crc32(values.view(np.uint8)))

    def _coded(self, entry: TensorEntry) -> TensorEntry:
        """The entry whose codec, parameters and chunks code ``entry``'s elements: its
        source if it is a ``copy``, else itself."""
        return self._sources.get(entry.path, entry)


def decoded_bytes(entry: TensorEntry) -> int:
    """Bytes of ``entry``'s decoded elements (its dtype known)."""
    return entry.element_count * BY_NAME[entry.dtype].width


def is_copy(entry: TensorEntry) -> bool:
    """Whether ``entry`` is in lossless mode ``copy`` (SPEC.md §6.7)."""
    return entry.codec == LosslessCodec.codec_id and entry.params.get("mode") == "copy"


def copy_sources(entries: Sequence[TensorEntry]) -> dict[tuple[str | int, ...], TensorEntry]:
    """The source of every ``copy`` entry by the copy's path, each checked (SPEC.md §6.7):
    ``of`` is the index of an earlier entry that is not a copy, of the same dtype and
    element count, and the copy's chunks are empty (no parts, CRC-32 0); every entry's
    dtype known first. A :class:`FormatError` naming the entry otherwise."""
    for entry in entries:
        if entry.dtype not in BY_NAME:
            raise FormatError(f"tensor {entry.name!r}: unknown dtype {entry.dtype!r}")
    sources = {}
    for i, entry in enumerate(entries):
        if not is_copy(entry):
            continue
        where = f"tensor {entry.name!r}: lossless copy"
        k = entry.params.get("of")
        if type(k) is not int or not 0 <= k < i:
            raise FormatError(f"{where}: 'of' must be the index of an earlier tensor (below "
                              f"{i}), not {k!r}")
        source = entries[k]
        if is_copy(source):
            raise FormatError(f"{where}: its source {source.name!r} is itself a copy")
        if (source.dtype, source.element_count) != (entry.dtype, entry.element_count):
            raise FormatError(f"{where}: its source {source.name!r} holds "
                              f"{source.element_count} {source.dtype} elements, not "
                              f"{entry.element_count} {entry.dtype}")
        if any(c.sizes or c.crc32 for c in entry.chunks):
            raise FormatError(f"{where}: a chunk holds parts (a copy's chunks are empty)")
        sources[entry.path] = source
    return sources


def check_modes_declared(entries: Sequence[TensorEntry], version: tuple[int, int]) -> None:
    """Lossless mode ``magnitude`` (SPEC.md §6.8) only in a file declaring format 1.7 or
    later: a :class:`FormatError` naming the first entry using it in an older file (a reader
    of that version would not know the mode)."""
    if version[1] >= MAGNITUDE_MINOR:
        return
    for entry in entries:
        if entry.codec == LosslessCodec.codec_id and entry.params.get("mode") == "magnitude":
            raise FormatError(
                f"tensor {entry.name!r}: lossless mode 'magnitude' needs format "
                f"1.{MAGNITUDE_MINOR}; the file declares {version[0]}.{version[1]}")


@dataclass
class _Filling:
    """A tensor whose array the workers' jobs fill: the jobs not yet done and the CRC-32 of
    the bytes done so far (the jobs' CRC-32s combined in order)."""

    entry: TensorEntry
    values: np.ndarray
    jobs_left: int
    crc: int = 0


def _tasks(entries: list[TensorEntry], coded: Callable[[TensorEntry], TensorEntry],
           owners: deque[list[tuple[_Filling, int]]]
           ) -> Iterator[tuple[tuple[DecodeJob, np.ndarray], ...]]:
    """The entries' jobs (a tensor cut at chunk boundaries into jobs of about TASK_ELEMENTS
    elements; a copy's jobs are its source's, ``coded``) with their destination in their
    tensor's array, grouped into tasks of about TASK_ELEMENTS elements; ``owners`` gets, per
    task, each job's tensor and byte count."""
    task: list[tuple[DecodeJob, np.ndarray]] = []
    owned: list[tuple[_Filling, int]] = []
    size = 0
    for entry in entries:
        source = coded(entry)
        groups = _chunk_groups(source) or [()]  # () if empty
        filling = _Filling(entry, np.empty(entry.element_count, BY_NAME[entry.dtype].numpy),
                           len(groups))
        start = 0
        for group in groups:
            job = _job(entry, source, group)
            task.append((job, filling.values[start : start + job.count]))
            owned.append((filling, job.nbytes))
            start += job.count
            size += job.count
            if size >= TASK_ELEMENTS:
                owners.append(owned)
                yield tuple(task)
                task, owned, size = [], [], 0
    if task:
        owners.append(owned)
        yield tuple(task)


def _job(entry: TensorEntry, coded: TensorEntry, chunks: Iterable[ChunkEntry]) -> DecodeJob:
    """A job decoding ``chunks`` of ``coded`` (``entry`` or its source) for ``entry``."""
    return DecodeJob(entry.name, coded.codec, coded.params, entry.dtype, tuple(chunks))


def _chunk_groups(entry: TensorEntry) -> list[tuple[ChunkEntry, ...]]:
    """The entry's chunks in consecutive groups of about TASK_ELEMENTS elements."""
    groups: list[tuple[ChunkEntry, ...]] = []
    group: list[ChunkEntry] = []
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


def _checked(entry: TensorEntry, values: np.ndarray, crc: int) -> np.ndarray:
    """``values``, if ``crc`` (theirs) is the entry's CRC-32."""
    if crc != entry.crc32:
        raise CorruptDataError(f"tensor {entry.name!r}: decoded tensor checksum mismatch")
    return values
