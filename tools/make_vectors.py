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
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import container_edit  # noqa: E402
import reference_decoder  # noqa: E402

import onnxz  # noqa: E402

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


def weight(seed: int, uniform: bool = False) -> onnx.ModelProto:
    """Y = MatMul(X, W) with a float32 weight W [24, 16], Laplacian or uniform."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.1, 0.1, (24, 16)) if uniform else _laplace(rng, (24, 16))
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                  [_io("X", TensorProto.FLOAT, [1, 24])], [_io("Y", TensorProto.FLOAT, [1, 16])],
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


def flip_chunk_bit(data: bytes) -> bytes:
    return data[:70] + bytes([data[70] ^ 0x08]) + data[71:]


LOSSLESS = {"lossless": True}
WEIGHTS = onnxz.PackOptions(min_quantized_elements=64)

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
