"""`curate validate`: format validation with named error codes, a token check, and output-format compliance.

    config.py      ValidateConfig: every setting, its default and range
    stage.py       validate(): a raw file, canonical Parquet or table -> valid rows + quarantine (a StageOutcome)
    codes.py       the named codes (the OpenAI cookbook's nine first) and their severities
    structure.py   JSON Schema findings mapped to codes; semantic checks of canonical messages
    toolschema.py  tool calls against the parameters JSON Schema of their declared tool
    pairs.py       preference-pair lint, pairs per prompt, length bias, KTO label balance
    tokens.py      the token check with a chat template
    compliance.py  output-format compliance (curate.replies.ReplyCheck) and mixed-format detection
    render.py      what the command prints for people
"""

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
    "ValidateConfig": "curate.validate.config",
    "QUARANTINE_SCHEMA": "curate.validate.stage",
    "validate": "curate.validate.stage",
    "TokenCheck": "curate.validate.tokens",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
