"""Train the small digits CNN used by the demo and export it to ONNX.

This script is how ``examples/digits_cnn.onnx`` and ``examples/digits_test.npz`` were made. It is
**not** needed to run the demo; it needs scikit-learn (for the bundled digits dataset and the
stratified split), which is not a dependency of onnxz::

    pip install scikit-learn
    python examples/train_digits_cnn.py

Everything else is plain numpy: the forward and backward passes of the network are written by hand
below (im2col convolutions, max-pooling, dense layers, softmax cross-entropy, Adam). Training is
seeded, so reruns on the same machine give the same weights (bit-identical results across machines
are not promised: BLAS builds may round differently).

Network (about 138k float32 parameters, ~540 KiB of weights)::

    image [N,1,8,8] -> Conv3x3(1->16, pad 1) -> ReLU -> Conv3x3(16->32, pad 1) -> ReLU
      -> MaxPool 2x2 -> Flatten -> Dense(512->256) -> ReLU -> Dense(256->10) -> logits [N,10]

Input scaling: the digits pixels are integers 0..16; the model expects ``pixels / 16`` (0..1).
"""

from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "digits_cnn.onnx"
TEST_PATH = HERE / "digits_test.npz"

SEED = 0
TEST_SIZE = 0.25
EPOCHS = 12
BATCH = 32
LR = 1e-3
MIN_ACCURACY = 0.97
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; keeps the file loadable by older runtimes

Params = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Layers (NCHW, float32). Each forward returns what its backward needs.
# --------------------------------------------------------------------------------------------


def im2col3x3(x: np.ndarray) -> np.ndarray:
    """[B,C,H,W] -> [B*H*W, C*9] patches of a 3x3, stride 1, pad 1 convolution."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=2)
    return cols.transpose(0, 3, 4, 1, 2).reshape(b * h * w, c * 9)  # [B,H,W,C,9]


def col2im3x3(dcols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of :func:`im2col3x3`: scatter-add patch gradients back to [B,C,H,W]."""
    b, c, h, w = shape
    d = dcols.reshape(b, h, w, c, 9).transpose(0, 3, 4, 1, 2)  # [B,C,9,H,W]
    dxp = np.zeros((b, c, h + 2, w + 2), dtype=dcols.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        dxp[:, :, i : i + h, j : j + w] += d[:, :, k]
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 conv, stride 1, pad 1. ``w`` is [O,C,3,3] (ONNX layout). Returns (y, cols)."""
    n, _, h, wd = x.shape
    cols = im2col3x3(x)
    y = cols @ w.reshape(w.shape[0], -1).T + b
    return y.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv_backward(
    dy: np.ndarray, cols: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of :func:`conv_forward`."""
    d2 = dy.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    dx = col2im3x3(d2 @ w.reshape(w.shape[0], -1), x_shape)
    return dx, dw, db


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pool, stride 2. Returns (y, argmax within each window)."""
    b, c, h, w = x.shape
    win = x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(b, c, h // 2, w // 2, 4)
    idx = win.argmax(axis=-1)
    return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0], idx


def maxpool_backward(dy: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Route each pooled gradient to the (first) maximum of its window."""
    b, c, h2, w2 = dy.shape
    dwin = np.zeros((b, c, h2, w2, 4), dtype=dy.dtype)
    np.put_along_axis(dwin, idx[..., None], dy[..., None], axis=-1)
    dwin = dwin.reshape(b, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return dwin.reshape(b, c, h2 * 2, w2 * 2)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def init_params(rng: np.random.Generator) -> Params:
    """He-normal weights, zero biases. Dense weights are [out,in] (ONNX Gemm with transB=1)."""

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((16, 1, 3, 3), 1 * 9),
        "conv1.bias": np.zeros(16, np.float32),
        "conv2.weight": he((32, 16, 3, 3), 16 * 9),
        "conv2.bias": np.zeros(32, np.float32),
        "fc1.weight": he((256, 512), 512),
        "fc1.bias": np.zeros(256, np.float32),
        "fc2.weight": he((10, 256), 256),
        "fc2.bias": np.zeros(10, np.float32),
    }


def forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits [N,10] for images [N,1,8,8], plus the cache the backward pass needs."""
    z1, cols1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    a1 = np.maximum(z1, 0)
    z2, cols2 = conv_forward(a1, p["conv2.weight"], p["conv2.bias"])
    a2 = np.maximum(z2, 0)
    pooled, pidx = maxpool_forward(a2)
    flat = pooled.reshape(len(x), -1)
    z3 = flat @ p["fc1.weight"].T + p["fc1.bias"]
    a3 = np.maximum(z3, 0)
    logits = a3 @ p["fc2.weight"].T + p["fc2.bias"]
    cache = {"cols1": cols1, "z1": z1, "cols2": cols2, "z2": z2, "pidx": pidx,
             "flat": flat, "z3": z3, "a3": a3, "x_shape": np.array(x.shape)}  # fmt: skip
    return logits, cache


def backward(p: Params, c: dict[str, np.ndarray], dlogits: np.ndarray) -> Params:
    """Gradients of every parameter given d(loss)/d(logits)."""
    g: Params = {}
    g["fc2.weight"] = dlogits.T @ c["a3"]
    g["fc2.bias"] = dlogits.sum(axis=0)
    dz3 = (dlogits @ p["fc2.weight"]) * (c["z3"] > 0)
    g["fc1.weight"] = dz3.T @ c["flat"]
    g["fc1.bias"] = dz3.sum(axis=0)
    dpooled = (dz3 @ p["fc1.weight"]).reshape(c["pidx"].shape)
    dz2 = maxpool_backward(dpooled, c["pidx"]) * (c["z2"] > 0)
    da1, g["conv2.weight"], g["conv2.bias"] = conv_backward(
        dz2, c["cols2"], p["conv2.weight"], c["z1"].shape
    )
    dz1 = da1 * (c["z1"] > 0)
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(
        dz1, c["cols1"], p["conv1.weight"], tuple(c["x_shape"])
    )
    return g


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(prob[np.arange(n), y] + 1e-12).mean())
    prob[np.arange(n), y] -= 1.0
    return loss, (prob / n).astype(np.float32)


class Adam:
    """Plain Adam (Kingma & Ba) over a dict of parameters, updated in place."""

    def __init__(self, params: Params, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, 1e-8, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        """Apply one update."""
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= (lr_t * self.m[k] / (np.sqrt(self.v[k]) + self.eps)).astype(np.float32)


def predict(p: Params, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits for ``x`` in batches."""
    return np.concatenate([forward(p, x[i : i + batch])[0] for i in range(0, len(x), batch)])


def train(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Params:
    """Mini-batch Adam training; prints one line per epoch."""
    rng = np.random.default_rng(SEED)
    params = init_params(rng)
    opt = Adam(params, LR)
    for epoch in range(1, EPOCHS + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), BATCH):
            bi = order[i : i + BATCH]
            logits, cache = forward(params, x[bi])
            loss, dlogits = softmax_xent(logits, y[bi])
            opt.step(params, backward(params, cache, dlogits))
            losses.append(loss)
        acc = float((predict(params, x_test).argmax(axis=1) == y_test).mean())
        print(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  test acc {acc:.4f}  "
              f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    return params


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def to_onnx(p: Params, n_train: int, n_test: int, accuracy: float) -> onnx.ModelProto:
    """Build the ONNX graph (opset 17) with the trained weights as initializers."""
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["conv1"],
                         name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"],
                         name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"],
                         name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu3"], name="relu3"),
        helper.make_node("Gemm", ["relu3", "fc2.weight", "fc2.bias"], ["logits"],
                         name="fc2", transB=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in p.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnxz-examples",
        producer_version="1",
        ir_version=IR_VERSION,
        doc_string=(
            "Small CNN classifying 8x8 handwritten digits (scikit-learn digits dataset, "
            "UCI optdigits). Input 'image' [N,1,8,8] float32 = pixels/16 in [0,1]; "
            "output 'logits' [N,10], argmax = digit. Trained with examples/train_digits_cnn.py."
        ),
    )
    helper.set_model_props(
        model,
        {
            "training": (
                f"pure-numpy Adam lr={LR}, batch={BATCH}, epochs={EPOCHS}, seed={SEED}; "
                f"stratified split test_size={TEST_SIZE} random_state={SEED} "
                f"({n_train} train / {n_test} test)"
            ),
            "test_accuracy": f"{accuracy:.4f}",
            "dataset": "sklearn.datasets.load_digits (BSD-3-Clause)",
            "input_scaling": "pixels / 16.0",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def main() -> int:
    """Train, check, export. Returns the process exit code."""
    t_start = time.perf_counter()
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [1797,1,8,8]
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED
    )
    x_tr, x_te = np.ascontiguousarray(x_tr), np.ascontiguousarray(x_te)
    print(f"digits: {len(x_tr)} train, {len(x_te)} test")

    params = train(x_tr, y_tr, x_te, y_te)
    logits = predict(params, x_te)
    accuracy = float((logits.argmax(axis=1) == y_te).mean())
    n_params = sum(v.size for v in params.values())
    print(f"params: {n_params} ({n_params * 4} bytes float32); held-out accuracy {accuracy:.4f}")
    if accuracy < MIN_ACCURACY:
        print(f"error: accuracy below {MIN_ACCURACY}; not writing files", file=sys.stderr)
        return 1

    model = to_onnx(params, len(x_tr), len(x_te), accuracy)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"image": x_te})[0]
    diff = float(np.abs(ort_logits - logits).max())
    print(f"onnxruntime vs numpy: max |diff| = {diff:.2e}")
    if diff >= 1e-4:
        print("error: onnxruntime output does not match the numpy forward pass", file=sys.stderr)
        return 1

    onnx.save_model(model, MODEL_PATH)
    write_npz(TEST_PATH, images=x_te, labels=y_te)
    print(f"wrote {MODEL_PATH.name} ({MODEL_PATH.stat().st_size} bytes), "
          f"{TEST_PATH.name} ({TEST_PATH.stat().st_size} bytes) "
          f"in {time.perf_counter() - t_start:.0f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
