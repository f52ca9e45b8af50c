"""`run_recipe()`: check the whole recipe, then walk the stage specs in order; unchanged stages are skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.console import console
from curate.engine import use
from curate.errors import UsageError
from curate.outputs import atomic_path
from curate.pipeline.card import write_card
from curate.pipeline.checks import preflight
from curate.pipeline.recipe import check_synth_recipe, load_run_recipe
from curate.pipeline.runner import Runner, StageRecord
from curate.pipeline.stages import ROUND_STAGES, STAGE_NAMES, STAGES, Run


def run_recipe(
    path: str | Path,
    *,
    skip: Sequence[str] = (),
    only: str | None = None,
    force: Sequence[str] = (),
    workdir: str | Path | None = None,
    base_url: str | None = None,
    trust: bool = False,
    engine: str | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run every stage of a recipe in order; returns the run manifest.

    Before the first stage, the whole recipe is checked: every section against its stage's config,
    the synth recipe with its templates, every path and secret against the policy (curate/pipeline/
    checks.py). `workdir` and `base_url` are the caller's own choices; `trust` lets the recipe read
    files outside its folder and the current directory, and choose the API key. `force` reruns a stage
    from scratch (training drops its checkpoints); `only` runs one stage on the others' last outputs.
    `engine` / `ray_address` override the recipe's `engine:` section (where the data stages run; the outputs,
    and so the stages' cache keys, are the same on either).
    """
    path = Path(path)
    for name in (*skip, *force, *([only] if only else [])):
        base, _, rnd = name.partition("-round")
        if base not in STAGE_NAMES or (rnd and (not rnd.isdigit() or name in skip)):
            raise UsageError(f"unknown stage '{name}'; stages: {', '.join(STAGE_NAMES)} (a round's stage for --force "
                             "and --only: train-round2, ...)")
    recipe, data = load_run_recipe(path)
    plan = preflight(data, path, stages=STAGE_NAMES, trust=trust, workdir=workdir, base_url=base_url,
                     ray_address=ray_address)
    check_synth_recipe(data, path, trust)
    if plan.synth_settings:
        recipe = recipe.model_copy(update={"synth": recipe.synth.build(recipe.synth, **plan.synth_settings)})
    for (section, name), update in plan.judge_settings.items():  # no key to a judge server the recipe chose
        cfg = getattr(recipe, section)
        judge = getattr(cfg, name).model_copy(update=update)
        recipe = recipe.model_copy(update={section: cfg.model_copy(update={name: judge})})
    skipped = set(skip) | set(recipe.skip)
    runner = Runner(plan.workdir, STAGE_NAMES, force=force, only=only)
    run = Run(recipe, path.parent, runner.cache_dir, synth_call=plan.synth_call, skipped=skipped)
    kind = engine or recipe.engine.kind
    with use(kind, (ray_address or recipe.engine.address) if kind == "ray" else None):
        stopped = _rounds(recipe, run, runner)
    if stopped:
        console.print(f"[bold]loop:[/] {stopped}")
    manifest = runner.manifest(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    manifest["final_dataset"] = str(run.artifacts["train"])
    manifest["rounds"] = run.round
    manifest["loop"] = stopped
    manifest["adapter"] = str(run.artifacts["adapter"]) if "adapter" in run.artifacts else None
    runner.work.record_file("manifest.json")
    with atomic_path(plan.workdir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    runner.work.record_file("DATASET_CARD.md")
    manifest["card"] = str(write_card(plan.workdir, recipe, runner.records, run.artifacts["train"]))
    _print_where(plan.workdir, runner.records, run.artifacts)
    return manifest


def _rounds(recipe: Any, run: Run, runner: Runner) -> str | None:
    """Every stage, round after round; why the loop stopped (None after a single round)."""
    stopped = None
    for rnd in range(1, recipe.loop.rounds + 1):
        run.round = rnd
        if rnd > 1:
            if "seeds" not in run.artifacts:
                stopped = f"round {rnd - 1}: the curated adapter failed no prompt; nothing to feed back"
                break
            for art in ("synthetic",):  # this round's synthetic rows are made anew
                run.artifacts.pop(art, None)
        specs = STAGES if rnd == 1 else [s for s in STAGES if s.name in ROUND_STAGES]
        for spec in (s for s in specs if s.listed(run)):  # an optional stage the recipe does not ask for is not listed
            _run_stage(run, runner, spec, spec.name if rnd == 1 else f"{spec.name}-round{rnd}")
        reached = _target_reached(recipe, runner.records[-1])
        if reached:
            stopped = f"round {rnd}: the curated adapter reached the target ({reached})"
            break
    else:
        stopped = f"ran all {recipe.loop.rounds} round(s)" if recipe.loop.rounds > 1 else None
    return stopped


def _run_stage(run: Run, runner: Runner, spec: Any, name: str) -> None:
    missing = [a for a in spec.needs if a not in run.artifacts]
    reason = "skipped by request" if spec.name in run.skipped else spec.absent(run) or (
        f"nothing to read ({', '.join(missing)})" if missing else None)
    if reason:
        runner.skipped(name, reason)
        return
    cfg = spec.settings(run)
    inputs = {a: run.artifacts[a] for a in (*spec.needs, *spec.uses) if a in run.artifacts}
    call = spec.resolved(run, cfg)

    def call_stage(folder: Path, fresh: bool, key: str) -> Any:
        run.key = key
        return spec.run(run, call, folder, fresh)

    config = cfg.to_dict() if cfg is not None else run.recipe.data.model_dump()
    if spec.section == "train" and run.recipe.data.mix():  # the mix is part of what a train stage's key says
        config = {**config, "mix": run.recipe.data.mix()}
    rec = runner.stage(name, config, inputs, spec.reads(run, cfg), call_stage, base=spec.name)
    run.artifacts = {a: p for a, p in run.artifacts.items() if a not in spec.makes}  # made anew, or not at all
    run.artifacts |= inputs  # what it read stays (a spec may make an artifact it also reads)
    if spec.made(rec.outcome):
        run.artifacts.update({a: rec.path(o) for a, o in spec.makes.items() if o in rec.outputs})


def _target_reached(recipe: Any, last: StageRecord) -> str | None:
    """The targets met by the curated adapter in the eval that just ran, or None (no target, or not all met)."""
    target = recipe.loop.target
    if not target or not last.name.startswith("eval") or last.status == "skipped":
        return None
    curated = next((v for v in last.outcome.get("variants", []) if v.get("data") == "curated"), None)
    if curated is None or any((curated.get(m) or 0) < t for m, t in target.items()):
        return None
    return ", ".join(f"{m} {curated[m]:.3f} >= {t}" for m, t in target.items())


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
