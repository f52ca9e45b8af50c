"""`curate run RECIPE`: the whole loop from one YAML recipe, resumable, with a manifest and a dataset card.

    from curate.pipeline import run_recipe
    manifest = run_recipe("recipes/demo.yaml")

A recipe may come from someone else: before any stage runs, curate/pipeline/checks.py refuses paths
outside the recipe's folder and the current directory, a recipe's choice of API key, and a work
folder curate did not make (unless `trust=True`, except the work folder rules).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.console import console
from curate.dataset import atomic_path
from curate.errors import UsageError
from curate.pipeline import stages as st
from curate.pipeline.card import write_card
from curate.pipeline.checks import preflight
from curate.pipeline.runner import Runner, StageRecord
from curate.recipe import load_recipe

__all__ = ["STAGES", "run_recipe"]
STAGES = st.STAGES


def run_recipe(
    path: str | Path,
    *,
    skip: Sequence[str] = (),
    only: str | None = None,
    force: Sequence[str] = (),
    workdir: str | Path | None = None,
    base_url: str | None = None,
    trust: bool = False,
) -> dict[str, Any]:
    """Run every stage of a recipe in order; unchanged stages are skipped. Returns the run manifest.

    `workdir` and `base_url` are the caller's own choices; `trust` lets the recipe read files outside its
    folder and the current directory and choose the API key (see curate/pipeline/checks.py)."""
    path = Path(path)
    recipe = load_recipe(path, "run-recipe")
    for name in (*skip, *force, *([only] if only else [])):
        if name not in STAGES:
            raise UsageError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    skip = set(skip) | set(recipe.get("skip", []))
    rdir = path.parent
    plan = preflight(recipe, path, stages=STAGES, trust=trust, workdir=workdir, base_url=base_url)
    work = plan.workdir
    runner = Runner(work, force=tuple(force), only=only, stages=STAGES)
    data = recipe["data"]

    ing = runner.stage("ingest", {f"{k}[{i}]": st._rel(rdir, f) for k in ("train", "production", "eval")
                                  for i, f in enumerate(data.get(k) or [])},
                       {k: v for k, v in data.items()}, st.ingest_stage(data, rdir))
    current = ing.path("train")
    production = ing.path("production") if "production" in ing.outputs else None
    evalset = ing.path("eval") if "eval" in ing.outputs else None
    vcfg = dict(recipe.get("validate") or {})

    if "validate" in skip:
        runner.skipped("validate", "skipped by request")
    else:
        current = runner.stage("validate", {"data": current}, vcfg, st.validate_stage(current, vcfg, rdir)).path("valid")

    dcfg = dict(recipe.get("dedupe") or {})
    if "dedupe" in skip:
        runner.skipped("dedupe", "skipped by request")
    else:
        current = runner.stage("dedupe", {"data": current, "against": evalset}, dcfg,
                               st.dedupe_stage(current, dcfg, evalset)).path("kept")

    gaps = None
    rcfg = dict(recipe.get("report") or {})
    if "report" in skip or production is None:
        runner.skipped("report", "skipped by request" if "report" in skip else "no production data in the recipe")
    else:
        rep = runner.stage("report", {"train": current, "production": production}, rcfg,
                           st.report_stage(current, production, rcfg))
        gaps = rep.path("gaps") if "gaps" in rep.outputs and rep.counts.get("gap_rows") else None

    synthetic = None
    scfg = plan.synth_config
    if "synth" in skip or not scfg or gaps is None:
        why = "skipped by request" if "synth" in skip else "no synth section" if not scfg else "the report found no gaps"
        runner.skipped("synth", why)
    else:
        rec = runner.stage("synth", {"seeds": gaps, **_recipe_file(scfg, rdir)}, scfg,
                           st.synth_stage(gaps, {**scfg, **plan.synth_call}, rdir, runner.cache_dir("synth")))
        synthetic = rec.path("synth")
        if "validate" not in skip and "synth_validate" not in skip:
            synthetic = runner.stage("synth_validate", {"data": synthetic}, vcfg,
                                     st.validate_stage(synthetic, {**vcfg, "max_error_rate": 1.0}, rdir)).path("valid")

    if synthetic is not None and "final" not in skip:
        current = runner.stage("final", {"data": current, "synthetic": synthetic, "against": evalset},
                               {**dcfg, "keep": "origin"},
                               st.dedupe_stage([current, synthetic], {**dcfg, "keep": "origin"}, evalset, "dataset")
                               ).path("kept")
    else:
        runner.skipped("final", "no synthetic rows to merge")

    adapter = None
    tcfg = recipe.get("train")
    if "train" in skip or tcfg is None:
        runner.skipped("train", "skipped by request" if "train" in skip else "no train section")
    else:
        tr = runner.stage("train", {"data": current}, tcfg, st.train_stage(current, tcfg, runner.cache_dir("train")))
        adapter = tr.path("adapter")

    ecfg = recipe.get("eval")
    if "eval" in skip or ecfg is None or evalset is None:
        runner.skipped("eval", "skipped by request" if "eval" in skip else "no eval section or eval data")
    else:
        ecfg = {"base": (tcfg or {}).get("base", "embedded"), **ecfg}
        runner.stage("eval", {"data": evalset, "adapter": adapter}, ecfg, st.eval_stage(evalset, adapter, ecfg, rdir))

    manifest = runner.manifest(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    manifest["final_dataset"] = str(current)
    manifest["adapter"] = str(adapter) if adapter else None
    runner.work.record_file("manifest.json")
    with atomic_path(work / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    runner.work.record_file("DATASET_CARD.md")
    manifest["card"] = str(write_card(work, recipe, runner.records, current))
    _print_where(work, runner.records, current, adapter)
    return manifest


def _recipe_file(scfg: dict[str, Any], rdir: Path) -> dict[str, Path]:
    """A synth recipe given as a file is an input too: editing it reruns synth."""
    r = scfg.get("recipe")
    return {"recipe": st._rel(rdir, r)} if isinstance(r, str) else {}


def _print_where(work: Path, records: list[StageRecord], dataset: Path, adapter: Path | None) -> None:
    by = {r.name: r for r in records}
    lines = [("dataset", dataset), ("dataset card", work / "DATASET_CARD.md"), ("manifest", work / "manifest.json")]
    if "report" in by and by["report"].outputs:
        lines.append(("report", by["report"].path("html")))
    if adapter:
        lines.append(("adapter", adapter))
    if "eval" in by and by["eval"].outputs:
        lines.append(("eval results", by["eval"].path("json")))
    console.rule("[bold]done")
    for label, p in lines:
        console.print(f"{label:>13}: {p}")
