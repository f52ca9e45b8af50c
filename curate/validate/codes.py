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
    Code("tool_arguments_schema_violation", "error", "a tool call's arguments break the parameters JSON Schema of the tool"),
    Code("invalid_tool_schema", "error", "a declared tool's parameters are not a valid JSON Schema"),
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
    Code("assistant_truncated", "error", "no assistant token is left to train on (all labels -100): truncation to "
                                         "--max-tokens cuts every one, or the chat template renders none"),
    # the trained-token audit (the loss mask training uses)
    Code("eos_not_trained", "error", "an assistant turn's end-of-turn token is not on the loss mask (the model never "
                                     "learns to stop)"),
    Code("cut_before_eos", "warning", "--max-tokens cuts an assistant turn before its end-of-turn token (a trainer "
                                      "that truncates trains the reply without its end)"),
    Code("template_drift", "warning", "a message's content is not in its own span of the rendered text (the chat "
                                      "template drops it or merges it into another turn)"),
    # output-format compliance
    Code("output_not_json", "error", "an assistant reply is not JSON, but --output-schema asks for JSON"),
    Code("output_schema_violation", "error", "an assistant reply is JSON that breaks --output-schema"),
    Code("output_regex_mismatch", "error", "an assistant reply does not fully match --output-regex"),
    # preference pairs (rows with a rejected reply)
    Code("preference_identical", "error", "the chosen and the rejected reply are the same text"),
    Code("preference_near_identical", "warning", "the chosen and the rejected reply differ only in case, spacing or a few words"),
    Code("preference_empty_side", "error", "the chosen or the rejected reply is missing or blank"),
    Code("preference_prompt_leak", "warning", "a reply contains the prompt's last user turn word for word"),
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
