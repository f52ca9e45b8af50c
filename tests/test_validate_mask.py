"""The trained-token audit of `curate validate`: the loss mask training uses, its end-of-turn tokens, cuts at
--max-tokens, template drift, and --show-mask; on real data and with hand-built chat templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.embedded import load_tokenizer
from curate.outcome import StageOutcome
from curate.train.data import IGNORE, tokenize_table
from curate.validate import validate
from curate.validate.render import mask_text
from curate.validate.tokens import TokenCheck, end_of_turn

TOY = "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"

# Templates without generation markers ({% generation %}): render() attributes tokens by character offsets.
# Each assistant turn ends with the eos token (<|im_end|> in the embedded tokenizer).
EOS_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}")
# No end-of-turn token at all.
NO_EOS_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
# The end-of-turn token only between turns: it falls in the next message's span, off the loss mask.
BETWEEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                    "{% if not loop.last %}<|im_end|>\n{% endif %}{% endfor %}")
# The system message is dropped.
NO_SYSTEM_TEMPLATE = ("{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
                      "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}")
# The system message is merged into the first user turn.
MERGED_TEMPLATE = ("{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\n\n' %}"
                   "{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}"
                   "{% for m in rest %}<|im_start|>{{ m['role'] }}\n{% if loop.first %}{{ sys }}{% endif %}"
                   "{{ m['content'] }}<|im_end|>\n{% endfor %}")
# Assistant replies are not rendered at all.
NO_REPLY_TEMPLATE = ("{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n"
                     "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}")


def chat(*pairs: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


GOOD = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."))
TWO_TURNS = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "And?"),
                 ("assistant", "Bye."))


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


def templated(tok, template: str):
    t = copy.copy(tok)
    t.chat_template = template
    return t


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def codes(out: StageOutcome) -> dict[str, int]:
    return {**out.summary["errors"], **out.summary["warnings"]}


def messages_of(out: StageOutcome, code: str) -> list[str]:
    return [e["message"] for c in out.summary["codes"] if c["code"] == code for e in c["examples"]]


def trained_ends(tokenizer, record: dict) -> tuple[int, int]:
    """(assistant turns, eos ids among the labels training builds): curate train's own view of the record."""
    table = pa.table({"messages": [record["messages"]], "tools": [None]})
    examples, _ = tokenize_table(table, tokenizer, "(test)")
    turns = sum(m["role"] == "assistant" for m in record["messages"])
    if not examples:
        return turns, 0
    return turns, examples[0]["labels"].count(tokenizer.eos_token_id)


def test_the_banana_record_of_the_toy_file_is_cut_before_its_end_of_turn(shared_data: Path, tok) -> None:
    """Line 5 is "Eat a banana!" 2000 times (8033 tokens): at --max-tokens 64 truncation keeps the start of the reply
    and cuts its <|im_end|> away; line 2's second reply is cut too; the short records are not."""
    lines = (shared_data / TOY).read_text().splitlines()
    assert json.loads(lines[4])["messages"][-1]["content"] == "Eat a banana!" * 2000
    r = validate(shared_data / TOY, tokenizer_object=tok, max_tokens=64, workers=1)
    assert codes(r)["cut_before_eos"] == 2 and "eos_not_trained" not in codes(r)
    found = {e["line"]: e["message"] for c in r.summary["codes"] if c["code"] == "cut_before_eos" for e in c["examples"]}
    assert sorted(found) == [2, 5]
    assert found[5].startswith("messages[2] (assistant) is cut by --max-tokens 64: its end-of-turn '<|im_end|>' is "
                               "token 8032")
    by_line = {row["source"]["line"]: row for row in r.kept.to_pylist()}
    assert by_line[5]["validate_codes"] == ["token_limit_exceeded", "cut_before_eos"]  # a warning: the row is kept
    assert by_line[1]["validate_codes"] == [] and by_line[5]["validate_assistant_tokens"] > 0
    # under a limit that holds the whole record, nothing is cut
    assert "cut_before_eos" not in codes(validate(shared_data / TOY, tokenizer_object=tok, max_tokens=8033, workers=1))


def test_trained_share_is_the_masks_share_of_each_records_tokens(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer_object=tok, workers=1)
    rows = r.kept.to_pylist()
    shares = sorted(row["validate_assistant_tokens"] / row["validate_tokens"] for row in rows)
    share = r.summary["tokens"]["trained_share"]
    assert share["p50"] == round(shares[2], 4) and share["p5"] == round(shares[0], 4)
    assert share["p95"] == round(shares[4], 4)
    assert share["all"] == round(sum(x["validate_assistant_tokens"] for x in rows)
                                 / sum(x["validate_tokens"] for x in rows), 4)
    # the labels curate train builds carry exactly the tokens counted as trained
    for row in rows:
        table = pa.table({"messages": [row["messages"]], "tools": [None]})
        labels = tokenize_table(table, tok, "(test)")[0][0]["labels"]
        assert sum(x != IGNORE for x in labels) == row["validate_assistant_tokens"]


def test_the_end_of_turn_token_comes_from_the_template_or_the_eos_token(tok) -> None:
    assert end_of_turn(tok) == ("<|im_end|>", "chat template")
    assert end_of_turn(templated(tok, EOS_TEMPLATE)) == ("<|im_end|>", "chat template")
    assert end_of_turn(templated(tok, NO_EOS_TEMPLATE)) == ("<|im_end|>", "eos_token")


@pytest.mark.parametrize("template", [None, EOS_TEMPLATE], ids=["embedded", "eos-template"])
def test_normal_records_have_no_finding(tmp_path: Path, tok, template: str | None) -> None:
    tokenizer = tok if template is None else templated(tok, template)
    r = validate(write(tmp_path / "in.jsonl", [GOOD, TWO_TURNS]), tokenizer_object=tokenizer, max_tokens=200, workers=1)
    assert codes(r) == {} and r.counts == {"in": 2, "kept": 2, "rejected": 0}
    assert trained_ends(tokenizer, TWO_TURNS) == (2, 2)  # training's labels agree: both ends are trained


def test_a_template_that_drops_the_eos_gets_eos_not_trained(tmp_path: Path, tok) -> None:
    tokenizer = templated(tok, NO_EOS_TEMPLATE)
    r = validate(write(tmp_path / "in.jsonl", [GOOD, TWO_TURNS]), tokenizer_object=tokenizer, workers=1)
    assert codes(r) == {"eos_not_trained": 2} and r.counts["rejected"] == 2  # an error: the rows are quarantined
    assert messages_of(r, "eos_not_trained")[0] == (
        "messages[2] (assistant): the end-of-turn token '<|im_end|>' (eos_token) is not written after the reply, so "
        "training never teaches the reply to stop")
    assert trained_ends(tokenizer, TWO_TURNS) == (2, 0)


def test_an_eos_written_in_the_next_turns_span_is_outside_the_mask(tmp_path: Path, tok) -> None:
    tokenizer = templated(tok, BETWEEN_TEMPLATE)
    r = validate(write(tmp_path / "in.jsonl", [TWO_TURNS]), tokenizer_object=tokenizer, workers=1)
    assert codes(r) == {"eos_not_trained": 1}
    rejected = r.rejected.to_pylist()[0]["validate_errors"]
    assert rejected == [
        ("eos_not_trained: messages[2] (assistant): the end-of-turn token '<|im_end|>' (eos_token) is written only "
         "later, in another message's span, off this turn's loss mask, so training never teaches the reply to stop")]
    assert trained_ends(tokenizer, TWO_TURNS) == (2, 0)  # the <|im_end|> after "Hello." is the user turn's


def test_all_labels_masked_extends_assistant_truncated(tmp_path: Path, tok) -> None:
    long_prompt = chat(("system", "Be brief."), ("user", "word " * 40), ("assistant", "x"))
    r = validate(write(tmp_path / "in.jsonl", [GOOD, long_prompt]), tokenizer_object=tok, max_tokens=30, workers=1)
    assert messages_of(r, "assistant_truncated") == ["the first 30 tokens hold no assistant reply token"]
    tokenizer = templated(tok, NO_REPLY_TEMPLATE)
    r = validate(write(tmp_path / "in.jsonl", [GOOD]), tokenizer_object=tokenizer, workers=1)
    assert codes(r) == {"assistant_truncated": 1, "template_drift": 1}  # no eos_not_trained: nothing is trained
    assert messages_of(r, "assistant_truncated") == [
        "no token of the assistant replies is on the loss mask (all labels would be -100): the chat template renders none"]
    assert messages_of(r, "template_drift") == [
        "messages[2] (assistant): its content is not in the rendered text (the chat template drops it)"]
    assert r.summary["tokens"]["trained_share"]["all"] == 0.0
    table = pa.table({"messages": [GOOD["messages"]], "tools": [None]})
    assert tokenize_table(table, tokenizer, "(test)") == ([], 1)  # training drops it as having no assistant tokens


def test_a_dropped_system_message_is_template_drift(tmp_path: Path, tok) -> None:
    r = validate(write(tmp_path / "in.jsonl", [GOOD, chat(("user", "Hi"), ("assistant", "Hello."))]),
                 tokenizer_object=templated(tok, NO_SYSTEM_TEMPLATE), workers=1)
    assert codes(r) == {"template_drift": 1, "no_system_message": 1}
    assert messages_of(r, "template_drift") == [
        "messages[0] (system): its content is not in the rendered text (the chat template drops it)"]
    assert r.counts["rejected"] == 0  # a warning: the labels follow the template, as inference will


def test_a_system_message_merged_into_the_user_turn_is_template_drift(tmp_path: Path, tok) -> None:
    r = validate(write(tmp_path / "in.jsonl", [GOOD]), tokenizer_object=templated(tok, MERGED_TEMPLATE), workers=1)
    assert codes(r) == {"template_drift": 1}
    assert messages_of(r, "template_drift") == [
        ("messages[0] (system): the chat template renders its content inside messages[1] (user), not in a turn of its "
         "own (turns merged)")]


def test_a_template_that_trims_replies_is_no_drift(tmp_path: Path, tok) -> None:
    trimming = templated(tok, "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}"
                              "<|im_end|>\n{% endfor %}")
    padded = chat(("system", "Be brief."), ("user", "Hi "), ("assistant", "\nHello.\n"))
    r = validate(write(tmp_path / "in.jsonl", [padded]), tokenizer_object=trimming, workers=1)
    assert codes(r) == {}


def test_show_mask_views_records_with_a_finding_first(shared_data: Path, tok) -> None:
    r = validate(shared_data / TOY, tokenizer_object=tok, max_tokens=512, show_mask=2, workers=1)
    first, second = r.summary["tokens"]["masks"]
    assert (first["line"], first["codes"], first["tokens"], first["trained"]) == (
        5, ["token_limit_exceeded", "cut_before_eos"], 8033, 481)
    kinds = [k for _, k in first["text"]]
    assert kinds == ["other", "trained", "gap", "trained", "cut", "trained", "gap", "trained"]
    assert first["text"][4][0] == "✂ --max-tokens 512" and first["text"][-1][0].endswith("a banana!<|im_end|>\n")
    assert second["line"] == 1 and second["codes"] == []
    assert second["text"][-1] == ["It's great that you're getting exercise outdoors!<|im_end|>\n", "trained"]
    assert "".join(t for t, _ in second["text"]) == tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in r.kept.to_pylist()[0]["messages"]], tokenize=False)
    assert validate(shared_data / TOY, tokenizer_object=tok, workers=1).summary["tokens"]["masks"] == []


def test_show_mask_on_the_command_line(shared_data: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(shared_data / TOY), "--max-tokens", "512", "--show-mask", "2",
                                   "--workers", "1"], obj={}, terminal_width=100)
    assert res.exit_code == 0, res.output
    assert "loss mask of line 5: 481 of 8033 tokens trained; token_limit_exceeded, cut_before_eos" in res.output
    assert "⟪✂ --max-tokens 512⟫⟦ a banana!Eat" in res.output
    assert ("loss mask of line 1: 12 of 46 tokens trained\n<|im_start|>system\nYou are a happy assistant" in res.output)
    assert "<|im_start|>assistant\n⟦It's great that you're getting exercise outdoors!<|im_end|>\n⟧" in res.output
    assert "trained tokens (loss mask) per record: P5 21.4%, P50 26.1%, P95 94.0%" in res.output
    assert "cut_before_eos" in res.output and res.output.count("loss mask of") == 2


def test_show_mask_styles_trained_tokens_on_a_terminal() -> None:
    text = mask_text([["<|im_start|>assistant\n", "other"], ["Hi<|im_end|>", "trained"], ["… 3 tokens …", "gap"]], True)
    assert text.plain == "<|im_start|>assistant\nHi<|im_end|>⟪… 3 tokens …⟫"
    assert [(text.plain[s.start:s.end], str(s.style)) for s in text.spans] == [
        ("<|im_start|>assistant\n", "dim"), ("Hi<|im_end|>", "bold green"), ("⟪… 3 tokens …⟫", "reverse yellow")]


def test_show_mask_needs_the_token_check(shared_data: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(shared_data / TOY), "--no-tokens", "--show-mask", "1"], obj={})
    assert res.exit_code == 2 and "show_mask needs a tokenizer" in res.output


def test_the_audit_counts_from_one_rendering(tok, monkeypatch) -> None:
    """The audit reads the offsets the count already has: the tokenizer runs once per batch."""
    check = TokenCheck(tok, max_tokens=35, show_mask=1)  # GOOD has 22 tokens; TWO_TURNS 38, its last <|im_end|> the 37th
    calls = []
    encode = check._encode
    monkeypatch.setattr(check, "_encode", lambda texts: calls.append(len(texts)) or encode(texts))
    out = check.count([(GOOD["messages"], None), (TWO_TURNS["messages"], None)])
    assert calls == [2]
    assert [f.code for f in out[1].findings] == ["token_limit_exceeded", "cut_before_eos"]
    assert out[0].findings == [] and out[1].findings[1].message == (
        "messages[4] (assistant) is cut by --max-tokens 35: its end-of-turn '<|im_end|>' is token 37, so 2 of its reply "
        "tokens would be trained without it")
    assert out[0].view is not None and out[1].view is not None  # the first record, and the first with a finding
    assert TokenCheck(tok, max_tokens=35).count([(GOOD["messages"], None)])[0].view is None  # only for --show-mask


@pytest.mark.slow
def test_outputs_are_the_same_for_one_and_two_workers(shared_data: Path, tok, tmp_path: Path) -> None:
    src = shared_data / "lm-sys__FastChat__dummy_conversation.json"  # a JSON array: batches go to the workers
    settings = {"tokenizer": "embedded", "max_tokens": 64, "show_mask": 3}
    one = validate(src, workers=1, batch_size=50, **settings)
    two = validate(src, workers=2, batch_size=50, **settings)
    assert {k: v for k, v in one.summary.items() if k != "config"} == {k: v for k, v in two.summary.items()
                                                                        if k != "config"}
    assert one.kept.equals(two.kept) and one.rejected.equals(two.rejected)
    assert one.summary["warnings"]["cut_before_eos"] == 144
    masks = one.summary["tokens"]["masks"]
    assert [m["row"] for m in masks] == [1, 3, 4] and all(m["codes"] for m in masks)  # row 2 fits in 64 tokens
