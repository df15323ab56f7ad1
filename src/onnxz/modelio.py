"""ONNX model files, one tensor at a time: read payloads by offset, write external data.

An ONNX model past protobuf's 2 GiB limit keeps its weights in *external data* files next
to the ``.onnx`` (``TensorProto.data_location == EXTERNAL``, with ``location``, ``offset``
and ``length`` entries, the location relative to the model's folder). This module never
loads a whole model's weights at once:

* :func:`open_model` parses the ``.onnx`` without its external data and gives each tensor
  payload as a :class:`Payload`, which reads its bytes only when asked, with positioned
  reads that check lengths (no memory map: a file truncated underneath gives an error,
  not SIGBUS);
* :class:`ExternalDataWriter` appends tensors to a data file as they come and points their
  TensorProtos at them.

>>> import numpy as np
>>> Payload.inline(np.arange(3, dtype=np.float32), "float32").read().tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from onnxz.container import MAGIC, read_exactly
from onnxz.dtypes import BY_NAME, ElementType, element_type
from onnxz.errors import (
    CorruptDataError,
    InvalidModelError,
    OutOfMemoryError,
    UnsupportedModelError,
)
from onnxz.fileio import check_input
from onnxz.walker import (
    TensorSlot,
    element_count,
    iter_tensor_slots,
    read_payload,
    take_payload,
)

PROTOBUF_LIMIT = 2**31 - 1
"""Largest serialized protobuf message (bytes); a bigger model needs external data."""

EXTERNAL_MIN_BYTES = 1024
"""Payloads of at least this many bytes go to the external data file when one is written."""

EXTERNAL_ALIGNMENT = 4096
"""Offset alignment of tensors in a written external data file (lets readers map pages)."""


@dataclass(frozen=True)
class Payload:
    """Where one tensor's elements are: in memory (``values``) or in an external data file
    (``file``, ``offset``, ``length``). Picklable, so a worker process can read it itself."""

    dtype: str
    count: int
    values: np.ndarray | None = None
    file: str | None = None
    offset: int = 0
    length: int = 0

    @classmethod
    def inline(cls, values: np.ndarray, dtype: str) -> Payload:
        return cls(dtype, values.size, values=values)

    @property
    def nbytes(self) -> int:
        return self.count * BY_NAME[self.dtype].width

    def read(self) -> np.ndarray:
        """The elements as a flat array of the dtype's numpy type."""
        if self.values is not None:
            return self.values
        assert self.file is not None
        fd = os.open(self.file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            data = read_exactly(fd, self.offset, self.length, f"{self.file}")
        except CorruptDataError as exc:
            raise InvalidModelError(f"external data: {exc}") from exc
        finally:
            os.close(fd)
        return np.frombuffer(data, dtype=BY_NAME[self.dtype].numpy)


@dataclass(frozen=True)
class ModelTensor:
    """One tensor payload of the model: its slot (path, proto, weight or not), its element
    type, and its external data (None when the payload is inside the proto)."""

    slot: TensorSlot
    etype: ElementType
    external: Payload | None = None

    @property
    def count(self) -> int:
        return element_count(self.slot.tensor)

    @property
    def nbytes(self) -> int:
        return self.count * self.etype.width

    def payload(self) -> Payload:
        """Where the elements are; an inline payload is copied out of the proto only now
        (protobuf hands out a new copy of ``raw_data`` each time it is read)."""
        if self.external is not None:
            return self.external
        return Payload.inline(read_payload(self.slot.tensor, self.etype), self.etype.name)


@dataclass
class ModelFile:
    """An ONNX model read without its external data.

    ``proto`` holds the graph (inline payloads included); ``tensors`` every payload onnxz
    can move; ``files`` the ``.onnx`` and every external data file it reads;
    ``source_bytes`` their total size.
    """

    proto: onnx.ModelProto
    path: Path | None
    tensors: list[ModelTensor]
    files: list[Path]

    @property
    def source_bytes(self) -> int | None:
        return sum(f.stat().st_size for f in self.files) if self.path else None


def open_model(model: onnx.ModelProto | str | os.PathLike) -> ModelFile:
    """Read ``model`` (a ModelProto, copied, or a path) without loading external data."""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        if any(s.tensor.data_location == TensorProto.EXTERNAL for s in iter_tensor_slots(proto)):
            raise UnsupportedModelError(
                "the ModelProto refers to external data files: pass its path instead")
        return ModelFile(proto, None, _tensors(proto, None), [])
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
    tensors = _tensors(proto, path.parent)
    data_files = sorted({Path(t.external.file) for t in tensors if t.external and t.external.file})
    return ModelFile(proto, path, tensors, [path, *data_files])


def _tensors(proto: onnx.ModelProto, base: Path | None) -> list[ModelTensor]:
    found = []
    for slot in iter_tensor_slots(proto):
        tensor = slot.tensor
        etype = element_type(tensor.data_type)
        external = tensor.data_location == TensorProto.EXTERNAL
        if etype is None or tensor.HasField("segment"):
            if external:
                raise UnsupportedModelError(
                    f"tensor {tensor.name!r}: external data of type "
                    f"{TensorProto.DataType.Name(tensor.data_type)} cannot be packed")
            continue
        if external:
            assert base is not None
            found.append(ModelTensor(slot, etype, _external_payload(tensor, etype, base)))
        else:
            found.append(ModelTensor(slot, etype))
    return found


def _external_payload(tensor: TensorProto, etype: ElementType, base: Path) -> Payload:
    """The :class:`Payload` an EXTERNAL tensor points to, its file, offset and length
    checked against the model's folder, the tensor's size and the file's size."""
    where = f"tensor {tensor.name!r}: external data"
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise InvalidModelError(f"{where} has no location")
    relative = PureWindowsPath(location) if "\\" in location else PurePosixPath(location)
    if relative.is_absolute() or relative.anchor or ".." in relative.parts:
        raise InvalidModelError(f"{where} location {location!r} is outside the model's folder")
    file = base.joinpath(*relative.parts)
    try:
        offset = int(info.get("offset", "0"))
        nbytes = element_count(tensor) * etype.width
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise InvalidModelError(f"{where}: offset or length is not an integer") from None
    if offset < 0 or length != nbytes:
        raise InvalidModelError(
            f"{where}: {length} bytes at offset {offset} for {element_count(tensor)} "
            f"elements of {etype.name}")
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise InvalidModelError(f"{where}: cannot read {file} ({exc.strerror})") from exc
    if not file.is_file():
        raise InvalidModelError(f"{where}: {file} is not a regular file")
    if offset + length > size:
        raise InvalidModelError(
            f"{where}: {file} has {size} bytes, the tensor needs bytes {offset}..{offset + length}")
    return Payload(etype.name, element_count(tensor), file=str(file), offset=offset,
                   length=length)


class ExternalDataWriter:
    """Appends tensor payloads to an open external data file, each at a 4096-aligned offset,
    and makes their TensorProtos point there (``location`` is the file's name as the model
    will see it, relative to the model's folder).

    >>> import io
    >>> t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    >>> w = ExternalDataWriter(io.BytesIO(), "m.onnx.data")
    >>> w.add(t, np.ones(2, dtype=np.float32))
    >>> t.data_location == TensorProto.EXTERNAL, {e.key: e.value for e in t.external_data}
    (True, {'location': 'm.onnx.data', 'offset': '0', 'length': '8'})
    """

    def __init__(self, file: IO[bytes], location: str) -> None:
        self._file = file
        self._location = location
        self._position = 0

    def add(self, tensor: TensorProto, values: np.ndarray) -> None:
        pad = -self._position % EXTERNAL_ALIGNMENT
        if pad:
            self._file.write(b"\0" * pad)
            self._position += pad
        data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        self._file.write(data.data)
        take_payload(tensor)
        del tensor.external_data[:]
        for key, value in (("location", self._location), ("offset", str(self._position)),
                           ("length", str(data.size))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL
        self._position += data.size
