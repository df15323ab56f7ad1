"""Batch normalizations re-expressed without their statistics: which ones, the values, the
unchanged outputs, and where packing does it (a lossy default or fidelity target) or not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from models import relu_convnet, written
from onnx import helper

import onnxz
from onnxz.cli import main
from onnxz.ratecontrol.statistics import fold_statistics
from onnxz.verifier import session_from_proto
from onnxz.walker import put_payload, resolve

BN_TENSORS = ("bn_scale", "bn_bias", "bn_mean", "bn_var")


def images(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": (np.abs(rng.standard_normal((n, 1, 3, 12, 12))) + 0.5).astype(np.float32)}


def folded_names(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {resolve(model, path).name: values
            for path, values in fold_statistics(model).items()}


def outputs(model: onnx.ModelProto, samples: dict[str, np.ndarray]) -> np.ndarray:
    session = session_from_proto(model)
    return np.concatenate([session.run(None, {"x": x})[0] for x in samples["x"]])


def test_the_statistics_become_constants_and_the_outputs_stay():
    model = relu_convnet()
    folded = fold_statistics(model)
    named = folded_names(model)
    assert sorted(named) == sorted(BN_TENSORS)
    assert not named["bn_mean"].any()
    assert (named["bn_var"] == np.float32(1 - 1e-5)).all()
    assert all(v.dtype == np.float32 and v.shape == (16,) for v in named.values())
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for path, values in folded.items():
        put_payload(resolve(changed, path), values)
    before, after = outputs(model, images()), outputs(changed, images())
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())


def shared_mean(model):
    model.graph.node.append(helper.make_node("Neg", ["bn_mean"], ["negated"]))
    model.graph.output.append(onnx.ValueInfoProto(name="negated"))


def training_mode(model):
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))


def running_mean_output(model):
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.output.append("running_mean")


def scale_from_input(model):
    scale = next(t for t in model.graph.initializer if t.name == "bn_scale")
    model.graph.initializer.remove(scale)
    model.graph.input.append(helper.make_tensor_value_info("bn_scale", onnx.TensorProto.FLOAT,
                                                           [16]))


def zero_variance(model):
    var = next(t for t in model.graph.initializer if t.name == "bn_var")
    put_payload(var, np.zeros(16, np.float32))
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("epsilon", 0.0))


@pytest.mark.parametrize("change", [shared_mean, training_mode, running_mean_output,
                                    scale_from_input, zero_variance])
def test_a_normalization_that_cannot_be_re_expressed_is_left_alone(change):
    model = relu_convnet()
    change(model)
    assert fold_statistics(model) == {}


def bn_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name in BN_TENSORS}


@pytest.mark.parametrize("target", [{}, {"fidelity": "snr>=20"}, {"max_size": "9KB"}])
def test_rate_control_stores_them_as_constants(tmp_path, target):
    model, samples = relu_convnet(), images()
    out = tmp_path / "m.onnxz"
    written = onnxz.save(model, out, inputs=samples, **target)
    assert written.rate_control["folded_normalizations"] == 1
    values = bn_values(onnxz.load(out))
    assert not values["bn_mean"].any()
    assert np.ptp(values["bn_var"]) == 0
    if "max_size" in target:  # sized with the folded values: the budget holds
        assert written.rate_control["met"] and written.file_bytes <= 9000
    else:
        assert onnxz.verify(model, out, samples, "snr>=20").passed


def test_lossless_and_a_fixed_step_keep_the_statistics(tmp_path):
    model = relu_convnet()
    original = bn_values(model)
    for name, kwargs in (("exact", {"lossless": True}), ("step", {"step_rel": 1 / 16})):
        onnxz.save(model, tmp_path / f"{name}.onnxz", **kwargs)
        kept = bn_values(onnxz.load(tmp_path / f"{name}.onnxz"))
        assert all((kept[k] == v).all() for k, v in original.items()), name


def test_float16_statistics_fold_in_float16():
    model = relu_convnet()
    for t in model.graph.initializer:
        if t.name in BN_TENSORS:
            t.CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(t).astype(np.float16), t.name))
    original = {k: v.astype(np.float64) for k, v in bn_values(model).items()}
    named = folded_names(model)
    assert all(v.dtype == np.float16 for v in named.values())
    scale = original["bn_scale"] / np.sqrt(original["bn_var"] + 1e-5)
    np.testing.assert_allclose(named["bn_scale"], scale, rtol=2**-11)
    np.testing.assert_allclose(named["bn_bias"], original["bn_bias"] - original["bn_mean"] * scale,
                               rtol=2**-11, atol=2**-14)


def test_pack_says_how_many_it_stored_without_statistics(tmp_path):
    model_path, inputs_path = written(tmp_path, relu_convnet(), images())
    result = CliRunner().invoke(main, ["pack", str(model_path), "-o", str(tmp_path / "m.onnxz"),
                                       "--fidelity", "snr>=20", "--inputs", str(inputs_path)])
    assert result.exit_code == 0, result.output
    assert "batch normalizations stored without their statistics: 1" in result.output
