"""Token check: render each record with the tokenizer's chat template, count tokens per role, flag long ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.errors import InputError
from curate.validate.codes import Finding

PERCENTILES = (50, 95, 99)


def percentiles(values: list[int]) -> dict[str, int]:
    """P50/P95/P99/max of token counts (nearest-rank, so every figure is a real record's count)."""
    if not values:
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0}
    arr = np.asarray(values)
    out = {f"p{p}": int(np.percentile(arr, p, method="nearest")) for p in PERCENTILES}
    out["max"] = int(arr.max())
    return out


class TokenCheck:
    """Counts tokens of rendered records; never truncates, only reports."""

    def __init__(self, tokenizer: Any, max_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.totals: list[int] = []
        self.per_role: dict[str, list[int]] = {}
        self.over_limit = 0

    def check(self, messages: list[dict], tools: str | None) -> tuple[list[Finding], int | None, int | None]:
        """(findings, tokens in the rendered record, assistant tokens kept within max_tokens)."""
        from jinja2 import TemplateError

        from curate.embedded import render

        try:
            r = render(self.tokenizer, messages, tools)
        except (InputError, TemplateError, TypeError, KeyError) as exc:
            # the template itself rejects the record (e.g. roles that must alternate)
            return [Finding("template_error", f"the chat template cannot render this record: {exc}")], None, None
        n = len(r.input_ids)
        self.totals.append(n)
        counts = r.counts()
        for role in set(self.per_role) | set(counts):
            self.per_role.setdefault(role, [0] * (len(self.totals) - 1)).append(counts.get(role, 0))
        kept_mask = r.assistant_mask[: self.max_tokens] if self.max_tokens else r.assistant_mask
        trainable = int(sum(kept_mask))
        findings = []
        if self.max_tokens and n > self.max_tokens:
            self.over_limit += 1
            findings.append(
                Finding("token_limit_exceeded", f"{n} tokens > --max-tokens {self.max_tokens} ({counts_text(counts)})")
            )
            if trainable == 0 and sum(r.assistant_mask):
                findings.append(
                    Finding("assistant_truncated", f"the first {self.max_tokens} tokens hold no assistant reply token")
                )
        return findings, n, trainable

    def stats(self) -> dict[str, Any]:
        """Token percentiles over all rendered records, overall and per role."""
        return {
            "records": len(self.totals),
            "max_tokens": self.max_tokens,
            "over_limit": self.over_limit,
            "total_tokens": int(sum(self.totals)),
            "tokens": percentiles(self.totals),
            "per_role": {
                role: {"sum": int(sum(v)), **percentiles(v)} for role, v in sorted(self.per_role.items())
            },
        }


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{role} {n}" for role, n in sorted(counts.items()))
