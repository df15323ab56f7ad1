"""``make demo``: pack a small digits CNN with onnxz and check the packed models still work.

Packs ``examples/digits_cnn.onnx`` twice (lossless and the lossy default), then runs the original
and both packed models through onnxruntime on the held-out digits in ``examples/digits_test.npz``
and prints size, compression ratio, accuracy and agreement with the original's predictions.
Exits non-zero if the lossless pack does not reproduce the original's outputs exactly.

The same from the command line::

    onnxz pack examples/digits_cnn.onnx -o /tmp/digits.onnxz
    onnxz info /tmp/digits.onnxz

Needs only numpy, onnxruntime and onnxz (the model was trained by ``train_digits_cnn.py``).
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


def run(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """Logits [M,10] of a session for images [M,1,8,8]."""
    return np.asarray(sess.run(["logits"], {"image": images})[0])


def main() -> int:
    """Pack, evaluate, print the table. Returns the process exit code."""
    with np.load(TEST_PATH) as data:
        images, labels = data["images"], data["labels"]
    orig_size = os.path.getsize(MODEL_PATH)
    orig_logits = run(ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"]), images)
    orig_pred = orig_logits.argmax(axis=1)

    rows = [("original .onnx", orig_size, float((orig_pred == labels).mean()), 1.0)]
    lossless_exact = False
    with tempfile.TemporaryDirectory() as tmp:
        for method, lossless in (("onnxz lossless", True), ("onnxz lossy", False)):
            out = os.path.join(tmp, f"digits_{'lossless' if lossless else 'lossy'}.onnxz")
            onnxz.save(str(MODEL_PATH), out, lossless=lossless, force=True)
            logits = run(onnxz.inference_session(out), images)
            pred = logits.argmax(axis=1)
            if lossless:
                lossless_exact = np.array_equal(logits, orig_logits)
            rows.append(
                (method, os.path.getsize(out), float((pred == labels).mean()),
                 float((pred == orig_pred).mean()))
            )  # fmt: skip

    print(f"digits CNN, {len(labels)} held-out images\n")
    print(f"{'method':<16} {'bytes':>9} {'ratio':>7} {'accuracy':>9} {'agree':>8}")
    for method, size, acc, agree in rows:
        print(f"{method:<16} {size:>9,} {orig_size / size:>6.2f}x {acc:>8.2%} {agree:>8.2%}")
    print("\nratio = original size / packed size; agree = same argmax as the original model")
    print("CLI: onnxz pack examples/digits_cnn.onnx -o /tmp/digits.onnxz && "
          "onnxz info /tmp/digits.onnxz")  # fmt: skip

    if not lossless_exact:
        print("FAIL: lossless pack does not reproduce the original's outputs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
