"""The settings of `curate review export` and `curate review import`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from curate.config import Opt, StageConfig


class ReviewExportConfig(StageConfig):
    """Which rows need a person, and the tool they review them in."""

    stage: ClassVar[str] = "review_export"
    to: Literal["label-studio", "argilla"] = Field(
        "label-studio", description="Label Studio task JSON (with a labeling config beside it) or Argilla records.")
    kind: Literal["auto", "run", "validated", "removed", "synth", "eval-failures"] = Field(
        "auto", description="What the inputs are: a `curate run` work folder, a validated file, dedupe's removed "
                            "rows, synth's output or review file, eval's failures; auto: a folder with manifest.json "
                            "is a run, a file is known by its columns.")
    margin: float = Field(0.05, gt=0, le=1, description="Near duplicates whose Jaccard against the kept row is under "
                                                        "threshold + margin are reviewed.")
    threshold: float | None = Field(None, gt=0, le=1, description="Dedupe's threshold (default: the one the dedupe "
                                                                  "run recorded, else 0.8).")
    skip_code: Annotated[list[str], Opt(metavar="CODE")] = Field(
        ["no_system_message"], description="Validation warnings that need no person (repeatable).")


class ReviewImportConfig(StageConfig):
    """How decisions that cannot be applied are treated."""

    stage: ClassVar[str] = "review_import"
    strict: bool = Field(False, description="Stop, writing nothing, when a decision names a row that is not in "
                                            "the dataset or cannot be applied; by default it is listed and skipped.")
