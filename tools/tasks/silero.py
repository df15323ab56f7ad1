"""Silero VAD (float32 and float16 weights) on real speech streams.

Items: 12 recordings of 3 sentences each (sources.speech_streams: espeak-ng voices in eight
languages, pauses, faint noise). Each model runs over a recording the way silero-vad's
wrapper does (examples/silero_speech.stream: 512-sample chunks with 64 samples of context,
the LSTM state carried along). Decision: speech (probability ≥ 0.5) or not, per chunk. The
calibration samples are the (input, state[, sr]) triples the original model sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import sources
from .base import Task
from .models import corpus_model, example

STREAMS = 12
THRESHOLD = 0.5


def _stream_runner():
    return example("silero_speech").stream


class SileroTask(Task):
    family = "voice activity detector"
    data = (f"{STREAMS} speech recordings (3 sentences each, espeak-ng, 8 languages, "
            "pauses over faint noise), streamed in 512-sample chunks with state")
    rule = "the per-chunk speech decision (probability ≥ 0.5) is the same"
    fidelity = "top1>=0.995"  # the speech probability is a yes/no decision at 0.5

    def __init__(self, name: str, with_sr: bool):
        self.name = name
        self.with_sr = with_sr

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        return sources.speech_streams(STREAMS)

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        stream = _stream_runner()
        return list(np.concatenate([stream(session, audio, self.with_sr)[0] >= THRESHOLD
                                    for audio in items]))

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        stream = _stream_runner()
        feeds = [stream(original, audio, self.with_sr)[1] for audio in items]
        return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
