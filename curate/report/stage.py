"""`report()`: structure, coverage and drift of a training set against production samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.errors import InputError, UsageError
from curate.report.coverage import GAP_RATIO, Coverage, coverage
from curate.report.embed import single_blas_thread
from curate.report.features import MIN_EXAMPLES, RECOMMENDED, Records, compare, extract
from curate.report.gates import METRICS, parse_gates

SCHEMA_VERSION = 1
Source = str | Path | pa.Table


@dataclass
class Report:
    """The report's JSON document, the gap rows (canonical + report_* columns) and the gate outcomes."""

    data: dict[str, Any]
    gap_table: pa.Table | None = None
    records: dict[str, Records] = field(default_factory=dict, repr=False)
    coverage: Coverage | None = field(default=None, repr=False)
    drift_maps: tuple[Coverage, Coverage] | None = field(default=None, repr=False)

    def json(self) -> dict[str, Any]:
        """The documented structure of schemas/report.schema.json."""
        return self.data

    @property
    def gates(self) -> list[dict[str, Any]]:
        return self.data["gates"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [g for g in self.data["gates"] if g["failed"]]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data["metrics"]


def _load(source: Source, origin: str | None) -> tuple[pa.Table, dict[str, Any]]:
    from curate.dataset import content_hash_file
    from curate.inputs import load_any

    if isinstance(source, pa.Table):
        table, info = source, {"path": None, "sha256": None}
    else:
        path = Path(source)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        table = load_any(path, origin=origin)
        info = {"path": str(path), "sha256": content_hash_file(path)}
    if table.num_rows == 0:
        raise InputError("no records to report on", file=info["path"])
    return table, {**info, "rows": table.num_rows}


def _tokenizer(tokenizer: Any) -> tuple[Any, str]:
    from curate.embedded import load_tokenizer

    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        return load_tokenizer(str(tokenizer) if tokenizer else None), str(tokenizer or "embedded")
    return tokenizer, getattr(tokenizer, "name_or_path", type(tokenizer).__name__)


def report(
    train: Source | None = None,
    production: Source | None = None,
    *,
    baseline: Source | None = None,
    tokenizer: Any = None,
    html: str | Path | None = None,
    gaps: str | Path | None = None,
    fail_on: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    embedder: str = "auto",
    k: int | None = None,
    gap_ratio: float = GAP_RATIO,
) -> Report:
    """Structure of every set, coverage of production by training, drift from a baseline; gates checked last."""
    from curate import __version__
    from curate.report.drift import drift
    from curate.report.embed import load_embedder

    gates = parse_gates(fail_on)  # a malformed gate fails before any work
    if train is None and production is None:
        raise UsageError("give a training set, --production, or both")
    if baseline is not None and production is None:
        raise UsageError("--baseline needs --production (the new snapshot to compare with it)")
    if gaps is not None and (train is None or production is None):
        raise UsageError("--gaps needs both a training set and --production")
    if k is not None and k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if not 0 < gap_ratio <= 1:
        raise UsageError(f"gap_ratio must be in (0, 1], got {gap_ratio}")

    tok, tok_name = _tokenizer(tokenizer)
    sources = {"train": (train, None), "production": (production, "production"), "baseline": (baseline, "production")}
    inputs: dict[str, Any] = {}
    recs: dict[str, Records] = {}
    for name, (src, origin) in sources.items():
        if src is None:
            inputs[name] = None
            continue
        table, inputs[name] = _load(src, origin)
        recs[name] = extract(name, table, tok)

    emb = load_embedder(embedder, seed=seed)
    vecs: dict[str, np.ndarray] = {}
    if len(recs) > 1:
        names = list(recs)
        vecs = dict(zip(names, emb.embed_sets([recs[n].user_texts for n in names])))

    comparison = cov = drift_section = None
    drift_maps = None
    with single_blas_thread():
        if "train" in recs and "production" in recs:
            comparison = compare(recs["train"], recs["production"])
            cov = coverage(vecs["train"], vecs["production"], recs["production"].user_texts, seed=seed, k=k,
                           gap_ratio=gap_ratio)
        if "baseline" in recs:
            drift_section, *maps = drift(recs["baseline"], recs["production"], vecs["baseline"], vecs["production"],
                                         seed=seed, gap_ratio=gap_ratio)
            drift_maps = tuple(maps)

    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "curate_version": __version__,
        "inputs": inputs,
        "settings": {"seed": seed, "tokenizer": tok_name, "embedder": emb.describe(), "k": k, "gap_ratio": gap_ratio},
        "structure": {name: r.stats for name, r in recs.items()},
        "comparison": comparison,
        "coverage": cov.section if cov else None,
        "gaps": _gap_list(cov.section) if cov else [],
        "drift": drift_section,
    }
    data["metrics"] = _metrics(data)
    data["warnings"] = _warnings(data, emb.fallback_reason)
    data["gates"] = [g.check(data["metrics"]) for g in gates]
    data["passed"] = not any(g["failed"] for g in data["gates"])

    gap_table = _gap_rows(recs["production"].table, cov) if cov else None
    rep = Report(data, gap_table, recs, cov, drift_maps)
    if gaps is not None or html is not None:
        from curate.outputs import OutputSet, write_table
        from curate.report.html import write_html

        # the gaps file and the HTML report are one set: both appear together or neither does
        with OutputSet(gaps or html, [p for p in (gaps, html) if p is not None]) as outs:
            if gaps is not None:
                write_table(gap_table, gaps, outs)
            if html is not None:
                write_html(rep, html, outs)
    return rep


def _gap_list(section: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [c for c in section["clusters"] if c["gap"]]
    rows.sort(key=lambda c: (-c["target_share"], c["id"]))
    return [
        {"cluster": c["id"], "label": c["label"], "rows": c["size"], "production_share": c["target_share"],
         "train_share": c["reference_share"], "coverage_ratio": c["coverage_ratio"],
         "nn_distance_p50": c["nn_distance_p50"], "examples": c["examples"]}
        for c in rows
    ]


def _gap_rows(table: pa.Table, cov: Coverage) -> pa.Table:
    """The production rows in gap clusters, columns unchanged, plus report_* columns (seeds for `curate synth`)."""
    idx = np.flatnonzero(np.isin(cov.labels, cov.gap_clusters))
    by_id = {c["id"]: c for c in cov.section["clusters"]}
    out = table.take(pa.array(idx, type=pa.int64()))
    labels = cov.labels[idx]
    extra = {
        "report_cluster": pa.array(labels.astype(np.int64)),
        "report_cluster_label": pa.array([by_id[int(c)]["label"] for c in labels], pa.string()),
        "report_nn_distance": pa.array(cov.nn_distance[idx].round(6), pa.float64()),
        "report_coverage_ratio": pa.array([by_id[int(c)]["coverage_ratio"] for c in labels], pa.float64()),
    }
    for name, col in extra.items():
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, col)
    return out


def _feature(comparison: dict[str, Any] | None, name: str, key: str) -> Any:
    if not comparison:
        return None
    return next((f[key] for f in comparison["features"] if f["feature"] == name), None)


def _metrics(d: dict[str, Any]) -> dict[str, Any]:
    s, cmp, cov, dr = d["structure"], d["comparison"], d["coverage"], d["drift"]
    train = s.get("train")
    feats = cmp["features"] if cmp else []
    m = {
        "train_count": train["count"] if train else None,
        "production_count": s["production"]["count"] if "production" in s else None,
        "baseline_count": s["baseline"]["count"] if "baseline" in s else None,
        "p95_ratio": _feature(cmp, "prompt_tokens", "p95_ratio"),
        "p95_ratio_total": _feature(cmp, "total_tokens", "p95_ratio"),
        "max_ks": max((f["ks"] for f in feats), default=None),
        "max_psi": max((f["psi"] for f in feats), default=None),
        "uncovered_share": cov["uncovered_share"] if cov else None,
        "gap_clusters": len(cov["gap_clusters"]) if cov else None,
        "domain_auc": cov["domain_auc"] if cov else None,
        "nn_distance_p95": cov["nn_distance"]["p95"] if cov else None,
        "duplicate_share": train["duplicate_share"] if train else None,
        "synthetic_share": train["synthetic_share"] if train else None,
        "drift_max_ks": max((f["ks"] for f in dr["features"]), default=None) if dr else None,
        "drift_max_psi": max((f["psi"] for f in dr["features"]), default=None) if dr else None,
        "drift_domain_auc": dr["domain_auc"] if dr else None,
        "drift_emerged_share": dr["emerged_share"] if dr else None,
        "drift_vanished_share": dr["vanished_share"] if dr else None,
    }
    return {name: m[name] for name in METRICS}


def _warnings(d: dict[str, Any], fallback: str | None) -> list[str]:
    out = []
    if fallback:
        out.append(f"coverage uses TF-IDF + SVD instead of sentence embeddings: {fallback}")
    for name, s in d["structure"].items():
        if name == "train" and s["count"] < MIN_EXAMPLES:
            out.append(f"train has {s['count']} examples: under {MIN_EXAMPLES} is thin; "
                       f"{RECOMMENDED[0]:,} to {RECOMMENDED[1]:,} are recommended for complex tasks")
        if s["unrenderable"]:
            out.append(f"{name}: {s['unrenderable']} record(s) the chat template cannot render (no token lengths)")
        if name == "train" and s["duplicate_share"]:
            out.append(f"train: {s['duplicate_share']:.1%} of rows are exact duplicates (run `curate dedupe`)")
    m = d["metrics"]
    if m["p95_ratio"] and m["p95_ratio"] > 1.1:
        p95 = _feature(d["comparison"], "prompt_tokens", "target")["p95"]
        out.append(f"production prompts are longer: P95 {m['p95_ratio']:.2f}x training's; "
                   f"test the model at production's P95 ({p95:g} tokens)")
    if m["gap_clusters"]:
        out.append(f"{m['gap_clusters']} production cluster(s) ({m['uncovered_share']:.1%} of production) "
                   "are under-covered by training")
    if m["domain_auc"] is not None and m["domain_auc"] >= 0.8:
        out.append(f"a classifier tells training from production apart (AUC {m['domain_auc']:.2f})")
    return out
