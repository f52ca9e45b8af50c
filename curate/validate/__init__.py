"""`curate validate`: format validation with named error codes, a token check, and output-format compliance."""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "CODES": "curate.validate.codes",
    "COOKBOOK_CODES": "curate.validate.codes",
    "Code": "curate.validate.codes",
    "Finding": "curate.validate.codes",
    "is_error": "curate.validate.codes",
    "FormatProfile": "curate.validate.compliance",
    "OutputCheck": "curate.validate.compliance",
    "reply_style": "curate.validate.compliance",
    "QUARANTINE_SCHEMA": "curate.validate.stage",
    "ValidationResult": "curate.validate.stage",
    "validate": "curate.validate.stage",
    "TokenCheck": "curate.validate.tokens",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
