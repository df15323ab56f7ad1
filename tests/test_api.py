"""The Python API on small built models: round trips, graph fidelity, where weights live."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from models import (
    DEADZONE_LEVELS,
    big_conv,
    carried_weights_loop,
    constants_and_if,
    mixed_dtypes,
    mlp,
    tiny_transformer,
)

import onnxz
from onnxz.walker import iter_tensor_slots, payload_type, read_payload


def payloads(model: onnx.ModelProto) -> dict:
    out = {}
    for slot in iter_tensor_slots(model):
        etype = payload_type(slot.tensor)
        if etype is not None:
            out[slot.path] = read_payload(slot.tensor, etype).tobytes()
    return out


def without_payloads(model: onnx.ModelProto) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for slot in iter_tensor_slots(copy):
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            slot.tensor.ClearField(name)
    return copy.SerializeToString(deterministic=True)


@pytest.mark.parametrize("build", [mlp, constants_and_if, big_conv, mixed_dtypes, tiny_transformer])
def test_lossless_roundtrip_is_bit_exact_and_graph_identical(tmp_path, build):
    model = build()
    path = tmp_path / "m.onnxz"
    onnxz.save(model, path, lossless=True)
    decoded = onnxz.load(path)
    assert payloads(decoded) == payloads(model)
    assert without_payloads(decoded) == without_payloads(model)


def test_graph_metadata_roundtrips_exactly(tmp_path):
    model = mlp()
    onnxz.save(model, tmp_path / "m.onnxz")
    decoded = onnxz.load(tmp_path / "m.onnxz")
    assert decoded.metadata_props == model.metadata_props
    assert decoded.graph.doc_string == "a tiny MLP"
    assert decoded.opset_import == model.opset_import
    assert decoded.producer_name == "onnxz-tests"


def test_save_does_not_modify_the_callers_model(tmp_path):
    model = mlp()
    before = model.SerializeToString()
    onnxz.save(model, tmp_path / "m.onnxz")
    assert model.SerializeToString() == before


def test_lossy_default_quantizes_weights_only(tmp_path):
    info = onnxz.save(big_conv(channels=128), tmp_path / "c.onnxz",  # conv_b stored
                      options=onnxz.PackOptions(inline_max_bytes=128))
    codecs = {t.name: t.codec for t in info.tensors}
    assert codecs["conv_w"] in DEADZONE_LEVELS and codecs["conv_b"] == "lossless"
    assert len(codecs) == 2
    weight = next(t for t in info.tensors if t.name == "conv_w")
    assert info.rate_control["mode"] == "default" and info.rate_control["met"]
    assert weight.sensitivity is not None and weight.bits_per_weight < 12


def test_small_payloads_stay_in_the_graph_as_a_decoder_gives_them(tmp_path):
    """A payload under ``inline_max_bytes`` (1024 bytes by default) is not stored in a chunk:
    the chunk's alignment, its index entry and its coding's set-up would cost more than zstd
    of the graph. Where the pack rounds the tensor, the graph holds the rounded values; random
    access reads it from the graph."""
    from onnxz.codecs.rounding import round_mantissa
    from onnxz.dtypes import BY_NAME
    from onnxz.policy import AUXILIARY_BITS

    model = big_conv()  # conv_b: 64 float32 values, 256 bytes
    bias = onnx.numpy_helper.to_array(model.graph.initializer[1])
    rounded = onnxz.save(model, tmp_path / "r.onnxz", target_snr=40)  # data-free rule
    assert [t.name for t in rounded.tensors] == ["conv_w"]
    with onnxz.open(tmp_path / "r.onnxz") as reader:
        kept = reader.tensor("conv_b")
    expected = round_mantissa(bias.reshape(-1), BY_NAME["float32"], AUXILIARY_BITS)
    np.testing.assert_array_equal(kept, expected.reshape(bias.shape))
    assert not np.array_equal(kept, bias)
    decoded = {t.name: t for t in onnxz.load(tmp_path / "r.onnxz").graph.initializer}
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(decoded["conv_b"]), kept)

    exact = onnxz.save(model, tmp_path / "l.onnxz", lossless=True)
    with onnxz.open(tmp_path / "l.onnxz") as reader:
        np.testing.assert_array_equal(reader.tensor("conv_b"), bias)
    every = onnxz.save(model, tmp_path / "s.onnxz", lossless=True,
                       options=onnxz.PackOptions(inline_max_bytes=0))
    assert [t.name for t in every.tensors] == ["conv_w", "conv_b"]
    assert exact.file_bytes < every.file_bytes


def test_weights_inside_if_branches_are_found_and_quantized(tmp_path):
    model = constants_and_if()
    info = onnxz.save(model, tmp_path / "if.onnxz",
                      options=onnxz.PackOptions(min_quantized_elements=64,
                                                      step_rel=onnxz.DEFAULT_STEP_REL,
                                                      inline_max_bytes=128))
    by_name = {t.name: t for t in info.tensors}
    assert by_name["then_w"].codec in DEADZONE_LEVELS
    assert by_name["else_w"].codec in DEADZONE_LEVELS
    assert by_name["w0"].codec in DEADZONE_LEVELS
    assert "shape" not in by_name or by_name["shape"].codec == "lossless"
    sess = onnxz.inference_session(tmp_path / "if.onnxz")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for flag in (True, False):
        feed = {"x": x, "flag": np.array(flag)}
        np.testing.assert_allclose(sess.run(None, feed)[0], ref.run(None, feed)[0],
                                   rtol=0.05, atol=1e-3)


def test_weights_a_loop_carries_unchanged_are_found_and_quantized(tmp_path):
    """tf2onnx carries a Keras LSTM's kernels through its Loop as state that the body passes
    on unchanged: they are weights (chars2vec's 1.3M were only rounded to 10 mantissa bits,
    2.34× for the model); the bias (read by an Add) and the state h are not."""
    model = carried_weights_loop()
    slots = {s.tensor.name: s.is_weight for s in iter_tensor_slots(model)}
    assert slots["w"] and not slots["b"]
    info = onnxz.save(model, tmp_path / "loop.onnxz",
                      options=onnxz.PackOptions(min_quantized_elements=64,
                                                step_rel=onnxz.DEFAULT_STEP_REL))
    by_name = {t.name: t for t in info.tensors}
    assert by_name["w"].codec in DEADZONE_LEVELS
    assert "b" not in by_name or by_name["b"].codec == "lossless"
    sess = onnxz.inference_session(tmp_path / "loop.onnxz")
    x = np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, want = sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0]
    assert 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2)) > 20


def test_float16_model_stays_float16(tmp_path):
    model = mlp(hidden=128, dtype=np.float16)
    onnxz.save(model, tmp_path / "h.onnxz", options=onnxz.PackOptions(min_quantized_elements=64,
                                                      step_rel=onnxz.DEFAULT_STEP_REL,
                                                      inline_max_bytes=128))
    decoded = onnxz.load(tmp_path / "h.onnxz")
    types = {t.name: t.data_type for t in decoded.graph.initializer}
    assert set(types.values()) == {onnx.TensorProto.FLOAT16}
    codecs = {t.codec for t in onnxz.info(tmp_path / "h.onnxz").tensors}
    quantized = codecs - {"lossless"}
    assert "lossless" in codecs and quantized and quantized <= DEADZONE_LEVELS


def test_explicit_quantizer_settings_are_recorded(tmp_path):
    info = onnxz.save(big_conv(), tmp_path / "c.onnxz", step_rel=0.05, deadzone=0.4)
    weight = next(t for t in info.tensors if t.codec in DEADZONE_LEVELS)
    assert (weight.step_rel, weight.deadzone) == (0.05, 0.4)


def test_coarser_step_gives_smaller_file_and_larger_error(tmp_path):
    model = big_conv(128)
    x = np.random.default_rng(1).standard_normal((1, 16, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = ref.run(None, {"x": x})[0]
    sizes, errors = [], []
    for step in (0.01, 0.1, 0.5):
        info = onnxz.save(model, tmp_path / f"{step}.onnxz", step_rel=step)
        out = onnxz.inference_session(tmp_path / f"{step}.onnxz").run(None, {"x": x})[0]
        sizes.append(info.file_bytes)
        errors.append(float(np.abs(out - expected).mean()))
    assert sizes == sorted(sizes, reverse=True)
    assert errors == sorted(errors)


def test_external_data_model_packs_and_unpacks(tmp_path):
    model = big_conv()
    expected = payloads(model)  # save_model below moves the payloads out of `model`
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, src, save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    onnxz.save(src, tmp_path / "ext.onnxz", lossless=True)
    onnxz.unpack(tmp_path / "ext.onnxz", tmp_path / "out.onnx", external_data=True)
    assert (tmp_path / "out.onnx.data").exists()
    reloaded = onnx.load(tmp_path / "out.onnx")
    assert payloads(reloaded) == expected
    onnxz.unpack(tmp_path / "ext.onnxz", tmp_path / "single.onnx")
    assert payloads(onnx.load(tmp_path / "single.onnx")) == expected


def test_info_is_dataclasses_with_totals(tmp_path):
    onnxz.save(mlp(), tmp_path / "m.onnxz", lossless=True)
    info = onnxz.info(tmp_path / "m.onnxz")
    assert isinstance(info, onnxz.ContainerInfo)
    assert all(isinstance(t, onnxz.TensorInfo) for t in info.tensors)
    assert info.version == "1.1"  # lossless weights use zstd planes, a format 1.1 method
    assert info.raw_tensor_bytes == sum(t.raw_bytes for t in info.tensors)
    assert info.to_dict()["tensors"][0]["name"] == info.tensors[0].name


def test_chunked_tensors_decode_identically(tmp_path):
    model = big_conv()
    onnxz.save(model, tmp_path / "a.onnxz", lossless=True,
               options=onnxz.PackOptions(chunk_elements=1000))
    info = onnxz.info(tmp_path / "a.onnxz")
    assert max(t.chunks for t in info.tensors) > 1
    assert payloads(onnxz.load(tmp_path / "a.onnxz")) == payloads(model)


def test_transformer_roles(tmp_path):
    model = tiny_transformer()
    info = onnxz.save(model, tmp_path / "t.onnxz",
                      options=onnxz.PackOptions(min_quantized_elements=64,
                                                      step_rel=onnxz.DEFAULT_STEP_REL,
                                                      inline_max_bytes=128))
    codecs = {t.name: t.codec for t in info.tensors}
    assert {codecs[n] for n in ("embedding", "wq", "wk", "wv", "wo")} <= DEADZONE_LEVELS
    assert codecs["ln_s"] == codecs["ln_b"] == "lossless"
    ids = np.random.default_rng(0).integers(0, 500, (2, 7)).astype(np.int64)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = ref.run(None, {"ids": ids})[0]
    out = onnxz.inference_session(tmp_path / "t.onnxz").run(None, {"ids": ids})[0]
    snr = 10 * np.log10((expected**2).sum() / ((expected - out) ** 2).sum())
    assert snr > 30


def test_weight_analysis_is_not_exponential_in_fan_out():
    """Each of 7 values is made by 30 Identity nodes from the previous one: 30^7 paths from
    the weight to its MatMul. The analysis (save, and unpack of any decoded graph) must look
    at each value once, not once per path."""
    from fuzzing import time_limit

    nodes, previous = [], "W"
    for depth in range(7):
        nodes += [onnx.helper.make_node("Identity", [previous], [f"v{depth}"])] * 30
        previous = f"v{depth}"
    nodes.append(onnx.helper.make_node("MatMul", ["X", previous], ["Y"]))
    w = onnx.numpy_helper.from_array(np.ones((8, 8), np.float32), "W")
    graph = onnx.helper.make_graph(nodes, "fan", [], [], [w])
    with time_limit(60):
        (slot,) = iter_tensor_slots(onnx.helper.make_model(graph))
    assert slot.is_weight


def test_info_tells_rounded_tensors_from_exact_ones(tmp_path):
    """A tensor rounded to fewer mantissa bits before lossless coding is recorded as such
    (``rounded_bits``; `onnxz info` shows ``m10`` in the step column), an exact one is not."""
    import onnx.helper as h
    from click.testing import CliRunner

    from onnxz.cli import main
    from onnxz.policy import AUXILIARY_BITS

    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["y"])], "g",
        [h.make_tensor_value_info("x", 1, [1, 64])], [h.make_tensor_value_info("y", 1, [1, 256])],
        [onnx.numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w"),
         onnx.numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b")])
    source = tmp_path / "m.onnx"
    source.write_bytes(h.make_model(graph).SerializeToString())
    rounded = onnxz.save(source, tmp_path / "r.onnxz", target_snr=40)
    assert {t.name: t.rounded_bits for t in rounded.tensors} == {"w": None, "b": AUXILIARY_BITS}
    assert {t.name: t.rounded_bits for t in onnxz.info(tmp_path / "r.onnxz").tensors} == {
        "w": None, "b": AUXILIARY_BITS}
    exact = onnxz.save(source, tmp_path / "l.onnxz", lossless=True)
    assert all(t.rounded_bits is None for t in exact.tensors)
    shown = CliRunner().invoke(main, ["info", str(tmp_path / "r.onnxz")])
    assert shown.exit_code == 0
    (bias_row,) = [line for line in shown.output.splitlines() if line.startswith("b ")]
    assert f"m{AUXILIARY_BITS}" in bias_row.split()
    assert "step mN: the values rounded to N mantissa bits" in shown.output


def test_import_onnxz_loads_its_names_on_first_use():
    """``import onnxz`` imports neither onnx nor numpy (the CLI's entry point must be quick
    to load, see onnxz.console); every public name loads from its module when used, and
    submodules stay reachable as attributes."""
    code = ("import sys, onnxz\n"
            "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime') if m in sys.modules))\n"
            "onnxz.save\n"
            "print('onnx' in sys.modules, onnxz.codecs.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split("\n")[:2] == ["[]", "True onnxz.codecs"], proc.stderr
    from onnxz import _HOMES
    assert set(onnxz.__all__) == {*_HOMES, "__version__"}
    for name in onnxz.__all__:
        assert getattr(onnxz, name) is not None
    assert set(onnxz.__all__) <= set(dir(onnxz))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        onnxz.nope  # noqa: B018
