"""The rate bench's measuring tools: calibration/held-out split, agreement rules, the step
sweep and the table (tools/tasks, tools/bench_rate.py). The bench itself runs models for
minutes and is not part of the suite (`make bench-rate`)."""

from __future__ import annotations

import bench_rate
import numpy as np
import pytest
from tasks.base import (
    Agreement,
    Detections,
    box_agreement,
    equal_agreement,
    fingerprint,
    iou_matrix,
    match_boxes,
    split,
)


def test_split_is_a_quarter_deterministic_and_disjoint():
    items = [f"item{i}" for i in range(403)]
    s = split(items)
    assert len(s.calibration) == 101 and len(s.heldout) == 302
    assert set(s.calibration).isdisjoint(s.heldout)
    assert sorted(s.calibration + s.heldout) == sorted(items)
    assert split(list(items)) == s
    assert s.calibration[:3] == ["item0", "item4", "item8"]


def test_equal_agreement_counts_equal_decisions():
    a = equal_agreement(["cat", "dog", "a b"], ["cat", "dog", "a  b"], "strings")
    assert (a.agreeing, a.total, a.fraction) == (2, 3, pytest.approx(2 / 3))
    assert str(a) == "66.67% (2/3 strings)"
    assert equal_agreement([np.int64(3)], [3]).fraction == 1.0
    assert Agreement(0, 0).fraction == 1.0
    with pytest.raises(ValueError, match="2 decisions for 3"):
        equal_agreement([1, 2, 3], [1, 2])


def test_iou_of_boxes():
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10],
                                                             [20, 20, 30, 30]]))
    assert iou[0] == pytest.approx([1.0, 50 / 150, 0.0])


def test_box_matching_is_one_to_one_by_class_and_iou():
    ref = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    # two reference boxes, one candidate: it can match only one of them
    assert match_boxes(ref, np.array([[0, 0, 10, 10]]), 0.5) == 1
    # a shifted box matches at 0.3 but not at 0.5 (IoU 1/3)
    assert match_boxes(ref[:1], np.array([[5, 0, 15, 10]]), 0.3) == 1
    assert match_boxes(ref[:1], np.array([[5, 0, 15, 10]]), 0.5) == 0
    # the same box with another class does not match
    assert match_boxes(ref[:1], ref[:1], 0.5, np.array([1]), np.array([2])) == 0
    # greedy by IoU: the best pair is taken first
    got = np.array([[1, 0, 11, 10], [0, 0, 10, 10]])
    assert match_boxes(np.array([[0, 0, 10, 10], [1, 0, 11, 10]]), got, 0.95) == 2


def test_box_agreement_pools_images_f1_style():
    box = np.array([[0, 0, 10, 10]])
    none = Detections(np.zeros((0, 4)), np.zeros(0, np.int64))
    one = Detections(box, np.array([0]))
    two = Detections(np.concatenate([box, box + 50]), np.array([0, 0]))
    assert box_agreement([one, none], [one, none], 0.5).fraction == 1.0
    # an extra box: 1 matched of mean(1, 2) boxes
    assert box_agreement([one], [two], 0.5).fraction == pytest.approx(2 / 3)
    # a lost box
    assert box_agreement([one, one], [one, none], 0.5).fraction == pytest.approx(2 / 3)
    # nothing detected by either model: nothing to disagree on
    assert box_agreement([none], [none], 0.5).fraction == 1.0


def test_fingerprint_sees_array_contents_inside_dataclasses():
    a = Detections(np.zeros((1, 4)), np.array([1]))
    b = Detections(np.zeros((1, 4)), np.array([2]))
    assert fingerprint([a]) == fingerprint([Detections(np.zeros((1, 4)), np.array([1]))])
    assert fingerprint([a]) != fingerprint([b])
    assert fingerprint(np.zeros(3, np.float32)) != fingerprint(np.zeros(3, np.float64))


def _fake(agreements: dict[int, float], calls: list[int]):
    def make(k: int) -> bench_rate.Trial:
        calls.append(k)
        return bench_rate.Trial(f"k{k}", 1000 - 10 * k, agreements.get(k, 0.0), 0, 0)
    return make


def test_sweep_goes_coarser_until_two_misses_in_a_row():
    calls: list[int] = []
    # passes up to k=3 with one noisy miss at k=1; k=4 and k=5 miss
    agreements = {0: 1.0, 1: 0.99, 2: 1.0, 3: 0.996, 4: 0.9, 5: 0.98, 6: 1.0}
    trials = bench_rate.sweep(_fake(agreements, calls), 0, -5, 10, 1, 0.995)
    assert calls == [0, 1, 2, 3, 4, 5]
    result = bench_rate._finish(bench_rate.MethodResult("step", trials=trials), 0.995)
    assert result.best.setting == "k3"


def test_sweep_goes_finer_when_the_start_misses_and_reports_never():
    calls: list[int] = []
    bench_rate.sweep(_fake({-4: 1.0, -2: 0.999}, calls), 0, -8, 10, 2, 0.995)
    assert calls == [0, -2, 2, 4]  # finer until -2 passes, then coarser: 2 and 4 miss
    calls.clear()
    never = bench_rate.sweep(_fake({}, calls), 0, -4, 10, 2, 0.995)
    assert calls == [0, -2, -4]
    result = bench_rate._finish(bench_rate.MethodResult("nncodec", trials=never), 0.995)
    assert result.best is None and result.closest is not None


def test_table_shows_sizes_ratios_and_misses():
    ok = bench_rate.Trial("step 1/8", 500, 0.997, 299, 300)
    miss = bench_rate.Trial("qp -30", 400, 0.98, 294, 300)
    methods = {"step": bench_rate._finish(bench_rate.MethodResult("step", trials=[ok]), 0.995),
               "nncodec": bench_rate._finish(bench_rate.MethodResult("nncodec", trials=[miss]),
                                             0.995),
               "fidelity": bench_rate.MethodResult("fidelity", note="n/a: no fidelity= yet")}
    result = bench_rate.ModelResult("m", "unseen", "classifier", 1000, 300, methods)
    table = bench_rate.markdown([result], ("fidelity", "step", "nncodec"), 0.995)
    row = table.splitlines()[2]
    assert row.startswith("| m * | 1,000 | n/a | 500 (2.00×) 99.70% | never: best 98.00%")


def test_ablation_table_compares_the_smallest_column_with_nncodecs_best():
    def method(name: str, *trials: bench_rate.Trial) -> bench_rate.MethodResult:
        return bench_rate._finish(bench_rate.MethodResult(name, trials=list(trials)), 0.995)

    def trial(size: int, agreement: float, decode_mbps: float | None = 100.0
              ) -> bench_rate.Trial:
        return bench_rate.Trial("s", size, agreement, 0, 0, 3.0, decode_mbps)

    methods = {"step": method("step", trial(900, 0.999), trial(800, 0.99)),
               "fidelity-sweep": method("fidelity-sweep", trial(600, 0.996)),
               "calibrated": method("calibrated", trial(500, 0.997, 80.0)),
               "bias": method("bias", trial(450, 0.98)),  # misses: never
               "nncodec": method("nncodec", trial(700, 1.0, None)),
               "nncodec-nodq": method("nncodec-nodq", trial(650, 0.996, None))}
    result = bench_rate.ModelResult("m", "corpus", "classifier", 4000, 300, methods)
    lines = bench_rate.ablation_table([result], 0.995).splitlines()
    assert lines[2] == "| m | 900 | 600 | 500 | never | 650 | 0.77 | 8.00× |"
    assert "Mean .onnx ÷ file: 8.00×" in lines[4]
    assert lines[-1] == "| m | 3 s, 100 MB/s | 3 s, 100 MB/s | 3 s, 80 MB/s | — |"


@pytest.mark.slow
def test_efficientnet_weights_read_without_torch_build_an_imagenet_classifier():
    import onnxruntime as ort
    from tasks import efficientnet

    weights = efficientnet.read_legacy_pth(efficientnet.corpus_model("efficientnet_lite0_pth"))
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    model = efficientnet.build_onnx(weights)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    logits = sess.run(None, {"input": x})[0]
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()


@pytest.mark.slow
def test_silero_task_judges_packs_on_real_speech(tmp_path):
    import shutil

    import onnxz

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    from tasks import get

    task = get("silero_vad_half")
    calibration = task.write_calibration(tmp_path / "calib.npz")
    with np.load(calibration) as z:
        assert set(z.files) == {"input", "state"} and len(z["input"]) == len(z["state"]) > 100
    lossless = tmp_path / "lossless.onnxz"
    onnxz.save(task.model_path(), lossless, lossless=True)
    assert task.evaluate(lossless).fraction == 1.0
    coarse = tmp_path / "coarse.onnxz"
    onnxz.save(task.model_path(), coarse, step_rel=2.0)
    result = task.evaluate(coarse)
    assert result.total > 3000 and result.fraction < 0.995
    assert onnxz.verify(task.model_path(), lossless, calibration).passed
