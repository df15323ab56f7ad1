#!/usr/bin/env python3
"""Rate bench: per model, the smallest file that keeps ≥ 99.5% task agreement on held-out
real inputs, for onnxz --fidelity (at the task's spec, and with the spec's bounds swept),
the onnxz default, the best single --step-rel, NNCodec 2.1.3 over a QP sweep (with and
without dependent quantization) and onnxruntime int8.

    make bench-rate                                   # everything, markdown table
    python tools/bench_rate.py magika ppocr_cls       # some models
    python tools/bench_rate.py --json rate.json       # also machine-readable results
    python tools/bench_rate.py --methods default,step # some methods
    python tools/bench_rate.py --fidelity-spec magika=top1>=0.999     # another spec
    python tools/bench_rate.py --variant 'dz0.3={"deadzone": 0.3}'    # an ablation column
    python tools/bench_rate.py --methods fidelity,default --reuse old.json   # other columns
                                                      # from an earlier --json run

Models and their data/agreement rules: ``python tools/task_eval.py --list``. The sweeps walk
a grid of factor √2 in step size from fine to coarse (onnxz steps 2^(k/2) of the spread;
NNCodec QPs in steps of 2, i.e. also √2 in step size) and stop after two grid points in a row
miss the target; the smallest passing file on the grid is reported (agreement is not
monotonic in the step, so no bisection). "swept" walks the task's fidelity spec the same
way (:func:`loosened`: 3 dB of SNR or a factor √2 of a fraction's shortfall per point),
from the spec itself: like NNCodec's QP, the knob is chosen by looking at held-out data,
which no user can; the fixed-spec column is what a user gets. A method that never reaches
the target on its grid reports its best agreement instead.

``--variant NAME=JSON`` adds a column: ``onnxz.save`` with those keyword arguments, swept over
``step_rel`` like "best --step-rel"; if they hold ``"fidelity": true`` it is one rate-control
run at the model's fidelity spec with the calibration inputs instead, with ``"fidelity":
"sweep"`` the spec swept like "swept" (each technique of an ablation is one variant, e.g.
``--variant 'bc={"fidelity": true, "correct_biases": true}'``). Needs ``.[ratebench]``
(``make bench-rate`` sets it up) and, for NNCodec, ``.venv-nncodec`` (``make
nncodec-venv``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx

import onnxz
from onnxz.fidelity import Criterion, Fidelity

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comparators
import tasks
from bench_speed import decode_cpu_seconds, weight_elements

TARGET = 0.995
METHODS = ("fidelity", "fidelity-sweep", "default", "step", "nncodec", "nncodec-nodq", "int8")
METHOD_TITLES = {
    "fidelity": "onnxz --fidelity",
    "fidelity-sweep": "onnxz --fidelity, swept",
    "default": "onnxz default",
    "step": "onnxz best --step-rel",
    "nncodec": "NNCodec (dq)",
    "nncodec-nodq": "NNCodec (no dq)",
    "int8": "ORT int8 dynamic",
}
STEP_GRID_START = -12  # step_rel = 2^(k/2): k = -12 is 1/64, the v1 default
STEP_GRID = (-20, 2)  # 1/1024 .. 2
QP_GRID_START = -40
QP_GRID = (-64, 0)
SPEC_GRID = (-6, 8)  # the fidelity spec loosened by k half-octaves (see loosened)
MISSES_TO_STOP = 2


@dataclass
class Trial:
    """One packed file: the setting, its size and the task agreement it reaches."""

    setting: str
    bytes: int
    agreement: float
    agreeing: float
    total: float
    encode_seconds: float | None = None
    """Wall time of the pack (onnxz files only)."""
    decode_mbps: float | None = None
    """``onnxz.load`` of the file: float32 MB of weights (4 bytes × the elements of every
    stored tensor) per CPU-second, best of 3 (onnxz files only)."""


@dataclass
class MethodResult:
    """A method on one model: the smallest trial reaching the target (``best``), or None
    (then ``closest`` is the trial with the highest agreement), every trial, and a note."""

    method: str
    best: Trial | None = None
    closest: Trial | None = None
    trials: list[Trial] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0


@dataclass
class ModelResult:
    """All methods on one model."""

    model: str
    kind: str
    family: str
    original_bytes: int
    heldout: int
    methods: dict[str, MethodResult]


def log(msg: str) -> None:
    print(f"bench_rate: {msg}", file=sys.stderr, flush=True)


def fidelity_pack(spec: str, source: Path, out: Path, calibration: Path, **kwargs) -> None:
    """onnxz rate control: the smallest file meeting ``spec`` on the calibration inputs
    (``onnxz.save(..., fidelity=, inputs=)``, issue 9); ``kwargs`` go to ``onnxz.save`` too."""
    onnxz.save(source, out, fidelity=spec, inputs=str(calibration), force=True, **kwargs)


def _trial(task: tasks.Task, setting: str, path: Path, size: int | None = None) -> Trial:
    result = task.evaluate(path)
    trial = Trial(setting, size if size is not None else path.stat().st_size, result.fraction,
                  result.agreeing, result.total)
    log(f"  {task.name} {setting}: {trial.bytes:,} B, agreement {result}")
    return trial


def _packed(task: tasks.Task, setting: str, path: Path, pack: Callable[[], object]) -> Trial:
    """:func:`_trial` of the onnxz file ``pack()`` writes at ``path``, with its encode time
    and decode speed."""
    start = time.perf_counter()
    pack()
    encode_seconds = time.perf_counter() - start
    megabytes = 4 * _weight_elements(task.model_path()) / 1e6
    return replace(_trial(task, setting, path), encode_seconds=round(encode_seconds, 2),
                   decode_mbps=round(megabytes / decode_cpu_seconds(path), 1))


_weight_elements = functools.cache(weight_elements)


def _finish(res: MethodResult, target: float) -> MethodResult:
    passing = [t for t in res.trials if t.agreement >= target]
    res.best = min(passing, key=lambda t: t.bytes) if passing else None
    if res.trials:
        res.closest = max(res.trials, key=lambda t: (t.agreement, -t.bytes))
    return res


def sweep(make: Callable[[int], Trial], start: int, lo: int, hi: int, stride: int,
          target: float) -> list[Trial]:
    """Grid points k = start, start+stride... (coarser = larger k): if ``start`` misses, go
    finer until one passes (or ``lo``); then coarser from there until MISSES_TO_STOP in a
    row miss (or ``hi``)."""
    trials: dict[int, Trial] = {}
    k = start
    while True:
        trials[k] = make(k)
        if trials[k].agreement >= target or k - stride < lo:
            break
        k -= stride
    misses = 0 if trials[k].agreement >= target else MISSES_TO_STOP
    k = max(trials) + stride
    while misses < MISSES_TO_STOP and k <= hi:
        trials[k] = make(k)
        misses = 0 if trials[k].agreement >= target else misses + 1
        k += stride
    return [trials[i] for i in sorted(trials)]


def loosened(spec: str, k: int) -> str:
    """``spec`` loosened by ``k`` half-octaves (stricter for k < 0), the way a step grid of
    factor √2 coarsens: an snr bound 3·k dB lower; a fraction's or a cosine's shortfall
    (1 − bound) and a max_abs bound × 2^(k/2).

    >>> loosened("top1>=0.995,snr[out]>=30", 2)
    'top1>=0.99,snr[out]>=24'
    """
    def bound(c: Criterion) -> float:
        if c.metric == "snr":
            return c.bound - 3 * k
        if c.metric == "max_abs":
            return c.bound * 2 ** (k / 2)
        return max(1 - (1 - c.bound) * 2 ** (k / 2), -1 if c.metric == "cosine" else 0)

    criteria = Fidelity.parse(spec).criteria
    return str(Fidelity(tuple(replace(c, bound=bound(c)) for c in criteria)))


def step_label(k: int) -> str:
    """2^(k/2) as 1/64, 1/45.3, 1/4, 1.41..."""
    value = 2 ** (k / 2)
    return f"{value:.3g}" if value >= 1 else f"1/{1 / value:.3g}"


ABLATION = (
    ("step", "one step for all tensors", {}),
    ("fidelity-sweep", "+ per-tensor steps (rate control)", {}),
    ("calibrated", "+ calibrated rounding", {"fidelity": "sweep", "calibrated_rounding": True}),
    ("bias", "+ bias correction", {"fidelity": "sweep", "calibrated_rounding": True,
                                   "correct_biases": True}),
)
"""``--ablation``: the columns of issue 10's ablation, each technique added to the previous
column's (name, title, the variant's ``onnxz.save`` arguments; none for built-in methods).
Rate control's own coding tools (rows predicted by the ``predictive`` codec, ``deadzone_zstd``,
batch normalizations without their statistics, sensitivities on the whole stream, flips
scaled by the margin, the search between its last two plans) are in the second column: they
have no switch."""
ABLATION_METHODS = ("nncodec", "nncodec-nodq")
"""Also run by ``--ablation``: NNCodec's smallest file is the reference of every column."""

VARIANTS: dict[str, dict] = {}
"""Extra columns (``--variant NAME=JSON``): name -> onnxz.save keyword arguments."""
FIDELITY_SPECS: dict[str, str] = {}
"""``--fidelity-spec MODEL=SPEC`` overrides of each task's own ``fidelity``."""


def run_model(task: tasks.Task, methods: tuple[str, ...], workdir: Path, target: float
              ) -> ModelResult:
    """Every requested method on one model."""
    source = task.model_path()
    model = onnx.load(str(source))
    log(f"{task.name}: {len(task.items)} items, {len(task.split.heldout)} held out")
    task.reference()
    calibration = task.write_calibration(workdir / f"{task.name}_calib.npz")
    results: dict[str, MethodResult] = {}
    for method in methods:
        start = time.perf_counter()
        res = MethodResult(method)
        try:
            _run_method(method, task, source, model, calibration, workdir, target, res)
        except comparators.NNCodecUnavailable as e:
            res.note = str(e)
        res.seconds = round(time.perf_counter() - start, 1)
        results[method] = _finish(res, target)
    kind = "corpus" if task in tasks.CORPUS_TASKS else "unseen"
    return ModelResult(task.name, kind, task.family, source.stat().st_size,
                       len(task.split.heldout), results)


def _run_method(method: str, task: tasks.Task, source: Path, model: onnx.ModelProto,
                calibration: Path, workdir: Path, target: float, res: MethodResult) -> None:
    out = workdir / f"{task.name}_{method}.onnxz"
    spec = FIDELITY_SPECS.get(task.name, task.fidelity)
    kwargs = dict(VARIANTS.get(method, {}))
    rate_control = kwargs.pop("fidelity", False)
    if method == "fidelity" or rate_control is True:
        res.trials.append(_packed(task, spec, out, lambda: fidelity_pack(
            spec, source, out, calibration, **kwargs)))
    elif method == "fidelity-sweep" or rate_control == "sweep":
        def make(k: int) -> Trial:
            return _packed(task, loosened(spec, k), out, lambda: fidelity_pack(
                loosened(spec, k), source, out, calibration, **kwargs))

        res.trials = sweep(make, 0, *SPEC_GRID, 1, target)
        res.note = "the spec's bounds swept like the step grid (judged on held-out data)"
    elif method in VARIANTS:
        def make(k: int) -> Trial:
            return _packed(task, f"step {step_label(k)}", out, lambda: onnxz.save(
                source, out, step_rel=2 ** (k / 2), force=True, **kwargs))

        res.trials = sweep(make, STEP_GRID_START, *STEP_GRID, 1, target)
    elif method == "default":
        res.trials.append(_packed(task, "default", out,
                                  lambda: onnxz.save(source, out, force=True)))
    elif method == "step":
        def make(k: int) -> Trial:
            return _packed(task, f"step {step_label(k)}", out, lambda: onnxz.save(
                source, out, step_rel=2 ** (k / 2), force=True))

        res.trials = sweep(make, STEP_GRID_START, *STEP_GRID, 1, target)
    elif method in ("nncodec", "nncodec-nodq"):
        use_dq = method == "nncodec"

        with comparators.NNCodec(model, use_dq, workdir / f"{task.name}_nnc") as codec:
            def make(qp: int) -> Trial:
                r = codec.code(qp)
                return _trial(task, f"qp {qp}", r.model_path, r.total_bytes)

            res.trials = sweep(make, QP_GRID_START, *QP_GRID, 2, target)
        res.note = "bitstream + zstd -19 of the graph without weights"
    elif method == "int8":
        try:
            r = comparators.ort_int8(source, workdir / f"{task.name}_int8.onnx")
        except Exception as e:  # quantize_dynamic's own failure is the result to report
            res.note = f"quantize_dynamic fails: {type(e).__name__}: {e}".splitlines()[0]
            return
        res.trials.append(_trial(task, "int8", r.model_path, r.zstd_bytes))
        res.note = f"{r.note}; zstd -19 of the .onnx ({r.file_bytes:,} B raw)"
    else:
        raise ValueError(f"unknown method {method!r}")


def load_result(data: dict) -> ModelResult:
    """A ModelResult from its ``--json`` form."""
    def trial(t: dict | None) -> Trial | None:
        return Trial(**t) if t else None

    methods = {name: MethodResult(m["method"], trial(m["best"]), trial(m["closest"]),
                                  [Trial(**t) for t in m["trials"]], m["note"], m["seconds"])
               for name, m in data["methods"].items()}
    return ModelResult(**{**data, "methods": methods})


def _cell(res: MethodResult, original: int) -> str:
    if res.best is not None:
        t = res.best
        return f"{t.bytes:,} ({original / t.bytes:.2f}×) {t.agreement:.2%}"
    if res.closest is not None:
        t = res.closest
        return f"never: best {t.agreement:.2%} ({t.setting}, {t.bytes:,})"
    return ("fails" if "fails" in res.note else res.note.split(":")[0]) or "n/a"


def markdown(results: list[ModelResult], methods: tuple[str, ...], target: float) -> str:
    """The tables: sizes (ratio to the .onnx, agreement) and the chosen settings."""
    def title(m: str) -> str:
        return METHOD_TITLES.get(m, m)

    head = "| model | .onnx bytes | " + " | ".join(title(m) for m in methods) + " |"
    rule = "|:---|---:|" + "---:|" * len(methods)
    rows = [head, rule]
    for r in results:
        name = r.model + ("" if r.kind == "corpus" else " *")
        rows.append(f"| {name} | {r.original_bytes:,} | " + " | ".join(
            _cell(r.methods[m], r.original_bytes) if m in r.methods else "not run"
            for m in methods) + " |")
    settings = ["", "Setting chosen (smallest file at the target) and trials run:", "",
                "| model | " + " | ".join(title(m) for m in methods) + " |",
                "|:---|" + "---:|" * len(methods)]
    for r in results:
        cells = []
        for m in methods:
            res = r.methods.get(m, MethodResult(m))
            chosen = res.best.setting if res.best else "—"
            cells.append(f"{chosen} ({len(res.trials)})" if res.trials else "—")
        settings.append(f"| {r.model} | " + " | ".join(cells) + " |")
    notes = sorted({f"{title(m)}: {r.methods[m].note}" for r in results for m in methods
                    if m in r.methods and r.methods[m].note and m != "int8"})
    int8 = [f"{r.model}: {r.methods['int8'].note}" for r in results
            if "int8" in r.methods and r.methods["int8"].note]
    legend = [
        "",
        f"Smallest file whose task agreement with the original on held-out real inputs is "
        f"≥ {target:.1%}: bytes (ratio .onnx / file) agreement. * = a model nothing was tuned "
        "on. \"never\": no setting on the grid reached the target; the best agreement seen.",
    ] + [f"- {n}" for n in notes] + ([f"- ORT int8: {'; '.join(int8)}"] if int8 else [])
    return "\n".join(rows + legend + settings)


def ablation_table(results: list[ModelResult], target: float) -> str:
    """Issue 10's ablation: per model the smallest file at ≥ ``target`` of each column of
    :data:`ABLATION` (bytes), NNCodec's smallest (with or without dependent quantization),
    the last column's ratio to it and the .onnx's ratio to the last column, then the encode
    time and decode speed of each column's file."""
    def best(r: ModelResult, method: str) -> Trial | None:
        res = r.methods.get(method)
        return res.best if res else None

    def size(t: Trial | None) -> str:
        return f"{t.bytes:,}" if t else "never"

    titles = [title for _, title, _ in ABLATION]
    rows = ["| model | " + " | ".join(titles) + " | NNCodec best | ÷ NNCodec | .onnx ÷ file |",
            "|:---|" + "---:|" * (len(titles) + 3)]
    speeds = ["| model | " + " | ".join(titles) + " |", "|:---|" + "---:|" * len(titles)]
    ratios = []
    for r in results:
        trials = [best(r, name) for name, _, _ in ABLATION]
        nncodec = min(filter(None, (best(r, m) for m in ABLATION_METHODS)),
                      key=lambda t: t.bytes, default=None)
        passing = [t for t in trials if t]
        smallest = min(passing, key=lambda t: t.bytes) if passing else None
        share = f"{smallest.bytes / nncodec.bytes:.2f}" if smallest and nncodec else "—"
        ratio = f"{r.original_bytes / smallest.bytes:.2f}×" if smallest else "—"
        if smallest:
            ratios.append(r.original_bytes / smallest.bytes)
        rows.append(f"| {r.model} | " + " | ".join(size(t) for t in trials)
                    + f" | {size(nncodec)} | {share} | {ratio} |")
        speeds.append(f"| {r.model} | " + " | ".join(
            f"{t.encode_seconds:.0f} s, {t.decode_mbps:.0f} MB/s" if t and t.decode_mbps
            else "—" for t in trials) + " |")
    mean = sum(ratios) / len(ratios) if ratios else math.nan
    legend = [f"Smallest file at ≥ {target:.1%} held-out agreement (bytes), each column "
              "adding one technique; ÷ NNCodec and .onnx ÷ file are of the smallest column. "
              f"Mean .onnx ÷ file: {mean:.2f}×.", "",
              "Encode time (wall) and decode speed (float32 MB of weights per CPU-second, "
              "`onnxz.load`) of each column's file:"]
    return "\n".join([*rows, "", *legend, "", *speeds])


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("models", nargs="*", help=f"default: all ({', '.join(tasks.TASKS)})")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--target", type=float, default=TARGET,
                        help="agreement to reach (default 0.995)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write all results as JSON")
    parser.add_argument("--fidelity-spec", action="append", default=[], metavar="MODEL=SPEC",
                        help="the --fidelity spec for MODEL (default: the task's own)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="an extra column: onnxz.save keyword arguments (JSON object)")
    parser.add_argument("--ablation", action="store_true",
                        help="issue 10's ablation: each technique added in turn, next to "
                             "NNCodec (sets the methods and variants; table at the end)")
    parser.add_argument("--workdir", type=Path, help="keep the packed files here")
    parser.add_argument("--table", type=Path, metavar="JSON",
                        help="print the table of an earlier --json file; run nothing")
    parser.add_argument("--reuse", type=Path, metavar="JSON",
                        help="columns of the methods not run now are taken from this earlier "
                             "--json file (their notes say so)")
    args = parser.parse_args(argv)
    if args.table:
        results = [load_result(r) for r in json.loads(args.table.read_text())]
        shown = tuple(m for m in results[0].methods) if results else METHODS
        print(markdown(results, shown, args.target))
        if args.ablation:
            print("\n" + ablation_table(results, args.target))
        return 0
    for item in args.fidelity_spec:
        name, _, spec = item.partition("=")
        if not spec or name not in tasks.TASKS:
            parser.error(f"--fidelity-spec {item!r}: expected MODEL=SPEC with a known MODEL")
        FIDELITY_SPECS[name] = spec
    for item in args.variant:
        name, _, text = item.partition("=")
        try:
            kwargs = json.loads(text)
        except json.JSONDecodeError as e:
            parser.error(f"--variant {item!r}: {e}")
        if not name or not isinstance(kwargs, dict):
            parser.error(f"--variant {item!r}: expected NAME=JSON object")
        VARIANTS[name] = kwargs
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.ablation:
        VARIANTS.update({name: kwargs for name, _, kwargs in ABLATION if kwargs})
        methods = tuple(name for name, _, kwargs in ABLATION if not kwargs) + ABLATION_METHODS
    methods += tuple(VARIANTS)
    unknown = [m for m in methods if m not in METHODS and m not in VARIANTS] + [
        n for n in args.models if n not in tasks.TASKS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if not 0 < args.target <= 1:
        parser.error("--target must be in (0, 1]")
    selected = [tasks.get(n) for n in (args.models or tasks.TASKS)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        for task in selected:
            workdir = (args.workdir or Path(tmp)) / task.name
            workdir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            results.append(run_model(task, methods, workdir, args.target))
            log(f"{task.name}: done in {time.perf_counter() - start:.0f} s")
            if args.json:  # after every model, so that a long run leaves what it measured
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
            log("table so far:\n" + markdown(results, methods, args.target))
    if args.reuse:
        results, methods = reuse(results, methods, args.reuse)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(markdown(results, methods, args.target))
    if args.ablation:
        print("\n" + ablation_table(results, args.target))
    return 0


def reuse(results: list[ModelResult], methods: tuple[str, ...], earlier: Path
          ) -> tuple[list[ModelResult], tuple[str, ...]]:
    """``results`` completed with the methods of an earlier ``--json`` run that were not run
    now (models of that run only); the reused columns' notes name the file."""
    before = {r.model: r for r in map(load_result, json.loads(earlier.read_text()))}
    added: list[str] = []
    for r in results:
        for name, res in getattr(before.get(r.model), "methods", {}).items():
            if name not in methods:
                res.note = "; ".join(filter(None, [res.note, f"from {earlier.name}"]))
                r.methods[name] = res
                if name not in added:
                    added.append(name)
    order = [m for m in METHODS if m in methods or m in added]
    return results, tuple(order + [m for m in methods + tuple(added) if m not in order])


if __name__ == "__main__":
    sys.exit(main())
