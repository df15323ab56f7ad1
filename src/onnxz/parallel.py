"""Coding across worker processes: tensors encoded and chunks decoded in parallel, in order.

constriction's coder holds the GIL (two threads decode at 0.6× one thread), so the work
goes to processes. :class:`WorkerPool` maps a task function over tasks and yields the
results in task order, with a bounded number of tasks in flight (so memory stays bounded
however many tensors there are). With one worker it runs the same functions in this
process, so the output is byte-identical whatever the number of workers.

The task functions are the units of work: :func:`encode_tensor` (one tensor: read its
payload, encode it) and :func:`decode_chunks` (consecutive chunks of one tensor). Both take
and return small picklable dataclasses; a payload in an external data file is read by the
worker itself (positioned reads), not sent through a pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from onnxz.codecs import NotQuantizable, TensorCodec, codec_class
from onnxz.codecs.base import Chunk
from onnxz.codecs.lossless import LosslessCodec
from onnxz.container import split_parts
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError, OnnxzError, WorkerError
from onnxz.modelio import Payload

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` validated (None: :func:`available_cores`)."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


class WorkerPool:
    """``workers`` processes (none when 1) that run task functions, results in task order.

    >>> with WorkerPool(1) as pool:
    ...     list(pool.map(abs, [-1, 2, -3]))
    [1, 2, 3]
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if exc_type is not None:
            # Interrupted or failed: stop the workers now rather than let them finish
            # tasks nobody will read (they hold nothing that needs cleaning up).
            for process in list(getattr(executor, "_processes", {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=_context(),
                                                 initializer=_ignore_interrupts)
        return self._executor

    def map(self, fn: Callable[[T], R], tasks: Iterable[T], in_flight: int | None = None
            ) -> Iterator[R]:
        """``fn(task)`` for each task, in order; at most ``in_flight`` tasks (default: two
        per worker) are submitted but not yet yielded, so ``tasks`` is read lazily."""
        if self.workers == 1:
            for task in tasks:
                yield fn(task)
            return
        executor = self._start()
        limit = in_flight or 2 * self.workers
        pending: deque[Future[R]] = deque()
        try:
            for task in tasks:
                pending.append(executor.submit(fn, task))
                if len(pending) >= limit:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            for future in pending:
                future.cancel()


def _context() -> multiprocessing.context.BaseContext:
    """Workers are forked where the platform can (Linux): they start at once, and a calling
    script needs no ``if __name__ == "__main__"`` guard (spawned workers re-run it). They
    run only numpy, constriction and zstd code, which keep no locks across a fork."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C is for the main process, which stops the workers itself; a
    SIGTERM or SIGHUP (the main process's way of stopping them) ends a worker at once,
    whatever handler it inherited from the main process by the fork."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stop in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if stop is not None:
            signal.signal(stop, signal.SIG_DFL)


def _result(future: Future[R]) -> R:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerError(
            "a worker process died (out of memory?); try fewer workers") from exc


# --- tensor encoding --------------------------------------------------------------------

@dataclass(frozen=True)
class EncodeJob:
    """One tensor to encode: its payload, element type, the codec to try, chunk size."""

    payload: Payload
    codec: TensorCodec
    chunk_elements: int


@dataclass(frozen=True)
class EncodedResult:
    """What the container needs of an encoded tensor (not its reconstruction, only the
    reconstruction's CRC-32)."""

    codec_id: str
    params: dict[str, Any]
    chunks: tuple[Chunk, ...]
    crc32: int
    entropy_bits: float | None
    table_bytes: int
    format_minor: int


def encode_tensor(job: EncodeJob) -> EncodedResult:
    """Encode one tensor with ``job.codec``, or losslessly if it declines."""
    values = job.payload.read()
    etype = BY_NAME[job.payload.dtype]
    try:
        encoded = job.codec.encode(values, etype, job.chunk_elements)
    except NotQuantizable:
        encoded = LosslessCodec().encode(values, etype, job.chunk_elements)
    reconstruction = np.ascontiguousarray(encoded.reconstruction).reshape(-1)
    return EncodedResult(
        encoded.codec_id, encoded.params, encoded.chunks,
        zlib.crc32(reconstruction.view(np.uint8)) & 0xFFFFFFFF,
        encoded.entropy_bits, encoded.table_bytes, encoded.format_minor)


# --- chunk decoding ---------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeJob:
    """Consecutive chunks of one tensor: each chunk's stored bytes (CRC already checked),
    part sizes and element count. ``crc32``, when the chunks are the whole tensor, is the
    decoded tensor's CRC-32, checked where it is decoded."""

    name: str
    codec: str
    params: Mapping[str, Any]
    dtype: str
    chunks: tuple[tuple[bytes, tuple[int, ...], int], ...]
    crc32: int | None = None

    @property
    def count(self) -> int:
        return sum(c[2] for c in self.chunks)


def decode_chunks(jobs: tuple[DecodeJob, ...]) -> list[np.ndarray]:
    """The decoded elements of each job (flat arrays of the dtype's numpy type).

    Any failure inside a codec becomes an :class:`OnnxzError` naming the tensor.
    """
    return [_decode_job(job) for job in jobs]


def _decode_job(job: DecodeJob) -> np.ndarray:
    etype = BY_NAME[job.dtype]
    values = np.empty(job.count, dtype=etype.numpy)
    try:
        decoder = codec_class(job.codec).decoder(job.params, etype)
        start = 0
        for data, sizes, count in job.chunks:
            decoder.decode_into(split_parts(data, sizes), values[start : start + count])
            start += count
    except OnnxzError as exc:
        raise type(exc)(f"tensor {job.name!r}: {exc}") from exc
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise FormatError(f"tensor {job.name!r}: malformed {job.codec} stream ({exc})") from exc
    if job.crc32 is not None and zlib.crc32(values.view(np.uint8)) & 0xFFFFFFFF != job.crc32:
        raise CorruptDataError(f"tensor {job.name!r}: decoded tensor checksum mismatch")
    return values
