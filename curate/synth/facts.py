"""Fact-flagging: extract checkable claims from generated text and look for each in the sources.

Claims: URLs, dates, numbers (with units), quoted titles and named entities (capitalised phrases).
A claim is supported when the same value (numbers, dates) or phrase (case-insensitive, whitespace-
normalised) occurs in a grounding document or in the seed; the evidence span says where. This is a
lexical check: it flags what it cannot find, it does not understand paraphrase. A value the reply's or
the task's JSON Schema defines (an enum label, a const, a property name) is no claim: it comes from the
schema, not from the world.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

CLAIM_TYPE = pa.struct([
    ("claim", pa.string()), ("kind", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("source", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("evidence", pa.string()),
    ("judge", pa.string()),
])

MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
MONTHS.update({k[:3]: v for k, v in list(MONTHS.items())})
MONTHS["sept"] = 9
_MON = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
UNITS = (r"%|percent|per cent|km/h|mph|km|kg|mg|g|m|cm|mm|ml|l|lb|lbs|oz|ft|miles?|meters?|metres?|kilometers?|"
         r"kilograms?|grams?|liters?|litres?|hours?|hrs?|minutes?|mins?|seconds?|s|days?|weeks?|months?|years?|"
         r"°C|°F|degrees?|calories|kcal|GB|MB|KB|TB|GHz|MHz|Hz|W|kW|V|USD|EUR|dollars?|euros?|people|users")
URL_RE = re.compile(r"https?://[^\s<>()\[\]\"']+")
DATE_RES = [
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), "ymd"),
    (re.compile(rf"\b{_MON}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE), "mdy"),
    (re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MON},?\s+(\d{{4}})\b", re.IGNORECASE), "dmy"),
    (re.compile(rf"\b{_MON}\s+(\d{{4}})\b", re.IGNORECASE), "my"),
]
NUMBER_RE = re.compile(rf"(?<![\w.,])([$€£] ?)?(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?(?:[ \u00a0]?({UNITS})\b)?(?![\w])")
QUOTED_RE = re.compile(r"[\"“]([^\"“”\n]{3,80})[\"”]")
ENTITY_RE = re.compile(r"\b[A-Z][\w'’.-]*[A-Za-z0-9](?:\s+(?:(?:of|the|de|la|van|von|and|for|&)\s+)*[A-Z][\w'’.-]*[A-Za-z0-9])*")
STOP = {
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "i", "we", "you", "he", "she", "they",
    "there", "here", "in", "on", "at", "of", "for", "to", "and", "or", "but", "if", "when", "while", "what",
    "which", "who", "whom", "whose", "where", "why", "how", "yes", "no", "not", "all", "any", "each", "every",
    "some", "many", "most", "more", "one", "two", "also", "however", "therefore", "thus", "so", "as", "by",
    "from", "with", "without", "after", "before", "during", "into", "over", "under", "about", "above",
    "below", "first", "second", "third", "finally", "next", "then", "note", "example", "answer", "question",
    "please", "sure", "certainly", "here's", "let's", "i'm", "is", "are", "was", "were", "be", "been", "do",
    "does", "did", "can", "could", "should", "would", "will", "may", "might", "must", "our", "your", "their",
    "my", "his", "her", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "json",
    "true", "false", "null"
}


@dataclass
class Claim:
    claim: str
    kind: str
    status: str = "unsupported"
    reason: str = ""
    source: str | None = None
    start: int | None = None
    end: int | None = None
    evidence: str | None = None
    judge: str | None = None


def _month(name: str) -> int:
    return MONTHS.get(name.lower().rstrip(".")[:4] if name.lower().startswith("sept") else name.lower().rstrip(".")[:3], 0)


def _dates(text: str) -> list[tuple[int, int, tuple]]:
    """(start, end, (year, month, day|0)) for every date in text."""
    out, taken = [], []
    for rx, form in DATE_RES:
        for m in rx.finditer(text):
            if any(s <= m.start() < e for s, e in taken):
                continue
            g = m.group(0)
            mon = re.match(_MON, g if form != "dmy" else g.split(None, 1)[1].removeprefix("of ").strip(), re.IGNORECASE)
            if form == "ymd":
                value = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            elif form == "mdy" or form == "dmy":
                value = (int(m.group(2)), _month(mon.group(0)), int(m.group(1)))
            else:
                value = (int(m.group(1)), _month(mon.group(0)), 0)
            out.append((m.start(), m.end(), value))
            taken.append((m.start(), m.end()))
    return out


def _numbers(text: str, skip: list[tuple[int, int]]) -> list[tuple[int, int, float, str | None, str]]:
    """(start, end, value, unit, text) for numbers outside the skipped spans (dates, URLs)."""
    out = []
    for m in NUMBER_RE.finditer(text):
        if any(s <= m.start() < e for s, e in skip):
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        if text[line_start:m.start()].strip() == "" and text[m.end():m.end() + 1] in (".", ")") and not m.group(3):
            continue  # a list marker like "1." or "2)"
        value = float(m.group(2).replace(",", "") + (m.group(3) or ""))
        unit = m.group(4) or (m.group(1) or "").strip() or None
        out.append((m.start(), m.end(), value, _unit(unit), m.group(0).strip()))
    return out


UNIT_SYNONYMS = {"$": "usd", "dollar": "usd", "€": "eur", "euro": "eur", "£": "gbp", "percent": "%", "per cent": "%",
                 "metre": "meter", "litre": "liter", "hr": "hour", "min": "minute", "lb": "pound"}


def _unit(unit: str | None) -> str | None:
    if not unit:
        return None
    u = unit.lower()
    u = u[:-1] if len(u) > 2 and u.endswith("s") else u
    return UNIT_SYNONYMS.get(u, u)


def extract_claims(text: str) -> list[Claim]:
    """Checkable claims in one generated text, each once."""
    claims: dict[tuple[str, str], Claim] = {}
    urls = [(m.start(), m.end(), m.group(0).rstrip(".,;:!?")) for m in URL_RE.finditer(text)]
    for _, _, u in urls:
        claims.setdefault(("url", u), Claim(u, "url"))
    dates = _dates(text)
    for s, e, _ in dates:
        claims.setdefault(("date", text[s:e].lower()), Claim(text[s:e], "date"))
    skip = [(s, e) for s, e, _ in urls] + [(s, e) for s, e, _ in dates]
    for s, e, _, _, raw in _numbers(text, list(skip)):
        claims.setdefault(("number", raw.lower()), Claim(raw, "number"))
        skip.append((s, e))  # "12 EUR" is one claim, not also an entity "EUR"
    for m in QUOTED_RE.finditer(text):
        title = m.group(1).strip()
        if 1 <= len(title.split()) <= 12:
            claims.setdefault(("title", title.lower()), Claim(title, "title"))
    for m in ENTITY_RE.finditer(text):
        if any(s <= m.start() < e for s, e in skip):
            continue
        words = m.group(0).replace("’", "'").removesuffix("'s").split()
        while words and words[0].lower() in STOP:
            words = words[1:]
        while words and words[-1].lower() in STOP:
            words = words[:-1]
        if not words or (len(words) == 1 and (len(words[0]) < 2 or _sentence_start(text, m.start()))):
            continue
        phrase = " ".join(words)
        if phrase.lower() not in MONTHS and ("title", phrase.lower()) not in claims:
            claims.setdefault(("entity", phrase.lower()), Claim(phrase, "entity"))
    return list(claims.values())


def _sentence_start(text: str, pos: int) -> bool:
    line = text[text.rfind("\n", 0, pos) + 1:pos]
    if re.fullmatch(r"\s*(?:[-*•#>]+|\d+[.)]|[a-z][.)])?\s*[\"'“(*]*", line):
        return True  # first word of a line or list item
    before = text[:pos].rstrip(" \t\"'“(*#-")
    return not before or before[-1] in ".!?:\n"


class Sources:
    """The grounding documents and seed text one example is checked against."""

    def __init__(self, texts: list[tuple[str, str]]):
        self.texts = [(name, t) for name, t in texts if t]
        self.lower = [(name, t.lower(), _squash(t)) for name, t in self.texts]
        self.dates = [(name, s, e, v) for name, t in self.texts for s, e, v in _dates(t)]
        self.numbers = [(name, s, e, v, u) for name, t in self.texts
                        for s, e, v, u, _ in _numbers(t, [(a, b) for a, b, _ in _dates(t)])]

    def _span(self, claim: Claim, name: str, start: int, end: int, text: str | None = None) -> Claim:
        text = text if text is not None else dict(self.texts)[name]
        claim.status, claim.reason, claim.source, claim.start, claim.end = "supported", "found in source", name, start, end
        claim.evidence = text[max(0, start - 40):end + 40].replace("\n", " ")
        return claim

    def check(self, claim: Claim) -> Claim:
        """Mark the claim supported (with its evidence span) or unsupported (with a reason)."""
        if not self.texts:
            claim.reason = "no grounding documents or seed text to check against"
            return claim
        if claim.kind == "number":
            (_, _, value, unit, _), = _numbers(claim.claim, []) or [(0, 0, None, None, "")]
            same = [n for n in self.numbers if n[3] == value]
            hit = next((n for n in same if unit is None or n[4] in (None, unit)), None)
            if hit:
                return self._span(claim, hit[0], hit[1], hit[2])
            claim.reason = f"value found with another unit ({same[0][4]})" if same else "number not in sources"
            return claim
        if claim.kind == "date":
            (_, _, value), = _dates(claim.claim) or [(0, 0, None)]
            hit = next((d for d in self.dates if d[3] == value or (value and value[2] == 0 and d[3][:2] == value[:2])), None)
            if hit:
                return self._span(claim, hit[0], hit[1], hit[2])
            claim.reason = "date not in sources"
            return claim
        needle = claim.claim.lower()
        for name, low, _ in self.lower:
            i = low.find(needle)
            if i >= 0:
                return self._span(claim, name, i, i + len(needle))
        squashed = _squash(claim.claim)
        for name, _, sq in self.lower:
            if squashed and squashed in sq:
                claim.status, claim.reason, claim.source = "supported", "found in source (ignoring spacing/punctuation)", name
                return claim
        claim.reason = f"{claim.kind} not in sources"
        return claim


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def schema_values(*schemas: Any) -> frozenset[str]:
    """Every value the JSON Schemas define, at any depth, lower-cased: enum members, consts and property names.

    Numbers count in their JSON spelling (`3`, `0.5`); booleans and null are never claims anyway.
    """
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for value in [*(node.get("enum") or []), *([node["const"]] if "const" in node else [])]:
            if isinstance(value, str):
                found.add(value.strip().lower())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                found.add(str(value))
        if isinstance(node.get("properties"), dict):
            found.update(name.lower() for name in node["properties"])
        for key, child in node.items():
            if key in ("enum", "const", "default", "examples"):
                continue  # values, not subschemas
            if key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas") \
                    and isinstance(child, dict):
                child = list(child.values())  # name -> subschema: the names are not subschemas
            walk(child)

    for schema in schemas:
        walk(schema)
    return frozenset(found)


def check_claims(text: str, sources: list[tuple[str, str]] | Sources,
                 defined: Collection[str] = ()) -> list[dict[str, Any]]:
    """Claims of `text` checked against `sources`, as dicts matching CLAIM_TYPE.

    `defined`: values a schema defines (schema_values()); a claim whose text is one of them is no claim.
    """
    src = sources if isinstance(sources, Sources) else Sources(sources)
    skip = {d.strip().lower() for d in defined}
    return [asdict(src.check(c)) for c in extract_claims(text) if c.claim.strip().lower() not in skip]
