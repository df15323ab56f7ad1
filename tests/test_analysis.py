"""onnxz analyze: statistics, distribution fits checked against an independent scipy
computation, correlation, plots, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from onnxz.analysis.analyze import analyze
from onnxz.analysis.fits import fit_families
from onnxz.analysis.stats import (
    autocorrelation,
    float32_entropy_bits,
    layer_correlation,
    strong_share,
    tensor_stats,
)
from onnxz.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.onnx"
MLE_FAMILIES = {"laplace": "laplace", "gaussian": "norm", "cauchy": "cauchy",
                "logistic": "logistic", "uniform": "uniform", "gamma": "gamma",
                "exponential": "expon"}


def independent_kl_ranking(x: np.ndarray) -> list[tuple[str, float]]:
    """The KL ranking recomputed from its definition with other code: scipy MLE fits on all
    values, scipy.stats.entropy of the histogram's bin probabilities against the law's
    probability of each bin (renormalized over the histogram's range), in bits."""
    lo, hi = np.percentile(x, [0.1, 99.9])
    counts, edges = np.histogram(x, bins=100, range=(lo, hi))
    scores = []
    for family, scipy_name in MLE_FAMILIES.items():
        law = getattr(scipy.stats, scipy_name)
        with np.errstate(all="ignore"):
            frozen = law(*law.fit(x))
            bins = frozen.cdf(edges[1:]) - frozen.cdf(edges[:-1])
        scores.append((family, float(scipy.stats.entropy(counts, np.maximum(bins, 1e-12),
                                                         base=2))))
    return sorted(scores, key=lambda s: s[1])


def assert_rankings_agree(x: np.ndarray) -> None:
    ours = [f for f in fit_families(x).ranked("kl") if f in MLE_FAMILIES]
    theirs = independent_kl_ranking(x)
    (first, best), (_, second) = theirs[0], theirs[1]
    if second > 1.05 * best:  # a clear winner: the same one
        assert ours[0] == first, (ours, theirs)
    assert ours[0] in {theirs[0][0], theirs[1][0]}, (ours, theirs)
    assert set(ours[:3]) & {name for name, _ in theirs[:3]}


@pytest.mark.parametrize("law, expected", [
    (lambda rng, n: rng.laplace(0.01, 0.05, n), "laplace"),
    (lambda rng, n: rng.uniform(-0.2, 0.3, n), "uniform"),
    (lambda rng, n: rng.logistic(0, 0.1, n), "logistic"),
    (lambda rng, n: rng.standard_cauchy(n) * 0.01, "cauchy"),
])
def test_known_laws_are_recognised(law, expected):
    x = law(np.random.default_rng(5), 40_000)
    result = fit_families(x)
    for criterion in ("sse", "kl"):
        ranked = [f for f in result.ranked(criterion) if f != "alpha-stable"]
        assert ranked[0] == expected, (criterion, ranked)
    assert_rankings_agree(x)


def test_ranking_agrees_with_independent_check_on_the_digits_weights():
    result = analyze(DIGITS)
    assert len(result.tensors) == 3
    import onnx
    from onnx import numpy_helper

    model = onnx.load(DIGITS)
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64).ravel()
               for t in model.graph.initializer}
    for t in result.tensors:
        assert_rankings_agree(weights[t.name])


def test_tensor_stats_and_entropy():
    x = np.random.default_rng(0).laplace(0, 1, 400_000)
    s = tensor_stats(x)
    assert abs(s.kurtosis - 3) < 0.15 and abs(s.std - np.sqrt(2)) < 0.01
    assert abs(s.near_zero - (1 - np.exp(-0.1 * np.sqrt(2)))) < 0.005
    assert s.entropy_bits == pytest.approx(np.log2(x.size), abs=0.01)  # all distinct
    assert float32_entropy_bits(np.array([1.0, 1.0, 1.0, 1.0])) == 0.0
    assert float32_entropy_bits(np.array([1.0, 2.0, 3.0, 4.0])) == 2.0
    assert tensor_stats(np.zeros(10)).near_zero == 1.0


def test_correlations_see_what_is_there():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(50_000)
    ar = np.empty_like(noise)
    ar[0] = noise[0]
    for i in range(1, ar.size):  # AR(1), φ = 0.8: ρ(lag) = 0.8^lag
        ar[i] = 0.8 * ar[i - 1] + noise[i]
    rho = autocorrelation(ar, 5)
    np.testing.assert_allclose(rho, 0.8 ** np.arange(1, 6), atol=0.02)
    assert strong_share(rho) == pytest.approx(3 / 5)  # 0.8, 0.64, 0.51 ≥ 0.5
    iid = rng.standard_normal(3000)
    matrix = layer_correlation([iid, iid * 2 + 1, rng.standard_normal(7000)])
    assert matrix[0, 1] == pytest.approx(1.0) and abs(matrix[0, 2]) < 0.1
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 1)


def test_analysis_json_table_and_plots(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", str(DIGITS), "--json", "--max-lag", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first = data["tensors"][0]
    assert first["name"] == "conv2.weight" and len(first["autocorrelation"]) == 4
    assert len(first["fits"]["by_kl"]) == 8 and first["stats"]["count"] == 4608
    kl = [f["kl_bits"] for f in first["fits"]["by_kl"] if f["kl_bits"] is not None]
    assert kl == sorted(kl)
    assert data["correlation"]["pairs"] == 3 and len(data["correlation"]["matrix"]) == 3
    assert set(data["family_places"]["sse"]) == set(MLE_FAMILIES) | {"alpha-stable"}
    figures = tmp_path / "figures"
    result = runner.invoke(main, ["analyze", str(DIGITS), "--plot", str(figures), "--svg"])
    assert result.exit_code == 0, result.output
    assert "fc1.weight" in result.stdout and "families by KL divergence" in result.stdout
    pngs = sorted(figures.glob("*.png"))
    assert len(pngs) == 6 and len(list(figures.glob("*.svg"))) == 6
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    runner = CliRunner()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for args in (["analyze", str(bad)], ["analyze", str(tmp_path / "missing.onnx")],
                 ["analyze", str(DIGITS), "--min-elements", "1000000"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, args
    assert runner.invoke(main, ["analyze", str(DIGITS), "--plot", str(bad)]).exit_code == 2
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scipy" else real(name, *a))
    result = runner.invoke(main, ["analyze", str(DIGITS)])
    assert result.exit_code == 2 and "onnxz[analysis]" in result.output


def test_decoding_needs_neither_scipy_nor_matplotlib(tmp_path):
    code = (
        "import sys, onnxz, onnxz.cli\n"
        "from onnxz.codecs import MulawCodec\n"
        f"onnxz.save({str(DIGITS)!r}, {str(tmp_path / 'm.onnxz')!r}, "
        "options=onnxz.PackOptions(quantizer=MulawCodec()))\n"
        f"onnxz.inference_session({str(tmp_path / 'm.onnxz')!r})\n"
        "print(sorted(m for m in ('scipy', 'matplotlib', 'distributed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_every_corpus_model_is_analyzed_with_plots(corpus, tmp_path):
    for name, path in sorted(corpus.items()):
        result = analyze(path)
        data = result.to_dict()
        assert data["tensors"] and result.stats.count == sum(t.stats.count
                                                              for t in result.tensors)
        assert 0 <= data["autocorrelation"]["strong_share"] < 0.1  # nearly uncorrelated
        assert data["correlation"]["strong_share"] < 0.1
        from onnxz.analysis.plots import plot_analysis

        figures = plot_analysis(result, tmp_path / name)
        assert len(figures) == len(result.tensors) + 3
        print(f"\n{name}: {len(result.tensors)} tensors, by KL first: "
              f"{ {f: c[0] for f, c in result.family_places('kl').items() if c[0]} }")


@pytest.mark.slow
def test_ranking_agrees_with_independent_check_on_corpus_tensors(corpus):
    import onnx

    from onnxz.dtypes import element_type
    from onnxz.walker import iter_tensor_slots, read_payload

    for name in ("ppocr_det", "magika", "silero_vad_half"):
        model = onnx.load(corpus[name])
        slots = [s for s in iter_tensor_slots(model) if s.is_weight
                 and element_type(s.tensor.data_type).is_quantizable
                 and np.prod(s.tensor.dims) >= 1024][:6]
        for slot in slots:
            etype = element_type(slot.tensor.data_type)
            assert_rankings_agree(read_payload(slot.tensor, etype).astype(np.float64))


def test_an_integer_quantized_model_is_named_as_such(tmp_path):
    """An int8 model's weights (MatMulInteger's) are not studied: the error says so, where
    "no finite weight tensors" read as if the model had none (an int8 T5-style encoder with
    56 int8 matrices of 512x1024)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).integers(-128, 128, (64, 64), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "int8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 64])],
        [numpy_helper.from_array(weight, "w")])
    model = tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    result = CliRunner().invoke(main, ["analyze", str(model)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no finite float weight tensors" in result.output
    assert "its 1 8-bit integer tensors" in result.output


def test_a_figure_that_fails_half_written_leaves_the_one_before(tmp_path):
    """Figures are written like every output: a failure (or Ctrl-C) while matplotlib writes
    leaves no partial file, and the figure already there as it was."""
    from onnxz.analysis import plots

    class Failing:
        def savefig(self, path, format, dpi):
            Path(path).write_bytes(b"\x89PNG half")
            raise RuntimeError("renderer died")

    old = tmp_path / "rd.png"
    old.write_bytes(b"the earlier figure")
    with pytest.raises(RuntimeError):
        plots._write(Failing(), old, "png", dpi=100)
    with pytest.raises(RuntimeError):
        plots._write(Failing(), tmp_path / "new.png", "png", dpi=100)
    assert old.read_bytes() == b"the earlier figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rd.png"]
