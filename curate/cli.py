"""The `curate` command line: a thin Click layer over the library.

Exit codes: 0 ok; 1 data problems over a threshold (or a data error); 2 usage error.
Each command parses options, calls one library function, and renders its result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from curate import __version__
from curate.config import cli_options, from_cli
from curate.console import console, print_json
from curate.dedupe.config import DedupeConfig
from curate.errors import CurateError
from curate.evaluation.config import EvalConfig
from curate.ingest.config import ExportConfig, IngestConfig
from curate.pickbase import PickBaseConfig
from curate.report.config import ReportConfig
from curate.synth.config import SynthConfig
from curate.train.config import MergeConfig, TrainConfig
from curate.validate.config import ValidateConfig

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


class CurateGroup(click.Group):
    """Turns CurateError into `Error: ...` and its exit code; --debug keeps the traceback."""

    def invoke(self, ctx: click.Context):
        wants_json = "--json" in [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except (CurateError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = str(exc) if isinstance(exc, CurateError) else _os_error(exc)
            code = exc.exit_code if isinstance(exc, CurateError) else _os_exit(exc)
            _error(message)
            if wants_json:
                _json_error(message, code)
            sys.exit(code)
        except click.UsageError as exc:  # a bad option or argument: click's own message, as JSON too when asked
            if not wants_json:
                raise
            exc.show()
            _json_error(exc.format_message(), exc.exit_code)
            sys.exit(exc.exit_code)


def _json_error(message: str, code: int) -> None:
    """With --json, a failed command still prints one JSON document on stdout: what went wrong and the exit code."""
    print_json({"error": message, "exit_code": code, "kind": "usage" if code == EXIT_USAGE else "data"})


def _error(message: str) -> None:
    """One `Error:` line on stderr, never wrapped at the terminal's width (a problem list keeps its own lines)."""
    from rich.markup import escape

    console.print(f"[bold red]Error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def _os_error(exc: OSError) -> str:
    """A file-system error a user can act on: what failed, on which path."""
    from curate.outputs import target_of

    what = exc.strerror or str(exc)
    paths = " -> ".join(str(target_of(p)) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{paths}: {what}" if paths else what


def _os_exit(exc: OSError) -> int:
    usage = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
    return EXIT_USAGE if isinstance(exc, usage) else EXIT_DATA


@click.group(cls=CurateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curate")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """curate: turn raw examples into a fine-tuning dataset you can trust."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary on stdout.")(f)


def engine_options(f):
    """--engine and --ray-address: where a data stage's batches run (README: Ray)."""
    f = click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="With --engine ray: the cluster to join (auto, HOST:PORT, ray://HOST:PORT); default: a "
                          "local Ray instance bound to 127.0.0.1.")(f)
    return click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
                        help="Where batches run: local processes (default) or the actors of a Ray cluster; the "
                             "outputs are the same.")(f)


# the judge's flags and the settings they set (JudgeTeacher's; the rubric and samples: score's judge only)
JUDGE_FLAGS = {"judge": "teacher", "judge_base_url": "base_url", "judge_concurrency": "concurrency",
               "judge_max_total_tokens": "max_total_tokens", "judge_budget": "budget", "judge_price_in": "price_in",
               "judge_price_out": "price_out", "judge_samples": "samples", "judge_rubric": "rubric_file"}


def judge_options(what: str, rubric: bool = True) -> Callable[[Any], Any]:
    """A teacher as judge on the command line (a recipe's judge section has every setting); `what` it judges."""
    def apply(f: Any) -> Any:
        if rubric:
            f = click.option("--judge-rubric", type=click.Path(path_type=Path), default=None,
                             help="The judge's rubric from this file (default: the shipped 1-5 rubric).")(f)
            f = click.option("--judge-samples", type=click.IntRange(min=1), default=None,
                             help="Judge each row this many times; its score is the median.  [default: 1]")(f)
        f = click.option("--judge-price-out", type=click.FloatRange(min=0), default=None, metavar="USD",
                         help="The judge's dollars per 1M completion tokens (for --judge-budget).")(f)
        f = click.option("--judge-price-in", type=click.FloatRange(min=0), default=None, metavar="USD",
                         help="The judge's dollars per 1M prompt tokens (for --judge-budget).")(f)
        f = click.option("--judge-budget", type=click.FloatRange(min=0), default=None, metavar="USD",
                         help="Stop starting judge requests before this many dollars are spent (needs a price).")(f)
        f = click.option("--judge-max-total-tokens", type=click.IntRange(min=1), default=None, metavar="N",
                         help="Stop starting judge requests before this many tokens.")(f)
        f = click.option("--judge-concurrency", type=click.IntRange(min=1), default=None, metavar="N",
                         help="Judge requests in flight at once.  [default: 16]")(f)
        f = click.option("--judge-base-url", default=None, metavar="URL",
                         help="The judge's OpenAI-compatible endpoint (default: OpenAI; the key from OPENAI_API_KEY).")(f)
        return click.option("--judge", default=None, metavar="MODEL",
                            help=f"A teacher model as judge ({what}), or 'local' for the embedded llama.cpp "
                                 "teacher.")(f)

    return apply


def judge_of(cls: Any, params: dict[str, Any]) -> Any:
    """The judge's settings (a JudgeTeacher class) from a command's --judge options, taken out of `params`; None
    without --judge."""
    from curate.errors import UsageError

    given = {JUDGE_FLAGS[k]: params.pop(k) for k in list(params) if k in JUDGE_FLAGS}
    teacher = given.pop("teacher")
    if teacher is None:
        stray = [f"--{k.replace('_', '-')}" for k, v in JUDGE_FLAGS.items() if v in given and given[v] is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)} needs --judge MODEL (or --judge local)")
        return None
    if given.get("rubric_file") is not None:
        given["rubric_file"] = str(given["rubric_file"])
    return cls.build(teacher=teacher, **given)


def engine_of(engine: str | None, ray_address: str | None) -> Any:
    """The engine context of a command's --engine and --ray-address."""
    from curate.engine import use
    from curate.errors import UsageError

    if ray_address and engine != "ray":
        raise UsageError("--ray-address needs --engine ray")
    return use(engine or "local", ray_address)


def finish(outcome: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print a stage's outcome (its JSON document, or `render` for people); exit 1 when it failed a threshold."""
    if as_json:
        print_json(outcome.to_dict())
    else:
        render(outcome)
    if outcome.failure:
        console.print(f"[bold red]{escape(outcome.failure)}[/]")
        sys.exit(EXIT_DATA)


# ---------------------------------------------------------------- ingest / export


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Canonical Parquet to write.")
@click.option("--rejects", type=click.Path(path_type=Path), help="Where rejected records go (default: OUTPUT.rejects.jsonl).")
@cli_options(IngestConfig)
@engine_options
@json_option
def ingest(inputs, output, rejects, engine, ray_address, as_json, **settings):
    """Read any supported INPUTS and write one canonical Parquet dataset."""
    from curate.ingest import ingest as run
    from curate.ingest.render import render_ingest

    with engine_of(engine, ray_address):
        finish(run(inputs, output, from_cli(IngestConfig, settings), rejects=rejects), as_json, render_ingest)


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@cli_options(ExportConfig)
@json_option
def export(dataset, output, as_json, **settings):
    """Export a canonical DATASET as OpenAI chat JSONL, ShareGPT or Alpaca."""
    from curate.ingest import export as run
    from curate.ingest.render import render_export

    finish(run(dataset, output, from_cli(ExportConfig, settings)), as_json, render_export)


# ---------------------------------------------------------------- stage commands
# Each stage's command is defined in its own section below.

# ---- dedupe

@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Deduplicated Parquet to write (removed rows and clusters go beside it).")
@click.option("--against", multiple=True, type=click.Path(path_type=Path), help="Evaluation file(s) to decontaminate against (repeatable).")
@click.option("--dry-run", is_flag=True, help="Estimate time and memory; write nothing.")
@click.option("--show-clusters", "show_clusters", type=click.IntRange(min=0), default=0, metavar="N",
              help="Print the N largest clusters with their kept and removed text side by side (default: one line "
                   "each for the 5 largest).")
@cli_options(DedupeConfig)
@judge_options("with --semantic-verifier judge: is a candidate pair one request worded twice?", rubric=False)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
              help="The semantic judge's request cache (default: OUTPUT.judge-cache/).")
@engine_options
@json_option
def dedupe(input_path, output, against, dry_run, show_clusters, cache_dir, engine, ray_address, as_json, **settings):
    """Remove exact and near-duplicate rows of INPUT, and rows that contain --against eval items."""
    from curate.dedupe import dedupe as run
    from curate.dedupe.judge import PairJudgeSettings
    from curate.dedupe.render import render_dedupe
    from curate.errors import UsageError

    if output is None and not dry_run:
        raise UsageError("missing -o/--output (or pass --dry-run)")
    settings["semantic_judge"] = judge_of(PairJudgeSettings, settings)
    # the CLI owns its process: the allocator settings that make a run faster are chosen here (README: Memory and speed)
    with engine_of(engine, ray_address):
        finish(run(input_path, output, from_cli(DedupeConfig, settings), against=against, dry_run=dry_run,
                   cache_dir=cache_dir, tune_allocator=True), as_json, lambda out: render_dedupe(out, show=show_clusters))


# ---- validate

@cli.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Canonical Parquet of the valid rows.")
@click.option("--quarantine", type=click.Path(path_type=Path), help="Parquet of rows with errors (codes, messages, line).")
@cli_options(ValidateConfig)
@engine_options
@json_option
def validate(input, output, quarantine, engine, ray_address, as_json, **settings):
    """Check INPUT (raw file or canonical Parquet): named error codes, tokens, output-format compliance."""
    from curate.validate import validate as run
    from curate.validate.render import render_validate

    if output is not None and quarantine is None:  # the rows with errors go beside the valid rows, never nowhere
        quarantine = output.with_name(f"{output.name.removesuffix('.parquet')}.quarantine.parquet")
    # keep=False: rows that go to no file are not held in memory (the command prints the summary only)
    with engine_of(engine, ray_address):
        finish(run(input, output, from_cli(ValidateConfig, settings), quarantine=quarantine, keep=False), as_json,
               render_validate)

# ---- report


@cli.command("report")
@click.argument("train", required=False, type=click.Path(path_type=Path))
@click.option("--production", type=click.Path(path_type=Path), help="Production samples (or the new snapshot with --baseline).")
@click.option("--baseline", type=click.Path(path_type=Path), multiple=True,
              help="An older production snapshot: report drift to --production. Repeat it, oldest first, for a "
                   "history of dated snapshots: drift from each to the next, plotted as a trend.")
@click.option("-o", "--output", "html", type=click.Path(path_type=Path), help="Self-contained HTML report to write.")
@click.option("--gaps", type=click.Path(path_type=Path), help="Write under-covered production rows here (canonical Parquet, seeds for `curate synth`).")
@cli_options(ReportConfig)
@engine_options
@json_option
def report_command(train, production, baseline, html, gaps, engine, ray_address, as_json, **settings):
    """Structure, coverage and drift of TRAIN against --production samples; gaps feed `curate synth`."""
    from curate.report import report as run
    from curate.report.render import render_report, render_report_json

    baselines = list(baseline)
    with engine_of(engine, ray_address):
        out = run(train, production, from_cli(ReportConfig, settings),
                  baseline=baselines if len(baselines) > 1 else (baselines[0] if baselines else None), html=html,
                  gaps=gaps)
    # --json prints the report document (schemas/report.schema.json): to_dict()["report"], not the whole outcome
    finish(out, False, render_report_json if as_json else render_report)


# ---- synth

@cli.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Canonical Parquet to write.")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), help="Request cache (default: OUT.cache.sqlite).")
@click.option("--trust-recipe", is_flag=True,
              help="Let the recipe read files outside its folder and the current directory (README: What a recipe may do).")
@click.option("--output-schema", type=click.Path(path_type=Path),
              help="The task's output JSON Schema (as for validate): the values it defines are not fact claims.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="The training data the rows will join, for the recipe's checks.agree_with_data.")
@cli_options(SynthConfig)
@json_option
def synth(output, cache_path, trust_recipe, output_schema, reference, as_json, **settings):
    """Generate synthetic examples with a teacher model, resumably, with fact flags."""
    from curate.synth import synthesize
    from curate.synth.render import render_synth

    finish(synthesize(output, from_cli(SynthConfig, settings), trust=trust_recipe, cache_path=cache_path,
                      output_schema=output_schema, reference=reference, show_progress=not as_json), as_json,
           render_synth)


# ---- pick-base


@cli.command("pick-base")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--candidate", "candidates", multiple=True, metavar="MODEL",
              help="A model to rank: 'embedded', 'gemma3-270m', a model folder or a .gguf file (repeatable; "
                   "default: the shipped bases that are installed).")
@cli_options(PickBaseConfig)
@json_option
def pick_base(data, candidates, as_json, **settings):
    """Rank candidate base models by perplexity and tokens per word on a sample of DATA; print the choice."""
    from curate.pickbase import pick_base as run
    from curate.pickbase import render_pick_base

    cfg = from_cli(PickBaseConfig, settings)
    finish(run(data, cfg, candidates=list(candidates) or None), as_json, render_pick_base)


# ---- train / merge / eval


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Run folder, e.g. runs/NAME.")
@click.option("--val", type=click.Path(path_type=Path), help="Validation data (else --val-fraction of DATA).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a killed run from its last checkpoint (--no-resume starts over).")
@cli_options(TrainConfig)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any setting above by its name, e.g. --set lora_dropout=0.1 (a flag wins over --set).")
@json_option
def train(data, output, val, resume, sets, as_json, **settings):
    """Train a LoRA adapter on canonical DATA; writes OUTPUT/adapter, run_card.json and loss curves."""
    from curate.train import train as run
    from curate.train.config import parse_sets
    from curate.train.render import render_train

    # --set is a second spelling of the flags: both reach TrainConfig, which coerces and checks the values
    cfg = TrainConfig.build(parse_sets(sets), **settings)
    try:
        outcome = run(data, output, cfg, val=val, resume=resume)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: run the same command again to resume from {output}/checkpoints[/]")
        sys.exit(130)
    finish(outcome, as_json, render_train)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the merged model.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@cli_options(MergeConfig)
@json_option
def merge(run_dir, output, overwrite, as_json, **settings):
    """Merge RUN_DIR's adapter into its base model and save a standalone model folder."""
    from curate.train import merge as run
    from curate.train.render import render_merge

    finish(run(run_dir, output, from_cli(MergeConfig, settings), overwrite=overwrite), as_json, render_merge)


@cli.command(name="eval")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Held-out prompts (any ingestable format).")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Run folder or adapter folder, or NAME=FOLDER to name it (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Per-row outputs (Parquet, eval_ columns).")
@click.option("--failures", type=click.Path(path_type=Path),
              help="Rows an adapter gets wrong (task or format), as seeds for `curate synth`.")
@click.option("--train-data", type=click.Path(path_type=Path), help="Training data: its label distribution is shown.")
@click.option("--compare", multiple=True, metavar="A:B",
              help="Also compare model A with model B (names as shown; repeatable). Adapters vs base always.")
@cli_options(EvalConfig)
@json_option
def eval_(data, adapters, output, failures, train_data, compare, as_json, **settings):
    """Reply to held-out prompts with the base and adapters; task accuracy, format compliance, comparisons."""
    from curate.evaluation import evaluate
    from curate.evaluation.render import render_eval
    from curate.evaluation.stage import adapter_specs

    finish(evaluate(data, adapter_specs(adapters), output, from_cli(EvalConfig, settings), failures=failures,
                    train_data=train_data, compare=[c.split(":", 1) for c in compare]), as_json, render_eval)


# ---- quantize

from curate.quantize.config import QuantizeConfig


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Folder for the GGUF files (default: RUN/gguf).")
@click.option("--data", type=click.Path(path_type=Path), help="Held-out prompts: evaluate every file on them.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier quantize in OUTPUT.")
@cli_options(QuantizeConfig)
@json_option
def quantize(run_dir, output, data, overwrite, as_json, **settings):
    """Merge RUN's adapter, convert it to GGUF, quantize it with llama.cpp and evaluate each file against f32."""
    from curate.quantize import quantize as run
    from curate.quantize.render import render_quantize

    finish(run(run_dir, output, from_cli(QuantizeConfig, settings), data=data, overwrite=overwrite), as_json,
           render_quantize)


# ---- run


@cli.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--skip", multiple=True, help="Skip a stage (repeatable): validate, dedupe, score, report, synth, final, train, eval.")
@click.option("--only", default=None, help="Run this one stage on the earlier stages' last outputs.")
@click.option("--force", multiple=True, help="Rerun a stage even if its inputs and settings are unchanged.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where outputs go (default: the recipe's workdir, or runs/NAME).")
@click.option("--base-url", help="The synth teacher's endpoint, overriding the recipe's; your API key is sent there.")
@click.option("--trust-recipe", is_flag=True,
              help="Let the recipe read files outside its folder and the current directory, write its workdir "
                   "anywhere, and choose the API key and server (README: What a recipe may do).")
@engine_options
@json_option
def run_cmd(recipe, skip, only, force, workdir, base_url, trust_recipe, engine, ray_address, as_json):
    """Run the whole loop from one YAML RECIPE; unchanged stages are skipped, so a rerun resumes."""
    from curate.errors import UsageError
    from curate.pipeline import run_recipe

    if ray_address and engine not in ("ray", None):
        raise UsageError("--ray-address needs --engine ray")
    manifest = run_recipe(recipe, skip=skip, only=only, force=force, workdir=workdir, base_url=base_url,
                          trust=trust_recipe, engine=engine, ray_address=ray_address)
    if as_json:
        print_json(manifest)


# ---- review

from curate.review.config import ReviewExportConfig, ReviewImportConfig


@cli.group()
def review() -> None:
    """People decide the edge cases: export the rows that need a person, import their decisions."""


@review.command("export")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_OR_FILES...")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Tasks (JSON; .jsonl for Argilla).")
@cli_options(ReviewExportConfig)
@json_option
def review_export(sources, output, as_json, **settings):
    """Write the rows of a `curate run` folder (or stage outputs) that need a person, as review tasks."""
    from curate.review import export_review
    from curate.review.render import render_export

    finish(export_review(sources, output, from_cli(ReviewExportConfig, settings)), as_json, render_export)


@review.command("import")
@click.argument("decisions", type=click.Path(path_type=Path))
@click.option("-d", "--dataset", required=True, type=click.Path(path_type=Path), help="Canonical Parquet the decisions apply to.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Reviewed Parquet to write.")
@cli_options(ReviewImportConfig)
@json_option
def review_import(decisions, dataset, output, as_json, **settings):
    """Apply the keep / drop / edit decisions of an annotated Label Studio or Argilla export to DATASET."""
    from curate.review import import_review
    from curate.review.render import render_import

    finish(import_review(decisions, dataset, output, from_cli(ReviewImportConfig, settings)), as_json, render_import)


# ---- repair

from curate.repair.config import RepairConfig


@cli.command("repair")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Repaired Parquet to write.")
@cli_options(RepairConfig)
@json_option
def repair_command(input_path, output, as_json, **settings):
    """Apply safe, named fixes to INPUT; every changed row keeps its original in repair_original."""
    from curate.repair import repair as run
    from curate.repair.render import render_repair

    finish(run(input_path, output, from_cli(RepairConfig, settings).fix), as_json, render_repair)


# ---- score

from curate.score.config import ScoreConfig


@cli.command("score")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Scored Parquet of the kept rows.")
@click.option("--quarantine", type=click.Path(path_type=Path),
              help="Parquet of the rows a --keep rule sends away, with their reason (default: OUTPUT.quarantine.parquet).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
              help="The judge's request cache (default: OUTPUT.judge-cache/).")
@judge_options("score_judge 1-5 with its reason")
@cli_options(ScoreConfig)
@json_option
def score_command(input_path, output, quarantine, cache_dir, as_json, **settings):
    """Add per-row quality scores (score_* columns) to INPUT; --keep rules quarantine the rows failing them."""
    from curate.score import score as run
    from curate.score.judge import JudgeSettings
    from curate.score.render import render_score

    settings["judge"] = judge_of(JudgeSettings, settings)
    cfg = from_cli(ScoreConfig, settings)
    finish(run(input_path, output, cfg, quarantine=quarantine, cache_dir=cache_dir), as_json, render_score)


@cli.command("calibrate-judge")
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.Path(path_type=Path),
              help="Preference pairs (chosen/rejected) too: how often the chosen reply scores higher.")
@click.option("--max-pairs", default=20, show_default=True, type=click.IntRange(min=1), help="Pairs judged at most.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=Path(".curate-judge-cache"),
              show_default=True, help="The judge's request cache (shared with score runs: what is cached is free).")
@judge_options("1-5 on the rubric")
@json_option
def calibrate_judge(labels, pairs, max_pairs, cache_dir, as_json, **params):
    """How far to trust a judge: its agreement with itself over two samples and with LABELS (JSONL rows with a
    1-5 `label`, e.g. examples/judge/labels.jsonl): exact, within 1, kappa, weighted kappa, Spearman."""
    from curate.errors import UsageError
    from curate.score.calibrate import calibrate, format_calibration
    from curate.score.judge import JudgeSettings

    judge = judge_of(JudgeSettings, params)
    if judge is None:
        raise UsageError("name the judge to calibrate: --judge MODEL (with --judge-base-url) or --judge local")
    report = calibrate(labels, judge, cache_dir, pairs=pairs, max_pairs=max_pairs)
    if as_json:
        print_json(report)
    else:
        click.echo(format_calibration(report))


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
