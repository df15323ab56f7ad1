"""Real inputs shared by the tasks, all available offline and deterministic on a machine.

- ``sentences()``: English sentences from the docstrings of this Python's standard library
  (read with ``ast``, nothing imported); they depend on the Python version.
- ``text_line()``: a sentence rendered in one of the DejaVu/STIX fonts that matplotlib ships,
  dark ink on a light background with a little noise (no real scans are available offline).
- ``natural_images()``: the photographs scikit-image and matplotlib bundle (astronaut,
  coffee, chelsea the cat, rocket, Grace Hopper...).
- ``speech()``: espeak-ng renderings of sentences at 16 kHz (examples/silero_speech.py).
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from functools import cache
from pathlib import Path

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[a-z0-9\)][.!?])\s+(?=[A-Z])")
_CODE_LIKE = re.compile(r"[_=<>{}\[\]|\\`*#@$%^~]|\(\)|::|\.\w|\w\.\w|--|\s[-+]\w")


def _stable_order(strings: list[str]) -> list[str]:
    return sorted(strings, key=lambda s: hashlib.sha1(s.encode()).digest())


@cache
def sentences() -> tuple[str, ...]:
    """Prose sentences of 6–24 words from the standard library's docstrings, deduplicated,
    in a fixed pseudo-random order (by hash) so that consecutive ones come from different
    modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"}
               for part in path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    found.update(_prose(doc))
    return tuple(_stable_order(sorted(found)))


def _prose(doc: str) -> list[str]:
    out = []
    for para in doc.split("\n\n"):
        text = " ".join(para.split())
        for s in _SENTENCE_END.split(text):
            words = s.split()
            if (6 <= len(words) <= 24 and s[0].isupper() and s[-1] in ".!?" and s.isascii()
                    and not _CODE_LIKE.search(s) and sum(c.isalpha() for c in s) > 0.75 * len(s)):
                out.append(s)
    return out


@cache
def fonts() -> tuple[Path, ...]:
    """The text fonts matplotlib ships (DejaVu Sans/Serif/Mono and STIX, regular and styled)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
             "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
             "STIXGeneral.ttf", "STIXGeneralItalic.ttf")
    return tuple(folder / n for n in names if (folder / n).exists())


def render_text(text: str, font: Path, size: int, rng: np.random.Generator,
                pad: int = 6) -> np.ndarray:
    """``text`` on one line: uint8 RGB [h, w, 3], ink 0–70, paper 200–255, noise σ 4."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size)
    x0, y0, x1, y1 = face.getbbox(text)
    paper = int(rng.integers(200, 256))
    ink = int(rng.integers(0, 71))
    img = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), paper)
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, font=face, fill=ink)
    gray = np.asarray(img, np.float64) + rng.normal(0, 4, (img.height, img.width))
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def fit_words(text: str, font: Path, size: int, max_ratio: float) -> str:
    """The longest prefix of whole words of ``text`` whose rendering has width/height ≤
    ``max_ratio`` (at least one word)."""
    from PIL import ImageFont

    face = ImageFont.truetype(str(font), size)
    words = text.split()
    best = words[0]
    for n in range(2, len(words) + 1):
        candidate = " ".join(words[:n])
        x0, y0, x1, y1 = face.getbbox(candidate)
        if (x1 - x0 + 12) / (y1 - y0 + 12) > max_ratio:
            break
        best = candidate
    return best


@cache
def natural_images() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, uint8 RGB [h, w, 3]) of the photographs bundled with scikit-image and
    matplotlib, in name order."""
    import matplotlib
    import skimage
    from PIL import Image

    folders = (Path(skimage.__file__).parent / "data",
               Path(matplotlib.get_data_path()) / "sample_data")
    names = ("astronaut.png", "camera.png", "coffee.png", "chelsea.png", "rocket.jpg",
             "motorcycle_left.png", "hubble_deep_field.jpg", "coins.png", "moon.png",
             "ihc.png", "retina.jpg", "brick.png", "grass.png", "gravel.png", "page.png",
             "text.png", "clock_motion.png", "grace_hopper.jpg")
    out = []
    for folder in folders:
        for name in names:
            if (folder / name).exists():
                with Image.open(folder / name) as img:
                    out.append((name.split(".")[0], np.asarray(img.convert("RGB"))))
    return tuple(sorted(out, key=lambda t: t[0]))


VOICES = ("en-us", "en-gb", "de", "fr", "es", "it", "pt", "nl")


def speech(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of ``text`` as float32 samples at 16 kHz, peak 0.8."""
    import tempfile

    from .models import example

    with tempfile.TemporaryDirectory() as tmp:
        samples = example("silero_speech").synthesize(voice, text, speed, pitch, Path(tmp))
    return (0.8 * samples / max(float(np.abs(samples).max()), 1e-6)).astype(np.float32)


def speech_streams(count: int, sentences_each: int = 3, seed: int = 0,
                   rate: int = 16000) -> list[np.ndarray]:
    """``count`` recordings: each ``sentences_each`` sentences in a seeded voice, speed and
    pitch, separated by 0.3–1.5 s pauses over faint noise (−60 dBFS) with a slow level
    change; float32 at 16 kHz."""
    import shutil

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("speech needs espeak-ng: sudo apt-get install espeak-ng")
    rng = np.random.default_rng(seed)
    pool = [s for s in sentences() if len(s.split()) <= 16]
    streams = []
    for k in range(count):
        parts = []
        for j in range(sentences_each):
            parts.append(np.zeros(int(rng.uniform(0.3, 1.5) * rate), np.float32))
            text = pool[(k * sentences_each + j) % len(pool)]
            voice = VOICES[int(rng.integers(len(VOICES)))]
            utterance = speech(text, voice, int(rng.integers(130, 200)),
                               int(rng.integers(30, 70)))
            parts.append(utterance * float(rng.uniform(0.3, 1.0)))
        parts.append(np.zeros(int(0.5 * rate), np.float32))
        audio = np.concatenate(parts)
        streams.append((audio + 0.001 * rng.standard_normal(audio.size)).astype(np.float32))
    return streams
