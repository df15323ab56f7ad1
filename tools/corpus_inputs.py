"""Realistic-looking inputs for the corpus models (synthetic text pages, voiced audio).

Shared by the tests (``RUNNERS``: fixed inputs, outputs compared) and the benchmark
(``INPUT_OVERRIDES``: seeded per-input makers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

InputMaker = Callable[[np.random.Generator], np.ndarray]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def text_image(
    rng: np.random.Generator, h: int, w: int, line_h: int,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5), std: tuple[float, ...] = (0.5, 0.5, 0.5),
) -> np.ndarray:
    """A synthetic text-like image, shape (1, 3, h, w), normalized as ``(x - mean) / std``.

    Rows of random dark glyph-like speckle on white: the OCR models' outputs on pure
    noise sit in the flat tail of their sigmoid/softmax, which makes an SNR meaningless.
    """
    img = np.ones((h, w))
    pitch = line_h + line_h // 2
    rows = max(1, (h - line_h) // pitch + 1)
    top = (h - (rows - 1) * pitch - line_h) // 2
    for r in range(rows):
        y, x = top + r * pitch, 2 + int(rng.integers(0, 6))
        while x < w - 2:
            gw = int(rng.integers(3, max(4, line_h * 3 // 4)))
            if rng.random() < 0.85:  # a glyph, else a space
                glyph = img[y:y + line_h, x:x + gw]
                glyph[rng.random(glyph.shape) < 0.45] = 0.0
            x += gw + 2
    rgb = (img[None] - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1))
    return rgb[None].astype(np.float32)


def _speech_chunk(rng: np.random.Generator) -> np.ndarray:
    return speech_like(512, seed=int(rng.integers(2**31)))[None]


def _vad_state(rng: np.random.Generator) -> np.ndarray:
    return np.zeros((2, 1, 128), dtype=np.float32)


INPUT_OVERRIDES: dict[str, dict[str, InputMaker]] = {
    "magika": {
        "bytes": lambda rng: rng.integers(0, 257, size=(1, 2048), dtype=np.int32),
    },
    "silero_vad": {
        "input": _speech_chunk,
        "state": _vad_state,
        "sr": lambda rng: np.array(16000, dtype=np.int64),
    },
    "silero_vad_half": {"input": _speech_chunk, "state": _vad_state},
    "ppocr_det": {
        "x": lambda rng: text_image(rng, 64, 64, 10, IMAGENET_MEAN, IMAGENET_STD),
    },
    "ppocr_cls": {
        "x": lambda rng: text_image(rng, 48, 192, 20),
    },
}
"""Known inputs of the corpus models, by model then input name."""



def speech_like(n: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, pitch-modulated buzz with pauses and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = (np.sin(2 * np.pi * 4 * t) > -0.3).astype(float)
    return (0.3 * voiced * env + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _silero(sess: ort.InferenceSession, with_sr: bool) -> list[np.ndarray]:
    audio = speech_like(16000)
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for start in range(0, audio.size - 512, 512):
        feed = {"input": audio[None, start : start + 512], "state": state}
        if with_sr:
            feed["sr"] = np.array(16000, np.int64)
        prob, state = sess.run(None, feed)
        probs.append(prob.ravel())
    return [np.concatenate(probs)]


def _feeds(sess: ort.InferenceSession, feeds: list[dict]) -> list[np.ndarray]:
    return [sess.run(None, f)[0] for f in feeds]


RUNNERS: dict[str, Callable[[ort.InferenceSession], list[np.ndarray]]] = {
    "magika": lambda s: _feeds(s, [
        {"bytes": np.random.default_rng(i).integers(0, 257, (4, 2048)).astype(np.int32)}
        for i in range(2)]),
    "silero_vad": lambda s: _silero(s, with_sr=True),
    "silero_vad_half": lambda s: _silero(s, with_sr=False),
    "ppocr_det": lambda s: _feeds(s, [{"x": text_image(np.random.default_rng(0), 160, 320, 12,
                                                       IMAGENET_MEAN, IMAGENET_STD)}]),
    "ppocr_cls": lambda s: _feeds(s, [{"x": text_image(np.random.default_rng(i), 48, 192, 20)}
                                      for i in range(3)]),
}
"""Corpus model name -> function running a session on fixed inputs, returning outputs."""


def snr_db(reference: list[np.ndarray], output: list[np.ndarray]) -> float:
    """10·log10(Σref² / Σ(ref−out)²) over all float outputs concatenated (inf if identical)."""
    pairs = [(r, o) for r, o in zip(reference, output, strict=True)
             if np.asarray(r).dtype.kind == "f"]
    if not pairs:
        raise ValueError("the model has no float outputs")
    ref = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r, _ in pairs])
    out = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for _, o in pairs])
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)
