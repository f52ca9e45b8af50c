"""`curate merge`: fold a run's LoRA adapter into its base model and save a standalone model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from curate.errors import UsageError
from curate.outcome import StageOutcome
from curate.outputs import umask_modes
from curate.train.config import MergeConfig
from curate.train.threads import torch_threads


def base_of(run: Path, adapter: Path) -> str:
    """The base a run was trained on: the run card's, else the adapter config's."""
    card = run / "run_card.json"
    if card.is_file():
        return json.loads(card.read_text())["base"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter}/adapter_config.json names no base model; pass base= explicitly")
    return base


def adapter_dir(path: str | Path) -> Path:
    """A run folder (runs/NAME, holding adapter/) or an adapter folder itself."""
    p = Path(path)
    for cand in (p / "adapter", p):
        if (cand / "adapter_config.json").is_file():
            return cand
    raise UsageError(f"{p} holds no adapter (expected {p}/adapter/adapter_config.json from `curate train`)")


def merge(run_dir: str | Path, output: str | Path, config: MergeConfig | Mapping[str, Any] | None = None, *,
          overwrite: bool = False, **overrides: Any) -> StageOutcome:
    """Write base + adapter as one model folder (safetensors + tokenizer) at `output`; `overwrite` replaces it."""
    cfg = MergeConfig.build(config, **overrides)
    run, out = Path(run_dir), Path(output)
    adapter = adapter_dir(run)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another -o or pass --overwrite")
    from peft import PeftModel

    from curate.embedded import load_tokenizer, resolve_model
    from curate.train.stage import load_base

    base = cfg.base or base_of(run, adapter)
    model_path = resolve_model(base)
    tmp = out.with_name(f".{out.name}.tmp")
    with torch_threads() as threads:
        # merge in fp32 so the folded weights are not rounded twice
        model = load_base(model_path, qlora=False, cuda=False, bf16=False)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.config.use_cache = True
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(str(tmp), safe_serialization=True)
    load_tokenizer(model_path).save_pretrained(str(tmp))
    umask_modes(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return StageOutcome("merge", {}, {"model": str(out)},
                        {"config": cfg.to_dict(), "adapter": str(adapter), "base": base,
                         "base_path": str(model_path), "threads": threads.to_dict()})
