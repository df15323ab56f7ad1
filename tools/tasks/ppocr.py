"""PP-OCR (rapidocr-onnxruntime 1.4.4): text detector, text-orientation classifier, and the
text recognizer (not in the corpus: a model nothing was tuned on).

Inputs are real English sentences (sources.sentences) rendered in the fonts matplotlib ships:
no real scans are available offline, except scikit-image's two photographs of text, which
are pasted into two of the pages. Pre- and post-processing are rapidocr's own (its
``DetPreProcess``/``DBPostProcess``/``CTCLabelDecode``, its resize rules and its config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from . import sources
from .base import Detections, Task, box_agreement
from .models import corpus_model

LINES = 400
PAGES = 32
PAGE_H, PAGE_W = 960, 736  # rapidocr's det resize (min side 736, multiple of 32) keeps it
REC_H, REC_W = 48, 640
CLS_H, CLS_W = 48, 192
BATCH = 16
DET_MIN_IOU = 0.7


def text_lines(count: int, seed: int, max_ratio: tuple[float, float]) -> list[np.ndarray]:
    """``count`` rendered sentences (uint8 RGB), each cut to whole words so that its
    width/height ratio stays below a seeded bound in ``max_ratio``."""
    rng = np.random.default_rng(seed)
    pool, fonts = sources.sentences(), sources.fonts()
    lines = []
    for i in range(count):
        font = fonts[int(rng.integers(len(fonts)))]
        size = int(rng.integers(20, 40))
        text = sources.fit_words(pool[(seed * 7919 + i) % len(pool)], font, size,
                                 float(rng.uniform(*max_ratio)))
        lines.append(sources.render_text(text, font, size, rng))
    return lines


def _resize_pad(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's rec/cls input: resize to ``height`` keeping the ratio (squeezed to
    ``width`` at most), scale to [-1, 1], zero-pad on the right: float32 [3, height, width]."""
    import cv2

    h, w = img.shape[:2]
    resized_w = min(width, math.ceil(height * w / h))
    x = cv2.resize(img, (resized_w, height)).astype(np.float32).transpose(2, 0, 1) / 255
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = (x - 0.5) / 0.5
    return out


def _run_batched(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + BATCH]})[0]
                           for i in range(0, len(x), BATCH)])


class RecTask(Task):
    name = "ppocr_rec"
    family = "text recognizer (CTC)"
    data = (f"{LINES} text lines: real sentences rendered in 8 fonts at 20–39 px, "
            f"input [1, 3, {REC_H}, {REC_W}] as rapidocr pads a batch")
    rule = "the recognized string (rapidocr's CTC decoding) is exactly the same"
    # per position: top1_sample (every position's argmax) cost 6.4 MB for 100% of the
    # strings, a CTC string survives most flips between blank and a repeat
    fidelity = "top1>=0.995"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        return text_lines(LINES, seed=1, max_ratio=(3.0, REC_W / REC_H - 0.5))

    def _inputs(self, items: list) -> np.ndarray:
        return np.stack([_resize_pad(img, REC_H, REC_W) for img in items])

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

        meta = {p.key: p.value for p in onnx.load(str(self.model_path()),
                                                  load_external_data=False).metadata_props}
        decode = CTCLabelDecode(character=meta["character"].splitlines())
        return [text for text, _ in decode(_run_batched(session, self._inputs(items)))]

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {"x": self._inputs(items)[:, None]}


class ClsTask(Task):
    name = "ppocr_cls"
    family = "classifier (text orientation 0/180)"
    data = (f"{LINES} text lines (real sentences, 8 fonts), half of them turned 180°, "
            f"resized as rapidocr does to [1, 3, {CLS_H}, {CLS_W}]")
    rule = "the orientation label (argmax: 0 or 180) is the same"
    fidelity = "top1>=0.995"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        lines = text_lines(LINES, seed=2, max_ratio=(1.5, 10.0))
        # Half of them turned, in both the calibration (every fourth) and held-out items.
        return [np.ascontiguousarray(img[::-1, ::-1]) if (i + i // 4) % 2 else img
                for i, img in enumerate(lines)]

    def _inputs(self, items: list) -> np.ndarray:
        return np.stack([_resize_pad(img, CLS_H, CLS_W) for img in items])

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        return list(_run_batched(session, self._inputs(items)).argmax(axis=1))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {"x": self._inputs(items)[:, None]}


@dataclass(frozen=True)
class Page:
    """A page image (uint8 RGB [PAGE_H, PAGE_W, 3])."""

    image: np.ndarray


def pages(count: int, seed: int = 3) -> list[Page]:
    """Pages of 8–22 rendered sentences at 14–36 px in one or two columns on light paper; two
    of them carry scikit-image's photographs of text (a scanned page, a photographed sign)."""
    import cv2

    rng = np.random.default_rng(seed)
    pool, fonts = sources.sentences(), sources.fonts()
    photos = [img for name, img in sources.natural_images() if name in ("page", "text")]
    out, cursor = [], 0
    for k in range(count):
        canvas = np.full((PAGE_H, PAGE_W, 3), int(rng.integers(215, 256)), np.uint8)
        y = int(rng.integers(10, 60))
        if k < len(photos):
            photo = photos[k]
            scale = min((PAGE_W - 40) / photo.shape[1], 0.45 * PAGE_H / photo.shape[0])
            photo = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
            canvas[y:y + photo.shape[0], 20:20 + photo.shape[1]] = photo
            y += photo.shape[0] + 20
        columns = 1 + int(rng.random() < 0.4)
        width = (PAGE_W - 40) // columns - 20
        lines_left = int(rng.integers(8, 23))
        while lines_left > 0 and y < PAGE_H - 50:
            font, size = fonts[int(rng.integers(len(fonts)))], int(rng.integers(14, 37))
            row_h = 0
            for c in range(columns):
                text = sources.fit_words(pool[cursor % len(pool)], font, size,
                                         width / (1.5 * size))
                cursor += 1
                line = sources.render_text(text, font, size, rng, pad=2)
                h, w = min(line.shape[0], PAGE_H - y), min(line.shape[1], width)
                x = 20 + c * (width + 20) + int(rng.integers(0, 10))
                canvas[y:y + h, x:x + w] = np.minimum(canvas[y:y + h, x:x + w], line[:h, :w])
                row_h = max(row_h, h)
            y += row_h + int(rng.integers(size // 3, size + 12))
            lines_left -= 1
        out.append(Page(canvas))
    return out


class DetTask(Task):
    name = "ppocr_det"
    family = "text detector (DB)"
    data = (f"{PAGES} pages {PAGE_W}x{PAGE_H}: real sentences rendered in 8 fonts, 1–2 "
            "columns (two pages hold scikit-image's photos of text)")
    rule = (f"a text box matches a box of the original at IoU ≥ {DET_MIN_IOU} (axis-aligned "
            "extent of rapidocr's DB boxes, one-to-one, greedy); agreement = matched / mean "
            "box count")
    fidelity = "snr>=25"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[Page]:
        return pages(PAGES)

    def _input(self, page: Page) -> np.ndarray:
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

        return DetPreProcess(736, "min", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])(page.image)

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

        post = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000,
                             unclip_ratio=1.6, score_mode="fast", use_dilation=True)
        name = session.get_inputs()[0].name
        out = []
        for page in items:
            boxes, _ = post(session.run(None, {name: self._input(page)})[0],
                            page.image.shape[:2])
            quads = np.asarray(boxes, np.float64).reshape(-1, 4, 2)
            extents = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1)
            keep = ((extents[:, 2] - extents[:, 0]) > 3) & ((extents[:, 3] - extents[:, 1]) > 3)
            out.append(Detections(extents[keep], np.zeros(int(keep.sum()), np.int64)))
        return out

    def agreement(self, reference: list, decisions: list):
        return box_agreement(reference, decisions, DET_MIN_IOU)

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        return {"x": np.stack([self._input(p) for p in items])}
