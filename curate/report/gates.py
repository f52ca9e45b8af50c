"""--fail-on gates: `metric OP number` (e.g. `p95_ratio>1.5`, `uncovered_share>=10%`), parsed without eval."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from curate.errors import UsageError

# Every metric a gate may name, with what it measures (the report's `metrics` object holds them).
METRICS = {
    "train_count": "rows in the training set",
    "production_count": "rows in the production set",
    "baseline_count": "rows in the baseline production snapshot",
    "p95_ratio": "production P95 prompt tokens / training P95 prompt tokens",
    "p95_ratio_total": "production P95 total tokens / training P95 total tokens",
    "max_ks": "largest KS statistic over per-record features, training vs production",
    "max_psi": "largest PSI over per-record features, training vs production",
    "uncovered_share": "share of production in clusters the training set does not cover (gaps)",
    "gap_clusters": "number of under-covered production clusters",
    "domain_auc": "cross-validated AUC of a classifier telling training from production (0.5 = indistinguishable)",
    "nn_distance_p95": "P95 cosine distance from a production example to its nearest training example",
    "duplicate_share": "share of training rows that repeat an earlier row's id",
    "synthetic_share": "share of training rows that are synthetic",
    "drift_max_ks": "largest KS statistic, baseline vs new production",
    "drift_max_psi": "largest PSI, baseline vs new production",
    "drift_domain_auc": "AUC of a classifier telling the baseline snapshot from the new one",
    "drift_emerged_share": "share of new production in clusters the baseline does not cover",
    "drift_vanished_share": "share of the baseline in clusters the new production no longer covers",
}
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Gate:
    """One parsed gate; it fails when `metric OP threshold` holds."""

    expr: str
    metric: str
    op: str
    threshold: float

    def check(self, metrics: dict[str, Any]) -> dict[str, Any]:
        value = metrics.get(self.metric)
        if value is None:
            raise UsageError(
                f"--fail-on '{self.expr}': metric '{self.metric}' was not computed by this report "
                "(coverage metrics need TRAIN and --production; drift metrics need --baseline)"
            )
        failed = bool(_OPS[self.op](float(value), self.threshold))
        return {"expr": self.expr, "metric": self.metric, "op": self.op, "threshold": self.threshold,
                "value": value, "failed": failed}


def parse_gate(expr: str) -> Gate:
    """Parse `metric OP number[%]`; anything else is a usage error naming the known metrics."""
    m = _GATE.match(expr)
    if not m:
        raise UsageError(
            f"--fail-on '{expr}' is not of the form METRIC OP NUMBER (OP one of > >= < <= == !=), "
            "e.g. 'p95_ratio>1.5' or 'uncovered_share>10%'"
        )
    metric, op, number, pct = m.groups()
    if metric not in METRICS:
        raise UsageError(f"--fail-on '{expr}': unknown metric '{metric}'; known: {', '.join(METRICS)}")
    threshold = float(number) / 100 if pct else float(number)
    return Gate(expr.strip(), metric, op, threshold)


def parse_gates(exprs: list[str] | tuple[str, ...]) -> list[Gate]:
    return [parse_gate(e) for e in exprs]
