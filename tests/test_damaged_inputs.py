"""Damaged inputs keep every good record: the corpus of tests/damaged.py through `curate ingest` and `curate validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from damaged import Case, build

from curate.cli import cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Case]:
    return {c.name: c for c in build(tmp_path_factory.mktemp("damaged"))}


def _names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in build(Path(d))]


@pytest.mark.parametrize("name", _names())
def test_ingest_keeps_every_good_record(corpus: dict[str, Case], name: str, tmp_path: Path) -> None:
    case = corpus[name]
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(cli, ["ingest", case.file, "-o", str(out), "--json"])
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": case.good + len(case.rejects), "kept": case.good, "rejected": len(case.rejects)}
    assert pq.read_table(out).num_rows == case.good
    rejects = [json.loads(x) for x in Path(doc["outputs"]["rejects"]).read_text().splitlines()] if case.rejects else []
    assert len(rejects) == len(case.rejects)
    for want, got in zip(case.rejects, rejects):
        assert want in got["reason"] and got["file"] == case.file
    if case.lines:
        assert [r["line"] for r in rejects] == case.lines
    # exit 1 exactly when something was rejected (or nothing was read): the default --max-reject-rate is 0
    assert res.exit_code == (1 if case.rejects or not case.good else 0), res.output


@pytest.mark.parametrize("name", _names())
def test_validate_keeps_every_good_record(corpus: dict[str, Case], name: str, tmp_path: Path) -> None:
    case = corpus[name]
    valid, quarantine = tmp_path / "valid.parquet", tmp_path / "q.parquet"
    res = CliRunner().invoke(cli, ["validate", case.file, "--no-tokens", "-o", str(valid), "--quarantine",
                                   str(quarantine), "--json"])
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": case.good + len(case.rejects), "kept": case.good, "rejected": len(case.rejects)}
    # exit 1 exactly when something was quarantined (or nothing was read): the default --max-error-rate is 0
    assert res.exit_code == (1 if case.rejects or not case.good else 0), res.output
    rows = pq.read_table(quarantine).to_pylist()
    assert [r["validate_codes"] for r in rows] == [[c] for c in case.codes]
    for want, row in zip(case.rejects, rows):
        assert want in row["validate_errors"][0]
    assert pq.read_table(valid).num_rows == case.good


def test_utf8_split_across_chunks_is_not_invalid(corpus: dict[str, Case]) -> None:
    """1 MiB marks of the Chinese file fall inside 3-byte characters (the reader's chunk size), and nothing is lost."""
    from curate.ingest.jsonstream import CHUNK

    data = Path(corpus["chinese_4mb.json"].file).read_bytes()
    assert len(data) > 4_500_000
    split = [m for m in range(CHUNK, len(data), CHUNK) if data[m] & 0xC0 == 0x80]  # a continuation byte at the mark
    assert len(split) >= 2


def test_stage_inputs_that_are_damaged_are_one_line_errors(corpus: dict[str, Case], tmp_path: Path) -> None:
    """A canonical stage (dedupe) given a damaged Parquet names the file in one line and exits 2 or 1."""
    for name in ("cut_footer.parquet", "zeros.parquet"):
        res = CliRunner().invoke(cli, ["dedupe", corpus[name].file, "-o", str(tmp_path / "d.parquet")])
        assert res.exit_code == 1, res.output
        assert res.output.startswith("Error: ") and corpus[name].file in res.output
        assert len(res.output.strip().splitlines()) == 1


def test_look_ahead_is_bounded(tmp_path: Path, monkeypatch) -> None:
    """A 20 MB damaged stretch is rejected with the buffer never far over the look-ahead; what follows is kept."""
    from damaged import record

    from curate.ingest import jsonstream
    from curate.ingest.readers import Reject, iter_raw

    monkeypatch.setattr(jsonstream, "LOOKAHEAD", 1 << 20)
    monkeypatch.setattr(jsonstream, "CHUNK", 1 << 18)
    good = [json.dumps(record(i), indent=2) for i in range(20)]
    damaged = '{\n  "messages": "' + "x" * 20_000_000  # an unterminated string that never ends its line
    path = tmp_path / "long_damage.json"
    path.write_text("[\n" + ",\n".join(good[:10] + [damaged] + good[10:]) + "\n]\n")
    biggest = [0]
    fill = jsonstream.Window.fill

    def watched(self, size=1 << 18):
        more = fill(self, size)
        biggest[0] = max(biggest[0], len(self.buf))
        return more

    monkeypatch.setattr(jsonstream.Window, "fill", watched)
    items = list(iter_raw(path))
    assert sum(not isinstance(x, Reject) for x in items) == 20
    assert [x.line for x in items if isinstance(x, Reject)] == [2 + 12 * 10]
    assert biggest[0] < 4 << 20
