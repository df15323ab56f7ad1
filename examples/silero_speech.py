"""Silero VAD on synthesized speech: does a packed model make the same speech decisions?

Sentences in five languages are synthesized with espeak-ng, resampled to 16 kHz and joined
with seeded silence gaps over faint noise. Silero VAD (``silero_vad`` float32 and
``silero_vad_half`` float16 weights, from the development corpus) runs over the recording the
way silero-vad's own wrapper does: 512-sample chunks, each with the previous 64 samples of
context, the LSTM state carried from chunk to chunk. A chunk is speech when the probability
is ≥ 0.5. Each model is packed at several quantizer settings and run the same way with its
own state; the table shows how many speech decisions agree with the original model's, and
what ``onnxz.verify`` says when fed the original's per-chunk inputs (audio, state): it sees
that each chunk's state is the previous chunk's output and carries the packed model's own
state too, so its top-1 (the speech decisions) equals the loop's agreement::

    sudo apt-get install espeak-ng     # Debian/Ubuntu; macOS: brew install espeak-ng
    python examples/silero_speech.py

The models are fetched once from the silero-vad wheel on PyPI (``tools/fetch_models.py``,
sha256-pinned, cached in ~/.cache/onnxz/models).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxz

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))  # the corpus fetcher
import fetch_models

RATE = 16000
CHUNK = 512
CONTEXT = 64
THRESHOLD = 0.5
SENTENCES = (
    ("en-us", "The quick brown fox jumps over the lazy dog."),
    ("de", "Guten Morgen, wie geht es Ihnen heute? Das Wetter ist wirklich schön."),
    ("en-gb", "Please call Stella and ask her to bring these things with her from the store."),
    ("fr", "Le petit chat dort sur le canapé depuis ce matin, et il ne veut pas bouger."),
    ("es", "Mañana vamos a la playa si hace buen tiempo, y después comemos juntos."),
    ("it", "La stazione è vicina, ma il treno per Milano parte tra dieci minuti."),
    ("en-us", "Voice activity detection finds the parts of a recording that contain speech."),
    ("en-gb", "Seven, eight, nine, ten. Is anybody still listening to this recording?"),
)
SETTINGS = (("lossless", None), ("step 1/64 (default)", onnxz.DEFAULT_STEP_REL),
            ("step 1/16", 1 / 16), ("step 1/4", 1 / 4), ("step 1", 1.0))
"""Quantizer steps as fractions of each weight tensor's spread."""


def synthesize(voice: str, text: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    """espeak-ng's rendering of ``text``, as float32 samples at 16 kHz."""
    wav = folder / "utterance.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                    str(wav), text], check=True, capture_output=True)
    with wave.open(str(wav)) as f:
        rate = f.getframerate()
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    return resample(samples.astype(np.float32) / 32768, rate, RATE)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by truncating (or zero-padding) the spectrum."""
    n = round(len(x) * target / rate)
    spectrum = np.fft.rfft(x)[: n // 2 + 1]
    return (np.fft.irfft(spectrum, n) * (n / len(x))).astype(np.float32)


def recording(folder: Path, seed: int = 0) -> tuple[np.ndarray, float]:
    """All sentences with 0.4–1.6 s gaps, over noise at −60 dBFS; and the speech duration (s)."""
    rng = np.random.default_rng(seed)
    parts, speech = [], 0.0
    for voice, text in SENTENCES:
        parts.append(np.zeros(int(rng.uniform(0.4, 1.6) * RATE), np.float32))
        utterance = synthesize(voice, text, int(rng.integers(140, 190)),
                               int(rng.integers(35, 65)), folder)
        parts.append(0.8 * utterance / np.abs(utterance).max())
        speech += len(utterance) / RATE
    parts.append(np.zeros(RATE, np.float32))
    audio = np.concatenate(parts)
    return (audio + 0.001 * rng.standard_normal(audio.size)).astype(np.float32), speech


def stream(sess: ort.InferenceSession, audio: np.ndarray, with_sr: bool
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Speech probability per chunk, state and context carried as silero-vad's wrapper does;
    and the model inputs of every chunk, stacked (the .npz layout onnxz.verify reads)."""
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    probs, feeds = [], []
    for start in range(0, audio.size - CHUNK + 1, CHUNK):
        chunk = audio[start:start + CHUNK]
        feed = {"input": np.concatenate([context, chunk])[None], "state": state}
        if with_sr:
            feed["sr"] = np.array(RATE, np.int64)
        prob, state = sess.run(None, feed)
        feeds.append(feed)
        probs.append(float(prob.item()))
        context = chunk[-CONTEXT:]
    return np.array(probs), {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}


def main() -> int:
    """Synthesize, run every model and setting, print the table."""
    if shutil.which("espeak-ng") is None:
        print("This example needs espeak-ng: sudo apt-get install espeak-ng (Debian/Ubuntu), "
              "brew install espeak-ng (macOS)", file=sys.stderr)
        return 0
    models = fetch_models.fetch_all(["silero_vad", "silero_vad_half"])
    with tempfile.TemporaryDirectory() as tmp:
        audio, speech = recording(Path(tmp))
        print(f"{len(SENTENCES)} sentences ({speech:.1f} s of speech, espeak-ng) in "
              f"{audio.size / RATE:.1f} s of audio at {RATE} Hz; {audio.size // CHUNK} chunks "
              f"of {CHUNK} samples; speech = probability ≥ {THRESHOLD}\n")
        print(f"{'model':<16} {'setting':<20} {'bytes':>9} {'ratio':>6} {'speech':>7} "
              f"{'agree':>8} {'flips':>5} {'max Δp':>7} {'SNR dB':>6}  verify")
        for name, path in models.items():
            with_sr = name == "silero_vad"
            original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            reference, feeds = stream(original, audio, with_sr)
            inputs = Path(tmp, f"{name}_inputs.npz")
            np.savez(inputs, **feeds)
            decided = reference >= THRESHOLD
            print(f"{name:<16} {'original':<20} {path.stat().st_size:>9,} {1:>5.2f}x "
                  f"{decided.mean():>7.1%}")
            for i, (label, step_rel) in enumerate(SETTINGS):
                packed = Path(tmp, f"{name}_{i}.onnxz")
                info = onnxz.save(path, packed, lossless=step_rel is None, step_rel=step_rel)
                probs, _ = stream(onnxz.inference_session(packed), audio, with_sr)
                flips = int(np.sum((probs >= THRESHOLD) != decided))
                report = onnxz.verify(path, packed, inputs)
                snr = min(m.snr_db for m in report.outputs)
                print(f"{'':<16} {label:<20} {info.file_bytes:>9,} "
                      f"{path.stat().st_size / info.file_bytes:>5.2f}x "
                      f"{np.mean(probs >= THRESHOLD):>7.1%} {1 - flips / decided.size:>8.2%} "
                      f"{flips:>5} {np.abs(probs - reference).max():>7.4f} {snr:>6.1f}  "
                      + ("passed" if report.passed else "FAILED: " + "; ".join(
                          str(f) for f in report.failures)))
    print("\nspeech = share of chunks called speech; agree = same decision as the original "
          "(each model carries its own\nstate); max Δp = largest probability change; SNR = "
          "worst output of onnxz.verify fed the original's\nper-chunk inputs, state carried "
          "(default thresholds: SNR ≥ 20 dB, worst-sample cosine ≥ 0.99,\ntop-1 ≥ 0.99 on "
          "the speech decisions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
