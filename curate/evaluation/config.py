"""Settings of `curate eval` (see curate/config.py for how they become options and the recipe section).

The held-out data, the adapters (and their names), the training data whose labels are counted, the
round, the pairs compared and the files written (per-row results, failures) are arguments of
`evaluate()`, not settings.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from curate.config import Opt, StageConfig
from curate.train.config import THREADS_HELP, Threads, threads_value


class EvalConfig(StageConfig):
    """Which base model replies, how long, to how many prompts, the format every reply must have, how answers are scored."""

    stage: ClassVar[str] = "eval"
    base: Annotated[str, Opt(kind="model")] = Field(
        "embedded", description="Base model folder, or 'embedded' (SmolLM2-135M-Instruct).")
    output_schema: Annotated[str | None, Opt(kind="file")] = Field(
        None, description="JSON Schema every reply must satisfy.")
    output_regex: str | None = Field(None, description="Regular expression the whole reply must match.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per reply.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together (batched by similar length).")
    task_fields: Annotated[list[str] | None, Opt(sep=",")] = Field(
        None, description="Output fields that must all be right for a prompt to count as correct "
                          "(default: the schema's enum, number and boolean fields).")
    short_text: int = Field(32, ge=0, description="Strings up to this many characters are compared exactly; "
                                                  "longer ones by chrF similarity.")
    text_similarity: float = Field(0.5, ge=0.0, le=1.0, description="chrF (0-1) at which free text counts as right.")
    examples: int = Field(5, ge=0, description="Prompts shown side by side with every model's reply.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap resampling behind the confidence intervals.")
    threads: Threads = Field("auto", description=THREADS_HELP)

    @field_validator("base", "output_schema", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return threads_value(value)

    @field_validator("task_fields")
    @classmethod
    def _fields(cls, value: list[str] | None) -> list[str] | None:
        from pydantic_core import PydanticCustomError

        if value is not None and not value:
            raise PydanticCustomError("fields", "name at least one field (or leave task_fields out)")
        return value

    @field_validator("output_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        import re

        from pydantic_core import PydanticCustomError

        if value is not None:
            try:
                re.compile(value, re.DOTALL)
            except re.error as exc:
                raise PydanticCustomError("regex", "not a valid regular expression: {problem}",
                                          {"problem": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _one_format(self) -> EvalConfig:
        from pydantic_core import PydanticCustomError

        if self.output_schema is not None and self.output_regex is not None:
            raise PydanticCustomError("formats", "give output_schema or output_regex, not both")
        return self
