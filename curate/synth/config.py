"""Settings of `curate synth` (see curate/config.py for how they become options and the recipe section).

The output, the request cache and trusting a recipe are arguments of `synthesize()`, not settings. The
synth recipe itself (what to ask the teacher) is a data file of its own, schemas/synth-recipe.schema.json;
the `recipe` setting names it, or in a run recipe holds it inline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from curate.config import Opt, StageConfig


class SynthConfig(StageConfig):
    """Which teacher, which recipe and seeds, and the limits on what a run may send and spend."""

    stage: ClassVar[str] = "synth"
    teacher: str = Field(description="Model name at base_url, or 'local' for the embedded llama.cpp teacher.")
    base_url: str | None = Field(
        None, description="The teacher's OpenAI-compatible endpoint (default: OpenAI), e.g. http://127.0.0.1:8000/v1. "
                          "A server a run recipe names gets no API key unless --trust-recipe.")
    recipe: Annotated[str | dict[str, Any], Opt(kind="file")] = Field(
        description="Synth recipe YAML (recipes/synth-*.yaml); in a run recipe also the synth recipe itself, inline.")
    seeds: Annotated[str | None, Opt(kind="file")] = Field(
        None, description="Seed file in any format `curate ingest` reads (default: the recipe's `seeds`).")
    max_seeds: int | None = Field(
        None, ge=1, description="Read only the first N seed records (document chunks for grounding.use: each).")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit.")
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit (prompt estimate + max_tokens).")
    max_total_tokens: int | None = Field(
        None, ge=1, description="Stop starting requests before this many tokens are spent.")
    budget: float | None = Field(None, ge=0, description="Stop starting requests before this many dollars are spent.")
    price_in: float | None = Field(
        None, ge=0, description="Dollars per 1M prompt tokens (overrides the recipe's pricing).")
    price_out: float | None = Field(
        None, ge=0, description="Dollars per 1M completion tokens (overrides the recipe's pricing).")
    retry_failed: bool = Field(False, description="Send again the requests that failed in an earlier run.")
    verify: bool = Field(False, description="Ask the teacher to judge each extracted claim against the sources.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (a run recipe may set it only "
                                      "with --trust-recipe).")
    timeout: float = Field(120.0, gt=0, description="Seconds per request before it is retried.")
    max_retries: int = Field(6, ge=0, description="Retries per request on 429/5xx/timeouts/drops.")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto", description="How a recipe's reply schema is sent (it is always validated).")
    max_failure_rate: float = Field(
        0.0, ge=0, le=1, description="Fail (exit 1) when more than this share of requests failed.")

    @classmethod
    def build(cls, config: StageConfig | Mapping[str, Any] | None = None, /, **overrides: Any) -> SynthConfig:
        """As StageConfig.build; an inline recipe keeps its identity (and so its line numbers) through a rebuild."""
        if isinstance(config, SynthConfig):
            config = {name: getattr(config, name) for name in type(config).model_fields}
        return super().build(config, **overrides)

    @field_validator("seeds", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("recipe", mode="wrap")
    @classmethod
    def _recipe(cls, value: Any, handler: Any) -> Any:
        # an inline recipe from a run recipe's YAML carries its file and lines: keep that very mapping
        checked = handler(os.fspath(value) if isinstance(value, os.PathLike) else value)
        return value if isinstance(value, dict) else checked

    @field_validator("base_url")
    @classmethod
    def _local_has_no_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        from pydantic_core import PydanticCustomError

        if value is not None and info.data.get("teacher") == "local":
            raise PydanticCustomError("local_teacher", "teacher 'local' starts its own server: drop base_url (or "
                                                       "name the model served there as the teacher)")
        return value
