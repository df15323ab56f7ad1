"""onnxz sweep: real file sizes, fidelity by evaluate() or verify, Pareto front, best point,
parallel and Dask runs that agree, resuming an interrupted sweep."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from models import matmul

import onnxz
from onnxz.analysis.sweep import (
    DEFAULT_METHODS,
    METHODS,
    Method,
    SweepError,
    load_evaluate,
    methods_named,
    sweep,
)
from onnxz.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits_cnn.onnx"
EVAL = EXAMPLES / "digits_eval.py"
SMALL = (
    Method("midtread", "midtread", "deadzone", "step_rel", (1 / 16, 1.0, 4.0),
           (("deadzone", 0.5),)),
    Method("mulaw", "μ-law μ=255", "mulaw", "bits", (2, 6), (("mu", 255.0),)),
    Method("minifloat", "minifloat", "minifloat", "bits", (4,)),
    Method("global-midrise", "global midrise", "deadzone", "bits", (5,),
           (("deadzone", 0.0), ("global_range", True))),
)


def comparable(result) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "seconds"} for p in result.points]


@pytest.fixture(scope="module")
def serial():
    return sweep(DIGITS, evaluate=EVAL, methods=SMALL, workers=1)


def test_points_are_real_files_and_the_best_command_reproduces_it(serial, tmp_path):
    assert len(serial.points) == 7 and not any("error" in p for p in serial.points)
    assert serial.reference == pytest.approx(0.9822, abs=1e-4)
    for i, p in enumerate(serial.points):
        out = tmp_path / f"{i}.onnxz"
        args = shlex.split(p["command"])[2:]
        args[args.index("-o") + 1] = str(out)
        result = CliRunner().invoke(main, ["pack", *args])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size == p["file_bytes"], p["label"]
        assert load_evaluate(str(EVAL))(onnxz.inference_session(out)) == p["scores"]["score"]
        assert p["loss"] == pytest.approx(serial.reference - p["scores"]["score"])
        assert p["good"] == (p["loss"] <= 0.01)
    coarse = next(p for p in serial.points if p["settings"] == {"deadzone": 0.5,
                                                                "step_rel": 4.0})
    assert not coarse["good"] and coarse["loss"] > 0.3  # step 4: accuracy collapses


def test_pareto_front_and_best(serial):
    front = serial.pareto
    sizes = [p["file_bytes"] for p in front]
    assert sizes == sorted(sizes)
    assert all(a["fidelity"] < b["fidelity"] for a, b in itertools.pairwise(front))
    for p in serial.measured:  # nothing off the front beats a front point on both axes
        assert not any(p["file_bytes"] < f["file_bytes"] and p["fidelity"] > f["fidelity"]
                       for f in front)
    best = serial.best
    assert best is not None and best["good"]
    assert best["file_bytes"] == min(p["file_bytes"] for p in serial.measured if p["good"])
    assert best in front or any(f["file_bytes"] <= best["file_bytes"] for f in front)
    data = serial.to_dict()
    assert set(data) >= {"points", "pareto", "best"} and data["best"] == best
    json.dumps(data)  # JSON-safe
    table = serial.table()
    assert "best: " in table and best["command"] in table and "μ-law" in table


def test_parallel_workers_give_identical_results(serial):
    parallel = sweep(DIGITS, evaluate=EVAL, methods=SMALL, workers=2)
    assert comparable(parallel) == comparable(serial)


def test_dask_local_cluster_gives_identical_results(serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = sweep(DIGITS, evaluate=EVAL, methods=SMALL,
                        scheduler=cluster.scheduler_address)
    assert comparable(on_dask) == comparable(serial)


def test_an_interrupted_sweep_resumes_from_its_results_file(serial, tmp_path):
    results = tmp_path / "r.json"
    seen = []

    def stop_after_two(done, total, point):
        seen.append(point["label"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(DIGITS, evaluate=EVAL, methods=SMALL, workers=1, results=results,
              progress=stop_after_two)
    saved = json.loads(results.read_text())
    assert len(saved["points"]) == 2
    again = []
    resumed = sweep(DIGITS, evaluate=EVAL, methods=SMALL, workers=1, results=results,
                    progress=lambda d, n, p: again.append((d, n, p["label"])))
    assert [d for d, _, _ in again] == [3, 4, 5, 6, 7] and not set(seen) & {x for *_, x in again}
    assert comparable(resumed) == comparable(serial)
    assert json.loads(results.read_text())["points"] == resumed.points
    with pytest.raises(SweepError, match="another sweep"):
        sweep(DIGITS, evaluate=EVAL, methods=SMALL, workers=1, results=results, tolerance=0.5)


def test_verify_judges_when_there_is_no_evaluation(tmp_path):
    result = sweep(DIGITS, methods=SMALL[:1], workers=1)
    fine, _, coarse = result.points
    assert fine["good"] and fine["scores"]["verdict"] == "passed"
    assert not coarse["good"] and fine["fidelity"] > coarse["fidelity"]
    assert result.best["settings"]["step_rel"] == 1 / 16 and result.best["loss"] is None


def test_inputs_the_original_does_not_run_on_are_an_error_before_the_points(tmp_path):
    """Inputs that fit the declared shape ([N, K]) but not the weights (K = 31, not 32):
    every point's verify failed on the original, and the sweep reported 'none good enough:
    try smaller steps' with exit 0; a packed model that fails is a failed point."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).laplace(0, 0.05, (32, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [numpy_helper.from_array(weight, "w")])
    model = tmp_path / "m.onnx"
    model.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 1, 31), np.float32))
    with pytest.raises(SweepError, match="original model failed to run on sample 0"):
        sweep(model, inputs=tmp_path / "bad.npz", methods=SMALL[:1], workers=1)
    result = CliRunner().invoke(main, ["sweep", str(model), "--inputs", str(tmp_path / "bad.npz"),
                                       "--methods", "midtread", "--results",
                                       str(tmp_path / "r.json"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "r.json").exists()


def test_a_model_with_nothing_to_quantize_is_an_error_before_the_points(tmp_path):
    """Its weights all below the quantizers' 1024 elements (or integers): every point was
    the lossless file, and the sweep reported them as 19 points."""
    import numpy as np

    model = tmp_path / "m.onnx"
    model.write_bytes(matmul(np.random.default_rng(0).laplace(0, 0.05, (16, 16)).astype(
        np.float32)).SerializeToString())
    with pytest.raises(SweepError, match="no float weight tensor of ≥ 1024 elements"):
        sweep(model, methods=SMALL[:1], workers=1)
    result = CliRunner().invoke(main, ["sweep", str(model), "--methods", "midtread", "-q",
                                       "--results", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--plot", "{tmp}/rd.txt"], "rd.txt: not a figure format"),
    (["--plot", "{tmp}/file/rd.png"], "no folder"),
    (["--results", "{tmp}/file/r.json"], "no folder"),
])
def test_plot_and_results_paths_are_checked_before_the_points(tmp_path, args, message):
    """A --plot of an unknown format failed only after every point had run (matplotlib's
    ValueError), a --results in no folder after the first (naming the temporary file)."""
    pytest.importorskip("matplotlib")
    (tmp_path / "file").write_text("a file, not a folder")
    results = ["--results", str(tmp_path / "r.json")] if "--results" not in args else []
    result = CliRunner().invoke(main, ["sweep", str(DIGITS), "--methods", "midtread", "-q",
                                       *[a.format(tmp=tmp_path) for a in args], *results])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "r.json").exists()


def test_bad_evaluation_files_are_clear_errors(tmp_path):
    for source, message in (("x = 1\n", "defines no function evaluate"),
                            ("import no_such_module_here\n", "failed to load"),
                            ("def evaluate(session):\n    return float('nan')\n", "finite"),
                            ("def evaluate(session):\n    raise KeyError('boom')\n", "boom"),
                            ("import sys\nsys.exit(0)\n", r"failed to load \(it called sys"),
                            ("import sys\ndef evaluate(session):\n    sys.exit(3)\n",
                             r"evaluate\(\) failed \(it called sys.exit\(3\)\)")):
        path = tmp_path / "e.py"
        path.write_text(source)
        load_evaluate.cache_clear()
        with pytest.raises(SweepError, match=message):
            sweep(DIGITS, evaluate=path, methods=SMALL[:1], workers=1)
    with pytest.raises(onnxz.InputNotFoundError):
        sweep(DIGITS, evaluate=tmp_path / "missing.py", methods=SMALL[:1], workers=1)
    with pytest.raises(ValueError, match="unknown method nope"):
        methods_named(["midtread", "nope"])
    assert [m.name for m in METHODS][:2] == ["midrise", "midtread"]
    assert "--global-range" in SMALL[-1].pack_arguments(5)
    assert not any(m.name.startswith("global") for m in DEFAULT_METHODS)


def test_cli_sweep_writes_table_json_plot_and_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["sweep", str(DIGITS), "--eval", str(EVAL), "--methods", "midtread,minifloat",
            "--workers", "1"]
    result = runner.invoke(main, [*args, "--plot", "rd.png", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["points"]) == 19 + 8 and data["best"]["method"] in ("midtread",
                                                                        "minifloat")
    assert "[27/27]" in result.stderr and "results: digits_cnn.sweep.json" in result.stderr
    assert Path("rd.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(Path("digits_cnn.sweep.json").read_text())["points"] == data["points"]
    again = runner.invoke(main, [*args, "-q"])  # everything resumed: nothing to run
    assert again.exit_code == 0 and "best: " in again.stdout and again.stderr == ""
    for bad, message in ((["--eval", str(EVAL), "--inputs", "x.npz"], "not both"),
                         (["--tolerance", "0.1"], "--eval"),
                         (["--methods", "wavelets"], "unknown method"),
                         (["--eval", "missing.py"], "missing.py")):
        result = runner.invoke(main, ["sweep", str(DIGITS), *bad])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
