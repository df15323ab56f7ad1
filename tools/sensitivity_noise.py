#!/usr/bin/env python3
"""How far rate control's per-tensor sensitivities can be trusted on your samples.

    python tools/sensitivity_noise.py nudenet.onnx --inputs calib.npz --fidelity "snr>=25"
    python tools/sensitivity_noise.py m.onnx --inputs calib.npz --fidelity "top1>=0.995" \\
        --min-samples 2 --json

Runs rate control's sensitivity pass (src/onnxz/ratecontrol/search.py: each weight tensor
quantized alone at the probe step, the target's output distortion per unit of weight
error) twice: on the first half of the samples and on the second. Per tensor: its size,
its relative sensitivity on each half (dB) and their difference, centred on the median
difference (a common offset does not move the allocation, which compares tensors). The
summary gives the median and the spread of the centred differences next to the spread of
the sensitivities themselves: the allocation can only follow differences between tensors
that stand out from that noise. ``--min-samples`` overrides MIN_SENSITIVITY_SAMPLES (per
half) to see what more or fewer samples buy. Exit 0; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import onnx

from onnxz.fidelity import Fidelity
from onnxz.policy import PackOptions
from onnxz.ratecontrol import search
from onnxz.ratecontrol.objective import objective_for


def half_sensitivities(model: onnx.ModelProto, samples: dict[str, np.ndarray],
                       fidelity: Fidelity) -> dict[str, tuple[float, float]]:
    """Each exercised weight tensor's relative sensitivity in dB and its estimated bytes at
    its finest step, by name, measured on ``samples`` (verifier .npz layout)."""
    bench = search.Workbench(model, samples, PackOptions(), fidelity)
    search.sensitivity_pass(bench, objective_for(fidelity, bench.reference, bench.model))
    return {c.name: (10 * math.log10(c.relative_sensitivity), c.points[0].bytes)
            for c in bench.candidates
            if not c.auxiliary and c.exercised and c.relative_sensitivity}


def compare(model: onnx.ModelProto, samples: dict[str, np.ndarray], fidelity: Fidelity
            ) -> dict:
    """The per-tensor rows and the summary (see the module docstring)."""
    count = len(next(iter(samples.values())))
    if count < 2:
        raise SystemExit("sensitivity_noise: need at least 2 samples to split")
    half = count // 2
    first = half_sensitivities(model, {k: v[:half] for k, v in samples.items()}, fidelity)
    second = half_sensitivities(model, {k: v[half:] for k, v in samples.items()}, fidelity)
    names = [n for n in first if n in second]
    if not names:
        raise SystemExit("sensitivity_noise: no weight tensor was exercised on both halves")
    differences = np.array([first[n][0] - second[n][0] for n in names])
    offset = float(np.median(differences))
    centred = differences - offset
    rows = [{"name": n, "bytes": round(first[n][1]), "first_db": round(first[n][0], 2),
             "second_db": round(second[n][0], 2), "centred_difference_db": round(d, 2)}
            for n, d in zip(names, centred, strict=True)]
    rows.sort(key=lambda r: -abs(r["centred_difference_db"]))
    return {
        "samples_per_half": [half, count - half],
        "min_samples": search.MIN_SENSITIVITY_SAMPLES,
        "tensors": len(names),
        "offset_db": round(offset, 2),
        "median_abs_difference_db": round(float(np.median(np.abs(centred))), 2),
        "difference_std_db": round(float(np.std(centred)), 2),
        "sensitivity_std_db": round(float(np.std([first[n][0] for n in names])), 2),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("--inputs", required=True, metavar="NPZ",
                        help="samples in the verifier's .npz layout (split in two halves)")
    parser.add_argument("--fidelity", required=True, metavar="SPEC",
                        help="the target whose distortion is measured, e.g. 'snr>=25'")
    parser.add_argument("--min-samples", type=int, metavar="N",
                        help="MIN_SENSITIVITY_SAMPLES for this run (per half)")
    parser.add_argument("--top", type=int, default=10, metavar="K",
                        help="tensors listed, largest differences first (default 10)")
    parser.add_argument("--json", action="store_true", help="the whole result as JSON")
    args = parser.parse_args(argv)
    if args.min_samples is not None:
        if args.min_samples < 1:
            parser.error("--min-samples must be at least 1")
        search.MIN_SENSITIVITY_SAMPLES = args.min_samples
    with np.load(args.inputs) as data:
        samples = {k: data[k] for k in data.files}
    result = compare(onnx.load(args.model), samples, Fidelity.parse(args.fidelity))
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    print(f"{result['tensors']} weight tensors, samples per half "
          f"{result['samples_per_half']}, at least {result['min_samples']} run per half")
    print(f"centred difference between halves: median |d| {result['median_abs_difference_db']}"
          f" dB, std {result['difference_std_db']} dB (common offset "
          f"{result['offset_db']} dB); spread of the sensitivities: std "
          f"{result['sensitivity_std_db']} dB")
    print(f"\n{'tensor':40s} {'bytes':>10s} {'first dB':>9s} {'second dB':>9s} {'d':>7s}")
    for r in result["rows"][: args.top]:
        print(f"{r['name'][-40:]:40s} {r['bytes']:10,d} {r['first_db']:9.1f} "
              f"{r['second_db']:9.1f} {r['centred_difference_db']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
