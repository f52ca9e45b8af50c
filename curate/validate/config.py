"""Settings of `curate validate` (see curate/config.py for how they become options and the recipe section)."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from curate.config import Opt, StageConfig

with warnings.catch_warnings():
    # `schema` is the setting's name on the CLI and in recipes; it shadows pydantic's deprecated BaseModel.schema()
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class ValidateConfig(StageConfig):
        """What `curate validate` checks, and how many errors it accepts."""

        stage: ClassVar[str] = "validate"
        schema: Annotated[str | dict[str, Any] | None, Opt(kind="schema", metavar="NAME|PATH")] = Field(
            None, description="Format schema of a raw file: openai-chat, sharegpt, alpaca, prompt-completion, "
                              "preference, or a path (default: the detected format's; a name also fixes the format).")
        tokens: bool = Field(True, description="Count tokens with the tokenizer's chat template.")
        tokenizer: Annotated[str, Opt(kind="model", metavar="auto|embedded|PATH")] = Field(
            "auto", description="Local Hugging Face tokenizer folder or 'embedded'; auto: embedded when installed, "
                                "else the token check is skipped with a note.")
        max_tokens: int | None = Field(None, ge=1, description="Flag (never truncate) records longer than this many "
                                                               "tokens.")
        show_mask: Annotated[int, Opt(recipe=False, metavar="N")] = Field(
            0, ge=0, description="Print N rendered records with their trained tokens (the loss mask) highlighted: "
                                 "records with a token finding first, then the first records.")
        output_schema: Annotated[str | dict[str, Any] | None, Opt(kind="file")] = Field(
            None, description="JSON Schema every assistant reply must satisfy.")
        output_regex: str | None = Field(None, description="Regular expression every assistant reply must fully match.")
        allow_consecutive_user: bool = Field(False, description="Accept two user turns in a row.")
        max_error_rate: float = Field(0.0, ge=0, le=1, description="Fail (exit 1) when more than this share of "
                                                                   "records has errors.")
        origin: str | None = Field(None, description="Origin of a raw file's rows: production, seed, eval, ... "
                                                     "(default: the record's own `origin` field, else seed).")
        batch_size: int = Field(4_096, ge=1, description="Records checked at a time (memory grows with it, "
                                                         "never with the input).")
        workers: int | None = Field(None, ge=1, description="Processes that check batches (default: the cores this "
                                                            "process may use); outputs are the same for any number.")

        @field_validator("schema", "output_schema", "tokenizer", mode="before")
        @classmethod
        def _path_as_text(cls, value: Any) -> Any:
            """A pathlib.Path (or any os.PathLike) is taken as its text, so Python callers may pass one."""
            return value.__fspath__() if hasattr(value, "__fspath__") else value

        @model_validator(mode="after")
        def _one_reply_check(self) -> ValidateConfig:
            if self.output_schema is not None and self.output_regex is not None:
                raise ValueError("give output_schema or output_regex, not both")
            if self.max_tokens is not None and not self.tokens:
                raise ValueError("max_tokens needs a tokenizer, but tokens is off (the token check is skipped)")
            if self.show_mask and not self.tokens:
                raise ValueError("show_mask needs a tokenizer, but tokens is off (the token check is skipped)")
            return self
