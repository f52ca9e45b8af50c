"""`curate validate`: format validation with named error codes, a token check, and output-format compliance."""

from __future__ import annotations

from curate.validate.codes import CODES, COOKBOOK_CODES, Code, Finding, is_error
from curate.validate.compliance import FormatProfile, OutputCheck, reply_style
from curate.validate.stage import QUARANTINE_SCHEMA, ValidationResult, validate
from curate.validate.tokens import TokenCheck

__all__ = [
    "CODES",
    "COOKBOOK_CODES",
    "QUARANTINE_SCHEMA",
    "Code",
    "Finding",
    "FormatProfile",
    "OutputCheck",
    "TokenCheck",
    "ValidationResult",
    "is_error",
    "reply_style",
    "validate",
]
