"""Models compared on the same prompts: paired bootstrap intervals of the headline, and prompts side by side.

The bootstrap resamples prompts with replacement (the same resampled prompts for both models of a
pair, so the interval is of the paired difference) and takes the 2.5th and 97.5th percentiles of the
difference over the resamples. It measures how much the difference depends on which prompts happen to
be in the held-out set; it says nothing about other sources of variance (training seeds, sampling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curate.errors import UsageError

RESAMPLES = 2_000
_CELLS = 2_000_000  # resample x prompt indices drawn at once (keeps memory flat for big eval sets)


def bootstrap(a: Sequence[float], b: Sequence[float], seed: int, resamples: int = RESAMPLES) -> tuple[float, list[float]]:
    """mean(a) - mean(b), and the paired bootstrap 95% interval of it over prompts."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n == 0:
        raise UsageError("nothing to compare: no prompt is scored")
    rng = np.random.default_rng(seed)
    step = max(1, _CELLS // n)
    means = np.concatenate([d[rng.integers(0, n, size=(min(step, resamples - s), n))].mean(axis=1)
                            for s in range(0, resamples, step)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return _round(d.mean()), [_round(lo), _round(hi)]


def _round(x: float) -> float:
    return round(float(x), 4) + 0.0  # + 0.0: no -0.0 in the JSON


def comparisons(per_prompt: Mapping[str, Sequence[float]], names: Sequence[str], pairs: Sequence[Sequence[str]],
                metric: str, seed: int) -> list[dict[str, Any]]:
    """Every adapter against the base (when one is evaluated), then each named pair (a, b): a - b with its interval."""
    check_pairs(pairs, names)
    wanted = [(n, "base") for n in names if n != "base" and "base" in names] + [tuple(p) for p in pairs]
    out, seen = [], set()
    for a, b in wanted:
        if (a, b) in seen or a == b:
            continue
        seen.add((a, b))
        diff, ci = bootstrap(per_prompt[a], per_prompt[b], seed)
        out.append({"a": a, "b": b, "metric": metric, "difference": diff, "ci95": ci, "prompts": len(per_prompt[a])})
    return out


def check_pairs(pairs: Sequence[Sequence[str]], names: Sequence[str]) -> None:
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2 or any(p not in names for p in pair):
            raise UsageError(f"compare: {pair!r} is not a pair of evaluated models ({', '.join(names)})")


def pick_examples(count: int, replies: Mapping[str, Sequence[str]], correct: Mapping[str, Sequence[bool | None]]) -> list[int]:
    """Up to `count` prompts, in order of: models disagree on being right, replies differ, some model wrong, position."""
    names = list(replies)
    n = len(replies[names[0]]) if names else 0

    def key(i: int) -> tuple[bool, bool, bool, int]:
        verdicts = {correct[m][i] for m in names}
        texts = {replies[m][i].strip() for m in names}
        return (len(verdicts) < 2, len(texts) < 2, False not in verdicts, i)

    return sorted(range(n), key=key)[:count]
