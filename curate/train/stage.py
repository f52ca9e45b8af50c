"""`curate train`: LoRA / QLoRA on canonical data with transformers' Trainer and peft."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.console import console
from curate.dataset import content_hash_file
from curate.errors import MissingDependency, UsageError
from curate.train.config import TrainConfig
from curate.train.data import IGNORE, TokenizedData, prepare


@dataclass
class TrainResult:
    """What a finished run produced: where its adapter is, its counts, metrics and whether it stopped early."""

    run_dir: Path
    adapter_dir: Path
    config: dict[str, Any]
    counts: dict[str, Any]
    metrics: dict[str, Any]
    stopped_early: str | None = None
    resumed_from: str | None = None
    best_checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "adapter_dir": str(self.adapter_dir), "config": self.config,
            "counts": self.counts, "metrics": self.metrics, "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from, "best_checkpoint": self.best_checkpoint,
        }


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


def _fingerprint(data: Path, val: Path | None, base: str, cfg: TrainConfig, qlora: bool) -> dict[str, Any]:
    return {
        "data": str(data), "data_sha256": content_hash_file(data),
        "val": str(val) if val else None, "val_sha256": content_hash_file(val) if val else None,
        "base": base, "qlora": qlora, "config": cfg.as_dict(),
    }


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    found = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def _prepare_run_dir(run_dir: Path, fingerprint: dict, resume: bool) -> Path | None:
    """The checkpoint to resume from, after checking it belongs to the same data and config."""
    ckpt_dir = run_dir / "checkpoints"
    started = run_dir / "run_started.json"
    last = _last_checkpoint(ckpt_dir) if ckpt_dir.exists() else None
    if last and resume:
        before = json.loads(started.read_text()) if started.exists() else None
        if before != fingerprint:
            raise UsageError(
                f"{run_dir} holds checkpoints of a run with different data, base or settings; "
                "use another -o or pass --no-resume to start over"
            )
        return last
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # --no-resume, or nothing resumable: start clean
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(fingerprint, indent=2))
    return None


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from curate import __version__

    return {"curate": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def train(
    data: str | Path,
    *,
    output: str | Path,
    base: str | None = "embedded",
    config: TrainConfig | dict | None = None,
    val: str | Path | None = None,
    qlora: bool = False,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    **overrides: Any,
) -> TrainResult:
    """Train a LoRA (or QLoRA) adapter on canonical data; writes adapter/, run_card.json and loss curves."""
    cfg = TrainConfig.from_any(config, **overrides)
    if qlora:
        check_qlora()
    data, run_dir = Path(data), Path(output)
    val = Path(val) if val else None
    for p in (data, val):
        if p is not None and not p.exists():
            raise UsageError(f"no such file: {p}")
    from curate.embedded import load_tokenizer, resolve_model

    model_path = resolve_model(base)
    tokenizer = load_tokenizer(model_path)
    td = prepare(data, tokenizer, val=val, val_fraction=cfg.val_fraction, max_length=cfg.max_length,
                 length_percentile=cfg.length_percentile, seed=cfg.seed)
    console.print(
        f"training rows {len(td.train)}, validation rows {len(td.val)} ({td.val_source}); max length "
        f"{td.max_length} tokens ({td.max_length_source}); dropped {td.dropped_too_long} too long, "
        f"{td.dropped_no_assistant} without an assistant reply"
    )
    resume_from = _prepare_run_dir(run_dir, _fingerprint(data, val, str(base), cfg, qlora), resume)
    return _run(td, cfg, model_path, run_dir, data, val, base, qlora, resume_from, callbacks)


def _run(td: TokenizedData, cfg: TrainConfig, model_path: str, run_dir: Path, data: Path, val: Path | None,
         base: str | None, qlora: bool, resume_from: Path | None, callbacks: Sequence[Any]) -> TrainResult:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithFlattening, PrinterCallback, Trainer, TrainingArguments

    from curate.train.callbacks import CurateCallback

    cuda = cuda_available()
    bf16 = _auto(cfg.bf16, cuda)
    checkpointing = _auto(cfg.gradient_checkpointing, cuda)
    packed = _auto(cfg.padding_free, cuda)
    model = load_base(model_path, qlora=qlora, cuda=cuda, bf16=bf16)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias=cfg.bias, task_type=cfg.task_type)
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
                   train_seconds=round(wall, 2), tokens_seen=state.num_input_tokens_seen)
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
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.replace(adapter_dir)
    result = TrainResult(
        run_dir=run_dir, adapter_dir=adapter_dir, config=cfg.as_dict(), counts=td.summary(), metrics=metrics,
        stopped_early=cb.stop_reason, resumed_from=str(resume_from) if resume_from else None,
        best_checkpoint=state.best_model_checkpoint,
    )
    _write_card(result, data, val, base, model_path, qlora, cuda, bf16, checkpointing, packed)
    return result


def _write_card(r: TrainResult, data: Path, val: Path | None, base: str | None, model_path: str, qlora: bool,
                cuda: bool, bf16: bool, checkpointing: bool, packed: bool) -> None:
    card = {
        "base": base or "embedded", "base_path": model_path, "qlora": qlora,
        "data": {"path": str(data), "sha256": content_hash_file(data),
                 "val_path": str(val) if val else None, "val_sha256": content_hash_file(val) if val else None},
        "counts": r.counts, "config": r.config, "metrics": r.metrics, "stopped_early": r.stopped_early,
        "resumed_from": r.resumed_from, "best_checkpoint": r.best_checkpoint,
        "hardware": {"cuda": cuda, "bf16": bf16, "gradient_checkpointing": checkpointing, "padding_free": packed},
        "versions": _versions(), "adapter": "adapter/", "loss_curves": ["loss.jsonl", "loss.png"],
    }
    tmp = r.run_dir / "run_card.json.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=str))
    tmp.replace(r.run_dir / "run_card.json")
