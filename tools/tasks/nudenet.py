"""NudeNet 3.4.2's detector (a YOLOv8n, 18 body-part classes incl. faces; not in the corpus)
on natural photographs.

Items: the photographs scikit-image and matplotlib bundle, each whole and as seeded crops
(half to three quarters of each side) and mirror images, 8 views per photo; and scikit-image's
Labeled Faces in the Wild subset (100 face and 100 non-face 25×25 crops, upscaled to 200×200),
since faces are the classes that natural photographs hold. Pre- and
post-processing are NudeNet's (pad to a square, 320×320 RGB/255; class score ≥ 0.2, NMS at
score 0.25 and IoU 0.45 with OpenCV). Decision: the set of (class, box) detections; a box
matches an original box of the same class at IoU ≥ 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import sources
from .base import Detections, Task, box_agreement
from .models import corpus_model

VIEWS = 8
SIZE = 320
MIN_IOU = 0.5


def views(image: np.ndarray, rng: np.random.Generator, count: int = VIEWS) -> list[np.ndarray]:
    """The image, its mirror, and seeded crops (50–75% of each side), some mirrored."""
    out = [image, image[:, ::-1]]
    h, w = image.shape[:2]
    while len(out) < count:
        ch, cw = int(h * rng.uniform(0.5, 0.75)), int(w * rng.uniform(0.5, 0.75))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y:y + ch, x:x + cw]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return [np.ascontiguousarray(v) for v in out]


def preprocess(image: np.ndarray) -> tuple[np.ndarray, int]:
    """NudeNet's input [1, 3, 320, 320] (padded to a square bottom/right) and the square side."""
    import cv2

    side = max(image.shape[:2])
    padded = np.zeros((side, side, 3), np.uint8)
    padded[:image.shape[0], :image.shape[1]] = image
    x = cv2.resize(padded, (SIZE, SIZE)).astype(np.float32) / 255.0
    return x.transpose(2, 0, 1)[None], side


def postprocess(output: np.ndarray, side: int) -> Detections:
    """NudeNet's decoding: per anchor the best class if ≥ 0.2, then OpenCV NMS (0.25, 0.45);
    boxes as [x0, y0, x1, y1] in the padded image's pixels."""
    import cv2

    rows = np.squeeze(output).T  # [anchors, 4 + classes]
    scores = rows[:, 4:].max(axis=1)
    keep = scores >= 0.2
    rows, scores = rows[keep], scores[keep]
    classes = rows[:, 4:].argmax(axis=1)
    xywh = rows[:, :4] * side / SIZE
    xywh[:, :2] -= xywh[:, 2:] / 2
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.25, 0.45)
    idx = np.asarray(idx, np.int64).reshape(-1)
    boxes = np.concatenate([xywh[idx, :2], xywh[idx, :2] + xywh[idx, 2:]], axis=1)
    return Detections(boxes.reshape(-1, 4), classes[idx])


class NudeNetTask(Task):
    name = "nudenet"
    family = "object detector (YOLOv8n)"
    data = (f"the photographs bundled with scikit-image and matplotlib, {VIEWS} views each "
            "(whole, mirrored, seeded crops), and 200 LFW face/non-face crops (scikit-image)")
    rule = (f"a detection matches an original one of the same class at IoU ≥ {MIN_IOU} "
            "(NudeNet's own decoding and NMS); agreement = matched / mean detection count")
    fidelity = "snr>=25"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        import cv2
        import skimage.data

        rng = np.random.default_rng(5)
        photos = [v for _, image in sources.natural_images() for v in views(image, rng)]
        lfw = [cv2.resize((255 * x).astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
               for x in skimage.data.lfw_subset()]
        return photos + [np.repeat(x[:, :, None], 3, axis=2) for x in lfw]

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        name = session.get_inputs()[0].name
        out = []
        for image in items:
            x, side = preprocess(image)
            out.append(postprocess(session.run(None, {name: x})[0], side))
        return out

    def agreement(self, reference: list, decisions: list):
        return box_agreement(reference, decisions, MIN_IOU)

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {original.get_inputs()[0].name: np.stack([preprocess(v)[0] for v in items])}
