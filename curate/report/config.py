"""Settings of `curate report` (see curate/config.py for how they become options and the recipe section).

The sets compared (train, production, baseline) and the files written (HTML, gaps) are arguments of
`report()`, not settings.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from curate.config import Opt, StageConfig


class ReportConfig(StageConfig):
    """How the training set is compared with production: tokenizer, embeddings, clusters, gates."""

    stage: ClassVar[str] = "report"
    tokenizer: Annotated[str, Opt(kind="model")] = Field(
        "embedded", description="Tokenizer and chat template for token lengths: 'embedded' or a local folder.")
    fail_on: Annotated[list[str], Opt(metavar="EXPR")] = Field(
        [], description="Exit 1 when METRIC OP NUMBER holds, e.g. 'p95_ratio>1.5', 'uncovered_share>10%'. "
                        "Repeatable.")
    embedder: Literal["auto", "minilm", "tfidf"] = Field(
        "auto", description="auto: all-MiniLM-L6-v2 when torch is installed, TF-IDF + SVD otherwise (stated in "
                            "the report).")
    k: Annotated[int | None, Opt(short="-k")] = Field(
        None, ge=1, description="Production clusters (default: chosen by silhouette).")
    gap_ratio: float = Field(
        0.25, gt=0, le=1, description="A cluster is a gap when its training share is under this times its "
                                      "production share.")
    seed: int = Field(0, ge=0, description="Seed of clustering, embeddings and the classifier.")
    redact: bool = Field(
        False, description="Mask e-mail addresses, phone, card and IBAN numbers, IP addresses, API keys (and person "
                           "names where a trained spaCy pipeline is installed) in every set before rows are embedded, "
                           "clustered, shown or written as gap seeds; counts per kind in the report (the `redact` "
                           "extra: presidio-analyzer).")
    workers: int | None = Field(
        None, ge=1, description="Processes that count token lengths, a batch of 2,000 records each (default: the "
                                "usable cores; a set of one batch is counted here); the report is the same for any "
                                "number.")
    embed_sample: int = Field(
        20_000, ge=2, description="Coverage and drift embed at most this many rows of each set: a larger set is "
                                  "represented by a sample of this size drawn from the seed (said so in the report).")

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("fail_on")
    @classmethod
    def _gates(cls, value: list[str]) -> list[str]:
        from pydantic_core import PydanticCustomError

        from curate.errors import UsageError
        from curate.report.gates import parse_gate  # a malformed gate fails before any stage runs

        for expr in value:
            try:
                parse_gate(expr)
            except UsageError as exc:
                raise PydanticCustomError("gate", "{problem}", {"problem": str(exc)}) from None
        return value
