"""The dataset card: a Markdown description of the final dataset, written from the stages' outcomes.

Every section reads a stage's `StageOutcome.to_dict()` as the manifest records it: counts, outputs
and the summary keys that stage documents.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from curate.inputs import open_input
from curate.outputs import atomic_path
from curate.pipeline.recipe import RunRecipe
from curate.pipeline.runner import StageRecord


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join("" if v is None else str(_num(v)) for v in r) + " |" for r in rows]
    return "\n".join(out)


def write_card(work: Path, recipe: RunRecipe, records: list[StageRecord], dataset: Path) -> Path:
    """Write WORK/DATASET_CARD.md and return its path."""
    ran = {r.name: r.outcome for r in records if r.status != "skipped"}
    table = open_input(dataset).read(["id", "origin", "source"])
    origins = Counter(table.column("origin").to_pylist())
    files = Counter((s or {}).get("file") for s in table.column("source").to_pylist())
    parts = [f"# Dataset card: {recipe.name}", ""]
    if recipe.description:
        parts += [recipe.description, ""]
    parts += [
        f"Final dataset: `{dataset}`, **{table.num_rows} rows**. Produced by `curate run` "
        f"(stages and hashes in `{work / 'manifest.json'}`).",
    ]
    evals = [r for r in records if r.name.split("-round")[0] == "eval" and r.status != "skipped"]
    if evals:  # the headline: does a model trained on this data do the task better?
        parts += ["", *_evaluation(evals)]
    parts += [
        "", "## Sources and origin mix", "",
        _table(["origin", "rows", "share"], [[o, n, f"{n / max(table.num_rows, 1):.1%}"] for o, n in origins.most_common()]),
        "", _table(["source file", "rows"], [[f, n] for f, n in files.most_common()]),
        "", "## Stages", "",
        _table(["stage", "status", "seconds", "counts"],
               [[r.name, r.status if r.status != "skipped" else f"skipped: {r.reason}",
                 f"{r.seconds:.1f}" if r.status == "ran" else "", _counts(r.outcome.get("counts", {}))]
                for r in records]),
    ]
    if "ingest" in ran:
        roles = ran["ingest"]["roles"]
        parts += ["", "## Ingest", "", _table(["data", "read", "written", "rejected"],
                                             [[role, v["counts"]["in"], v["counts"]["kept"], v["counts"]["rejected"]]
                                              for role, v in roles.items()])]
    for name, title in (("validate", "Validation"), ("synth_validate", "Validation of synthetic rows")):
        if name in ran:
            parts += ["", f"## {title}", "", *_validation(ran[name])]
    for name, title in (("dedupe", "Deduplication and decontamination"), ("final", "Deduplication of seed + synthetic rows")):
        if name in ran:
            parts += ["", f"## {title}", "", *_dedupe(ran[name])]
    if "report" in ran:
        o = ran["report"]
        metrics = o["report"]["metrics"]
        parts += ["", "## Coverage against production", "", *_coverage(o["report"]),
                  "", _table(["metric", "value"], [[COVERAGE_METRICS.get(k, k), v] for k, v in metrics.items()
                                                   if v is not None]),
                  f"\nGap rows: {o['counts'].get('gap_rows')}. Report: `{o['outputs'].get('html')}`."]
    if "synth" in ran:
        o, c = ran["synth"], ran["synth"]["counts"]
        parts += ["", "## Synthetic rows and fact flags", "",
                  f"Teacher `{o.get('teacher')}`, recipe `{o.get('recipe')}`. Requested {c['requested']}: succeeded "
                  f"{c['succeeded']}, failed {c['failed']}, skipped by budget {c['skipped_budget']}, rejected by the "
                  f"label checks {c.get('rejected_check', 0)}, dropped for unsupported claims "
                  f"{c.get('rejected_facts', 0)}, held for review {c.get('review', 0)}. Claims checked "
                  f"{c.get('claims')}, unsupported {c.get('unsupported_claims')} in {c.get('flagged_rows')} rows "
                  "(kept rows carry them in the `unsupported_claims` column)."]
    if "train" in ran:
        o = ran["train"]
        parts += ["", "## Training", "", f"Adapter: `{o['outputs'].get('adapter')}`. Rows {o['counts']['in']}: "
                  f"{o['counts']['kept']} used, {o['counts']['rejected']} dropped"
                  + (f" ({_counts(o.get('reasons') or {})})." if o['counts']['rejected'] else "."),
                  "", _table(["metric", "value"], [[TRAIN_METRICS.get(k, k), v] for k, v in (o.get("metrics") or {}).items()
                                                   if v is not None and k in TRAIN_METRICS])]
        if o.get("mix"):
            parts += ["", "Mix of the training rows (`data.train` weights; validation rows set aside first):", "",
                      _table(["file", "asked", "available", "drawn", "repeats", "share"],
                             [[m["file"], f"weight {m['weight']:g}" if "weight" in m else
                               f"count {m['count']}" if "count" in m else "whole", m["available"], m["drawn"],
                               m["repeats"], f"{m['share']:.1%}"] for m in o["mix"]])]
    path = work / "DATASET_CARD.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return path


def _evaluation(evals: list[StageRecord]) -> list[str]:
    """The headline: task accuracy of base, raw and curated on the held-out set, with the interval of the gap."""
    last = evals[-1].outcome
    task = last.get("task") or {}
    metric = task.get("headline", "task_accuracy")
    variants = last.get("variants") or []
    fields = list((variants[0].get("fields") or {}).keys()) if variants else []
    out = [f"## Does curation help? Evaluation on {last['counts'].get('in')} held-out prompts"
           + (f" (round {variants[0].get('round')})" if len(evals) > 1 and variants else ""), ""]
    names = {"base": "base model", "raw": "adapter on the raw data", "curated": "adapter on the curated data"}
    rows = [[names.get(v.get("data"), v["model"]) if v["model"] in ("base", "raw", "curated", "train")
             else v["model"], v.get(metric), *[(v["fields"].get(f) or {}).get("accuracy") for f in fields],
             v.get("format_rate"), ", ".join(f"{k}: {lab}" for k, lab in (v.get("collapsed") or {}).items()) or "no"]
            for v in variants]
    out.append(_table(["model", metric.replace("_", " "), *fields, "format rate", "collapsed"], rows))
    for c in last.get("comparisons") or []:
        lo, hi = c["ci95"]
        verdict = "a real difference" if lo > 0 or hi < 0 else "within the noise"
        out.append(f"\n{c['a']} vs {c['b']}: {c['difference']:+.3f} {c['metric'].replace('_', ' ')} "
                   f"(95% interval [{lo:+.3f}, {hi:+.3f}], paired bootstrap over {c['prompts']} prompts): {verdict}.")
    if len(evals) > 1:
        out += ["", "Rounds (failures of the curated adapter fed back to synth):", "",
                _table(["round", f"curated {metric.replace('_', ' ')}"],
                       [[next((v.get("round") for v in r.outcome.get("variants", [])), None),
                         next((v.get(metric) for v in r.outcome.get("variants", []) if v.get("data") == "curated"), None)]
                        for r in evals])]
    examples = last.get("examples") or []
    if examples:
        models = list(examples[0]["replies"])
        out += ["", "Side by side:", "", _table(["prompt", "reference", *models],
                                                [[_cell(e["prompt"]), _cell(e["reference"]),
                                                  *[_cell(e["replies"][m]) for m in models]] for e in examples])]
    if last["outputs"].get("failures"):
        out.append(f"\nFailures, ready as seeds for `curate synth`: `{last['outputs']['failures']}`.")
    return out


def _cell(text: Any) -> str:
    text = "" if text is None else str(text)
    text = text if len(text) <= 120 else text[:117] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _validation(o: dict[str, Any]) -> list[str]:
    c = o["counts"]
    out = [f"Records in {c['in']}, valid {c['kept']}, quarantined {c['rejected']} (quarantine: "
           f"`{o['outputs'].get('quarantine')}`)."]
    codes = [[k, "error", v] for k, v in (o.get("errors") or {}).items()]
    codes += [[k, "warning", v] for k, v in (o.get("warnings") or {}).items()]
    if codes:
        out += ["", _table(["code", "severity", "records"], sorted(codes, key=lambda x: -x[2]))]
    comp = o.get("compliance")
    if comp and comp.get("records_checked"):
        what = {"schema": "the output schema", "regex": "the output pattern"}.get(comp.get("mode"), "the output format")
        out += ["", f"Output format: {comp['records_compliant']} of {comp['records_checked']} records with a reply "
                    f"comply with {what} ({comp['records_compliant'] / comp['records_checked']:.1%})."]
    return out


def _dedupe(o: dict[str, Any]) -> list[str]:
    c = o["counts"]
    out = [f"Rows in {c['in']}, kept {c['kept']}, removed {c['rejected']} ({_counts(o.get('reasons') or {}) or 'none'}); "
           f"{o.get('clusters')} clusters."]
    if o["outputs"].get("clusters"):
        out.append(f"\nClusters: `{o['outputs']['clusters']}`.")
    if o["outputs"].get("decontamination"):
        out.append(f"Decontamination evidence per eval item: `{o['outputs']['decontamination']}`.")
    return out


COVERAGE_METRICS = {
    "train_count": "training rows", "production_count": "production rows", "baseline_count": "baseline rows",
    "p95_ratio": "P95 prompt tokens, production / training", "p95_ratio_total": "P95 total tokens, production / training",
    "max_ks": "largest KS statistic of a length feature", "max_psi": "largest PSI of a length feature",
    "uncovered_share": "share of production in gap clusters", "gap_clusters": "gap clusters",
    "domain_auc": "domain-classifier AUC (0.5: indistinguishable)", "nn_distance_p95": "P95 distance to training",
    "duplicate_share": "duplicate share (training)", "synthetic_share": "synthetic share (training)",
}
TRAIN_METRICS = {
    "global_step": "steps", "epochs": "epochs", "train_loss": "training loss", "eval_loss_before": "validation loss before",
    "eval_loss_best": "validation loss, best checkpoint", "tokens_seen": "tokens seen", "train_seconds": "seconds",
}


def _coverage(doc: dict[str, Any]) -> list[str]:
    """The gaps in words, and which length features were left out of the comparison and why."""
    out = []
    for g in doc.get("gaps") or []:
        out.append(f"- gap: cluster {g['cluster']} ({g['label']}): {g['production_share']:.1%} of production, "
                   f"{g['train_share']:.1%} of training")
    skipped = (doc.get("comparison") or {}).get("skipped") or []
    if skipped:
        out += [f"- not compared: {s['feature']}: {s['why']}" for s in skipped]
    return out or ["No gap: every production cluster is covered by training."]


def _counts(d: dict[str, Any]) -> str:
    """Counts inline, zeros left out: 'in 287, kept 205, rejected 82'."""
    return ", ".join(f"{k.replace('_', ' ')} {_num(v)}" for k, v in d.items() if v not in (0, None))


def _num(v: Any) -> Any:
    return f"{v:.3f}" if isinstance(v, float) else v


def _inline(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(v, default=str) if isinstance(v, (dict, list)) else _num(v)}" for k, v in d.items())
