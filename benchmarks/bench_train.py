"""Training throughput and memory: curate's packed, padding-free LoRA path vs a plain Trainer + peft baseline.

    python3 benchmarks/bench_train.py                 # GPU: writes the `train` section of RESULTS.md
    python3 benchmarks/bench_train.py --cpu           # no GPU: a small CPU-only comparison, labelled as such

Both sides use the same base model, the same tokenized examples (assistant-only labels, same order: same
seed), the same LoRA settings, batch size, accumulation and number of optimizer steps. Tokens/s counts
real tokens only (never padding), measured after `--warmup` steps. Each side runs in its own process so
peak GPU memory (torch.cuda.max_memory_allocated) is its own. The baseline pads each batch, either to the
longest row of the batch or to a fixed max length (as many tutorials do); both are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = ROOT / "examples" / "train" / "people.jsonl"


def meter(warmup: int):
    """A callback that times steps after `warmup` and reads the real-token count the trainer keeps."""
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        def __init__(self):
            self.t0 = self.tok0 = None
            self.result = {}

        def on_step_end(self, args, state, control, **kw):
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step == warmup:
                self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen
            elif state.global_step == state.max_steps and self.t0 is not None:
                dt = time.perf_counter() - self.t0
                toks = state.num_input_tokens_seen - self.tok0
                self.result = {"tokens": toks, "seconds": round(dt, 3), "tokens_per_s": round(toks / dt, 1)}

    return Meter()


def run_one(side: str, a: argparse.Namespace) -> dict:
    """One measured run in this process; prints its JSON for the parent."""
    import torch

    settings = {"max_steps": a.steps, "batch_size": a.batch_size, "grad_accum": a.grad_accum, "val_fraction": 0.0,
                "eval_steps": 10**6, "save_steps": 10**6, "logging_steps": 10**6, "max_length": a.max_length, "seed": 0,
                "padding_free": True}
    m = meter(a.warmup)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        if side == "curate":
            from curate.train import train

            train(a.data, Path(tmp) / "run", base=a.base, callbacks=[m], resume=False, **settings)
        else:
            baseline(side.split(":")[1], a, settings, m, tmp)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"side": side, **m.result, "peak_gpu_gib": round(peak, 3) if peak is not None else None}


def baseline(padding: str, a: argparse.Namespace, s: dict, m, tmp: str) -> None:
    """Plain transformers Trainer + peft: padded batches, no packing, no gradient checkpointing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from curate.embedded import load_tokenizer, resolve_model
    from curate.train.config import TrainConfig
    from curate.train.data import prepare
    from curate.train.stage import ExampleDataset, PadCollator

    cfg = TrainConfig.build({k: v for k, v in s.items() if k != "padding_free"})
    path = resolve_model(a.base)
    td = prepare(a.data, load_tokenizer(path), val_fraction=0.0, max_length=a.max_length)
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
    model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                             target_modules=cfg.target_modules, task_type="CAUSAL_LM"))
    collate = PadCollator(model.config.pad_token_id or 0, width=td.max_length if padding == "max_length" else None)
    args = TrainingArguments(
        output_dir=tmp, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio, bf16=cuda, use_cpu=not cuda, report_to="none", disable_tqdm=True,
        save_strategy="no", logging_steps=10**6, remove_unused_columns=False, label_names=["labels"], seed=0,
        include_num_input_tokens_seen="non_padding",
    )
    Trainer(model=model, args=args, train_dataset=ExampleDataset(td.train), data_collator=collate,
            callbacks=[m]).train()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--base", default="embedded")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--cpu", action="store_true", help="No GPU: run a small CPU-only comparison.")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, a)))
        return
    import torch
    from _results import write_section

    command = "python3 " + " ".join(["benchmarks/bench_train.py", *sys.argv[1:]])
    if not torch.cuda.is_available() and not a.cpu:
        write_section("train", command, NO_GPU)
        sys.exit("bench_train: no CUDA GPU here, so nothing was measured (the RESULTS.md section says so); "
                 "run it on a GPU machine, or pass --cpu for a small CPU-only comparison")
    rows = [_child(side, a) for side in ("curate", "baseline:longest", "baseline:max_length")]
    write_section("train", command, _body(rows, a, torch.cuda.is_available()))
    print(json.dumps(rows, indent=2))


def _child(side: str, a: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--one", side, "--data", a.data, "--base", a.base, "--steps", str(a.steps),
            "--warmup", str(a.warmup), "--batch-size", str(a.batch_size), "--grad-accum", str(a.grad_accum)]
    if a.max_length:
        argv += ["--max-length", str(a.max_length)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"bench_train: the {side} run failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


NO_GPU = """No GPU was at hand when this section was written, so no figures were measured; nothing here is
a guess. On a CUDA machine, `python3 benchmarks/bench_train.py` compares curate's LoRA path (bf16,
gradient checkpointing, packed padding-free batches) with a plain transformers Trainer + peft baseline
that pads batches (to the longest row, and to a fixed max length), same model, data, LoRA settings and
steps, and reports real-token throughput and peak GPU memory. Targets: >= 2x the baseline's tokens/s and
<= 0.6x its peak memory."""


def _body(rows: list[dict], a: argparse.Namespace, cuda: bool) -> str:
    head = "" if cuda else ("**CPU only: no GPU was at hand, so the GPU targets (tokens/s, peak GPU memory) were "
                            "not measured.** The figures below compare the same code paths on this CPU only and say nothing "
                            "about GPU throughput or memory. On this shared 2-core machine repeated runs differed by up "
                            "to ~20%, so read small differences as noise.\n\n")
    lines = [(f"Data `{Path(a.data).name}`, base `{a.base}`, {a.steps} steps (first {a.warmup} not timed), batch "
              f"{a.batch_size} x accumulation {a.grad_accum}.\n"),
             (f"torch threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; one run per path "
              "(the machine may have been shared with other work).\n"),
             "| path | real tokens timed | seconds | real tokens/s | peak GPU GiB |", "|---|---|---|---|---|"]
    for r in rows:
        peak = "n/a (CPU)" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
        label = "curate (packed, padding-free)" if r["side"] == "curate" else r["side"].replace(":", " padded to ")
        lines.append(f"| {label} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | {peak} |")
    base = rows[1]["tokens_per_s"]
    lines.append(f"\ncurate vs padded-to-longest baseline: {rows[0]['tokens_per_s'] / base:.2f}x tokens/s"
                 + (f", {rows[0]['peak_gpu_gib'] / rows[1]['peak_gpu_gib']:.2f}x peak memory" if cuda else ""))
    return head + "\n".join(lines)


if __name__ == "__main__":
    main()
