#!/usr/bin/env python3
"""Generate the onnxz conformance vectors: ``tests/vectors/*.onnxz`` and ``manifest.json``.

Each vector is a small model packed by onnxz (some then edited byte by byte), recorded with
the sha256 of the file, the sha256 of every decoded tensor, and for runnable models a fixed
input with the onnxruntime outputs of the decoded model. Invalid vectors record the error
class a reader must report instead. Before recording, the vector is decoded by onnxz and by
the independent ``tests/reference_decoder.py``; they must agree.

Published vectors are immutable: a vector already in the manifest is kept as it is (its file
must be present and unchanged). Only vectors new to the manifest are generated; ``--force``
regenerates everything (only for vectors never published).

Usage::

    python tools/make_vectors.py              # add new vectors, keep published ones
    python tools/make_vectors.py --force      # regenerate all (breaks published hashes)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import onnx
import onnxruntime as ort
import zstandard
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import container_edit  # noqa: E402
import crafted  # noqa: E402
import reference_decoder  # noqa: E402

import onnxz  # noqa: E402
from onnxz.codecs import (  # noqa: E402
    DeadzoneCodec,
    DeadzoneZstdCodec,
    MinifloatCodec,
    MulawCodec,
    PredictiveCodec,
    TensorCodec,
    TrellisCodec,
    TrellisZstdCodec,
    ans,
    predictive,
)
from onnxz.codecs.base import Chunk, EncodedTensor, split_counts  # noqa: E402
from onnxz.codecs.deadzone import Quantized, dequantize, from_float64  # noqa: E402
from onnxz.codecs.lossless import split_planes  # noqa: E402
from onnxz.codecs.varint import encode_uvarints, zigzag_encode  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
MANIFEST = "manifest.json"
OPSET = 19
IR_VERSION = 9
EXACT = (0.0, 0.0)  # (rtol, atol): outputs of copies and casts are exact
ARITHMETIC = (1e-5, 1e-6)  # outputs of MatMul/Conv: summation order may differ across CPUs

Source = Callable[[Path], "onnx.ModelProto | Path"]
"""Builds the model to pack (or writes an ONNX file into the folder and returns its path)."""


@dataclass(frozen=True)
class Vector:
    """One conformance vector: what to pack, how, and what to run it on.

    ``edit`` rewrites the packed bytes; ``error`` (``format``/``corrupt``/``limit``) marks a
    vector a reader must refuse, ``match`` a word its message must contain.
    """

    name: str
    description: str
    source: Source
    save: dict[str, Any] = field(default_factory=dict)
    inputs: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None
    tolerance: tuple[float, float] = EXACT
    edit: Callable[[bytes], bytes] | None = None
    error: str | None = None
    match: str = ""


# --- model building blocks ---------------------------------------------------------------

def _model(nodes: list, inputs: list, outputs: list, inits: list, *, functions: list = (),
           domains: tuple[str, ...] = (), opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "vector", inputs, outputs, inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION,
                             producer_name="onnxz-vectors", functions=list(functions))


def _raw(name: str, dtype: int, values: np.ndarray) -> TensorProto:
    """A tensor of ``dtype`` whose raw_data is the bytes of ``values``."""
    return helper.make_tensor(name, dtype, list(values.shape), values.tobytes(), raw=True)


def _io(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _outputs_of(tensors: list[TensorProto]) -> tuple[list, list]:
    """Nodes and outputs returning each tensor: Identity, or Cast to float32 for the types
    onnxruntime's CPU Identity lacks (bfloat16, most float8)."""
    nodes, outputs = [], []
    for t in tensors:
        if t.data_type in (TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN,
                           TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
                           TensorProto.FLOAT8E5M2FNUZ):
            nodes.append(helper.make_node("Cast", [t.name], [t.name + "_out"],
                                          to=TensorProto.FLOAT))
            outputs.append(_io(t.name + "_out", TensorProto.FLOAT, list(t.dims)))
        else:
            nodes.append(helper.make_node("Identity", [t.name], [t.name + "_out"]))
            outputs.append(_io(t.name + "_out", t.data_type, list(t.dims)))
    return nodes, outputs


def _constants_model(tensors: list[TensorProto]) -> onnx.ModelProto:
    nodes, outputs = _outputs_of(tensors)
    return _model(nodes, [], outputs, tensors)


def _laplace(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 0.05) -> np.ndarray:
    return rng.laplace(0.0, scale, shape)


def _bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bits of ``x`` (float32 rounded to nearest even)."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def _matmul_inputs(*specs: tuple[str, int, type]) -> Callable:
    """Input maker: for each (name, width, numpy dtype) a [1, width] input."""
    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {n: rng.standard_normal((1, w)).astype(t) for n, w, t in specs}
    return make


# --- the vectors' models -----------------------------------------------------------------

SPEC_W = np.array([
    0.0625, 0.0625, -0.625, 0.0625, 0.6875, -0.75, 0.4375, 0.0625, -0.3125, 1.0,
    0.375, -0.625, 0.0625, 0.3125, -0.125, 0.3125, -0.0625, 0.3125, 0.75, -0.3125,
    0.125, -0.25, 0.0625, -0.5625, -0.3125, -0.125, 0.4375, 0.5625, -0.6875, -0.375,
    0.3125, -1.0, -0.25, -0.0625, 0.625, 0.375, -0.1875, -0.1875, -0.125, 0.75,
], dtype=np.float32).reshape(8, 5)


def spec_example(_: Path) -> onnx.ModelProto:
    """The model of SPEC.md §11: Y = MatMul(X, W)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "example",
        [_io("X", TensorProto.FLOAT, [1, 8])], [_io("Y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(SPEC_W, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9,
                             producer_name="spec-example")


def float_planes(_: Path) -> onnx.ModelProto:
    """Float tensors whose planes take every method: exponents (ans), random mantissas
    (packed), multiples of 1/64 with zero low mantissa planes (constant)."""
    rng = np.random.default_rng(101)
    return _constants_model([
        _raw("f32_coarse", TensorProto.FLOAT,
             (np.round(_laplace(rng, (64,), 2.0)) / 64).astype("<f4")),
        _raw("f32_fine", TensorProto.FLOAT, _laplace(rng, (8, 8)).astype("<f4")),
        _raw("f16", TensorProto.FLOAT16, _laplace(rng, (96,), 0.5).astype("<f2")),
        _raw("bf16", TensorProto.BFLOAT16, _bf16(_laplace(rng, (96,), 0.5))),
        _raw("f64", TensorProto.DOUBLE, np.round(_laplace(rng, (32,), 100.0)).astype("<f8")),
    ])


def zstd_mode(_: Path) -> onnx.ModelProto:
    """Repetitive tensors that zstd codes better than planes."""
    rng = np.random.default_rng(102)
    pattern = rng.standard_normal(8).astype("<f4")
    return _constants_model([
        _raw("f32_repeats", TensorProto.FLOAT, np.tile(pattern, 24)),
        _raw("u8_repeats", TensorProto.UINT8,
             np.tile(rng.integers(0, 256, 16, dtype=np.uint8), 12)),
    ])


def integer_types(_: Path) -> onnx.ModelProto:
    """Every integer type and bool: small values (a skewed low byte, constant high bytes),
    and full-range values (packed)."""
    rng = np.random.default_rng(103)

    def small(n: int, dtype: str) -> np.ndarray:
        return np.clip(np.round(rng.laplace(0, 6, n)), 0 if "u" in dtype else -100, 100
                       ).astype(dtype)

    def full(n: int, dtype: str) -> np.ndarray:
        return rng.integers(0, 256, n * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype)

    return _constants_model([
        _raw("i8", TensorProto.INT8, small(160, "i1")),
        _raw("u8", TensorProto.UINT8, full(160, "u1")),
        _raw("i16", TensorProto.INT16, small(80, "<i2")),
        _raw("u16", TensorProto.UINT16, full(80, "<u2")),
        _raw("i32", TensorProto.INT32, small(40, "<i4")),
        _raw("u32", TensorProto.UINT32, full(40, "<u4")),
        _raw("i64", TensorProto.INT64, small(24, "<i8")),
        _raw("u64", TensorProto.UINT64, full(24, "<u8")),
        _raw("flags", TensorProto.BOOL, (rng.random(160) < 0.2).astype("u1")),
    ])


def float8_types(_: Path) -> onnx.ModelProto:
    """The four float8 types, opaque bytes (NaN encodings avoided so outputs compare)."""
    rng = np.random.default_rng(104)

    def codes(nan: tuple[int, ...]) -> np.ndarray:
        c = rng.integers(0, 256, 160, dtype=np.uint8)
        return np.where(np.isin(c, nan), 0, c).astype(np.uint8)

    return _constants_model([
        _raw("e4m3fn", TensorProto.FLOAT8E4M3FN, codes((0x7F, 0xFF))),
        _raw("e4m3fnuz", TensorProto.FLOAT8E4M3FNUZ, codes((0x80,))),
        _raw("e5m2", TensorProto.FLOAT8E5M2, codes(tuple(range(0x7C, 0x80)) +
                                                   tuple(range(0xFC, 0x100)))),
        _raw("e5m2fnuz", TensorProto.FLOAT8E5M2FNUZ, codes((0x80,))),
    ])


def chunked_lossless(_: Path) -> onnx.ModelProto:
    """Tensors cut into 48-element chunks: one table, one ANS stream per chunk; the first
    chunk's exponent plane is all the table's first symbol (an empty stream)."""
    rng = np.random.default_rng(105)
    x = _laplace(rng, (200,), 1.0).astype("<f4")
    x[:48] = (rng.choice([-1, 1], 48) * rng.uniform(1, 2, 48) * 2.0**-20).astype("<f4")
    return _constants_model([
        _raw("f32_chunked", TensorProto.FLOAT, x),
        _raw("i16_chunked", TensorProto.INT16, np.round(rng.laplace(0, 50, 100)).astype("<i2")),
    ])


def zstd_planes(_: Path) -> onnx.ModelProto:
    """Format 1.1 plane method zstd: Laplacian float32, float16, bfloat16 and int16 weights
    (exponent and high planes zstd, the rest packed) and float64 whose 11-bit exponents
    repeat (a zstd plane of 2-byte symbols, which ANS cannot match)."""
    rng = np.random.default_rng(106)
    mantissas = rng.integers(0, 1 << 52, 600, dtype=np.uint64)
    exponents = np.tile(rng.integers(1000, 1030, 40, dtype=np.uint64), 15)
    signs = rng.integers(0, 2, 600, dtype=np.uint64)
    f64 = (signs << np.uint64(63)) | (exponents << np.uint64(52)) | mantissas
    return _constants_model([
        _raw("f32", TensorProto.FLOAT, _laplace(rng, (48, 40)).astype("<f4")),
        _raw("f16", TensorProto.FLOAT16, _laplace(rng, (1500,), 0.5).astype("<f2")),
        _raw("bf16", TensorProto.BFLOAT16, _bf16(_laplace(rng, (1500,), 0.5))),
        _raw("f64", TensorProto.DOUBLE, f64.view("<f8")),
        _raw("i16", TensorProto.INT16, np.round(rng.laplace(0, 300, 1500)).astype("<i2")),
    ])


def weight(seed: int, uniform: bool = False) -> onnx.ModelProto:
    """Y = MatMul(X, W) with a float32 weight W [24, 16], Laplacian or uniform."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.1, 0.1, (24, 16)) if uniform else _laplace(rng, (24, 16))
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                  [_io("X", TensorProto.FLOAT, [1, 24])], [_io("Y", TensorProto.FLOAT, [1, 16])],
                  [numpy_helper.from_array(w.astype("<f4"), "W")])


def skewed_weight(_: Path) -> onnx.ModelProto:
    """Y = MatMul(X, W) with a mostly positive weight W [24, 16] (a symmetric table fits
    badly)."""
    w = np.abs(_laplace(np.random.default_rng(205), (24, 16))) - 0.01
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                  [_io("X", TensorProto.FLOAT, [1, 24])], [_io("Y", TensorProto.FLOAT, [1, 16])],
                  [numpy_helper.from_array(w.astype("<f4"), "W")])


def far_outliers(_: Path) -> onnx.ModelProto:
    """A Laplacian weight [32, 24] with three values 10^4 times its spread."""
    w = _laplace(np.random.default_rng(206), (32, 24))
    w.flat[[17, 300, 701]] = [500.0, -700.0, 900.0]
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                  [_io("X", TensorProto.FLOAT, [1, 32])], [_io("Y", TensorProto.FLOAT, [1, 24])],
                  [numpy_helper.from_array(w.astype("<f4"), "W")])


def deadzone_dtypes(_: Path) -> onnx.ModelProto:
    """Dead-zone weights of float16, bfloat16 (through a Cast) and float64."""
    rng = np.random.default_rng(106)
    w16 = numpy_helper.from_array(_laplace(rng, (24, 16)).astype("<f2"), "W16")
    wbf = _raw("Wbf", TensorProto.BFLOAT16, _bf16(_laplace(rng, (24, 16))))
    w64 = numpy_helper.from_array(_laplace(rng, (24, 16)).astype("<f8"), "W64")
    nodes = [
        helper.make_node("MatMul", ["X16", "W16"], ["Y16"]),
        helper.make_node("Cast", ["Wbf"], ["Wbf32"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["X32", "Wbf32"], ["Ybf"]),
        helper.make_node("MatMul", ["X64", "W64"], ["Y64"]),
    ]
    return _model(
        nodes,
        [_io("X16", TensorProto.FLOAT16, [1, 24]), _io("X32", TensorProto.FLOAT, [1, 24]),
         _io("X64", TensorProto.DOUBLE, [1, 24])],
        [_io("Y16", TensorProto.FLOAT16, [1, 16]), _io("Ybf", TensorProto.FLOAT, [1, 16]),
         _io("Y64", TensorProto.DOUBLE, [1, 16])],
        [w16, wbf, w64])


def outliers(_: Path) -> onnx.ModelProto:
    """A uniform weight with outliers in some chunks (escaped, both signs)."""
    w = np.random.default_rng(107).uniform(-0.1, 0.1, (32, 24))
    w.flat[[5, 150, 151, 420, 700]] = [3.0, -2.5, 4.0, -6.0, 2.0]
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                  [_io("X", TensorProto.FLOAT, [1, 32])], [_io("Y", TensorProto.FLOAT, [1, 24])],
                  [numpy_helper.from_array(w.astype("<f4"), "W")])


def subgraphs(_: Path) -> onnx.ModelProto:
    """Weights in a Constant node, in both branches of an If (a Constant and an
    initializer each), and in a Constant node of a model-local function."""
    rng = np.random.default_rng(108)

    def f32(name: str, shape: tuple[int, ...]) -> TensorProto:
        return numpy_helper.from_array(_laplace(rng, shape).astype("<f4"), name)

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_c"], value=f32(f"{name}_c", (8, 8))),
             helper.make_node("MatMul", ["H", f"{name}_c"], [f"{name}_h"]),
             helper.make_node("MatMul", [f"{name}_h", f"{name}_w"], [f"{name}_y"])],
            name, [], [_io(f"{name}_y", TensorProto.FLOAT, [1, 8])], [f32(f"{name}_w", (8, 8))])

    scale = helper.make_function(
        "local", "Project", ["A"], ["B"],
        [helper.make_node("Constant", [], ["P"], value=f32("P", (8, 8))),
         helper.make_node("MatMul", ["A", "P"], ["B"])],
        [helper.make_opsetid("", OPSET)])
    shape = numpy_helper.from_array(np.array([1, 8], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["C"], value=f32("C", (8, 8))),
        helper.make_node("MatMul", ["X", "C"], ["H0"]),
        helper.make_node("Reshape", ["H0", "shape"], ["H"]),
        helper.make_node("If", ["flag"], ["Z"], then_branch=branch("then"),
                         else_branch=branch("else")),
        helper.make_node("Project", ["Z"], ["Y"], domain="local"),
    ]
    return _model(nodes, [_io("X", TensorProto.FLOAT, [1, 8]), _io("flag", TensorProto.BOOL, [])],
                  [_io("Y", TensorProto.FLOAT, [1, 8])], [shape], functions=[scale],
                  domains=("local",))


def subgraph_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"X": rng.standard_normal((1, 8)).astype(np.float32), "flag": np.array(True)}


def tensors_and_graphs(_: Path) -> onnx.ModelProto:
    """The path forms no standard op uses: a TENSORS attribute and a GRAPHS attribute
    (of a custom-domain node, so the model is not runnable)."""
    rng = np.random.default_rng(109)
    listed = [_raw("list0", TensorProto.FLOAT, _laplace(rng, (40,)).astype("<f4")),
              _raw("list1", TensorProto.INT32, rng.integers(-50, 50, 40).astype("<i4"))]
    inner = helper.make_graph([], "inner", [], [_io("inner_w", TensorProto.FLOAT, [40])],
                              [_raw("inner_w", TensorProto.FLOAT,
                                    _laplace(rng, (40,)).astype("<f4"))])
    node = helper.make_node("Holder", ["X"], ["Y"], domain="vectors.custom")
    node.attribute.append(helper.make_attribute("weights", listed))
    node.attribute.append(helper.make_attribute("bodies", [inner]))
    return _model([node], [_io("X", TensorProto.FLOAT, [1])], [_io("Y", TensorProto.FLOAT, [1])],
                  [], domains=("vectors.custom",))


def external_data(folder: Path) -> Path:
    """An ONNX file whose weights live in a separate external-data file."""
    rng = np.random.default_rng(110)
    w = numpy_helper.from_array(_laplace(rng, (16, 16)).astype("<f4"), "W")
    b = numpy_helper.from_array(_laplace(rng, (16,)).astype("<f4"), "B")
    shape = numpy_helper.from_array(np.array([4, 4], dtype=np.int64), "shape")
    model = _model(
        [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Add", ["H", "B"], ["A"]),
         helper.make_node("Reshape", ["A", "shape"], ["Y"])],
        [_io("X", TensorProto.FLOAT, [1, 16])], [_io("Y", TensorProto.FLOAT, [4, 4])],
        [w, b, shape])
    path = folder / "external.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="external.onnx.data",
                    size_threshold=64)
    return path


def small_cnn(_: Path) -> onnx.ModelProto:
    """A small CNN packed with the lossy default: Conv and Gemm weights quantized, a
    per-feature scale lossless, biases and shapes inline."""
    rng = np.random.default_rng(111)
    inits = [
        numpy_helper.from_array(_laplace(rng, (8, 4, 3, 3), 0.2).astype("<f4"), "conv_w"),
        numpy_helper.from_array(_laplace(rng, (8,)).astype("<f4"), "conv_b"),
        numpy_helper.from_array((1 + _laplace(rng, (128,))).astype("<f4"), "scale"),
        numpy_helper.from_array(_laplace(rng, (128, 10)).astype("<f4"), "fc_w"),
        numpy_helper.from_array(_laplace(rng, (10,)).astype("<f4"), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["X", "conv_w", "conv_b"], ["C"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["C"], ["R"]),
        helper.make_node("Flatten", ["R"], ["F"]),
        helper.make_node("Mul", ["F", "scale"], ["S"]),
        helper.make_node("Gemm", ["S", "fc_w", "fc_b"], ["Y"]),
    ]
    return _model(nodes, [_io("X", TensorProto.FLOAT, [1, 4, 4, 4])],
                  [_io("Y", TensorProto.FLOAT, [1, 10])], inits)


# --- edits of packed files ---------------------------------------------------------------

def future_minor(data: bytes) -> bytes:
    """As a 1.3 writer might write it: minor version 3, unknown optional keys in every map
    that may grow (index, tensor entries, params, plane maps, tables) and trailing
    chunk-entry elements. A 1.0 reader MUST decode it exactly as before."""
    fields = container_edit.read_index(data)
    fields["future_index_key"] = {"nested": [1, 2.5, "x"]}
    for t in fields["tensors"]:
        t["future_tensor_key"] = b"\x00\x01"
        t["params"]["future_param"] = -7
        maps = [p for p in t["params"].get("planes", [])]
        maps += [m.get("table") for m in [*maps, t["params"]] if m.get("table")]
        for m in maps:
            m["future_key"] = None
        for c in t["chunks"]:
            c.extend([0, "future element"])
    return container_edit.with_version(container_edit.with_index(data, fields), 1, 3)


def set_tensor_field(key: str, value: Any) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        fields = container_edit.read_index(data)
        fields["tensors"][0][key] = value
        return container_edit.with_index(data, fields)
    return edit


def absurd_shape(data: bytes) -> bytes:
    """A tensor declaring 10^12 elements in a file of a few hundred bytes."""
    fields = container_edit.read_index(data)
    t = fields["tensors"][0]
    t["shape"] = [10**6, 10**6]
    t["chunks"][0][2] = 10**12
    return container_edit.with_index(data, fields)


def starve_zero_symbol(data: bytes) -> bytes:
    """A bucket table whose first bucket takes all of 2**precision (nothing left for 0)."""
    fields = container_edit.read_index(data)
    buckets = fields["tensors"][0]["params"]["buckets"]
    values = onnxz.codecs.varint.decode_uvarints(buckets["freqs"])
    values[0] = 1 << buckets["precision"]
    buckets["freqs"] = onnxz.codecs.varint.encode_uvarints(values)
    return container_edit.with_index(data, fields)


def flip_chunk_bit(data: bytes) -> bytes:
    return data[:70] + bytes([data[70] ^ 0x08]) + data[71:]



# --- vectors of SPEC revision 2 (issue 14): crafted encodings (tests/crafted.py) ---------

def _dz(q: np.ndarray, step: float, deadzone: float, dtype: str) -> np.ndarray:
    """The values the dead-zone symbols ``q`` reconstruct to (the model then holds exactly
    what a reader restores)."""
    return from_float64(dequantize(np.asarray(q), float(step), float(deadzone)),
                        onnxz.dtypes.BY_NAME[dtype])


def _onnx_type(dtype: str) -> int:
    return onnxz.dtypes.BY_NAME[dtype].onnx_type


def _explicit(specs: list[tuple[str, str, crafted.ExplicitDeadzone]]) -> Source:
    """A constants model of dead-zone tensors (name, dtype, codec), the values being the
    reconstruction of each codec's symbols."""
    def source(_: Path) -> onnx.ModelProto:
        return _constants_model([
            _raw(name, _onnx_type(dtype), _dz(c.q, c.step, c.deadzone, dtype))
            for name, dtype, c in specs])
    return source


def _options(*crafted_codecs: tuple[str, Any], chunk_elements: int = 1 << 20
             ) -> dict[str, Any]:
    """Pack options giving each named tensor its codec (others by the default rule)."""
    return {"options": crafted.CraftedOptions(inline_max_bytes=16, chunk_elements=chunk_elements,
                                              crafted=crafted_codecs)}


def _padded(q: list[int], n: int = 64) -> np.ndarray:
    return np.array(q + [0] * (n - len(q)), dtype=np.int64)


POWERS = [s * 2**j for j in range(16) for s in (1, -1)]
F16_DIRECT = [  # r lands a hair above or below a binary16 midpoint (rounding via binary32: tie)
    ("f16_subnormal_up", "float16", crafted.ExplicitDeadzone(
        np.arange(-40, 41), 2.0**-25 * (1 + 2.0**-30))),
    ("f16_subnormal_down", "float16", crafted.ExplicitDeadzone(
        np.arange(-40, 41), 2.0**-25 * (1 - 2.0**-30))),
    ("f16_normal", "float16", crafted.ExplicitDeadzone(
        _padded(POWERS), (1 + 2.0**-11) * (1 + 2.0**-30), coded=(-1, 1))),
]
BF16_TWICE = [  # r a hair off a bfloat16 midpoint: binary32 rounds onto it, then ties to even
    ("bf16_above_midpoint", "bfloat16", crafted.ExplicitDeadzone(
        _padded([s * 2**j for j in range(24) for s in (1, -1)]),
        (1 + 2.0**-8) * (1 + 2.0**-30), coded=(-1, 1))),
    ("bf16_below_midpoint", "bfloat16", crafted.ExplicitDeadzone(
        _padded([s * 2**j for j in range(24) for s in (1, -1)]),
        (1 + 3 * 2.0**-8) * (1 - 2.0**-30), coded=(-1, 1))),
]
F64_ORDER = [  # Δ·(|q| + t) ≠ Δ·|q| + Δ·t and ≠ Δ·((|q| + δ) − 0.5) for many of these q
    ("f64_delta_0_3", "float64", crafted.ExplicitDeadzone(
        np.array([s * 2**k for k in (1, 3, 5, 7, 9, 11, 13, 15, 19, 21) for s in (1, -1)]
                 + list(range(-20, 21)) + [3, 6, 7]),
        0.0673265518589309, 0.3, coded=(-20, 20))),
    ("f64_delta_0_75", "float64", crafted.ExplicitDeadzone(
        np.arange(-32, 32), 0.0673265518589309, 0.75)),
]
OVERFLOW = [  # just above the largest finite value: rounds down to it; from M + ulp/2: infinity
    ("f16_edge", "float16", crafted.ExplicitDeadzone(_padded(
        [s * a for a in (131008, 131009, 131030, 131039, 131040, 131041, 131072)
         for s in (1, -1)]), 0.5, coded=(-1, 1))),
    ("f32_edge", "float32", crafted.ExplicitDeadzone(_padded(
        [s * (2**28 - d) for d in (16, 15, 9, 8, 7, 0) for s in (1, -1)], 32), 2.0**100,
        coded=(-1, 1))),
    ("bf16_edge", "bfloat16", crafted.ExplicitDeadzone(_padded(
        [s * a for a in (2**28 - 2**20, 2**28 - 2**20 + 2**18, 2**28 - 2**19 - 2**3 - 1,
                         2**28 - 2**19 - 2**3, 2**28 - 2**19, 2**28) for s in (1, -1)]),
        2.0**100, coded=(-1, 1))),
]
INT_PARAMS = [  # step and deadzone stored as msgpack ints (numbers, §1)
    ("f64_int_step", "float64", crafted.ExplicitDeadzone(np.arange(-32, 32), 2**54 + 3, 1)),
    ("f32_int_step", "float32", crafted.ExplicitDeadzone(np.arange(-32, 32), 1, 0)),
]
HIGH_PRECISION = [  # a dominant symbol: frequencies ≥ 2^21, 4-byte varints
    ("dz_precision_24", "float32", crafted.ExplicitDeadzone(
        np.array([0] * 120 + [1, -1, 2, -2, 3, -3, 1, 1]), 0.01, precision=24)),
]


def _random_bits(seed: int, n: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, n * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype)


def packed_planes(_: Path) -> onnx.ModelProto:
    """Random bit patterns (NaNs included): every plane of every width is worth packing."""
    return _constants_model([
        _raw("f16_packed", TensorProto.FLOAT16, _random_bits(301, 77, "<f2")),
        _raw("f64_packed", TensorProto.DOUBLE, _random_bits(302, 45, "<f8")),
    ])


def lossless_tables(_: Path) -> onnx.ModelProto:
    """Skewed integers and floats for ANS planes at high precision or with wide tables."""
    rng = np.random.default_rng(303)
    skewed = np.where(rng.random(200) < 0.97, 0, rng.integers(1, 5, 200))
    return _constants_model([
        _raw("u16_precision_17", TensorProto.UINT16, (skewed * 257).astype("<u2")),
        _raw("i8_precision_14", TensorProto.INT8, skewed.astype("i1")),
        _raw("f16_table_beyond_plane", TensorProto.FLOAT16,
             _laplace(rng, (96,), 0.5).astype("<f2")),
        _raw("u8_table_beyond_plane", TensorProto.UINT8, rng.integers(0, 200, 160, dtype=np.uint8)),
    ])


def no_content_size(data: bytes) -> bytes:
    """The graph and index sections as zstd frames without content size (several blocks)."""
    graph = container_edit.read_graph(data)
    data = container_edit.with_graph_frame(data, crafted.streamed_frame(graph), len(graph))
    return container_edit.with_index(data, container_edit.read_index(data),
                                     frame=crafted.streamed_frame)


def float32_values(_: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(304)
    return _constants_model([_raw("f32_streamed", TensorProto.FLOAT,
                                  _laplace(rng, (200,)).astype("<f4"))])


def gaps_and_graph_key(data: bytes) -> bytes:
    """Unused bytes between the index section and the footer; an unknown key in the `graph`
    map; an unknown index key nesting arrays to depth 64, the most allowed."""
    fields = container_edit.read_index(data)
    fields["graph"]["future_graph_key"] = {"since": "1.x"}
    fields["future_nested"] = nested(63)  # the index map is depth 1: arrays down to 64
    return container_edit.with_gap_before_footer(container_edit.with_index(data, fields),
                                                 bytes(24))


def bool_bytes(_: Path) -> onnx.ModelProto:
    """A bool tensor holding every byte value (ONNX wants 0 or 1; onnxz keeps them all)."""
    flags = _raw("flags", TensorProto.BOOL, np.arange(256, dtype=np.uint8))
    return _model([], [], [_io("flags", TensorProto.BOOL, [256])], [flags])


def zero_count_chunks(_: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(305)
    return _constants_model([
        _raw("u8_zstd", TensorProto.UINT8, np.tile(rng.integers(0, 256, 20, dtype=np.uint8), 10)),
        _raw("f32_planes", TensorProto.FLOAT, _laplace(rng, (64,)).astype("<f4")),
        _raw("f32_deadzone", TensorProto.FLOAT, _dz(np.arange(-32, 32), 0.05, 0.5, "float32")),
    ])


def constant_node(_: Path) -> onnx.ModelProto:
    """A Constant node's value (a TENSOR attribute) returned as the output."""
    value = numpy_helper.from_array(SPEC_W, "C")
    return _model([helper.make_node("Constant", [], ["C"], value=value)], [],
                  [_io("C", TensorProto.FLOAT, [8, 5])], [])


def mistyped_attribute(data: bytes) -> bytes:
    """The Constant's attribute says FLOAT though its `t` field holds the tensor: a path into
    `t` no longer follows the attribute's type."""
    model = onnx.ModelProto.FromString(container_edit.read_graph(data))
    model.graph.node[0].attribute[0].type = onnx.AttributeProto.FLOAT
    return container_edit.with_graph(data, model.SerializeToString())


def add_index_key(key: str, value: Any) -> Callable[[bytes], bytes]:
    """An unknown index key holding ``value`` (the reader ignores its meaning only)."""
    def edit(data: bytes) -> bytes:
        fields = container_edit.read_index(data)
        fields[key] = value
        return container_edit.with_index(data, fields)
    return edit


def nested(depth: int) -> list:
    """Arrays nested ``depth`` deep (the outermost counts 1)."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def huge_shape(data: bytes) -> bytes:
    """The tensor declares 2^32 × 2^32 = 2^64 elements: beyond every reader's limit."""
    fields = container_edit.read_index(data)
    fields["tensors"][0]["shape"] = [2**32, 2**32]
    return container_edit.with_index(data, fields)


class MisorderedPlanes(crafted.ForcedPlanes):
    """Two ANS planes of a uint16 tensor: plane 1 decodes a 9-bit value in an 8-bit plane (its
    table covers it), and unless ``plane_0_ends_right`` plane 0's stream holds one symbol too
    many (its final state is wrong)."""

    def __init__(self, plane_0_ends_right: bool = False) -> None:
        super().__init__(["ans", "ans"], table_ranges={1: (0, 300)})
        self.plane_0_ends_right = plane_0_ends_right

    def encode(self, values, etype, chunk_elements):
        planes = split_planes(values, etype)
        encoded = super().encode(values, etype, chunk_elements)
        tables = [ans.FrequencyTable.from_fields(p["table"]) for p in encoded.params["planes"]]
        wrong = planes[1].astype(np.int64)
        wrong[5] = 256
        extra = [] if self.plane_0_ends_right else [tables[0].offset + 1]  # C_i > 0: state ≠ 0
        parts = (ans.encode(np.append(planes[0], np.array(extra, dtype=np.int64)), tables[0]),
                 ans.encode(wrong, tables[1]))
        return dataclasses.replace(encoded, chunks=(Chunk(values.size, parts),))


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def spec_w_zstd(frame: Callable[[bytes], bytes], counts: tuple[int, ...] | None = None
                ) -> dict[str, Any]:
    """The §11 model's W in `zstd` mode, its parts made by ``frame``."""
    return _options(("W", crafted.ZstdFrames(frame, counts)))


def uint16_model(_: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(306)
    return _constants_model([_raw("u16", TensorProto.UINT16,
                                  rng.integers(0, 200, 64).astype("<u2"))])


# --- vectors of format 1.2: codec predictive (SPEC.md §16) --------------------------------

def _smooth_rows(rows: int, width: int, spikes: dict[int, float] | None = None) -> np.ndarray:
    """Windowed cosines, one frequency per row (an STFT-like basis; float64), with
    ``spikes`` (flat index: value) added so that some residuals are escaped."""
    n = np.arange(width)
    window = np.sin(np.pi * (n + 0.5) / width)
    x = np.stack([window * np.cos(np.pi * (k + 0.5) * (n + 0.5) / width) for k in range(rows)])
    for i, v in (spikes or {}).items():
        x.flat[i] = v
    return x


def _chirp(count: int, seed: int) -> np.ndarray:
    """A smooth signal: a chirp under a slow envelope, plus a few spikes."""
    t = np.arange(count) / count
    x = (0.5 + 0.5 * t) * np.sin(2 * np.pi * (3 + 20 * t) * t)
    rng = np.random.default_rng(seed)
    x[rng.choice(count, 3, replace=False)] += [2.0, -3.0, 2.5]
    return x


def predictive_rows(_: Path) -> onnx.ModelProto:
    return _constants_model([
        _raw("basis", TensorProto.FLOAT, _smooth_rows(
            16, 64, {70: 3.0, 517: -2.5, 900: 4.0}).astype("<f4")),
        _raw("signal", TensorProto.FLOAT, _chirp(1000, 401).astype("<f4")),
        _raw("chunk_rows", TensorProto.FLOAT, _chirp(1000, 402)[::-1].astype("<f4")),
    ])


def predictive_dtypes(_: Path) -> onnx.ModelProto:
    return _constants_model([
        _raw("f16", TensorProto.FLOAT16, _smooth_rows(12, 48, {100: 2.0}).astype("<f2")),
        _raw("bf16", TensorProto.BFLOAT16, _bf16(_smooth_rows(8, 96, {300: -2.0}))),
        _raw("f64", TensorProto.DOUBLE, (100 * _smooth_rows(10, 64, {7: 400.0})).astype("<f8")),
    ])


def _levels_model(name: str, count: int) -> Source:
    """A float32 tensor of ``count`` zeros: a crafted codec with explicit levels ignores the
    values (the writer checksums the codec's reconstruction)."""
    def source(_: Path) -> onnx.ModelProto:
        return _constants_model([_raw(name, TensorProto.FLOAT, np.zeros(count, "<f4"))])
    return source


class CraftedPredictive(PredictiveCodec):
    """The predictive codec with choices its writer never makes: the chunks' element
    ``counts`` (rows cut from each chunk's start, so a chunk may start inside a row of the
    tensor), and optionally explicit levels ``q`` (with an absolute ``step``), explicit
    ``coefficients`` (one (a, b) per row of every chunk, in order), the residual range
    ``coded`` (the others escaped) and an ``edit`` of each chunk's three parts."""

    def __init__(self, step_rel: float | None, deadzone: float, *, row: int,
                 counts: tuple[int, ...] | None = None, q: list[int] | None = None,
                 coefficients: list[tuple[int, int]] | None = None,
                 coded: tuple[int, int] | None = None,
                 edit: Callable[[tuple[bytes, ...]], tuple[bytes, ...]] | None = None,
                 **options: Any) -> None:
        super().__init__(step_rel, deadzone, row=row, **options)
        self.counts, self.coded, self.edit = counts, coded, edit
        self.q = None if q is None else np.array(q, dtype=np.int64)
        self.coefficients = coefficients

    def encode(self, values: np.ndarray, etype: onnxz.dtypes.ElementType,
               chunk_elements: int) -> EncodedTensor:
        if self.q is None:
            quantized = DeadzoneCodec.quantize(self, values, etype)
            q, step = quantized.q.astype(np.int64), quantized.step
        else:
            q, step = self.q, self.step
        assert q.size == values.size, "one level per element"
        row = self.row
        errors, coefficients = [], []
        given = iter(self.coefficients or ())
        for part in crafted.chunk_slices(self.counts or split_counts(q.size, chunk_elements)):
            levels = q[part]
            rows = -(-levels.size // row)
            grid = np.zeros(rows * row, dtype=np.int64)
            grid[:levels.size] = levels
            grid = grid.reshape(rows, row)
            c = (np.array([next(given) for _ in range(rows)], dtype=np.int64).reshape(rows, 2)
                 if self.coefficients else predictive.fit_coefficients(grid))
            errors.append(predictive.residuals(grid, c).reshape(-1)[:levels.size])
            coefficients.append(c)
        e = np.concatenate(errors)
        if self.coded is None:
            fitted = Quantized.of_symbols(step, self.deadzone, e)
            lo, hi, table = fitted.lo, fitted.hi, fitted.table
        else:
            lo, hi = self.coded
            outside = (e < lo) | (e > hi)
            table = crafted.table_for(np.where(outside, hi + 1, e), lo,
                                      hi - lo + 1 + bool(outside.any()))
        escape = table.offset + table.size - 1 > hi
        chunks = []
        for part, c in zip(errors, coefficients, strict=True):
            outside = (part < lo) | (part > hi)
            parts = (ans.encode(np.where(outside, hi + 1, part), table),
                     encode_uvarints(zigzag_encode(part[outside])),
                     c.astype("<i2").tobytes())
            chunks.append(Chunk(part.size, self.edit(parts) if self.edit else parts))
        params = {"step": step, "deadzone": self.deadzone, "reconstruction": "midpoint",
                  "escape": escape, "table": table.to_fields(), "row": row}
        if self.step_rel is not None and self.q is None:
            params["step_rel"] = self.step_rel
        reconstruction = from_float64(dequantize(q, step, self.deadzone), etype)
        return EncodedTensor(self.codec_id, params, tuple(chunks), reconstruction,
                             table_bytes=table.stored_size, format_minor=2)


EXTREME_LEVELS = [  # rows of 8: |q| = 2^31, the limit; residuals ±2^35, the limit (escaped)
    2**31, 2**31, 0, -(2**31), -(2**31), 0, 1, -1,  # a = b = −32768
    -2, -3, -5, 4, -7, -1, -2, -4,  # a = 2048, b = 0: predictions −q1/2 ... ties round up
    2**31, -(2**31), 2**31, 5,  # a = b = 32767: a short last row
]
EXTREME_COEFFICIENTS = [(-32768, -32768), (2048, 0), (32767, 32767)]
DOUBLING = [2**i for i in range(32)] + [2**31 + 1]  # a = 8192 (2.0): the last one is too large


def drop_last_coefficients(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return (*parts[:2], parts[2][:-4])


# --- vectors of format 1.3: codec deadzone_zstd (SPEC.md §17) -----------------------------

def zstd_symbol_tensors(scale: int) -> Source:
    """A Laplacian weight (a coarse step: few symbols), a Student-t one with outliers
    (escaped, in some chunks only) and a uniform one (all its symbols in the low bits), of
    ``scale`` × 16, 40 and 8 elements."""
    def source(_: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(1301)
        tails = rng.standard_t(3, 40 * scale) * 0.05
        tails[[scale // 2, 36 * scale]] = [4.0, -5.0]
        return _constants_model([
            _raw("coarse", TensorProto.FLOAT, _laplace(rng, (scale, 16)).astype("<f4")),
            _raw("tails", TensorProto.FLOAT, tails.astype("<f4")),
            _raw("narrow", TensorProto.FLOAT, rng.uniform(-1, 1, 8 * scale).astype("<f4")),
        ])
    return source


def zstd_symbol_dtypes(_: Path) -> onnx.ModelProto:
    """Laplacian weights of float16, bfloat16 and float64, 128 elements each."""
    rng = np.random.default_rng(1302)
    return _constants_model([
        _raw("w16", TensorProto.FLOAT16, _laplace(rng, (8, 16)).astype("<f2")),
        _raw("wbf", TensorProto.BFLOAT16, _bf16(_laplace(rng, (8, 16)))),
        _raw("w64", TensorProto.DOUBLE, _laplace(rng, (8, 16)).astype("<f8")),
    ])


class EditedDeadzoneZstd(DeadzoneZstdCodec):
    """``deadzone_zstd`` with ``edit`` applied to each chunk's three parts (a writer's
    mistake a reader must catch)."""

    def __init__(self, step_rel: float, deadzone: float, *, low_bits: int,
                 edit: Callable[[tuple[bytes, ...]], tuple[bytes, ...]]) -> None:
        super().__init__(step_rel, deadzone, low_bits=low_bits)
        self.edit = edit

    def encode(self, values: np.ndarray, etype: onnxz.dtypes.ElementType,
               chunk_elements: int) -> EncodedTensor:
        encoded = super().encode(values, etype, chunk_elements)
        chunks = tuple(Chunk(c.count, self.edit(c.parts)) for c in encoded.chunks)
        return dataclasses.replace(encoded, chunks=chunks)


def high_byte_255(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Part 0 with its first high byte made 255 (a position beyond a small range)."""
    high = bytearray(zstandard.ZstdDecompressor().decompress(parts[0]))
    high[0] = 255
    return (zstandard.ZstdCompressor(level=1).compress(bytes(high)), *parts[1:])


def drop_last_low_byte(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return (*parts[:2], parts[2][:-1])


LOSSLESS = {"lossless": True}
WEIGHTS = onnxz.PackOptions(min_quantized_elements=64, step_rel=onnxz.DEFAULT_STEP_REL)



# --- vectors of format 1.4: codec trellis_zstd (SPEC.md §18) ------------------------------

def trellis_zstd_tensors(_: Path) -> onnx.ModelProto:
    """A float32 Laplacian weight of 640 elements with an outlier of each sign (in its first
    and last 256-element chunks) and a float16 Student-t weight of 512."""
    rng = np.random.default_rng(1401)
    laplace = _laplace(rng, (40, 16))
    laplace[[3, 39], [5, 9]] = [3.0, -4.0]
    return _constants_model([
        _raw("laplace", TensorProto.FLOAT, laplace.astype("<f4")),
        _raw("tails16", TensorProto.FLOAT16,
             (rng.standard_t(4, (32, 16)) * 0.05).astype("<f2")),
    ])


def set_segment_3(data: bytes) -> bytes:
    """The first tensor's ``segment`` made 3 (not a power of two)."""
    fields = container_edit.read_index(data)
    fields["tensors"][0]["params"]["segment"] = 3
    return container_edit.with_index(data, fields)

# --- vectors of format 1.5: lossless mode palette (SPEC.md §6.6) -------------------------

NAN_PAYLOADS = (0x7FC00123, 0xFF800001)  # a quiet NaN with a payload, a negative signalling one


def palette_tensors(names: tuple[str, ...] | None = None) -> Source:
    """Tensors with few distinct values, of several types (only ``names`` if given): float32
    multiples of 1/160 with −0.0, +0.0 and two NaN payloads; float16 of exactly 16 values;
    bfloat16 of 3; float64 of 260 (9-bit indices); int64 of one; int16 of 3; uint8 of 5;
    int32 of 20 (for the writer's own choice)."""
    def source(_: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(1501)
        grid = (np.clip(np.round(_laplace(rng, (24, 25), 12.0)), -60, 60) / 160).astype("<f4")
        grid.flat[[3, 4, 300, 599]] = [-0.0, 0.0, 0.0, -0.0]
        grid.view("<u4").flat[[10, 400]] = NAN_PAYLOADS
        tensors = [
            _raw("f32_grid", TensorProto.FLOAT, grid),
            _raw("f16_16", TensorProto.FLOAT16,
                 rng.choice((np.arange(16) - 8) / 4, 600).astype("<f2")),
            _raw("bf16_3", TensorProto.BFLOAT16,
                 _bf16(rng.choice([0.5, -1.25, 3.0], 300, p=[0.7, 0.2, 0.1]))),
            _raw("f64_260", TensorProto.DOUBLE,
                 (rng.permutation(np.r_[np.arange(260), rng.choice(260, 340)]) - 130
                  ).astype("<f8") / 8),
            _raw("i64_one", TensorProto.INT64, np.full(40, 123456789012, dtype="<i8")),
            _raw("i16_3", TensorProto.INT16, rng.choice([7, -3, 100], 200).astype("<i2")),
            _raw("u8_5", TensorProto.UINT8, rng.choice([0, 1, 2, 200, 255], 160).astype("u1")),
            _raw("i32_writer", TensorProto.INT32,
                 rng.choice(np.arange(-10, 10) * 70001, 400).astype("<i4")),
        ]
        return _constants_model([t for t in tensors if names is None or t.name in names])
    return source


I16_TABLE = (7, 0xFFFD, 7, 100, 5)
"""A palette table out of order, with a repeat (7) and unused values (the second 7, 5)."""


def palette_index_7(index: np.ndarray) -> np.ndarray:
    """One index made 7, beyond a table of 5 values (3-bit indices)."""
    index = index.copy()
    index[150] = 7
    return index


def palette_values_short(data: bytes) -> bytes:
    """The first tensor's palette values one byte short (not a whole number of values)."""
    fields = container_edit.read_index(data)
    params = fields["tensors"][0]["params"]
    params["values"] = params["values"][:-1]
    return container_edit.with_index(data, fields)


# --- vectors of format 1.6: lossless mode copy (SPEC.md §6.7) ----------------------------

def copy_tensors(names: tuple[str, ...] | None = None) -> Source:
    """Tensors of which some repeat earlier ones (only ``names`` if given): a float32 weight
    ``w``; ``w_other``, the same but one element; ``w_again``, ``w`` in another shape;
    ``i32``, as many int32 elements; ``q``, a weight for the dead-zone codec; ``w_tied``,
    ``w`` again; ``q_again``, ``q`` again; ``u8`` and ``u8_again``, a uint8 tensor twice."""
    def source(_: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(1601)
        w = _laplace(rng, (8, 24)).astype("<f4")
        other = w.copy()
        other[3, 5] = -other[3, 5]
        q = _laplace(rng, (16, 16)).astype("<f4")
        u8 = rng.integers(0, 256, 100).astype("u1")
        tensors = [
            _raw("w", TensorProto.FLOAT, w),
            _raw("w_other", TensorProto.FLOAT, other),
            _raw("w_again", TensorProto.FLOAT, w.reshape(24, 8)),
            _raw("i32", TensorProto.INT32, rng.integers(-1000, 1000, 192).astype("<i4")),
            _raw("q", TensorProto.FLOAT, q),
            _raw("w_tied", TensorProto.FLOAT, w),
            _raw("q_again", TensorProto.FLOAT, q),
            _raw("u8", TensorProto.UINT8, u8),
            _raw("u8_again", TensorProto.UINT8, u8),
        ]
        return _constants_model([t for t in tensors if names is None or t.name in names])
    return source


def copy_of(name: str, source: str) -> Callable[[bytes], bytes]:
    """The copy ``name``'s ``of`` made the position of the tensor ``source``."""
    def edit(data: bytes) -> bytes:
        fields = container_edit.read_index(data)
        positions = {t["name"]: i for i, t in enumerate(fields["tensors"])}
        params = fields["tensors"][positions[name]]["params"]
        assert params["mode"] == "copy"
        params["of"] = positions[source]
        return container_edit.with_index(data, fields)
    return edit


# --- vectors of format 1.7: lossless mode magnitude (SPEC.md §6.8) -----------------------

F16_SPECIALS = (0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFE00, 0x7C01, 0x0001, 0x8001, 0x03FF,
                0x83FF, 0x7BFF, 0xFBFF)
"""float16 words: ±0.0, ±inf, NaNs (a payload, negative, signalling), the smallest and largest
subnormals of both signs, ±65504."""


def magnitude_tensors(names: tuple[str, ...] | None = None) -> Source:
    """Floats for mode magnitude (only ``names`` if given): ``f16_specials``, Laplacian
    float16 with the float16 specials; ``bf16_pos``, positive bfloat16 (a
    constant sign plane); ``f32``, Laplacian float32 with ±0.0, ±inf and a NaN payload;
    ``f64_neg``, negative float64 (sign plane constant 1); ``i16``, int16."""
    def source(_: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(1701)
        specials = _laplace(rng, (150,), 2.0).astype("<f2")
        specials.view("<u2")[: len(F16_SPECIALS)] = F16_SPECIALS
        f32 = _laplace(rng, (120,)).astype("<f4")
        f32.view("<u4")[[0, 1, 2, 3, 119]] = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00123]
        tensors = [
            _raw("f16_specials", TensorProto.FLOAT16, specials),
            _raw("bf16_pos", TensorProto.BFLOAT16, _bf16(np.abs(_laplace(rng, (100,))))),
            _raw("f32", TensorProto.FLOAT, f32),
            _raw("f64_neg", TensorProto.DOUBLE, -np.abs(_laplace(rng, (40,))).astype("<f8")),
            _raw("i16", TensorProto.INT16, rng.integers(-500, 500, 60).astype("<i2")),
        ]
        return _constants_model([t for t in tensors if names is None or t.name in names])
    return source


def magnitude_top_200(planes: list[np.ndarray]) -> list[np.ndarray]:
    """Plane 0 (7 bits) given one symbol of 200."""
    top = planes[0].copy()
    top[17] = 200
    return [top, *planes[1:]]


def declared_1_6(data: bytes) -> bytes:
    return container_edit.with_version(data, 1, 6)


def quantized(codec: TensorCodec, chunk_elements: int = 1 << 20) -> onnxz.PackOptions:
    """Pack options quantizing weights of 64 elements or more with ``codec``."""
    return onnxz.PackOptions(min_quantized_elements=64, quantizer=codec,
                             chunk_elements=chunk_elements)


VECTORS_LIST = (
    Vector("spec_example_lossless", "SPEC.md §11.1 worked example: lossless float32 planes "
           "(ans exponent, packed, two constant planes)", spec_example, LOSSLESS,
           _matmul_inputs(("X", 8, np.float32)), ARITHMETIC),
    Vector("spec_example_deadzone", "SPEC.md §11.2 worked example: deadzone δ=0.5 with "
           "escapes", spec_example,
           {"options": onnxz.PackOptions(min_quantized_elements=16, step_rel=0.25)},
           _matmul_inputs(("X", 8, np.float32)), ARITHMETIC),
    Vector("lossless_float_planes", "lossless planes of float32, float16, bfloat16, float64: "
           "ans, packed and constant planes", float_planes, LOSSLESS, lambda rng: {}),
    Vector("lossless_zstd", "lossless zstd mode (float32, uint8)", zstd_mode, LOSSLESS,
           lambda rng: {}),
    Vector("lossless_integers", "lossless planes of every integer type and bool",
           integer_types, LOSSLESS, lambda rng: {}),
    Vector("lossless_float8", "lossless planes of the four float8 types", float8_types,
           LOSSLESS, lambda rng: {}),
    Vector("lossless_chunked", "lossless tensors in 48-element chunks, an empty ANS stream",
           chunked_lossless, {"options": onnxz.PackOptions(lossless=True, chunk_elements=48)},
           lambda rng: {}),
    Vector("lossless_zstd_planes", "format 1.1 lossless plane method zstd (float32, float16, "
           "bfloat16, int16; float64 exponents as 2-byte symbols), in 1000-element chunks",
           zstd_planes, {"options": onnxz.PackOptions(lossless=True, chunk_elements=1000)},
           lambda rng: {}),
    Vector("deadzone_midtread", "deadzone float32, δ=0.5", lambda _: weight(201),
           {"options": WEIGHTS}, _matmul_inputs(("X", 24, np.float32)), ARITHMETIC),
    Vector("deadzone_midrise", "deadzone float32, δ=0 (midrise)", lambda _: weight(202),
           {"options": WEIGHTS, "deadzone": 0.0}, _matmul_inputs(("X", 24, np.float32)),
           ARITHMETIC),
    Vector("deadzone_delta_0_3", "deadzone float32, δ=0.3 (t = δ − 0.5 inexact in binary64), "
           "a uniform weight at a coarse step: no escapes", lambda _: weight(203, uniform=True),
           {"options": WEIGHTS, "deadzone": 0.3, "step_rel": 0.3},
           _matmul_inputs(("X", 24, np.float32)), ARITHMETIC),
    Vector("deadzone_f16_bf16_f64", "deadzone float16, bfloat16 and float64, δ=0.75",
           deadzone_dtypes, {"options": WEIGHTS, "deadzone": 0.75, "step_rel": 0.1},
           _matmul_inputs(("X16", 24, np.float16), ("X32", 24, np.float32),
                          ("X64", 24, np.float64)), (1e-3, 1e-3)),
    Vector("deadzone_chunked_escapes", "deadzone float32 in 100-element chunks, escapes of "
           "both signs in some chunks, none in others", outliers,
           {"options": onnxz.PackOptions(min_quantized_elements=64, chunk_elements=100),
            "step_rel": 0.1},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("subgraphs", "weights in Constant nodes, If branches (Constant and initializer) "
           "and a model-local function", subgraphs, {"options": WEIGHTS}, subgraph_inputs,
           ARITHMETIC),
    Vector("paths_tensors_graphs", "tensors in TENSORS and GRAPHS attributes (not runnable)",
           tensors_and_graphs, LOSSLESS),
    Vector("external_data", "packed from an ONNX file with external data", external_data,
           LOSSLESS, _matmul_inputs(("X", 16, np.float32)), ARITHMETIC),
    Vector("lossy_default_cnn", "a small CNN, lossy default (Conv/Gemm weights deadzone, "
           "the rest lossless or inline)", small_cnn, {"options": WEIGHTS},
           lambda rng: {"X": rng.standard_normal((1, 4, 4, 4)).astype(np.float32)},
           ARITHMETIC),
    Vector("future_minor_1_3", "format 1.3 with unknown optional keys and trailing chunk "
           "elements everywhere: decodes as lossy_default_cnn", small_cnn, {"options": WEIGHTS},
           lambda rng: {"X": rng.standard_normal((1, 4, 4, 4)).astype(np.float32)},
           ARITHMETIC, edit=future_minor),
    Vector("mulaw_midrise", "mulaw float32, μ=255, 2^6 levels, midrise (format 1.1)",
           lambda _: weight(301), {"options": quantized(MulawCodec(bits=6))},
           _matmul_inputs(("X", 24, np.float32)), ARITHMETIC),
    Vector("mulaw_midtread_chunked", "mulaw float32, μ=50, 2^5 levels, midtread, in "
           "100-element chunks; outliers set the range", outliers,
           {"options": quantized(MulawCodec(mu=50.0, bits=5, grid="midtread"),
                                 chunk_elements=100)},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("mulaw_f16_bf16_f64", "mulaw float16, bfloat16 and float64, 2^8 levels",
           deadzone_dtypes, {"options": quantized(MulawCodec(bits=8))},
           _matmul_inputs(("X16", 24, np.float16), ("X32", 24, np.float32),
                          ("X64", 24, np.float64)), (1e-3, 1e-3)),
    Vector("minifloat_e4m3", "minifloat float32, E4M3 with a per-tensor bias (format 1.1)",
           lambda _: weight(302), {"options": quantized(MinifloatCodec(4, 3))},
           _matmul_inputs(("X", 24, np.float32)), ARITHMETIC),
    Vector("minifloat_e2m1_subnormals", "minifloat float32, E2M1 (4 bits): most codes "
           "subnormal or zero; 100-element chunks", outliers,
           {"options": quantized(MinifloatCodec(2, 1), chunk_elements=100)},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("minifloat_e5m10_dtypes", "minifloat float16, bfloat16, float64, E5M10 (IEEE "
           "half's layout)", deadzone_dtypes,
           {"options": quantized(MinifloatCodec(5, 10))},
           _matmul_inputs(("X16", 24, np.float16), ("X32", 24, np.float32),
                          ("X64", 24, np.float64)), (1e-3, 1e-3)),
    Vector("minifloat_global_range", "minifloat float32, E3M2, the research's global range: "
           "bias 7, outliers clipped to ±1", outliers,
           {"options": quantized(MinifloatCodec(3, 2, global_range=True))},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("deadzone_global_range", "deadzone float32, the research's global range: step "
           "2/2^6 over [−1, 1], midrise, outliers clipped; a format 1.0 file", outliers,
           {"options": quantized(DeadzoneCodec.global_range(6, 0.0))},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("trellis_explicit_table", "trellis float32 (format 1.1), a mostly positive weight: "
           "explicit table, the state reset after 256 elements", skewed_weight,
           {"options": quantized(TrellisCodec(0.25))},
           _matmul_inputs(("X", 24, np.float32)), ARITHMETIC),
    Vector("trellis_buckets_escapes", "trellis float32 at a fine step: a bucket table with an "
           "escape symbol, outliers of both signs, three 256-element chunks", far_outliers,
           {"options": quantized(TrellisCodec(1 / 128), chunk_elements=300)},
           _matmul_inputs(("X", 32, np.float32)), ARITHMETIC),
    Vector("trellis_f16_bf16_f64", "trellis float16, bfloat16 and float64", deadzone_dtypes,
           {"options": quantized(TrellisCodec(1 / 16))},
           _matmul_inputs(("X16", 24, np.float16), ("X32", 24, np.float32),
                          ("X64", 24, np.float64)), (1e-3, 1e-3)),
    Vector("invalid_trellis_bucket_table", "a trellis bucket table that leaves no frequency "
           "for the zero symbol", outliers,
           {"options": quantized(TrellisCodec(1 / 128))},
           edit=starve_zero_symbol, error="format", match="zero symbol"),
    Vector("invalid_major_2", "format 2.0: refused", spec_example, LOSSLESS,
           edit=lambda d: container_edit.with_version(d, 2, 0), error="format", match="2.0"),
    Vector("invalid_unknown_codec", "codec 'wavelet': refused, named", spec_example, LOSSLESS,
           edit=set_tensor_field("codec", "wavelet"), error="format", match="wavelet"),
    Vector("invalid_unknown_dtype", "dtype 'float128': refused, named", spec_example, LOSSLESS,
           edit=set_tensor_field("dtype", "float128"), error="format", match="float128"),
    Vector("invalid_chunk_crc", "one bit of the chunk flipped", spec_example, LOSSLESS,
           edit=flip_chunk_bit, error="corrupt", match="checksum"),
    Vector("invalid_truncated", "last byte missing", spec_example, LOSSLESS,
           edit=lambda d: d[:-1], error="corrupt", match="truncated"),
    Vector("invalid_absurd_shape", "10^12 elements declared in a 600-byte file", spec_example,
           LOSSLESS, edit=absurd_shape, error="limit", match="exceed"),
    # SPEC revision 2 (issue 14): each catches a decoder mistake (tests/test_vector_mistakes.py)
    Vector("deadzone_float16_direct_rounding", "deadzone float16 whose r lie a hair off "
           "binary16 midpoints (subnormal and normal): rounding through binary32 ties instead",
           _explicit(F16_DIRECT), _options(*((n, c) for n, _, c in F16_DIRECT)), lambda rng: {}),
    Vector("deadzone_bfloat16_double_rounding", "deadzone bfloat16 whose r lie a hair above "
           "and below bfloat16 midpoints: the normative double rounding differs from direct",
           _explicit(BF16_TWICE), _options(*((n, c) for n, _, c in BF16_TWICE)), lambda rng: {}),
    Vector("deadzone_float64_operation_order", "deadzone float64, δ = 0.3 and 0.75: the §7.3 "
           "order differs from Δ·|q| + Δ·t and from Δ·((|q| + δ) − 0.5)", _explicit(F64_ORDER),
           _options(*((n, c) for n, _, c in F64_ORDER)), lambda rng: {}),
    Vector("deadzone_overflow_rounding", "deadzone float16, float32, bfloat16 reconstructions "
           "just above the largest finite value (round to it) and from M + ulp/2 (infinity)",
           _explicit(OVERFLOW), _options(*((n, c) for n, _, c in OVERFLOW)), lambda rng: {}),
    Vector("deadzone_int_params", "deadzone step and deadzone stored as msgpack ints "
           "(2^54 + 3 becomes the binary64 2^54 + 4; 1; 0)", _explicit(INT_PARAMS),
           _options(*((n, c) for n, _, c in INT_PARAMS)), lambda rng: {}),
    Vector("lossless_packed_5_11_bits", "packed planes of 5, 3, 8 and 11 bits (float16, "
           "float64) in chunks whose last byte is partly padding", packed_planes,
           _options(("f16_packed", crafted.ForcedPlanes(["packed"] * 3, counts=(13, 27, 37))),
                    ("f64_packed", crafted.ForcedPlanes(["packed"] * 8, counts=(19, 26)))),
           lambda rng: {}),
    Vector("tables_high_precision", "frequency tables at precision 24, 17 and 14 (frequencies "
           "of 3- and 4-byte varints), ANS tables wider than their plane (offset < 0, values "
           "≥ 2^b never decoded)", lambda folder: _constants_model(
               _explicit(HIGH_PRECISION)(folder).graph.initializer[:]
               + lossless_tables(folder).graph.initializer[:]),
           _options(*((n, c) for n, _, c in HIGH_PRECISION),
                    ("u16_precision_17", crafted.ForcedPlanes(["ans", "ans"], precision=17)),
                    ("i8_precision_14", crafted.ForcedPlanes(["ans"], precision=14)),
                    ("f16_table_beyond_plane", crafted.ForcedPlanes(
                        ["ans", "packed", "packed"], table_ranges={0: (-3, 40)})),
                    ("u8_table_beyond_plane", crafted.ForcedPlanes(
                        ["ans"], table_ranges={0: (0, 300)}))),
           lambda rng: {}),
    Vector("zstd_no_content_size", "graph section, index section and `zstd` chunks as "
           "streamed zstd frames: no content size, a window descriptor, several blocks",
           float32_values, _options(("f32_streamed", crafted.ZstdFrames(
               crafted.streamed_frame, counts=(64, 136)))), lambda rng: {},
           edit=no_content_size),
    Vector("unused_gap_graph_key", "24 unused bytes between the index section and the footer, "
           "an unknown key in the graph map, an unknown index key nested 64 deep",
           spec_example, LOSSLESS, _matmul_inputs(("X", 8, np.float32)), ARITHMETIC,
           edit=gaps_and_graph_key),
    Vector("lossless_bool_bytes", "a bool tensor holding every byte 0..255, restored as stored",
           bool_bytes, LOSSLESS),
    Vector("zero_count_chunks", "chunks of 0 elements in `zstd` (an empty-content frame), "
           "`planes` and deadzone tensors", zero_count_chunks,
           _options(("u8_zstd", crafted.ZstdFrames(_zstd, counts=(0, 100, 0, 100, 0))),
                    ("f32_planes", crafted.ForcedPlanes(["ans", "packed", "packed", "packed"],
                                                        counts=(0, 64, 0))),
                    ("f32_deadzone", crafted.ExplicitDeadzone(np.arange(-32, 32), 0.05,
                                                              counts=(32, 0, 32)))),
           lambda rng: {}),
    Vector("invalid_zstd_trailing_bytes", "four bytes after a chunk's zstd frame", spec_example,
           spec_w_zstd(lambda d: _zstd(d) + bytes(4)), error="corrupt", match="after"),
    Vector("invalid_zstd_skippable_frame", "a 0-element chunk whose part is a skippable frame",
           spec_example, spec_w_zstd(lambda d: _zstd(d) if d else crafted.skippable_frame(),
                                     counts=(0, 40)), error="corrupt", match="not a zstd"),
    Vector("invalid_zstd_empty_part", "a 0-element `zstd` chunk with an empty part",
           spec_example, spec_w_zstd(lambda d: _zstd(d) if d else b"", counts=(40, 0)),
           error="corrupt", match="not a zstd"),
    Vector("invalid_zstd_window", "a chunk's zstd frame declaring a 2^28-byte window",
           spec_example, spec_w_zstd(lambda d: crafted.streamed_frame(d, window_log=28)),
           error="corrupt", match="window"),
    Vector("invalid_element_count_2_64", "shape [2^32, 2^32]: 2^64 elements", spec_example,
           LOSSLESS, edit=huge_shape, error="limit", match="elements"),
    Vector("invalid_path_mistyped_attribute", "an index path into the `t` of an attribute whose "
           "type is FLOAT", constant_node, LOSSLESS, edit=mistyped_attribute, error="format",
           match="type"),
    Vector("invalid_ignored_key_not_str", "an unknown index key whose map has an int key",
           spec_example, LOSSLESS, edit=add_index_key("future", {1: "one"}), error="format",
           match="key"),
    Vector("invalid_ignored_ext", "an unknown index key holding a msgpack ext value",
           spec_example, LOSSLESS, edit=add_index_key("future", msgpack.ExtType(5, b"x")),
           error="format", match="ext"),
    Vector("invalid_nesting_65", "an unknown index key nesting arrays to depth 65",
           spec_example, LOSSLESS, edit=add_index_key("future", nested(64)), error="format",
           match="nest"),
    Vector("invalid_plane_order", "plane 0's ANS stream ends in a wrong state, plane 1 decodes "
           "256 in an 8-bit plane: the range check comes first (format, not corrupt)",
           uint16_model, _options(("u16", MisorderedPlanes())), error="format", match="range"),
    # format 1.2: codec predictive (SPEC.md §16)
    Vector("predictive_rows", "predictive float32 (format 1.2), rows of 64: windowed cosines "
           "16×64 in chunks of 3 rows, escapes in some; a 1000-element chirp (chunks of 3 "
           "rows, a short last row of 40); chunks of 100, 300, 0, 600 elements, rows cut "
           "from each chunk's start", predictive_rows, _options(
               ("basis", PredictiveCodec(1 / 64, 0.5, row=64)),
               ("signal", PredictiveCodec(1 / 64, 0.5, row=64)),
               ("chunk_rows", CraftedPredictive(1 / 64, 0.5, row=64,
                                                counts=(100, 300, 0, 600))),
               chunk_elements=200), lambda rng: {}),
    Vector("predictive_f16_bf16_f64", "predictive float16 (rows of 48, δ=0.5), bfloat16 (rows "
           "of 96, δ=0) and float64 (rows of 64, δ=0.3, a fine step)", predictive_dtypes,
           _options(("f16", PredictiveCodec(1 / 64, 0.5, row=48)),
                               ("bf16", PredictiveCodec(1 / 32, 0.0, row=96)),
                               ("f64", PredictiveCodec(1 / 256, 0.3, row=64))),
           lambda rng: {}),
    Vector("predictive_extremes", "predictive float32, explicit levels in rows of 8: |q| = "
           "2^31 and escaped residuals ±2^35 (the limits), coefficients −32768 and 32767, "
           "predictions halfway between integers (rounded up, also below 0)",
           _levels_model("extremes", len(EXTREME_LEVELS)), _options(
               ("extremes", CraftedPredictive(None, 0.5, row=8, step=2.0**-20,
                                              q=EXTREME_LEVELS,
                                              coefficients=EXTREME_COEFFICIENTS,
                                              coded=(-8, 8)))),
           lambda rng: {}),
    Vector("invalid_predictive_coefficients", "a predictive chunk whose coefficient part lacks "
           "its last row's 4 bytes", lambda _: _constants_model([_raw(
               "basis", TensorProto.FLOAT, _smooth_rows(4, 64).astype("<f4"))]),
           _options(("basis", CraftedPredictive(
               1 / 64, 0.5, row=64, edit=drop_last_coefficients))),
           error="corrupt", match="coefficients"),
    Vector("invalid_predictive_level", "predictive levels doubling along a row (a = 8192): "
           "2^31 is decoded, then 2^31 + 1, beyond the limit", _levels_model(
               "doubling", len(DOUBLING)), _options(
               ("doubling", CraftedPredictive(None, 0.5, row=40, step=2.0**-20, q=DOUBLING,
                                              coefficients=[(8192, 0)], coded=(-2, 2)))),
           error="format", match="level"),
    # format 1.3: codec deadzone_zstd (SPEC.md §17)
    Vector("deadzone_zstd_low_bits", "deadzone_zstd float32 (format 1.3) in 128-element "
           "chunks: a Laplacian weight at a coarse step (k = 0, no escapes); a Student-t "
           "weight at a fine step with two outliers escaped in the first and last chunks "
           "(k = 3, one more than its range needs); a uniform weight at k = 8 (every high "
           "byte 0)", zstd_symbol_tensors(16), _options(
               ("coarse", DeadzoneZstdCodec(1 / 2, 0.5, low_bits=0)),
               ("tails", DeadzoneZstdCodec(1 / 64, 0.5, low_bits=3)),
               ("narrow", DeadzoneZstdCodec(1 / 16, 0.3, low_bits=8)),
               chunk_elements=128), lambda rng: {}),
    Vector("deadzone_zstd_f16_bf16_f64", "deadzone_zstd float16 (k = 1, δ = 0.75), bfloat16 "
           "(k = 0, δ = 0) and float64 (k = 5, δ = 0.5, a fine step)", zstd_symbol_dtypes,
           _options(("w16", DeadzoneZstdCodec(1 / 16, 0.75, low_bits=1)),
                    ("wbf", DeadzoneZstdCodec(1 / 4, 0.0, low_bits=0)),
                    ("w64", DeadzoneZstdCodec(1 / 256, 0.5, low_bits=5))), lambda rng: {}),
    Vector("invalid_deadzone_zstd_position", "a deadzone_zstd high byte of 255 with k = 0 and "
           "a range of a few symbols: a position beyond the range",
           zstd_symbol_tensors(4), _options(("coarse", EditedDeadzoneZstd(
               1 / 2, 0.5, low_bits=0, edit=high_byte_255))), error="format",
           match="position"),
    Vector("invalid_deadzone_zstd_low_bits", "a deadzone_zstd low-bits part one byte short",
           zstd_symbol_tensors(4), _options(("tails", EditedDeadzoneZstd(
               1 / 64, 0.5, low_bits=3, edit=drop_last_low_byte))), error="corrupt",
           match="low"),
    # format 1.4: codec trellis_zstd (SPEC.md §18)
    Vector("trellis_zstd_segments", "trellis_zstd (format 1.4) in 256-element chunks, the "
           "state reset every 64 elements: a float32 Laplacian weight at k = 1 with an "
           "outlier of each sign escaped (first and last chunks), a float16 Student-t weight "
           "at a fine step (k = 4)", trellis_zstd_tensors, _options(
               ("laplace", TrellisZstdCodec(1 / 4, 64, low_bits=1)),
               ("tails16", TrellisZstdCodec(1 / 32, 64, low_bits=4)),
               chunk_elements=256), lambda rng: {}),
    Vector("invalid_trellis_zstd_segment", "a trellis_zstd tensor whose segment is 3",
           trellis_zstd_tensors, _options(("laplace", TrellisZstdCodec(1 / 4, 64,
                                                                      low_bits=1))),
           edit=set_segment_3, error="format", match="segment"),
    # format 1.5: lossless mode palette (SPEC.md §6.6)
    Vector("lossless_palette", "lossless mode palette (format 1.5) in 256-element chunks: "
           "float32 multiples of 1/160 with −0.0, +0.0 and two NaN payloads, and int32 of 20 "
           "values (the writer's choice); index planes packed (float16, exactly 16 values), "
           "ans (bfloat16, 3 values), zstd of 2-byte symbols (float64, 260 values), constant "
           "(int64, one value), packed under an unordered table with a repeat and unused "
           "values (int16), zstd in chunks of 0, 100 and 60 (uint8)", palette_tensors(),
           _options(("f16_16", crafted.ForcedPalette("packed")),
                    ("bf16_3", crafted.ForcedPalette("ans")),
                    ("f64_260", crafted.ForcedPalette("zstd")),
                    ("i64_one", crafted.ForcedPalette("constant")),
                    ("i16_3", crafted.ForcedPalette("packed", table=I16_TABLE)),
                    ("u8_5", crafted.ForcedPalette("zstd", counts=(0, 100, 60))),
                    chunk_elements=256), lambda rng: {}),
    Vector("invalid_palette_index", "a palette index of 7 with a table of 5 values",
           palette_tensors(("i16_3",)), _options(
               ("i16_3", crafted.ForcedPalette("packed", table=I16_TABLE,
                                               edit=palette_index_7))),
           error="format", match="index"),
    Vector("invalid_palette_values", "palette values of float32 one byte short (4·n − 1 bytes)",
           palette_tensors(("f32_grid",)), _options(("f32_grid", crafted.ForcedPalette("ans"))),
           edit=palette_values_short, error="format", match="values"),
    # format 1.6: lossless mode copy (SPEC.md §6.7)
    Vector("lossless_copy", "lossless mode copy (format 1.6), the writer's own choice, in "
           "chunks of 64: a float32 weight in 3 chunks copied twice (once in another shape) "
           "as one empty chunk each; a dead-zone weight copied (a lossy source); a uint8 "
           "tensor copied; not copies: the weight with one element changed, an int32 tensor "
           "of as many elements", copy_tensors(),
           _options(("q", DeadzoneCodec(0.1, 0.5)), ("q_again", DeadzoneCodec(0.1, 0.5)),
                    chunk_elements=64), lambda rng: {}),
    Vector("invalid_copy_reference", "a copy whose 'of' is its own position",
           copy_tensors(("w", "w_again")), _options(), edit=copy_of("w_again", "w_again"),
           error="format", match="earlier"),
    Vector("invalid_copy_of_copy", "a copy whose source is a copy",
           copy_tensors(("w", "w_again", "w_tied")), _options(),
           edit=copy_of("w_tied", "w_again"),
           error="format", match="itself a copy"),
    Vector("invalid_copy_dtype", "a copy whose source is int32 (as many elements)",
           copy_tensors(("w", "i32", "w_tied")), _options(), edit=copy_of("w_tied", "i32"),
           error="format", match="int32"),
    # format 1.7: lossless mode magnitude (SPEC.md §6.8)
    Vector("lossless_magnitude", "lossless mode magnitude (format 1.7) in chunks of 128: "
           "planes packed in chunks of 0, 100 and 50 (float16 with ±0.0, ±inf, NaN payloads "
           "and subnormals), ans, zstd and constant 0 (bfloat16), zstd, ans, packed, packed, "
           "ans (float32 with ±0.0, ±inf, a NaN payload), packed and constant 1 (float64)",
           magnitude_tensors(("f16_specials", "bf16_pos", "f32", "f64_neg")),
           _options(("f16_specials", crafted.ForcedPlanes(["packed"] * 3, mode="magnitude",
                                                           counts=(0, 100, 50))),
                    ("bf16_pos", crafted.ForcedPlanes(["ans", "zstd", "constant"],
                                                      mode="magnitude")),
                    ("f32", crafted.ForcedPlanes(["zstd", "ans", "packed", "packed", "ans"],
                                                 mode="magnitude")),
                    ("f64_neg", crafted.ForcedPlanes(["packed"] * 8 + ["constant"],
                                                     mode="magnitude")),
                    chunk_elements=128), lambda rng: {}),
    Vector("invalid_magnitude_version", "a float16 tensor in mode magnitude in a file "
           "declaring format 1.6", magnitude_tensors(("f16_specials",)),
           _options(("f16_specials", crafted.ForcedPlanes(["zstd", "packed", "packed"],
                                                          mode="magnitude"))),
           edit=declared_1_6, error="format", match="magnitude"),
    Vector("invalid_magnitude_symbol", "a magnitude plane 0 (7 bits) in zstd holding 200",
           magnitude_tensors(("f16_specials",)),
           _options(("f16_specials", crafted.ForcedPlanes(["zstd", "packed", "packed"],
                                                          mode="magnitude",
                                                          edit=magnitude_top_200))),
           error="format", match="7-bit"),
    Vector("invalid_magnitude_dtype", "an int16 tensor in mode magnitude (3 packed planes)",
           magnitude_tensors(("i16",)),
           _options(("i16", crafted.ForcedPlanes(["packed"] * 3, mode="magnitude"))),
           error="format", match="float"),
)


# --- generation --------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_record(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": a.dtype.str, "shape": list(a.shape), "hex": a.tobytes().hex()}


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, inputs), strict=True))


def error_kind(exc: onnxz.OnnxzError) -> str:
    if isinstance(exc, onnxz.LimitExceededError):
        return "limit"
    return "format" if isinstance(exc, onnxz.FormatError) else "corrupt"


def pack(vector: Vector, index: int, folder: Path) -> tuple[bytes, dict[str, Any]]:
    """The vector's bytes and manifest entry, checked with both decoders."""
    source = vector.source(folder)
    packed = folder / f"{vector.name}.onnxz"
    onnxz.save(source, packed, **vector.save)
    data = packed.read_bytes()
    if vector.edit:
        data = vector.edit(data)
        packed.write_bytes(data)
    entry: dict[str, Any] = {"file": packed.name, "sha256": sha256(data), "bytes": len(data),
                             "description": vector.description}
    if vector.error:
        try:
            onnxz.load(packed)
        except onnxz.OnnxzError as exc:
            assert error_kind(exc) == vector.error and vector.match in str(exc), exc
        else:
            raise AssertionError(f"{vector.name}: onnxz decoded an invalid vector")
        try:
            reference_decoder.decode(data)
        except reference_decoder.DecodeError as exc:
            assert exc.kind == vector.error, exc
        else:
            raise AssertionError(f"{vector.name}: the reference decoded an invalid vector")
        return data, {**entry, "error": {"kind": vector.error, "match": vector.match}}
    model = onnxz.load(packed)
    reference = reference_decoder.decode(data)
    assert model.SerializeToString() == reference.model.SerializeToString(), vector.name
    index_fields = container_edit.read_index(data)
    entry["tensors"] = [
        {"path": t["path"], "name": t["name"], "dtype": t["dtype"], "shape": t["shape"],
         "codec": t["codec"], "sha256": sha256(reference.tensors[tuple(t["path"])])}
        for t in index_fields["tensors"]
    ]
    if vector.inputs is not None:
        inputs = vector.inputs(np.random.default_rng(1000 + index))
        outputs = run(model, inputs)
        again = run(reference.model, inputs)
        assert all(outputs[k].tobytes() == again[k].tobytes() for k in outputs), vector.name
        entry["run"] = {
            "inputs": {k: array_record(v) for k, v in inputs.items()},
            "outputs": {k: array_record(v) for k, v in outputs.items()},
            "rtol": vector.tolerance[0], "atol": vector.tolerance[1],
        }
    return data, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=VECTORS, help="vector folder")
    parser.add_argument("--force", action="store_true",
                        help="regenerate published vectors too (their hashes change)")
    args = parser.parse_args(argv)
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    published = {} if args.force else manifest.get("vectors", {})
    for entry in published.values():
        path = args.out / entry["file"]
        if not path.exists() or sha256(path.read_bytes()) != entry["sha256"]:
            raise SystemExit(f"published vector {path} is missing or changed: restore it "
                             "(published vectors are immutable)")
    vectors = dict(published)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, vector in enumerate(VECTORS_LIST):
        if vector.name in published:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            data, entry = pack(vector, i, Path(tmp))
        (args.out / entry["file"]).write_bytes(data)
        vectors[vector.name] = entry
        print(f"wrote {entry['file']} ({len(data)} bytes)")
    manifest = {
        "format": "onnxz 1.0",
        "about": "Conformance vectors: tools/make_vectors.py made them; tests/test_vectors.py "
                 "checks them. A published vector never changes.",
        "vectors": vectors,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
