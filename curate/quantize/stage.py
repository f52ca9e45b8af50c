"""`curate quantize`: merge a run's adapter, convert it to GGUF, quantize it with llama.cpp, evaluate every file.

The baseline is the merged model as an f32 GGUF served by the same llama.cpp server as the quantized files:
its weights are the merged fp32 weights exactly, and the runtime, prompt tokenization and greedy sampler
are the same for every file, so a difference between files is the quantization's. Each file is served in
turn on 127.0.0.1 (curate.synth.local) and scored by `curate eval`'s code (evaluate(sources=...)).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from curate.console import console
from curate.errors import CurateError, MissingDependency, UsageError
from curate.inputs import Source
from curate.outcome import StageOutcome
from curate.outputs import atomic_path
from curate.quantize.config import EVAL_SETTINGS, QUANTS, QuantizeConfig
from curate.quantize.convert import base_gguf, to_gguf
from curate.train.merging import adapter_dir, base_of

BASELINE = "f32"
N_CTX = 4096  # the served context: the longest held-out prompt plus max_new_tokens must fit


def quantize(run_dir: str | Path, output: str | Path | None = None,
             config: QuantizeConfig | Mapping[str, Any] | None = None, *, data: Source | None = None,
             overwrite: bool = False, **overrides: Any) -> StageOutcome:
    """Write OUTPUT/model-f32.gguf and OUTPUT/model-QUANT.gguf per quantization; with `data`, evaluate each file.

    `output` defaults to the run folder's gguf/. The outcome fails (the CLI exits 1) when a quantization loses
    more than `max_loss` of the headline against the f32 file; OUTPUT/quantize.json holds the outcome.
    """
    from curate.train.threads import choose

    cfg = QuantizeConfig.build(config, **overrides)
    adapter = adapter_dir(run_dir)
    out = Path(output) if output is not None else adapter.parent / "gguf"
    files = {BASELINE: out / f"model-{BASELINE}.gguf", **{q: out / f"model-{q}.gguf" for q in cfg.quant}}
    ours = [*files.values(), out / "quantize.json", out / "eval.parquet"]
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another -o or pass --overwrite")
    base = cfg.base or base_of(Path(run_dir), adapter)
    source = base_gguf(base)  # before the merge: a base curate cannot convert is refused at once
    threads = choose(cfg.threads)
    console.print(f"llama.cpp threads: {threads.count} ({threads.why})")
    out.mkdir(parents=True, exist_ok=True)
    for p in ours:
        p.unlink(missing_ok=True)
    seconds: dict[str, Any] = {}
    t0 = time.perf_counter()
    merged = out / ".merged"
    from curate.train.merging import merge

    merge(run_dir, merged, base=cfg.base, overwrite=True)
    seconds["merge"] = _since(t0)
    t0 = time.perf_counter()
    try:
        to_gguf(merged, source, files[BASELINE])
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    seconds["convert"] = _since(t0)
    fallbacks = {BASELINE: 0}
    for q in cfg.quant:
        t0 = time.perf_counter()
        fallbacks[q] = llama_quantize(files[BASELINE], files[q], q, threads.count)
        seconds[f"quantize_{q}"] = _since(t0)
    models = [{"name": n, "file": str(p), "bytes": p.stat().st_size, "type": QUANTS.get(n, "F32"),
               "fallback_tensors": fallbacks[n]} for n, p in files.items()]
    summary: dict[str, Any] = {"config": cfg.to_dict(), "adapter": str(adapter), "base": base,
                               "base_gguf": str(source), "baseline": BASELINE, "models": models, "eval": None,
                               "threads": threads.to_dict(), "seconds": seconds}
    outputs = {"files": str(out), **{n: str(p) for n, p in files.items()}, "report": str(out / "quantize.json")}
    failure = None
    if data is not None:
        ev = _evaluate(data, files, base, cfg, threads.count, out / "eval.parquet", seconds)
        outputs["rows"] = str(out / "eval.parquet")
        summary["eval"] = ev.to_dict()
        _add_scores(models, ev.summary, _agreement(out / "eval.parquet"))
        failure = verdict(models, ev.summary["task"]["headline"], cfg.max_loss)
    outcome = StageOutcome("quantize", {}, outputs, summary, failure=failure)
    with atomic_path(out / "quantize.json") as tmp:
        tmp.write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    return outcome


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)


@contextlib.contextmanager
def _llama_log() -> Iterator[list[str]]:
    """llama.cpp's log lines during the block, kept instead of printed (it logs every tensor it quantizes)."""
    import llama_cpp
    import llama_cpp._logger as default

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(default.llama_log_callback, ctypes.c_void_p(0))


def llama_quantize(src: Path, dst: Path, quant: str, threads: int) -> int:
    """llama.cpp's quantization of the GGUF `src` to `dst` (written under a temporary name, then renamed).

    Returns how many tensors llama.cpp quantized to another type than asked: k-quants need rows of a multiple
    of 256 values, and a model whose rows are not (SmolLM2-135M's are 576 wide) gets q5_0 or q8_0 there.
    """
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependency("llama-cpp-python[server]", "local", "quantizing GGUF files") from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTS[quant]}")
    params.nthread = threads
    tmp = dst.with_name(f".{dst.name}.tmp")
    with _llama_log() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        tail = "".join(log)[-800:]
        raise CurateError(f"llama.cpp could not quantize {src} to {quant} (llama_model_quantize returned {rc}):\n{tail}")
    tmp.replace(dst)
    return sum("falling back to" in line for line in log)


def served(path: Path, threads: int) -> Callable[[list[str], int, Callable[[int], Any]], list[str]]:
    """A reply source that serves the GGUF `path` with llama.cpp's server while it replies, then stops it."""
    from curate.evaluation.endpoint import endpoint_source
    from curate.synth.local import start_local_teacher

    def replies(texts: list[str], max_new_tokens: int, advance: Callable[[int], Any]) -> list[str]:
        with start_local_teacher(path, n_ctx=N_CTX, n_threads=threads) as server:
            return endpoint_source(server.base_url, server.model)(texts, max_new_tokens, advance)

    return replies


def _evaluate(data: Source, files: dict[str, Path], base: str, cfg: QuantizeConfig, threads: int, rows: Path,
              seconds: dict[str, Any]) -> StageOutcome:
    """`curate eval`'s scoring of every file's greedy replies; each quantization compared with the baseline."""
    from curate.evaluation import evaluate

    def timed(name: str, source: Callable[..., list[str]]) -> Callable[..., list[str]]:
        def replies(*args: Any) -> list[str]:
            t0 = time.perf_counter()
            try:
                return source(*args)
            finally:
                seconds[f"eval_{name}"] = _since(t0)
        return replies

    sources = {name: timed(name, served(path, threads)) for name, path in files.items()}
    settings = {k: getattr(cfg, k) for k in EVAL_SETTINGS}
    return evaluate(data, (), rows, {"base": base, **settings}, sources=sources,
                    compare=[(q, BASELINE) for q in files if q != BASELINE], failures_of=[BASELINE])


def _agreement(rows: Path) -> dict[str, float]:
    """Per file, the share of prompts whose reply is the baseline's, character for character."""
    import pyarrow.parquet as pq

    t = pq.read_table(rows, columns=["eval_model", "eval_reply"]).to_pydict()
    by: dict[str, list[str]] = {}
    for model, reply in zip(t["eval_model"], t["eval_reply"]):
        by.setdefault(model, []).append(reply)
    ref = by[BASELINE]
    return {m: round(sum(a == b for a, b in zip(r, ref)) / len(ref), 4) for m, r in by.items()}


def _add_scores(models: list[dict[str, Any]], ev: dict[str, Any], same: dict[str, float]) -> None:
    """Each file's task and format figures from the evaluation, its loss against the baseline, its agreement."""
    headline = ev["task"]["headline"]
    variants = {v["model"]: v for v in ev["variants"]}
    before = variants[BASELINE][headline]
    for m in models:
        v = variants[m["name"]]
        m.update({"headline": headline, "value": v[headline], "task_accuracy": v["task_accuracy"],
                  "format_rate": v["format_rate"], "similarity": v["similarity"],
                  "fields": {f: s["accuracy"] for f, s in v["fields"].items()},
                  "loss": None if v[headline] is None or before is None else round(before - v[headline], 4),
                  "same_replies": same[m["name"]]})


def verdict(models: list[dict[str, Any]], headline: str, max_loss: float) -> str | None:
    """Why the quantizations fail (each that loses more than max_loss of the headline), or None."""
    what = headline.replace("_", " ")
    before = next(m["value"] for m in models if m["name"] == BASELINE)
    bad = [f"{m['name']} loses {m['loss']:.3f} {what} against {BASELINE} ({before:.3f} -> {m['value']:.3f})"
           for m in models if m["name"] != BASELINE and m.get("loss") is not None and m["loss"] > max_loss]
    return f"{'; '.join(bad)}: more than --max-loss {max_loss:g}" if bad else None
