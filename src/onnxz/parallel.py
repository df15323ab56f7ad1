"""Coding across worker processes: tensors encoded and chunks decoded in parallel, in order.

constriction's coder holds the GIL (two threads decode at 0.6× one thread), so the work
goes to processes. :class:`WorkerPool` maps a task function over tasks and yields the
results in task order, with a bounded number of tasks in flight (so memory stays bounded
however many tensors there are). With one worker it runs the same functions in this
process, so the output is byte-identical whatever the number of workers.

The task functions are the units of work: :func:`encode_tensor` (one tensor: read its
payload, encode it) and :func:`decode_into_block` (consecutive chunks of one or more
tensors). They take and return small picklable dataclasses. Workers read their input
themselves: a payload in an external data file or a container's chunks by positioned reads,
not sent through a pipe. Decoded elements come back through shared memory
(:func:`decode_in_workers`): a decoded tensor never passes through a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import multiprocessing
import os
import platform
import secrets
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, TypeVar

import msgpack
import numpy as np

from onnxz.codecs import NotQuantizable, TensorCodec, codec_class
from onnxz.codecs.base import Chunk, ChunkDecoder
from onnxz.codecs.lossless import LosslessCodec
from onnxz.container import ChunkEntry, ChunkFile, crc32, read_chunk, split_parts
from onnxz.dtypes import BY_NAME
from onnxz.errors import (
    FormatError,
    InvalidArgumentError,
    OnnxzError,
    OutOfMemoryError,
    WorkerError,
)
from onnxz.interrupts import STOP_SIGNALS, forget_wakeup
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
    """``workers`` validated (None: :func:`available_cores`); :class:`InvalidArgumentError`
    otherwise."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers must be a whole number >= 1, got {workers!r}")
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
        self._launched = False

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
                                                 initializer=_start_worker,
                                                 initargs=(os.getpid(),))
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
                pending.append(self._submit(executor, fn, task))
                if len(pending) >= limit:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            for future in pending:
                future.cancel()

    def _submit(self, executor: ProcessPoolExecutor, fn: Callable[[T], R], task: T
                ) -> Future[R]:
        """``executor.submit(fn, task)``; the first with the stop signals blocked: a forked
        pool starts its workers in that call, and a worker must not take a SIGTERM (the
        pool stopped early) with the main process's handler it inherits, which raised in
        the worker's start-up and printed a traceback. :func:`_start_worker` unblocks them
        once its own handlers are in place."""
        if self._launched:
            return executor.submit(fn, task)
        with _stop_signals_blocked():
            future = executor.submit(fn, task)
        self._launched = True
        return future


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """:data:`STOP_SIGNALS` held back in this thread (where the platform can), delivered
    when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _context() -> multiprocessing.context.BaseContext:
    """Workers are forked where the platform can (Linux): they start at once, and a calling
    script needs no ``if __name__ == "__main__"`` guard (spawned workers re-run it). They
    run only numpy, constriction and zstd code, which keep no locks across a fork."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _start_worker(main_process: int) -> None:
    """In a new worker of ``main_process``: it ends with that process
    (:func:`_end_with_main_process`); Ctrl-C is for the main process, which stops the
    workers itself; a SIGTERM or SIGHUP (the main process's way of stopping them) ends a
    worker at once, whatever handler it inherited from the main process by the fork, and no
    signal of the worker's wakes the main process's watch over its model runs. Then the
    allocator (:func:`_keep_heap`)."""
    _end_with_main_process(main_process)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stop in STOP_SIGNALS[1:]:
        signal.signal(stop, signal.SIG_DFL)
    forget_wakeup()
    if hasattr(signal, "pthread_sigmask"):  # blocked while it forked (WorkerPool._submit)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _keep_heap()


PR_SET_PDEATHSIG = 1
"""Linux's prctl option: the signal this process gets when its parent ends."""


def _end_with_main_process(main_process: int) -> None:
    """Where Linux can, have the kernel kill this worker when ``main_process`` (its parent)
    ends, and end now if it already has. A stop signal that reached the main process while
    the pool forked its workers could end it before the pool knew of a worker: that worker
    waited for tasks for ever, holding the main process's stderr (tools/fuzz_signals.py:
    a case of ``pack`` never ended for its caller)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != main_process:
        os._exit(0)


WORKER_MMAP_THRESHOLD = 32 << 20
WORKER_TRIM_THRESHOLD = 64 << 20


def _keep_heap() -> None:
    """With glibc: allocations below WORKER_MMAP_THRESHOLD bytes come from the heap, which
    keeps up to WORKER_TRIM_THRESHOLD bytes free instead of returning them to the system.
    A task allocates and frees a few MB of temporaries per chunk (its bytes, zstd planes);
    glibc's adaptive defaults gave them back and faulted them in again, 5× the page faults
    of the same decoding in the main process (1.7 M instead of 0.35 M for the 3.4 GB
    lossless file, 2.7 s of CPU). The worker is onnxz's own process, the main one is not
    touched."""
    if platform.libc_ver()[0] != "glibc":
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, WORKER_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        mallopt(-1, WORKER_TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


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
    rounded_bits: int | None

    @functools.cached_property
    def digest(self) -> bytes:
        """sha256 of the encoding: codec id, parameters (msgpack, keys sorted at every
        depth), each chunk's count, part sizes and parts. Computed once (rate control sizes
        the same cached encodings plan after plan)."""
        digest = hashlib.sha256(msgpack.packb([self.codec_id, _sorted_keys(self.params)],
                                              use_bin_type=True))
        for chunk in self.chunks:
            digest.update(msgpack.packb([chunk.count, [len(p) for p in chunk.parts]]))
            for part in chunk.parts:
                digest.update(part)
        return digest.digest()


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted_keys(v) for v in value]
    return value


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
        crc32(reconstruction.view(np.uint8)),
        encoded.entropy_bits, encoded.table_bytes, encoded.format_minor, encoded.rounded_bits)


# --- chunk decoding ---------------------------------------------------------------------

BLOCK_MIN_BYTES = 1 << 20
"""Smallest shared block; a block grows (by powers of two) to the largest task it serves."""


@dataclass(frozen=True)
class DecodeJob:
    """Consecutive chunks of one tensor, by their place in the file (not their bytes), that
    decode to ``count`` elements of ``dtype``."""

    name: str
    codec: str
    params: Mapping[str, Any]
    dtype: str
    chunks: tuple[ChunkEntry, ...]

    @property
    def count(self) -> int:
        return sum(c.count for c in self.chunks)

    @property
    def nbytes(self) -> int:
        return self.count * BY_NAME[self.dtype].width


def decode_job(job: DecodeJob, read: Callable[[ChunkEntry, str], bytes], out: np.ndarray
               ) -> None:
    """Decode ``job`` into ``out``: a flat array of ``job.count`` elements of the dtype's
    numpy type. ``read(chunk, tensor name)`` gives a chunk's stored bytes, checksum-verified;
    chunks are read one at a time.

    Any failure inside a codec becomes an :class:`OnnxzError` naming the tensor. A format
    error (invalid parameters, a malformed chunk) is reported only once every chunk of the
    job has passed its CRC-32 (SPEC.md §10.2 orders every chunk's CRC before the parameters
    and the chunks' contents); chunks are read again only then.
    """
    try:
        decoder = _naming(job, _decoder, job)
        start = 0
        for chunk in job.chunks:
            parts = split_parts(read(chunk, job.name), chunk.sizes)
            _naming(job, decoder.decode_into, parts, out[start : start + chunk.count])
            start += chunk.count
    except FormatError:
        for chunk in job.chunks:
            read(chunk, job.name)
        raise


def _decoder(job: DecodeJob) -> ChunkDecoder:
    return codec_class(job.codec).decoder(job.params, BY_NAME[job.dtype])


def _naming(job: DecodeJob, step: Callable[..., R], *args: Any) -> R:
    """``step(*args)``, its failures made errors naming ``job``'s tensor (a plain call, not
    a context manager: this runs for every chunk, and small chunks are many)."""
    try:
        return step(*args)
    except OnnxzError as exc:
        raise type(exc)(f"tensor {job.name!r}: {exc}") from exc
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise FormatError(f"tensor {job.name!r}: malformed {job.codec} stream ({exc})") from exc


@dataclass(frozen=True)
class BlockTask:
    """What one worker decodes: ``jobs``, their chunks read from ``file``, into the shared
    block named ``block``, back to back from its byte 0 (each ``job.nbytes`` long)."""

    file: ChunkFile
    block: str
    jobs: tuple[DecodeJob, ...]


def decode_into_block(task: BlockTask) -> tuple[int, ...]:
    """Run ``task`` in a worker process: the CRC-32 of each job's decoded bytes, in order."""
    fd = task.file.open()
    try:
        return _decode_jobs(task.jobs, functools.partial(read_chunk, fd),
                            _attached(task.block).buf)
    finally:
        os.close(fd)


def _decode_jobs(jobs: tuple[DecodeJob, ...], read: Callable[[ChunkEntry, str], bytes],
                 buffer: memoryview) -> tuple[int, ...]:
    crcs, offset = [], 0
    for job in jobs:
        out = np.ndarray(job.count, BY_NAME[job.dtype].numpy, buffer=buffer, offset=offset)
        decode_job(job, read, out)
        crcs.append(crc32(out.view(np.uint8)))
        offset += job.nbytes
    return tuple(crcs)


_ATTACHED: dict[str, shared_memory.SharedMemory] = {}
"""In a worker process: the blocks it has mapped, by name. Blocks serve task after task and
a new mapping costs a page fault per 4 KiB page written (1.4 ms per 4 MiB here), so a
worker keeps them mapped until it exits, which is when its pool ends."""


def _attached(name: str) -> shared_memory.SharedMemory:
    """The existing block ``name``, mapped once per worker. From Python 3.13 it is not
    registered with the resource tracker (the creating process does that); before, the
    worker registers it again with the parent's tracker (inherited or passed on), which
    changes nothing because the parent unlinks every block only after its workers stopped."""
    block = _ATTACHED.get(name)
    if block is None:
        if sys.version_info >= (3, 13):
            block = shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
        else:
            block = shared_memory.SharedMemory(name)
        _ATTACHED[name] = block
    return block


class SharedBlocks:
    """The shared-memory blocks workers decode into, reused task after task: a task takes a
    free block (or a new one) and gives it back once its results are copied out, so there
    are at most as many blocks as tasks in flight, each of BLOCK_MIN_BYTES or at most twice
    the largest task's bytes. Blocks are named ``onnxz-<pid>-<8 hex digits>`` (in
    ``/dev/shm`` on Linux); :meth:`close` unlinks every one, on success, error or interrupt
    alike (use ``with``). A process killed outright (SIGKILL) leaves them to the resource
    tracker, which unlinks them once the process and its workers are gone."""

    def __init__(self) -> None:
        self._free: list[shared_memory.SharedMemory] = []
        self._blocks: list[shared_memory.SharedMemory] = []
        self._names: set[str] = set()  # never reused: workers keep blocks mapped by name

    def __enter__(self) -> SharedBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def take(self, nbytes: int) -> shared_memory.SharedMemory:
        """A block of at least ``nbytes`` bytes, not in use by another task."""
        if self._free:
            block = self._free.pop()
            if block.size >= nbytes:
                return block
            self._discard(block)
        size = max(BLOCK_MIN_BYTES, 1 << (nbytes - 1).bit_length())
        _check_room(size)
        while True:
            name = f"onnxz-{os.getpid()}-{secrets.token_hex(4)}"
            if name in self._names:
                continue
            try:
                block = shared_memory.SharedMemory(name, create=True, size=size)
            except FileExistsError:
                continue
            self._names.add(name)
            self._blocks.append(block)
            return block

    def give(self, block: shared_memory.SharedMemory) -> None:
        """``block`` is free again: the task that took it is done and copied out."""
        self._free.append(block)

    def close(self) -> None:
        """Unlink and unmap every block (none may be in use by a worker any more)."""
        while self._blocks:
            self._discard(self._blocks[-1])
        self._free.clear()

    def _discard(self, block: shared_memory.SharedMemory) -> None:
        self._blocks.remove(block)
        block.close()
        with contextlib.suppress(FileNotFoundError):  # removed by someone else: gone anyway
            block.unlink()


def _check_room(nbytes: int) -> None:
    """:class:`OutOfMemoryError` if ``/dev/shm``, where Linux keeps shared memory (64 MB in a
    default Docker container), has less than ``nbytes`` free: a worker writing past its end
    would die of SIGBUS. Elsewhere shared memory is not a file system that fills up."""
    try:
        stat = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if free < nbytes:
        raise OutOfMemoryError(
            f"shared memory: a decoding block needs {nbytes} bytes, /dev/shm has {free} free "
            "(use fewer workers, or give /dev/shm more room)")


def decode_in_workers(workers: int, file: ChunkFile,
                      tasks: Iterable[tuple[tuple[DecodeJob, np.ndarray], ...]]
                      ) -> Iterator[tuple[int, ...]]:
    """Decode each task's jobs in ``workers`` processes and copy each job's elements into
    its destination (a flat array of ``job.count`` elements of the dtype's numpy type, in
    this process); yield the task's CRC-32s (one per job, of its decoded bytes) once its
    destinations are filled, in task order.

    Workers read their chunks from ``file`` themselves and decode them into shared memory
    (:class:`SharedBlocks`), so what passes through the pipes is a task's description and
    its CRC-32s; this process copies each block once, into the destinations. ``tasks`` is
    read lazily, at most two per worker ahead of the results.
    The workers are stopped before the blocks are unlinked, whatever ends the decoding.
    """
    outputs: deque[tuple[shared_memory.SharedMemory, tuple[np.ndarray, ...]]] = deque()

    def block_tasks(blocks: SharedBlocks) -> Iterator[BlockTask]:
        for task in tasks:
            jobs = tuple(job for job, _ in task)
            block = blocks.take(sum(job.nbytes for job in jobs))
            outputs.append((block, tuple(out for _, out in task)))
            yield BlockTask(file, block.name, jobs)

    with SharedBlocks() as blocks, WorkerPool(workers) as pool:
        for crcs in pool.map(decode_into_block, block_tasks(blocks)):
            block, outs = outputs.popleft()
            _copy_out(block.buf, outs)
            blocks.give(block)
            yield crcs


def _copy_out(buffer: memoryview, outs: tuple[np.ndarray, ...]) -> None:
    """Fill ``outs`` from ``buffer``, where they lie back to back from byte 0."""
    offset = 0
    for out in outs:
        out[...] = np.ndarray(out.shape, out.dtype, buffer=buffer, offset=offset)
        offset += out.nbytes
