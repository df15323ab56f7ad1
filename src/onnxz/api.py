"""The Python API: save, load, unpack, info, open, inference_session, verify. The CLI's
verbs call these (and the analysis package for analyze and sweep).

Models move tensor by tensor in both directions: :func:`save` reads each payload when it is
encoded (from external data files by offset), and :func:`unpack` writes each decoded tensor
as it comes (to an external data file past protobuf's 2 GiB limit), so memory holds the graph
and about one tensor per worker, never the whole model.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import onnx
from google.protobuf.message import EncodeError

from onnxz import __version__, ratecontrol, verifier
from onnxz.arguments import as_path, boolean, names
from onnxz.codecs import LosslessCodec, NotQuantizable, TensorCodec
from onnxz.codecs.lossless import COPY_MINOR
from onnxz.container import (
    ContainerReader,
    ContainerWriter,
    ReadLimits,
    TensorEntry,
    check_limits,
)
from onnxz.dtypes import ElementType
from onnxz.errors import (
    InvalidArgumentError,
    LimitExceededError,
    OnnxzError,
    OutOfMemoryError,
    OutputPathError,
    TargetNotMetError,
    TargetSpecError,
    UnsupportedModelError,
    first_line,
)
from onnxz.fidelity import Fidelity
from onnxz.fileio import atomic_outputs, check_input, check_outputs
from onnxz.inputs import InputsArg
from onnxz.modelio import (
    EXTERNAL_MIN_BYTES,
    PROTOBUF_LIMIT,
    ExternalDataWriter,
    ModelFile,
    ModelStream,
    Payload,
    open_model,
)
from onnxz.parallel import EncodedResult, EncodeJob, WorkerPool, check_workers, encode_tensor
from onnxz.policy import DEFAULT_STEP_REL, PackOptions
from onnxz.progress import Progress, ProgressUpdate, notify
from onnxz.ratecontrol.search import SizingPlan
from onnxz.ratecontrol.tensors import LOSSLESS, Point, Setting
from onnxz.reader import Reader, decoded_bytes
from onnxz.report import ContainerInfo
from onnxz.verifier import (
    Probe,
    Thresholds,
    VerifyReport,
    goes_outside,
    point_to_placeholder,
    session_with_initializers,
)
from onnxz.walker import Path as TensorPath
from onnxz.walker import (
    TensorSlot,
    consumers,
    element_count,
    iter_tensor_slots,
    payload_type,
    put_payload,
    read_payload,
    resolve,
    row_length,
    take_payload,
)

if TYPE_CHECKING:
    import onnxruntime

ModelSource = onnx.ModelProto | str | os.PathLike

PARALLEL_MIN_BYTES = 16 << 20
"""Below this many bytes of tensors, packing runs in this process (starting workers would
cost more than they save)."""

SIZE_SLACK = 64
"""Bytes added to every size rate control measures: the index records the achieved figures
only once they are known, and their compressed size may differ by a few bytes."""

UNPACK_WRITE_BUFFER = 1 << 20
"""Bytes :func:`unpack` gathers before each write to its outputs: a write system call costs
several µs on ext4 whatever its size, and a small model is many small pieces. CPU ms of
writing the decoded models (the stream's writes, closing and renaming the file; best of
60), Python's 8 KiB buffer -> this one: PP-OCR cls 0.54 -> 0.29, silero_vad 0.92 -> 0.78,
PP-OCR det 1.92 -> 1.57, magika 0.90 -> 0.92 (its 438 KB payload copied into the buffer);
256 KiB came between (measured 2026-12-03). Larger payloads are written as they come."""

def save(
    model: ModelSource,
    path: str | os.PathLike,
    *,
    lossless: bool = False,
    step_rel: float | None = None,
    deadzone: float | None = None,
    force: bool = False,
    options: PackOptions | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    fidelity: Fidelity | str | None = None,
    inputs: InputsArg = None,
    max_size: int | str | None = None,
    target_snr: float | None = None,
    best_effort: bool = False,
    class_outputs: Sequence[str] = (),
    correct_biases: bool | None = None,
    calibrated_rounding: bool | None = None,
) -> ContainerInfo:
    """Pack an ONNX model (a ModelProto or a path) into an onnxz file at ``path``.

    The default is lossy and rate-controlled: every weight tensor's step is chosen so that
    the outputs keep the default target on generated inputs (or on ``inputs``, where they
    also keep what :func:`verify` judges by default on them), checked in onnxruntime before
    the file appears (see :mod:`onnxz.ratecontrol.defaults` for what it guarantees).
    ``lossless=True`` is bit-exact; ``step_rel`` (× each tensor's spread) and ``deadzone``
    give every weight tensor one uniform quantizer. ``options`` sets the rest;
    the keyword arguments override it.

    Rate control chooses every weight tensor's step for a target instead: ``fidelity``
    (e.g. ``"top1>=0.995"``, checked on ``inputs``: an .npz, a test-data folder, arrays,
    or None for generated samples), ``max_size`` (bytes of the whole file, an int or e.g.
    ``"2MB"``), or ``target_snr`` (dB of weight SNR for every quantized tensor, no model
    run). The file is verified on the inputs before it appears; a target that cannot be met
    raises :class:`TargetNotMetError` unless ``best_effort`` (then the closest file is
    written and ``info.rate_control["met"]`` is False). ``class_outputs`` names outputs to
    treat as class scores. ``correct_biases`` (with ``fidelity`` and ``inputs``): each
    layer's bias absorbs the mean shift its quantized weights cause on the inputs (see
    :mod:`onnxz.ratecontrol.correction`; off by default). ``calibrated_rounding`` (with
    ``fidelity`` and ``inputs``, without ``max_size``): weights of linear layers are rounded
    with error feedback through their inputs on ``inputs`` (GPTQ-style, same bytes, smaller
    output error; see :mod:`onnxz.ratecontrol.feedback`; off by default), and a classifier
    head's through its outputs (:mod:`onnxz.ratecontrol.heads`).

    A model with external data is read tensor by tensor from its data files. Rate control
    holds the model in memory and runs it; by default it does so for models of up to
    :data:`~onnxz.policy.DEFAULT_MAX_WEIGHT_BYTES` of weights, larger ones get the data-free
    rule of :meth:`PackOptions.codec_for` and are streamed. ``workers`` processes encode tensors in
    parallel (None: the available cores); the file is the same for any number of workers.
    The output appears only when complete; an existing one needs ``force=True``.
    Returns what :func:`info` would report on the new file.
    """
    base = PackOptions() if options is None else options
    if not isinstance(base, PackOptions):
        raise InvalidArgumentError(f"options must be a PackOptions, not {type(base).__name__}")
    boolean(lossless, "lossless")
    boolean(force, "force")
    boolean(best_effort, "best_effort")
    class_outputs = names(class_outputs, "class_outputs")
    _check_callable(progress, "progress")
    workers = check_workers(workers)
    opts = dataclasses.replace(
        base,
        lossless=lossless or base.lossless,
        step_rel=base.step_rel if step_rel is None else step_rel,
        deadzone=base.deadzone if deadzone is None else deadzone,
        correct_biases=base.correct_biases if correct_biases is None else correct_biases,
        calibrated_rounding=(base.calibrated_rounding if calibrated_rounding is None
                             else calibrated_rounding),
    )
    if deadzone is not None and opts.step_rel is None and not opts.lossless:
        opts = dataclasses.replace(opts, step_rel=DEFAULT_STEP_REL)
    target = _rate_target(fidelity, max_size, target_snr)
    if target is not None and opts.uniform:
        raise TargetSpecError("a rate target chooses the steps itself: it cannot be combined "
                              "with lossless, step_rel, deadzone or a quantizer")
    if opts.uniform and (inputs is not None or class_outputs):
        raise TargetSpecError("inputs and class_outputs apply to rate control: not with "
                              "lossless, step_rel or a quantizer")
    if target is not None and target.target_snr_db is not None:
        opts = dataclasses.replace(opts, target_snr_db=target.target_snr_db)
    output = as_path(path, "path")
    if not isinstance(model, onnx.ModelProto):  # the output is checked before the work
        check_outputs([output], force, [check_input(model, "model")])
    source = open_model(model)
    with atomic_outputs([output], force, source.files) as (tmp,):
        about = source.files[0] if source.files else None
        result = None
        if not opts.uniform and opts.target_snr_db is None:
            with _about(about, "choosing the steps"):
                result = _rate_control(source, opts, target, inputs, class_outputs, progress,
                                       workers)
            if not result.met and not best_effort:
                why = result.note or "even the coarsest quantization misses it"
                raise TargetNotMetError(f"{target}: cannot be met ({why}); best_effort=True "
                                        "(CLI: --best-effort) writes the closest file")
        summary = _summary(result, target)
        with _about(about, "packing"), builtins.open(tmp, "wb") as f:
            writer = ContainerWriter(f, writer=f"onnxz {__version__}")
            entries = _write_tensors(source, writer, opts, workers, progress, result)
            extra: dict[str, Any] = {"source_bytes": source.source_bytes} if source.path else {}
            if summary is not None:
                extra["rate_control"] = summary
                writer.require_minor(1)
            writer.finish(source.proto.SerializeToString(), entries, extra)
        # Read the new file back before it gets its name: what cannot be read never appears.
        with _about(output, "reading it back"), ContainerReader(tmp) as reader:
            written = ContainerInfo.from_index(str(output), reader.file_size, reader.index)
        if result is not None:
            with _about(output, "checking it"):
                _check_written(tmp, result, target)
    return written


def _rate_target(fidelity: Fidelity | str | None, max_size: int | str | None,
                 target_snr: float | None) -> ratecontrol.RateTarget | None:
    if fidelity is None and max_size is None and target_snr is None:
        return None
    if fidelity is not None and not isinstance(fidelity, Fidelity | str):
        raise InvalidArgumentError(f"fidelity must be a Fidelity or a string like 'snr>=30', "
                                   f"not {type(fidelity).__name__}")
    return ratecontrol.RateTarget(
        fidelity=Fidelity.parse(fidelity) if isinstance(fidelity, str) else fidelity,
        max_bytes=None if max_size is None else ratecontrol.parse_size(max_size),
        target_snr_db=target_snr)


def _rate_control(source: ModelFile, opts: PackOptions, target: ratecontrol.RateTarget | None,
                  inputs: InputsArg, class_outputs: Sequence[str],
                  progress: Progress | None, workers: int) -> ratecontrol.RateResult:
    """Rate control's choice for ``target`` (None: the default) on the model in memory,
    ``workers`` processes pricing its tensors."""
    if target is None and not ratecontrol.runs_default(source.proto):
        return ratecontrol.fallback(f"weights larger than "
                                    f"{ratecontrol.DEFAULT_MAX_WEIGHT_BYTES >> 20} MiB are not run")
    model = _materialized(source)
    folded = ratecontrol.fold_statistics(model)
    packer = _Packer(model, opts, source.source_bytes, folded)
    return ratecontrol.choose(model, target, inputs, size_of=packer.size_of, options=opts,
                              class_outputs=class_outputs, progress=progress, folded=folded,
                              workers=workers)


def _summary(result: ratecontrol.RateResult | None,
             target: ratecontrol.RateTarget | None) -> dict[str, Any] | None:
    """What the index records of rate control (a weight-SNR target: just the target)."""
    if result is not None:
        return result.summary()
    if target is not None:
        return {"mode": "target_snr", "target": str(target), "met": True}
    return None


def _materialized(source: ModelFile) -> onnx.ModelProto:
    """The model with every payload in the proto (rate control runs it in onnxruntime)."""
    if not any(t.external is not None for t in source.tensors):
        return source.proto
    model = onnx.ModelProto()
    model.CopyFrom(source.proto)
    for t in source.tensors:
        if t.external is not None:
            tensor = resolve(model, t.slot.path)
            _make_internal(tensor)
            put_payload(tensor, t.external.read())
    return model


class _Packer:
    """Packs a model held in memory into in-memory containers, remembering every tensor's
    encoding, so that rate control can size many plans exactly (``size_of``).

    The graph section (the model without the payloads that go to chunks) is the same for
    every plan and is built once. ``replaced`` are the values the file holds instead of
    the model's, by path (the batch normalizations without their statistics).
    """

    def __init__(self, model: onnx.ModelProto, opts: PackOptions,
                 source_bytes: int | None, replaced: Mapping[TensorPath, np.ndarray]) -> None:
        self.model, self.opts, self.source_bytes = model, opts, source_bytes
        self.replaced = replaced
        self.slots: list[TensorSlot] = []  # stored in chunks
        self.inline: list[TensorSlot] = []  # left in the graph
        for slot in iter_tensor_slots(model):
            if (etype := payload_type(slot.tensor)) is not None:
                stored = element_count(slot.tensor) * etype.width >= opts.inline_max_bytes
                (self.slots if stored else self.inline).append(slot)
        self._cache: dict[tuple[TensorPath, Setting | None], EncodedResult] = {}
        self._graphs: dict[frozenset[tuple[TensorPath, Setting]], bytes] = {}

    @functools.cached_property
    def _skeleton(self) -> onnx.ModelProto:
        """The model without the stored payloads (the inline ones as they are)."""
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(self.model)
        for slot in self.slots:
            take_payload(resolve(skeleton, slot.path))
        for slot in self.inline:
            if slot.path in self.replaced:
                put_payload(resolve(skeleton, slot.path), self.replaced[slot.path])
        return skeleton

    def _values(self, slot: TensorSlot) -> tuple[np.ndarray, ElementType]:
        """What the file stores of ``slot`` before its coding, and its element type."""
        etype = payload_type(slot.tensor)
        assert etype is not None
        values = self.replaced.get(slot.path)
        return (read_payload(slot.tensor, etype) if values is None else values), etype

    def graph_bytes(self, settings: Mapping[TensorPath, Setting]) -> bytes:
        """The graph section under ``settings``: the model without the stored payloads,
        the ones left in it as a decoder would give them (cached per inline change)."""
        changed = [(s, settings[s.path]) for s in self.inline
                   if settings.get(s.path, LOSSLESS) != LOSSLESS]
        key = frozenset((s.path, setting) for s, setting in changed)
        if key not in self._graphs:
            skeleton = onnx.ModelProto()
            skeleton.CopyFrom(self._skeleton)
            for slot, setting in changed:
                values, etype = self._values(slot)
                codec = _codec(setting, self.opts, slot, etype, values.size)
                put_payload(resolve(skeleton, slot.path),
                            _as_decoded(values, etype, codec, self.opts.chunk_elements))
            self._graphs[key] = skeleton.SerializeToString()
        return self._graphs[key]

    def encode(self, slot: TensorSlot, setting: Setting | None) -> EncodedResult:
        """The tensor's encoding with ``setting``, or by the pack options (cached)."""
        key = (slot.path, setting)
        if key not in self._cache:
            values, etype = self._values(slot)
            codec = _codec(setting, self.opts, slot, etype, values.size)
            self._cache[key] = encode_tensor(EncodeJob(Payload.inline(values, etype.name), codec,
                                                       self.opts.chunk_elements))
        return self._cache[key]

    def size_of(self, plan: Mapping[TensorPath, Point], summary: dict[str, Any]) -> int:
        """The size of the file of rate control's ``plan`` that records ``summary``, plus
        :data:`SIZE_SLACK`."""
        sizing = SizingPlan(dict(plan), summary)
        settings, sensitivity = sizing.settings, sizing.sensitivities()
        out = io.BytesIO()
        writer = ContainerWriter(out, writer=f"onnxz {__version__}")
        entries = _Entries(writer)
        for slot in self.slots:
            encoded = self.encode(slot, settings.get(slot.path))
            etype = payload_type(slot.tensor)
            assert etype is not None
            entries.add(slot, etype, encoded, sensitivity.get(slot.path))
        extra = {"source_bytes": self.source_bytes or 0, "rate_control": summary}
        writer.finish(self.graph_bytes(settings), entries.entries, extra)
        return out.tell() + SIZE_SLACK


def _as_decoded(values: np.ndarray, etype: ElementType, codec: TensorCodec,
                chunk_elements: int) -> np.ndarray:
    """``values`` as a decoder gives them back after ``codec`` (what a payload left in the
    graph holds: rounded where rate control or the options round the tensor)."""
    if isinstance(codec, LosslessCodec):
        return values
    try:
        return codec.encode(values, etype, chunk_elements).reconstruction
    except NotQuantizable:
        return values


def _codec(setting: Setting | None, opts: PackOptions, slot: TensorSlot,
           etype: ElementType, count: int) -> TensorCodec:
    """Rate control's codec for a tensor if it chose one, else the options'."""
    if setting is not None:
        return setting.codec(row_length(slot.tensor.dims))
    return opts.codec_for(slot, etype, count)


class _Entries:
    """The index entries of one file, in the order their tensors are added, their chunks
    written. A tensor encoded exactly as an earlier one (the same dtype and element count,
    codec, parameters, and chunks byte for byte) becomes a lossless ``copy`` of it
    (SPEC.md §6.7): one empty chunk, no bytes written. Both the writer and rate control's
    sizing add their tensors here, so ``--max-size`` measures the bytes written.

    Encodings are looked up by dtype, count and sha256 digest (:attr:`EncodedResult.digest`),
    and on a match their codec, parameters, chunk layout and decoded CRC-32 are compared
    again; the chunks' bytes are compared by digest only, so that memory holds one tensor's
    chunks, not the model's.
    """

    def __init__(self, writer: ContainerWriter) -> None:
        self.writer = writer
        self.entries: list[TensorEntry] = []
        self._sources: dict[tuple[str, int, bytes], int] = {}  # -> the first entry's index

    def add(self, slot: TensorSlot, etype: ElementType, encoded: EncodedResult,
            sensitivity: float | None) -> TensorEntry:
        """Write one encoded tensor's chunks (none if it is a copy) and add its entry."""
        tensor = slot.tensor
        count = element_count(tensor)
        key = (etype.name, count, encoded.digest)
        source = self._sources.get(key)
        if source is not None and not _same_encoding(self.entries[source], encoded):
            source = None
        if source is None:
            self.writer.require_minor(encoded.format_minor)
            codec, params = encoded.codec_id, encoded.params
            chunks = tuple(self.writer.add_chunk(c.parts, c.count) for c in encoded.chunks)
            self._sources.setdefault(key, len(self.entries))
        else:
            self.writer.require_minor(COPY_MINOR)
            codec, params = LosslessCodec.codec_id, {"mode": "copy", "of": source}
            chunks = (self.writer.add_chunk([], count),) if count else ()
        entry = TensorEntry(
            name=tensor.name,
            path=slot.path,
            dtype=etype.name,
            shape=tuple(tensor.dims),
            codec=codec,
            params=params,
            chunks=chunks,
            crc32=encoded.crc32,
            entropy_bits=encoded.entropy_bits if source is None else None,
            table_bytes=encoded.table_bytes if source is None else 0,
            sensitivity=sensitivity,
            rounded_bits=encoded.rounded_bits,
        )
        self.entries.append(entry)
        return entry


def _same_encoding(entry: TensorEntry, encoded: EncodedResult) -> bool:
    """Whether ``encoded`` matches the written ``entry`` in all but the chunks' bytes."""
    return (entry.codec == encoded.codec_id and entry.params == encoded.params
            and entry.crc32 == encoded.crc32
            and [(c.count, c.sizes) for c in entry.chunks]
            == [(c.count, tuple(map(len, c.parts))) for c in encoded.chunks])


def _check_written(path: Path, result: ratecontrol.RateResult,
                   target: ratecontrol.RateTarget | None) -> None:
    """Decode the written file and run it on rate control's samples: its outputs must give
    exactly the metrics rate control measured (the same reconstructions), and a size target
    must hold; otherwise nothing is written."""
    if result.reference is not None:
        decoded = load(path)
        if result.reference.metrics(result.reference.run(decoded)) != result.metrics:
            raise OnnxzError("internal error: the written file does not reproduce the "
                             "outputs rate control measured (please report this)")
    if target is not None and target.max_bytes is not None and result.met and (
            path.stat().st_size > target.max_bytes):
        raise OnnxzError("internal error: the file exceeds the size rate control measured "
                         "(please report this)")


def _write_tensors(source: ModelFile, writer: ContainerWriter, opts: PackOptions, workers: int,
                   progress: Progress | None, result: ratecontrol.RateResult | None
                   ) -> list[TensorEntry]:
    """Encode every stored tensor (in walk order, ``workers`` at a time) with rate control's
    settings where ``result`` has them and the options' codecs elsewhere, write its chunks,
    and empty its slot in ``source.proto``. Payloads under ``opts.inline_max_bytes`` stay in
    the graph as a decoder would give them (external ones move inline)."""
    stored = [t for t in source.tensors if t.nbytes >= opts.inline_max_bytes]
    settings = result.settings if result is not None else {}
    sensitivity = result.sensitivities() if result is not None else {}
    # the values rate control changed: normalizations without their statistics, corrected
    # biases (from those), weights rounded with feedback
    replaced = ({**result.folded, **result.corrections, **result.rounded}
                if result is not None else {})
    for t in source.tensors:
        if t.nbytes >= opts.inline_max_bytes:
            continue
        codec = _codec(settings.get(t.slot.path), opts, t.slot, t.etype, t.count)
        if (t.external is not None or t.slot.path in replaced
                or not isinstance(codec, LosslessCodec)):
            values = replaced.get(t.slot.path)
            values = t.payload().read() if values is None else values
            _make_internal(t.slot.tensor)
            put_payload(t.slot.tensor, _as_decoded(values, t.etype, codec, opts.chunk_elements))
    total_bytes = sum(t.nbytes for t in stored)
    workers = 1 if total_bytes < PARALLEL_MIN_BYTES else min(workers, len(stored))
    jobs = (EncodeJob(Payload.inline(replaced[t.slot.path], t.etype.name)
                      if t.slot.path in replaced else t.payload(),
                      _codec(settings.get(t.slot.path), opts, t.slot, t.etype, t.count),
                      opts.chunk_elements)
            for t in stored)
    entries = _Entries(writer)
    done_bytes = 0
    with WorkerPool(workers) as pool:
        results = pool.map(encode_tensor, jobs, in_flight=workers + 1)
        for done, (t, encoded) in enumerate(zip(stored, results, strict=True), 1):
            entries.add(t.slot, t.etype, encoded, sensitivity.get(t.slot.path))
            take_payload(t.slot.tensor)
            _make_internal(t.slot.tensor)
            done_bytes += t.nbytes
            notify(progress, ProgressUpdate(done, len(stored), done_bytes, total_bytes,
                                            t.slot.tensor.name))
    return entries.entries


def _make_internal(tensor: onnx.TensorProto) -> None:
    """Forget where an external tensor's data was (its payload now lives elsewhere)."""
    del tensor.external_data[:]
    tensor.ClearField("data_location")


def _check_callable(value: object, name: str) -> None:
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"{name} must be callable or None, not {value!r}")


@contextlib.contextmanager
def _about(path: Path | None, work: str) -> Iterator[None]:
    """Errors raised inside name ``path`` as the file they are about (``OnnxzError.path``);
    running out of memory becomes an :class:`OutOfMemoryError` saying during which ``work``."""
    try:
        yield
    except OnnxzError as exc:
        if exc.path is None and path is not None:
            exc.path = str(path)
        raise
    except MemoryError as exc:
        error = OutOfMemoryError(f"out of memory while {work}")
        error.path = None if path is None else str(path)
        raise error from exc


def load(path: str | os.PathLike, *, limits: ReadLimits | None = None,
         workers: int | None = None) -> onnx.ModelProto:
    """Decode an onnxz file into an ``onnx.ModelProto`` with every weight restored.

    ``workers`` processes decode chunks in parallel (None: the available cores).
    """
    limits = check_limits(limits)
    workers = check_workers(workers)
    source = check_input(path, "path")
    with _about(source, "decoding"), Reader(source, limits=limits, workers=workers) as reader:
        model = reader.graph()  # its checks come before the budget (SPEC.md §10.2)
        reader.check_output_budget()
        for tensor, (_, values) in zip(reader.slots(model), reader.decode(), strict=True):
            put_payload(tensor, values)
    return model


def open(path: str | os.PathLike, *, limits: ReadLimits | None = None,
         workers: int | None = None) -> Reader:
    """Open an onnxz file for random access: ``reader.tensors`` lists every stored tensor's
    metadata, ``reader.tensor(name)`` decodes one, reading only its own chunks.

    >>> with onnxz.open("model.onnxz") as reader:          # doctest: +SKIP
    ...     w = reader.tensor("fc.weight")
    """
    limits = check_limits(limits)
    workers = check_workers(workers)
    source = check_input(path, "path")
    with _about(source, "reading the index"):
        return Reader(source, limits=limits, workers=workers)


def unpack(
    path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    force: bool = False,
    external_data: bool | None = None,
    limits: ReadLimits | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    external_data_file: str | os.PathLike | None = None,
) -> Path:
    """Decode ``path`` and write a runnable ONNX model to ``output``.

    Tensors of 1 KiB or more go to an external data file beside it when ``external_data``
    is True, or when None and the model would pass protobuf's 2 GiB limit: the file
    ``external_data_file`` if given (a relative path is taken from the output's folder, and
    the file must be in that folder or below it; giving it implies ``external_data``), else
    ``<output>.data``. Tensors are decoded (``workers`` processes) and written one at a
    time. Returns the output path.
    """
    out = as_path(output, "output")
    boolean(force, "force")
    if external_data is not None:
        boolean(external_data, "external_data")
    limits = check_limits(limits)
    workers = check_workers(workers)
    _check_callable(progress, "progress")
    named = None if external_data_file is None else as_path(external_data_file,
                                                            "external_data_file")
    if named is not None and external_data is False:
        raise InvalidArgumentError("external_data_file given with external_data=False")
    source = check_input(path, "path")
    check_outputs([out], force, [source])  # before the decoding work, again when writing
    with _about(source, "decoding"), Reader(source, limits=limits, workers=workers) as reader:
        model = reader.graph()  # its checks come before the budget (SPEC.md §10.2)
        reader.check_output_budget()
        data_file = _external_data_file(out, external_data, named, reader)
        outputs = [out] if data_file is None else [out, data_file]
        with atomic_outputs(outputs, force, [source]) as temps:
            if data_file is None:
                with builtins.open(temps[0], "wb", buffering=UNPACK_WRITE_BUFFER) as f:
                    _write_streamed(reader, model, f, progress)
            else:
                slots = reader.slots(model)
                decoded = _with_progress(reader, progress)
                location = data_file.relative_to(out.parent).as_posix()
                with builtins.open(temps[1], "wb", buffering=UNPACK_WRITE_BUFFER) as f:
                    data = ExternalDataWriter(f, location)
                    for tensor, (_, values) in zip(slots, decoded, strict=True):
                        if values.nbytes >= EXTERNAL_MIN_BYTES:
                            data.add(tensor, values)
                        else:
                            put_payload(tensor, values)
                temps[0].write_bytes(_serialized(model))
    return out


def _write_streamed(reader: Reader, model: onnx.ModelProto, file: IO[bytes],
                    progress: Progress | None) -> None:
    """Write the decoded model to ``file`` as :class:`ModelStream` does: payloads go from
    the decoder to the file in the order of the fields, never into the ModelProto."""
    entries = reader.entries
    with _first_fault_in_index_order(reader, model):
        for _ in reader.slots(model):
            pass
        stream = ModelStream.plan(model, [
            (e.path, decoded_bytes(e)) for e in entries])
    if stream.size > PROTOBUF_LIMIT:
        raise LimitExceededError(
            f"the decoded model is past protobuf's 2 GiB limit ({stream.size} bytes); write "
            "its weights to an external data file (--external-data)")
    with _first_fault_in_index_order(reader, model):
        decoded = _with_progress(reader, progress, [entries[k] for k in stream.order])
        stream.write(file, (values for _, values in decoded))


@contextlib.contextmanager
def _first_fault_in_index_order(reader: Reader, model: onnx.ModelProto) -> Iterator[None]:
    """On an error, take the tensors again in the order of the index, each slot checked
    before its decoding, and raise the first fault found: the one SPEC.md §10.2 names
    first, where the block met another (it checks every slot first, or decodes in another
    order)."""
    try:
        yield
    except OnnxzError:
        reader.check_in_order(model)
        raise


def _with_progress(reader: Reader, progress: Progress | None,
                   entries: Sequence[TensorEntry] | None = None
                   ) -> Iterator[tuple[TensorEntry, np.ndarray]]:
    """``reader.decode(entries)``, each tensor reported to ``progress`` (none built without
    one)."""
    if progress is None:
        yield from reader.decode(entries)
        return
    total = sum(map(decoded_bytes, reader.entries))
    done = 0
    for count, (entry, values) in enumerate(reader.decode(entries), 1):
        done += values.nbytes
        yield entry, values
        notify(progress, ProgressUpdate(count, len(reader.entries), done, total, entry.name))


def _external_data_file(out: Path, external_data: bool | None, named: Path | None,
                        reader: Reader) -> Path | None:
    """The external data file to write, or None for one self-contained .onnx."""
    if external_data is None and named is None:
        decoded = sum(map(decoded_bytes, reader.entries))
        overhead = 64 * len(reader.entries) + (1 << 20)  # tags and lengths, generously
        external_data = reader.graph_raw_bytes + decoded + overhead >= PROTOBUF_LIMIT
    if external_data is False or (external_data is None and named is None):
        return None
    if named is None:
        return out.with_name(out.name + ".data")
    file = out.parent / named
    folder = out.parent.resolve()
    resolved = file.parent.resolve() / file.name
    if folder not in resolved.parents:
        raise OutputPathError(f"{named}: the external data file must be in the output's "
                              f"folder ({out.parent}), as ONNX locates it relative to the model")
    if resolved == out.resolve():
        raise OutputPathError(f"{named}: the external data file cannot be the output model")
    return out.parent / resolved.relative_to(folder)


def _serialized(model: onnx.ModelProto) -> bytes:
    try:
        return model.SerializeToString()
    except (EncodeError, ValueError) as exc:
        raise LimitExceededError(
            f"the decoded model is past protobuf's 2 GiB limit ({exc}); write its weights "
            "to an external data file (--external-data)") from exc


def info(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> ContainerInfo:
    """Per-tensor codec, step, sizes and totals of an onnxz file (reads the index only)."""
    limits = check_limits(limits)
    source = check_input(path, "path")
    with _about(source, "reading the index"), ContainerReader(source, limits) as reader:
        return ContainerInfo.from_index(str(source), reader.file_size, reader.index)


def inference_session(
    path: str | os.PathLike,
    sess_options: object | None = None,
    providers: Sequence[str] | None = None,
    *,
    limits: ReadLimits | None = None,
    workers: int | None = None,
) -> onnxruntime.InferenceSession:
    """An ``onnxruntime.InferenceSession`` of the decoded model, built in memory (nothing is
    written to disk), for models of any size.

    The main graph's initializers of 1 KiB or more that a node reads reach onnxruntime as
    OrtValues (``SessionOptions.add_external_initializers``) instead of inside the
    serialized model, so a model past protobuf's 2 GiB limit works too; the session keeps
    their arrays alive. (onnxruntime drops an initializer no node reads before it takes
    the OrtValues, and then refuses an OrtValue for it: those stay in the model.) The
    given ``sess_options`` receives those initializers, so pass a fresh one per session.
    """
    import onnxruntime as ort

    if sess_options is not None and not isinstance(sess_options, ort.SessionOptions):
        raise InvalidArgumentError(f"sess_options must be an onnxruntime.SessionOptions, not "
                                   f"{type(sess_options).__name__}")
    available = ort.get_available_providers()
    if providers is not None and not (isinstance(providers, list | tuple)
                                      and all(p in available for p in providers)):
        raise InvalidArgumentError(f"providers must be a list of names among {available}, "
                                   f"not {providers!r}")
    limits = check_limits(limits)
    workers = check_workers(workers)
    options = sess_options if sess_options is not None else ort.SessionOptions()
    return _decoded_session(check_input(path, "path"), options, providers=providers, limits=limits,
                            workers=workers)


def _decoded_session(source: Path, options: object, probe: Probe | None = None, *,
                     providers: list[str] | None = None, limits: ReadLimits | None = None,
                     workers: int | None = None):
    """:func:`inference_session` of checked arguments, of the model as ``probe`` changes it
    (verify's extra outputs and pins)."""
    with _about(source, "decoding"), Reader(source, limits=limits, workers=workers) as reader:
        model = reader.graph()  # its checks come before the budget (SPEC.md §10.2)
        reader.check_output_budget()
        slots = reader.slots(model)
        read = consumers(model)
        names, arrays = [], []
        for tensor, (entry, values) in zip(slots, reader.decode(), strict=True):
            if (len(entry.path) == 3 and tuple(entry.path[:2]) == ("graph", "initializer")
                    and goes_outside(tensor, values.nbytes, read)):
                names.append(tensor.name)
                arrays.append(values.reshape(entry.shape))
                point_to_placeholder(tensor, values.nbytes)
            else:
                put_payload(tensor, values)
    if probe is not None:
        probe.apply(model)
    try:
        session = session_with_initializers(_serialized(model), options, names, arrays,
                                            providers or ["CPUExecutionProvider"])
    except OnnxzError:
        raise
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        error = UnsupportedModelError(f"onnxruntime cannot load the decoded model: "
                                      f"{first_line(exc)}")
        error.path = os.fsdecode(source)
        raise error from exc
    return session


def verify(
    original: onnx.ModelProto | str | os.PathLike,
    packed: str | os.PathLike,
    inputs: InputsArg = None,
    thresholds: Thresholds | Fidelity | str | None = None,
    *,
    class_outputs: Sequence[str] = (),
    noise_floor: float | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run ``original`` (.onnx path or ModelProto) and ``packed`` (.onnxz) on the same samples
    and compare their outputs against ``thresholds``.

    ``inputs``: None or :class:`onnxz.GeneratedInputs` for seeded generated samples, a mapping
    input name -> array of N stacked samples, an ``.npz`` path of the same, or an ONNX
    test-data folder (``test_data_set_*/input_*.pb``). ``thresholds``: :class:`Thresholds`
    (the default), or a fidelity target (:class:`onnxz.Fidelity` or a string such as
    ``"top1>=0.995,snr>=25"``). ``class_outputs`` names outputs to treat as class scores
    beyond those the graph and data show. Raises :class:`onnxz.VerificationInputError` if
    the inputs do not fit the model, :class:`onnxz.TargetSpecError` for criteria that name
    no output or apply to none, and :class:`onnxz.InputNotFoundError` for a missing file; a
    model that fails to load or run gives a report with ``passed`` False and ``error``
    naming why. ``noise_floor`` overrides the thresholds' (see :class:`Thresholds`).
    ``progress(done, total, name)`` is called after each sample.
    """
    _check_callable(progress, "progress")
    packed_path = check_input(packed, "packed")
    return verifier.verify(
        original, packed_path,
        lambda options, probe: _decoded_session(packed_path, options, probe),
        inputs, thresholds, class_outputs=names(class_outputs, "class_outputs"),
        noise_floor=noise_floor,
        progress=progress)
