"""Rate vs accuracy of the digits CNN: pack it at several quantizer steps and measure each.

For every setting — lossless, and dead-zone steps from 4× finer than the default to 64× coarser
— the script packs ``examples/digits_cnn.onnx``, reads bits/weight from ``onnxz.info``, runs
``onnxz.verify`` with the 450 held-out digits as its inputs (an ``.npz`` in the documented
layout: key ``image``, N samples stacked on a new leading axis), and measures held-out accuracy
of the packed model. It prints one table row per setting::

    python examples/digits_rate_accuracy.py

Needs only numpy, onnxruntime and onnxz. The CLI equivalent of one row::

    onnxz pack examples/digits_cnn.onnx -o /tmp/d.onnxz --step-rel 0.25
    onnxz verify examples/digits_cnn.onnx /tmp/d.onnxz --inputs digits_inputs.npz

where ``digits_inputs.npz`` holds ``image`` of shape (450, 1, 1, 8, 8), as this script writes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxz

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "digits_cnn.onnx"
TEST_PATH = HERE / "digits_test.npz"
STEPS_REL = (1 / 256, onnxz.DEFAULT_STEP_REL, 1 / 16, 1 / 4, 1.0, 2.0, 4.0)
"""Quantizer steps as fractions of each weight tensor's spread; 1/64 is the default."""


def accuracy(sess: ort.InferenceSession, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images`` [M,1,8,8] whose argmax logit is the label."""
    logits = np.asarray(sess.run(["logits"], {"image": images})[0])
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> int:
    """Pack at every setting, measure, print the table. Returns the process exit code."""
    with np.load(TEST_PATH) as data:
        images, labels = data["images"], data["labels"]
    original_size = os.path.getsize(MODEL_PATH)
    original = ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])
    settings = [("lossless", None)] + [
        (f"step {f'1/{1 / s:.0f}' if s < 1 else f'{s:g}'}", s) for s in STEPS_REL]
    header = (f"{'setting':<21} {'bits/w':>6} {'bytes':>8} {'ratio':>6} {'accuracy':>8} "
              f"{'top-1':>7} {'SNR dB':>6}  verify")
    rows = [f"{'original .onnx':<21} {32:>6.2f} {original_size:>8,} {1:>5.2f}x "
            f"{accuracy(original, images, labels):>8.2%} {1:>7.2%} {'-':>6}  -"]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp, "digits_inputs.npz")
        np.savez(inputs, image=images[:, None])  # 450 samples, each a batch of one [1,1,8,8]
        for label, step_rel in settings:
            packed = Path(tmp, f"digits_{len(rows)}.onnxz")
            info = onnxz.save(MODEL_PATH, packed, lossless=step_rel is None, step_rel=step_rel)
            report = onnxz.verify(MODEL_PATH, packed, inputs)
            (logits,) = report.outputs
            bits = info.quantized_bits_per_weight
            default = " (default)" if step_rel == onnxz.DEFAULT_STEP_REL else ""
            rows.append(
                f"{label + default:<21} {'-' if bits is None else f'{bits:.2f}':>6} "
                f"{info.file_bytes:>8,} {original_size / info.file_bytes:>5.2f}x "
                f"{accuracy(onnxz.inference_session(packed), images, labels):>8.2%} "
                f"{logits.top1:>7.2%} {logits.snr_db:>6.1f}  {report.verdict}"
            )
    print(f"digits CNN, {len(labels)} held-out images; steps are fractions of each weight "
          "tensor's spread\n")
    print(header)
    print("\n".join(rows))
    print("\nbits/w = coded bits per quantized weight (onnxz.info); top-1 = same digit as the "
          "original (onnxz.verify);\nverify = default thresholds: SNR ≥ 20 dB, worst-sample "
          "cosine ≥ 0.99, top-1 ≥ 0.99")
    return 0


if __name__ == "__main__":
    sys.exit(main())
