"""The run as data: each stage of `curate run` is one `Spec`, so adding a stage touches this list only.

A spec names the recipe section its settings come from, the artifacts it reads (earlier outputs:
train, raw, production, eval, seeds, synthetic, adapter, adapter_raw) and makes, why it may have
nothing to do, and the one library call it makes. Data flow (every arrow is a Parquet file in the
run's work folder):

    ingest -> validate -> dedupe (against eval) -> score (when the recipe has a score section) -> report (gaps
           are the seeds) -> synth (on the seeds)
           -> synth_validate -> final (dedupe seed + synthetic, against eval) -> final_report (coverage
           again) -> train_raw (the data as ingested) and train (the curated data) -> eval (base, raw,
           curated; the curated adapter's failures are the next round's seeds)

A round after the first runs ROUND_STAGES again on the grown dataset (curate/pipeline/run.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.config import StageConfig, option_of
from curate.outcome import StageOutcome
from curate.pipeline.recipe import SECTIONS, RunRecipe


@dataclass
class Run:
    """What the stages of one run share."""

    recipe: RunRecipe
    dir: Path  # the recipe's folder: relative paths in it are relative to this
    cache: Callable[[str], Path]  # WORKDIR/.cache/STAGE, for state that survives a killed stage
    artifacts: dict[str, Path] = field(default_factory=dict)
    synth_call: dict[str, Any] = field(default_factory=dict)  # trust and key settings for synthesize()
    skipped: set[str] = field(default_factory=set)  # stages the recipe or the command line skips
    key: str = ""  # the key of the stage being run
    round: int = 1
    train_keys: set[str] = field(default_factory=set)  # training runs of this run (raw, curated, rounds)

    def rel(self, p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() else Path(os.path.normpath(self.dir / p))


@dataclass(frozen=True)
class Spec:
    name: str
    section: str | None  # the recipe section its settings come from
    needs: tuple[str, ...]  # artifacts it cannot run without
    run: Callable[[Run, Any, Path, bool], StageOutcome]  # (run, settings, folder, fresh) -> outcome
    makes: dict[str, str] = field(default_factory=dict)  # artifact -> the outcome's output of that name
    uses: tuple[str, ...] = ()  # artifacts it reads when there are any
    absent: Callable[[Run], str | None] = lambda run: None  # why it has nothing to do, or None
    fixed: dict[str, Any] = field(default_factory=dict)  # settings the run decides (synth_validate, final)
    made: Callable[[dict[str, Any]], bool] = lambda outcome: True  # whether its outcome makes its artifacts
    listed: Callable[[Run], bool] = lambda run: True  # False: not part of this run at all (not even as skipped)

    def settings(self, run: Run) -> StageConfig | None:
        """The stage's config: the recipe's section with the run's fixed settings."""
        if self.section is None:
            return None
        cfg = run.recipe.section(self.section)
        return SECTIONS[self.section].build(cfg, **self.fixed) if cfg is not None or self.fixed else cfg

    def resolved(self, run: Run, cfg: StageConfig | None) -> StageConfig | None:
        """The settings with the paths they name made relative to the recipe's folder, for the call.

        A model or schema setting may be a name instead (`embedded`, `openai-chat`): it stays as it is
        unless a file or folder of that name is beside the recipe.
        """
        if cfg is None:
            return None
        update: dict[str, Any] = {}
        for name, info in type(cfg).model_fields.items():
            kind, value = option_of(info).kind, getattr(cfg, name)
            if kind in ("file", "files", "folder", "model", "schema") and isinstance(value, (str, list)):
                values = [value] if isinstance(value, str) else value
                fixed = [str(run.rel(v)) if kind in ("file", "files", "folder") or run.rel(v).exists() else v
                         for v in values]
                update[name] = fixed[0] if isinstance(value, str) else fixed
        return cfg.model_copy(update=update)

    def reads(self, run: Run, cfg: StageConfig | None) -> dict[str, tuple[Path, bool]]:
        """Every file its settings name, with whether a quick fingerprint suffices (model folders)."""
        out: dict[str, tuple[Path, bool]] = {}
        if self.name == "ingest":
            for role in ("train", "production", "eval"):
                for i, f in enumerate(run.recipe.data.files(role)):
                    out[f"data.{role}[{i}]"] = (run.rel(f), False)
            return out
        if cfg is None:
            return out
        for name, kind, p in self.resolved(run, cfg).paths():
            if kind in ("file", "files", "folder", "schema") and p.exists():
                out[f"{self.section}.{name}:{p.name}"] = (p, False)
            elif kind == "model" and p.exists():
                out[f"{self.section}.{name}:{p.name}"] = (p, True)
        if self.section == "synth":
            out.update(_synth_reads(run, cfg))
        if self.section == "score" and cfg.judge is not None and cfg.judge.rubric_file:
            p = run.rel(cfg.judge.rubric_file)  # a nested setting: the loop above sees top-level ones only
            out[f"score.judge.rubric_file:{p.name}"] = (p, False)
        return out


def _synth_reads(run: Run, cfg: Any) -> dict[str, tuple[Path, bool]]:
    """A synth recipe's grounding documents are read too: editing one reruns synth."""
    from curate.synth.recipe import grounding_files

    out = {f"synth.grounding:{p}": (p, False) for p in grounding_files(cfg.recipe, run.dir)}
    schema = _task_schema(run)
    if schema is not None and schema.is_file():
        out[f"validate.output_schema:{schema.name}"] = (schema, False)
    return out


# ---------------------------------------------------------------- the library calls


def _ingest(run: Run, cfg: None, out: Path, fresh: bool) -> StageOutcome:
    from curate.ingest import ingest

    data = run.recipe.data
    outputs: dict[str, str] = {}
    per_role: dict[str, Any] = {}
    counts = {"in": 0, "kept": 0, "rejected": 0}
    for role, origin in (("train", data.train_origin), ("production", "production"), ("eval", "eval")):
        files = data.files(role)
        if not files:
            continue
        # the run keeps going past rejects (they are listed in ROLE.rejects.jsonl); an empty training set stops it
        o = ingest([run.rel(f) for f in files], out / f"{role}.parquet", origin=origin, max_reject_rate=1.0,
                   rejects=out / f"{role}.rejects.jsonl")
        outputs[role] = o.outputs["data"]
        if "rejects" in o.outputs:
            outputs[f"{role}_rejects"] = o.outputs["rejects"]
        per_role[role] = {"counts": o.counts, "formats": o.summary["formats"], "warnings": o.summary["warnings"]}
        counts = {k: counts[k] + o.counts[k] for k in counts}
    failure = None if per_role["train"]["counts"]["kept"] else "no training records could be read"
    return StageOutcome("ingest", counts, outputs, {"roles": per_role}, failure=failure)


def _validate(run: Run, cfg: Any, out: Path, fresh: bool, source: str = "train") -> StageOutcome:
    from curate.validate import validate

    return validate(run.artifacts[source], out / "valid.parquet", cfg, quarantine=out / "quarantine.parquet")


def _dedupe(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.dedupe import dedupe

    against = [run.artifacts["eval"]] if "eval" in run.artifacts else []
    return dedupe(run.artifacts["train"], out / "deduped.parquet", cfg, against=against,
                  cache_dir=_pair_judge_cache(run, cfg))


def _pair_judge_cache(run: Run, cfg: Any) -> Path | None:
    """The semantic judge's cache, shared by dedupe and final (final's rows from train are pairs judged before), and
    outliving the stage folders: a killed or rerun stage sends no finished request again."""
    return run.cache("dedupe") / "judge" if cfg is not None and cfg.semantic_judge is not None else None


def _score(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.score import score

    if cfg.judge is not None and cfg.judge.rubric_file:  # relative to the recipe, as every path in it
        judge = cfg.judge.model_copy(update={"rubric_file": str(run.rel(cfg.judge.rubric_file))})
        cfg = cfg.model_copy(update={"judge": judge})
    # the judge's cache outlives the stage folder: a killed or rerun stage sends no finished request again
    return score(run.artifacts["train"], out / "scored.parquet", cfg, quarantine=out / "quarantine.parquet",
                 cache_dir=run.cache("score") / "judge")


def _final(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.dedupe import dedupe

    merged = run.cache("final") / "merged.parquet"
    _concat([run.artifacts["train"], run.artifacts["synthetic"]], merged)
    try:
        against = [run.artifacts["eval"]] if "eval" in run.artifacts else []
        return dedupe(merged, out / "dataset.parquet", cfg, against=against, cache_dir=_pair_judge_cache(run, cfg))
    finally:
        merged.unlink(missing_ok=True)


def _concat(paths: list[Path], dest: Path) -> None:
    """The rows of several canonical Parquet files, streamed into one (a column one file lacks is null there;
    the earlier dedupe's columns are dropped, the merged rows are deduplicated anew)."""
    from curate.inputs import open_input
    from curate.outputs import ParquetSink

    inputs = [open_input(p) for p in paths]
    fields: dict[str, pa.Field] = {}
    for src in inputs:
        for f in src.schema:
            if not f.name.startswith("dedupe_"):
                fields.setdefault(f.name, f)
    schema = pa.schema(list(fields.values()))
    with ParquetSink(dest, schema) as sink:
        for src in inputs:
            for batch in src.batches():
                cols = [batch.column(f.name) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
                        for f in schema]
                sink.write_table(pa.Table.from_arrays(cols, schema=schema))


def _report(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.report import report

    res = report(run.artifacts["train"], run.artifacts["production"], cfg, html=out / "report.html",
                 gaps=out / "gaps.parquet")
    (out / "report.json").write_text(json.dumps(res.to_dict()["report"], indent=2, default=str))
    res.outputs["json"] = str(out / "report.json")
    return res


def _synth(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.synth import synthesize

    # an inline synth recipe's paths are relative to the run recipe; a synth recipe file's, to that file
    base = {"base_dir": run.dir} if isinstance(cfg.recipe, dict) else {}
    schema = _task_schema(run)
    # absolute: base_dir (the recipe's folder) applies to the recipe's own paths, not to the run's files
    return synthesize(out / "synth.parquet", cfg, seeds=run.artifacts["seeds"].resolve(),
                      output_schema=schema.resolve() if schema else None, reference=run.artifacts["train"],
                      cache_path=run.cache("synth") / "requests.sqlite", **base, **run.synth_call)


def _task_schema(run: Run) -> Path | None:
    """The task's output schema (validate's), whose enum values are labels, not claims to check."""
    cfg = run.recipe.section("validate")
    return run.rel(cfg.output_schema) if cfg is not None and isinstance(cfg.output_schema, str) else None


def _train(run: Run, cfg: Any, out: Path, fresh: bool, data: str = "train") -> StageOutcome:
    from curate.train import train

    # the run folder lives in the stage cache, one per key, so a killed run resumes from its last
    # checkpoint and changed data or settings start a new one; --force train starts it from scratch
    runs = run.cache("train")
    pick = None
    if cfg.base == "auto":
        pick = _picked_base(run)
        cfg = cfg.build(cfg, base=pick["chosen"])
    mix = run.recipe.data.mix()
    if mix:  # the validation rows are drawn first, then the training rows are mixed: no repeat reaches validation
        rows, val, mixed = _mixed(run, run.artifacts[data], cfg, mix, out)
        res = train(rows, runs / run.key, cfg, val=val, resume=not fresh)
        res.summary["mix"] = mixed
    else:
        res = train(run.artifacts[data], runs / run.key, cfg, resume=not fresh)
    if pick is not None:
        res.summary["base_pick"] = pick
    keep = {run.key, *run.train_keys}
    for old in runs.iterdir():  # runs of other keys will not resume any more
        if old.name not in keep and old.is_dir():
            shutil.rmtree(old)
    run.train_keys.add(run.key)
    outputs = {}
    for name, p in res.outputs.items():
        src = Path(p)
        dst = out / src.name
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        outputs[name] = str(dst)
    res.outputs = outputs
    return res


def _mixed(run: Run, data: Path, cfg: Any, mix: dict[str, dict[str, float]], out: Path
           ) -> tuple[Path, Path, list[dict[str, Any]]]:
    """data.train's weights or counts applied to a training set: the validation share (cfg.val_fraction, drawn from
    cfg.seed) is set aside first; then each weighted file gets its share of the remaining rows of weighted files
    (count: exactly that many), drawn without repeats while it has rows enough and with repeats beyond; files
    without a weight (and synthetic rows) stay whole. Writes OUT/mix.parquet and OUT/val.parquet."""
    import numpy as np
    import pyarrow.parquet as pq

    from curate.outputs import write_table

    table = pq.read_table(data)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(table.num_rows)
    n_val = round(table.num_rows * cfg.val_fraction)
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    where = {run.rel(p).resolve(): p for p in mix}
    files = [where.get(Path(s["file"]).resolve()) if s and s.get("file") else None
             for s in table.column("source").to_pylist()]
    by_file: dict[str, list[int]] = {p: [] for p in mix}
    others: list[int] = []
    for r in train_rows.tolist():
        (by_file[files[r]] if files[r] is not None else others).append(r)
    pool = sum(len(v) for v in by_file.values())
    weights = sum(m.get("weight", 0) for m in mix.values())
    picked, report = list(others), []
    for p, m in mix.items():
        have = by_file[p]
        want = m["count"] if "count" in m else round(pool * m["weight"] / weights)
        if not have:
            take: list[int] = []
        elif want <= len(have):
            take = sorted(rng.choice(have, want, replace=False).tolist())
        else:
            take = have + sorted(rng.choice(have, want - len(have), replace=True).tolist())
        picked += take
        report.append({"file": p, **m, "available": len(have), "drawn": len(take),
                       "repeats": max(0, len(take) - len(have))})
    total = max(len(picked), 1)
    for r in report:
        r["share"] = round(r["drawn"] / total, 4)
    report.append({"file": "(files without a weight, and synthetic rows)", "available": len(others),
                   "drawn": len(others), "repeats": 0, "share": round(len(others) / total, 4)})
    rows_path, val_path = out / "mix.parquet", out / "val.parquet"
    write_table(table.take(np.asarray(sorted(picked), dtype=np.int64)), rows_path)
    write_table(table.take(val_rows), val_path)
    return rows_path, val_path, report


def _picked_base(run: Run) -> dict[str, Any]:
    """train.base: auto: `curate pick-base` on the curated training data of the first round, once per run, so the
    raw and curated adapters, eval and later rounds share one base (saved: a resumed run does not pick again)."""
    from curate.dataset import content_hash_file
    from curate.pickbase import pick_base

    saved = run.cache("pick_base") / "pick.json"
    data = run.artifacts["train"]
    sha = content_hash_file(data)
    if saved.is_file():
        pick = json.loads(saved.read_text())
        if run.round > 1 or pick["data_sha256"] == sha:
            return pick
    out = pick_base(data)
    pick = {"chosen": out.summary["chosen"], "data_sha256": sha, "candidates": out.summary["candidates"],
            "notes": out.summary["notes"]}
    saved.write_text(json.dumps(pick, indent=2))
    return pick


def _eval(run: Run, cfg: Any, out: Path, fresh: bool) -> StageOutcome:
    from curate.evaluation import evaluate

    train_cfg = run.recipe.train
    if train_cfg is not None and "base" not in cfg.model_fields_set:
        base = _picked_base(run)["chosen"] if train_cfg.base == "auto" else train_cfg.base
        cfg = cfg.build(cfg, base=base)  # evaluate the base the adapter was trained on
    adapters = {name: run.artifacts[a] for name, a in (("raw", "adapter_raw"), ("curated", "adapter"))
                if a in run.artifacts}
    pairs = [("curated", "raw")] if {"curated", "raw"} <= adapters.keys() else []
    res = evaluate(run.artifacts["eval"], adapters, out / "eval.parquet", cfg, failures=out / "failures.parquet",
                   train_data=run.artifacts["train"], round=run.round, compare=pairs,
                   failures_of=["curated"] if "curated" in adapters else None)
    (out / "eval.json").write_text(json.dumps(res.to_dict(), indent=2, default=str))
    res.outputs["json"] = str(out / "eval.json")
    return res


def _no_section(section: str) -> Callable[[Run], str | None]:
    return lambda run: None if run.recipe.section(section) is not None else f"no {section} section"


def _no_eval(run: Run) -> str | None:
    return None if "eval" in run.artifacts else "no eval data"


def _no_raw(run: Run) -> str | None:
    if not run.recipe.loop.compare_raw:
        return "loop.compare_raw is off"
    return _no_section("train")(run) or _no_section("eval")(run) or _no_eval(run)


STAGES: tuple[Spec, ...] = (
    Spec("ingest", None, (), _ingest,
         makes={"train": "train", "raw": "train", "production": "production", "eval": "eval"}),
    Spec("validate", "validate", ("train",), _validate, makes={"train": "valid"}),
    Spec("dedupe", "dedupe", ("train",), _dedupe, makes={"train": "kept"}, uses=("eval",)),
    Spec("score", "score", ("train",), _score, makes={"train": "kept"},
         listed=lambda run: run.recipe.section("score") is not None),
    Spec("report", "report", ("train", "production"), _report, makes={"gaps": "gaps", "seeds": "gaps"},
         made=lambda outcome: outcome["counts"].get("gap_rows", 0) > 0,  # no gap rows: nothing for synth
         absent=lambda run: None if "production" in run.artifacts else "no production data in the recipe"),
    Spec("synth", "synth", ("seeds",), _synth, makes={"synthetic": "data"},
         made=lambda outcome: outcome["counts"].get("succeeded", 0) > 0,  # no rows: nothing to validate or merge
         absent=lambda run: _no_section("synth")(run) or (None if "seeds" in run.artifacts else "no seeds: the "
                                                          "report found no gaps, or eval no failures")),
    Spec("synth_validate", "validate", ("synthetic",),
         lambda run, cfg, out, fresh: _validate(run, cfg, out, fresh, "synthetic"), makes={"synthetic": "valid"},
         absent=lambda run: "validate is skipped" if "validate" in run.skipped else None,
         fixed={"max_error_rate": 1.0}),  # synthetic rows with errors are quarantined, never fatal
    Spec("final", "dedupe", ("train", "synthetic"), _final, makes={"train": "kept"}, uses=("eval",),
         fixed={"keep": "origin"}),  # production and seed rows are kept over synthetic ones
    # the dataset synth grew is checked against production again: do the gaps close?
    Spec("final_report", "report", ("train", "production", "synthetic"), _report,
         absent=lambda run: None if "production" in run.artifacts else "no production data in the recipe"),
    Spec("train_raw", "train", ("raw",), lambda run, cfg, out, fresh: _train(run, cfg, out, fresh, "raw"),
         makes={"adapter_raw": "adapter"}, absent=_no_raw),
    Spec("train", "train", ("train",), _train, makes={"adapter": "adapter"}, absent=_no_section("train")),
    Spec("eval", "eval", ("eval",), _eval, uses=("adapter", "adapter_raw"), makes={"seeds": "failures"},
         made=lambda outcome: bool(outcome["outputs"].get("failures")),
         absent=lambda run: _no_section("eval")(run) or _no_eval(run)),
)
# a round after the first: synth on the last eval's failures, and everything that follows from it
ROUND_STAGES = ("synth", "synth_validate", "final", "final_report", "train", "eval")
STAGE_NAMES = tuple(s.name for s in STAGES)

