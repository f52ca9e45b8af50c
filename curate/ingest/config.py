"""Settings of `curate ingest` and `curate export` (see curate/config.py for how they become options)."""

from __future__ import annotations

import typing
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from curate.config import Opt, StageConfig

InputFormat = Literal["openai", "sharegpt", "alpaca", "prompt-completion", "preference", "qa", "mtbench",
                      "self-instruct", "canonical", "openai-batch", "openai-completion", "langfuse", "langsmith"]
INPUT_FORMATS: tuple[str, ...] = typing.get_args(InputFormat)
ExportFormat = Literal["openai", "sharegpt", "alpaca", "hermes"]


class IngestConfig(StageConfig):
    """How input files are read into the canonical dataset."""

    stage: ClassVar[str] = "ingest"
    format: Literal["auto", "mixed", InputFormat] = Field(
        "auto", description="The input format: auto (per file, from its first records), mixed (each record by "
                            "its own format), or one of them.")
    origin: str | None = Field(None, description="Origin of these rows: production, seed, eval, ... (default: "
                                                 "the record's own `origin` field, else seed).")
    workers: int | None = Field(None, ge=1, description="Processes that parse and convert JSONL blocks (default: "
                                                        "the cores this process may use); outputs are the same "
                                                        "for any number.")
    max_reject_rate: Annotated[float, Opt(recipe=False)] = Field(
        0.0, ge=0, le=1, description="Fail (exit 1) when more than this share of records is rejected.")


class ExportConfig(StageConfig):
    """How the canonical dataset is written out."""

    stage: ClassVar[str] = "export"
    to: ExportFormat = Field("openai", description="The format to write: openai (JSONL), sharegpt or alpaca (JSON), hermes "
                                                       "(OpenAI messages with tool use written as Hermes tags, JSONL).")
