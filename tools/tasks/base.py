"""What every task shares: the Task interface, the calibration/held-out split, the agreement
rules, and running a model file (.onnx or .onnxz) as an onnxruntime session.

A *task* is one model's real job on real inputs: ``items()`` lists the inputs (text lines,
files, speech streams...) in a fixed order; ``decide(session, items)`` turns the model's
outputs into the decisions a user acts on (a label, a string, a set of boxes, a speech/no
speech call per chunk); ``agreement(reference, decisions)`` says which fraction of the packed
model's decisions equal the original model's. Every fourth item (index 0, 4, 8...) is for
calibration, the other three quarters are held out (:func:`split`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

CALIBRATION_EVERY = 4
"""Item i is for calibration when i % CALIBRATION_EVERY == 0 (one quarter)."""


@dataclass(frozen=True)
class Split:
    """Items for calibration (one quarter) and held out for judging (three quarters)."""

    calibration: list
    heldout: list


def split(items: Sequence) -> Split:
    """Every fourth item (index 0, 4, 8...) calibrates; the rest is held out. Deterministic:
    it depends only on the order of ``items``, which each task fixes (and keeps from lining
    up with a period of 4 in the data, e.g. four turns of each image).

    >>> s = split(list(range(9)))
    >>> s.calibration, s.heldout
    ([0, 4, 8], [1, 2, 3, 5, 6, 7])
    """
    calibration = [x for i, x in enumerate(items) if i % CALIBRATION_EVERY == 0]
    heldout = [x for i, x in enumerate(items) if i % CALIBRATION_EVERY != 0]
    return Split(calibration, heldout)


@dataclass(frozen=True)
class Agreement:
    """``agreeing`` of ``total`` task decisions of a packed model equal the original's."""

    agreeing: float
    total: float
    unit: str = "decisions"

    @property
    def fraction(self) -> float:
        """agreeing / total (1.0 when there is nothing to decide)."""
        return self.agreeing / self.total if self.total else 1.0

    def __str__(self) -> str:
        return f"{self.fraction:.2%} ({self.agreeing:g}/{self.total:g} {self.unit})"


def equal_agreement(reference: Sequence, decisions: Sequence, unit: str = "decisions"
                    ) -> Agreement:
    """Decision i agrees when it equals the reference's decision i (labels, strings, ids).

    >>> str(equal_agreement([1, 2, 3, 4], [1, 2, 0, 4], "labels"))
    '75.00% (3/4 labels)'
    """
    if len(reference) != len(decisions):
        raise ValueError(f"{len(decisions)} decisions for {len(reference)} reference ones")
    same = sum(bool(np.all(r == d)) for r, d in zip(reference, decisions, strict=True))
    return Agreement(same, len(reference), unit)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of axis-aligned boxes ``[x0, y0, x1, y1]``: a [n, 4], b [m, 4]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(reference: np.ndarray, boxes: np.ndarray, min_iou: float,
                reference_classes: np.ndarray | None = None,
                classes: np.ndarray | None = None) -> int:
    """How many boxes pair up one-to-one with a reference box of the same class (if classes
    are given) at IoU ≥ ``min_iou``; pairs are taken greedily, highest IoU first.

    >>> match_boxes(np.array([[0, 0, 10, 10], [20, 0, 30, 10]]),
    ...             np.array([[1, 0, 11, 10], [50, 50, 60, 60]]), 0.5)
    1
    """
    iou = iou_matrix(reference, boxes)
    if iou.size == 0:
        return 0
    if reference_classes is not None and classes is not None:
        iou = np.where(np.asarray(reference_classes)[:, None] == np.asarray(classes)[None, :],
                       iou, 0.0)
    matched = 0
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if iou[i, j] >= 0:  # still unpaired
            matched += 1
            iou[i, :] = -1.0
            iou[:, j] = -1.0
    return matched


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes [n, 4] as ``[x0, y0, x1, y1]`` and class ids [n]."""

    boxes: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def box_agreement(reference: Sequence[Detections], detections: Sequence[Detections],
                  min_iou: float) -> Agreement:
    """Detections pooled over images, F1-style: matched / mean(reference boxes, boxes), where
    a box matches a reference box of the same image and class at IoU ≥ ``min_iou`` (one to
    one, greedy by IoU). A lost, an extra or a moved box each cost; 1.0 when nothing is
    detected by either model.

    >>> ref = [Detections(np.array([[0, 0, 10, 10]]), np.array([0]))]
    >>> str(box_agreement(ref, [Detections(np.zeros((0, 4)), np.zeros(0, int))], 0.5))
    '0.00% (0/1 boxes)'
    """
    if len(reference) != len(detections):
        raise ValueError(f"{len(detections)} images for {len(reference)} reference ones")
    matched = sum(match_boxes(r.boxes, d.boxes, min_iou, r.classes, d.classes)
                  for r, d in zip(reference, detections, strict=True))
    count = sum(len(r) for r in reference) + sum(len(d) for d in detections)
    return Agreement(matched, count / 2, "boxes")


def open_session(path: str | os.PathLike) -> ort.InferenceSession:
    """An onnxruntime CPU session of a ``.onnx`` file or (decoded in memory) a ``.onnxz`` one."""
    path = Path(path)
    if path.suffix == ".onnxz":
        import onnxz

        return onnxz.inference_session(path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def cache_dir() -> Path:
    """Where the original models' decisions are kept: ``$ONNXZ_TASK_CACHE`` or
    ``~/.cache/onnxz/tasks``."""
    env = os.environ.get("ONNXZ_TASK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxz" / "tasks"


def fingerprint(*parts: Any) -> str:
    """A short hash of arrays, strings and nested lists/dicts of them (for cache keys)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif dataclasses.is_dataclass(x):
            h.update(type(x).__name__.encode())
            feed({f.name: getattr(x, f.name) for f in dataclasses.fields(x)})
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for y in x:
                feed(y)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    for p in parts:
        feed(p)
    return h.hexdigest()[:16]


class Task(ABC):
    """One model's job on real inputs. Subclasses set the class attributes and implement
    ``model_path``, ``load_items``, ``decide``, ``calibration_feeds`` (and ``agreement`` when
    decisions are not compared by equality)."""

    name: str
    """The model's name (fetch_models), also the registry key."""
    family: str
    """classifier, detector, text recognizer, sentence encoder, voice activity..."""
    data: str
    """Where the inputs come from, in one sentence (README)."""
    rule: str
    """What a decision is and when two agree, in one sentence (README)."""
    fidelity: str = "top1>=0.995"
    """The ``--fidelity`` spec onnxz rate control is asked for on this model."""
    version: int = 1
    """Bump when items or decisions change, so cached reference decisions are recomputed."""

    @abstractmethod
    def model_path(self) -> Path:
        """The original .onnx (fetched or built, cached)."""

    @abstractmethod
    def load_items(self) -> list:
        """All real inputs, in a fixed order (calibration = every fourth)."""

    @abstractmethod
    def decide(self, session: ort.InferenceSession, items: list) -> list:
        """The task decisions of ``session`` on ``items`` (one entry per decision unit)."""

    @abstractmethod
    def calibration_feeds(self, original: ort.InferenceSession, items: list
                          ) -> dict[str, np.ndarray]:
        """The model inputs of ``items`` in the verifier's ``.npz`` layout: one array per
        model input, samples stacked on a new leading axis (a stateful model's samples are
        the (input, state) pairs the original model sees)."""

    def agreement(self, reference: list, decisions: list) -> Agreement:
        """Fraction of decisions equal to the reference's."""
        return equal_agreement(reference, decisions)

    @cached_property
    def items(self) -> list:
        """``load_items()``, computed once per process."""
        return self.load_items()

    @property
    def split(self) -> Split:
        """Calibration (every fourth item) and held-out items."""
        return split(self.items)

    def reference(self) -> list:
        """The original model's decisions on the held-out items, cached on disk by the
        model's bytes, the task version and the items."""
        path = cache_dir() / f"{self.name}-{self._reference_key()}.pkl"
        if path.exists():
            with open(path, "rb") as f:
                return pickle.load(f)
        decisions = self.decide(open_session(self.model_path()), self.split.heldout)
        _dump(decisions, path)
        return decisions

    @cached_property
    def _reference_key_value(self) -> str:
        model = self.model_path()
        return fingerprint(self.name, self.version, _file_sha256(model),
                           fingerprint(self.split.heldout))

    def _reference_key(self) -> str:
        return self._reference_key_value

    def evaluate(self, path: str | os.PathLike) -> Agreement:
        """Task agreement of the model file ``path`` (.onnx or .onnxz) with the original on
        the held-out items; remembered on disk by the file's sha256, so judging the same
        bytes again is free."""
        path = Path(path)
        key = fingerprint(self._reference_key(), _file_sha256(path))
        memo = cache_dir() / f"{self.name}-eval-{key}.pkl"
        if memo.exists():
            with open(memo, "rb") as f:
                return pickle.load(f)
        result = self.agreement(self.reference(), self.decide(open_session(path),
                                                              self.split.heldout))
        _dump(result, memo)
        return result

    def write_calibration(self, path: str | os.PathLike) -> Path:
        """Write the calibration items' model inputs as an ``.npz`` (verifier layout)."""
        feeds = self.calibration_feeds(open_session(self.model_path()), self.split.calibration)
        path = Path(path)
        np.savez(path, **feeds)
        return path


def _dump(value: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f)
    os.replace(tmp, path)


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    k = (str(path), stat.st_size, stat.st_mtime)
    if k not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _SHA_CACHE[k] = h.hexdigest()
    return _SHA_CACHE[k]
