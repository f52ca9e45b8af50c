"""`score()`: per-row quality scores as score_* columns, and the `keep` rules that quarantine the rows failing them.

The input streams through curate.inputs.open_input in batches of `batch_size` rows; each batch is scored
(text statistics always, perplexity and the judge when the settings ask), checked against the rules and
written, kept rows to the output and the others to the quarantine, before the next batch is read. Between
batches only numbers stay (one float a row and score column, for the distributions).

A score_* column this run computes replaces one of the same name in the input; other columns pass through,
so a rule may name an earlier stage's column (validate_tokens) or an earlier score run's. The quarantine has
every column of the output, plus `score_row` (the row's 1-based number in the input) and `reason`: each rule
the row fails with the row's values (`score_judge >= 3: false (score_judge = 2)`), or the missing score that
left a rule undecided (`score_judge >= 3: score_judge missing (judge: timed out)`). Counts balance:
in = kept + rejected (quarantined).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.console import progress
from curate.errors import UsageError
from curate.inputs import Source, open_input
from curate.outcome import StageOutcome
from curate.outputs import OutputSet, ParquetSink
from curate.score.config import ScoreConfig
from curate.score.distribution import Distributions
from curate.score.gate import Rule, parse_rules
from curate.score.perplexity import FIELDS as PERPLEXITY_FIELDS
from curate.score.stats import FIELDS as TEXT_FIELDS
from curate.score.stats import identifier, text_stats

JUDGE_FIELDS = {"score_judge": pa.int64(), "score_judge_reason": pa.string()}
PARQUET_READ = {"pre_buffer": False, "buffer_size": 8 << 20}  # as validate reads: memory bounded by the batch


def output_schema(schema: pa.Schema, cfg: ScoreConfig) -> pa.Schema:
    """The input's columns (less the score_* columns computed anew), then this run's score_* columns."""
    fields = {**TEXT_FIELDS, **PERPLEXITY_FIELDS, **JUDGE_FIELDS}
    ours = [pa.field(name, fields[name]) for name in cfg.columns()]
    names = {f.name for f in ours}
    return pa.schema([f for f in schema if f.name not in names] + ours)


def quarantine_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field("score_row", pa.int64()), pa.field("reason", pa.string()), *schema])


def default_quarantine(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(f"{out.name.removesuffix('.parquet')}.quarantine.parquet")


class _Judge:
    """The judge of the settings, called batch by batch; its counts summed, its budget shared by the calls."""

    def __init__(self, settings: Any, cache_dir: Path, stack: ExitStack):
        self.settings, self.cache_dir, self.stack = settings, cache_dir, stack
        self.endpoint: Any = None  # opened at the first batch, once for the run ('local' starts its server once)
        self.counts: dict[str, float] = {}
        self.seconds = 0.0

    def __call__(self, batch: pa.RecordBatch) -> dict[str, pa.Array]:
        from curate.score import judge as jmod  # looked up at call time: a test may stand in for it

        settings, spent = self.settings, self.counts
        update: dict[str, Any] = {}  # the limits are the run's, not each batch's
        if getattr(settings, "budget", None) is not None:
            update["budget"] = max(0.0, settings.budget - spent.get("spent", 0.0))
        if getattr(settings, "max_total_tokens", None) is not None:
            used = spent.get("prompt_tokens", 0) + spent.get("completion_tokens", 0)
            update["max_total_tokens"] = max(1, int(settings.max_total_tokens - used))
        if update:
            settings = settings.model_copy(update=update)
        rows = batch.select(["id", "messages"]).to_pylist()
        t0 = time.perf_counter()
        if self.endpoint is None:
            self.endpoint = self.stack.enter_context(jmod.open_endpoint(self.settings))
        run = jmod.judge_at(self.endpoint, rows, settings, cache_dir=self.cache_dir, progress=False)  # our bar
        self.seconds += time.perf_counter() - t0
        if len(run.verdicts) != len(rows):
            raise RuntimeError(f"the judge returned {len(run.verdicts)} verdicts for {len(rows)} rows")
        for k, v in run.counts.items():
            self.counts[k] = round(self.counts.get(k, 0) + v, 6)
        scores = [v.score if v.score is not None and 1 <= v.score <= 5 else None for v in run.verdicts]
        reasons = [v.reason if s is not None else (v.error or v.reason or "no verdict")
                   for v, s in zip(run.verdicts, scores)]
        return {"score_judge": pa.array(scores, pa.int64()), "score_judge_reason": pa.array(reasons, pa.string())}


class _Gate:
    """The rules over a scored batch: which rows stay, and the reason of each that does not."""

    def __init__(self, rules: list[Rule], missing: str):
        self.rules, self.missing = rules, missing
        self.failed = [0] * len(rules)
        self.undecided = [0] * len(rules)
        self.kept_undecided = self.quarantined_undecided = 0

    def split(self, table: pa.Table) -> tuple[np.ndarray, list[str]]:
        """(a bool mask of the rows kept, the reasons of the others in order)."""
        n = table.num_rows
        if not self.rules:
            return np.ones(n, dtype=bool), []
        false = np.zeros((len(self.rules), n), dtype=bool)
        unknown = np.zeros((len(self.rules), n), dtype=bool)
        for k, rule in enumerate(self.rules):
            res = rule.evaluate(table)
            false[k] = np.asarray(pc.invert(res).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            unknown[k] = np.asarray(res.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            self.failed[k] += int(false[k].sum())
            self.undecided[k] += int(unknown[k].sum())
        any_false, any_unknown = false.any(axis=0), unknown.any(axis=0)
        undecided = any_unknown & ~any_false
        if self.missing == "keep":
            self.kept_undecided += int(undecided.sum())
            keep = ~any_false
        else:
            self.quarantined_undecided += int(undecided.sum())
            keep = ~any_false & ~any_unknown
        out = np.flatnonzero(~keep)
        if out.size == 0:
            return keep, []
        named = list(dict.fromkeys(c for r in self.rules for c in r.columns))
        if "score_judge" in named and "score_judge_reason" in table.column_names:
            named.append("score_judge_reason")
        rows = table.select(named).take(pa.array(out)).to_pylist()
        reasons = []
        for i, row in zip(out.tolist(), rows):
            parts = []
            for k, rule in enumerate(self.rules):
                if false[k, i]:
                    parts.append(f"{rule.text}: false ({rule.values(row)})")
                elif unknown[k, i]:
                    gone = [_missing(c, row) for c in rule.missing(row)]
                    parts.append(f"{rule.text}: {', '.join(gone)}")
            reasons.append("; ".join(parts))
        return keep, reasons

    def summary(self) -> dict[str, Any]:
        return {"rules": [{"rule": r.text, "failed": f, "undecided": u}
                          for r, f, u in zip(self.rules, self.failed, self.undecided)],
                "missing": self.missing, "undecided_kept": self.kept_undecided,
                "undecided_quarantined": self.quarantined_undecided}


def _missing(column: str, row: dict[str, Any]) -> str:
    why = row.get("score_judge_reason") if column == "score_judge" else None
    return f"{column} missing" + (f" (judge: {why})" if why else "")


def score(data: Source, output: str | Path | None = None, config: ScoreConfig | Mapping[str, Any] | None = None, *,
          quarantine: str | Path | None = None, cache_dir: str | Path | None = None,
          **overrides: Any) -> StageOutcome:
    """Score every row of `data`; write the kept rows to `output` and the others to `quarantine` (default beside
    the output: OUT.quarantine.parquet). Without an output both are returned as tables (outcome.kept /
    outcome.rejected). `cache_dir`: the judge's cache (default beside the output: OUT.judge-cache/)."""
    cfg = ScoreConfig.build(config, **overrides)
    rules = parse_rules(cfg.keep)
    src = open_input(data, **PARQUET_READ)
    schema = output_schema(src.schema, cfg)
    for rule in rules:  # an unknown column or a text compared with a number fails before any row is read
        for name in rule.columns:
            if name not in schema.names and cfg.needs(name):
                raise UsageError(f"{rule.where} '{rule.text}': '{name}' is not computed by these settings "
                                 f"({cfg.needs(name)}) and not a column of {src.name}")
        rule.bind(schema)
    identifier()  # a missing py3langid too
    judge = None
    if cfg.judge is not None:
        from curate.score.judge import cache_folder

        judge_cache = cache_folder(output, cache_dir)
    if output is not None and quarantine is None:
        quarantine = default_quarantine(output)
    q_schema = quarantine_schema(schema)
    gate = _Gate(rules, cfg.missing)
    dists = Distributions(schema)
    counts = {"in": 0, "kept": 0, "rejected": 0}
    seconds = {"text": 0.0}
    kept_parts: list[pa.Table] = []
    rejected_parts: list[pa.Table] = []
    with ExitStack() as stack:
        if cfg.judge is not None:
            judge = _Judge(cfg.judge, judge_cache, stack)
        scorer = None
        if cfg.perplexity:
            from curate.score.perplexity import load_scorer
            from curate.train.threads import torch_threads

            threads = stack.enter_context(torch_threads(cfg.threads))
            scorer = load_scorer(cfg.model, cfg.max_length, cfg.perplexity_batch)
        sinks = None
        if output is not None:
            outs = stack.enter_context(OutputSet(output, [quarantine]))
            sinks = (stack.enter_context(ParquetSink(output, schema, outs)),
                     stack.enter_context(ParquetSink(quarantine, q_schema, outs)))
        advance = stack.enter_context(progress("score", total=src.rows, unit="rows"))
        for batch in src.batches(cfg.batch_size):
            t0 = time.perf_counter()
            added = text_stats(batch.column("messages"), cfg.repetition_n)
            seconds["text"] += time.perf_counter() - t0
            if scorer is not None:
                from curate.score.perplexity import perplexities

                tools = batch.column("tools").to_pylist() if "tools" in batch.schema.names else [None] * batch.num_rows
                ppl, tok = perplexities(scorer, batch.column("messages").to_pylist(), tools, advance)
                added["score_perplexity"] = pa.array(ppl, pa.float64())
                added["score_perplexity_tokens"] = pa.array(tok, pa.int64())
            if judge is not None:
                added |= judge(batch)
            table = pa.Table.from_arrays([added[f.name] if f.name in added else batch.column(f.name) for f in schema],
                                         schema=schema)
            dists.add(table)
            keep, reasons = gate.split(table)
            first = counts["in"]
            counts["in"] += table.num_rows
            kept = table if keep.all() else table.filter(pa.array(keep))
            counts["kept"] += kept.num_rows
            if reasons:
                out = table.filter(pa.array(~keep))
                rows = pa.array((np.flatnonzero(~keep) + first + 1).astype(np.int64))
                out = out.add_column(0, "reason", pa.array(reasons, pa.string())).add_column(0, "score_row", rows)
                counts["rejected"] += out.num_rows
                if sinks is not None:
                    sinks[1].write_table(out)
                else:
                    rejected_parts.append(out)
            if sinks is not None:
                sinks[0].write_table(kept)
            else:
                kept_parts.append(kept)
            if scorer is None:
                advance(table.num_rows)
    summary: dict[str, Any] = {"input": src.name, "rejected_as": "quarantined", "config": cfg.to_dict(),
                               "scores": dists.result(), "gate": gate.summary(),
                               "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    if scorer is not None:
        summary["perplexity"] = {**scorer.summary(), "threads": threads.to_dict()}
        summary["seconds"]["perplexity"] = round(scorer.seconds, 2)
    if judge is not None:
        summary["judge"] = {"counts": judge.counts, "cache": str(judge.cache_dir)}
        summary["seconds"]["judge"] = round(judge.seconds, 2)
    outputs = {"kept": str(output), "quarantine": str(quarantine)} if output is not None else {}
    outcome = StageOutcome("score", counts, outputs, summary,
                           failure="no rows to score" if counts["in"] == 0 else None)
    if output is None:
        outcome.kept = pa.concat_tables(kept_parts) if kept_parts else schema.empty_table()
        outcome.rejected = pa.concat_tables(rejected_parts) if rejected_parts else q_schema.empty_table()
    return outcome
