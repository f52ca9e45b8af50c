"""Readers, format conversion, ingest/export round trips, and malformed input on real and planted files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.dataset import SCHEMA, make_row, read_dataset, rows_to_table, write_table
from curate.errors import InputError, UsageError
from curate.ingest import export, ingest, ingest_table


def rejects_of(path: str | None) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if path else []


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name, n, fmt",
    [
        ("hiyouga__LLaMA-Factory__alpaca_en_demo.json", 999, "alpaca"),
        ("lm-sys__FastChat__dummy_conversation.json", 500, "sharegpt"),
        ("openai__openai-cookbook__toy_chat_fine_tuning.jsonl", 5, "openai"),
        ("hiyouga__LLaMA-Factory__lima.json", 1029, "alpaca"),
        ("hiyouga__LLaMA-Factory__dpo_en_demo.json", 300, "preference"),
        ("lm-sys__FastChat__question.jsonl", 80, "mtbench"),
        ("tatsu-lab__stanford_alpaca__seed_tasks.jsonl", 175, "self-instruct"),
        ("sahil280114__codealpaca__code_alpaca_2k.json", 2017, "alpaca"),
    ],
)
def test_real_files_ingest_completely(shared_data, tmp_path, name, n, fmt):
    out = tmp_path / "out.parquet"
    s = ingest([shared_data / name], out)
    assert counts(s) == (n, n, 0)
    assert s.summary["formats"][str(shared_data / name)] == {fmt: n}
    table = read_dataset(out)
    assert table.schema.equals(SCHEMA)
    assert table.num_rows == n
    sources = table.column("source").to_pylist()
    assert [src["row"] for src in sources] == list(range(1, n + 1))


def test_sharegpt_roles_and_lines(shared_data):
    table, rejects = ingest_table([shared_data / "lm-sys__FastChat__dummy_conversation.json"])
    assert not rejects
    first = table.slice(0, 1).to_pylist()[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
    assert first["messages"][0]["content"] == "Who are you?"
    assert json.loads(first["meta"]) == {"id": "identity_0"}
    assert first["source"]["line"] == 2  # the '{' of the first element in the pretty-printed array


def test_lima_history_kept_in_order(shared_data):
    raw = json.loads((shared_data / "hiyouga__LLaMA-Factory__lima.json").read_text())
    table, _ = ingest_table([shared_data / "hiyouga__LLaMA-Factory__lima.json"])
    rows = table.to_pylist()
    with_history = [i for i, r in enumerate(raw) if r.get("history")]
    assert len(with_history) == 29
    for i in with_history:
        msgs = rows[i]["messages"]
        expected = [text for pair in raw[i]["history"] for text in pair]
        assert [m["content"] for m in msgs[: len(expected)]] == expected
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(raw[i]["history"]) + 1)
        assert msgs[-1]["content"] == raw[i]["output"]


def test_preference_pairs_keep_rejected(shared_data):
    table, _ = ingest_table([shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json"])
    raw = json.loads((shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json").read_text())
    row = table.slice(0, 1).to_pylist()[0]
    assert row["messages"][-1] == {**row["messages"][-1], "role": "assistant", "content": raw[0]["chosen"]["value"]}
    assert row["rejected"][0]["content"] == raw[0]["rejected"]["value"]


def test_ids_are_content_hashes(shared_data):
    table, _ = ingest_table([shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"])
    ids = table.column("id").to_pylist()
    # 14 records are extra copies (15 identical pairs: one record appears three times)
    assert len(ids) - len(set(ids)) == 14
    again, _ = ingest_table([shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"])
    assert again.column("id").to_pylist() == ids


def test_tool_calls_openai(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    f = tmp_path / "tools.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    table, rejects = ingest_table([f])
    assert not rejects
    row = table.to_pylist()[0]
    call = row["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert row["messages"][2]["tool_call_id"] == "c1"
    assert json.loads(row["tools"])[0]["function"]["name"] == "weather"


def test_csv_gzip_and_parquet_inputs(tmp_path):
    csv_path = tmp_path / "pc.csv"
    csv_path.write_text('prompt,completion\n"What is 2+2?","4"\n"Say ""hi""","hi\nthere"\n')
    gz = tmp_path / "chat.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    table, rejects = ingest_table([csv_path, gz])
    assert not rejects
    msgs = [r["messages"] for r in table.to_pylist()]
    assert msgs[1][0]["content"] == 'Say "hi"' and msgs[1][1]["content"] == "hi\nthere"
    assert msgs[2][1]["content"] == "b"
    # a canonical Parquet passes through untouched
    canon = tmp_path / "canon.parquet"
    write_table(table, canon)
    again, _ = ingest_table([canon])
    assert again.column("id").to_pylist() == table.column("id").to_pylist()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("to", ["openai", "sharegpt", "alpaca"])
@pytest.mark.parametrize(
    "name",
    ["hiyouga__LLaMA-Factory__lima.json", "lm-sys__FastChat__dummy_conversation.json", "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"],
)
def test_export_round_trip(shared_data, tmp_path, to, name):
    src = tmp_path / "in.parquet"
    ingest([shared_data / name], src)
    out = tmp_path / f"out.{ 'jsonl' if to == 'openai' else 'json'}"
    s = export(src, out, to=to)
    n = read_dataset(src).num_rows
    assert s.counts["in"] == n and s.balanced
    back = tmp_path / "back.parquet"
    s2 = ingest([out], back)
    assert s2.counts["rejected"] == 0 and s2.counts["kept"] == s.counts["kept"]
    before = {r["id"]: r["messages"] for r in read_dataset(src).to_pylist()}
    after = read_dataset(back).to_pylist()
    for row in after:
        assert row["id"] in before and before[row["id"]] == row["messages"]
    if to == "alpaca" and "toy" in name:
        # the record without a user turn cannot be Alpaca: it goes to the export's rejects, not lost
        assert s.counts["rejected"] == 1
        assert rejects_of(s.outputs.get("rejects"))[0]["reason"].startswith("cannot export as alpaca")
    else:
        assert s.counts["rejected"] == 0


def test_round_trip_tool_calls_sharegpt(tmp_path):
    row = make_row(
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": None, "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    )
    src = tmp_path / "t.parquet"
    write_table(rows_to_table([row]), src)
    for to, suffix in (("openai", "jsonl"), ("sharegpt", "json")):
        export(src, tmp_path / f"t.{suffix}", to=to)
        table, rejects = ingest_table([tmp_path / f"t.{suffix}"])
        assert not rejects and table.to_pylist()[0]["messages"] == row["messages"]


def counts(s) -> tuple[int, int, int]:
    return s.counts["in"], s.counts["kept"], s.counts["rejected"]


# ---------------------------------------------------------------- malformed input

GOOD = [{"instruction": f"Task {i}", "input": "", "output": f"Answer {i}"} for i in range(5)]


def test_truncated_json_array_keeps_everything_before(tmp_path):
    text = json.dumps(GOOD, indent=2)
    f = tmp_path / "cut.json"
    f.write_text(text[: text.index('"Answer 3"') + 4])  # cut inside the 4th record
    out = tmp_path / "o.parquet"
    s = ingest([f], out)
    assert counts(s) == (4, 3, 1)
    rej = rejects_of(s.outputs.get("rejects"))
    assert "file ends inside this record" in rej[0]["reason"] and rej[0]["line"] == 17


def test_malformed_element_in_array_resyncs(tmp_path):
    text = json.dumps(GOOD, indent=2).replace('"output": "Answer 1"', '"output": "Answer 1",,')
    f = tmp_path / "bad.json"
    f.write_text(text)
    s = ingest([f], tmp_path / "o.parquet")
    assert counts(s) == (5, 4, 1)
    assert rejects_of(s.outputs.get("rejects"))[0]["line"] == 7
    kept = [r["messages"][0]["content"] for r in read_dataset(tmp_path / "o.parquet").to_pylist()]
    assert kept == ["Task 0", "Task 2", "Task 3", "Task 4"]


def test_binary_garbage(tmp_path):
    f = tmp_path / "garbage.jsonl"
    f.write_bytes(bytes(range(256)) * 40 + b"\n" + json.dumps(GOOD[0]).encode() + b"\n" + b"\x00\xff\xfe" * 100)
    s = ingest([f], tmp_path / "o.parquet")
    assert counts(s) == (43, 1, 42)  # 40 garbage lines, the good record, 2 more lines of garbage
    assert all(r["line"] for r in rejects_of(s.outputs.get("rejects")))


def test_empty_file(tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli

    f = tmp_path / "empty.jsonl"
    f.write_text("")
    res = CliRunner().invoke(cli, ["ingest", str(f), "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 1
    assert "empty" in res.output and "no records read" in res.output


def test_large_single_record(tmp_path):
    big = "word " * 2_100_000  # ~10 MB in one record
    f = tmp_path / "big.json"
    f.write_text(json.dumps([GOOD[0], {"instruction": "Summarise", "input": big, "output": "ok"}, GOOD[1]]))
    s = ingest([f], tmp_path / "o.parquet")
    assert counts(s) == (3, 3, 0)
    rows = read_dataset(tmp_path / "o.parquet").to_pylist()
    assert len(rows[1]["messages"][0]["content"]) > 10_000_000


def test_two_formats_in_one_file(tmp_path):
    f = tmp_path / "mixed.jsonl"
    lines = [json.dumps(r) for r in GOOD[:3]]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}))
    lines.append(json.dumps({"foo": 1}))
    f.write_text("\n".join(lines) + "\n")
    s = ingest([f], tmp_path / "o.parquet")
    assert counts(s) == (5, 3, 2)
    reasons = [r["reason"] for r in rejects_of(s.outputs.get("rejects"))]
    assert reasons[0].startswith("record is openai but the file is alpaca")
    assert reasons[1].startswith("record fits no known format")
    assert any("several formats" in w for w in s.summary["warnings"])
    # --format mixed takes each record by its own format
    s2 = ingest([f], tmp_path / "o2.parquet", format="mixed")
    assert (s2.counts["kept"], s2.counts["rejected"]) == (4, 1)


def test_invalid_utf8(tmp_path):
    f = tmp_path / "latin1.jsonl"
    good = json.dumps(GOOD[0]).encode()
    bad = json.dumps({"instruction": "caf\u00e9", "output": "x"}, ensure_ascii=False).encode("latin-1")
    f.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    s = ingest([f], tmp_path / "o.parquet")
    assert counts(s) == (3, 2, 1)
    rej = rejects_of(s.outputs.get("rejects"))[0]
    assert rej["line"] == 2 and "invalid UTF-8" in rej["reason"]


def test_bad_field_names_the_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "wizard", "value": "x"}]}) + "\n")
    s = ingest([f], tmp_path / "o.parquet")
    assert "conversations[1].from" in rejects_of(s.outputs.get("rejects"))[0]["reason"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "o.parquet"

    class Boom(Exception):
        pass

    from curate.dataset import SCHEMA
    from curate.outputs import ParquetSink

    with pytest.raises(Boom), ParquetSink(out, SCHEMA) as w:
        w.write_rows([make_row([{"role": "user", "content": "a"}])])
        raise Boom
    assert not out.exists() and not list(tmp_path.iterdir())


def test_read_dataset_errors(tmp_path):
    with pytest.raises(UsageError):
        read_dataset(tmp_path / "missing.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="curate ingest"):
        read_dataset(tmp_path / "x.parquet")


def test_cli_json_and_version(shared_data, tmp_path):
    from click.testing import CliRunner

    from curate import __version__
    from curate.cli import cli

    runner = CliRunner()
    assert __version__ in runner.invoke(cli, ["--version"]).output
    res = runner.invoke(cli, ["ingest", str(shared_data / "lm-sys__FastChat__question.jsonl"), "-o", str(tmp_path / "q.parquet"), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": 80, "kept": 80, "rejected": 0} and doc["balanced"] is True
    res = runner.invoke(cli, ["ingest", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(cli, ["ingest", str(shared_data / "lm-sys__FastChat__question.jsonl"), "-o", str(tmp_path / "x.parquet"), "--format", "nope"])
    assert res.exit_code == 2 and "Invalid value for '--format'" in res.output
