"""Bias correction: which tensors absorb a layer's quantization shift, the input means it is
computed from, and what it does to the outputs and the written file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from models import relu_convnet, written
from onnx import helper, numpy_helper

import onnxz
from onnxz.cli import main
from onnxz.policy import PackOptions
from onnxz.ratecontrol.correction import find_layers, input_means
from onnxz.ratecontrol.search import Workbench
from onnxz.ratecontrol.tensors import Setting
from onnxz.verifier import ReferenceRun
from onnxz.walker import resolve


def images(n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs with a positive mean per channel, as images have."""
    rng = np.random.default_rng(seed)
    return {"x": (np.abs(rng.standard_normal((n, 1, 3, 12, 12))) + 0.5).astype(np.float32)}


def names(model: onnx.ModelProto, path) -> str:
    return resolve(model, path).name


def test_each_kind_of_bias_is_found_with_its_scale():
    model = relu_convnet()
    found = {(names(model, layer.weight), names(model, layer.target), layer.form): layer.scale
             for layer in find_layers(model)}
    assert set(found) == {("conv1_w", "conv1_b", "conv"), ("conv2_w", "bn_bias", "conv"),
                          ("fc_w", "fc_b", "matmul"), ("out_w", "out_c", "gemm_t")}
    values = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    np.testing.assert_allclose(found["conv2_w", "bn_bias", "conv"],
                               values["bn_scale"] / np.sqrt(values["bn_var"] + 1e-5))
    assert found["conv1_w", "conv1_b", "conv"] == 1.0


def test_a_bias_or_weight_with_another_user_is_left_alone():
    model = relu_convnet()
    graph = model.graph
    graph.node.append(helper.make_node("Mul", ["conv1_b", "conv1_b"], ["b_squared"]))
    graph.node.append(helper.make_node("Identity", ["fc_w"], ["fc_w_copy"]))
    graph.output.extend([onnx.ValueInfoProto(name="b_squared"),
                         onnx.ValueInfoProto(name="fc_w_copy")])
    targets = {names(model, layer.target) for layer in find_layers(model)}
    assert targets == {"bn_bias", "out_c"}


def test_input_means_are_each_layers_input_averaged_per_channel():
    model = relu_convnet()
    samples = images(6)
    reference = ReferenceRun(model, samples)
    layers = find_layers(model)
    means = input_means(model, layers, reference)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in ("r1", "f", "r3"))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [session.run(["r1", "f", "r3"], {"x": x}) for x in samples["x"]]
    np.testing.assert_allclose(means["x"], samples["x"].mean(axis=(0, 1, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(means["r1"], np.mean([r[0].mean(axis=(0, 2, 3)) for r in runs], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(means["f"], np.mean([r[1][0] for r in runs], 0), rtol=1e-5)
    np.testing.assert_allclose(means["r3"], np.mean([r[2][0] for r in runs], 0), rtol=1e-5)


def output_error(correct: bool) -> tuple[float, float]:
    """Mean and mean-square output error of relu_convnet with every weight at a coarse step."""
    bench = Workbench(relu_convnet(), images(), PackOptions(), None, correct_biases=correct)
    coarse = {c.path: Setting.step(1.0) for c in bench.candidates if not c.auxiliary}
    errors = np.concatenate([out[0] - ref[0] for out, ref in zip(
        bench.run(coarse), bench.reference.outputs, strict=True)])
    bench.restore()
    return float(np.abs(errors.mean(axis=0)).mean()), float((errors ** 2).mean())


def test_corrected_biases_remove_the_mean_shift_of_coarse_weights():
    plain_mean, plain_mse = output_error(correct=False)
    corrected_mean, corrected_mse = output_error(correct=True)
    assert corrected_mean < 0.25 * plain_mean
    assert corrected_mse < 0.5 * plain_mse


def test_the_file_stores_the_corrected_biases_and_reproduces_what_was_measured(tmp_path):
    model, samples = relu_convnet(), images()
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    sizes = {}
    for correct in (True, False):
        out = tmp_path / f"c{correct}.onnxz"
        info = onnxz.save(model, out, fidelity="snr>=20", inputs=samples,
                          options=PackOptions(correct_biases=correct))
        assert onnxz.verify(model, out, samples, "snr>=20").passed  # as rate control measured
        unpacked = {t.name: numpy_helper.to_array(t) for t in onnxz.load(out).graph.initializer}
        moved = max(np.abs(unpacked[n] - original[n]).max()
                    for n in ("conv1_b", "fc_b", "out_c"))  # bn_bias: also folded
        assert (moved > 1e-3) == correct  # rounding alone moves them by far less
        assert not unpacked["bn_mean"].any()  # folded, and the correction leaves it so
        sizes[correct] = info.file_bytes
    assert sizes[True] < sizes[False]


def test_cli_corrects_biases_only_when_asked_and_says_so(tmp_path):
    model, calib = written(tmp_path, relu_convnet(), images())
    runner = CliRunner()
    common = ["pack", str(model), "--fidelity", "snr>=20", "--inputs", str(calib), "--force"]
    asked = runner.invoke(main, [*common, "-o", str(tmp_path / "a.onnxz"), "--bias-correction"])
    assert asked.exit_code == 0, asked.output
    assert "biases corrected for their layer's mean shift: 4" in asked.output
    plain = runner.invoke(main, [*common, "-o", str(tmp_path / "b.onnxz")])
    assert plain.exit_code == 0 and "biases corrected" not in plain.output
    assert onnxz.info(tmp_path / "a.onnxz").rate_control["corrected_biases"] == 4
    wrong = runner.invoke(main, ["pack", str(model), "--lossless", "--bias-correction"])
    assert wrong.exit_code == 2 and "--bias-correction" in wrong.output


def test_generated_inputs_never_correct_biases(tmp_path):
    info = onnxz.save(relu_convnet(), tmp_path / "g.onnxz", fidelity="snr>=20",
                      options=PackOptions(correct_biases=True))
    assert "corrected_biases" not in info.rate_control


def test_a_model_whose_mean_probe_cannot_run_packs_without_correction(tmp_path, monkeypatch):
    import onnxz.ratecontrol.correction as correction
    from onnxz.verifier import ModelFailed

    def failing(*args):
        raise ModelFailed("GlobalAveragePool: not implemented for this type")

    monkeypatch.setattr(correction, "input_means", failing)
    info = onnxz.save(relu_convnet(), tmp_path / "f.onnxz", fidelity="snr>=20",
                      inputs=images(), correct_biases=True)
    assert info.rate_control["met"] and "corrected_biases" not in info.rate_control
