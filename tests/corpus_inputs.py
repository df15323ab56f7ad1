"""Realistic-looking inputs for the corpus models (synthetic text pages, voiced audio)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort


def text_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """White page with dark word-like strokes, normalized as PaddleOCR expects."""
    rng = np.random.default_rng(seed)
    img = np.ones((h, w), np.float32)
    for row in range(8, h - 16, 24):
        x = 8
        while x < w - 40:
            wl = int(rng.integers(15, 60))
            for cx in range(x, min(x + wl, w - 8), 5):
                img[row:row + 12, cx:cx + 2] = 0.1
                img[row + int(rng.integers(0, 10)), cx:cx + 5] = 0.1
            x += wl + int(rng.integers(8, 20))
    rgb = np.stack([img] * 3)[None]
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    return (rgb - mean) / std
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
    "ppocr_det": lambda s: _feeds(s, [{"x": text_image(160, 320)}]),
    "ppocr_cls": lambda s: _feeds(s, [{"x": text_image(48, 192, i)} for i in range(3)]),
}
"""Corpus model name -> function running a session on fixed inputs, returning outputs."""


def snr_db(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    """10·log10(signal energy / error energy) over all outputs (inf when identical)."""
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference)
    noise = sum(float(((r.astype(np.float64) - t) ** 2).sum())
                for r, t in zip(reference, test, strict=True))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)
