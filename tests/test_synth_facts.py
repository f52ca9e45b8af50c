"""Claim extraction and support checking on planted texts."""

from __future__ import annotations

from curate.synth import check_claims, extract_claims, schema_values

SOURCE = [("doc.md", ("Orchard Street Library was designed by Ilse Brandt and opened in 1964. It holds about "
                     "320,000 books. The reading room has 140 seats and is 25 m long. Membership costs 12 EUR a year. "
                     "The book fair \"Pages by the Sea\" starts on 3 September 2024. See https://library.example/hours."))]


def by_claim(text: str, sources=SOURCE) -> dict[str, dict]:
    return {c["claim"]: c for c in check_claims(text, sources)}


def test_fully_supported_answer_is_not_flagged():
    text = ("Ilse Brandt designed Orchard Street Library, which opened in 1964 and holds 320,000 books; its reading "
            "room seats 140. The fair \"Pages by the Sea\" begins on September 3, 2024 (https://library.example/hours).")
    claims = by_claim(text)
    assert {"Ilse Brandt", "Orchard Street Library", "1964", "320,000", "140", "Pages by the Sea",
            "September 3, 2024", "https://library.example/hours"} <= set(claims)
    assert [c for c in claims.values() if c["status"] != "supported"] == []
    span = claims["320,000"]
    assert SOURCE[0][1][span["start"]:span["end"]] == "320,000" and span["source"] == "doc.md"


def test_absent_number_and_name_are_flagged():
    claims = by_claim("Orchard Street Library was designed by Hans Vogel and holds 450,000 books since 1971.")
    assert claims["Hans Vogel"]["status"] == "unsupported" and claims["Hans Vogel"]["kind"] == "entity"
    assert claims["450,000"]["status"] == "unsupported" and claims["450,000"]["reason"] == "number not in sources"
    assert claims["1971"]["status"] == "unsupported"
    assert claims["Orchard Street Library"]["status"] == "supported"


def test_units_dates_urls_and_titles():
    claims = by_claim("The room is 25 km long. The fair starts on 2024-09-04. Visit https://evil.example/x. "
                      "Read \"Waves of Paper\" first.")
    assert claims["25 km"]["status"] == "unsupported" and "another unit" in claims["25 km"]["reason"]
    assert claims["2024-09-04"]["kind"] == "date" and claims["2024-09-04"]["status"] == "unsupported"
    assert claims["https://evil.example/x"]["status"] == "unsupported"
    assert claims["Waves of Paper"]["kind"] == "title" and claims["Waves of Paper"]["status"] == "unsupported"
    assert by_claim("It opened on 2024-09-03.")["2024-09-03"]["status"] == "supported"  # same date, other format


def test_list_markers_and_sentence_starts_are_not_claims():
    kinds = {(c.kind, c.claim) for c in extract_claims("Steps:\n1. Open the door.\n2) Sit down.\nThe end.")}
    assert kinds == set()


def test_no_sources_means_unsupported_with_reason():
    (claim,) = check_claims("It costs 12 EUR.", [])
    assert claim["status"] == "unsupported" and "no grounding" in claim["reason"]


TRIAGE = {"type": "object", "required": ["category", "priority"],
          "properties": {"category": {"enum": ["billing", "shipping", "account"]},
                         "priority": {"enum": ["low", "medium", "high"]},
                         "route": {"type": "object", "properties": {"queue": {"const": "Tier Two"},
                                                                    "level": {"enum": [1, 2, 3]}}},
                         "summary": {"type": "string"}}}
TICKET = [("seed:user", "I was charged twice for order 4521.")]


def test_values_the_schema_defines_are_not_claims():
    text = ('{"category": "billing", "priority": "low", "route": {"queue": "Tier Two", "level": 2}, '
            '"summary": "Refund 45 EUR for order 4521"}')
    before = {c["claim"]: c["status"] for c in check_claims(text, TICKET)}
    assert {k: before[k] for k in ("billing", "low", "Tier Two", "category")} == dict.fromkeys(
        ("billing", "low", "Tier Two", "category"), "unsupported")  # what the issue reported: labels as "titles"
    assert schema_values(TRIAGE) == {"billing", "shipping", "account", "low", "medium", "high", "tier two", "1", "2",
                                     "3", "category", "priority", "route", "queue", "level", "summary"}
    after = {c["claim"]: (c["kind"], c["status"]) for c in check_claims(text, TICKET, schema_values(TRIAGE))}
    assert after == {"45 EUR": ("number", "unsupported"), "4521": ("number", "supported"),
                     "Refund 45 EUR for order 4521": ("title", "unsupported")}
    # a defined value only hides a claim that is exactly it: "Billing Team" and "3 days" are still claims
    kinds = {c["claim"]: c["kind"] for c in check_claims("Write to our Billing Team; it takes 3 days.", TICKET,
                                                         schema_values(TRIAGE))}
    assert kinds == {"Billing Team": "entity", "3 days": "number"}
