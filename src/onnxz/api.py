"""The Python API: save, load, unpack, info, inference_session. The CLI calls only these."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, set_external_data

from onnxz import __version__
from onnxz.arguments import as_path, boolean
from onnxz.codecs import NotQuantizable, codec_class
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
    UnsupportedModelError,
    first_line,
)
from onnxz.fileio import atomic_outputs, check_input, check_outputs, utf8_spelling
from onnxz.policy import PackOptions
from onnxz.report import ContainerInfo
from onnxz.walker import (
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
Progress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, tensor_name)`` after each tensor."""

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
) -> ContainerInfo:
    """Pack an ONNX model (a ModelProto or a path) into an onnxz file at ``path``.

    The default is lossy: weight tensors get the dead-zone quantizer with step
    ``step_rel`` × the tensor's spread (see :class:`PackOptions`); ``lossless=True`` is
    bit-exact. ``options`` sets the rest; the keyword arguments override it.
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
    output = as_path(path, "path")
    if not isinstance(model, onnx.ModelProto):  # the output is checked before the work
        check_outputs([output], force, [check_input(model, "model")])
    model_proto, files = _read_model(model)
    with atomic_outputs([output], force, files) as (tmp,):
        with _about(files[0] if files else None, "packing"), open(tmp, "wb") as f:
            writer = ContainerWriter(f, writer=f"onnxz {__version__}")
            entries = _write_tensors(model_proto, writer, opts, progress)
            extra = {"source_bytes": sum(p.stat().st_size for p in files)} if files else {}
            writer.finish(model_proto.SerializeToString(), entries, extra)
        # Read the new file back before it gets its name: what cannot be read never appears.
        with _about(output, "reading it back"), ContainerReader(tmp) as reader:
            written = ContainerInfo.from_index(str(output), reader.file_size, reader.index)
    return written


def _write_tensors(
    model: onnx.ModelProto, writer: ContainerWriter, opts: PackOptions, progress: Progress | None
) -> list[TensorEntry]:
    slots = [s for s in iter_tensor_slots(model) if payload_type(s.tensor) is not None]
    entries = []
    for done, slot in enumerate(slots, 1):
        etype = payload_type(slot.tensor)
        assert etype is not None
        values = read_payload(slot.tensor, etype)
        if values.nbytes >= opts.inline_max_bytes:
            codec = opts.codec_for(slot, etype, values.size)
            try:
                encoded = codec.encode(values, etype, opts.chunk_elements)
            except NotQuantizable:
                encoded = LosslessCodec().encode(values, etype, opts.chunk_elements)
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
            ))
            writer.require_minor(encoded.format_minor)
            take_payload(slot.tensor)
        if progress:
            progress(done, len(slots), slot.tensor.name)
    return entries


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
