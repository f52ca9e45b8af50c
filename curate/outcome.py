"""What a stage did: one `StageOutcome` type for every stage, with one `to_dict()`.

    counts    numbers that balance: `in` = the parts named by `parts` (kept + rejected for a filter stage)
    outputs   the files it wrote, by name
    summary   small JSON-able details (settings used, per-reason counts, metrics)
    kept      the rows it kept, and `rejected` the rows it did not, each with a `reason` (in memory; optional)
    failure   why the stage's own threshold failed it (a reject rate, a gate), or None: the CLI exits 1
              with it, `curate run` stops there

The CLI's `--json`, the run manifest and the dataset card all read `to_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass
class StageOutcome:
    stage: str
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    kept: pa.Table | None = field(default=None, repr=False)
    rejected: pa.Table | None = field(default=None, repr=False)
    failure: str | None = None
    parts: tuple[str, ...] = ("kept", "rejected")  # what `in` is the sum of

    @property
    def balanced(self) -> bool:
        """Whether `in` equals the sum of the parts (True when the stage reports no `in`)."""
        if "in" not in self.counts:
            return True
        return self.counts["in"] == sum(self.counts.get(p, 0) for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        """Counts, whether they balance, outputs and the summary, as one JSON-able mapping."""
        return {"stage": self.stage, "counts": dict(self.counts), "balanced": self.balanced,
                "outputs": dict(self.outputs), "passed": self.failure is None, "failure": self.failure, **self.summary}


def over_rate(bad: int, total: int, rate: float, what: str) -> str | None:
    """The failure message when bad / total exceeds `rate` (None when it does not)."""
    if not total or bad / total <= rate:
        return None
    share = bad / total
    shown = f"{share:.1%}" if share >= 0.001 else f"{share:.3%}"  # 1 of 3,000 is not 0.0%
    return f"{bad}/{total} {what} ({shown}) exceeds the allowed {rate:.1%}"
