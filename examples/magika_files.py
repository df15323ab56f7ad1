"""Magika on real files: does a packed Magika model still name the same content types?

Magika (Google's file-type classifier, one of onnxz's corpus models) is packed at several
quantizer settings. Each packed model is unpacked next to Magika's own ``config.min.json`` and
loaded through Magika's Python API (``Magika(model_dir=...)``), so the files go through
Magika's real preprocessing (first and last 1024 stripped bytes) and its real postprocessing
(per-type confidence thresholds, ``txt``/``unknown`` fallbacks). About 200 files found on this
machine under /usr/share, /usr/lib/python3* and /etc — a deterministic pick spread over file
name extensions — are identified by the original and by every packed model. The table shows
how many content types agree, and what ``onnxz.verify`` says on the same files' model inputs::

    pip install 'onnxz[examples]'      # magika==1.0.3
    python examples/magika_files.py

The set of files depends on the machine (the pick is deterministic on a given one).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

import onnxz

ROOTS = ("/usr/share", "/usr/lib/python3*", "/etc")
FILES = 200
SETTINGS = (("lossless", None), ("step 1/64 (default)", onnxz.DEFAULT_STEP_REL),
            ("step 1/16", 1 / 16), ("step 1/4", 1 / 4), ("step 1", 1.0))
"""Quantizer steps as fractions of each weight tensor's spread."""


def candidates() -> dict[str, list[Path]]:
    """Regular, readable files under ROOTS grouped by extension, each group in a fixed
    pseudo-random order (by path hash) so that the pick does not favour one folder."""
    groups: dict[str, list[Path]] = {}
    for root in sorted(p for pattern in ROOTS for p in glob.glob(pattern)):
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in names:
                path = Path(folder, name)
                if not path.is_symlink() and path.is_file() and os.access(path, os.R_OK):
                    groups.setdefault(path.suffix.lower(), []).append(path)
    for paths in groups.values():
        paths.sort(key=lambda p: hashlib.sha1(str(p).encode()).digest())
    return groups


def pick_files(magika, count: int) -> tuple[list[Path], np.ndarray]:
    """``count`` files that reach Magika's model (not decided by size alone), taking one file
    per extension in turn, most common extensions first; and their model inputs [count, 2048].
    """
    groups = sorted(candidates().items(), key=lambda kv: (-len(kv[1]), kv[0]))
    picked: list[Path] = []
    features: list[np.ndarray] = []
    for turn in range(max(len(g) for _, g in groups)):
        for _, paths in groups:
            if turn < len(paths) and len(picked) < count:
                # Magika 1.0.3's own feature extraction (pinned in the examples extra); it
                # returns a result instead when the file is decided without the model.
                _, found = magika._get_result_or_features_from_path(paths[turn])
                if found is not None:
                    picked.append(paths[turn])
                    features.append(np.array(found.beg + found.mid + found.end, np.int32))
        if len(picked) == count:
            break
    return picked, np.stack(features)


def packed_magika(model_dir: Path, packed: Path, into: Path):
    """A Magika instance running the decoded ``packed`` model with Magika's own config."""
    from magika import Magika

    into.mkdir()
    onnxz.unpack(packed, into / "model.onnx")
    shutil.copy(model_dir / "config.min.json", into / "config.min.json")
    return Magika(model_dir=into)


def main() -> int:
    """Identify the files with the original and every packed model; print the table."""
    try:
        import magika
        from magika import Magika
    except ImportError:
        print("This example needs Magika: pip install 'onnxz[examples]' (magika==1.0.3)",
              file=sys.stderr)
        return 0
    model_dir = Path(magika.__file__).parent / "models" / "standard_v3_3"
    original = Magika(model_dir=model_dir)
    files, features = pick_files(original, FILES)
    reference = original.identify_paths(files)
    types = Counter(str(r.output.label) for r in reference)
    print(f"Magika {magika.__version__}, {len(files)} files under {', '.join(ROOTS)}, "
          f"{len(Counter(p.suffix for p in files))} extensions, {len(types)} content types "
          "(original model)")
    print("most common: " + ", ".join(f"{t} {n}" for t, n in types.most_common(12)) + "\n")

    model_path = model_dir / "model.onnx"
    header = (f"{'setting':<20} {'bits/w':>6} {'bytes':>9} {'ratio':>6} {'same type':>9} "
              f"{'same DL':>8} {'max Δscore':>10} {'top-1':>7} {'top-5':>7} {'SNR dB':>6}  verify")
    rows = []
    changed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp, "magika_inputs.npz")
        np.savez(inputs, bytes=features[:, None])  # N samples of the model's [1, 2048] input
        for i, (label, step_rel) in enumerate(SETTINGS):
            packed = Path(tmp, f"magika_{i}.onnxz")
            info = onnxz.save(model_path, packed, lossless=step_rel is None, step_rel=step_rel)
            results = packed_magika(model_dir, packed, Path(tmp, f"model_{i}")
                                    ).identify_paths(files)
            same = sum(a.output.label == b.output.label for a, b in zip(reference, results,
                                                                            strict=True))
            same_dl = sum(a.dl.label == b.dl.label for a, b in zip(reference, results,
                                                                   strict=True))
            delta = max(abs(a.score - b.score) for a, b in zip(reference, results, strict=True))
            report = onnxz.verify(model_path, packed, inputs)
            if report.passed:
                changed += [f"  {label}: {p}: {a.output.label} -> {b.output.label} (score "
                            f"{a.score:.3f} -> {b.score:.3f})"
                            for p, a, b in zip(files, reference, results, strict=True)
                            if a.output.label != b.output.label]
            (scores,) = report.outputs
            bits = info.quantized_bits_per_weight
            rows.append(
                f"{label:<20} {'-' if bits is None else f'{bits:.2f}':>6} "
                f"{info.file_bytes:>9,} {model_path.stat().st_size / info.file_bytes:>5.2f}x "
                f"{same:>5}/{len(files):<3} {same_dl:>4}/{len(files):<3} {delta:>10.4f} "
                f"{scores.top1:>7.2%} {scores.top5:>7.2%} {scores.snr_db:>6.1f}  "
                f"{report.verdict}"
            )
    print(header)
    print("\n".join(rows))
    print("\nsame type = Magika's final content type equal to the original's; same DL = the "
          "model's own top label;\nmax Δscore = largest change of Magika's confidence score; "
          "top-1/top-5/SNR/verify = onnxz.verify on the\nsame files' model inputs (default "
          "thresholds: SNR ≥ 20 dB, worst-sample cosine ≥ 0.99, top-1 ≥ 0.99)")
    if changed:
        print("\nfiles whose content type changed under a setting that passes verify:")
        print("\n".join(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
