"""tools/bench_coding.py: its measurements on small synthetic models (the corpus runs are
the bench itself)."""

from __future__ import annotations

import bench_coding
import numpy as np
import onnx.helper as h
import onnx.numpy_helper as nh
import pytest

import onnxz
from onnxz.codecs import TrellisCodec
from onnxz.dtypes import BY_NAME
from onnxz.ratecontrol import search


def matmul_model(seed: int = 0, shape: tuple[int, int] = (96, 64)):
    w = np.random.default_rng(seed).laplace(0, 0.05, shape).astype(np.float32)
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", 1, [1, shape[0]])],
                         [h.make_tensor_value_info("y", 1, [1, shape[1]])],
                         [nh.from_array(w, "w")])
    return h.make_model(graph)


def test_weight_ablation_finds_trellis_smaller_than_deadzone_at_every_snr():
    result = bench_coding.weight_ablation("m", matmul_model())
    assert result.weights == 96 * 64 and result.tensors == 1
    for dz, tr in zip(result.bits["deadzone"], result.bits["trellis"], strict=True):
        assert tr < 0.98 * dz
    table = bench_coding.weight_table([result])
    assert "| m | 6144 | 20 |" in table and "trellis" in table


def test_bits_at_interpolates_a_rate_snr_curve():
    curve = [(100.0, 20.0), (300.0, 40.0), (200.0, 30.0)]
    assert bench_coding.bits_at(curve, 25.0) == pytest.approx(150.0)


def test_bytes_at_output_snr_fits_a_line_and_refuses_outside_it():
    sweep = [(1000 + 40 * d + (7 if d % 2 else -7), float(d)) for d in range(20, 50, 3)]
    assert bench_coding.bytes_at_output_snr(sweep, 30.0) == pytest.approx(2200, abs=8)
    assert bench_coding.bytes_at_output_snr(sweep, 70.0) is None
    assert bench_coding.bytes_at_output_snr(sweep[:2], 25.0) is None


def test_bucket_tables_switch_off_and_back():
    x = np.random.default_rng(1).laplace(0, 1.0, 4000)
    f64 = BY_NAME["float64"]
    assert TrellisCodec(1 / 128).quantize(x, f64).buckets is not None
    with bench_coding.bucket_tables(False):
        assert TrellisCodec(1 / 128).quantize(x, f64).buckets is None
    assert TrellisCodec(1 / 128).quantize(x, f64).buckets is not None


def test_rate_control_grid_prices_every_method_in_order_and_restores():
    find = search.find_candidates
    with bench_coding.rate_control_grid(("deadzone", "trellis")):
        (c,) = search.find_candidates(matmul_model(), onnxz.PackOptions())
    assert search.find_candidates is find
    methods = {p.setting.method for p in c.points}
    assert methods == {"lossless", "deadzone", "trellis"}
    errors = [p.sse for p in c.points]
    assert errors == sorted(errors)


def test_nncodec_best_reads_a_bench_rate_result(tmp_path):
    path = tmp_path / "rate.json"
    path.write_text('[{"model": "m", "methods": {"nncodec": {"best": {"bytes": 900}}, '
                    '"nncodec-nodq": {"best": {"bytes": 800}}, "step": {"best": '
                    '{"bytes": 10}}, "int8": {"best": null}}}]')
    assert bench_coding.nncodec_best(path) == {"m": 800}
    assert bench_coding.nncodec_best(None) == {}
