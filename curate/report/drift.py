"""Drift between two production snapshots: which features, languages and kinds of request moved."""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.report.coverage import Coverage, coverage
from curate.report.features import Records, compare

PSI_MOVED = 0.1  # the usual "moderate shift" threshold for PSI
LANG_MOVED = 0.05


def drift(
    baseline: Records,
    new: Records,
    base_vecs: np.ndarray,
    new_vecs: np.ndarray,
    *,
    seed: int,
    gap_ratio: float,
) -> tuple[dict[str, Any], Coverage, Coverage]:
    """Compare the baseline snapshot with the new one; `moved` names every change, largest first."""
    cmp = compare(baseline, new)
    emerged = coverage(base_vecs, new_vecs, new.user_texts, seed=seed, k=None, gap_ratio=gap_ratio)
    vanished = coverage(new_vecs, base_vecs, baseline.user_texts, seed=seed, k=None, gap_ratio=gap_ratio)
    moved: list[tuple[float, str]] = []
    for f in cmp["features"]:
        if f["psi"] >= PSI_MOVED:
            moved.append(
                (f["psi"], (f"{f['feature']}: P50 {f['reference']['p50']:g} -> {f['target']['p50']:g}, "
                            f"P95 {f['reference']['p95']:g} -> {f['target']['p95']:g} (PSI {f['psi']:.2f}, KS {f['ks']:.2f})"))
            )
    for lang, s in cmp["languages"].items():
        delta = s["target"] - s["reference"]
        if abs(delta) >= LANG_MOVED:
            moved.append((abs(delta), f"language {lang}: {s['reference']:.1%} -> {s['target']:.1%} of requests"))
    for c in emerged.section["clusters"]:
        if c["gap"]:
            moved.append((c["target_share"], (f"new kind of request '{c['label']}': {c['target_share']:.1%} of the new "
                                              f"snapshot, {c['reference_share']:.1%} of the baseline")))
    for c in vanished.section["clusters"]:
        if c["gap"]:
            moved.append((c["target_share"], (f"fading kind of request '{c['label']}': {c['target_share']:.1%} of the "
                                              f"baseline, {c['reference_share']:.1%} of the new snapshot")))
    moved.sort(key=lambda m: -m[0])
    section = {
        "features": cmp["features"],
        "languages": cmp["languages"],
        "emerged": [c for c in emerged.section["clusters"] if c["gap"]],
        "vanished": [c for c in vanished.section["clusters"] if c["gap"]],
        "clusters": emerged.section["clusters"],
        "emerged_share": emerged.section["uncovered_share"],
        "vanished_share": vanished.section["uncovered_share"],
        "domain_auc": emerged.section["domain_auc"],
        "moved": [m for _, m in moved],
    }
    return section, emerged, vanished
