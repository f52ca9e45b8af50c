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
               [[r.name, r.status if r.status != "skipped" else f"skipped: {r.reason}", r.seconds,
                 _inline(r.outcome.get("counts", {}))] for r in records]),
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
        parts += ["", "## Coverage against production", "", _table(["metric", "value"], [[k, v] for k, v in metrics.items()]),
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
                  f"{o['counts']['kept']} used, {o['counts']['rejected']} dropped ({_inline(o.get('reasons') or {})}).",
                  "", _table(["metric", "value"], [[k, v] for k, v in (o.get("metrics") or {}).items()])]
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
    rows = [[v["model"], v.get("data"), v.get(metric), *[(v["fields"].get(f) or {}).get("accuracy") for f in fields],
             v.get("format_rate"), ", ".join(f"{k}: {lab}" for k, lab in (v.get("collapsed") or {}).items())]
            for v in variants]
    out.append(_table(["model", "data", metric.replace("_", " "), *fields, "format rate", "collapsed on"], rows))
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
    if o.get("compliance"):
        out += ["", f"Output-format compliance: {_inline(o['compliance'])}."]
    return out


def _dedupe(o: dict[str, Any]) -> list[str]:
    c = o["counts"]
    out = [f"Rows in {c['in']}, kept {c['kept']}, removed {c['rejected']} ({_inline(o.get('reasons') or {})}); "
           f"{o.get('clusters')} clusters."]
    if o["outputs"].get("clusters"):
        out.append(f"\nClusters: `{o['outputs']['clusters']}`.")
    if o["outputs"].get("decontamination"):
        out.append(f"Decontamination evidence per eval item: `{o['outputs']['decontamination']}`.")
    return out


def _num(v: Any) -> Any:
    return f"{v:.3f}" if isinstance(v, float) else v


def _inline(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(v, default=str) if isinstance(v, (dict, list)) else _num(v)}" for k, v in d.items())
