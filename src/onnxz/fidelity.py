"""Fidelity targets: how close a packed model's outputs must stay to the original's.

A target is a comma-separated list of criteria, each ``METRIC[OUTPUT] OP VALUE`` with the
``[OUTPUT]`` part optional (without it the criterion applies to every output the metric
applies to; a comma inside it belongs to the output's name):

======== ============================================================ ======
metric   meaning (per output, over all samples)                       op
======== ============================================================ ======
snr      output SNR in dB: 10·log10(Σ ref² / Σ (ref − packed)²)         >=
cosine   cosine similarity of the worst sample                        >=
top1     fraction of rows with the same argmax (class-score outputs)  >=
top1_sample  fraction of samples whose rows all keep their argmax     >=
         (a recognized string, a sequence of decisions; ditto)
ctc      fraction of samples whose greedy CTC string is unchanged     >=
         (argmax path, repeats merged, the blank dropped; ditto)
top5     mean share of the original's 5 best classes kept (ditto)     >=
max_abs  largest absolute error, in the output's units                <=
exact    fraction of samples whose output equals the original's       >=
======== ============================================================ ======

>>> target = Fidelity.parse("top1[logits]>=0.99, snr>=25")
>>> [str(c) for c in target.criteria]
['top1[logits]>=0.99', 'snr>=25']
>>> Fidelity.parse("max_abs<=1e-3").criteria[0].holds(5e-4)
True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from onnxz.errors import TargetSpecError

METRICS: dict[str, tuple[str, str]] = {
    "snr": ("snr_db", ">="),
    "cosine": ("cosine_min", ">="),
    "top1": ("top1", ">="),
    "top1_sample": ("top1_sample", ">="),
    "ctc": ("ctc", ">="),
    "top5": ("top5", ">="),
    "max_abs": ("max_abs_error", "<="),
    "exact": ("exact", ">="),
}
"""Criterion metric name -> (the :class:`onnxz.OutputMetrics` field it reads, its operator)."""

CLASS_METRICS = frozenset({"top1", "top1_sample", "ctc", "top5"})
"""Metrics that exist only for class-score outputs."""

FRACTION_METRICS = frozenset({"top1", "top1_sample", "ctc", "top5", "exact"})

_CRITERION = re.compile(
    r"\s*(?P<metric>[A-Za-z_0-9]+)\s*(?:\[(?P<output>[^\]]+)\])?\s*(?P<op>>=|<=|=>|=<|>|<|=)?"
    r"\s*(?P<value>.*?)\s*"
)


@dataclass(frozen=True)
class Criterion:
    """One requirement: ``metric`` (a key of :data:`METRICS`) of ``output`` (None: every
    output it applies to) at least ``bound`` (at most, for ``max_abs``)."""

    metric: str
    bound: float
    output: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise TargetSpecError(
                f"unknown metric {self.metric!r} (known: {', '.join(METRICS)})")
        if isinstance(self.bound, bool) or not isinstance(self.bound, int | float):
            raise TargetSpecError(f"{self.metric}: the bound must be a number, not "
                                  f"{type(self.bound).__name__}")
        if math.isnan(self.bound) or (self.metric != "snr" and not math.isfinite(self.bound)):
            raise TargetSpecError(f"{self.metric}: the bound must be a finite number")
        if self.metric in FRACTION_METRICS and not 0 <= self.bound <= 1:
            raise TargetSpecError(f"{self.metric}: the bound is a fraction in [0, 1], "
                                  f"not {self.bound:g}")
        if self.metric == "cosine" and not -1 <= self.bound <= 1:
            raise TargetSpecError(f"cosine: the bound must be in [-1, 1], not {self.bound:g}")
        if self.metric == "max_abs" and self.bound < 0:
            raise TargetSpecError(f"max_abs: the bound must be >= 0, not {self.bound:g}")

    @property
    def field(self) -> str:
        """The :class:`onnxz.OutputMetrics` field this criterion reads."""
        return METRICS[self.metric][0]

    @property
    def op(self) -> str:
        """``>=`` or ``<=``: the direction of the metric's bound."""
        return METRICS[self.metric][1]

    def holds(self, value: float) -> bool:
        """True if ``value`` meets the bound (a NaN never does)."""
        if math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def applies_to(self, output: str, class_scores: bool) -> bool:
        """Whether the criterion judges ``output``: named by it (or by none), and a class
        metric only where ``class_scores`` (the output holds class scores)."""
        if self.output is not None and self.output != output:
            return False
        return class_scores or self.metric not in CLASS_METRICS

    def __str__(self) -> str:
        where = f"[{self.output}]" if self.output is not None else ""
        return f"{self.metric}{where}{self.op}{self.bound:g}"


@dataclass(frozen=True)
class Fidelity:
    """A fidelity target: every criterion must hold (see the module docstring)."""

    criteria: tuple[Criterion, ...]

    def __post_init__(self) -> None:
        if not self.criteria:
            raise TargetSpecError("a fidelity target needs at least one criterion")
        seen = set()
        for c in self.criteria:
            if (c.metric, c.output) in seen:
                where = f" of output {c.output!r}" if c.output is not None else ""
                raise TargetSpecError(f"{c.metric}{where} is given twice")
            seen.add((c.metric, c.output))

    @classmethod
    def parse(cls, text: str) -> Fidelity:
        """Parse ``"metric[output]>=value, ..."``; :class:`TargetSpecError` if malformed."""
        if not isinstance(text, str) or not text.strip():
            raise TargetSpecError("empty fidelity target (e.g. \"top1>=0.995\" or \"snr>=30\")")
        return cls(tuple(_parse_criterion(part) for part in _split_criteria(text)))

    def check_outputs(self, outputs: dict[str, bool]) -> None:
        """Check every criterion against the model's outputs (name -> is class scores):
        a named output must exist and a criterion must apply to at least one output."""
        for c in self.criteria:
            if c.output is not None and c.output not in outputs:
                raise TargetSpecError(f"{c}: the model has no output {c.output!r} (its "
                                      f"outputs: {', '.join(map(repr, outputs)) or 'none'})")
            if not any(c.applies_to(name, cls_) for name, cls_ in outputs.items()):
                where = f"output {c.output!r} is not" if c.output else "no output is"
                raise TargetSpecError(
                    f"{c}: {where} class scores (a Softmax/LogSoftmax producer, an ArgMax/"
                    "TopK consumer, the class numbers an ArgMax makes, rows that sum to 1, "
                    "or a name such as logits); name such "
                    "outputs with --class-output NAME, or use snr/cosine/exact")

    def decided(self, outputs: dict[str, bool]) -> frozenset[str]:
        """The outputs (name -> is class scores) that criteria judge by their class
        decisions alone (``top1``, ``ctc``, ...; no ``snr`` or ``cosine`` on them)."""
        return frozenset(name for name, class_scores in outputs.items()
                         if (judged := [c for c in self.criteria
                                        if c.applies_to(name, class_scores)])
                         and all(c.metric in CLASS_METRICS for c in judged))

    def __str__(self) -> str:
        return ",".join(map(str, self.criteria))


def _split_criteria(text: str) -> list[str]:
    """The criteria of ``text``: its parts between commas, except commas inside an
    ``[OUTPUT]`` (an output's name may hold commas: an openWakeWord model names its class
    scores with a JSON object, ``{"1": "1_minute_timer", "2": ...}``)."""
    parts, start, inside = [], 0, False
    for i, char in enumerate(text):
        if char == "[":
            inside = True
        elif char == "]":
            inside = False
        elif char == "," and not inside:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_criterion(part: str) -> Criterion:
    m = _CRITERION.fullmatch(part)
    if m is None:
        raise TargetSpecError(f"{part.strip()!r}: expected METRIC>=VALUE or "
                              "METRIC[OUTPUT]>=VALUE (max_abs with <=)")
    metric, output, op, value = m["metric"], m["output"], m["op"], m["value"]
    if metric not in METRICS:
        raise TargetSpecError(f"{part.strip()!r}: unknown metric {metric!r} "
                              f"(known: {', '.join(METRICS)})")
    expected = METRICS[metric][1]
    if op != expected:
        raise TargetSpecError(f"{part.strip()!r}: expected {metric}{expected}VALUE")
    try:
        bound = float(value)
    except ValueError:
        raise TargetSpecError(f"{part.strip()!r}: {value!r} is not a number") from None
    return Criterion(metric, bound, output.strip() if output else None)
