"""`run_recipe()`: check the whole recipe, then walk the stage specs in order; unchanged stages are skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.console import console
from curate.errors import UsageError
from curate.outputs import atomic_path
from curate.pipeline.card import write_card
from curate.pipeline.checks import preflight
from curate.pipeline.recipe import check_synth_recipe, load_run_recipe
from curate.pipeline.runner import Runner, StageRecord
from curate.pipeline.stages import STAGE_NAMES, STAGES, Run


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
    """Run every stage of a recipe in order; returns the run manifest.

    Before the first stage, the whole recipe is checked: every section against its stage's config,
    the synth recipe with its templates, every path and secret against the policy (curate/pipeline/
    checks.py). `workdir` and `base_url` are the caller's own choices; `trust` lets the recipe read
    files outside its folder and the current directory, and choose the API key. `force` reruns a stage
    from scratch (training drops its checkpoints); `only` runs one stage on the others' last outputs.
    """
    path = Path(path)
    for name in (*skip, *force, *([only] if only else [])):
        if name not in STAGE_NAMES:
            raise UsageError(f"unknown stage '{name}'; stages: {', '.join(STAGE_NAMES)}")
    recipe, data = load_run_recipe(path)
    plan = preflight(data, path, stages=STAGE_NAMES, trust=trust, workdir=workdir, base_url=base_url)
    check_synth_recipe(data, path, trust)
    if plan.synth_settings:
        recipe = recipe.model_copy(update={"synth": recipe.synth.build(recipe.synth, **plan.synth_settings)})
    skipped = set(skip) | set(recipe.skip)
    runner = Runner(plan.workdir, STAGE_NAMES, force=force, only=only)
    run = Run(recipe, path.parent, runner.cache_dir, synth_call=plan.synth_call, skipped=skipped)
    for spec in STAGES:
        missing = [a for a in spec.needs if a not in run.artifacts]
        reason = "skipped by request" if spec.name in skipped else spec.absent(run) or (
            f"nothing to read ({', '.join(missing)})" if missing else None)
        if reason:
            runner.skipped(spec.name, reason)
            continue
        cfg = spec.settings(run)
        inputs = {a: run.artifacts[a] for a in (*spec.needs, *spec.uses) if a in run.artifacts}
        call = spec.resolved(run, cfg)
        def call_stage(folder: Path, fresh: bool, key: str, spec=spec, call=call):
            run.key = key
            return spec.run(run, call, folder, fresh)

        rec = runner.stage(spec.name, cfg.to_dict() if cfg is not None else recipe.data.model_dump(),
                           inputs, spec.reads(run, cfg), call_stage)
        if spec.made(rec.outcome):
            run.artifacts.update({a: rec.path(o) for a, o in spec.makes.items() if o in rec.outputs})
    manifest = runner.manifest(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    manifest["final_dataset"] = str(run.artifacts["train"])
    manifest["adapter"] = str(run.artifacts["adapter"]) if "adapter" in run.artifacts else None
    runner.work.record_file("manifest.json")
    with atomic_path(plan.workdir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    runner.work.record_file("DATASET_CARD.md")
    manifest["card"] = str(write_card(plan.workdir, recipe, runner.records, run.artifacts["train"]))
    _print_where(plan.workdir, runner.records, run.artifacts)
    return manifest


def _print_where(work: Path, records: list[StageRecord], artifacts: dict[str, Path]) -> None:
    by = {r.name: r for r in records}
    lines = [("dataset", artifacts["train"]), ("dataset card", work / "DATASET_CARD.md"),
             ("manifest", work / "manifest.json")]
    if "html" in getattr(by.get("report"), "outputs", {}):
        lines.append(("report", by["report"].path("html")))
    if "adapter" in artifacts:
        lines.append(("adapter", artifacts["adapter"]))
    if "json" in getattr(by.get("eval"), "outputs", {}):
        lines.append(("eval results", by["eval"].path("json")))
    console.rule("[bold]done")
    for label, p in lines:
        console.print(f"{label:>13}: {p}")
