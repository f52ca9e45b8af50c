"""`curate repair`: each fix's rule on planted texts, the stage on hand-built rows, and the real DPO demo file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import CANONICAL_COLUMNS, SCHEMA, make_row
from curate.errors import MissingDependency, UsageError
from curate.inputs import load_any
from curate.repair import FIXES, repair
from curate.repair import fixes as fx
from curate.validate import validate
from curate.validate.structure import text_findings

DPO = "hiyouga__LLaMA-Factory__dpo_en_demo.json"


@pytest.mark.parametrize("fix, before, after", [
    ("mojibake", "her fiancÃ© said itâ€™s fine", "her fiancé said it’s fine"),
    ("mojibake", "the Ocean â\x80\x94 all along", "the Ocean — all along"),  # Latin-1 mojibake: C1 characters
    ("mojibake", "\x93Hello\x94", "“Hello”"),  # cp1252 read as Latin-1
    ("mojibake", "naïve café in Zürich, ¡Hola!", None),  # good text: ftfy does not call it bad
    ("mojibake", "Ã", None),  # too little to be certain
    ("control_characters", "a\x00b\x07c\ufeffd \x1b[31mred\x1b[0m\x7f", "abcd red"),
    ("control_characters", "keep\ttabs\nand\r\nline ends", None),
    ("control_characters", "x = \\(\x0crac{1}{2}\\) and \x08eta", None),  # \f, \b of an eaten LaTeX backslash
    ("control_characters", "a\x0cb\x0c", "a\x0cb"),  # \f before a letter is left, at the end it goes
    ("control_characters", "page\x0c\nnext\x08 ", "page\nnext "),
    ("control_characters", "\x93quoted\x94", None),  # C1: encoding damage, for the mojibake fix
    ("whitespace", "\n\n  Hello \r\nworld  \n\n", "Hello \nworld"),  # inner lines are not touched
    ("whitespace", "\n    indented code\n", "    indented code"),  # 4 spaces: Markdown code, kept
    ("whitespace", "\tcode", None),
    ("whitespace", " ID  NAME\n  1  ann\n", " ID  NAME\n  1  ann"),  # aligned lines: the first keeps its space
    ("whitespace", " Sure.\nIt is.", "Sure.\nIt is."),
    ("whitespace", "Here:\n```py\nx = 1   \n", None),  # ends inside a fence: its trailing space is code
    ("whitespace", "```\r\na  \r\n```\r\n", "```\na  \n```"),  # in a fence only line endings change
    ("whitespace", " \n ", None),  # blank: validate's empty_content, left
    ("whitespace", "\u3000全角の字下げ ", "\u3000全角の字下げ"),  # ASCII whitespace only: a CJK indent is kept
    ("code_fence", "See:\n```python\nx = 1", "See:\n```python\nx = 1\n```"),
    ("code_fence", "```python\nx = 1\n", "```python\nx = 1\n```"),
    ("code_fence", "````md\n```\nx", "````md\n```\nx\n````"),  # a shorter fence does not close a longer one
    ("code_fence", "~~~\nx", "~~~\nx\n~~~"),
    ("code_fence", "Run ```pip install x``` now", None),  # inline code, not a fence
    ("code_fence", "```a\n```\n```b\nx\n```", None),
    ("code_fence", "```a\n```b\nx", "```a\n```b\nx\n```"),  # ```b inside a block is code, not a closing fence
    ("tool_arguments", '{ "b": 1,\n  "a": [1, 2.50, 1e5, "x  y\\"z"] }', '{"b":1,"a":[1,2.50,1e5,"x  y\\"z"]}'),
    ("tool_arguments", '{"a":1}', None),
    ("tool_arguments", '{"a": ', None),  # not JSON: validate reports it
    ("tool_arguments", "[1, 2]", None),  # not an object: validate reports it
    ("tool_arguments", '"{\\"a\\": 1}"', None),  # double-encoded: left as it is
    ("tool_arguments", "", None),
])
def test_each_fix_rule(fix: str, before: str, after: str | None) -> None:
    fn = getattr(fx, fix)
    assert fn(before) == (before if after is None else after)
    if after is not None:
        assert fn(after) == after  # each fix is idempotent


def test_mojibake_repair_is_what_validate_no_longer_flags() -> None:
    text = "Rose, her fiancÃ© Cal and the Heart of the Ocean â\x80\x94 at sea"
    assert [f.code for f in text_findings([{"content": text}])] == ["mojibake"]
    assert fx.mojibake_left(text)
    fixed = fx.mojibake(text)
    assert fixed == "Rose, her fiancé Cal and the Heart of the Ocean — at sea"
    assert text_findings([{"content": fixed}]) == [] and not fx.mojibake_left(fixed)


def _call(args: str) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}


def _rows() -> list[dict]:
    return [
        make_row([{"role": "user", "content": "  Is it my fiancÃ©'s?\r\n"},
                  {"role": "assistant", "content": "Yes\ufeff."}]),
        make_row([{"role": "user", "content": "weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [_call('{ "city": "Paris",  "days": 2 }')]},
                  {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                  {"role": "assistant", "content": "Sunny."}]),
        make_row([{"role": "user", "content": "code?"}, {"role": "assistant", "content": "```python\nprint(1)"}],
                 rejected=[{"role": "assistant", "content": "```python\nprint(2)"}]),  # a rejected cut-off: kept
        make_row([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!\n\n```\nx = 1\n```"}]),
        make_row([{"role": "user", "content": "bad"}, {"role": "assistant", "content": None,
                                                       "tool_calls": [_call("{not json")]}]),
    ]


@pytest.fixture()
def planted(tmp_path: Path) -> Path:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(), schema=SCHEMA), path)
    return path


def test_stage_on_planted_rows(planted: Path, tmp_path: Path) -> None:
    before = pq.read_table(planted)
    out = repair(planted, tmp_path / "out.parquet")
    after = pq.read_table(tmp_path / "out.parquet")
    assert out.counts == {"in": 5, "changed": 3, "unchanged": 2, "out": 5} and out.balanced
    got = {name: (f["rows"], f["texts"], f["left"]) for name, f in out.summary["fixes"].items()}
    assert got == {"mojibake": (1, 1, 0), "control_characters": (1, 1, 0), "whitespace": (1, 1, 0),
                   "code_fence": (1, 1, 0), "tool_arguments": (1, 1, 1)}
    assert out.summary["fixes"]["mojibake"]["example"] == {
        "id": before["id"][0].as_py(), "where": "messages[0].content",
        "before": "  Is it my fiancÃ©'s?\r\n", "after": "  Is it my fiancé's?\r\n"}
    assert after.column("id").equals(before.column("id"))  # ids are lineage: kept
    assert after.schema.names == [*CANONICAL_COLUMNS, "repair_original", "repair_fixes"]
    rows = after.to_pylist()
    assert [m["content"] for m in rows[0]["messages"]] == ["Is it my fiancé's?", "Yes."]
    assert rows[0]["repair_fixes"] == ["mojibake", "control_characters", "whitespace"]
    assert rows[1]["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris","days":2}'
    assert rows[1]["repair_fixes"] == ["tool_arguments"]
    assert rows[2]["messages"][1]["content"] == "```python\nprint(1)\n```"
    assert rows[2]["rejected"][0]["content"] == "```python\nprint(2)"
    for i in range(3):  # the original, as it was, beside every changed row
        original = json.loads(rows[i]["repair_original"])
        assert original == {"messages": before["messages"][i].as_py(), "rejected": before["rejected"][i].as_py()}
    for i in (3, 4):  # untouched rows: every canonical value as it was, nulls in the repair columns
        assert after.select(CANONICAL_COLUMNS).slice(i, 1).equals(before.slice(i, 1))
        assert rows[i]["repair_original"] is None and rows[i]["repair_fixes"] is None
    # a second run finds nothing more and keeps the first run's original
    again = repair(tmp_path / "out.parquet", tmp_path / "again.parquet")
    assert again.counts["changed"] == 0
    assert pq.read_table(tmp_path / "again.parquet").equals(after)


def test_fix_names_a_subset_and_batches_do_not_change_the_output(planted: Path, tmp_path: Path) -> None:
    out = repair(planted, tmp_path / "one.parquet", fixes=["tool_arguments", "code_fence"])
    assert list(out.summary["fixes"]) == ["code_fence", "tool_arguments"]
    assert out.counts["changed"] == 2
    rows = pq.read_table(tmp_path / "one.parquet").to_pylist()
    assert rows[0]["messages"][0]["content"] == "  Is it my fiancÃ©'s?\r\n" and rows[0]["repair_fixes"] is None
    small = repair(planted, tmp_path / "small.parquet", batch_size=2)
    whole = repair(planted, tmp_path / "whole.parquet")
    assert small.to_dict() | {"outputs": None} == whole.to_dict() | {"outputs": None}
    assert pq.read_table(tmp_path / "small.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    with pytest.raises(UsageError, match="fix"):
        repair(planted, tmp_path / "bad.parquet", fixes=["nope"])
    with pytest.raises(UsageError, match="fix"):
        repair(planted, tmp_path / "bad.parquet", fixes=[])


def test_missing_ftfy_names_the_extra(planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ftfy", None)
    fx._ftfy.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"curate-ft\[repair\]"):
            repair(planted, tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists()
        assert repair(planted, tmp_path / "out.parquet", fixes=["whitespace"]).counts["changed"] == 1
    finally:
        fx._ftfy.cache_clear()


def test_real_dpo_demo(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / DPO
    out = repair(src, tmp_path / "dpo.parquet")
    # measured: 300 rows; line 286 mojibake, line 1602 U+FEFF in two texts, lines 138 / 3022 / 4190 replies cut
    # off inside a code fence; line 6934's '\x0crac' (an eaten '\frac') is left
    assert out.counts == {"in": 300, "changed": 5, "unchanged": 295, "out": 300}
    got = {name: (f["rows"], f["texts"], f["left"]) for name, f in out.summary["fixes"].items()}
    assert got == {"mojibake": (1, 1, 0), "control_characters": (1, 2, 1), "whitespace": (0, 0, 0),
                   "code_fence": (3, 3, 0), "tool_arguments": (0, 0, 0)}
    before, after = load_any(src), pq.read_table(tmp_path / "dpo.parquet")
    fixed = {r["source"]["line"]: r["repair_fixes"] for r in after.to_pylist() if r["repair_fixes"]}
    assert fixed == {286: ["mojibake"], 1602: ["control_characters"], 138: ["code_fence"],
                     3022: ["code_fence"], 4190: ["code_fence"]}
    # nothing else changed: every other column of every row, and the messages of the rows not reported
    others = [c for c in CANONICAL_COLUMNS if c not in ("messages", "rejected")]
    assert after.select(others).equals(before.select(others))
    assert after.column("rejected").equals(before.column("rejected"))
    for i, row in enumerate(after.to_pylist()):
        if row["repair_fixes"] is None:
            assert row["messages"] == before["messages"][i].as_py()
        else:
            assert json.loads(row["repair_original"])["messages"] == before["messages"][i].as_py()
    line286 = next(r for r in after.to_pylist() if r["source"]["line"] == 286)
    assert "fiancé" in line286["messages"][1]["content"] and "fiancÃ©" not in line286["messages"][1]["content"]
    # the repaired file validates as the original did, without the mojibake
    report = validate(tmp_path / "dpo.parquet", tokens=False)
    assert {**report.summary["errors"], **report.summary["warnings"]} == {
        "no_system_message": 220, "duplicate_record": 5, "preference_prompt_leak": 1}
    assert report.counts == {"in": 300, "kept": 300, "rejected": 0}


def test_cli(planted: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["repair", str(planted), "-o", str(tmp_path / "o.parquet"), "--fix", "whitespace",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["stage"] == "repair" and doc["balanced"] and doc["counts"]["changed"] == 1
    assert doc["fixes"]["whitespace"]["example"]["after"] == "Is it my fiancÃ©'s?"
    assert doc["config"] == {"fix": ["whitespace"]}
    r = CliRunner().invoke(cli, ["repair", str(planted), "-o", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, r.output
    assert "changed 3 + unchanged 2" in r.output and "mojibake" in r.output
    r = CliRunner().invoke(cli, ["repair", str(planted), "-o", str(tmp_path / "q.parquet"), "--fix", "nope"])
    assert r.exit_code == 2 and not (tmp_path / "q.parquet").exists()
    assert set(FIXES) == {"mojibake", "control_characters", "whitespace", "code_fence", "tool_arguments"}
