#!/usr/bin/env python3
"""Which layers calibrated rounding reaches in a model, and how well it holds up on each.

    python tools/feedback_layers.py silero_vad.onnx --inputs calib.npz
    python tools/feedback_layers.py model.onnx --inputs calib.npz --steps 1/4 1/16 --json

Per linear layer that ``onnxz pack --calibrated-rounding`` looks at (src/onnxz/ratecontrol/
layers.py; and per classifier head it feeds back from the output side, form ``head``,
heads.py, whose "rows/col" are samples per half and gains the logits' change): its form,
input rows per column in each half of the samples, and at each
relative step (× the weight's robust spread) the output error with error feedback relative
to plain rounding's, rounded with the first half's H and measured under the second half's
(held out) and the first's (seen); then whether the guards let it be fed back, or which
one does not (feedback.py: rows, gain, optimism). The same guards as packing, not a
promise about the file: rate control still decides per step. Exit 0; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction

import numpy as np
import onnx

from onnxz.codecs.deadzone import robust_spread, to_float64
from onnxz.dtypes import element_type
from onnxz.ratecontrol.feedback import GAIN_STEP, checked
from onnxz.ratecontrol.heads import find_head_layers, output_moments
from onnxz.ratecontrol.layers import find_linear_layers, inline_taken_branches, input_moments
from onnxz.verifier import ReferenceRun
from onnxz.walker import read_payload, resolve


def layer_rows(model: onnx.ModelProto, inputs: str, steps: list[float]) -> list[dict]:
    """One dict per layer (see the module docstring): the linear layers, then the heads
    fed back from their output side (form ``head``; src/onnxz/ratecontrol/heads.py)."""
    reference = ReferenceRun(model, inputs)
    inlined = inline_taken_branches(model, reference)
    layers = find_linear_layers(model, inlined)
    heads = find_head_layers(model)
    inputs_seen = input_moments(inlined.model, reference, layers)
    outputs_seen = output_moments(model, reference, heads)
    entries = ([(x, inputs_seen.get(x.weight), x.form, x.columns, x.columns) for x in layers]
               + [(h, outputs_seen.get(h.weight), "head", h.outputs, 1) for h in heads])
    rows = []
    for layer, found, form, columns, per in entries:  # per: what its rows are counted per
        tensor = resolve(model, layer.weight)
        row = {"name": tensor.name, "form": form, "shape": list(layer.weight_shape),
               "columns": columns}
        if found is None:
            rows.append({**row, "fed_back": False, "why_not": "input not readable"})
            continue
        etype = element_type(tensor.data_type)
        values = to_float64(read_payload(tensor, etype).reshape(-1), etype)
        spread = robust_spread(values)
        check, why_not = checked(layer, values, spread, found, min([*steps, GAIN_STEP]))
        row["rows_per_column"] = round(found.rows / per, 2)
        if check is not None:
            row["gains"] = {f"{Fraction(s).limit_denominator(1024)}": dict(zip(
                ("held_out", "seen"), (round(g, 3) for g in check.gains(s)), strict=True))
                for s in steps}
        rows.append({**row, "fed_back": not why_not, "why_not": why_not})
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("--inputs", required=True, metavar="NPZ|DIR",
                        help="calibration samples, as for onnxz pack --inputs")
    parser.add_argument("--steps", nargs="+", default=["1/4", "1/8", "1/16"],
                        help="relative steps to measure the gains at (default 1/4 1/8 1/16)")
    parser.add_argument("--json", action="store_true", help="one JSON object per layer")
    args = parser.parse_args(argv)
    try:
        steps = [float(Fraction(s)) for s in args.steps]
    except (ValueError, ZeroDivisionError):
        parser.error(f"--steps: expected fractions such as 1/8, got {args.steps}")
    rows = layer_rows(onnx.load(args.model), args.inputs, steps)
    if not args.json:
        print("gains: output error with feedback ÷ plain rounding's, held out (seen)")
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        gains = "  ".join(f"{s}: {g['held_out']:.3f} ({g['seen']:.3f})"
                          for s, g in row.get("gains", {}).items())
        verdict = "fed back" if row["fed_back"] else f"plain: {row['why_not']}"
        print(f"{row['name'][-40:]:40s} {row['form']:6s} {row['columns']:5d} cols "
              f"{row.get('rows_per_column', float('nan')):8.2f} rows/col  {gains}  {verdict}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
