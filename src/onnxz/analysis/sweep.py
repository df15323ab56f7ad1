"""``onnxz sweep``: pack a model with every quantizer over a range of settings, measure each
real file and its fidelity, and find the smallest file that is good enough.

A *method* is one quantizer family with one swept setting (:data:`METHODS`); a *point* is one
method at one value. For each point the model is packed to a temporary file (its size is the
rate: whole-file bits per stored weight), then judged either by the user's own evaluation, a
Python file defining ``evaluate(session) -> float`` (higher is better, e.g. accuracy on
labelled data; loss = the original model's score − the packed one's), or by
:func:`onnxz.verify` (fidelity = the lowest output SNR; good enough = verify passes).

Points run in parallel in local processes, or on an existing Dask cluster
(``scheduler``: its address; workers must be able to read the model and evaluation files).
Every finished point is written at once to the results file, so that an interrupted sweep
resumes where it stopped.

Adding a method (e.g. rate control): append a :class:`Method` (or a subclass whose
:meth:`Method.options` and :meth:`Method.pack_arguments` build its pack settings) to
:data:`METHODS`; everything else (running, resuming, Pareto front, table, plot) follows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

import onnxz
from onnxz.codecs import LosslessCodec
from onnxz.errors import InputNotFoundError, OnnxzError, first_line
from onnxz.fileio import check_input
from onnxz.modelio import open_model
from onnxz.policy import PackOptions, quantizer

STEPS_REL = tuple(2.0 ** (k / 2) for k in range(-16, 3))
"""Steps of the uniform quantizers, as fractions of each tensor's spread: 1/256 to 2 in
half-octaves (ratio √2)."""

DEFAULT_TOLERANCE = 0.01
"""Largest acceptable loss of the user's score (absolute, in the score's units)."""

RESULTS_VERSION = 1


class SweepError(OnnxzError):
    """A sweep cannot run: a bad evaluation file, a results file of another sweep, an
    unreachable scheduler (the message names it and the fix)."""


@dataclass(frozen=True)
class Method:
    """One quantizer family of the sweep: ``codec`` (see :func:`onnxz.policy.quantizer`)
    with the settings ``fixed``, swept over ``values`` of the setting ``parameter``."""

    name: str
    label: str
    codec: str
    parameter: str
    values: tuple[float, ...]
    fixed: tuple[tuple[str, Any], ...] = ()

    def settings(self, value: float) -> dict[str, Any]:
        return {**dict(self.fixed), self.parameter: value}

    def options(self, value: float) -> PackOptions:
        """The pack options of the point at ``value``."""
        return PackOptions(quantizer=quantizer(self.codec, **self.settings(value)))

    def pack_arguments(self, value: float) -> list[str]:
        """The ``onnxz pack`` options of the point at ``value``."""
        args = ["--codec", self.codec]
        for key, v in self.settings(value).items():
            flag = f"--{key.replace('_', '-')}"
            if isinstance(v, bool):
                args += [flag] if v else []
            else:
                args += [flag, f"{v:.6g}" if isinstance(v, float) else str(v)]
        return args

    def describe(self, value: float) -> str:
        """The point for people, e.g. ``dead-zone δ=0.25, step 1/8``."""
        if self.parameter == "step_rel":
            return f"{self.label}, step {_fraction(value)}"
        return f"{self.label}, {value} bits"

    @property
    def default(self) -> bool:
        """Swept unless asked for by name (the research's global-range baselines are not)."""
        return not dict(self.fixed).get("global_range", False)


def _fraction(value: float) -> str:
    """1/8, 1/11.3, 2, 1.41: a step for people."""
    if value >= 1:
        return f"{value:.3g}"
    inverse = 1 / value
    return f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-9 else f"1/{inverse:.3g}"


def _uniform(name: str, label: str, deadzone: float) -> Method:
    return Method(name, label, "deadzone", "step_rel", STEPS_REL, (("deadzone", deadzone),))


METHODS: tuple[Method, ...] = (
    _uniform("midrise", "midrise", 0.0),
    _uniform("midtread", "midtread", 0.5),
    *(_uniform(f"deadzone-{d:g}", f"dead-zone δ={d:g}", d) for d in (0.1, 0.25, 0.4, 0.7)),
    Method("mulaw", "μ-law μ=255", "mulaw", "bits", (2, 3, 4, 5, 6, 7, 8, 9, 10),
           (("mu", 255.0),)),
    Method("minifloat", "minifloat", "minifloat", "bits", (4, 5, 6, 7, 8, 10, 12, 16)),
    *(Method(f"global-{name}", f"global {name}", "deadzone", "bits", tuple(range(2, 11)),
             (("deadzone", d), ("global_range", True)))
      for name, d in (("midrise", 0.0), ("midtread", 0.5), ("deadzone-0.25", 0.25))),
    Method("global-mulaw", "global μ-law μ=255", "mulaw", "bits", tuple(range(2, 11)),
           (("mu", 255.0), ("global_range", True))),
    Method("global-minifloat", "global minifloat", "minifloat", "bits",
           (4, 5, 6, 7, 8, 10, 12, 16), (("global_range", True),)),
)
"""Every method, in table order. The ``global-*`` ones are the research's own setting (one
range [−1, 1] for the whole model, 2^bits levels): swept only when named."""

DEFAULT_METHODS = tuple(m for m in METHODS if m.default)


def methods_named(names: Sequence[str]) -> tuple[Method, ...]:
    """The methods of :data:`METHODS` with these names; ValueError naming an unknown one."""
    known = {m.name: m for m in METHODS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)} (known: {', '.join(known)})")
    return tuple(known[n] for n in names)


@dataclass(frozen=True)
class Fidelity:
    """How points are judged: ``evaluate`` (a .py file) or ``verify`` with ``inputs``
    (an .npz or test-data folder; None: verify's generated inputs)."""

    evaluate: str | None = None
    inputs: str | None = None

    def describe(self) -> str:
        if self.evaluate:
            return f"evaluate() of {self.evaluate}"
        return f"onnxz verify on {self.inputs or 'generated inputs'}"


@dataclass(frozen=True)
class Job:
    """One point to run: everything a worker process needs."""

    model: str
    method: Method
    value: float
    fidelity: Fidelity
    reference: float | None
    tolerance: float

    @property
    def key(self) -> str:
        return point_key(self.method.name, self.method.settings(self.value))


def point_key(method: str, settings: dict[str, Any]) -> str:
    return f"{method} {json.dumps(settings, sort_keys=True)}"


@functools.cache
def load_evaluate(path: str) -> Callable[[ort.InferenceSession], float]:
    """``evaluate`` of the Python file at ``path`` (loaded once per process)."""
    try:
        check_input(path)
        spec = importlib.util.spec_from_file_location("onnxz_user_evaluation", path)
        if spec is None or spec.loader is None:
            raise SweepError(f"{path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except OnnxzError:
        raise
    except Exception as exc:  # the user's code may raise anything while importing
        raise SweepError(f"{path}: failed to load ({first_line(exc)})") from exc
    except SystemExit as exc:  # sys.exit() (an argparse error) would end the sweep silently
        raise SweepError(f"{path}: failed to load (it called sys.exit({exc.code!r}))") from exc
    function = getattr(module, "evaluate", None)
    if not callable(function):
        raise SweepError(f"{path}: defines no function evaluate(session) -> float")
    return function


def _session_options() -> ort.SessionOptions:
    """One thread a session: the sweep runs its points on several processes at once."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def score_of(evaluate_path: str, session: ort.InferenceSession) -> float:
    """The user's score of one session, checked to be a finite number."""
    try:
        value = float(load_evaluate(evaluate_path)(session))
    except OnnxzError:
        raise
    except Exception as exc:
        raise SweepError(f"{evaluate_path}: evaluate() failed ({first_line(exc)})") from exc
    except SystemExit as exc:
        raise SweepError(f"{evaluate_path}: evaluate() failed (it called "
                         f"sys.exit({exc.code!r}))") from exc
    if not math.isfinite(value):
        raise SweepError(f"{evaluate_path}: evaluate() returned {value}, not a finite number")
    return value


def run_point(job: Job) -> dict[str, Any]:
    """Pack, measure and judge one point (runs in a worker process)."""
    start = time.perf_counter()
    method, value = job.method, job.value
    record: dict[str, Any] = {
        "method": method.name, "label": method.describe(value),
        "settings": method.settings(value),
        "command": " ".join(["onnxz", "pack", _quote(job.model), "-o",
                             _quote(Path(job.model).with_suffix(".onnxz").name),
                             *method.pack_arguments(value)]),
    }
    with tempfile.TemporaryDirectory(prefix="onnxz-sweep-") as tmp:
        packed = Path(tmp, "point.onnxz")
        try:
            info = onnxz.save(job.model, packed, options=method.options(value))
        except (OnnxzError, ValueError) as exc:
            return {**record, "error": f"pack failed: {first_line(exc)}"}
        stored = sum(t.elements for t in info.tensors)
        record.update(
            file_bytes=info.file_bytes,
            bits_per_weight=8 * info.file_bytes / stored if stored else None,
            quantized_bits_per_weight=info.quantized_bits_per_weight,
            ratio=info.ratio,
        )
        if job.fidelity.evaluate:
            try:
                session = onnxz.inference_session(packed, _session_options())
                score = score_of(job.fidelity.evaluate, session)
            except SweepError as exc:
                return {**record, "error": str(exc)}
            assert job.reference is not None
            loss = job.reference - score
            record.update(scores={"score": score}, fidelity=score, loss=loss,
                          good=loss <= job.tolerance)
        else:
            report = onnxz.verify(job.model, packed, job.fidelity.inputs)
            if report.error is not None:  # the packed model did not load or run
                return {**record, "error": f"verify: {report.error}"}
            judged = [m for m in report.outputs if m.picked is None]  # picks: their reads
            snr = min((m.snr_db for m in judged), default=-math.inf)
            top1 = [m.top1 for m in judged if m.top1 is not None]
            record.update(
                scores={"snr_db": snr if math.isfinite(snr) else None,
                        "top1": min(top1) if top1 else None,
                        "cosine_min": min((m.cosine_min for m in judged), default=None),
                        "verdict": report.verdict},
                fidelity=snr if math.isfinite(snr) else (1e9 if snr > 0 else -1e9),
                loss=None, good=report.passed)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _quote(path: str) -> str:
    return path if all(c.isalnum() or c in "/._-+" for c in path) else repr(path)


@dataclass
class SweepResult:
    """Every point, the Pareto front, the best point; :meth:`to_dict` is the JSON form."""

    model: str
    model_sha256: str
    original_bytes: int
    fidelity: Fidelity
    reference: float | None
    tolerance: float
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [p for p in self.points if "error" not in p]

    @property
    def pareto(self) -> list[dict[str, Any]]:
        """Points no other point beats in both size and fidelity, smallest first."""
        front: list[dict[str, Any]] = []
        for p in sorted(self.measured, key=lambda p: (p["file_bytes"], -p["fidelity"])):
            if not front or p["fidelity"] > front[-1]["fidelity"]:
                front.append(p)
        return front

    @property
    def best(self) -> dict[str, Any] | None:
        """The smallest good-enough point (ties: the higher fidelity), or None."""
        good = [p for p in self.measured if p["good"]]
        return min(good, key=lambda p: (p["file_bytes"], -p["fidelity"]), default=None)

    def best_of(self, method: str) -> dict[str, Any] | None:
        good = [p for p in self.measured if p["good"] and p["method"] == method]
        return min(good, key=lambda p: (p["file_bytes"], -p["fidelity"]), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RESULTS_VERSION,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "original_bytes": self.original_bytes,
            "fidelity": {"evaluate": self.fidelity.evaluate, "inputs": self.fidelity.inputs,
                         "reference_score": self.reference},
            "tolerance": self.tolerance,
            "points": self.points,
            "pareto": self.pareto,
            "best": self.best,
        }

    def table(self) -> str:
        """The research's summary: per method its smallest good-enough file; then the best
        point overall and the command that reproduces it."""
        user = self.fidelity.evaluate is not None
        header = ("method", "setting", "bits/w", "bytes", "ratio",
                  *(("score", "loss") if user else ("SNR dB", "top-1")), "points")
        rows = [header]
        names = list(dict.fromkeys(p["method"] for p in self.points))
        for name in names:
            mine = [p for p in self.points if p["method"] == name]
            p = self.best_of(name)
            label = mine[0]["label"].split(",")[0]
            if p is None:
                rows.append((label, "none good enough", "-", "-", "-", "-", "-",
                             str(len(mine))))
                continue
            s = p["scores"]
            fidelity = ((f"{s['score']:.4f}", f"{p['loss']:+.4f}") if user else
                        (_num(s["snr_db"], ".1f"), _num(s["top1"], ".4f")))
            rows.append((label, p["label"].split(", ", 1)[-1], _num(p["bits_per_weight"], ".3f"),
                         f"{p['file_bytes']:,}", _num(p["ratio"], ".2f") + "x", *fidelity,
                         str(len(mine))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if user:
            rule = (f"good enough: loss ≤ {self.tolerance:g} against the original's score "
                    f"{self.reference:.4f}")
        else:
            rule = "good enough: onnxz verify passes (SNR ≥ 20 dB, cosine ≥ 0.99, top-1 ≥ 0.99)"
        lines += ["", f"{self.model}: {len(self.measured)} points measured "
                  f"({len(self.points) - len(self.measured)} failed), fidelity by "
                  f"{self.fidelity.describe()}; bits/w = 8 × file bytes / stored weights;",
                  rule, f"Pareto front: {len(self.pareto)} points"]
        best = self.best
        if best is None:
            lines.append("no point is good enough: try smaller steps or more bits")
        else:
            lines += [f"best: {best['label']}, {best['file_bytes']:,} bytes "
                      f"({_num(best['ratio'], '.2f')}x smaller)",
                      f"  {best['command']}"]
        return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PointDone = Callable[[int, int, dict[str, Any]], None]
"""Called as ``progress(done, total, point)`` after each point."""


def sweep(
    model: str | os.PathLike,
    *,
    evaluate: str | os.PathLike | None = None,
    inputs: str | os.PathLike | None = None,
    methods: Sequence[Method] = DEFAULT_METHODS,
    tolerance: float = DEFAULT_TOLERANCE,
    workers: int | None = None,
    scheduler: str | None = None,
    results: str | os.PathLike | None = None,
    progress: PointDone | None = None,
) -> SweepResult:
    """Run every point of ``methods`` on ``model`` and return the :class:`SweepResult`.

    ``evaluate``: a Python file defining ``evaluate(session) -> float`` (higher is better);
    otherwise ``onnxz.verify`` judges on ``inputs`` (or generated inputs). ``workers``:
    local processes (default: the CPU count); ``scheduler``: the address of a Dask
    scheduler to run the points on instead. ``results``: a JSON file written after every
    point; if it holds points of the same sweep (same model bytes, fidelity, tolerance),
    they are kept and not run again.
    """
    model_path = check_input(model)
    if evaluate is not None and inputs is not None:
        raise SweepError("give an evaluation file or inputs for verify, not both")
    if inputs is not None and not Path(inputs).exists():
        raise InputNotFoundError(f"{inputs}: no such file or folder")
    fidelity = Fidelity(str(check_input(evaluate)) if evaluate is not None else None,
                        None if inputs is None else str(inputs))
    reference = None
    _check_something_to_quantize(model_path)
    if fidelity.evaluate:
        reference = score_of(fidelity.evaluate, ort.InferenceSession(
            str(model_path), _session_options(), providers=["CPUExecutionProvider"]))
    else:
        _check_original_runs(model_path, fidelity.inputs)
    result = SweepResult(str(model_path), file_sha256(model_path),
                         model_path.stat().st_size, fidelity, reference, tolerance)
    results_path = Path(results) if results is not None else None
    done = _resume(results_path, result) if results_path else {}
    jobs = [Job(str(model_path), m, v, fidelity, reference, tolerance)
            for m in methods for v in m.values]
    todo = [j for j in jobs if j.key not in done]
    result.points = [done[j.key] for j in jobs if j.key in done]
    count = len(result.points)
    for record in _execute(todo, workers, scheduler):
        result.points.append(record)
        count += 1
        if results_path:
            _write_json(results_path, result.to_dict())
        if progress:
            progress(count, len(jobs), record)
    order = {j.key: i for i, j in enumerate(jobs)}
    result.points.sort(key=lambda p: order[point_key(p["method"], p["settings"])])
    if results_path:
        _write_json(results_path, result.to_dict())
    return result


def _check_something_to_quantize(model: Path) -> None:
    """:class:`SweepError` if the points' quantizers would touch no tensor (by
    :meth:`PackOptions.codec_for`'s rule for one step: none a float weight of
    ``min_quantized_elements``): every point would be the lossless file (an
    integer-quantized model reported 19 identical points)."""
    one_step = PackOptions(step_rel=1.0)
    if all(isinstance(one_step.codec_for(t.slot, t.etype, t.count), LosslessCodec)
           for t in open_model(model).tensors):
        raise SweepError(f"{model}: no float weight tensor of ≥ "
                         f"{one_step.min_quantized_elements} elements to quantize: every "
                         "point would be the lossless file")


def _check_original_runs(model: Path, inputs: str | None) -> None:
    """:class:`SweepError` if verify cannot judge any point: the original does not run on
    the inputs (a lossless file of it is verified once; every point would fail alike)."""
    with tempfile.TemporaryDirectory(prefix="onnxz-sweep-") as tmp:
        exact = Path(tmp, "lossless.onnxz")
        onnxz.save(model, exact, lossless=True)
        report = onnxz.verify(model, exact, inputs)
    if report.error is not None:
        raise SweepError(f"{model}: verify cannot judge the points: {report.error}")


def _resume(path: Path, result: SweepResult) -> dict[str, dict[str, Any]]:
    """The finished points of ``path`` by key, if it is a results file of this sweep."""
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: not a readable results file ({first_line(exc)}); "
                         "remove it or choose another --results") from exc
    mine = result.to_dict()
    same = isinstance(saved, dict) and all(
        saved.get(k) == mine[k] for k in ("version", "model_sha256", "fidelity", "tolerance"))
    if not same:
        raise SweepError(f"{path}: holds the results of another sweep (other model, fidelity "
                         "or tolerance): remove it or choose another --results")
    return {point_key(p["method"], p["settings"]): p for p in saved.get("points", [])
            if isinstance(p, dict) and "error" not in p}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _execute(jobs: list[Job], workers: int | None, scheduler: str | None
             ) -> Iterator[dict[str, Any]]:
    """The records of ``jobs`` in the order they finish."""
    if not jobs:
        return
    if scheduler is not None:
        yield from _on_dask(jobs, scheduler)
        return
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield from map(run_point, jobs)
        return
    context = multiprocessing.get_context("spawn")  # onnxruntime's threads do not survive fork
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(run_point, j) for j in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool as exc:
            raise SweepError(f"a worker process died ({first_line(exc)}); finished points "
                             "are in the results file: run again to resume") from exc
        finally:
            for future in futures:
                future.cancel()


def _on_dask(jobs: list[Job], scheduler: str) -> Iterator[dict[str, Any]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise SweepError("--scheduler needs dask.distributed: pip install "
                         "'onnxz[dask]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {scheduler} "
                         f"({first_line(exc)})") from exc
    with contextlib.closing(client):
        futures = client.map(run_point, jobs, pure=False)
        for future in dask_completed(futures):
            yield future.result()
