"""The settings of `curate repair`: which named fixes run."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from curate.config import Opt, StageConfig

# the order they run in on each text (mojibake first: the C1 characters it repairs are not controls to strip)
FIXES = ("mojibake", "control_characters", "whitespace", "code_fence", "tool_arguments")
FixName = Literal["mojibake", "control_characters", "whitespace", "code_fence", "tool_arguments"]


class RepairConfig(StageConfig):
    """The fixes to apply (all by default)."""

    stage: ClassVar[str] = "repair"
    fix: Annotated[list[FixName], Opt(metavar="NAME")] = Field(
        default_factory=lambda: list(FIXES), min_length=1,
        description="A fix to apply (repeatable); naming any runs only those named.")
