"""`curate train`: LoRA / QLoRA on canonical data with transformers' Trainer and peft.

A run folder (`-o runs/NAME`) holds one run:
    run_started.json         what the run is of (data and validation hashes, base, settings)
    checkpoints/checkpoint-N Trainer checkpoints: started again, a killed run resumes from the last one
    loss.jsonl, loss.png     the curves, rewritten as training goes
    adapter/, run_card.json  written when training ends
Starting over (resume=False, or nothing to resume) first removes what an earlier run wrote there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import console
from curate.dataset import content_hash_file
from curate.errors import MissingDependency, UsageError
from curate.inputs import Source
from curate.outcome import StageOutcome
from curate.outputs import umask_modes
from curate.train.config import TrainConfig
from curate.train.data import IGNORE, TokenizedData, prepare
from curate.train.threads import Threads, torch_threads

# what a run writes into its folder besides checkpoints/ (removed when a run starts over)
RUN_FILES = ("adapter", ".adapter.tmp", "run_card.json", "run_card.json.tmp", "loss.jsonl", "loss.jsonl.tmp",
             "loss.png", "loss.tmp.png")
# outputs by name -> file in the run folder
OUTPUTS = {"adapter": "adapter", "run_card": "run_card.json", "loss": "loss.jsonl", "loss_plot": "loss.png"}


class ExampleDataset:
    """A list of tokenized examples as the map-style dataset Trainer expects."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


class PadCollator:
    """Right-pads a batch (labels with -100) to its longest row, or to `width`: used when padding_free is off."""

    def __init__(self, pad_id: int, width: int | None = None):
        self.pad_id, self.width = pad_id, width

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max([len(f["input_ids"]) for f in features] + [self.width or 0])
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_id] * (width - n))
            labels.append(f["labels"] + [IGNORE] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_qlora() -> None:
    """QLoRA needs CUDA and bitsandbytes: fail before touching data or models."""
    if not cuda_available():
        raise UsageError(
            "--qlora loads the base model in 4-bit NF4 through bitsandbytes, which needs a CUDA GPU, and this "
            "machine has none; train a plain LoRA adapter instead (drop --qlora) or run on a GPU machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependency("bitsandbytes", "qlora", "--qlora (4-bit NF4 base model)")


def load_base(model_path: str, *, qlora: bool, cuda: bool, bf16: bool) -> Any:
    """The base causal LM: fp32 on CPU, bf16 on GPU, 4-bit NF4 for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if cuda:
        kwargs["attn_implementation"] = (
            "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
        )
    if qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # 4-bit weights are placed on the GPU at load
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False  # a KV cache disables packed-sequence masking and wastes memory in training
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def _auto(value: str | bool, cuda: bool) -> bool:
    return cuda if value == "auto" else bool(value)


def _hyper(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that make a run what it is, without base and qlora (kept at the top level of run cards
    and run_started.json) and threads (how fast, not what: a run resumes, or is reported, under any count)."""
    return cfg.model_dump(mode="json", exclude={"base", "qlora", "threads"})


def _sha256(source: Source) -> str:
    if isinstance(source, pa.Table):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, source.schema) as w:
            w.write_table(source)
        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return content_hash_file(source)


def _name(source: Source | None) -> str | None:
    if source is None:
        return None
    return "(table)" if isinstance(source, pa.Table) else str(source)


def _fingerprint(data: Source, val: Source | None, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "data": _name(data), "data_sha256": _sha256(data),
        "val": _name(val), "val_sha256": _sha256(val) if val is not None else None,
        "base": cfg.base, "qlora": cfg.qlora, "config": _hyper(cfg),
    }


def _last_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | tuple[None, None]:
    """The last checkpoint whose trainer state reads whole (a kill while saving can cut the last one), and that state."""
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    for p in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        try:
            return p, json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
    return None, None


def _stopped(state: dict[str, Any]) -> bool:
    """Whether a checkpoint was saved as training ended (its last step, or the guard's stop)."""
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    return bool(control.get("should_training_stop")) or state["global_step"] >= state.get("max_steps", float("inf"))


def _finished_card(run_dir: Path, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The run card of a finished run of exactly this data, base and settings, with its adapter (else None)."""
    card_path = run_dir / "run_card.json"
    if not card_path.is_file() or not (run_dir / "adapter" / "adapter_config.json").is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
        same = (card["base"], card["qlora"], card["config"], card["data"]["sha256"], card["data"]["val_sha256"]) == (
            fp["base"], fp["qlora"], fp["config"], fp["data_sha256"], fp["val_sha256"])
    except (ValueError, KeyError, TypeError):
        return None
    return card if same else None


def _plan(run_dir: Path, fp: dict[str, Any], resume: bool) -> tuple[dict[str, Any] | None, Path | None]:
    """(the card of this run, already finished; the checkpoint to resume from); both None: start over.

    Trainer resumed from a checkpoint saved as training ended takes one step more than asked, so such a
    run is reported from its card, or started over when its card was never written.
    """
    if not resume:
        return None, None
    last, state = _last_checkpoint(run_dir / "checkpoints")
    started = run_dir / "run_started.json"
    if last is not None:
        before = json.loads(started.read_text()) if started.exists() else None
        if before != fp:
            raise UsageError(
                f"{run_dir} holds checkpoints of a run with different data, base or settings; "
                "use another -o or pass --no-resume to start over"
            )
    card = _finished_card(run_dir, fp)
    if card is not None and (state is None or card["metrics"]["global_step"] >= state["global_step"]):
        return card, None
    if state is not None and not _stopped(state):
        return None, last
    return None, None


def _start_over(run_dir: Path, fp: dict[str, Any]) -> None:
    """Remove what an earlier run wrote here (its checkpoints, adapter, card and curves; nothing else) and mark this one."""
    ckpt_dir = run_dir / "checkpoints"
    for p in ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else ():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_started.json").write_text(json.dumps(fp, indent=2))


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from curate import __version__

    return {"curate": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def train(
    data: Source,
    output: str | Path,
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    val: Source | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> StageOutcome:
    """Train a LoRA (or QLoRA) adapter on canonical data; writes adapter/, run_card.json and loss curves to `output`.

    resume: continue a killed run from its last checkpoint (a finished run is reported again, not
    trained further); False starts over, removing what an earlier run wrote in `output`.
    """
    cfg = TrainConfig.build(config, **overrides)
    if cfg.qlora:
        check_qlora()
    run_dir = Path(output)
    for p in (data, val):
        if p is not None and not isinstance(p, pa.Table) and not Path(p).exists():
            raise UsageError(f"no such file: {p}")
    fp = _fingerprint(data, val, cfg)
    card, resume_from = _plan(run_dir, fp, resume)
    if card is not None:
        console.print(f"{run_dir} holds a finished run of this data and these settings: reporting it "
                      "(pass --no-resume to train again)")
        return _outcome(cfg, run_dir, card, previously_finished=True)
    from curate.embedded import load_tokenizer, resolve_model

    model_path = resolve_model(cfg.base)
    tokenizer = load_tokenizer(model_path)
    td = prepare(data, tokenizer, val=val, val_fraction=cfg.val_fraction, max_length=cfg.max_length,
                 length_percentile=cfg.length_percentile, seed=cfg.seed)
    console.print(
        f"training rows {len(td.train)}, validation rows {len(td.val)} ({td.val_source}); max length "
        f"{td.max_length} tokens ({td.max_length_source}); dropped {td.dropped_too_long} too long, "
        f"{td.dropped_no_assistant} without an assistant reply"
    )
    if resume_from is None:
        _start_over(run_dir, fp)
    with torch_threads(cfg.threads) as threads:
        console.print(f"torch threads: {threads.count} ({threads.why})")
        card = _run(td, cfg, model_path, run_dir, fp, resume_from, callbacks, threads)
    return _outcome(cfg, run_dir, card, previously_finished=False)


def _outcome(cfg: TrainConfig, run_dir: Path, card: dict[str, Any], previously_finished: bool) -> StageOutcome:
    """in = rows read (data + validation file); kept = training + validation rows; rejected = rows dropped."""
    c = card["counts"]
    reasons = {"too_long": c["dropped_too_long"], "no_assistant": c["dropped_no_assistant"]}
    counts = {"in": c["rows_in"], "kept": c["train_rows"] + c["val_rows"], "rejected": sum(reasons.values())}
    outputs = {name: str(run_dir / f) for name, f in OUTPUTS.items() if (run_dir / f).exists()}
    return StageOutcome("train", counts, outputs, {
        "config": cfg.to_dict(), "run_dir": str(run_dir), "data": c, "reasons": reasons, "metrics": card["metrics"],
        "threads": card["hardware"].get("threads"),  # None in cards written before curate chose them
        "stopped_early": card["stopped_early"], "resumed_from": card["resumed_from"],
        "best_checkpoint": card["best_checkpoint"], "previously_finished": previously_finished})


def _run(td: TokenizedData, cfg: TrainConfig, model_path: str, run_dir: Path, fp: dict[str, Any],
         resume_from: Path | None, callbacks: Sequence[Any], threads: Threads) -> dict[str, Any]:
    """Train, save the adapter and write the run card (returned)."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithFlattening, PrinterCallback, Trainer, TrainingArguments, set_seed

    from curate.train.callbacks import CurateCallback

    cuda = cuda_available()
    bf16 = _auto(cfg.bf16, cuda)
    checkpointing = _auto(cfg.gradient_checkpointing, cuda)
    packed = _auto(cfg.padding_free, cuda)
    model = load_base(model_path, qlora=cfg.qlora, cuda=cuda, bf16=bf16)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias=cfg.bias, task_type=cfg.task_type)
    set_seed(cfg.seed)  # LoRA's initial weights: torch's generator starts from a random seed in each process
    model = get_peft_model(model, lora)
    if packed:
        flash = getattr(model.config, "_attn_implementation", "") == "flash_attention_2"
        collator = DataCollatorWithFlattening(return_flash_attn_kwargs=flash)
    else:
        collator = PadCollator(model.config.pad_token_id or 0)
    has_val = bool(td.val)
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=cfg.seed,
        eval_strategy="steps" if has_val else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss", greater_is_better=False,
        # a training loss logged by every evaluation, so the guard compares like with like
        logging_steps=min(cfg.logging_steps, cfg.eval_steps), report_to="none", disable_tqdm=True, bf16=bf16,
        activation_checkpointing=checkpointing, activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False, label_names=["labels"], use_cpu=not cuda, dataloader_num_workers=0,
        include_num_input_tokens_seen="all" if packed else "non_padding",
    )
    cb = CurateCallback(run_dir, cfg.guard, cfg.guard_patience, cfg.guard_min_delta)
    trainer = Trainer(model=model, args=args, train_dataset=ExampleDataset(td.train),
                      eval_dataset=ExampleDataset(td.val) if has_val else None, data_collator=collator,
                      callbacks=[cb, *callbacks])
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout, which --json reserves
    metrics: dict[str, Any] = {}
    if has_val and resume_from is None:
        metrics["eval_loss_before"] = cb.start_eval_loss = trainer.evaluate()["eval_loss"]
    if resume_from:
        console.print(f"resuming from {resume_from}")
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - t0
    state = trainer.state
    metrics.update(train_loss=out.training_loss, global_step=state.global_step, epochs=state.epoch,
                   train_seconds=round(wall, 2), tokens_seen=state.num_input_tokens_seen,
                   # this attempt's: mean optimizer step (evaluations, saves left out), validation passes
                   step_seconds=round(statistics.fmean(cb.step_seconds), 3) if cb.step_seconds else None,
                   eval_seconds=round(sum(cb.eval_seconds), 2))
    start = [e["eval_loss"] for e in state.log_history if e.get("step") == 0 and "eval_loss" in e]
    if start and "eval_loss_before" not in metrics:
        metrics["eval_loss_before"] = start[0]  # a resumed run: measured by the first attempt, kept in the history
    if has_val:
        # Trainer evaluates at the last step too, so the best checkpoint's loss is already known
        metrics["eval_loss_best"] = state.best_metric
    adapter_dir = run_dir / "adapter"
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    umask_modes(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.replace(adapter_dir)
    card = {
        "base": fp["base"], "base_path": model_path, "qlora": fp["qlora"],
        "data": {"path": fp["data"], "sha256": fp["data_sha256"], "val_path": fp["val"], "val_sha256": fp["val_sha256"]},
        "counts": td.summary(), "config": fp["config"], "metrics": metrics, "stopped_early": cb.stop_reason,
        "resumed_from": str(resume_from) if resume_from else None, "best_checkpoint": state.best_model_checkpoint,
        "hardware": {"cuda": cuda, "bf16": bf16, "gradient_checkpointing": checkpointing,
                     "padding_free": packed, "threads": threads.to_dict()},
        "versions": _versions(), "adapter": "adapter/", "loss_curves": ["loss.jsonl", "loss.png"],
    }
    tmp_card = run_dir / "run_card.json.tmp"
    tmp_card.write_text(json.dumps(card, indent=2, default=str))
    tmp_card.replace(run_dir / "run_card.json")
    return card
