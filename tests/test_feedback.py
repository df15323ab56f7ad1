"""Calibration-aware rounding: the layers it applies to, the inputs as each weight matrix
sees them, the rounding itself, and what it does to rate control's files."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from models import constants_and_if, relu_convnet, written
from onnx import TensorProto, helper, numpy_helper

import onnxz
from onnxz.cli import main
from onnxz.codecs.deadzone import to_float64
from onnxz.policy import PackOptions
from onnxz.ratecontrol.feedback import (
    ErrorFeedback,
    round_with_feedback,
    upper_inverse_factor,
)
from onnxz.ratecontrol.layers import (
    InputMoments,
    LinearLayer,
    find_linear_layers,
    inline_taken_branches,
    input_moments,
    output_error,
)
from onnxz.ratecontrol.search import Workbench
from onnxz.ratecontrol.tensors import Setting
from onnxz.verifier import ReferenceRun
from onnxz.walker import resolve


def correlated_images(n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """Images whose channels and neighbouring pixels move together, as real ones do."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 1, 1, 6, 6))
    smooth = np.repeat(np.repeat(base, 2, axis=3), 2, axis=4)  # 12×12, 2×2 blocks alike
    mix = np.array([1.0, 0.8, 0.6]).reshape(1, 1, 3, 1, 1)
    x = smooth * mix + 0.05 * rng.standard_normal((n, 1, 3, 12, 12)) + 0.5
    return {"x": x.astype(np.float32)}


def test_the_linear_layers_are_found_with_their_geometry():
    model = relu_convnet()
    found = {resolve(model, layer.weight).name: layer for layer in find_linear_layers(model)}
    assert set(found) == {"conv1_w", "conv2_w", "fc_w", "out_w"}
    assert (found["conv1_w"].form, found["conv1_w"].pads, found["conv1_w"].columns) == (
        "conv", (1, 1, 1, 1), 27)
    assert (found["fc_w"].form, found["fc_w"].columns) == ("matmul", 16)
    assert (found["out_w"].form, found["out_w"].columns) == ("gemm_t", 32)


def test_a_shared_weight_or_a_same_padded_conv_is_left_alone():
    model = relu_convnet()
    model.graph.node.append(helper.make_node("Identity", ["fc_w"], ["fc_w_copy"]))
    model.graph.output.append(onnx.ValueInfoProto(name="fc_w_copy"))
    next(n for n in model.graph.node if n.output[0] == "c1").attribute.append(
        helper.make_attribute("auto_pad", "SAME_UPPER"))
    names = {resolve(model, layer.weight).name for layer in find_linear_layers(model)}
    assert names == {"conv2_w", "out_w"}


def if_samples(flags: list[bool]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((len(flags), 8, 4)).astype(np.float32)
    return {"x": x, "flag": np.array(flags)}


def test_a_branch_taken_on_every_sample_shows_its_layers_inputs():
    model = constants_and_if()
    reference = ReferenceRun(model, if_samples([True] * 6))
    inlined = inline_taken_branches(model, reference)
    flat = inlined.model
    assert inlined.graphs == (("graph",), ("graph", "node", 3, "attribute", 1, "g"))  # then
    assert not any(node.op_type == "If" for node in flat.graph.node)
    assert len(model.graph.node) == 4  # the model itself is left as it was
    layers = find_linear_layers(model, inlined)
    assert {resolve(model, layer.weight).name for layer in layers} == {"w0", "then_w"}
    found = input_moments(flat, reference, layers)
    then = next(layer for layer in layers if resolve(model, layer.weight).name == "then_w")
    x = np.concatenate([feed["x"] for feed in reference.feeds]).astype(np.float64)
    # then_branch's MatMul reads h = x @ w0 (reshaped), and H is summed over its rows
    w0 = numpy_helper.to_array(next(resolve(model, layer.weight) for layer in layers
                                    if resolve(model, layer.weight).name == "w0"))
    rows = x @ w0.astype(np.float64)
    np.testing.assert_allclose(found[then.weight].first[0] + found[then.weight].second[0],
                               rows.T @ rows, rtol=1e-4)
    # outputs of the flat model are the model's
    for a, b in zip(reference.stream(flat), reference.outputs, strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


def test_a_branch_that_changes_between_samples_is_not_followed():
    model = constants_and_if()
    inlined = inline_taken_branches(model, ReferenceRun(model, if_samples([True, False] * 3)))
    assert inlined.graphs == (("graph",),)
    assert sum(node.op_type == "If" for node in inlined.model.graph.node) == 1


def gates_reordered_lstm(slice_axis: int = 0, extra_reader: bool = False) -> onnx.ModelProto:
    """x[T,1,4] -> LSTM (hidden 3, initial state h0) whose W is weight "w_ih" [12,4] with
    its gates reordered by Slice + Concat and a direction axis added by Unsqueeze, as
    PyTorch exports do; R is the initializer "R"."""
    rng = np.random.default_rng(5)
    ints = {f"c{v}": numpy_helper.from_array(np.array([v], dtype=np.int64), f"c{v}")
            for v in (0, 1, 3, 6, 12)}
    nodes = [
        helper.make_node("Slice", ["w_ih", "c0", "c6", f"c{slice_axis}"], ["s0"]),
        helper.make_node("Slice", ["w_ih", "c6", "c12", f"c{slice_axis}"], ["s1"]),
        helper.make_node("Concat", ["s1", "s0"], ["wc"], axis=0),
        helper.make_node("Unsqueeze", ["wc", "c0"], ["W"]),
        helper.make_node("LSTM", ["x", "W", "R", "", "", "h0"], ["y"], hidden_size=3),
    ]
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["s0"], ["s0_copy"]))
    graph = helper.make_graph(
        nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 4]),
                        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, 3])],
        [onnx.ValueInfoProto(name="y")] + ([onnx.ValueInfoProto(name="s0_copy")]
                                           if extra_reader else []),
        [numpy_helper.from_array(rng.standard_normal((12, 4)).astype(np.float32), "w_ih"),
         numpy_helper.from_array(rng.standard_normal((1, 12, 3)).astype(np.float32), "R"),
         *ints.values()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_recurrent_layers_weights_are_found_with_the_inputs_they_read():
    w, r = find_linear_layers(gates_reordered_lstm())
    assert (w.weight, w.form, w.source, w.previous, w.weight_shape) == (
        ("graph", "initializer", 0), "gemm_t", "x", "", (12, 4))  # through the reordering
    x = np.arange(20, dtype=np.float32).reshape(5, 1, 4)
    np.testing.assert_array_equal(w.input_rows(x, 100)[0], x.reshape(5, 4))
    # R reads the state before each step: the initial one, then the outputs but the last
    assert (r.weight, r.source, r.previous, r.weight_shape) == (
        ("graph", "initializer", 1), "h0", "y", (12, 3))
    h0, y = np.ones((1, 1, 3)), np.arange(15.0).reshape(5, 1, 1, 3)
    np.testing.assert_array_equal(r.input_rows(h0, 100, y)[0],
                                  np.concatenate([h0.reshape(1, 3), y[:4].reshape(4, 3)]))


def test_a_reordering_that_cuts_the_input_axis_or_another_reader_is_left_alone():
    names = [find_linear_layers(gates_reordered_lstm(**kwargs)) for kwargs in (
        {"slice_axis": 1}, {"extra_reader": True})]
    assert [[layer.source for layer in found] for found in names] == [["h0"], ["h0"]]


@pytest.mark.parametrize(("groups", "strides", "pads", "dilations"), [
    (1, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, (2, 1), (0, 1, 1, 0), (1, 2)),
    (4, (1, 2), (2, 0, 0, 1), (2, 1)),
])
def test_input_rows_times_the_weight_matrix_are_the_conv_outputs(groups, strides, pads,
                                                                   dilations):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 4 // groups, 3, 2)).astype(np.float32)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=groups, strides=strides,
                            pads=pads, dilations=dilations)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(w, "w")])
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    layer = LinearLayer(("w",), "conv", "x", w.shape, groups, strides, pads, dilations)
    rows = layer.input_rows(x, limit=10**6)  # every window, in (sample, output pixel) order
    matrix = layer.matrix(w.astype(np.float64))  # (groups, rows, columns)
    outputs = np.einsum("grc,gpc->pgr", matrix, rows).reshape(rows.shape[1], -1)
    np.testing.assert_allclose(outputs, y.transpose(0, 2, 3, 1).reshape(-1, 8), atol=1e-4)


def test_input_rows_of_a_matmul_are_its_tokens_and_a_limit_picks_them_evenly():
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    layer = LinearLayer(("w",), "matmul", "x", (3, 4))
    np.testing.assert_array_equal(layer.input_rows(x, 100)[0], x.reshape(10, 3))
    np.testing.assert_array_equal(layer.input_rows(x, 4)[0], x.reshape(10, 3)[[0, 3, 6, 9]])
    w = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(layer.weight_of(layer.matrix(w)), w.reshape(-1))


def moments(x: np.ndarray) -> np.ndarray:
    return (x.T @ x)[None]


def test_feedback_keeps_the_grid_and_lowers_the_output_error_on_unseen_inputs():
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((4, 16))
    def inputs(n):
        return rng.standard_normal((n, 4)) @ mixing + 0.1 * rng.standard_normal((n, 16))
    w = rng.standard_normal((1, 32, 16))
    step = 0.25
    fed = round_with_feedback(w, upper_inverse_factor(moments(inputs(2000))), step, 0.5)
    levels = fed / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-9)  # the same grid
    plain = np.round(w / step) * step
    unseen = moments(inputs(2000))
    assert output_error(w - fed, unseen) < 0.3 * output_error(w - plain, unseen)
    # and the same number of levels in use: the bits stay those of the step
    assert abs(np.abs(np.round(levels)).mean() - np.abs(np.round(w / step)).mean()) < 0.1


def test_feedback_is_declined_where_it_does_not_hold_up():
    rng = np.random.default_rng(3)
    layer = LinearLayer(("w",), "matmul", "x", (16, 32))
    w = rng.standard_normal(16 * 32)
    white = InputMoments(moments(rng.standard_normal((4000, 16))),
                         moments(rng.standard_normal((4000, 16))), rows=4000)
    assert ErrorFeedback.measure(layer, w, 1.0, white, [0.5, 1.0]) is None  # no correlation to use
    mixing = rng.standard_normal((3, 16))
    correlated = InputMoments(*(moments(rng.standard_normal((4000, 3)) @ mixing
                                        + 0.05 * rng.standard_normal((4000, 16)))
                                for _ in range(2)), rows=4000)
    found = ErrorFeedback.measure(layer, w, 1.0, correlated, [0.5, 1.0])
    assert found is not None and found.gain(0.5) < 0.5 and found.gain(0.6) == found.gain(0.5)
    # levels of 2**21 or more at the finest step: the writer could not re-quantize them exactly
    assert ErrorFeedback.measure(layer, w, 1.0, correlated, [1e-7, 0.5]) is None
    correlated.rows = 2 * 16 - 1  # too few rows per column: H would be fitted, not measured
    assert ErrorFeedback.measure(layer, w, 1.0, correlated, [0.5, 1.0]) is None


def test_feedback_that_fits_the_samples_it_saw_far_better_is_declined():
    rng = np.random.default_rng(3)
    layer = LinearLayer(("w",), "matmul", "x", (16, 32))
    w = rng.standard_normal(16 * 32)
    mixing = rng.standard_normal((3, 16))

    def h(noise: float) -> np.ndarray:
        return moments(rng.standard_normal((4000, 3)) @ mixing
                       + noise * rng.standard_normal((4000, 16)))

    alike = ErrorFeedback.measure(layer, w, 1.0, InputMoments(h(0.05), h(0.05), 4000), [0.5])
    assert alike is not None and alike.gain(0.5) < 0.3
    # held out, the error still falls to about 0.6 of plain rounding's, but on the samples
    # rounded with to about 0.2: checks on those would promise too much
    unlike = InputMoments(h(0.05), h(1.0), 4000)
    assert ErrorFeedback.measure(layer, w, 1.0, unlike, [0.5]) is None


def output_mse(rounding: bool) -> float:
    """relu_convnet's output error with every weight at one step, on its samples."""
    bench = Workbench(relu_convnet(), correlated_images(), PackOptions(), None,
                      calibrated_rounding=rounding)
    bench.use_feedback()
    coarse = {c.path: Setting.step(0.5) for c in bench.candidates if not c.auxiliary}
    errors = np.concatenate([out[0] - ref[0] for out, ref in zip(
        bench.run(coarse), bench.reference.outputs, strict=True)])
    fed = sum(c.feedback is not None for c in bench.candidates)
    bench.restore()
    return float((errors ** 2).mean()), fed


def test_rounding_with_feedback_lowers_the_output_error_at_the_same_steps():
    plain, none = output_mse(rounding=False)
    fed, used = output_mse(rounding=True)
    assert none == 0 and used >= 2
    assert fed < 0.7 * plain


def test_the_file_stores_the_fed_back_levels_and_reproduces_what_was_measured(tmp_path):
    model, samples = relu_convnet(), correlated_images()
    out = tmp_path / "r.onnxz"
    info = onnxz.save(model, out, fidelity="snr>=25", inputs=samples, calibrated_rounding=True)
    assert info.rate_control["calibrated_rounding"] >= 2
    assert onnxz.verify(model, out, samples, "snr>=25").passed  # as rate control measured
    bench = Workbench(model, samples, PackOptions(), None, calibrated_rounding=True)
    bench.use_feedback()
    unpacked = onnxz.load(out)
    checked = 0
    for c in bench.candidates:
        entry = next((e for e in info.tensors if e.name == c.name), None)  # None: in the graph
        if c.feedback is None or entry is None or entry.step is None:
            continue
        stored = to_float64(numpy_helper.to_array(resolve(unpacked, c.path)).reshape(-1),
                            c.etype)
        step = entry.step
        np.testing.assert_allclose(stored / step, np.round(stored / step), atol=1e-6)
        plain = np.round(to_float64(c.values, c.etype) / step) * step
        assert not np.array_equal(stored, plain)  # other levels than plain rounding's
        checked += 1
    assert checked >= 2


def test_cli_rounds_with_feedback_only_when_asked_and_says_so(tmp_path):
    model, calib = written(tmp_path, relu_convnet(), correlated_images())
    runner = CliRunner()
    common = ["pack", str(model), "--fidelity", "snr>=25", "--inputs", str(calib), "--force"]
    asked = runner.invoke(main, [*common, "-o", str(tmp_path / "a.onnxz"),
                                 "--calibrated-rounding"])
    assert asked.exit_code == 0, asked.output
    assert "rounded with error feedback through their inputs" in asked.output
    plain = runner.invoke(main, [*common, "-o", str(tmp_path / "b.onnxz")])
    assert plain.exit_code == 0 and "error feedback" not in plain.output
    wrong = runner.invoke(main, ["pack", str(model), "--step-rel", "0.1",
                                 "--calibrated-rounding"])
    assert wrong.exit_code == 2 and "--calibrated-rounding" in wrong.output


@pytest.mark.parametrize("args, message", [
    (["--calibrated-rounding"], "need --fidelity and --inputs"),
    (["--bias-correction", "--inputs", "{calib}"], "need --fidelity and --inputs"),
    (["--calibrated-rounding", "--fidelity", "snr>=25"], "need --fidelity and --inputs"),
    (["--calibrated-rounding", "--fidelity", "snr>=25", "--inputs", "{calib}",
      "--max-size", "40KB"], "does not apply with --max-size"),
    (["--target-snr", "30", "--inputs", "{calib}"], "--target-snr runs no model"),
    (["--target-snr", "30", "--class-output", "y"], "--target-snr runs no model"),
])
def test_cli_refuses_rate_options_its_mode_would_ignore(tmp_path, args, message):
    """The CLI's rate-control options that the mode asked for does not use were ignored in
    silence (the default with --calibrated-rounding --inputs wrote the default's bytes)."""
    model, calib = written(tmp_path, relu_convnet(), correlated_images())
    args = [a.format(calib=calib) for a in args]
    result = CliRunner().invoke(main, ["pack", str(model), "-o", str(tmp_path / "o.onnxz"),
                                       *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "o.onnxz").exists()


def test_generated_inputs_and_size_targets_never_round_with_feedback(tmp_path):
    info = onnxz.save(relu_convnet(), tmp_path / "g.onnxz", fidelity="snr>=20",
                      calibrated_rounding=True)
    assert "calibrated_rounding" not in info.rate_control
    info = onnxz.save(relu_convnet(), tmp_path / "s.onnxz", max_size=40000,
                      inputs=correlated_images(), calibrated_rounding=True)
    assert "calibrated_rounding" not in info.rate_control


def test_the_blocked_loop_rounds_as_one_column_at_a_time_does():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 40)) @ rng.standard_normal((40, 300))
    factor = upper_inverse_factor(moments(x))
    w = rng.standard_normal((2, 5, 300))
    step = 0.3

    def column_by_column(w):
        w, out = w.copy(), np.empty_like(w)
        for i in range(w.shape[2]):
            out[:, :, i] = np.round(w[:, :, i] / step) * step
            error = (w[:, :, i] - out[:, :, i]) / factor[:, i, i][:, None]
            w[:, :, i + 1:] -= error[:, :, None] * factor[:, None, i, i + 1:]
        return out

    np.testing.assert_allclose(round_with_feedback(w, np.repeat(factor, 2, axis=0), step, 0.5),
                               column_by_column(w), atol=1e-9)


def matmul_model(dtype: int) -> onnx.ModelProto:
    """x[N,16] -> Cast(dtype) -> MatMul with a weight (16, 32) of ``dtype`` -> Cast -> y."""
    w = np.random.default_rng(5).standard_normal((16, 32))
    w = w.astype(np.float16 if dtype == TensorProto.FLOAT16 else np.float32)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xc"], to=dtype),
         helper.make_node("MatMul", ["xc", "w"], ["yc"]),
         helper.make_node("Cast", ["yc"], ["y"], to=TensorProto.FLOAT)],
        "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_float16_weights_are_rounded_plainly():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((24, 200, 3)) @ rng.standard_normal((3, 16))
    samples = {"x": (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)}
    fed = {dtype: Workbench(matmul_model(dtype), samples, PackOptions(), None,
                            calibrated_rounding=True).feedback
           for dtype in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    assert len(fed[TensorProto.FLOAT]) == 1 and not fed[TensorProto.FLOAT16]


def test_the_layer_report_shows_each_layers_gains_and_verdict(tmp_path):
    import feedback_layers

    model, calib = written(tmp_path, relu_convnet(), correlated_images())
    listed = feedback_layers.layer_rows(onnx.load(model), str(calib), [0.25, 0.125])
    heads = [row for row in listed if row["form"] == "head"]  # fed back from the output side
    assert [row["name"] for row in heads] == ["fc_w"] and "gains" in heads[0]
    rows = {row["name"]: row for row in listed if row["form"] != "head"}
    assert set(rows) == {"conv1_w", "conv2_w", "fc_w", "out_w"}
    fed = [row for row in rows.values() if row["fed_back"]]
    assert fed and all(row["gains"]["1/8"]["held_out"] < 0.9 and not row["why_not"]
                       for row in fed)
    assert all(row["why_not"] for row in rows.values() if not row["fed_back"])

