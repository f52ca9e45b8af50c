"""`report()`: structure, coverage and drift of a training set against production samples.

The outcome's `to_dict()` holds the report document (schemas/report.schema.json, schema_version 1)
under the key "report"; `curate report --json` prints that document.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.engine import default_workers
from curate.errors import InputError, UsageError
from curate.inputs import Input, open_input
from curate.outcome import StageOutcome
from curate.report.config import ReportConfig
from curate.report.coverage import Coverage, coverage
from curate.report.embed import single_blas_thread
from curate.report.features import BATCH, MIN_EXAMPLES, RECOMMENDED, Records, compare, embedded_rows, extract
from curate.report.gates import METRICS, parse_gates
from curate.spool import spooled

SCHEMA_VERSION = 1
Source = str | Path | pa.Table
# a Parquet input is read through an 8 MiB buffer without pre-buffering, as dedupe reads it: otherwise a whole
# row group's compressed column chunks stay in memory (~250 MB for a million rows of text in one row group)
PARQUET_READ = {"pre_buffer": False, "buffer_size": 1 << 23}


@dataclass
class ReportOutcome(StageOutcome):
    """A report's outcome; besides to_dict(), it keeps in memory the gap rows and what the HTML plots need."""

    gap_table: pa.Table | None = field(default=None, repr=False)  # production rows in gaps, with report_* columns
    records: dict[str, Records] = field(default_factory=dict, repr=False)
    coverage: Coverage | None = field(default=None, repr=False)
    drift_maps: tuple[Coverage, Coverage] | None = field(default=None, repr=False)


def _describe(src: Input) -> dict[str, Any]:
    from curate.dataset import content_hash_file

    info = {"path": None, "sha256": None} if src.path is None else {"path": str(src.path),
                                                                      "sha256": content_hash_file(src.path)}
    if not src.rows:
        raise InputError("no records to report on", file=info["path"])
    return {**info, "rows": src.rows}


def report(
    train: Source | None = None,
    production: Source | None = None,
    config: ReportConfig | Mapping[str, Any] | None = None,
    *,
    baseline: Source | list[Source] | None = None,
    html: str | Path | None = None,
    gaps: str | Path | None = None,
    **overrides: Any,
) -> ReportOutcome:
    """Structure of every set, coverage of production by training, drift from a baseline; gates checked last.

    `baseline` may be a list of dated snapshots, oldest first: the drift section compares the last with
    `production`, and the history section each snapshot with the next (the last with production), for the
    trend plot.

    `html` (a self-contained HTML report) and `gaps` (the production rows in gap clusters, canonical
    Parquet) are written as one output set. The outcome fails when a `fail_on` gate holds.
    """
    from curate import __version__
    from curate.embedded import load_tokenizer
    from curate.report.drift import drift
    from curate.report.embed import load_embedder

    cfg = ReportConfig.build(config, **overrides)  # a malformed gate fails here, before any work
    gates = parse_gates(cfg.fail_on)
    if train is None and production is None:
        raise UsageError("give a training set, --production, or both")
    if baseline is not None and production is None:
        raise UsageError("--baseline needs --production (the new snapshot to compare with it)")
    snapshots = list(baseline) if isinstance(baseline, (list, tuple)) else []
    if snapshots:
        baseline = snapshots[-1]
    older = {f"snapshot {k + 1}": src for k, src in enumerate(snapshots[:-1])}
    if gaps is not None and (train is None or production is None):
        raise UsageError("--gaps needs both a training set and --production")

    # every input is opened (a missing file is a usage error) before the tokenizer loads or anything is read
    sources = {"train": (train, None), "production": (production, "production"), "baseline": (baseline, "production")}
    opened = {name: open_input(src, origin=origin, **PARQUET_READ) for name, (src, origin) in sources.items()
              if src is not None}
    opened |= {name: open_input(src, origin="production", **PARQUET_READ) for name, src in older.items()}
    redactor = None
    if cfg.redact:
        from curate.redact import Redactor

        redactor = Redactor()  # a missing presidio is a usage error before anything is read
    tok = load_tokenizer(cfg.tokenizer)
    inputs: dict[str, Any] = dict.fromkeys(sources)
    found: dict[str, Counter] = {}
    recs: dict[str, Records] = {}
    with ExitStack() as stack:
        # a raw file is converted once into a temporary Parquet: its rows are counted before the sample is drawn,
        # and production's are read again for the gap rows
        srcs = {name: stack.enter_context(spooled(src, batch_size=BATCH, **PARQUET_READ)) for name, src in opened.items()}
        if redactor is not None:  # every later read (features, embeddings, examples, gap rows) sees masked text
            from curate.redact import redacted

            for name, src in list(srcs.items()):
                found[name] = Counter()
                srcs[name] = stack.enter_context(redacted(src, redactor, found[name], BATCH, **PARQUET_READ))
        snap_paths: dict[str, str] = {}
        for name, src in srcs.items():
            if name in older:
                snap_paths[name] = _describe(src)["path"] or name
            else:
                inputs[name] = _describe(src)
            stream = list(sources).index(name) if name in sources else len(sources) + list(older).index(name)
            sample = embedded_rows(src.rows, cfg.embed_sample, cfg.seed, stream)
            recs[name] = extract(name, src, tok, sample=sample, workers=cfg.workers or default_workers(),
                                 tokenizer_name=cfg.tokenizer)
            if sample is not None and name not in older:
                inputs[name]["embedding_sample"] = len(sample)

        emb = load_embedder(cfg.embedder, seed=cfg.seed)
        vecs: dict[str, np.ndarray] = {}
        if len(recs) > 1:
            names = list(recs)
            vecs = dict(zip(names, emb.embed_sets([recs[n].user_texts for n in names])))

        comparison = cov = drift_section = history = None
        drift_maps = None
        with single_blas_thread():
            if "train" in recs and "production" in recs:
                comparison = compare(recs["train"], recs["production"])
                cov = coverage(vecs["train"], vecs["production"], recs["production"].user_texts, seed=cfg.seed,
                               k=cfg.k, gap_ratio=cfg.gap_ratio)
            if "baseline" in recs:
                drift_section, *maps = drift(recs["baseline"], recs["production"], vecs["baseline"],
                                             vecs["production"], seed=cfg.seed, gap_ratio=cfg.gap_ratio)
                drift_maps = tuple(maps)
                if older:
                    names = {**snap_paths, "baseline": inputs["baseline"]["path"] or "baseline",
                             "production": inputs["production"]["path"] or "production"}
                    history = _history(recs, vecs, [*older, "baseline", "production"], names, cfg)
        for name in older:  # the older snapshots live in the history section only
            recs.pop(name)
            vecs.pop(name, None)
        gap_table = _gap_rows(srcs["production"], recs["production"], cov) if cov else None

    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "curate_version": __version__,
        "inputs": inputs,
        "settings": {"seed": cfg.seed, "tokenizer": cfg.tokenizer, "embedder": emb.describe(), "k": cfg.k,
                     "gap_ratio": cfg.gap_ratio},
        "structure": {name: r.stats for name, r in recs.items()},
        "comparison": comparison,
        "coverage": cov.section if cov else None,
        "gaps": _gap_list(cov.section) if cov else [],
        "drift": drift_section,
        "history": history,
        "redaction": None if redactor is None else {
            **redactor.describe(), "found": {name: dict(sorted(c.items())) for name, c in found.items()}},
    }
    data["metrics"] = _metrics(data)
    data["warnings"] = _warnings(data, emb.fallback_reason, cfg.embed_sample)
    data["gates"] = [g.check(data["metrics"]) for g in gates]
    data["passed"] = not any(g["failed"] for g in data["gates"])

    failed = [g["expr"] for g in data["gates"] if g["failed"]]
    counts = {name: info["rows"] for name, info in inputs.items() if info is not None}
    counts["gap_rows"] = gap_table.num_rows if gap_table is not None else 0
    written = {name: str(path) for name, path in (("html", html), ("gaps", gaps)) if path is not None}
    out = ReportOutcome("report", counts, written, {"config": cfg.to_dict(), "report": data},
                        failure=f"{len(failed)} gate(s) failed: {', '.join(failed)}" if failed else None,
                        gap_table=gap_table, records=recs, coverage=cov, drift_maps=drift_maps)
    if written:
        from curate.outputs import OutputSet, write_table
        from curate.report.html import write_html

        # the gaps file and the HTML report are one set: both appear together or neither does
        with OutputSet(gaps or html, [p for p in (gaps, html) if p is not None]) as outs:
            if gaps is not None:
                write_table(gap_table, gaps, outs)
            if html is not None:
                write_html(out, html, outs)
    return out


def _history(recs: dict[str, Records], vecs: dict[str, np.ndarray], order: list[str], names: dict[str, str],
             cfg: ReportConfig) -> list[dict[str, Any]]:
    """Drift from each snapshot to the next, oldest first (the last step ends at production): the trend."""
    from curate.report.drift import drift

    steps = []
    for old, new in itertools.pairwise(order):
        section, *_ = drift(recs[old], recs[new], vecs[old], vecs[new], seed=cfg.seed, gap_ratio=cfg.gap_ratio)
        steps.append({
            "from": names[old], "to": names[new],
            "rows": recs[new].rows, "max_psi": max((f["psi"] for f in section["features"]), default=None),
            "domain_auc": section["domain_auc"], "emerged_share": section["emerged_share"],
            "vanished_share": section["vanished_share"], "moved": len(section["moved"])})
    return steps


def _gap_list(section: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [c for c in section["clusters"] if c["gap"]]
    rows.sort(key=lambda c: (-c["target_share"], c["id"]))
    return [
        {"cluster": c["id"], "label": c["label"], "rows": c["size"], "production_share": c["target_share"],
         "train_share": c["reference_share"], "coverage_ratio": c["coverage_ratio"],
         "nn_distance_p50": c["nn_distance_p50"], "examples": c["examples"]}
        for c in rows
    ]


def _gap_rows(src: Input, production: Records, cov: Coverage) -> pa.Table:
    """The production rows in gap clusters, columns unchanged, plus report_* columns (seeds for `curate synth`).

    Of a sampled production set, the sampled rows in gap clusters (only those were embedded)."""
    idx = np.flatnonzero(np.isin(cov.labels, cov.gap_clusters))
    rows = idx if production.sample is None else production.sample[idx]
    by_id = {c["id"]: c for c in cov.section["clusters"]}
    out = _take(src, rows)
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


def _take(src: Input, rows: np.ndarray) -> pa.Table:
    """The input's rows at `rows` (ascending), read batch by batch."""
    if len(rows) == 0:
        return src.schema.empty_table()
    parts, start = [], 0
    for batch in src.batches(BATCH):
        lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(rows[lo:hi] - start, type=pa.int64())))
        start += batch.num_rows
    return pa.Table.from_batches(parts, schema=src.schema)


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


def _warnings(d: dict[str, Any], fallback: str | None, embed_sample: int) -> list[str]:
    out = []
    if fallback:
        out.append(f"coverage uses TF-IDF + SVD instead of sentence embeddings: {fallback}")
    sampled = [(name, info) for name, info in d["inputs"].items() if info and "embedding_sample" in info]
    if sampled:
        sets = ", ".join(f"{info['embedding_sample']:,} of {info['rows']:,} {name} rows" for name, info in sampled)
        out.append(f"embeddings cover a seeded sample ({sets}; embed_sample {embed_sample:,}): cluster shares, "
                   "nearest-neighbour distances, the domain AUC and the gap rows come from the sample")
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
