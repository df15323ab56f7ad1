"""Comparators for the rate bench: NNCodec 2.1.3 (MPEG NNR reference, own venv) and
onnxruntime's int8 dynamic quantization, each producing a runnable .onnx and its size.

The weight tensors handed to NNCodec are exactly the ones onnxz may quantize (float tensors
of ≥ 1024 elements that feed a weight input, found by onnxz's walker in initializers,
Constant nodes and subgraphs alike); everything else stays in the ONNX graph, which is
counted as ``zstd -19`` of the model with those payloads removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import zstandard

from onnxz.policy import PackOptions
from onnxz.walker import (
    element_count,
    iter_tensor_slots,
    payload_type,
    put_payload,
    read_payload,
    resolve,
    take_payload,
)

ROOT = Path(__file__).resolve().parents[2]
NNCODEC_PYTHON = ROOT / ".venv-nncodec" / "bin" / "python"
NNCODEC_RUNNER = Path(__file__).resolve().parent / "nncodec_run.py"
SKELETON_ZSTD_LEVEL = 19


def _weight_slots(model: onnx.ModelProto) -> list[tuple[str, tuple, np.dtype]]:
    """(key, path, dtype) of every tensor onnxz's default policy would quantize."""
    min_count = PackOptions().min_quantized_elements
    out = []
    for slot in iter_tensor_slots(model):
        etype = payload_type(slot.tensor)
        if (etype is not None and etype.is_quantizable and slot.is_weight
                and element_count(slot.tensor) >= min_count):
            out.append(("/".join(map(str, slot.path)), slot.path, np.dtype(etype.numpy)))
    return out


def weight_tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The quantizable weight tensors as float32 arrays of their shapes, keyed by path."""
    out = {}
    for key, path, _ in _weight_slots(model):
        tensor = resolve(model, path)
        values = read_payload(tensor, payload_type(tensor))
        out[key] = values.astype(np.float32).reshape(tuple(tensor.dims))
    return out


def with_weights(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose weight tensors hold ``arrays`` (cast to each tensor's type)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for key, path, dtype in _weight_slots(out):
        put_payload(resolve(out, path), np.asarray(arrays[key]).astype(dtype).ravel())
    return out


def skeleton_bytes(model: onnx.ModelProto) -> int:
    """Size of ``zstd -19`` of the model without the weight payloads (graph, small tensors)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for _, path, _ in _weight_slots(out):
        take_payload(resolve(out, path))
    data = out.SerializeToString()
    return len(zstandard.ZstdCompressor(level=SKELETON_ZSTD_LEVEL).compress(data))


@dataclass(frozen=True)
class NNCodecResult:
    """One NNCodec coding: QP, dependent quantization on/off, sizes, the decoded model."""

    qp: int
    use_dq: bool
    bitstream_bytes: int
    skeleton_bytes: int
    model_path: Path

    @property
    def total_bytes(self) -> int:
        """Bitstream plus the zstd'd graph skeleton."""
        return self.bitstream_bytes + self.skeleton_bytes


class NNCodecUnavailable(RuntimeError):
    """NNCodec's venv is missing (``make nncodec-venv``) or it failed."""


def nncodec_available() -> bool:
    """Whether ``.venv-nncodec`` exists (``make nncodec-venv`` creates it)."""
    return NNCODEC_PYTHON.exists()


class NNCodec:
    """NNCodec coding the weights of one model at QPs chosen one at a time (a sweep), in one
    process of NNCodec's venv; decoded models are written under ``workdir``::

        with NNCodec(model, use_dq=True, workdir=Path("w")) as codec:
            result = codec.code(-38)        # NNCodecResult, result.model_path runs
    """

    def __init__(self, model: onnx.ModelProto, use_dq: bool, workdir: Path):
        if not nncodec_available():
            raise NNCodecUnavailable(f"{NNCODEC_PYTHON} not found: run `make nncodec-venv`")
        self.model, self.use_dq = model, use_dq
        workdir.mkdir(parents=True, exist_ok=True)
        weights = workdir / "weights.npz"
        if not weights.exists():
            np.savez(weights, **weight_tensors(model))
        self.skeleton = skeleton_bytes(model)
        self.outdir = workdir / ("dq" if use_dq else "nodq")
        cmd = [str(NNCODEC_PYTHON), str(NNCODEC_RUNNER), str(weights), str(self.outdir),
               "--serve"] + ([] if use_dq else ["--no-dq"])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def code(self, qp: int) -> NNCodecResult:
        """Code at ``qp``; the decoded model is written as an .onnx."""
        self.proc.stdin.write(f"{qp}\n")
        self.proc.stdin.flush()
        line = ""
        while not line.startswith("{"):
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read().strip().splitlines()
                raise NNCodecUnavailable(f"NNCodec failed: {err[-1] if err else 'no output'}")
        rec = json.loads(line)
        with np.load(self.outdir / f"qp{qp}.npz") as z:
            decoded = {k: z[k] for k in z.files}
        path = self.outdir / f"qp{qp}.onnx"
        onnx.save(with_weights(self.model, decoded), str(path))
        return NNCodecResult(qp, rec["use_dq"], rec["bitstream_bytes"], self.skeleton, path)

    def close(self) -> None:
        """End the NNCodec process."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> NNCodec:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Int8Result:
    """onnxruntime int8 dynamic quantization: the .onnx, its size, what it quantized."""

    model_path: Path
    file_bytes: int
    zstd_bytes: int
    quantized_weights: int
    weights: int
    note: str


def ort_int8(source: Path, out: Path) -> Int8Result:
    """``onnxruntime.quantization.quantize_dynamic`` (int8 weights, per tensor) of ``source``.

    It sees ``graph.initializer`` only: weights in Constant nodes (PP-OCRv4 det) or inside
    If/Loop subgraphs (silero-vad) stay float; ``note`` says how many of the weights onnxz
    quantizes it reached (counted by element)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    weights = weight_tensors(model)
    total = sum(a.size for a in weights.values())
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        stderr = sys.stderr
        sys.stderr = null  # quantize_dynamic logs a warning per tensor it skips
        try:
            prepared = Path(tmp, "in.onnx")
            onnx.save(model, str(prepared))
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        finally:
            sys.stderr = stderr
    quantized = onnx.load(str(out))
    remaining = weight_tensors(quantized)
    left = sum(a.size for k, a in remaining.items())
    reached = max(0, total - left)
    data = out.read_bytes()
    note = (f"int8 on {reached / total:.0%} of the weight elements" if total else "no weights")
    return Int8Result(out, len(data),
                      len(zstandard.ZstdCompressor(level=SKELETON_ZSTD_LEVEL).compress(data)),
                      reached, total, note)
