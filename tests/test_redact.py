"""`curate report --redact`: personal data masked before anything is embedded, shown or written as gap seeds."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table, write_table
from curate.recipe import load_schema

pytest.importorskip("presidio_analyzer")

from curate.redact import Redactor

# one hand-made example of each kind (test numbers: the card passes Luhn, the IBAN its check digits)
PII = {
    "EMAIL_ADDRESS": "jane.doe@example.com",
    "PHONE_NUMBER": "+1 415-555-2671",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89370400440532013000",
    "IP_ADDRESS": "192.168.14.20",
    "API_KEY": "sk-proj-Abc123Def456Ghi789Jkl012Mno345",
}


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize("kind", list(PII))
def test_each_kind_is_masked(redactor, kind):
    text = f"Hello, please look at this: {PII[kind]} and get back to me."
    out, found = redactor.redact(text)
    assert PII[kind] not in out and f"<{kind}>" in out, out
    assert found == {kind: 1}
    assert out.startswith("Hello, please look at this: ") and out.endswith(" and get back to me.")


def test_secrets_of_other_providers_and_no_false_alarms(redactor):
    for key in ("AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1B2" * 9, "xoxb-1234567890-abcdefghij",
                "AIza" + "B" * 35, "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"):
        out, found = redactor.redact(f"token {key} here")
        assert out == "token <API_KEY> here" and found == {"API_KEY": 1}, (key, out)
    out, found = redactor.redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc")
    assert "eyJhbGci" not in out and found["API_KEY"] == 1
    # order numbers, versions, plain prices and dates are not personal data
    plain = "Order #48213 shipped on 2024-03-02 for 129.99 dollars; upgrade to v2.3.1 of the app."
    assert redactor.redact(plain) == (plain, {})
    assert redactor.describe()["person_names"].startswith(("detected", "not detected"))


def test_overlapping_spans_become_one_mask(redactor):
    out, found = redactor.redact("write to jane.doe@example.com today")
    assert out == "write to <EMAIL_ADDRESS> today" and sum(found.values()) == 1  # not also a URL inside it


def _rows(n: int, seed: int, pii: bool) -> list[dict]:
    rng = random.Random(seed)
    topics = ["my invoice is wrong", "the parcel never came", "I cannot log in", "the app crashes on start"]
    rows = []
    for i in range(n):
        kind = list(PII)[i % len(PII)]
        extra = f" Reach me at {PII[kind]}." if pii else ""
        ask = f"{topics[i % len(topics)]} (case {rng.randint(0, 9999)}).{extra}"
        rows.append(make_row([{"role": "user", "content": ask}, {"role": "assistant", "content": "We are on it."}],
                             origin="production"))
    return rows


def test_report_masks_before_embedding_html_and_gap_seeds(tmp_path):
    train = write_table(rows_to_table(_rows(40, 1, pii=False)[:20]), tmp_path / "train.parquet")
    prod = write_table(rows_to_table(_rows(120, 2, pii=True)), tmp_path / "prod.parquet")
    res = CliRunner().invoke(cli, ["report", str(train), "--production", str(prod), "--embedder", "tfidf", "--redact",
                                   "-o", str(tmp_path / "r.html"), "--gaps", str(tmp_path / "gaps.parquet"),
                                   "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    import jsonschema

    jsonschema.validate(doc, load_schema("report"))
    red = doc["redaction"]
    assert red["detector"] == "presidio-analyzer"
    assert red["found"]["production"] == {k: 20 for k in PII}  # 120 rows, each kind in every sixth
    assert red["found"]["train"] == {}
    html = (tmp_path / "r.html").read_text()
    written = json.dumps(doc) + html + json.dumps(pq.read_table(tmp_path / "gaps.parquet").to_pylist())
    for value in PII.values():
        assert value not in written, value
    assert "Personal data masked" in html and "&lt;EMAIL_ADDRESS&gt;" in html
    seeds = pq.read_table(tmp_path / "gaps.parquet").column("messages").to_pylist()
    assert seeds and any("<" in m[0]["content"] for m in seeds)
    # the input itself is untouched, and without --redact the report shows what the data holds
    assert PII["EMAIL_ADDRESS"] in json.dumps(pq.read_table(prod).column("messages").to_pylist())
    plain = CliRunner().invoke(cli, ["report", str(train), "--production", str(prod), "--embedder", "tfidf",
                                     "--json"], catch_exceptions=False)
    assert json.loads(plain.stdout)["redaction"] is None
