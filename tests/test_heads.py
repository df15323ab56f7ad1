"""Output-side calibration-aware rounding of classifier heads (onnxz.ratecontrol.heads)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from models import relu_convnet
from onnx import TensorProto, helper, numpy_helper

import onnxz
from onnxz.codecs.deadzone import dequantize, quantize
from onnxz.policy import PackOptions
from onnxz.ratecontrol.feedback import round_with_feedback, upper_inverse_factor
from onnxz.ratecontrol.heads import HeadLayer, HeadMoments, find_head_layers, output_moments
from onnxz.ratecontrol.search import Workbench
from onnxz.verifier import ReferenceRun
from onnxz.walker import resolve


def pooled_classifier(outputs: int = 48, inputs: int = 12, classes: int = 3,
                      seed: int = 0) -> onnx.ModelProto:
    """x[N,K,1,1] -> Conv 1×1 (O×K, the head) -> HardSwish -> Mul 0.5 -> Flatten -> MatMul
    (O×C) -> Add -> Softmax: a pooled image classifier's last layers (PP-LCNet's)."""
    rng = np.random.default_rng(seed)
    tensors = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in (
        ("head_w", rng.standard_normal((outputs, inputs, 1, 1)) / np.sqrt(inputs)),
        ("half", np.array([0.5])),
        ("cls_w", rng.standard_normal((outputs, classes))),
        ("cls_b", rng.standard_normal(classes)))]
    nodes = [helper.make_node("Conv", ["x", "head_w"], ["z"]),
             helper.make_node("HardSwish", ["z"], ["a"]),
             helper.make_node("Mul", ["a", "half"], ["m"]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("MatMul", ["f", "cls_w"], ["logits"]),
             helper.make_node("Add", ["logits", "cls_b"], ["biased"]),
             helper.make_node("Softmax", ["biased"], ["p"])]
    graph = helper.make_graph(
        nodes, "pooled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs, 1, 1])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, classes])], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def pooled_features(n: int, inputs: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((n, 1, inputs, 1, 1))
            .astype(np.float32)}


def test_a_head_is_found_through_elementwise_ops_to_its_classifier():
    (head,) = find_head_layers(pooled_classifier())
    assert (head.form, head.source, head.value) == ("conv", "x", "z")
    assert head.ops == ("HardSwish", "Mul", "Flatten") and head.centred
    assert head.classifier.shape == (48, 3)
    np.testing.assert_allclose(head.classifier.sum(axis=1), 0, atol=1e-12)  # centred
    # a MatMul head whose bias is added before its Relu, read by a Gemm (transB), no Softmax
    model = relu_convnet()
    (head,) = find_head_layers(model)
    assert resolve(model, head.weight).name == "fc_w"
    assert (head.form, head.ops, head.centred, head.classifier.shape) == (
        "matmul", ("Add", "Relu"), False, (32, 10))


def test_no_head_where_the_path_to_the_output_is_not_elementwise_then_linear():
    model = pooled_classifier()
    model.graph.node.append(helper.make_node("Identity", ["a"], ["a_too"]))  # a second reader
    model.graph.output.append(onnx.ValueInfoProto(name="a_too"))
    assert find_head_layers(model) == []
    model = pooled_classifier()
    hardswish = next(n for n in model.graph.node if n.op_type == "HardSwish")
    hardswish.op_type = "Softmax"  # mixes the channels: not elementwise
    assert find_head_layers(model) == []


def test_the_exact_logit_error_is_what_onnxruntime_computes():
    model, samples = pooled_classifier(), pooled_features(16)
    (head,) = find_head_layers(model)
    moments = output_moments(model, ReferenceRun(model, samples), [head])[head.weight]
    assert isinstance(moments, HeadMoments) and moments.rows == 8 and moments.enough
    w = numpy_helper.to_array(resolve(model, head.weight)).reshape(-1).astype(np.float64)
    changed = dequantize(quantize(w, 0.3, 0.5), 0.3, 0.5)
    error = head.matrix(w) - head.matrix(changed)

    def logits(weights: np.ndarray) -> np.ndarray:
        edited = onnx.ModelProto()
        edited.CopyFrom(model)
        tensor = resolve(edited, head.weight)
        tensor.CopyFrom(numpy_helper.from_array(weights.reshape(tuple(tensor.dims))
                                                .astype(np.float32), tensor.name))
        edited.graph.output[0].name = "biased"  # the logits, before the Softmax
        session = ort.InferenceSession(edited.SerializeToString())
        out = np.concatenate([session.run(None, {"x": x})[0] for x in samples["x"][8:]])
        return out - out.mean(axis=1, keepdims=True)

    expected = float(np.sum((logits(changed) - logits(w)) ** 2))
    assert np.isclose(moments.error(error, 1), expected, rtol=1e-4)


def test_output_side_feedback_keeps_the_grid_and_lowers_the_logit_error_on_unseen_samples():
    model = pooled_classifier(outputs=64, inputs=16, classes=2)
    (head,) = find_head_layers(model)
    seen, unseen = pooled_features(60, 16, seed=2), pooled_features(60, 16, seed=3)
    w = numpy_helper.to_array(resolve(model, head.weight)).reshape(-1).astype(np.float64)
    step = 0.25
    g = output_moments(model, ReferenceRun(model, seen), [head])[head.weight]
    judge = output_moments(model, ReferenceRun(model, unseen), [head])[head.weight]
    fed = round_with_feedback(head.matrix(w), upper_inverse_factor(g.first + g.second,
                                                                   HeadLayer.damping), step, 0.5)
    plain = head.matrix(dequantize(quantize(w, step, 0.5), step, 0.5))
    np.testing.assert_allclose(fed / step, np.round(fed / step), atol=1e-9)  # on the grid
    for half in (0, 1):
        assert judge.error(head.matrix(w) - fed, half) < 0.5 * judge.error(
            head.matrix(w) - plain, half)


def test_samples_count_by_their_margin_only_where_the_head_decides_classes():
    model, samples = pooled_classifier(), pooled_features(32)
    (head,) = find_head_layers(model)
    reference = ReferenceRun(model, samples)
    alike = output_moments(model, reference, [head])[head.weight]
    assert all(np.array_equal(w, np.ones(16)) for w in alike.weights)
    decided = output_moments(model, reference, [head], frozenset({"p"}))[head.weight]
    logits = np.log(np.concatenate([outputs[0] for outputs in reference.outputs]))
    top = np.sort(logits, axis=1)
    margins = top[:, -1] - top[:, -2]  # in logits: a flip needs a change this large
    floor = np.quantile(margins, 0.1)
    expected = 1 / np.maximum(margins, floor) ** 2
    np.testing.assert_allclose(np.concatenate(decided.weights), expected, rtol=1e-6)
    assert expected.max() > 10 * expected.min()  # the near ties count most


def test_calibrated_rounding_feeds_a_head_back_from_its_output_side(tmp_path):
    model, samples = pooled_classifier(outputs=64, inputs=16), pooled_features(96, 16)
    bench = Workbench(model, samples, PackOptions(), None, calibrated_rounding=True)
    (path,) = bench.feedback  # 16 input columns, one row per sample: plenty for the input
    assert resolve(model, path).name == "head_w"  # side (it gains nothing here: the inputs
    assert isinstance(bench.feedback[path].layer, HeadLayer)  # are white); the output side
    out = tmp_path / "h.onnxz"
    info = onnxz.save(model, out, fidelity="top1>=0.99", inputs=samples,
                      calibrated_rounding=True)
    assert info.rate_control["calibrated_rounding"] == 1
    assert onnxz.verify(model, out, samples, "top1>=0.99").passed
