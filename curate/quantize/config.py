"""Settings of `curate quantize` (see curate/config.py for how they become options).

The run, the output folder and the held-out data are arguments of `quantize()`, not settings. The
evaluation settings are `EvalConfig`'s of the same names.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from curate.config import Opt, StageConfig
from curate.train.config import Threads, threads_value

# llama.cpp's file types by the names its `llama-quantize` tool uses (lower case)
QUANTS = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q5_0": "Q5_0", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0",
          "q3_k_m": "Q3_K_M", "q2_k": "Q2_K", "f16": "F16"}
Quant = Literal["q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k", "f16"]
EVAL_SETTINGS = ("output_schema", "output_regex", "task_fields", "max_new_tokens", "limit", "examples")


class QuantizeConfig(StageConfig):
    """Which quantizations, the loss each may have, and how the GGUF files are evaluated."""

    stage: ClassVar[str] = "quantize"
    quant: list[Quant] = Field(["q8_0"], min_length=1, description="llama.cpp quantization type (repeatable).")
    max_loss: float = Field(0.05, le=1.0, description="Most a quantization may lose of the headline (task accuracy; "
                                                      "similarity for prose; the format rate without references), "
                                                      "absolute, against the f32 GGUF; more exits 1.")
    base: Annotated[str | None, Opt(kind="model")] = Field(
        None, description="The base model the adapter was trained on (default: the run card's).")
    output_schema: Annotated[str | None, Opt(kind="file")] = Field(
        None, description="JSON Schema every reply must satisfy (as `curate eval`).")
    output_regex: str | None = Field(None, description="Regular expression the whole reply must match.")
    task_fields: Annotated[list[str] | None, Opt(sep=",")] = Field(
        None, description="Output fields that must all be right for a prompt to count as correct.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per reply.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows.")
    examples: int = Field(3, ge=0, description="Prompts kept side by side with every file's reply in the outcome "
                                               "(those where the files' replies differ first).")
    threads: Threads = Field("auto", description="CPU threads llama.cpp quantizes and serves with (auto: "
                                                 "MKL_NUM_THREADS or OMP_NUM_THREADS when set, else the usable cores "
                                                 "minus those other processes keep busy, at least 1).")

    @field_validator("base", "output_schema", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return threads_value(value)

    @field_validator("quant")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))
