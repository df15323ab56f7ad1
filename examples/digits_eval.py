"""``evaluate(session) -> float`` for ``onnxz sweep --eval``: held-out accuracy of the digits CNN.

    onnxz sweep examples/digits_cnn.onnx --eval examples/digits_eval.py --plot rd.png

The sweep calls ``evaluate`` once on the original model and once per packed model, each an
onnxruntime session; the score is the fraction of the 450 held-out digits classified right
(higher is better). Write your own the same way: any Python file defining ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEST = Path(__file__).resolve().parent / "digits_test.npz"

with np.load(TEST) as data:
    IMAGES, LABELS = data["images"], data["labels"]


def evaluate(session) -> float:
    """Fraction of the held-out digits whose argmax logit is the label."""
    (logits,) = session.run(["logits"], {"image": IMAGES})
    return float((np.asarray(logits).argmax(axis=1) == LABELS).mean())
