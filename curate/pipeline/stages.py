"""The stages of `curate run`, each a thin adapter from a recipe section to one library call.

Data flow (every arrow is a Parquet file in the run's work folder):

    ingest -> validate -> dedupe (against eval) -> report (gaps) -> synth (on gaps)
           -> synth_validate -> final (dedupe seed + synthetic, against eval) -> train -> eval
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset import write_table
from curate.errors import ThresholdExceeded
from curate.pipeline.runner import StageResult

STAGES = ("ingest", "validate", "dedupe", "report", "synth", "synth_validate", "final", "train", "eval")


def _rel(recipe_dir: Path, p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else Path(os.path.normpath(recipe_dir / p))


def ingest_stage(data: dict[str, Any], recipe_dir: Path):
    from curate.ingest import ingest

    def run(out: Path) -> StageResult:
        outputs, counts = {}, {}
        for role, origin in (("train", data.get("train_origin", "seed")), ("production", "production"), ("eval", "eval")):
            files = data.get(role) or []
            if not files:
                continue
            s = ingest([_rel(recipe_dir, f) for f in files], out / f"{role}.parquet", origin=origin,
                       rejects=out / f"{role}.rejects.jsonl")
            outputs[role] = f"{role}.parquet"
            if s.rejects_file:
                outputs[f"{role}_rejects"] = f"{role}.rejects.jsonl"
            counts[role] = {"read": s.read, "written": s.written, "rejected": s.rejected}
        return StageResult(outputs, counts)

    return run


def validate_stage(source: Path, cfg: dict[str, Any], recipe_dir: Path):
    from curate.validate import validate

    def run(out: Path) -> StageResult:
        kwargs = dict(cfg)
        max_error_rate = kwargs.pop("max_error_rate", 1.0)
        if kwargs.get("output_schema"):
            kwargs["output_schema"] = str(_rel(recipe_dir, kwargs["output_schema"]))
        res = validate(source, output=out / "valid.parquet", quarantine=out / "quarantine.parquet",
                       max_error_rate=max_error_rate, **kwargs)
        summary = res.summary()
        if not res.passed:
            raise ThresholdExceeded(
                f"validate: {summary.get('quarantined')} of {summary.get('records')} records have errors, "
                f"over max_error_rate {max_error_rate}; see {out / 'quarantine.parquet'}"
            )
        return StageResult({"valid": "valid.parquet", "quarantine": "quarantine.parquet"},
                           {"in": summary.get("records"), "valid": summary.get("valid"),
                            "quarantined": summary.get("quarantined")}, _small(summary))

    return run


def dedupe_stage(source: Path | list[Path], cfg: dict[str, Any], against: Path | None, name: str = "deduped"):
    from curate.dedupe import dedupe

    def run(out: Path) -> StageResult:
        data: Any = source
        if isinstance(source, list):
            data = concat([pq.read_table(p) for p in source], drop_prefix="dedupe_")
        res = dedupe(data, out / f"{name}.parquet", against=[against] if against else None, **cfg)
        s = res.summary
        outputs = {"kept": f"{name}.parquet"}
        for key, path in res.paths.items():
            if key != "kept" and Path(path).exists():
                outputs[key] = Path(path).name
        counts = {"in": s.get("input_rows"), "kept": s.get("kept"), "removed": s.get("removed"),
                  **{k: s.get("removed_by_reason", {}).get(k, 0) for k in ("exact", "near", "contaminated")}}
        summary = {k: v for k, v in _small(s).items() if k != "outputs"}
        return StageResult(outputs, counts, summary)

    return run


def report_stage(train: Path, production: Path | None, cfg: dict[str, Any]):
    from curate.report import report

    def run(out: Path) -> StageResult:
        rep = report(train, production, html=out / "report.html", gaps=out / "gaps.parquet", **cfg)
        (out / "report.json").write_text(json.dumps(rep.json(), indent=2, default=str))
        if rep.failed:
            names = ", ".join(g.get("expr", str(g)) for g in rep.failed)
            raise ThresholdExceeded(f"report gate(s) failed: {names}; see {out / 'report.html'}")
        outputs = {"html": "report.html", "json": "report.json"}
        if (out / "gaps.parquet").exists():
            outputs["gaps"] = "gaps.parquet"
        gaps = rep.gap_table.num_rows if rep.gap_table is not None else 0
        return StageResult(outputs, {"gap_rows": gaps}, _small(rep.metrics))

    return run


def synth_stage(seeds: Path, cfg: dict[str, Any], recipe_dir: Path, cache: Path):
    from curate.synth import synthesize

    def run(out: Path) -> StageResult:
        kwargs = dict(cfg)
        recipe = kwargs.pop("recipe")
        if isinstance(recipe, str):
            recipe = str(_rel(recipe_dir, recipe))
        max_seeds = kwargs.pop("max_seeds", None)
        seed_file = seeds
        if max_seeds is not None:
            seed_file = out / "seeds.parquet"
            write_table(pq.read_table(seeds).slice(0, max_seeds), seed_file)
        s = synthesize(recipe, output=out / "synth.parquet", seeds=seed_file, cache_path=cache / "requests.sqlite",
                       base_dir=recipe_dir, show_progress=True, **kwargs)
        stop = s.stop_message({"max_total_tokens": "synth.max_total_tokens", "budget": "synth.budget"})
        if stop:  # an incomplete synth must not feed the later stages as if it were whole
            raise ThresholdExceeded(f"synth: {stop}; skipped requests are listed in {s.failures_file}")
        outputs = {"synth": "synth.parquet"}
        if s.failures_file and Path(s.failures_file).exists():
            outputs["failures"] = Path(s.failures_file).name
        counts = {k: getattr(s, k) for k in ("requested", "succeeded", "failed", "skipped_budget", "from_cache",
                                             "claims", "unsupported_claims", "flagged_rows")}
        return StageResult(outputs, counts, {"teacher": s.teacher, "recipe": s.recipe, "recipe_hash": s.recipe_hash,
                                             "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens})

    return run


def train_stage(data: Path, cfg: dict[str, Any], cache: Path):
    from curate.train import train

    def run(out: Path) -> StageResult:
        kwargs = dict(cfg)
        base = kwargs.pop("base", "embedded")
        # the run folder lives in the stage cache so a killed run resumes from its last checkpoint
        res = train(data, output=cache / "run", base=base, config=kwargs, resume=True)
        import shutil

        shutil.copytree(res.adapter_dir, out / "adapter")
        for name in ("run_card.json", "loss.jsonl", "loss.png"):
            if (res.run_dir / name).exists():
                shutil.copy(res.run_dir / name, out / name)
        outputs = {"adapter": "adapter"}
        outputs.update({n.split(".")[0] if n != "loss.png" else "loss_plot": n
                        for n in ("run_card.json", "loss.jsonl", "loss.png") if (out / n).exists()})
        return StageResult(outputs, res.counts, {"metrics": res.metrics, "stopped_early": res.stopped_early,
                                                 "base": base})

    return run


def eval_stage(data: Path, adapter: Path | None, cfg: dict[str, Any], recipe_dir: Path):
    from curate.evaluation import evaluate

    def run(out: Path) -> StageResult:
        kwargs = dict(cfg)
        if kwargs.get("output_schema"):
            kwargs["output_schema"] = str(_rel(recipe_dir, kwargs["output_schema"]))
        res = evaluate(data=data, adapters=[adapter] if adapter else [], output=out / "eval.parquet",
                       failures=out / "failures.parquet", **kwargs)
        (out / "eval.json").write_text(json.dumps(res.as_dict(), indent=2, default=str))
        outputs = {"rows": "eval.parquet", "json": "eval.json"}
        if (out / "failures.parquet").exists():
            outputs["failures"] = "failures.parquet"
        return StageResult(outputs, {"rows": res.rows, "failures": res.failures_count},
                           {"models": res.models, "summary": res.summary, "p95_input_tokens": res.p95_input_tokens})

    return run


def concat(tables: list[pa.Table], drop_prefix: str | None = None) -> pa.Table:
    """Stack tables whose stage columns differ (missing columns become null)."""
    if drop_prefix:
        tables = [t.drop_columns([c for c in t.column_names if c.startswith(drop_prefix)]) for t in tables]
    return pa.concat_tables(tables, promote_options="default")


def _small(d: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of a summary (lists of examples and tables stay in the stage's own files)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None))) or
            (isinstance(v, dict) and len(json.dumps(v, default=str)) < 2000)}
