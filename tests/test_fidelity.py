"""Fidelity targets (parsing, checks against the model's outputs) and the evidence that
decides which outputs are class scores."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from models import classifier_heads, mlp

import onnxz
from onnxz.cli import main
from onnxz.fidelity import Criterion, Fidelity
from onnxz.outputs import class_evidence


def test_parse_round_trips_and_names_outputs():
    target = Fidelity.parse(" top1[logits] >= 0.99 ,snr>=25, max_abs<=1e-3,exact>=1")
    assert [str(c) for c in target.criteria] == [
        "top1[logits]>=0.99", "snr>=25", "max_abs<=0.001", "exact>=1"]
    assert target.criteria[0] == Criterion("top1", 0.99, "logits")
    assert Fidelity.parse(str(target)) == target


def test_an_output_named_with_commas_can_be_named():
    # openWakeWord's custom models name their class scores with a JSON object
    name = '{"1": "1_minute_timer", "2": "5_minute_timer"}'
    target = Fidelity.parse(f"top1[{name}]>=0.99, snr>=25")
    assert target.criteria == (Criterion("top1", 0.99, name), Criterion("snr", 25.0))
    assert Fidelity.parse(str(target)) == target


@pytest.mark.parametrize("text, message", [
    ("", "empty fidelity target"),
    ("accuracy>=0.9", "unknown metric 'accuracy'"),
    ("top1>0.9", "expected top1>=VALUE"),
    ("max_abs>=0.1", "expected max_abs<=VALUE"),
    ("snr>=high", "'high' is not a number"),
    ("top1>=1.5", "a fraction in [0, 1]"),
    ("snr>=nan", "finite"),
    ("top1>=0.9,top1>=0.8", "top1 is given twice"),
    (">=3", "expected METRIC>=VALUE"),
    ("snr>=30,", "expected METRIC>=VALUE"),
])
def test_malformed_targets_are_one_line_errors(text, message):
    with pytest.raises(onnxz.TargetSpecError, match=message.replace("[", r"\[")):
        Fidelity.parse(text)


@pytest.fixture
def heads(tmp_path):
    path = tmp_path / "heads.onnx"
    path.write_bytes(classifier_heads().SerializeToString())
    onnxz.save(path, tmp_path / "heads.onnxz", lossless=True)
    return path, tmp_path / "heads.onnxz"


def test_class_scores_come_from_graph_and_data_evidence_not_shape(heads):
    report = onnxz.verify(*heads)
    reasons = {m.name: m.class_scores for m in report.outputs}
    assert reasons == {"logits": "feeds ArgMax", "probs": "Softmax output",
                       "label": "class numbers an in-graph ArgMax makes",
                       "manual": "rows sum to 1", "hidden": None}
    by_name = {m.name: m for m in report.outputs}
    assert by_name["hidden"].top1 is None and by_name["probs"].top1 == 1.0
    assert by_name["probs"].top5 == 1.0 and by_name["label"].exact == 1.0
    assert ("class scores: logits (feeds ArgMax), label (class numbers an in-graph ArgMax "
            "makes), probs (Softmax output)") in report.table()


def test_named_class_outputs_and_unknown_names(heads):
    report = onnxz.verify(*heads, class_outputs=["hidden"])
    assert {m.name: m.class_scores for m in report.outputs}["hidden"] == "named by the caller"
    with pytest.raises(onnxz.TargetSpecError, match="no such output"):
        onnxz.verify(*heads, class_outputs=["nope"])


def test_criteria_that_apply_to_no_output_are_errors(tmp_path):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp().SerializeToString())
    onnxz.save(path, tmp_path / "mlp.onnxz", lossless=True)
    with pytest.raises(onnxz.TargetSpecError, match="no output 'logits'"):
        onnxz.verify(path, tmp_path / "mlp.onnxz", None, "snr[logits]>=20")
    # y [N, 10] comes from a MatMul and its rows do not sum to 1: not class scores
    with pytest.raises(onnxz.TargetSpecError, match="--class-output"):
        onnxz.verify(path, tmp_path / "mlp.onnxz", None, "top1>=0.9")
    # a named output that is not class scores is said to be not class scores
    with pytest.raises(onnxz.TargetSpecError, match="output 'y' is not class scores"):
        onnxz.verify(path, tmp_path / "mlp.onnxz", None, "top1[y]>=0.9")
    result = CliRunner().invoke(main, ["verify", str(path), str(tmp_path / "mlp.onnxz"),
                                       "--fidelity", "top1[y]>=0.9", "--class-output", "y"])
    assert result.exit_code == 0, result.output


def test_exact_counts_whole_samples(heads):
    original, packed = heads
    lossy = packed.with_name("lossy.onnxz")
    onnxz.save(original, lossy, step_rel=2.0)
    x = np.random.default_rng(0).standard_normal((40, 1, 32)).astype(np.float32)
    report = onnxz.verify(original, lossy, {"x": x}, "exact[label]>=1")
    label = {m.name: m for m in report.outputs}["label"]
    top1 = {m.name: m for m in report.outputs}["logits"].top1
    assert label.exact == pytest.approx(top1)  # one row per sample here
    assert label.exact < 1 and not report.passed
    assert report.failures[0].metric == "exact" and "exact-sample fraction" in report.table()


def test_cli_fidelity_excludes_the_minimums(heads):
    original, packed = heads
    result = CliRunner().invoke(main, ["verify", str(original), str(packed), "--fidelity",
                                       "snr>=30", "--min-snr", "10"])
    assert result.exit_code == 2 and "--fidelity replaces --min-snr" in result.output
    bad = CliRunner().invoke(main, ["verify", str(original), str(packed), "--fidelity",
                                    "top3>=0.9"])
    assert bad.exit_code == 2 and bad.output.startswith("onnxz: error: ")


def test_output_names_are_evidence_too():
    from onnxz.outputs import class_evidence

    model = mlp()
    assert class_evidence(model) == {}
    model.graph.node[-1].output[0] = model.graph.output[0].name = "output_logits"
    assert class_evidence(model)["output_logits"].reason == "named 'output_logits'"


def test_ctc_on_samples_longer_than_its_limit_fails_plainly(heads, monkeypatch):
    """``ctc`` keeps every sample's path: past CTC_MAX_ROWS rows a sample gets no figure,
    and a ctc criterion then fails in verify (never passes unjudged) and is a one-line
    target error in pack, before any work."""
    original, packed = heads
    x = {"x": np.random.default_rng(1).standard_normal((4, 1, 32)).astype(np.float32)}
    assert onnxz.verify(original, packed, x, "ctc[logits]>=0.99").passed
    monkeypatch.setattr("onnxz.verifier.CTC_MAX_ROWS", 0)
    monkeypatch.setattr("onnxz.ratecontrol.objective.CTC_MAX_ROWS", 0)
    report = onnxz.verify(original, packed, x, "ctc[logits]>=0.99")
    assert not report.passed and report.failures[0].metric == "ctc_rows"
    assert "ctc judges samples of up to 0 rows" in report.table()
    with pytest.raises(onnxz.TargetSpecError, match="ctc judges samples of up to 0 rows"):
        onnxz.save(original, packed.with_name("ctc.onnxz"), fidelity="ctc[logits]>=0.99",
                   inputs=x)
    assert not packed.with_name("ctc.onnxz").exists()


def _one_logit(sigmoid: bool = False, vector: bool = False):
    """The MLP cut to one output column: y [N, 1], a yes/no logit (or its Sigmoid); with
    ``vector``, the Sigmoid's probabilities squeezed to y [N]."""
    model = mlp()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    w2.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w2)[:, :1].copy(), "w2"))
    if sigmoid:
        model.graph.node[-1].output[0] = "z"
        model.graph.node.append(onnx.helper.make_node("Sigmoid", ["z"], ["p" if vector else "y"]))
    if vector:
        axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
        model.graph.initializer.append(axes)
        model.graph.node.append(onnx.helper.make_node("Squeeze", ["p", "axes"], ["y"]))
        del model.graph.output[0].type.tensor_type.shape.dim[1]
    else:
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    return model


@pytest.mark.parametrize("sigmoid, vector", [(False, False), (True, False), (True, True)])
def test_a_named_one_column_output_is_a_yes_no_per_row(tmp_path, sigmoid, vector):
    # flashvad's speech_logits [batch, 1], akiki's speech probability [chunks]: ranked over
    # one column, top-1 was 1 on any file (a coarse one whose logits changed sign included)
    # and a search's margins were NaN
    model = _one_logit(sigmoid, vector)
    evidence = class_evidence(model, ["y"])["y"]
    assert evidence.binary and evidence.log_domain != sigmoid
    path = tmp_path / "one.onnx"
    path.write_bytes(model.SerializeToString())
    coarse = tmp_path / "coarse.onnxz"
    onnxz.save(path, coarse, step_rel=1.0)
    x = np.random.default_rng(0).standard_normal((200, 1, 32)).astype(np.float32)
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    packed = onnxz.inference_session(coarse)
    threshold = 0.5 if sigmoid else 0.0
    kept = np.mean([(original.run(None, {"x": s})[0] > threshold)
                    == (packed.run(None, {"x": s})[0] > threshold) for s in x])
    assert kept < 1
    report = onnxz.verify(path, coarse, {"x": x}, class_outputs=["y"])
    assert {m.name: m.top1 for m in report.outputs}["y"] == pytest.approx(kept)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN margins warned from numpy
        onnxz.save(path, tmp_path / "y.onnxz", fidelity="top1[y]>=0.99", inputs={"x": x},
                   class_outputs=["y"])
    assert onnxz.verify(path, tmp_path / "y.onnxz", {"x": x}, "top1[y]>=0.99",
                        class_outputs=["y"]).passed
