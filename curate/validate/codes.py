"""The named error taxonomy of `curate validate`: every finding has a machine-readable code.

The first nine are the OpenAI cookbook's format checks (same names); the rest extend them to
tool calls, role order, empty content, duplicates, parse and encoding damage, token limits and
output-format compliance. An `error` quarantines its row; a `warning` is counted and kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Code:
    name: str
    severity: Severity
    description: str


_ALL = [
    # the OpenAI cookbook's seven errors and two warnings
    Code("data_type", "error", "the record is not a JSON object"),
    Code("missing_messages_list", "error", "no list of messages (messages / conversations) in the record"),
    Code("message_missing_key", "error", "a message or field lacks a required key (role, content, from, value, output, ...)"),
    Code("message_unrecognized_key", "error", "a message carries a key the format does not define"),
    Code("unrecognized_role", "error", "a message's role is not one the format knows"),
    Code("missing_content", "error", "a message's content is null or not text"),
    Code("example_missing_assistant_message", "error", "the conversation has no assistant message to learn from"),
    Code("no_system_message", "warning", "the conversation has no system message"),
    Code("no_user_message", "warning", "the conversation has no user message"),
    # reading the file
    Code("json_parse_error", "error", "the line or element is not valid JSON"),
    Code("invalid_utf8", "error", "the bytes are not valid UTF-8"),
    Code("truncated_file", "error", "the file ends early (a cut gzip stream, an unclosed array, a record cut off)"),
    Code("unreadable_file", "error", "the file or part of it cannot be read (corrupt Parquet, UTF-16/32 without a BOM, binary data)"),
    Code("unknown_format", "error", "the record fits no known input format"),
    Code("format_mismatch", "error", "the record is of another format than the rest of the file"),
    Code("schema_violation", "error", "the record breaks the format's JSON Schema (other than the cases above)"),
    # tool calls
    Code("unknown_tool", "error", "an assistant calls a tool the record's tools list does not define"),
    Code("orphan_tool_result", "error", "a tool result answers no earlier tool call"),
    Code("invalid_tool_arguments", "error", "a tool call's arguments are not a JSON object"),
    # role order and content
    Code("last_turn_not_assistant", "error", "the conversation does not end with an assistant message"),
    Code("consecutive_user_turns", "error", "two user messages in a row (allow with --allow-consecutive-user)"),
    Code("empty_content", "error", "a message's content is empty or only whitespace"),
    Code("duplicate_id", "error", "the record reuses the id of an earlier, different record"),
    Code("duplicate_record", "warning", "the record is an exact copy of an earlier one"),
    Code("mojibake", "error", "text decoded with the wrong encoding (e.g. 'Ã©' for 'é', 'â€™' for '’')"),
    Code("replacement_character", "warning", "text contains U+FFFD, the mark of bytes lost in decoding"),
    # tokens
    Code("token_limit_exceeded", "warning", "the rendered record is longer than --max-tokens (flagged, never truncated)"),
    Code("template_error", "error", "the tokenizer's chat template cannot render the record"),
    Code("assistant_truncated", "error", "after truncation to --max-tokens no assistant token is left to train on"),
    # output-format compliance
    Code("output_not_json", "error", "an assistant reply is not JSON, but --output-schema asks for JSON"),
    Code("output_schema_violation", "error", "an assistant reply is JSON that breaks --output-schema"),
    Code("output_regex_mismatch", "error", "an assistant reply does not fully match --output-regex"),
]

CODES: dict[str, Code] = {c.name: c for c in _ALL}
COOKBOOK_CODES = tuple(c.name for c in _ALL[:9])


def severity(name: str) -> Severity:
    return CODES[name].severity


def is_error(name: str) -> bool:
    return CODES[name].severity == "error"


@dataclass
class Finding:
    """One problem in one record: a code and a message that says where (field path) and what."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in CODES:  # a programming error, not an input problem
            raise ValueError(f"unknown validation code {self.code!r}")

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity
