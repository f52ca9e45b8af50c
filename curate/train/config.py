"""Training configuration: the design's LoRA defaults, overridable by CLI flags or a recipe dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from curate.errors import UsageError


@dataclass
class TrainConfig:
    """Every knob of `curate train`; defaults follow the design (LoRA r=16, 3 epochs, cosine, ...)."""

    # LoRA adapter
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = "none"
    task_type: str = "CAUSAL_LM"
    # optimisation
    epochs: float = 3.0
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 2e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_steps: int = -1  # > 0 overrides epochs
    seed: int = 0
    # evaluation, checkpoints, overfitting guard
    eval_steps: int = 100
    save_steps: int = 100
    logging_steps: int = 10
    save_total_limit: int = 3
    guard: bool = True
    guard_patience: int = 3  # evaluations in a row with val loss rising while train loss falls
    guard_min_delta: float = 0.0
    # data
    val_fraction: float = 0.1
    max_length: int | None = None  # None: the data's P95 token length
    length_percentile: float = 95.0
    # hardware paths ("auto": on with CUDA, off on CPU)
    padding_free: str | bool = "auto"  # packed batches; off on CPU, where padding measured faster
    bf16: str | bool = "auto"
    gradient_checkpointing: str | bool = "auto"

    @classmethod
    def from_any(cls, value: TrainConfig | dict | None, **overrides: Any) -> TrainConfig:
        """A config from None, a TrainConfig or a recipe dict, then overrides that are not None."""
        if value is None:
            base: dict[str, Any] = {}
        elif isinstance(value, TrainConfig):
            base = asdict(value)
        elif isinstance(value, dict):
            base = dict(value)
        else:
            raise UsageError(f"train config must be a mapping, got {type(value).__name__}")
        base.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(base) - set(known))
        if unknown:
            raise UsageError(
                f"unknown train setting(s): {', '.join(unknown)}; known settings: {', '.join(known)}"
            )
        cfg = cls(**{k: _coerce(known[k].type, k, v) for k, v in base.items()})
        cfg.check()
        return cfg

    def check(self) -> None:
        """Reject values that would fail deep inside transformers with an obscure message."""
        problems = []
        for name in ("lora_r", "batch_size", "grad_accum", "eval_steps", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if self.max_length is not None and self.max_length < 8:
            problems.append(f"max_length must be >= 8 tokens (got {self.max_length})")
        if self.save_steps % self.eval_steps:
            problems.append(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                "so the best checkpoint can be kept"
            )
        if not self.target_modules:
            problems.append("target_modules must name at least one module (e.g. q_proj)")
        if problems:
            raise UsageError("invalid train settings: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(type_name: Any, key: str, value: Any) -> Any:
    """Turn strings from `--set key=value` into the field's type; leave typed values alone."""
    t = str(type_name)
    if not isinstance(value, str):
        if t.startswith("list") and isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return value
    try:
        if t == "int":
            return int(value)
        if t == "float":
            return float(value)
        if t == "int | None":
            return None if value.lower() in ("", "none", "null") else int(value)
        if t == "bool":
            return _bool(value)
        if t == "str | bool":
            return value if value == "auto" else _bool(value)
        if t.startswith("list"):
            return [v.strip() for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"train setting {key}: cannot read {value!r} as {t}") from exc
    return value


def _bool(value: str) -> bool:
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--set key=value` pairs as a dict (values are coerced by TrainConfig.from_any)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
