"""Claim extraction and support checking on planted texts."""

from __future__ import annotations

from curate.synth import check_claims, extract_claims

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
