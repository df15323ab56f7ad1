"""The Python API: save, load, unpack, info, inference_session. The CLI calls only these."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, set_external_data

from onnxz import __version__, ratecontrol, verifier
from onnxz.arguments import as_path, boolean
from onnxz.codecs import NotQuantizable, codec_class
from onnxz.codecs.base import EncodedTensor
from onnxz.codecs.lossless import LosslessCodec
from onnxz.container import (
    MAGIC,
    ContainerReader,
    ContainerWriter,
    ReadLimits,
    TensorEntry,
    crc32,
)
from onnxz.dtypes import BY_NAME, ElementType
from onnxz.errors import (
    CorruptDataError,
    FormatError,
    InvalidArgumentError,
    InvalidModelError,
    LimitExceededError,
    OnnxzError,
    OutOfMemoryError,
    TargetNotMetError,
    TargetSpecError,
    UnsupportedModelError,
    first_line,
)
from onnxz.fidelity import Fidelity
from onnxz.fileio import atomic_outputs, check_input, check_outputs, utf8_spelling
from onnxz.inputs import InputsArg
from onnxz.policy import DEFAULT_STEP_REL, PackOptions
from onnxz.progress import Progress
from onnxz.ratecontrol.search import SizingPlan
from onnxz.ratecontrol.tensors import Point, Setting
from onnxz.report import ContainerInfo
from onnxz.verifier import Thresholds, VerifyReport
from onnxz.walker import (
    Path as TensorPath,
)
from onnxz.walker import (
    TensorSlot,
    element_count,
    has_payload,
    iter_tensor_slots,
    iter_tensors,
    payload_type,
    put_payload,
    read_payload,
    resolve,
    take_payload,
)

ModelSource = onnx.ModelProto | str | os.PathLike

SIZE_SLACK = 64
"""Bytes added to every size rate control measures: the index records the achieved figures
only once they are known, and their compressed size may differ by a few bytes."""

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_MIN_BYTES = 1024
EXTERNAL_ALIGNMENT = 4096


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
    fidelity: Fidelity | str | None = None,
    inputs: InputsArg = None,
    max_size: int | str | None = None,
    target_snr: float | None = None,
    best_effort: bool = False,
    class_outputs: Sequence[str] = (),
) -> ContainerInfo:
    """Pack an ONNX model (a ModelProto or a path) into an onnxz file at ``path``.

    The default is lossy and rate-controlled: every weight tensor's step is chosen so that
    the outputs keep the default target on generated inputs (or on ``inputs``), checked in
    onnxruntime before the file appears (see :mod:`onnxz.ratecontrol.defaults` for what it
    guarantees). ``lossless=True`` is bit-exact; ``step_rel`` (× each tensor's spread) and
    ``deadzone`` give every weight tensor one uniform quantizer. ``options`` sets the rest;
    the keyword arguments override it.

    Rate control chooses every weight tensor's step for a target instead:
    ``fidelity`` (e.g. ``"top1>=0.995"``, checked on ``inputs``: an .npz, a test-data
    folder, arrays, or None for generated samples), ``max_size`` (bytes of the whole file,
    an int or e.g. ``"2MB"``), or ``target_snr`` (dB of weight SNR for every quantized
    tensor). The file is verified on the inputs before it appears; a target that cannot be
    met raises :class:`TargetNotMetError` unless ``best_effort`` (then the closest file is
    written and ``info.rate_control["met"]`` is False). ``class_outputs`` names outputs to
    treat as class scores.

    The output appears only when complete; an existing one needs ``force=True``.
    Returns what :func:`info` would report on the new file.
    """
    base = PackOptions() if options is None else options
    if not isinstance(base, PackOptions):
        raise InvalidArgumentError(f"options must be a PackOptions, not {type(base).__name__}")
    boolean(lossless, "lossless")
    boolean(force, "force")
    _check_callable(progress, "progress")
    opts = dataclasses.replace(
        base,
        lossless=lossless or base.lossless,
        step_rel=base.step_rel if step_rel is None else step_rel,
        deadzone=base.deadzone if deadzone is None else deadzone,
    )
    if deadzone is not None and opts.step_rel is None and not opts.lossless:
        opts = dataclasses.replace(opts, step_rel=DEFAULT_STEP_REL)
    target = _rate_target(fidelity, max_size, target_snr)
    if target is not None and opts.uniform:
        raise TargetSpecError("a rate target chooses the steps itself: it cannot be combined "
                              "with lossless, step_rel or deadzone")
    if opts.uniform and (inputs is not None or class_outputs):
        raise TargetSpecError("inputs and class_outputs apply to rate control: not with "
                              "lossless or step_rel")
    boolean(best_effort, "best_effort")
    output = as_path(path, "path")
    if not isinstance(model, onnx.ModelProto):  # the output is checked before the work
        check_outputs([output], force, [check_input(model, "model")])
    model_proto, files = _read_model(model)
    with _about(files[0] if files else None, "packing"):
        packer = _Packer(model_proto, opts,
                         sum(p.stat().st_size for p in files) if files else None)
    with atomic_outputs([output], force, files) as (tmp,):
        result = None
        if not opts.uniform:
            with _about(files[0] if files else None, "choosing the steps"):
                result = ratecontrol.choose(
                    model_proto, target, inputs, size_of=packer.size_of,
                    options=opts, class_outputs=class_outputs,
                    progress=progress)
            if not result.met and not best_effort:
                why = result.note or "even the coarsest quantization misses it"
                raise TargetNotMetError(f"{target}: cannot be met ({why}); use best_effort "
                                        "(--best-effort) to write the closest file")
        with _about(files[0] if files else None, "packing"), open(tmp, "wb") as f:
            packer.write(ContainerWriter(f, writer=f"onnxz {__version__}"), result, progress)
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
    return ratecontrol.RateTarget(
        fidelity=Fidelity.parse(fidelity) if isinstance(fidelity, str) else fidelity,
        max_bytes=None if max_size is None else ratecontrol.parse_size(max_size),
        target_snr_db=target_snr)


class _Packer:
    """Encodes a model's tensors into containers, remembering every tensor's encoding so
    that rate control can size many plans and the chosen one is written without re-encoding.

    The graph section (the model without the payloads that go to chunks) is the same for
    every plan and is built once.
    """

    def __init__(self, model: onnx.ModelProto, opts: PackOptions,
                 source_bytes: int | None) -> None:
        self.model, self.opts, self.source_bytes = model, opts, source_bytes
        self.slots = [s for s in iter_tensor_slots(model) if payload_type(s.tensor) is not None
                      and read_payload(s.tensor, payload_type(s.tensor)).nbytes
                      >= opts.inline_max_bytes]
        self._cache: dict[tuple[TensorPath, Setting | None], EncodedTensor] = {}
        self._graph: bytes | None = None

    def graph_bytes(self) -> bytes:
        if self._graph is None:
            skeleton = onnx.ModelProto()
            skeleton.CopyFrom(self.model)
            for slot in self.slots:
                take_payload(resolve(skeleton, slot.path))
            self._graph = skeleton.SerializeToString()
        return self._graph

    def encode(self, slot: TensorSlot, setting: Setting | None) -> EncodedTensor:
        """The tensor's encoding: with ``setting`` if rate control chose one, else by the
        pack options (cached)."""
        key = (slot.path, setting)
        if key not in self._cache:
            etype = payload_type(slot.tensor)
            assert etype is not None
            values = read_payload(slot.tensor, etype)
            codec = (setting.codec() if setting is not None
                     else self.opts.codec_for(slot, etype, values.size))
            try:
                encoded = codec.encode(values, etype, self.opts.chunk_elements)
            except NotQuantizable:
                encoded = LosslessCodec().encode(values, etype, self.opts.chunk_elements)
            self._cache[key] = encoded
        return self._cache[key]

    def write(self, writer: ContainerWriter,
              result: ratecontrol.RateResult | SizingPlan | None,
              progress: Progress | None = None) -> None:
        """Write every tensor (with rate control's settings and sensitivities if ``result``
        is given, recording its summary) and finish the file."""
        extra: dict[str, Any] = {} if self.source_bytes is None else {
            "source_bytes": self.source_bytes}
        settings: Mapping[TensorPath, Setting] = {}
        sensitivity: dict[TensorPath, float] = {}
        if result is not None:
            extra["rate_control"] = result.summary()
            settings = result.settings
            sensitivity = result.sensitivities()
            writer.require_minor(1)
        entries = []
        for done, slot in enumerate(self.slots, 1):
            encoded = self.encode(slot, settings.get(slot.path))
            etype = payload_type(slot.tensor)
            assert etype is not None
            entries.append(TensorEntry(
                name=slot.tensor.name,
                path=slot.path,
                dtype=etype.name,
                shape=tuple(slot.tensor.dims),
                codec=encoded.codec_id,
                params=encoded.params,
                chunks=tuple(writer.add_chunk(c.parts, c.count) for c in encoded.chunks),
                crc32=crc32(encoded.reconstruction.tobytes()),
                entropy_bits=encoded.entropy_bits,
                table_bytes=encoded.table_bytes,
                sensitivity=sensitivity.get(slot.path),
            ))
            writer.require_minor(encoded.format_minor)
            if progress:
                progress(done, len(self.slots), slot.tensor.name)
        writer.finish(self.graph_bytes(), entries, extra)

    def size_of(self, plan: Mapping[TensorPath, Point], summary: dict[str, Any]) -> int:
        """The size of the file of rate control's ``plan`` that records ``summary``, plus
        :data:`SIZE_SLACK`."""
        out = io.BytesIO()
        self.write(ContainerWriter(out, writer=f"onnxz {__version__}"),
                   SizingPlan(dict(plan), summary))
        return out.tell() + SIZE_SLACK


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


def _check_callable(value: object, name: str) -> None:
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"{name} must be callable or None, not {value!r}")


def _check_limits(limits: object) -> ReadLimits | None:
    if limits is not None and not isinstance(limits, ReadLimits):
        raise InvalidArgumentError(f"limits must be a ReadLimits, not {type(limits).__name__}")
    return limits


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


def load(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> onnx.ModelProto:
    """Decode an onnxz file into an ``onnx.ModelProto`` with every weight restored."""
    limits = _check_limits(limits)
    source = check_input(path)
    with _about(source, "decoding"):
        return _load(source, limits)


def _load(source: Path, limits: ReadLimits | None) -> onnx.ModelProto:
    with ContainerReader(source, limits) as reader:
        try:
            model = onnx.ModelProto.FromString(reader.graph_bytes())
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise FormatError(f"graph: not a valid ONNX ModelProto ({exc})") from exc
        for entry in reader.index.tensors:
            if entry.dtype not in BY_NAME:
                raise FormatError(f"tensor {entry.name!r}: unknown dtype {entry.dtype!r}")
        total = sum(e.element_count * BY_NAME[e.dtype].width for e in reader.index.tensors)
        budget = reader.limits.output_budget(reader.file_size)
        if total > budget:
            raise LimitExceededError(
                f"tensors: decoded size {total} bytes would exceed the limit of {budget} bytes "
                "(raise it with --max-output-size or ReadLimits.max_output_size)"
            )
        for entry in reader.index.tensors:
            tensor = resolve(model, entry.path)
            etype = BY_NAME[entry.dtype]
            if (tensor.name, tensor.data_type, tuple(tensor.dims)) != (
                entry.name, etype.onnx_type, entry.shape
            ):
                raise FormatError(f"tensor {entry.name!r}: index does not match the graph")
            if payload_type(tensor) is None or has_payload(tensor):
                raise FormatError(f"tensor {entry.name!r}: graph slot already holds data")
            put_payload(tensor, _decode(reader, entry, etype))
    for tensor_path, tensor in iter_tensors(model):
        if payload_type(tensor) and element_count(tensor) and not has_payload(tensor):
            raise FormatError(f"graph: tensor {tensor.name!r} at {list(tensor_path)} has no "
                              "data and no index entry (SPEC.md §5.2)")
    return model


def _decode(reader: ContainerReader, entry: TensorEntry, etype: ElementType) -> np.ndarray:
    """The decoded elements of one tensor entry, checksum-verified.

    Every chunk's CRC is checked first; any failure inside a codec becomes an OnnxzError.
    """
    chunks = [reader.chunk_parts(c, entry.name) for c in entry.chunks]
    values = np.empty(entry.element_count, dtype=etype.numpy)
    try:
        decoder = codec_class(entry.codec).decoder(entry.params, etype)
        start = 0
        for parts, chunk in zip(chunks, entry.chunks, strict=True):
            decoder.decode_into(parts, values[start : start + chunk.count])
            start += chunk.count
    except OnnxzError as exc:
        raise type(exc)(f"tensor {entry.name!r}: {exc}") from exc
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise FormatError(
            f"tensor {entry.name!r}: malformed {entry.codec} stream ({exc})") from exc
    if crc32(values) != entry.crc32:
        raise CorruptDataError(f"tensor {entry.name!r}: decoded tensor checksum mismatch")
    return values


def unpack(
    path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    force: bool = False,
    external_data: bool | None = None,
    limits: ReadLimits | None = None,
) -> Path:
    """Decode ``path`` and write a runnable ONNX model to ``output``.

    Weights go to ``<output>.data`` beside it when ``external_data`` is True, or when None
    and the model is too large for one protobuf (2 GiB). Returns the output path.
    """
    source = check_input(path)
    out = as_path(output, "output")
    boolean(force, "force")
    if external_data is not None:
        boolean(external_data, "external_data")
    check_outputs([out], force, [source])  # before the decoding work, again when writing
    model = load(source, limits=limits)
    if external_data is None:
        external_data = model.ByteSize() >= PROTOBUF_LIMIT
    if not external_data:
        with atomic_outputs([out], force, [source]) as (tmp,):
            tmp.write_bytes(model.SerializeToString())
        return out
    data_name = out.name + ".data"
    with atomic_outputs([out, out.with_name(data_name)], force, [source]) as (tmp, tmp_data):
        with open(tmp_data, "wb") as data_file:
            for slot in iter_tensor_slots(model):
                if len(slot.tensor.raw_data) >= EXTERNAL_MIN_BYTES:
                    data_file.write(b"\0" * (-data_file.tell() % EXTERNAL_ALIGNMENT))
                    offset = data_file.tell()
                    data_file.write(slot.tensor.raw_data)
                    set_external_data(slot.tensor, data_name, offset, len(slot.tensor.raw_data))
                    slot.tensor.ClearField("raw_data")
                    slot.tensor.data_location = onnx.TensorProto.EXTERNAL
        tmp.write_bytes(model.SerializeToString())
    return out


def info(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> ContainerInfo:
    """Per-tensor codec, step, sizes and totals of an onnxz file (reads the index only)."""
    limits = _check_limits(limits)
    source = check_input(path)
    with _about(source, "reading the index"), ContainerReader(source, limits) as reader:
        return ContainerInfo.from_index(str(source), reader.file_size, reader.index)


def inference_session(
    path: str | os.PathLike,
    sess_options: object | None = None,
    providers: list[str] | None = None,
    *,
    limits: ReadLimits | None = None,
):
    """An ``onnxruntime.InferenceSession`` of the decoded model, built in memory."""
    import onnxruntime as ort

    if sess_options is not None and not isinstance(sess_options, ort.SessionOptions):
        raise InvalidArgumentError(f"sess_options must be an onnxruntime.SessionOptions, not "
                                   f"{type(sess_options).__name__}")
    available = ort.get_available_providers()
    if providers is not None and not (isinstance(providers, list | tuple)
                                      and all(p in available for p in providers)):
        raise InvalidArgumentError(f"providers must be a list of names among {available}, "
                                   f"not {providers!r}")
    model = load(path, limits=limits)
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options,
                                    providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        error = UnsupportedModelError(f"onnxruntime cannot load the decoded model: "
                                      f"{first_line(exc)}")
        error.path = os.fsdecode(path)
        raise error from exc


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
    packed_path = check_input(packed, "packed")
    return verifier.verify(
        original, packed_path, lambda options: inference_session(packed_path, options),
        inputs, thresholds, class_outputs=class_outputs, noise_floor=noise_floor,
        progress=progress)


def _read_model(model: ModelSource) -> tuple[onnx.ModelProto, list[Path]]:
    """A private, fully loaded copy of the model, and the files it was read from (the
    .onnx file, then its external data files; none for a ModelProto)."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        if any(s.tensor.data_location == onnx.TensorProto.EXTERNAL
               for s in iter_tensor_slots(copy)):
            raise UnsupportedModelError(
                "the ModelProto refers to external data files: pass its path instead"
            )
        return copy, []
    path = check_input(model, "model")
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            raise InvalidModelError(f"{path}: is an onnxz file, not an ONNX model")
    try:
        proto = onnx.load(path, load_external_data=False)
    except MemoryError as exc:
        raise OutOfMemoryError(f"{path}: out of memory while reading the model") from exc
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        if "Arena alloc failed" in str(exc):  # protobuf's way of running out of memory
            raise OutOfMemoryError(f"{path}: out of memory while reading the model") from exc
        raise InvalidModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    missing = [what for what, absent in (
        ("IR version", proto.ir_version <= 0), ("graph", not proto.HasField("graph")),
        ("opset_import", not proto.opset_import)) if absent]
    if missing:
        raise InvalidModelError(f"{path}: not an ONNX model (no {' and no '.join(missing)})")
    data_files = sorted({path.parent / location for location in _external_locations(proto)})
    try:
        with utf8_spelling(path.parent) as folder:
            load_external_data_for_model(proto, folder)
    except MemoryError as exc:
        raise OutOfMemoryError(f"{path}: out of memory while reading its external data") from exc
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise InvalidModelError(f"{path}: cannot read its external data ({exc})") from exc
    return proto, [path, *data_files]


def _external_locations(model: onnx.ModelProto) -> set[str]:
    """The ``location`` of every tensor stored in an external data file."""
    return {entry.value for _, tensor in iter_tensors(model)
            if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data if entry.key == "location"}
