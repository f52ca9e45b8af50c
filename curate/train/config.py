"""Settings of `curate train` and `curate merge` (see curate/config.py for how they become options and the recipe section).

The training data, the validation file, the run folder, `resume` and callbacks are arguments of
`train()`, not settings. `--set KEY=VALUE` is a second spelling of any flag (`parse_sets`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from curate.config import Opt, StageConfig

# the schedulers transformers runs without extra scheduler arguments
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt"]
# "auto": on with CUDA, off on CPU
Auto = Annotated[Literal["auto"] | bool, Opt(metavar="auto|true|false")]
# "auto": MKL_NUM_THREADS / OMP_NUM_THREADS when set, else the free cores (curate.train.threads)
Threads = Annotated[Literal["auto"] | Annotated[int, Field(ge=1)], Opt(metavar="auto|N")]
THREADS_HELP = ("CPU threads torch uses (auto: MKL_NUM_THREADS or OMP_NUM_THREADS when set, else the usable "
                "cores minus those other processes keep busy, at least 1).")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class TrainConfig(StageConfig):
    """Every setting of `curate train`; defaults follow the design (LoRA r=16, 3 epochs, cosine, ...)."""

    stage: ClassVar[str] = "train"
    base: Annotated[str, Opt(kind="model")] = Field(
        "embedded", description="Base model folder, 'embedded' (SmolLM2-135M-Instruct), 'gemma3-270m' (Gemma 3 270M "
                                "base; extra 'bases'), or in a `curate run` recipe 'auto' (`curate pick-base`'s "
                                "choice on the training data).")
    qlora: bool = Field(False, description="Load the base in 4-bit NF4 (bitsandbytes; needs CUDA).")
    # LoRA adapter
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: Annotated[list[str], Opt(sep=",", metavar="MODULES")] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="Modules that get a LoRA adapter.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases are trained.")
    task_type: Literal["CAUSAL_LM"] = Field("CAUSAL_LM", description="peft task type (curate trains causal LMs).")
    # optimisation
    epochs: float = Field(3.0, gt=0, description="Epochs over the training rows (max_steps > 0 overrides).")
    batch_size: int = Field(4, ge=1, description="Rows per device batch.")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps per optimizer step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Scheduler = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming up the learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (> 0 overrides epochs; "
                                                  "-1: train for epochs).")
    seed: int = Field(0, ge=0, description="Seed of the validation split, LoRA init and data order.")
    # evaluation, checkpoints, overfitting guard
    eval_steps: int = Field(100, ge=1, description="Evaluate every N steps.")
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps (a multiple of eval_steps).")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    save_total_limit: int = Field(3, ge=1, description="Checkpoints kept (the best one is never removed).")
    guard: bool = Field(True, description="Stop when validation loss rises while training loss falls.")
    guard_patience: int = Field(3, ge=1, description="Evaluations in a row with validation loss rising that stop "
                                                     "training.")
    guard_min_delta: float = Field(0.0, ge=0, description="A validation loss rise smaller than this is noise.")
    # data
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Validation share of the data when no validation file "
                                                             "is given.")
    max_length: int | None = Field(None, ge=8, description="Drop rows longer than this many tokens (default: the "
                                                           "data's length_percentile).")
    length_percentile: float = Field(95.0, gt=0, le=100, description="Percentile of token lengths that sets the "
                                                                     "default max_length.")
    # hardware paths
    padding_free: Auto = Field("auto", description="Packed batches without padding (auto: on with CUDA; padding "
                                                   "measured faster on CPU).")
    bf16: Auto = Field("auto", description="Train in bfloat16 (auto: on with CUDA).")
    gradient_checkpointing: Auto = Field("auto", description="Recompute activations to save memory (auto: on with "
                                                             "CUDA).")
    threads: Threads = Field("auto", description=THREADS_HELP)

    @field_validator("base", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        # `--set target_modules=q_proj,v_proj` and a recipe's "q_proj, v_proj" name the same list
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("target_modules")
    @classmethod
    def _some_module(cls, value: list[str]) -> list[str]:
        from pydantic_core import PydanticCustomError

        if not value:
            raise PydanticCustomError("no_modules", "name at least one module (e.g. q_proj)")
        return value

    @field_validator("max_length", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none", "null") else value

    @field_validator("padding_free", "bf16", "gradient_checkpointing", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        from pydantic_core import PydanticCustomError

        if not isinstance(value, str):
            return value
        low = value.strip().lower()
        if low == "auto":
            return "auto"
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise PydanticCustomError("auto_bool", "expected auto, true or false")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return threads_value(value)

    @field_validator("save_steps")
    @classmethod
    def _saves_at_evaluations(cls, value: int, info: ValidationInfo) -> int:
        from pydantic_core import PydanticCustomError

        every = info.data.get("eval_steps")
        if every and value % every:
            raise PydanticCustomError("save_steps", "must be a multiple of eval_steps ({every}) so the best "
                                                    "checkpoint can be kept", {"every": every})
        return value


class MergeConfig(StageConfig):
    """Which base model the adapter is folded into (the output folder and --overwrite are arguments of merge())."""

    stage: ClassVar[str] = "merge"
    base: Annotated[str | None, Opt(kind="model")] = Field(
        None, description="Base model folder or 'embedded' (default: the one in the run card).")

    @field_validator("base", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


def threads_value(value: Any) -> str | int:
    """The threads setting from `auto` (any case) or a whole number >= 1, also given as text (CLI, --set)."""
    from pydantic_core import PydanticCustomError

    if isinstance(value, str):
        text = value.strip().lower()
        value = int(text) if text.isdigit() else text
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise PydanticCustomError("threads", "expected auto or a number of threads (1 or more)")


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--set key=value` pairs as a mapping of setting names (dashes read as underscores) to their text."""
    from curate.errors import UsageError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
