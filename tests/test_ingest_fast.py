"""The fast path and the block workers of ingest give exactly what the record-by-record path gives.

The reference is curate.ingest.stage.iter_canonical (Conversion over iter_raw, one record at a time);
the path under test is curate.ingest.blocks.canonical_parts (JSONL in blocks of lines, the fast path,
per-line fallback, a pool of workers). Equal means: the same canonical table (rows, ids, sources),
the same rejects (file, line, row, reason, raw) in order, the same per-format counts and warnings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from damaged import build

from curate.cli import cli
from curate.dataset import SCHEMA, make_id
from curate.ingest import blocks, fast, formats
from curate.ingest.readers import Reject
from curate.ingest.stage import iter_canonical


def by_record(path: Path, fmt: str = "auto", origin: str | None = None) -> tuple:
    rows, rejects, conversions = [], [], []
    for item in iter_canonical(path, fmt, origin, conversions):
        (rejects.append(item.as_dict()) if isinstance(item, Reject) else rows.append(item))
    conv = conversions[0]
    return pa.Table.from_pylist(rows, schema=SCHEMA), rejects, dict(conv.per_format), conv.warnings


def by_blocks(path: Path, fmt: str = "auto", origin: str | None = None, workers: int = 1,
              block_bytes: int | None = None) -> tuple:
    tables, rejects, conversions = [], [], []
    for part in blocks.canonical_parts([path], fmt, origin, workers, conversions, block_bytes):
        rejects += [r.as_dict() for r in part.rejects]
        if part.table is not None:
            tables.append(part.table)
    conv = conversions[0]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table, rejects, dict(conv.per_format), conv.warnings


def assert_same(want: tuple, got: tuple) -> None:
    assert got[0].schema.equals(SCHEMA)
    assert got[0].num_rows == want[0].num_rows
    assert got[0].column("id").to_pylist() == want[0].column("id").to_pylist()
    assert got[0].equals(want[0])
    assert got[1] == want[1]
    assert list(got[2].items()) == list(want[2].items())  # counts, in first-seen order
    assert got[3] == want[3]


def _jsonl(path: Path, records: list, **dumps) -> Path:
    path.write_text("".join(json.dumps(r, **dumps) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the id text


def test_msgspec_escapes_every_code_point_as_json_dumps() -> None:
    """The id hashes json.dumps(ensure_ascii=False) text: msgspec must write every character the same way."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(chars), 4096):
        text = "".join(chars[i : i + 4096])
        assert fast._ENCODE(text) == json.dumps(text, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("content", ["plain", "", 'quote " backslash \\ slash /', "tab\tnew\nline\r\x00\x1f\x7f",
                                     "é 中文 😀 \u2028\u2029 \ufeff \U0010ffff", "1.0e-7 3.0 12345678901234567890"])
def test_id_text_equals_make_id(content: str) -> None:
    msgs = [fast._Canon(content, role="user"), fast._Canon("ok", name="bot", role="assistant", tool_call_id="c1")]
    text = fast._ENCODE(fast._IdText(msgs, [], '[{"a": 1.5}]'))
    want = make_id([{"role": m.role, "content": m.content, "name": m.name, "tool_calls": None,
                     "tool_call_id": m.tool_call_id} for m in msgs], '[{"a": 1.5}]')
    import hashlib

    assert hashlib.sha256(text).hexdigest()[:16] == want


@pytest.mark.parametrize("fmt", sorted(fast.SHAPES))
def test_shape_detection_is_formats_detect(fmt: str) -> None:
    """For every set of a shape's keys, the format its struct names is the one formats.detect gives."""
    shape = fast.SHAPES[fmt]
    keys = shape.struct.__struct_encode_fields__
    value = {}  # a value each key's type admits
    for k in keys:
        for v in (None, [], "x", [{"role": "user"}]):
            try:
                shape.decoder.decode(json.dumps({k: v}).encode())
            except msgspec.ValidationError:
                pass
            else:
                value[k] = v
                break
    assert sorted(value) == sorted(keys)
    for n in range(len(keys) + 1):
        for subset in itertools.combinations(keys, n):
            rec = shape.decoder.decode(json.dumps({k: value[k] for k in subset}).encode())
            assert shape.detected(rec) == formats.detect(dict.fromkeys(subset)), subset


# ---------------------------------------------------------------- planted lines

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
RECORDS: list = [
    {"messages": CHAT},
    {"messages": [{"role": "system", "content": "Be brief."}, *CHAT]},
    {"messages": [{"role": "user", "content": "é 中文 😀 \u2028 \ufeff \x7f \x01 tab\t \"q\" \\ /"},
                  {"role": "assistant", "content": "ok\r\n"}]},
    {"messages": [{"role": "user"}, {"role": "assistant", "content": None}]},
    {"messages": [{"role": "user", "content": "a", "name": "ann"}, {"role": "function", "content": "18C",
                                                                    "tool_call_id": "c1"}]},
    {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "x": 1.5, "y": 1e-7, "z": 3.0, "n": 12345678901234567890, "u": "é\n"}}}]},
    {"messages": CHAT, "tools": "[already text]"},
    {"messages": CHAT, "tools": None},
    {"messages": CHAT, "tools": []},
    {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": {"city": "Paris", "t": 1.25}}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}, CHAT[1]]},
    {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": 3.14}]},
    {"messages": [{"role": "user", "content": "hi", "weight": 0}, CHAT[1]]},
    {"messages": CHAT, "id": "rec-1", "source": {"a": [1, 2.50, None, True]}, "origin": "production"},
    {"messages": CHAT, "origin": 5, "score": 0.1},
    {"messages": CHAT, "origin": "eval"},
    {"messages": []},
    {"messages": [{"content": "no role"}]},
    {"messages": None},
    {"messages": [{"role": "", "content": "x"}]},
    {"messages": [{"role": 7, "content": "x"}]},
    {"messages": [{"role": "user", "content": "x", "name": 3}]},
    {"messages": [{"role": "user", "content": "x", "function_call": {"name": "f", "arguments": "{}"}}]},
    {"messages": [{"role": "user", "content": "x", "function_call": "none"}]},
    {"conversations": [{"from": "human", "value": "Who?"}, {"from": " GPT ", "value": "Me."}], "id": "s1"},
    {"conversations": [{"from": "system", "value": "sys"}, {"role": "user", "content": "role/content"},
                       {"from": "gpt", "value": None}], "system": "top", "tools": [{"name": "t"}]},
    {"conversations": [{"from": "narrator", "value": "?"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": '{"name": "f"}'}]},
    {"conversations": [{"from": "human", "value": "q", "markdown": None}]},
    {"conversation": [{"from": "human", "value": "singular"}], "tools": ""},
    {"conversations": [{"from": "human", "value": "both"}], "conversation": [{"from": "gpt", "value": "b"}]},
    {"instruction": "Add", "input": "1 and 2", "output": "3"},
    {"instruction": "Say hi", "output": "hi", "system": "Be nice", "history": [["a", "b"], ["c", None]]},
    {"instruction": "", "input": "only input", "output": "x", "category": "misc"},
    {"instruction": "", "input": "", "output": "x"},
    {"instruction": "resp", "response": "r"},
    {"instruction": "null output", "output": None, "response": "ignored"},
    {"instruction": "bad history", "output": "x", "history": [["a", "b", "c"]]},
    {"instruction": "num", "output": 7},
    {"prompt": "p", "completion": "c"},
    {"prompt": None, "completion": "c", "origin": "seed"},
    {"prompt": [{"role": "user", "content": "p"}], "completion": "c"},
    {"prompt": "p", "completion": 1},
    {"question": "qa?", "answer": "yes"},
    {"unknown": 1},
    [1, 2],
    "text",
]
RAW_LINES = [
    b"",
    b"   \t",
    "\u00a0\u3000".encode(),
    b"\x0c",
    b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
    b'{"messages": [{"role": "user", "content": "\\u00e9 \\ud83d\\ude00 \\/"}]}',
    b'{"mess\\u0061ges": [{"role": "user", "content": "escaped key"}]}',
    b'{"messages": [{"role": "user", "content": "dup"}], "messages": [{"role": "user", "content": "last"}]}',
    b'{"messages": [{"role": "user", "content": "x"}], "score": NaN, "big": 1e999}',
    b'{"messages": [{"role": "user", "content": "x"}],}',
    b'{"messages": [{"role": "user", "content": "x"}]} {"again": 1}',
    b'{"messages": [{"role": "user", "content": "crlf"}]}\r',
    b'{"messages": [{"role": "user", "content": "raw\tcontrol"}]}',
    b"not json at all",
    b'{"messages": [{"role": "user", "content": "x"}], "deep": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"messages": [{"role": "user", "content": "x"}], "deep": ' + b"[" * 500 + b"]" * 500 + b"}",
]


def planted_lines() -> list[bytes]:
    """Every planted record and raw line, each after a plain chat line so blocks mix both paths."""
    plain = json.dumps({"messages": CHAT}).encode()
    lines: list[bytes] = []
    for i, rec in enumerate(RECORDS):
        dumps = {"ensure_ascii": bool(i % 2)} if i % 3 else {"separators": (",", ":")}
        lines += [plain, json.dumps(rec, **dumps).encode()]
    for raw in RAW_LINES:
        lines += [plain, raw]
    return lines


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("planted") / "planted.jsonl"
    path.write_bytes(b"\n".join(planted_lines() * 3) + b"\n")
    return path


@pytest.mark.parametrize("fmt", ["auto", "mixed", "openai", "sharegpt", "alpaca", "prompt-completion"])
def test_planted_lines_fast_equals_record_path(planted: Path, fmt: str) -> None:
    want = by_record(planted, fmt)
    assert want[1], "the planted file has rejects"
    for block_bytes in (None, 700, 1 << 14):
        assert_same(want, by_blocks(planted, fmt, block_bytes=block_bytes))


def test_planted_lines_with_origin_and_each_format_first(tmp_path: Path) -> None:
    """A file of each format (the planted records of it first), with and without --origin."""
    lines = planted_lines()
    for key in ("messages", "conversations", "instruction", "prompt"):
        first = 2 * next(i for i, r in enumerate(RECORDS) if isinstance(r, dict) and key in r) + 1
        path = tmp_path / f"{key}.jsonl"
        path.write_bytes(b"\n".join([lines[first]] * 250 + lines) + b"\n")
        for origin in (None, "production"):
            assert_same(by_record(path, "auto", origin), by_blocks(path, "auto", origin, block_bytes=2048))


@pytest.mark.parametrize("fmt", ["auto", "mixed", "openai", "sharegpt", "alpaca"])
def test_planted_records_in_json_arrays_and_csv(tmp_path: Path, fmt: str) -> None:
    """JSON arrays (and CSV) are decoded by Python's json; their records take the fast conversion too."""
    pretty = tmp_path / "planted.json"
    pretty.write_text(json.dumps(RECORDS * 2, indent=2, ensure_ascii=False), encoding="utf-8")
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(RECORDS), encoding="utf-8")
    table = tmp_path / "alpaca.csv"
    table.write_text('instruction,input,output,category\n"Add","1 and 2","3",math\n"","","empty",x\n'
                     '"Say ""hi""","","hi\nthere",\n')
    for path in (pretty, compact, table):
        assert_same(by_record(path, fmt), by_blocks(path, fmt))


def test_fast_path_takes_the_common_shapes(planted: Path, monkeypatch) -> None:
    """The fast path keeps most planted rows itself: the fallback is for the lines it cannot take."""
    taken = []
    real = fast._table

    def counted(file, kept):
        taken.append(len(kept))
        return real(file, kept)

    monkeypatch.setattr(fast, "_table", counted)
    table = by_blocks(planted, "mixed")[0]
    assert sum(taken) >= 0.85 * table.num_rows


def test_block_without_newline_at_end_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    body = b"\n".join(planted_lines()[:20])
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + body)  # a BOM, and U+FEFF again on line 1; no newline at the end
    for block_bytes in (None, 300):
        assert_same(by_record(path), by_blocks(path, block_bytes=block_bytes))


def test_bad_line_in_a_block_gives_the_same_reject(tmp_path: Path) -> None:
    """One bad line among good ones: the reject, its reason, line and row are the record path's."""
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]})
            for i in range(200)]
    path = tmp_path / "one_bad.jsonl"
    path.write_text("\n".join(good[:120] + ["", '{"messages": [{"role": "user", "content": "cut'] + good[120:]) + "\n")
    want = by_record(path)
    got = by_blocks(path, block_bytes=4096)
    assert_same(want, got)
    assert got[1] == [{"file": str(path), "line": 122, "row": 121,
                       "reason": "invalid JSON: Invalid control character at at column 47",
                       "raw": '{"messages": [{"role": "user", "content": "cut'}]
    assert got[0].num_rows == 200


def test_lone_surrogate_fails_as_the_record_path_does(tmp_path: Path) -> None:
    """A lone surrogate escape cannot be written as UTF-8: both paths raise the same error."""
    path = _jsonl(tmp_path / "lone.jsonl", [{"messages": CHAT}] * 3)
    path.write_text(path.read_text() + '{"messages": [{"role": "user", "content": "\\ud800"}]}\n')
    with pytest.raises(UnicodeEncodeError):
        by_record(path)
    with pytest.raises(UnicodeEncodeError):
        by_blocks(path)


# ---------------------------------------------------------------- real files and damaged ones


@pytest.mark.slow
def test_real_files_fast_equals_record_path(shared_data: Path, tmp_path: Path) -> None:
    """Every file in ../shared/data as it is (text files are rejected line by line), and the records of its JSON
    files rewritten as JSONL (so the fast path reads them)."""
    files = sorted(shared_data.iterdir())
    assert len(files) == 16
    for path in files:
        assert_same(by_record(path), by_blocks(path, block_bytes=1 << 16))
        if path.suffix not in (".json", ".jsonl"):
            continue
        text = path.read_text(encoding="utf-8")
        records = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x]
        for i, dumps in enumerate([{}, {"ensure_ascii": False}]):
            lines = _jsonl(tmp_path / f"{path.stem}.{i}.jsonl", records, **dumps)
            for fmt in ("auto", "mixed"):
                assert_same(by_record(lines, fmt), by_blocks(lines, fmt, block_bytes=1 << 15))


def test_damaged_corpus_fast_equals_record_path(tmp_path: Path) -> None:
    for case in build(tmp_path / "damaged"):
        path = Path(case.file)
        want = by_record(path)
        for block_bytes in (None, 1 << 12):
            assert_same(want, by_blocks(path, block_bytes=block_bytes))


# ---------------------------------------------------------------- workers


@pytest.mark.slow
def test_one_and_two_workers_give_the_same_parts(planted: Path, tmp_path: Path, monkeypatch) -> None:
    import gzip

    pools = []

    import curate.engine

    class Spy(curate.engine.Engine):
        def __enter__(self):
            pools.append(self.workers)
            return super().__enter__()

    monkeypatch.setattr(curate.engine, "Engine", Spy)  # what curate.engine.make() builds
    spilled, folders = [], []
    real_unspill, real_folder = blocks.Part.unspill, blocks._spill_folder

    def unspill(self):
        spilled.append(self.spilled)
        return real_unspill(self)

    @contextlib.contextmanager
    def folder(workers):
        with real_folder(workers) as f:
            folders.append(f)
            yield f

    monkeypatch.setattr(blocks.Part, "unspill", unspill)
    monkeypatch.setattr(blocks, "_spill_folder", folder)
    gz = tmp_path / "planted.jsonl.gz"
    gz.write_bytes(gzip.compress(planted.read_bytes() * 4, mtime=0))
    for path in (planted, gz):
        one = by_blocks(path, "mixed", workers=1, block_bytes=1024)
        two = by_blocks(path, "mixed", workers=2, block_bytes=1024)
        assert_same(one, two)
        assert_same(by_record(path, "mixed"), two)
    assert pools == [1, 2, 1, 2]
    if folders[1] is not None:  # a roomy /dev/shm: the workers' rows came through it, and nothing is left there
        assert len([p for p in spilled if p]) > 20
        assert not any(Path(f).exists() for f in folders if f)


def test_cli_workers_outputs_identical(planted: Path, tmp_path: Path, monkeypatch) -> None:
    """`curate ingest --workers 1` and `--workers 2`: the same Parquet rows, rejects file and summary, over
    several inputs (JSONL, a JSON array between them) through one pool."""
    from curate.outputs import ParquetSink

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    array = tmp_path / "planted.json"
    array.write_text(json.dumps(RECORDS, indent=1))
    encoded = []
    real = ParquetSink.write_encoded
    monkeypatch.setattr(ParquetSink, "write_encoded", lambda self, *a: (encoded.append(a[1].rows), real(self, *a)))
    docs, tables, rejects = [], [], []
    for n in (1, 2):
        out = tmp_path / f"w{n}.parquet"
        res = CliRunner().invoke(cli, ["ingest", str(planted), str(array), str(planted), "-o", str(out), "--format",
                                       "mixed", "--workers", str(n), "--json"])
        assert res.exit_code == 1, res.output  # the planted rejects are over the default --max-reject-rate 0
        doc = json.loads(res.stdout)
        docs.append({**doc, "outputs": None, "config": {**doc["config"], "workers": None}})
        tables.append(pq.read_table(out))
        rejects.append(Path(doc["outputs"]["rejects"]).read_text())
    assert docs[0] == docs[1]
    assert tables[0].equals(tables[1])
    # byte for byte: 2 workers encode their blocks' rows and the parent stitches them (where /dev/shm is roomy)
    assert (tmp_path / "w1.parquet").read_bytes() == (tmp_path / "w2.parquet").read_bytes()
    if blocks.roomy_shm(2):  # the two JSONL files' rows came encoded
        assert sum(encoded) == tables[1].num_rows - by_record(array, "mixed")[0].num_rows
    assert rejects[0] == rejects[1]
    want = [by_record(p, "mixed")[0] for p in (planted, array, planted)]
    assert tables[0].equals(pa.concat_tables(want))


def test_ingest_outcome_equals_the_record_path(planted: Path, tmp_path: Path, monkeypatch) -> None:
    """The whole outcome (counts, formats, reasons, warnings) and both files, with the fast path on and off."""
    from curate.ingest import ingest

    cut = next(c for c in build(tmp_path / "damaged") if c.name == "cut.jsonl.gz")
    array = tmp_path / "planted.json"
    array.write_text(json.dumps(RECORDS, indent=1))
    files = [Path(cut.file), tmp_path / "empty.jsonl", planted, array]
    files[1].write_text("")
    results = []
    for on in (True, False):
        monkeypatch.setattr(blocks, "FAST", on)
        out = tmp_path / f"{on}.parquet"
        res = ingest(files, out, workers=1)
        results.append((res.counts, res.summary["formats"], res.summary["reasons"], res.summary["warnings"],
                        pq.read_table(out), Path(res.outputs["rejects"]).read_text()))
    assert results[0][:4] == results[1][:4]
    assert results[0][4].equals(results[1][4])
    assert results[0][5] == results[1][5]
    # the damaged file's notice, then the empty file's: in input order, after the format warnings
    assert [w.split(": ")[1][:22] for w in results[0][3]] == ["records of several for"] * 2 + [
        "gzip file is truncated", "file is empty"]


def test_canonical_batches_rebatch_exactly(planted: Path) -> None:
    rejects: list[Reject] = []
    got = list(blocks.canonical_batches(planted, "mixed", None, 7, ["id", "source"], rejects))
    assert {b.num_rows for b in got[:-1]} == {7}
    want = by_record(planted, "mixed")
    assert pa.Table.from_batches(got).equals(want[0].select(["id", "source"]))
    assert [r.as_dict() for r in rejects] == want[1]


def test_open_input_reads_raw_files_on_the_fast_path(planted: Path, tmp_path: Path) -> None:
    """Every stage's input path: the same batches as before, and the first unreadable record named."""
    from curate.errors import InputError
    from curate.inputs import open_input

    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"\n".join(line for line in planted_lines()[::2]) + b"\n")  # the plain chat lines
    want = by_record(clean)[0]
    got = list(open_input(clean).batches(9, columns=["id", "messages"]))
    assert [b.num_rows for b in got] == [9] * (want.num_rows // 9) + ([want.num_rows % 9] if want.num_rows % 9 else [])
    assert pa.Table.from_batches(got).equals(want.select(["id", "messages"]))
    assert open_input(clean).read().equals(want)
    with pytest.raises(InputError) as err:
        open_input(planted, "mixed").read()
    first = by_record(planted, "mixed")[1][0]
    assert first["reason"] in str(err.value) and f"{first['line']}" in str(err.value)


def test_a_killed_runs_spill_folder_is_cleared_by_the_next_run() -> None:
    """What a killed run left in /dev/shm (its process gone) is removed when the next run spills; a live run's
    folder stays."""
    shm = Path("/dev/shm")
    if not blocks.roomy_shm(2):
        pytest.skip("no roomy /dev/shm")
    dead = shm / f"{blocks.SPILL_PREFIX}999999999-test"  # above any pid_max: no such process
    live = shm / f"{blocks.SPILL_PREFIX}{os.getpid()}-test"
    for folder in (dead, live):
        folder.mkdir(exist_ok=True)
        (folder / "1.parquet").write_bytes(b"left behind")
    try:
        with blocks._spill_folder(2) as folder:
            assert folder is not None and Path(folder).name.startswith(f"{blocks.SPILL_PREFIX}{os.getpid()}-")
        assert not dead.exists() and (live / "1.parquet").exists()
    finally:
        blocks.shutil.rmtree(dead, ignore_errors=True)
        blocks.shutil.rmtree(live, ignore_errors=True)
