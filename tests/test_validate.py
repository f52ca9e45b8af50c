"""`curate validate` on real third-party files: the cookbook's findings, ShareGPT and Alpaca as they really are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.embedded import load_tokenizer, render
from curate.validate import validate

TOY = "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"


@pytest.fixture(scope="session")
def tok():
    return load_tokenizer("embedded")


def test_cookbook_toy_file_gives_the_cookbooks_findings(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer=tok, max_tokens=512)
    # the cookbook: one record without a user message (line 4), one 2000x "Eat a banana!" reply too long;
    # line 3 also has no system message, which the cookbook counts as a warning too
    assert r.counts == {"no_user_message": 1, "no_system_message": 1, "token_limit_exceeded": 1}
    assert r.examples["no_user_message"][0]["line"] == 4
    assert r.examples["no_system_message"][0]["line"] == 3
    assert r.examples["token_limit_exceeded"][0]["line"] == 5
    assert r.valid.num_rows == 5 and r.quarantine.num_rows == 0  # warnings keep their rows
    long_row = r.valid.slice(4, 1).to_pylist()[0]
    assert long_row["messages"][-1]["content"].count("Eat a banana!") == 2000
    assert long_row["validate_codes"] == ["token_limit_exceeded"]
    assert long_row["validate_tokens"] > 512
    assert 0 < long_row["validate_assistant_tokens"] <= 512  # flagged, its loss mask not emptied
    assert r.tokens["over_limit"] == 1 and r.tokens["tokens"]["max"] == long_row["validate_tokens"]


def test_cookbook_toy_file_under_the_default_limit_is_clean_of_token_findings(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer=tok, max_tokens=16385)
    assert r.counts == {"no_user_message": 1, "no_system_message": 1}


def test_token_counts_match_the_tokenizers_own_count(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer=tok)
    for row in r.valid.to_pylist():
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        text = tok.apply_chat_template(msgs, tokenize=False)
        assert row["validate_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])
        rendered = render(tok, row["messages"])
        assert rendered.text == text
        assert sum(rendered.counts().values()) == row["validate_tokens"]
    assert r.tokens["total_tokens"] == sum(r.valid.column("validate_tokens").to_pylist())


def test_render_attributes_the_implicit_system_prompt_to_the_template(tok) -> None:
    r = render(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    default = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    assert r.text.startswith(default)
    counts = r.counts()
    assert counts["template"] == len(tok(default, add_special_tokens=False)["input_ids"])
    assert counts["user"] == len(tok("<|im_start|>user\nhi<|im_end|>\n", add_special_tokens=False)["input_ids"])
    masked = [i for i, m in zip(r.input_ids, r.assistant_mask) if m]
    assert tok.decode(masked) == "hello<|im_end|>\n"
    with_system = render(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert "template" not in with_system.counts()


def test_sharegpt_dummy_conversation_is_clean_but_has_no_system_prompts(shared_data: Path) -> None:
    r = validate(shared_data / "lm-sys__FastChat__dummy_conversation.json")
    assert (r.format, r.schema) == ("sharegpt", "sharegpt")
    assert r.counts == {"no_system_message": 500}
    assert r.valid.num_rows == 500 and r.quarantine.num_rows == 0
    assert r.mixed_formats == []


@pytest.mark.parametrize(
    "name, records, counts",
    [
        ("hiyouga__LLaMA-Factory__alpaca_en_demo.json", 999, {"no_system_message": 999, "duplicate_record": 14}),
        ("hiyouga__LLaMA-Factory__lima.json", 1029, {"no_system_message": 1029}),
        ("sahil280114__codealpaca__code_alpaca_2k.json", 2017, {"no_system_message": 2017, "empty_content": 2}),
    ],
)
def test_alpaca_files_have_exactly_their_real_findings(shared_data: Path, name: str, records: int, counts: dict) -> None:
    r = validate(shared_data / name)
    assert r.schema == "alpaca"
    assert r.counts == counts
    assert r.total == records == r.valid.num_rows + r.quarantine.num_rows
    assert r.quarantine.num_rows == counts.get("empty_content", 0)


def test_code_alpaca_quarantines_the_two_empty_outputs_with_their_lines(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"
    r = validate(src, quarantine=tmp_path / "q.parquet", output=tmp_path / "v.parquet")
    q = r.quarantine.to_pylist()
    assert [x["source"]["line"] for x in q] == [1187, 9297]
    raw = json.loads(src.read_text())
    assert all(raw[x["validate_row"] - 1]["output"] == "" for x in q)
    assert all(x["validate_codes"][0] == "empty_content" for x in q)
    from curate.dataset import read_dataset

    assert read_dataset(tmp_path / "v.parquet").num_rows == 2015  # canonical Parquet, readable by every stage


def test_dpo_demo_has_one_mojibake_record_and_mixed_system_prompts(shared_data: Path) -> None:
    r = validate(shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json")
    assert r.counts == {"mojibake": 1, "no_system_message": 220, "duplicate_record": 5}
    assert r.examples["mojibake"][0]["line"] == 286
    assert "fiancÃ©" in json.loads(r.quarantine.column("validate_raw")[0].as_py())["conversations"][1]["value"]
    kinds = {m["kind"]: m for m in r.mixed_formats}
    assert kinds["system_prompts"]["message"].startswith("14 distinct system prompts")
    assert kinds["system_prompt_presence"]["counts"] == {"with": 80, "without": 220}


def test_canonical_table_gives_the_same_findings_as_the_raw_file(shared_data: Path) -> None:
    from curate.ingest import ingest_table

    table, rejects = ingest_table([shared_data / TOY])
    assert rejects == []
    table = table.append_column("dedupe_cluster", __import__("pyarrow").array(range(5)))
    r = validate(table)
    assert r.counts == {"no_user_message": 1, "no_system_message": 1}
    assert r.examples["no_user_message"][0]["line"] == 4  # the source line survives ingest
    assert r.valid.column("dedupe_cluster").to_pylist() == [0, 1, 2, 3, 4]  # other stages' columns kept
