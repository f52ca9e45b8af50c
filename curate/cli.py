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
from rich.table import Table

from curate import __version__
from curate.config import cli_options, from_cli
from curate.console import console, print_json
from curate.errors import CurateError
from curate.ingest.config import ExportConfig, IngestConfig

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


class CurateGroup(click.Group):
    """Turns CurateError into `Error: ...` and its exit code; --debug keeps the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CurateError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _error(str(exc) if isinstance(exc, CurateError) else _os_error(exc))
            sys.exit(exc.exit_code if isinstance(exc, CurateError) else _os_exit(exc))


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
@json_option
def ingest(inputs, output, rejects, as_json, **settings):
    """Read any supported INPUTS and write one canonical Parquet dataset."""
    from curate.ingest import ingest as run
    from curate.ingest.render import render_ingest

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
@click.option("--on", default="user", show_default=True, type=click.Choice(["user", "assistant", "conversation", "first-user"]), help="Which turns form the compared key.")
@click.option("--shingle", default="word", show_default=True, type=click.Choice(["word", "char"]))
@click.option("--ngram", default=5, show_default=True, help="Shingle length in words or characters.")
@click.option("--num-perm", default=128, show_default=True, help="MinHash permutations.")
@click.option("--threshold", default=0.8, show_default=True, help="Jaccard similarity at which rows are near duplicates.")
@click.option("--bands", type=int, help="LSH bands (default: chosen from --threshold to catch 99% of pairs at it).")
@click.option("--rows", "rows_per_band", type=int, help="LSH rows per band (with --bands).")
@click.option("--keep", default="first", show_default=True, type=click.Choice(["first", "longest", "origin"]), help="Which row of a cluster stays.")
@click.option("--origin-priority", default="production,seed,eval,synthetic", show_default=True, help="Order for --keep origin.")
@click.option("--against", multiple=True, type=click.Path(path_type=Path), help="Evaluation file(s) to decontaminate against (repeatable).")
@click.option("--against-format", default="auto", show_default=True, help="Format of the --against files.")
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="Persistent LSH index: dedupe against earlier runs and add this run's rows.")
@click.option("--hash", "hash_", default="curate", show_default=True, type=click.Choice(["curate", "sha1"]), help="Shingle hash: curate's vectorised one, or datasketch's default SHA-1 (slower; signatures match a plain datasketch MinHash()).")
@click.option("--no-verify", is_flag=True, help="Trust MinHash estimates instead of checking candidates by exact Jaccard.")
@click.option("--dry-run", is_flag=True, help="Estimate time and memory; write nothing.")
@click.option("--format", "fmt", default="auto", show_default=True, help="Format of INPUT when it is not canonical Parquet.")
@json_option
def dedupe(input_path, output, on, shingle, ngram, num_perm, threshold, bands, rows_per_band, keep, origin_priority,
           against, against_format, index_dir, hash_, no_verify, dry_run, fmt, as_json):
    """Remove exact and near-duplicate rows of INPUT, and rows that contain --against eval items."""
    from curate.dedupe import dedupe as run
    from curate.dedupe.render import render
    from curate.errors import UsageError

    if output is None and not dry_run:
        raise UsageError("missing -o/--output (or pass --dry-run)")
    result = run(input_path, output, on=on, shingle=shingle, ngram=ngram, num_perm=num_perm, threshold=threshold,
                 bands=bands, rows_per_band=rows_per_band, keep=keep,
                 origin_priority=[o.strip() for o in origin_priority.split(",") if o.strip()], against=list(against),
                 against_format=against_format, index_dir=index_dir, hash=hash_, verify=not no_verify, dry_run=dry_run,
                 fmt=fmt)
    if as_json:
        print_json(result.summary)
    else:
        render(result, console)

# ---- validate


@cli.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Canonical Parquet of the valid rows.")
@click.option("--quarantine", type=click.Path(path_type=Path), help="Parquet of rows with errors (codes, messages, line).")
@click.option("--schema", help="Format schema: openai-chat, sharegpt, alpaca, prompt-completion, preference, or a path.")
@click.option("--tokenizer", help="Local Hugging Face tokenizer folder or 'embedded' (default: embedded when installed).")
@click.option("--no-tokens", is_flag=True, help="Skip the token check.")
@click.option("--max-tokens", type=int, help="Flag (never truncate) records longer than this many tokens.")
@click.option("--output-schema", type=click.Path(path_type=Path), help="JSON Schema every assistant reply must satisfy.")
@click.option("--output-regex", help="Regular expression every assistant reply must fully match.")
@click.option("--allow-consecutive-user", is_flag=True, help="Accept two user turns in a row.")
@click.option("--max-error-rate", default=0.0, show_default=True, help="Exit 1 when more than this share has errors.")
@json_option
def validate(input, output, quarantine, schema, tokenizer, no_tokens, max_tokens, output_schema, output_regex,
             allow_consecutive_user, max_error_rate, as_json):
    """Check INPUT (raw file or canonical Parquet): named error codes, tokens, output-format compliance."""
    from curate.embedded import embedded_gguf_path
    from curate.errors import MissingDependency
    from curate.validate import validate as run
    from curate.validate.render import print_result

    if no_tokens:
        tokenizer = None
    elif tokenizer is None:
        try:
            embedded_gguf_path()
            tokenizer = "embedded"
        except MissingDependency as exc:
            console.print(f"[yellow]token check skipped:[/] {exc}")
    result = run(input, schema=schema, tokenizer=tokenizer, max_tokens=max_tokens, output_schema=output_schema,
                 output_regex=output_regex, allow_consecutive_user=allow_consecutive_user, output=output,
                 quarantine=quarantine, max_error_rate=max_error_rate)
    if as_json:
        print_json(result.summary())
    else:
        print_result(result, console)
    if result.total == 0:
        console.print("[bold red]no records read[/]")
        sys.exit(EXIT_DATA)
    fail_over(max_error_rate, result.quarantine.num_rows, result.total, "records with errors")

# ---- report


@cli.command("report")
@click.argument("train", required=False, type=click.Path(path_type=Path))
@click.option("--production", type=click.Path(path_type=Path), help="Production samples (or the new snapshot with --baseline).")
@click.option("--baseline", type=click.Path(path_type=Path), help="An older production snapshot: report drift to --production.")
@click.option("-o", "--output", "html", type=click.Path(path_type=Path), help="Self-contained HTML report to write.")
@click.option("--gaps", type=click.Path(path_type=Path), help="Write under-covered production rows here (canonical Parquet, seeds for `curate synth`).")
@click.option("--fail-on", multiple=True, metavar="EXPR", help="Exit 1 when METRIC OP NUMBER holds, e.g. 'p95_ratio>1.5', 'uncovered_share>10%'. Repeatable.")
@click.option("--embedder", type=click.Choice(["auto", "minilm", "tfidf"]), default="auto", show_default=True,
              help="auto: all-MiniLM-L6-v2 when torch is installed, TF-IDF + SVD otherwise (stated in the report).")
@click.option("--tokenizer", default=None, help="Tokenizer for token lengths: 'embedded' (default) or a local folder.")
@click.option("-k", "--clusters", "k", type=int, default=None, help="Production clusters (default: chosen by silhouette).")
@click.option("--gap-ratio", type=float, default=0.25, show_default=True, help="A cluster is a gap when its training share is under this times its production share.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def report_command(train, production, baseline, html, gaps, fail_on, embedder, tokenizer, k, gap_ratio, seed, as_json):
    """Structure, coverage and drift of TRAIN against --production samples; gaps feed `curate synth`."""
    from curate.report import report as run
    from curate.report.render import print_summary

    rep = run(train, production, baseline=baseline, tokenizer=tokenizer, html=html, gaps=gaps, fail_on=fail_on,
              seed=seed, embedder=embedder, k=k, gap_ratio=gap_ratio)
    if as_json:
        print_json(rep.json())
    else:
        print_summary(rep, console)
    for path, what in ((html, "HTML report"), (gaps, f"{rep.gap_table.num_rows if rep.gap_table is not None else 0} gap rows")):
        if path:
            console.print(f"{what} -> {path}")
    if rep.failed:
        console.print(f"[bold red]{len(rep.failed)} gate(s) failed:[/] {', '.join(g['expr'] for g in rep.failed)}")
        sys.exit(EXIT_DATA)


# ---- synth


@cli.command()
@click.option("--teacher", required=True, help="Model name at --base-url, or 'local' for the embedded llama.cpp teacher.")
@click.option("--base-url", help="OpenAI-compatible endpoint (default: OpenAI). e.g. http://127.0.0.1:8000/v1")
@click.option("--recipe", required=True, type=click.Path(path_type=Path), help="Synth recipe YAML (recipes/synth-*.yaml).")
@click.option("--seeds", type=click.Path(path_type=Path), help="Seed file in any format `curate ingest` reads.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Canonical Parquet to write.")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), help="Request cache (default: OUT.cache.sqlite).")
@click.option("--concurrency", default=16, show_default=True, help="Requests in flight at once.")
@click.option("--rpm", type=float, help="Requests-per-minute limit.")
@click.option("--tpm", type=float, help="Tokens-per-minute limit (prompt estimate + max_tokens).")
@click.option("--max-total-tokens", type=int, help="Stop starting requests before this many tokens are spent.")
@click.option("--budget", type=float, help="Stop starting requests before this many dollars are spent.")
@click.option("--price-in", type=float, help="Dollars per 1M prompt tokens (overrides the recipe's pricing).")
@click.option("--price-out", type=float, help="Dollars per 1M completion tokens (overrides the recipe's pricing).")
@click.option("--retry-failed", is_flag=True, help="Send again the requests that failed in an earlier run.")
@click.option("--verify", is_flag=True, help="Ask the teacher to judge each extracted claim against the sources.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable holding the key.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per request before it is retried.")
@click.option("--max-retries", default=6, show_default=True, help="Retries per request on 429/5xx/timeouts/drops.")
@click.option("--response-format", type=click.Choice(["auto", "json_schema", "json_object", "none"]), default="auto",
              show_default=True, help="How a recipe's reply schema is sent (it is always validated).")
@click.option("--max-failure-rate", default=0.0, show_default=True, help="Exit 1 when more than this share failed.")
@click.option("--trust-recipe", is_flag=True,
              help="Let the recipe read files outside its folder and the current directory (README: What a recipe may do).")
@json_option
def synth(teacher, base_url, recipe, seeds, output, cache_path, concurrency, rpm, tpm, max_total_tokens, budget,
          price_in, price_out, retry_failed, verify, api_key_env, timeout, max_retries, response_format,
          max_failure_rate, trust_recipe, as_json):
    """Generate synthetic examples with a teacher model, resumably, with fact flags."""
    from rich.markup import escape

    from curate.synth import RetryPolicy, synthesize

    s = synthesize(recipe, teacher=teacher, base_url=base_url, seeds=seeds, output=output, cache_path=cache_path,
                   concurrency=concurrency, rpm=rpm, tpm=tpm, max_total_tokens=max_total_tokens, budget=budget,
                   price_in=price_in, price_out=price_out, retry_failed=retry_failed, verify=verify,
                   api_key_env=api_key_env, timeout=timeout, retry=RetryPolicy(max_retries=max_retries),
                   response_format=response_format, show_progress=not as_json, trust=trust_recipe)
    if as_json:
        print_json(s.as_dict())
    else:
        lost = (f"; possibly paid {s.possibly_paid_attempts} attempts (worst case {s.possibly_paid_tokens} tokens, "
                f"${s.possibly_paid_cost:.4f})" if s.possibly_paid_attempts else "")
        console.print(f"requested {s.requested} = succeeded {s.succeeded} + failed {s.failed} + skipped by budget "
                      f"{s.skipped_budget}  ->  {s.output}")
        console.print(f"  from cache {s.from_cache}, HTTP requests {s.http_requests} (retries {s.retries}, invalid "
                      f"replies {s.invalid_replies}); billed tokens {s.prompt_tokens}+{s.completion_tokens}, "
                      f"${s.cost:.4f}{lost}")
        console.print(f"  claims {s.claims}, unsupported {s.unsupported_claims} in {s.flagged_rows} flagged rows")
        for reason, n in sorted(s.failure_reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"  [red]{n} x[/] {escape(reason)}", highlight=False)
        if s.failures_file:
            hint = " (rerun with --retry-failed to send the failed ones again)" if s.failed or s.verify_failed else ""
            console.print(f"[yellow]failures:[/] {escape(s.failures_file)}{hint}")
    stop = s.stop_message()
    if stop:  # outputs are written; the exit code says the run is incomplete
        from curate.errors import ThresholdExceeded

        raise ThresholdExceeded(stop)
    fail_over(max_failure_rate, s.failed, s.requested, "requests failed")


# ---- train / merge / eval


def _train_options(f):
    """Flags for the most-changed TrainConfig values; --set KEY=VALUE reaches every other one."""
    opts = [
        click.option("--epochs", type=float, help="Epochs (default 3)."),
        click.option("--max-steps", type=int, help="Stop after this many optimizer steps (overrides --epochs)."),
        click.option("--batch-size", type=int, help="Per-device batch size (default 4)."),
        click.option("--grad-accum", type=int, help="Gradient accumulation steps (default 4)."),
        click.option("--lr", type=float, help="Learning rate (default 2e-4)."),
        click.option("--lora-r", type=int, help="LoRA rank (default 16)."),
        click.option("--lora-alpha", type=int, help="LoRA alpha (default 32)."),
        click.option("--max-length", type=int, help="Drop rows longer than this many tokens (default: data's P95)."),
        click.option("--val-fraction", type=float, help="Validation share when --val is not given (default 0.1)."),
        click.option("--eval-steps", type=int, help="Evaluate every N steps (default 100)."),
        click.option("--save-steps", type=int, help="Checkpoint every N steps (default 100)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Run folder, e.g. runs/NAME.")
@click.option("--base", default="embedded", show_default=True, help="Base model folder, or 'embedded' (SmolLM2-135M).")
@click.option("--val", type=click.Path(path_type=Path), help="Validation data (else --val-fraction of DATA).")
@click.option("--qlora", is_flag=True, help="Load the base in 4-bit NF4 (bitsandbytes; needs CUDA).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from the run's last checkpoint.")
@_train_options
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other train setting, e.g. --set lora_dropout=0.1.")
@json_option
def train(data, output, base, val, qlora, resume, sets, as_json, **flags):
    """Train a LoRA adapter on canonical DATA; writes OUTPUT/adapter, run_card.json and loss curves."""
    from curate.train import train as run
    from curate.train.config import parse_sets

    try:
        r = run(data, output=output, base=base, val=val, qlora=qlora, resume=resume, config=parse_sets(sets), **flags)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: run the same command again to resume from {output}/checkpoints[/]")
        sys.exit(130)
    if as_json:
        print_json(r.as_dict())
        return
    m = r.metrics
    if r.stopped_early:
        console.print(f"[yellow]{r.stopped_early}[/]")
    losses = ", ".join(f"{k} {m[k]:.4f}" for k in ("eval_loss_before", "train_loss", "eval_loss_best") if m.get(k) is not None)
    console.print(f"{m['global_step']} steps, {r.counts['train_rows']} training rows "
                  f"({r.counts['dropped_too_long']} dropped as longer than {r.counts['max_length']} tokens); {losses}")
    console.print(f"adapter: {r.adapter_dir}   run card: {r.run_dir / 'run_card.json'}   curves: {r.run_dir / 'loss.png'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the merged model.")
@click.option("--base", default=None, help="Base model (default: the one in the run card).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def merge(run_dir, output, base, overwrite):
    """Merge RUN_DIR's adapter into its base model and save a standalone model folder."""
    from curate.train import merge as run

    run(run_dir, output, base=base, overwrite=overwrite)


@cli.command(name="eval")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Held-out prompts (any ingestable format).")
@click.option("--base", default="embedded", show_default=True, help="Base model folder, or 'embedded'.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path), help="Run folder or adapter folder (repeatable).")
@click.option("--output-schema", type=click.Path(path_type=Path), help="JSON Schema every reply must satisfy.")
@click.option("--output-regex", help="Regular expression the whole reply must match.")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.option("--limit", type=int, help="Evaluate only the first N rows.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Per-row outputs (Parquet, eval_ columns).")
@click.option("--failures", type=click.Path(path_type=Path), help="Rows an adapter fails, as seeds for `curate synth`.")
@json_option
def eval_(data, base, adapters, output_schema, output_regex, max_new_tokens, limit, output, failures, as_json):
    """Generate replies for held-out prompts and compare format compliance: base vs adapters."""
    from curate.evaluation import evaluate

    r = evaluate(data=data, base=base, adapters=adapters, output_schema=output_schema, output_regex=output_regex,
                 max_new_tokens=max_new_tokens, limit=limit, output=output, failures=failures)
    if as_json:
        print_json(r.as_dict())
        return
    names = {"parse_rate": "parses", "schema_valid_rate": "schema", "regex_rate": "regex", "exact_match_rate": "exact"}
    keys = [k for k in names if r.summary[0][k] is not None]
    table = Table("model", *(names[k] for k in keys), *(f"{names[k]} P95" for k in keys),
                  title=f"{r.rows} prompts; P95 input length {r.p95_input_tokens} tokens ({r.summary[0]['p95_rows']} rows at or above)")
    for s in r.summary:
        table.add_row(s["model"], *(f"{s[k]:.1%}" for k in keys), *(f"{s['p95_' + k]:.1%}" for k in keys))
    console.print(table)


# ---- run


@cli.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--skip", multiple=True, help="Skip a stage (repeatable): validate, dedupe, report, synth, final, train, eval.")
@click.option("--only", default=None, help="Run this one stage on the earlier stages' last outputs.")
@click.option("--force", multiple=True, help="Rerun a stage even if its inputs and settings are unchanged.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where outputs go (default: the recipe's workdir, or runs/NAME).")
@click.option("--base-url", help="The synth teacher's endpoint, overriding the recipe's; your API key is sent there.")
@click.option("--trust-recipe", is_flag=True,
              help="Let the recipe read files outside its folder and the current directory, write its workdir "
                   "anywhere, and choose the API key and server (README: What a recipe may do).")
@json_option
def run_cmd(recipe, skip, only, force, workdir, base_url, trust_recipe, as_json):
    """Run the whole loop from one YAML RECIPE; unchanged stages are skipped, so a rerun resumes."""
    from curate.pipeline import run_recipe

    manifest = run_recipe(recipe, skip=skip, only=only, force=force, workdir=workdir, base_url=base_url,
                          trust=trust_recipe)
    if as_json:
        print_json(manifest)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
