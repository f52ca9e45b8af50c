"""The settings of `curate score`: which scores run (text statistics always; perplexity and the judge when
asked), and the `keep` rules that send rows to the quarantine."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from curate.config import Opt, StageConfig
from curate.score.judge import JudgeSettings
from curate.train.config import THREADS_HELP, Threads, threads_value

# the columns each scorer adds (score_judge_reason is text for people, not a score: the report leaves it out)
TEXT_COLUMNS = ("score_reply_chars", "score_reply_words", "score_prompt_chars", "score_prompt_words",
                "score_repetition", "score_non_alpha", "score_language", "score_language_prob")
PERPLEXITY_COLUMNS = ("score_perplexity", "score_perplexity_tokens")
JUDGE_COLUMNS = ("score_judge", "score_judge_reason")


class ScoreConfig(StageConfig):
    """Per-row quality scores, and the rules a row must pass to stay in the data."""

    stage: ClassVar[str] = "score"
    perplexity: bool = Field(
        False, description="Also score the perplexity of the assistant replies given the prompt with `model` (slow "
                           "on CPU: its tokens per second are reported).")
    model: Annotated[str, Opt(kind="model")] = Field(
        "embedded", description="The model for perplexity: 'embedded' (SmolLM2-135M), 'gemma3-270m' or a model "
                                "folder.")
    max_length: int = Field(
        1024, ge=8, description="Perplexity reads at most this many tokens of a conversation, its end (the last "
                                "replies) kept: it bounds the cost of a row.")
    perplexity_batch: int = Field(8, ge=1, description="Conversations of similar length scored at once.")
    threads: Threads = Field("auto", description=THREADS_HELP)
    repetition_n: int = Field(
        3, ge=1, le=10, description="score_repetition is the share of the reply's word N-grams that repeat an "
                                    "earlier one.")
    judge: Annotated[JudgeSettings | None, Opt(cli=False)] = Field(
        None, description="A teacher model as judge: score_judge (1-5) on a stated rubric, with its reason.")
    batch_size: Annotated[int, Opt(recipe=False)] = Field(
        1_000, ge=1, description="Rows read, scored and written at a time.")
    keep: Annotated[list[str], Opt(metavar="RULE")] = Field(
        [], description="A rule every kept row must pass, e.g. 'score_judge >= 3 and score_repetition < 0.3' "
                        "(repeatable; all must hold). Columns, numbers, 'text', < <= > >= == !=, in [...], and, or, "
                        "not, parentheses. A row that fails goes to the quarantine with the rule and its values.")
    missing: Literal["quarantine", "keep"] = Field(
        "quarantine", description="A row for which a rule cannot be decided because a score it names is missing "
                                  "(the judge failed on it, a reply without letters has no language): quarantine "
                                  "it (reason 'COLUMN missing') or keep it. Counted either way.")

    @field_validator("model", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return threads_value(value)

    @field_validator("keep")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        from pydantic_core import PydanticCustomError

        from curate.errors import UsageError
        from curate.score.gate import parse_rule

        known = set(columns_of(True, True))
        for rule in value:
            try:
                parsed = parse_rule(rule, "rule")
            except UsageError as exc:
                raise PydanticCustomError("rule", "{problem}", {"problem": str(exc)}) from None
            for name in parsed.columns:  # a typo fails here; a score these settings do not compute, at the run
                if name.startswith("score_") and name not in known:
                    raise PydanticCustomError("rule", "{problem}", {"problem": (
                        f"rule '{rule}': unknown score column '{name}'; known: {', '.join(sorted(known))}")})
        return value

    def needs(self, column: str) -> str | None:
        """What would compute a score column these settings do not (None: they do, or it is not a score)."""
        if column in self.columns() or not column.startswith("score_"):
            return None
        return "set perplexity" if column.startswith("score_perplexity") else "add a judge section"

    def columns(self) -> tuple[str, ...]:
        """The score_* columns these settings add, in order."""
        return columns_of(self.perplexity, self.judge is not None)


def columns_of(perplexity: bool, judge: bool) -> tuple[str, ...]:
    return (*TEXT_COLUMNS, *(PERPLEXITY_COLUMNS if perplexity else ()), *(JUDGE_COLUMNS if judge else ()))
