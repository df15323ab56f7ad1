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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

import numpy as np
import onnx
from google.protobuf.descriptor import Descriptor
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
    check_model,
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
        check_model(proto)
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
    try:
        check_model(proto)
    except InvalidModelError as exc:
        raise InvalidModelError(f"{path}: {exc}") from exc
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
                kind = ("a segment" if tensor.HasField("segment") else
                        f"type {_type_name(tensor.data_type)}")
                raise UnsupportedModelError(
                    f"tensor {tensor.name!r}: external data of {kind} cannot be packed")
            continue
        if external:
            assert base is not None
            found.append(ModelTensor(slot, etype, _external_payload(tensor, etype, base)))
        else:
            found.append(ModelTensor(slot, etype))
    return found


def _type_name(data_type: int) -> str:
    """ONNX's name of an element type, or its number if ONNX has none (a damaged file)."""
    known = TensorProto.DataType.DESCRIPTOR.values_by_number.get(data_type)
    return known.name if known is not None else str(data_type)


def _external_payload(tensor: TensorProto, etype: ElementType, base: Path) -> Payload:
    """The :class:`Payload` an EXTERNAL tensor points to, its file, offset and length
    checked against the model's folder, the tensor's size and the file's size."""
    where = f"tensor {tensor.name!r}: external data"
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise InvalidModelError(f"{where} has no location")
    if "\0" in location:  # no file name holds one (os.stat would raise a ValueError)
        raise InvalidModelError(f"{where} location {location!r} holds a NUL byte")
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


_RAW_DATA = TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_RAW_DATA_KEY = bytes([_RAW_DATA << 3 | 2])  # a length-delimited field of number 9


@dataclass(frozen=True)
class ModelStream:
    """A model's serialized bytes with holes where tensor payloads go, written as the
    payloads come: the bytes ``SerializeToString`` gives once each slot's ``raw_data`` holds
    its payload, without the model ever holding them (memory: the skeleton plus the tensor
    in hand, none of it copied into protobuf).

    ``pieces`` are the skeleton's bytes and, for each hole, the number of the slot whose
    payload goes there; ``order`` those numbers in the order :meth:`write` takes payloads
    (the order of the fields in the file, which is not always the order of the slots).

    >>> from onnx import helper
    >>> w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])   # an empty slot
    >>> model = helper.make_model(helper.make_graph([], "g", [], [], [w]))
    >>> stream = ModelStream.plan(model, [(("graph", "initializer", 0), 8)])
    >>> import io; out = io.BytesIO()
    >>> stream.write(out, [np.array([1.5, 2.0], dtype=np.float32)])
    >>> model.graph.initializer[0].raw_data = np.array([1.5, 2.0], dtype=np.float32).tobytes()
    >>> out.getvalue() == model.SerializeToString()
    True
    """

    pieces: tuple[bytes | int, ...]
    order: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        """Bytes the model takes, payloads included."""
        return sum(len(p) if isinstance(p, bytes) else self.sizes[p] for p in self.pieces)

    @classmethod
    def plan(cls, model: onnx.ModelProto,
             slots: Sequence[tuple[Sequence[str | int], int]]) -> ModelStream:
        """The stream of ``model`` whose tensors at the given paths (each an empty slot, as
        :meth:`onnxz.reader.Reader.slots` checks) get payloads of the given byte sizes.

        The skeleton is serialized once; the records on the slots' paths are found by
        reading its wire format (field numbers from the paths' field names), and get new
        lengths; everything else is copied as protobuf wrote it."""
        trie = _trie(model.DESCRIPTOR, [path for path, _ in slots])
        data = model.SerializeToString()
        pieces: list[bytes | int] = []
        run: list[bytes] = []  # joined: one write between two holes
        for piece in _spliced(data, 0, len(data), trie, [size for _, size in slots])[0]:
            if isinstance(piece, bytes):
                run.append(piece)
            else:
                pieces += [b"".join(run), piece]
                run = []
        pieces.append(b"".join(run))
        order = tuple(p for p in pieces if isinstance(p, int))
        if sorted(order) != list(range(len(slots))):
            raise ValueError("ModelStream.plan: a path is not a tensor of the model")
        return cls(tuple(pieces), order, tuple(size for _, size in slots))

    def write(self, file: IO[bytes], payloads: Iterable[np.ndarray]) -> None:
        """Write the model to ``file``, each hole filled by the next of ``payloads`` (flat
        arrays of the slots' element types, in :attr:`order`)."""
        arrays = iter(payloads)
        for piece in self.pieces:
            if isinstance(piece, bytes):
                file.write(piece)
            else:
                file.write(memoryview(np.ascontiguousarray(next(arrays))).cast("B"))
        if next(arrays, None) is not None:  # (and a generator runs to its end)
            raise ValueError("ModelStream.write: more payloads than holes")


def _trie(descriptor: Descriptor, paths: Sequence[Sequence[str | int]]) -> dict:
    """The paths (SPEC.md §5.1) as nested dicts: field number -> {the record's index among
    that field's records, None for a singular field -> the dict below, or at the path's end
    the path's number}."""
    trie: dict = {}
    for number, path in enumerate(paths):
        node, message = trie, descriptor
        steps = list(path)
        while steps:
            field = message.fields_by_name[steps.pop(0)]
            index = steps.pop(0) if steps and isinstance(steps[0], int) else None
            below = node.setdefault(field.number, {})
            node = below.setdefault(index, {} if steps else number)
            message = field.message_type
    return trie


def _spliced(data: bytes, start: int, end: int, trie: dict, sizes: Sequence[int]
             ) -> tuple[list[bytes | int], int]:
    """The pieces of the message serialized in ``data[start:end]`` with its slots' payloads
    put in (holes), and their total length. ``trie``: field number -> {index among that
    field's records, or None for a singular field -> the trie below, or a slot's number}."""
    pieces: list[bytes | int] = []
    total = 0
    copied = start  # data[copied:here] is still to be copied as it is
    seen: dict[int, int] = {}
    left = sum(map(len, trie.values()))  # records with slots below them still to be found
    for number, here, content, after in _records(data, start, end):
        below = trie.get(number)
        if below is None:
            continue
        index = seen[number] = seen.get(number, -1) + 1
        inner = below.get(None if None in below else index)
        if inner is None:
            continue
        if isinstance(inner, int):  # a slot: raw_data goes before its first higher field
            higher = next((h for field, h, _, _ in _records(data, content, after)
                           if field > _RAW_DATA), after)
            before = data[content:higher] + _RAW_DATA_KEY + _varint(sizes[inner])
            inner_pieces: list[bytes | int] = [before, inner, data[higher:after]]
            length = len(before) + sizes[inner] + after - higher
        else:
            inner_pieces, length = _spliced(data, content, after, inner, sizes)
        key_end = here + 1 if data[here] < 0x80 else _read_varint(data, here)[1]
        head = data[copied:key_end] + _varint(length)
        pieces += [head, *inner_pieces]
        total += len(head) + length
        copied = after
        left -= 1
        if not left:
            break
    pieces.append(data[copied:end])
    return pieces, total + end - copied


def _records(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Field number, start, content start and end of each record of ``data[start:end]``
    (content start: after a length-delimited record's length)."""
    position = start
    while position < end:
        here = position
        key = data[position]  # one-byte keys, lengths and values read inline: nearly all
        position += 1       # of them (a call per varint value cost 6% of the splicing)
        if key >= 0x80:
            key, position = _read_varint(data, here)
        kind = key & 7
        if kind == 2:
            length = data[position]
            position += 1
            if length >= 0x80:
                length, position = _read_varint(data, position - 1)
            content, position = position, position + length
        elif kind == 0:
            if data[position] < 0x80:
                position += 1
            else:
                _, position = _read_varint(data, position)
            content = position
        else:  # 1: fixed64, 5: fixed32 (ONNX has no groups)
            content, position = position, position + (8 if kind == 1 else 4)
        yield key >> 3, here, content, position


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _varint(value: int) -> bytes:
    """One LEB128 varint (:mod:`onnxz.codecs.varint` codes arrays with numpy, whose cost
    per call is many times this loop's for the one value of a record's length)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
