"""Real task data and task agreement, per model: what judges rate control.

``TASKS`` maps a model name to its :class:`~tasks.base.Task`: real inputs split into
calibration (every fourth item) and held-out (the rest), the calibration inputs in the
verifier's ``.npz`` layout, and the agreement of a packed model's task decisions with the
original's on the held-out inputs::

    import tasks
    task = tasks.get("magika")
    task.write_calibration("magika_calib.npz")        # for --inputs / onnxz.save(inputs=...)
    print(task.evaluate("magika.onnxz"))              # e.g. 99.67% (299/300 decisions)

Corpus models (tuned on) and models of other families nothing was tuned on (``UNSEEN``); the
README section "Rate control bench" lists each model's data and rule.
"""

from __future__ import annotations

from .base import Agreement, Detections, Split, Task, box_agreement, equal_agreement, split
from .efficientnet import EfficientNetTask
from .fsmn import FsmnTask
from .magika import MagikaTask
from .minilm import MiniLMTask
from .nudenet import NudeNetTask
from .orientation import OrientationTask
from .ppocr import ClsTask, DetTask, RecTask
from .silero import SileroTask

CORPUS_TASKS: tuple[Task, ...] = (
    MagikaTask(),
    SileroTask("silero_vad", with_sr=True),
    SileroTask("silero_vad_half", with_sr=False),
    DetTask(),
    ClsTask(),
)
UNSEEN_TASKS: tuple[Task, ...] = (
    RecTask(),
    MiniLMTask(),
    NudeNetTask(),
    EfficientNetTask(),
    OrientationTask(),
    FsmnTask(),
)
TASKS: dict[str, Task] = {t.name: t for t in CORPUS_TASKS + UNSEEN_TASKS}


def get(name: str) -> Task:
    """The task of model ``name``; KeyError names the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"no task for {name!r}; known: {', '.join(TASKS)}") from None


__all__ = ["CORPUS_TASKS", "TASKS", "UNSEEN_TASKS", "Agreement", "Detections", "Split",
           "Task", "box_agreement", "equal_agreement", "get", "split"]
