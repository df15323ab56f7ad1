"""Magika (file content type) on real files of this machine.

Items: 400 files under /usr/share, /usr/lib/python3* and /etc, one file-name extension at a
time (examples/magika_files.py's deterministic pick), as Magika 1.0.3's own feature
extraction sees them (first and last bytes, [2048] int32). Decision: the model's top label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from .base import Task
from .models import corpus_model, example

FILES = 400
BATCH = 64


class MagikaTask(Task):
    name = "magika"
    family = "classifier (file content type)"
    data = (f"{FILES} real files of this machine (/usr/share, /usr/lib/python3*, /etc; one "
            "per extension in turn), through Magika 1.0.3's own feature extraction")
    rule = "the model's top-1 content-type label is the same"
    fidelity = "top1>=0.995"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        import magika
        from magika import Magika

        magika_files = example("magika_files")

        original = Magika(model_dir=Path(magika.__file__).parent / "models" / "standard_v3_3")
        _, features = magika_files.pick_files(original, FILES)
        return list(features)

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        x = np.stack(items).astype(np.int32)
        name = session.get_inputs()[0].name
        scores = np.concatenate([session.run(None, {name: x[i:i + BATCH]})[0]
                                 for i in range(0, len(x), BATCH)])
        return list(scores.argmax(axis=-1))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {"bytes": np.stack(items).astype(np.int32)[:, None]}  # N samples of [1, 2048]
