#!/usr/bin/env python3
"""Generate a seeded, transformer-like ONNX model with its weights in external data.

The model runs in onnxruntime: token ids → embedding (Gather) → ``layers`` blocks of
LayerNorm, single-head attention (q, k, v, o MatMuls) and a ReLU MLP (up, down MatMuls),
each with a residual Add → hidden states. Weights are heavy-tailed (Student t with 4
degrees of freedom) with a log-normal scale per output channel, as trained weights are;
LayerNorm scales and biases are near 1 and near 0.

The weights are written to ``<name>.onnx.data`` one tensor at a time, a block of rows at a
time, so generating a 3 GB model needs little memory. The same seed and sizes give the same
bytes.

Usage::

    python tools/make_large_model.py OUT.onnx                     # ~3.4 GB (defaults)
    python tools/make_large_model.py OUT.onnx --hidden 256 --ffn 512 --layers 2 --vocab 1000
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

ALIGNMENT = 4096
ROWS_PER_BLOCK = 256


@dataclass(frozen=True)
class Shape:
    """Sizes of the generated model."""

    hidden: int = 4096
    ffn: int = 8192
    layers: int = 6
    vocab: int = 8192

    @property
    def weight_bytes(self) -> int:
        per_layer = 4 * self.hidden * self.hidden + 2 * self.hidden * self.ffn + 4 * self.hidden
        return 4 * (self.vocab * self.hidden + self.layers * per_layer + 2 * self.hidden)


def _weight_rows(rng: np.random.Generator, rows: int, cols: int, std: float):
    """Blocks of rows of a heavy-tailed weight matrix (float32), ``std`` its typical scale."""
    channel_scale = np.exp(rng.normal(0.0, 0.3, size=cols)).astype(np.float32)
    t_std = np.sqrt(4 / (4 - 2))
    for start in range(0, rows, ROWS_PER_BLOCK):
        n = min(ROWS_PER_BLOCK, rows - start)
        block = rng.standard_t(4, size=(n, cols)).astype(np.float32)
        block *= channel_scale * np.float32(std / t_std)
        yield block


class _DataWriter:
    """Appends tensors to the external data file and makes their TensorProtos."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.location = path.name
        self.initializers: list[TensorProto] = []

    def add(self, name: str, dims: list[int], blocks) -> None:
        self.file.write(b"\0" * (-self.file.tell() % ALIGNMENT))
        offset = self.file.tell()
        for block in blocks:
            self.file.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)),
                           ("length", str(self.file.tell() - offset))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)

    def close(self) -> None:
        self.file.close()


def generate(out: Path, shape: Shape, seed: int = 0) -> Path:
    """Write ``out`` and ``out.data``; returns ``out``."""
    rng = np.random.default_rng(seed)
    h, f = shape.hidden, shape.ffn
    data = _DataWriter(out.with_name(out.name + ".data"))
    nodes = []
    try:
        data.add("embed.weight", [shape.vocab, h], _weight_rows(rng, shape.vocab, h, 0.02))
        nodes.append(helper.make_node("Gather", ["embed.weight", "input_ids"], ["x0"]))
        x = "x0"
        for i in range(shape.layers):
            p = f"layers.{i}"
            for norm in ("ln1", "ln2"):
                data.add(f"{p}.{norm}.weight", [h],
                         [(1 + 0.05 * rng.standard_normal(h)).astype(np.float32)])
                data.add(f"{p}.{norm}.bias", [h], [(0.02 * rng.standard_normal(h)).astype(
                    np.float32)])
            for name, rows, cols in (("q", h, h), ("k", h, h), ("v", h, h), ("o", h, h),
                                     ("up", h, f), ("down", f, h)):
                data.add(f"{p}.{name}.weight", [rows, cols],
                         _weight_rows(rng, rows, cols, 1 / np.sqrt(rows)))
            nodes += [
                helper.make_node("LayerNormalization", [x, f"{p}.ln1.weight", f"{p}.ln1.bias"],
                                 [f"{p}.n1"], axis=-1),
                *(helper.make_node("MatMul", [f"{p}.n1", f"{p}.{m}.weight"], [f"{p}.{m}"])
                  for m in ("q", "k", "v")),
                helper.make_node("Transpose", [f"{p}.k"], [f"{p}.kt"], perm=[0, 2, 1]),
                helper.make_node("MatMul", [f"{p}.q", f"{p}.kt"], [f"{p}.s"]),
                helper.make_node("Mul", [f"{p}.s", "attn_scale"], [f"{p}.ss"]),
                helper.make_node("Softmax", [f"{p}.ss"], [f"{p}.a"], axis=-1),
                helper.make_node("MatMul", [f"{p}.a", f"{p}.v"], [f"{p}.av"]),
                helper.make_node("MatMul", [f"{p}.av", f"{p}.o.weight"], [f"{p}.ao"]),
                helper.make_node("Add", [x, f"{p}.ao"], [f"{p}.r1"]),
                helper.make_node("LayerNormalization",
                                 [f"{p}.r1", f"{p}.ln2.weight", f"{p}.ln2.bias"],
                                 [f"{p}.n2"], axis=-1),
                helper.make_node("MatMul", [f"{p}.n2", f"{p}.up.weight"], [f"{p}.u"]),
                helper.make_node("Relu", [f"{p}.u"], [f"{p}.ur"]),
                helper.make_node("MatMul", [f"{p}.ur", f"{p}.down.weight"], [f"{p}.d"]),
                helper.make_node("Add", [f"{p}.r1", f"{p}.d"], [f"{p}.out"]),
            ]
            x = f"{p}.out"
        nodes.append(helper.make_node("Identity", [x], ["hidden_states"]))
    finally:
        data.close()
    scale = helper.make_tensor("attn_scale", TensorProto.FLOAT, [], [1 / np.sqrt(h)])
    graph = helper.make_graph(
        nodes, "large_transformer",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, "seq", h])],
        [scale, *data.initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnxz tools/make_large_model.py")
    helper.set_model_props(model, {"seed": str(seed), "shape": repr(shape)})
    out.write_bytes(model.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .onnx to write (weights go to OUT.data)")
    defaults = Shape()
    for name in ("hidden", "ffn", "layers", "vocab"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = Shape(args.hidden, args.ffn, args.layers, args.vocab)
    print(f"make_large_model: {shape}, {shape.weight_bytes / 2**30:.2f} GiB of weights",
          file=sys.stderr)
    generate(args.out, shape, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
