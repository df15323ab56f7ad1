"""tools/lossless_floor.py: the ideal code lengths it reports."""

from __future__ import annotations

import lossless_floor
import numpy as np
import onnx
from onnx import helper, numpy_helper


def test_only_the_low_mantissa_bits_remain_when_everything_else_is_constant():
    words = np.full(4096, np.float32(1.5)).view(np.uint32)
    words = words | np.random.default_rng(0).integers(0, 1 << 16, 4096, dtype=np.uint32)
    order0, previous = lossless_floor.weight_floor(words)
    assert order0 == previous == 16 * 4096


def test_an_exponent_that_follows_its_neighbour_costs_less_in_context():
    # exponents alternate between two values: 1 bit each at order 0, none given the previous
    values = np.where(np.arange(8192) % 2 == 0, np.float32(1.0), np.float32(4.0))
    order0, previous = lossless_floor.weight_floor(values.view(np.uint32))
    assert previous == 16 * 8192  # each exponent known from the one before
    assert order0 == 8192 + 16 * 8192


def test_model_floor_reads_every_float32_weight_of_1024_or_more(tmp_path):
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.laplace(0, 0.05, (64, 32)).astype(np.float32), "w")
    small = numpy_helper.from_array(np.ones(8, np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])],
                              [big, small])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    floor = lossless_floor.model_floor(path)
    assert floor["weights"] == 64 * 32
    assert 16 < floor["order0_bits_per_weight"] < 32
