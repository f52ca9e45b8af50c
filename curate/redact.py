"""Personal data masked before a report embeds, clusters, shows or writes a row (`curate report --redact`).

Detection is presidio-analyzer's: its pattern recognizers (e-mail addresses, phone numbers, credit-card
numbers with their checksum, IBANs with theirs, IP addresses) plus one pattern recognizer of curate's
for API-key-like secrets (OpenAI, Anthropic, AWS, GitHub, Slack, Google, Stripe key shapes and
`Bearer` tokens), which presidio does not ship. Person names need a named-entity model: presidio gets
one from a trained spaCy pipeline when one is installed (`en_core_web_sm`, ...); without one (spaCy's
pipelines are not on PyPI) names are not detected, and the report says so.

Each detected span becomes `<KIND>` (`<EMAIL_ADDRESS>`, `<PHONE_NUMBER>`, `<CREDIT_CARD>`, `<IBAN_CODE>`,
`<IP_ADDRESS>`, `<API_KEY>`, `<PERSON>`); where spans overlap the longer one wins (then the higher score).

    r = Redactor()
    text, found = r.redact("mail jane@example.com")   # "mail <EMAIL_ADDRESS>", Counter({"EMAIL_ADDRESS": 1})
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import MissingDependency

KINDS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "API_KEY", "PERSON")
NER_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
# Key shapes of the common API providers; the names are presidio Pattern names, shown in nothing but debugging.
SECRET_PATTERNS = (
    ("openai_or_anthropic", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("bearer_token", r"(?<=Bearer )[A-Za-z0-9._~+/-]{20,}=*"),
)
MIN_SCORE = 0.4  # presidio's phone recognizer scores a plausible number 0.4; its weakest IP match 0.6


def require() -> Any:
    try:
        import presidio_analyzer
    except ImportError:
        raise MissingDependency("presidio-analyzer", "redact", "--redact") from None
    return presidio_analyzer


class Redactor:
    """presidio's analyzer with the recognizers above, built once; `redact(text)` masks one text."""

    def __init__(self) -> None:
        require()
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        _offline_suffix_list()
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # one line per recognizer of other languages
        model = next((m for m in NER_MODELS if importlib.util.find_spec(m) is not None), None)
        self.names = model is not None
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model or "blank"}])
        if model is None:  # no trained pipeline: a blank one tokenizes, and no recognizer asks it for entities
            import spacy

            engine.nlp = {"en": spacy.blank("en")}
        else:
            engine.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"])
        registry.add_recognizer(PatternRecognizer(
            supported_entity="API_KEY", name="ApiKeyRecognizer",
            patterns=[Pattern(name, regex, 0.9) for name, regex in SECRET_PATTERNS]))
        self.entities = [k for k in KINDS if k != "PERSON" or self.names]
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])

    def describe(self) -> dict[str, Any]:
        return {"detector": "presidio-analyzer", "kinds": list(self.entities),
                "person_names": "detected" if self.names else "not detected: no trained spaCy pipeline installed"}

    def redact(self, text: str) -> tuple[str, Counter]:
        if not text or not text.strip():
            return text, Counter()
        found = self.analyzer.analyze(text, language="en", entities=self.entities, score_threshold=MIN_SCORE)
        spans = sorted(found, key=lambda r: (-(r.end - r.start), -r.score, r.start))
        taken: list[tuple[int, int, str]] = []
        for r in spans:  # the longest (then surest) span of an overlapping group wins
            if all(r.end <= s or r.start >= e for s, e, _ in taken):
                taken.append((r.start, r.end, r.entity_type))
        counts: Counter = Counter()
        out, last = [], 0
        for start, end, kind in sorted(taken):
            out.append(text[last:start])
            out.append(f"<{kind}>")
            counts[kind] += 1
            last = end
        out.append(text[last:])
        return "".join(out), counts


def _offline_suffix_list() -> None:
    """presidio checks e-mail domains with tldextract, which would fetch the public suffix list from the network
    on first use: use the snapshot tldextract ships instead (curate never reaches the network unasked)."""
    import tldextract
    import tldextract.tldextract as module

    module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    logging.getLogger("tldextract").setLevel(logging.ERROR)


def redact_batch(redactor: Redactor, batch: pa.RecordBatch | pa.Table, counts: Counter) -> pa.Table:
    """The batch with every message's content masked (other columns unchanged); adds what was found to counts."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if "messages" not in table.column_names:
        return table
    rows = table.column("messages").to_pylist()
    for messages in rows:
        for m in messages or ():
            if isinstance(m.get("content"), str):
                m["content"], found = redactor.redact(m["content"])
                counts.update(found)
    i = table.column_names.index("messages")
    return table.set_column(i, table.schema.field(i), pa.array(rows, type=table.schema.field(i).type))


@contextmanager
def redacted(src: Any, redactor: Redactor, counts: Counter, batch_size: int = 5_000,
             folder: str | Path | None = None, **parquet_options: Any) -> Iterator[Any]:
    """A canonical Parquet input (`curate.inputs.Input`, opened with `parquet_options`) with the messages of `src`
    masked, in an unnamed temporary file that goes when the block ends; `counts` gets the kinds found."""
    import tempfile

    from curate.spool import SPOOL_OPTIONS, Spooled

    with tempfile.TemporaryFile(prefix=".curate-redact-", dir=folder) as file:
        _write(src, redactor, counts, batch_size, file, SPOOL_OPTIONS)
        file.seek(0)
        yield Spooled(src, file, **parquet_options)


def _write(src: Any, redactor: Redactor, counts: Counter, batch_size: int, file: IO[bytes],
           options: dict[str, Any]) -> None:
    writer = None
    try:
        for batch in src.batches(batch_size):
            table = redact_batch(redactor, batch, counts)
            if writer is None:
                writer = pq.ParquetWriter(file, table.schema, **options)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(file, src.schema, **options)
    finally:
        if writer is not None:
            writer.close()
