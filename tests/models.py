"""Small ONNX models built in code, each exercising one place weights can live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]

DEADZONE_LEVELS = frozenset({"deadzone", "deadzone_zstd"})
"""Codecs that store the dead-zone levels themselves (the writer picks one per tensor)."""


def _weights(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.laplace(0.0, 0.05, size=shape)).astype(dtype)


def matmul(w: np.ndarray) -> onnx.ModelProto:
    """x[1,R] -> MatMul with the float32 weight ``w`` [R,C] (initializer "w") -> y[1,C]."""
    rows, cols = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph)


def mlp(hidden: int = 64, dtype=np.float32) -> onnx.ModelProto:
    """x[N,32] -> MatMul -> Add -> Relu -> MatMul -> y[N,10]; weights as initializers."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    w1 = numpy_helper.from_array(_weights((32, hidden), 1, dtype), "w1")
    b1 = numpy_helper.from_array(_weights((hidden,), 2, dtype), "b1")
    w2 = numpy_helper.from_array(_weights((hidden, 10), 3, dtype), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", elem, ["N", 32])],
        [helper.make_tensor_value_info("y", elem, ["N", 10])],
        [w1, b1, w2],
        doc_string="a tiny MLP",
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="onnxz-tests")
    helper.set_model_props(model, {"purpose": "test", "unicode": "δΔ ✓"})
    return model


def constants_and_if(out: int = 8) -> onnx.ModelProto:
    """Weights in Constant nodes, one inside each branch of an If (as silero-vad does)."""

    def branch(seed: int, name: str) -> onnx.GraphProto:
        w = numpy_helper.from_array(_weights((16, out), seed), f"{name}_w")
        return helper.make_graph(
            [
                helper.make_node("Constant", [], [f"{name}_wc"], value=w),
                helper.make_node("MatMul", ["h", f"{name}_wc"], [f"{name}_out"]),
            ],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["N", out])],
        )

    w0 = numpy_helper.from_array(_weights((4, 16), 7), "w0")
    shape = numpy_helper.from_array(np.array([-1, 16], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w0c"], value=w0),
            helper.make_node("MatMul", ["x", "w0c"], ["h0"]),
            helper.make_node("Reshape", ["h0", "shape"], ["h"]),
            helper.make_node("If", ["flag"], ["y"],
                             then_branch=branch(11, "then"), else_branch=branch(12, "else")),
        ],
        "ifmodel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [shape],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def carried_weights_loop(width: int = 32, steps: int = 3) -> onnx.ModelProto:
    """x[1,W] -> Loop (3 steps) carrying h and the weights: h = Tanh(h·w + b); the body
    passes w on unchanged (its output is its input, as tf2onnx exports a Keras LSTM's
    kernels) and b through an Identity; the Loop's final w and b are unused."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["h_in", "w_in"], ["hw"]),
         helper.make_node("Add", ["hw", "b_in"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("Identity", ["b_in"], ["b_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, width]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [width, width]),
         helper.make_tensor_value_info("b_in", TensorProto.FLOAT, [width])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, width]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [width, width]),
         helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [width])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "cond", "x", "w", "b"], ["y", "w_final", "b_final"],
                          body=body)],
        "carried",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.array(steps, np.int64), "steps"),
         numpy_helper.from_array(np.array(True), "cond"),
         numpy_helper.from_array(_weights((width, width), 21) * 8, "w"),
         numpy_helper.from_array(_weights((width,), 22), "b")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def big_conv(channels: int = 64) -> onnx.ModelProto:
    """A conv layer big enough for the lossy default to quantize its weight."""
    w = numpy_helper.from_array(_weights((channels, 16, 3, 3), 5), "conv_w")
    b = numpy_helper.from_array(_weights((channels,), 6), "conv_b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def mixed_dtypes() -> onnx.ModelProto:
    """Initializers of many element types, all returned as outputs through Identity."""
    rng = np.random.default_rng(9)
    arrays = {
        "f64": rng.standard_normal(300),
        "i64": rng.integers(-1000, 1000, 300),
        "i32": rng.integers(-(2**31), 2**31 - 1, 300).astype(np.int32),
        "i8": rng.integers(-128, 127, 300).astype(np.int8),
        "u8": rng.integers(0, 255, 300).astype(np.uint8),
        "u16": rng.integers(0, 65535, 300).astype(np.uint16),
        "b": rng.integers(0, 2, 300).astype(bool),
        "f16": rng.standard_normal(300).astype(np.float16),
    }
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    bf = helper.make_tensor("bf16", TensorProto.BFLOAT16, [300],
                            rng.integers(0, 65535, 300).astype(np.uint16).tobytes(), raw=True)
    inits.append(bf)
    nodes = [helper.make_node("Identity", [t.name], [t.name + "_out"]) for t in inits]
    outputs = [helper.make_tensor_value_info(t.name + "_out", t.data_type, list(t.dims))
               for t in inits]
    graph = helper.make_graph(nodes, "dtypes", [], outputs, inits)
    return helper.make_model(graph, opset_imports=OPSET)


def tiny_transformer(vocab: int = 500, width: int = 64) -> onnx.ModelProto:
    """Token ids -> embedding Gather -> LayerNorm -> self-attention-like MatMuls -> logits."""
    emb = numpy_helper.from_array(_weights((vocab, width), 21), "embedding")
    scale = numpy_helper.from_array(np.ones(width, np.float32) + _weights((width,), 22), "ln_s")
    bias = numpy_helper.from_array(_weights((width,), 23), "ln_b")
    wq, wk, wv, wo = (numpy_helper.from_array(_weights((width, width), s), n)
                      for s, n in ((24, "wq"), (25, "wk"), (26, "wv"), (27, "wo")))
    perm = numpy_helper.from_array(np.array([0, 2, 1], np.int64), "unused_perm")
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["e"]),
        helper.make_node("LayerNormalization", ["e", "ln_s", "ln_b"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "wq"], ["q"]),
        helper.make_node("MatMul", ["n", "wk"], ["k"]),
        helper.make_node("MatMul", ["n", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "transformer",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "T", width])],
        [emb, scale, bias, wq, wk, wv, wo, perm],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def word_bag(words: tuple[str, ...] = ("hello", "world", "good", "morning", "onnx")
             ) -> onnx.ModelProto:
    """words[1, n] (strings) -> ai.onnx.ml LabelEncoder (unknown words: 0) -> Gather from a
    [8, 300] table -> ReduceMean -> MatMul -> y[1, 16]: a model whose input is text (as
    sklearn-onnx's text pipelines, or an encoder with its tokenizer in the graph)."""
    table = numpy_helper.from_array(_weights((8, 300), 71), "table")
    w = numpy_helper.from_array(_weights((300, 16), 72), "w")
    nodes = [helper.make_node("LabelEncoder", ["words"], ["ids"], domain="ai.onnx.ml",
                              keys_strings=list(words), default_int64=0,
                              values_int64s=list(range(1, len(words) + 1))),
             helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "word_bag", [helper.make_tensor_value_info("words", TensorProto.STRING, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [table, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid("ai.onnx.ml", 2)])


def embedding_bag(vocab: int = 256, width: int = 16, classes: int = 4) -> onnx.ModelProto:
    """ids int64 [batch, seq], mask bool [batch, seq] -> masked sum of embeddings -> MatMul
    -> scores float [batch, classes]. Ids outside 0..vocab-1 make onnxruntime fail."""
    table = numpy_helper.from_array(_weights((vocab, width), 21), "table")
    w = numpy_helper.from_array(_weights((width, classes), 22), "w")
    seq_axis = numpy_helper.from_array(np.array([1], dtype=np.int64), "seq_axis")
    last_axis = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["emb"]),
            helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["m", "last_axis"], ["m3"]),
            helper.make_node("Mul", ["emb", "m3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "seq_axis"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["scores"]),
        ],
        "embedding_bag",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        [table, w, seq_axis, last_axis],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def unnamed_dims() -> onnx.ModelProto:
    """x float [?, ?] and h float [2, ?, 8] (unnamed dynamic dims, like silero-vad's), no
    weights: y = sum of x over axis 1, h passed through."""
    axis = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axis"], ["y"], keepdims=1),
         helper.make_node("Identity", ["h"], ["h_out"])],
        "unnamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [2, None, 8])],
        [axis],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def classifier_heads(classes: int = 10) -> onnx.ModelProto:
    """x[N,32] -> MatMul -> h; outputs of every kind the verifier tells apart:
    ``logits`` [N,C] (fed to an ArgMax), ``label`` int64 [N] (that ArgMax), ``probs`` [N,C]
    (Softmax), ``manual`` [N,C] (exp/sum written out: only the data shows it sums to 1) and
    ``hidden`` [N,4,16] (hidden states, not class scores)."""
    w1 = numpy_helper.from_array(_weights((32, 64), 31) * 10, "w1")
    w2 = numpy_helper.from_array(_weights((64, classes), 32) * 10, "w2")
    w3 = numpy_helper.from_array(_weights((64, classes), 33) * 10, "w3")
    shape = numpy_helper.from_array(np.array([-1, 4, 16], np.int64), "hidden_shape")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Reshape", ["h", "hidden_shape"], ["hidden"]),
            helper.make_node("MatMul", ["h", "w2"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
            helper.make_node("MatMul", ["h", "w3"], ["z"]),
            helper.make_node("Exp", ["z"], ["ez"]),
            helper.make_node("ReduceSum", ["ez", "axes"], ["sz"], keepdims=1),
            helper.make_node("Div", ["ez", "sz"], ["manual"]),
        ],
        "heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("manual", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", 4, 16])],
        [w1, w2, w3, shape, axes],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def two_branches(width: int = 64, weak: float = 0.02) -> onnx.ModelProto:
    """y = x·A + weak·(x·B): A and B alike, but B's error reaches y ``weak`` times smaller."""
    a = numpy_helper.from_array(_weights((width, width), 41), "strong")
    b = numpy_helper.from_array(_weights((width, width), 42), "weak")
    scale = numpy_helper.from_array(np.array(weak, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "strong"], ["ya"]),
         helper.make_node("MatMul", ["x", "weak"], ["yb"]),
         helper.make_node("Mul", ["yb", "scale"], ["ybs"]),
         helper.make_node("Add", ["ya", "ybs"], ["y"])],
        "branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [a, b, scale],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def recurrent_cell(width: int = 32) -> onnx.ModelProto:
    """A streaming cell: hN = tanh(h·R + x), y = hN·V; a caller feeds hN back as the next
    chunk's h (R is scaled to a spectral radius near 1: errors in it compound over a stream)."""
    r = np.random.default_rng(51).standard_normal((width, width))
    r *= 0.99 / np.max(np.abs(np.linalg.eigvals(r)))
    recur = numpy_helper.from_array(r.astype(np.float32), "recur")
    readout = numpy_helper.from_array(_weights((width, 2), 52), "readout")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "recur"], ["hr"]),
         helper.make_node("Add", ["hr", "x"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["hN"]),
         helper.make_node("MatMul", ["hN", "readout"], ["y"])],
        "cell",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("hN", TensorProto.FLOAT, [1, width])],
        [recur, readout],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def cell_stream(model: onnx.ModelProto, steps: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Samples of :func:`recurrent_cell` as a streaming caller makes them: each chunk's h is
    the original's hN on the chunk before (the first is the zero state)."""
    from onnxz.verifier import session_from_proto

    session = session_from_proto(model)
    xs = (0.5 * np.random.default_rng(seed).standard_normal((steps, 1, 32))).astype(np.float32)
    hs = [np.zeros((1, 32), np.float32)]
    for x in xs[:-1]:
        hs.append(session.run(["hN"], {"x": x, "h": hs[-1]})[0])
    return {"x": xs, "h": np.stack(hs)}


def binary_head(width: int = 64, vector: bool = False) -> onnx.ModelProto:
    """x[N,32] -> MatMul -> Relu -> MatMul -> Sigmoid -> p[N,1]: one yes/no probability per
    row (a detector's "speech" score), and its logit z[N,1]. With ``vector``, p is reshaped
    to [N] (as faster-whisper's Silero VAD gives its chunks' speech probabilities)."""
    w1 = numpy_helper.from_array(_weights((32, width), 61), "w1")
    w2 = numpy_helper.from_array(_weights((width, 1), 62) * 20, "w2")
    shape = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    sigmoid = [helper.make_node("Sigmoid", ["z"], ["s"]),
               helper.make_node("Reshape", ["s", "flat"], ["p"])] if vector else [
        helper.make_node("Sigmoid", ["z"], ["p"])]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["z"]), *sigmoid],
        "binary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N"] if vector else ["N", 1]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 1])],
        [w1, w2] + ([shape] if vector else []),
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _map_trunk(width: int, pixels: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """The weights and nodes of x[N,32] -> MatMul -> Relu -> MatMul -> z[N, pixels]."""
    w1 = numpy_helper.from_array(_weights((32, width), 63) / 32**0.5, "w1")
    w2 = numpy_helper.from_array(_weights((width, pixels), 64) / width**0.5, "w2")
    return [w1, w2], [helper.make_node("MatMul", ["x", "w1"], ["h"]),
                      helper.make_node("Relu", ["h"], ["r"]),
                      helper.make_node("MatMul", ["r", "w2"], ["z"])]


def saturated_map(gain: float = 1e5, width: int = 64, pixels: int = 256) -> onnx.ModelProto:
    """x[N,32] -> MatMul -> Relu -> MatMul -> × ``gain`` -> Sigmoid -> map[N,256]: a
    probability map whose logits are mostly far from 0 (a DB text detector's map is 0 or 1
    but at the borders of its regions), so their SNR is the saturated pixels'."""
    weights, trunk = _map_trunk(width, pixels)
    graph = helper.make_graph(
        [*trunk,
         helper.make_node("Mul", ["z", "gain"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["map"])],
        "saturated_map",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", pixels])],
        [*weights, numpy_helper.from_array(np.array(gain, np.float32), "gain")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def faint_map(pixels: int = 1024, width: int = 64) -> onnx.ModelProto:
    """x[N,32] -> MatMul -> Relu -> MatMul (z) -> 140·z + 400·Relu(z − 0.012) − 15 -> Sigmoid
    -> map[N,1024]: a text detector's map on noise (PP-OCRv5 det on generated inputs): most
    logits near −15 (probabilities ~3e-7), a few pixels up to ~3e-5 (between the default's
    degenerate 1e-5 and 1e-3)."""
    weights, trunk = _map_trunk(width, pixels)
    graph = helper.make_graph(
        [*trunk,
         helper.make_node("Mul", ["z", "slope"], ["low"]),
         helper.make_node("Sub", ["z", "knee"], ["above"]),
         helper.make_node("Relu", ["above"], ["hot"]),
         helper.make_node("Mul", ["hot", "gain"], ["high"]),
         helper.make_node("Add", ["low", "high"], ["raised"]),
         helper.make_node("Add", ["raised", "shift"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["map"])],
        "faint_map",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", pixels])],
        [*weights] + [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (
            ("slope", 140.0), ("knee", 0.012), ("gain", 400.0), ("shift", -15.0))],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def concat_detector(anchors: int = 256, classes: int = 4, width: int = 32,
                    score_gain: float = 1.0) -> onnx.ModelProto:
    """x[N,256,32] -> boxes (MatMul × 100, in pixels) and scores (Sigmoid(MatMul − 10), mostly
    near 0; their logits × ``score_gain``), each transposed to [N, values, anchors] and
    joined by a Concat that takes the Sigmoid's output as it is: output0 [N, 4 + classes,
    anchors], as YOLOv8 exports give them (NMS outside the graph)."""
    rng = np.random.default_rng(7)
    boxes = numpy_helper.from_array(
        (rng.standard_normal((width, 4)) / width**0.5).astype(np.float32), "wb")
    scores = numpy_helper.from_array(
        (4 * score_gain * rng.standard_normal((width, classes)) / width**0.5).astype(np.float32),
        "ws")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wb"], ["b0"]),
         helper.make_node("Mul", ["b0", "pixels"], ["b1"]),
         helper.make_node("Transpose", ["b1"], ["boxes"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["x", "ws"], ["s0"]),
         helper.make_node("Add", ["s0", "shift"], ["l0"]),
         helper.make_node("Transpose", ["l0"], ["logits"], perm=[0, 2, 1]),
         helper.make_node("Sigmoid", ["logits"], ["scores"]),
         helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1)],
        "concat_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", anchors, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                       ["N", 4 + classes, anchors])],
        [boxes, scores, numpy_helper.from_array(np.array(100, np.float32), "pixels"),
         numpy_helper.from_array(np.array(-10 * score_gain, np.float32), "shift")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def relu_convnet(channels: int = 16, classes: int = 10) -> onnx.ModelProto:
    """x[N,3,12,12] -> Conv(+bias) -> Relu -> Conv (no bias) -> BatchNormalization -> Relu
    -> GlobalAveragePool -> Flatten -> MatMul -> Add -> Relu -> Gemm(transB, +C) -> y[N,C]:
    each place a layer's bias can live, every layer fed inputs whose mean is not zero."""
    c = channels
    rng = np.random.default_rng(60)
    tensors = {
        "conv1_w": _weights((c, 3, 3, 3), 61) * 4, "conv1_b": _weights((c,), 62),
        "conv2_w": _weights((c, c, 3, 3), 63) * 2,
        "bn_scale": (1 + 0.1 * rng.standard_normal(c)).astype(np.float32),
        "bn_bias": _weights((c,), 64), "bn_mean": _weights((c,), 65),
        "bn_var": (1 + 0.1 * rng.random(c)).astype(np.float32),
        "fc_w": _weights((c, 32), 66) * 8, "fc_b": _weights((32,), 67),
        "out_w": _weights((classes, 32), 68) * 8, "out_c": _weights((classes,), 69),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "conv2_w"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization",
                             ["c2", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n2"]),
            helper.make_node("Relu", ["n2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "fc_w"], ["h"]),
            helper.make_node("Add", ["h", "fc_b"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r3"]),
            helper.make_node("Gemm", ["r3", "out_w", "out_c"], ["y"], transB=1),
        ],
        "relu_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def last_token_embedding(rows: int = 160, width: int = 64) -> onnx.ModelProto:
    """tokens int64[1,T] -> Gather (the last token) -> Gather of an embedding table [rows,
    width] -> MatMul -> y: the ids reach the table through another Gather, and ids of
    ``rows`` or more make the model fail."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["tokens", "last"], ["token"], axis=1),
         helper.make_node("Gather", ["table", "token"], ["embedded"]),
         helper.make_node("MatMul", ["embedded", "w"], ["y"])],
        "last_token",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.array(-1, np.int64), "last"),
         numpy_helper.from_array(_weights((rows, width), 70), "table"),
         numpy_helper.from_array(_weights((width, width), 71), "w")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def written(folder: Path, model: onnx.ModelProto, samples: dict[str, np.ndarray]
            ) -> tuple[Path, Path]:
    """``model`` saved as folder/m.onnx and ``samples`` as folder/calib.npz (a CLI's view)."""
    model_path, inputs_path = folder / "m.onnx", folder / "calib.npz"
    model_path.write_bytes(model.SerializeToString())
    np.savez(inputs_path, **samples)
    return model_path, inputs_path


def message_passing(width: int = 32) -> onnx.ModelProto:
    """A graph network's layer: node features feat [N, 16] -> h = feat·W; each edge of
    edge_index int64 [2, E] carries h[source] to its target (Gather, ScatterElements with
    reduction add) -> y [N, width]. Its indices index nodes, a size known only at run time:
    an index of N or more makes the model fail."""
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["feat", "w"], ["h"]),
         helper.make_node("Gather", ["edge_index", "zero"], ["source"], axis=0),
         helper.make_node("Gather", ["edge_index", "one"], ["target"], axis=0),
         helper.make_node("Gather", ["h", "source"], ["messages"], axis=0),
         helper.make_node("Unsqueeze", ["target", "axes"], ["target_column"]),
         helper.make_node("Shape", ["messages"], ["messages_shape"]),
         helper.make_node("Expand", ["target_column", "messages_shape"], ["where"]),
         helper.make_node("ScatterElements", ["h", "where", "messages"], ["y"], axis=0,
                          reduction="add")],
        "message_passing",
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "E"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [numpy_helper.from_array(_weights((16, width), 80), "w"), zero, one, axes],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def picking_detector(anchors: int = 400, picks: int = 300, channels: int = 16
                     ) -> onnx.ModelProto:
    """An NMS-free detector's head (YOLOv10/YOLO26, DETR): image x [1, 8, 20, 20] -> Conv ->
    Relu -> Conv -> 5 values per anchor (4 box values, 1 score logit) -> Sigmoid scores ->
    TopK picks the ``picks`` best anchors -> their boxes (Gather) = dets [1, 1, picks, 4]
    and their scores = scores [1, picks]. Low-ranked anchors are near ties: any weight
    change reorders them."""
    side = int(anchors**0.5)
    k = numpy_helper.from_array(np.array([picks], np.int64), "k")
    split = numpy_helper.from_array(np.array([4, 1], np.int64), "split")
    shape = numpy_helper.from_array(np.array([1, 5, side * side], np.int64), "shape")
    reduce_axes = numpy_helper.from_array(np.array([1], np.int64), "reduce_axes")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w_features"], ["features"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["features"], ["relu"]),
         helper.make_node("Conv", ["relu", "w_head"], ["head"]),
         helper.make_node("Reshape", ["head", "shape"], ["anchors"]),
         helper.make_node("Split", ["anchors", "split"], ["box_values", "logits"], axis=1),
         helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
         helper.make_node("ReduceMax", ["probabilities", "reduce_axes"], ["best"],
                          keepdims=0),
         helper.make_node("TopK", ["best", "k"], ["scores", "picked"], axis=-1),
         helper.make_node("Transpose", ["box_values"], ["boxes"], perm=[0, 2, 1]),
         helper.make_node("Gather", ["boxes", "picked"], ["dets"], axis=1)],
        "picking_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, side, side])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 1, picks, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, picks])],
        [numpy_helper.from_array(_weights((channels, 8, 3, 3), 90) * 4, "w_features"),
         numpy_helper.from_array(_weights((5, channels, 1, 1), 91) * 4, "w_head"),
         k, split, shape, reduce_axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def thresholding_detector(integer_scores: bool = False) -> onnx.ModelProto:
    """A detector that keeps the anchors scoring above 0.5 in the graph: image x
    [1, 8, 20, 20] -> Conv -> Relu -> Conv -> 5 values per anchor (4 box values, 1 score
    logit) -> Sigmoid -> NonZero(score > 0.5) -> the kept boxes dets [4, N] and their
    scores [N]; N changes with any score that crosses the threshold. With
    ``integer_scores`` the threshold compares the scores cast to int32 tenths (no float
    score is thresholded)."""
    nodes = [helper.make_node("Conv", ["x", "w_features"], ["features"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["features"], ["relu"]),
             helper.make_node("Conv", ["relu", "w_head"], ["head"]),
             helper.make_node("Reshape", ["head", "shape"], ["anchors"]),
             helper.make_node("Split", ["anchors", "split"], ["boxes", "logits"], axis=0),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
             helper.make_node("Squeeze", ["probabilities", "first_axis"], ["scores_all"])]
    if integer_scores:
        nodes += [helper.make_node("Mul", ["scores_all", "ten"], ["tenths"]),
                  helper.make_node("Cast", ["tenths"], ["compared"], to=TensorProto.INT32),
                  helper.make_node("Greater", ["compared", "five"], ["kept"])]
    else:
        nodes.append(helper.make_node("Greater", ["scores_all", "half"], ["kept"]))
    nodes += [helper.make_node("NonZero", ["kept"], ["where"]),
              helper.make_node("Squeeze", ["where", "first_axis"], ["indices"]),
              helper.make_node("Gather", ["boxes", "indices"], ["dets"], axis=1),
              helper.make_node("Gather", ["scores_all", "indices"], ["scores"], axis=0)]
    graph = helper.make_graph(
        nodes, "thresholding_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [4, "N"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(_weights((16, 8, 3, 3), 90) * 4, "w_features"),
         numpy_helper.from_array(_weights((5, 16, 1, 1), 91) * 4, "w_head"),
         numpy_helper.from_array(np.array([5, 400], np.int64), "shape"),
         numpy_helper.from_array(np.array([4, 1], np.int64), "split"),
         numpy_helper.from_array(np.array([0], np.int64), "first_axis"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(np.array(10, np.float32), "ten"),
         numpy_helper.from_array(np.array(5, np.int32), "five")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

def mutual_matcher(points: int = 64, dims: int = 32, width: int = 64) -> onnx.ModelProto:
    """A keypoint matcher's head (LightGlue, XFeat): descriptors a and b [1, points, dims]
    -> a shared MatMul projection -> similarities [1, points, points] -> each point's best
    partner both ways (ArgMax) -> a mutual check (a's partner's partner is a) -> outputs
    the match score where the match is mutual, 0 elsewhere (``mscores``, float), and the
    partner where it is mutual and scores above 0.5, -1 elsewhere (``matches``, int64).
    Random descriptors leave many near-tied partners: any weight error turns matches on
    and off."""
    nodes = [helper.make_node("MatMul", ["a", "w_project"], ["da"]),
             helper.make_node("MatMul", ["b", "w_project"], ["db"]),
             helper.make_node("Transpose", ["db"], ["dbt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["da", "dbt"], ["similarity"]),
             helper.make_node("ArgMax", ["similarity"], ["partner"], axis=2, keepdims=0),
             helper.make_node("ArgMax", ["similarity"], ["partner_b"], axis=1, keepdims=0),
             helper.make_node("GatherElements", ["partner_b", "partner"], ["back"], axis=1),
             helper.make_node("Equal", ["back", "own"], ["mutual"]),
             helper.make_node("ReduceMax", ["similarity"], ["best"], axes=[2], keepdims=0),
             helper.make_node("Sigmoid", ["best"], ["score"]),
             helper.make_node("Where", ["mutual", "score", "zero"], ["mscores"]),
             helper.make_node("Greater", ["mscores", "half"], ["confident"]),
             helper.make_node("And", ["mutual", "confident"], ["valid"]),
             helper.make_node("Where", ["valid", "partner", "none"], ["matches"])]
    graph = helper.make_graph(
        nodes, "mutual_matcher",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, points, dims])
         for n in ("a", "b")],
        [helper.make_tensor_value_info("mscores", TensorProto.FLOAT, [1, points]),
         helper.make_tensor_value_info("matches", TensorProto.INT64, [1, points])],
        [numpy_helper.from_array(_weights((dims, width), 95) * 0.4, "w_project"),
         numpy_helper.from_array(np.arange(points, dtype=np.int64)[None], "own"),
         numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(np.array(-1, np.int64), "none")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def query_selecting_detector(tokens: int = 400, queries: int = 300, channels: int = 16
                             ) -> onnx.ModelProto:
    """A DETR-style detector's query selection (RT-DETR, D-FINE): image x [1, 8, 20, 20] ->
    Conv -> Relu -> ``tokens`` feature vectors -> class logits per token (MatMul) -> TopK
    of their best picks ``queries`` tokens -> a decoder layer (MatMul, Relu) runs on the
    picked ones -> boxes (Sigmoid) [queries, 4] and logits [queries, 4]. Weights act after
    the pick, so nothing before it shows their errors; low-ranked tokens are near ties."""
    side = int(tokens**0.5)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w_features"], ["features"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["features"], ["relu"]),
         helper.make_node("Reshape", ["relu", "shape"], ["flat"]),
         helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["tokens", "w_score"], ["token_logits"]),
         helper.make_node("ReduceMax", ["token_logits", "last_axis"], ["best"], keepdims=0),
         helper.make_node("TopK", ["best", "k"], ["top", "picked"], axis=-1),
         helper.make_node("Squeeze", ["tokens", "first_axis"], ["tokens0"]),
         helper.make_node("Squeeze", ["picked", "first_axis"], ["picked0"]),
         helper.make_node("Gather", ["tokens0", "picked0"], ["queries"], axis=0),
         helper.make_node("MatMul", ["queries", "w_decoder"], ["decoded"]),
         helper.make_node("Relu", ["decoded"], ["hidden"]),
         helper.make_node("MatMul", ["hidden", "w_box"], ["box_logits"]),
         helper.make_node("Sigmoid", ["box_logits"], ["boxes"]),
         helper.make_node("MatMul", ["hidden", "w_class"], ["logits"])],
        "query_selecting_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, side, side])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [queries, 4]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, [queries, 4])],
        [numpy_helper.from_array(_weights((channels, 8, 3, 3), 92) * 4, "w_features"),
         numpy_helper.from_array(_weights((channels, 4), 93) * 4, "w_score"),
         numpy_helper.from_array(_weights((channels, channels), 94) * 4, "w_decoder"),
         numpy_helper.from_array(_weights((channels, 4), 95) * 4, "w_box"),
         numpy_helper.from_array(_weights((channels, 4), 96) * 4, "w_class"),
         numpy_helper.from_array(np.array([1, channels, side * side], np.int64), "shape"),
         numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
         numpy_helper.from_array(np.array([0], np.int64), "first_axis"),
         numpy_helper.from_array(np.array([queries], np.int64), "k")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def qdq_mlp(width: int = 64) -> onnx.ModelProto:
    """A QDQ-quantized two-layer MLP: int8 weights with per-channel float scales
    ("w1_scale", "w2_scale") behind DequantizeLinear, activations requantized to uint8 on a
    fixed grid (QuantizeLinear then DequantizeLinear), a float bias "b1" and output "y"."""
    rng = np.random.default_rng(5)
    tensors = [
        numpy_helper.from_array(rng.integers(-127, 128, (32, width)).astype(np.int8), "w1_q"),
        numpy_helper.from_array(rng.uniform(1e-3, 3e-3, width).astype(np.float32), "w1_scale"),
        numpy_helper.from_array(np.zeros(width, np.int8), "w1_zero"),
        numpy_helper.from_array(_weights((width,), 2), "b1"),
        numpy_helper.from_array(rng.integers(-127, 128, (width, 10)).astype(np.int8), "w2_q"),
        numpy_helper.from_array(rng.uniform(1e-3, 3e-3, 10).astype(np.float32), "w2_scale"),
        numpy_helper.from_array(np.zeros(10, np.int8), "w2_zero"),
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zero"], ["w1"], axis=1),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "a_scale", "a_zero"], ["r_q"]),
        helper.make_node("DequantizeLinear", ["r_q", "a_scale", "a_zero"], ["r_dq"]),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_scale", "w2_zero"], ["w2"], axis=1),
        helper.make_node("MatMul", ["r_dq", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "qdq_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def padded_recognizer(sequence: bool = True, gain: float = 50.0) -> onnx.ModelProto:
    """A text recognizer in miniature whose 1×1 mixing weight ``mix`` [16, 16] matters only
    where the input is zero-padded: x[N,3,4,W] -> 1×1 Conv (bias 0.5) -> mean over the
    height -> MatMul ``mix`` with the bias that cancels the padded columns' constant ->
    × ``gain`` -> Clip(−1, 1) (on N(0,1) columns saturated, so ``mix``'s error hardly shows;
    on padded ones 0, where it passes at ``gain``) -> plus its mean over the width (a
    sequence layer's view of the whole line) -> MatMul -> Softmax: y[N,W,10]. With
    ``sequence`` False the width is averaged away before the classes: y[N,10]."""
    rng = np.random.default_rng(5)
    conv = rng.standard_normal((16, 3, 1, 1)).astype(np.float32)
    conv_bias = np.full(16, 0.5, np.float32)
    mix = rng.standard_normal((16, 16)).astype(np.float32)
    classes = rng.standard_normal((16, 10)).astype(np.float32)
    inits = [numpy_helper.from_array(conv, "conv"), numpy_helper.from_array(conv_bias, "conv_b"),
             numpy_helper.from_array(mix, "mix"),
             numpy_helper.from_array(-(conv_bias @ mix).astype(np.float32), "mix_b"),
             numpy_helper.from_array(np.array(gain, np.float32), "gain"),
             numpy_helper.from_array(np.array(-1, np.float32), "low"),
             numpy_helper.from_array(np.array(1, np.float32), "high"),
             numpy_helper.from_array(classes, "classes"),
             numpy_helper.from_array(np.array([2], np.int64), "height"),
             numpy_helper.from_array(np.array([1], np.int64), "width")]
    nodes = [helper.make_node("Conv", ["x", "conv", "conv_b"], ["c"]),
             helper.make_node("ReduceMean", ["c", "height"], ["h"], keepdims=0),
             helper.make_node("Transpose", ["h"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "mix"], ["m"]),
             helper.make_node("Add", ["m", "mix_b"], ["mb"]),
             helper.make_node("Mul", ["mb", "gain"], ["g"]),
             helper.make_node("Clip", ["g", "low", "high"], ["s"]),
             helper.make_node("ReduceMean", ["s", "width"], ["line"], keepdims=1),
             helper.make_node("Add", ["s", "line"], ["seen"]),
             helper.make_node("MatMul", ["seen", "classes"], ["logits"])]
    if sequence:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=-1))
        shape: list = ["N", "T", 10]
    else:
        nodes += [helper.make_node("ReduceMean", ["logits", "width"], ["pooled"], keepdims=0),
                  helper.make_node("Softmax", ["pooled"], ["y"], axis=-1)]
        shape = ["N", 10]
    graph = helper.make_graph(
        nodes, "padded_recognizer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
