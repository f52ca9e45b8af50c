"""curate.stitch: Parquet parts encoded apart, stitched into the file one writer makes, byte for byte."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.ingest import ingest_table
from curate.outputs import PARQUET_OPTIONS, ParquetSink
from curate.stitch import FooterError, Stitcher, encode, layout


@pytest.fixture(scope="module")
def rows(shared_data: Path) -> pa.Table:
    """Real rows of several shapes: Alpaca, ShareGPT-style conversations, and chat with a system turn."""
    tables = [ingest_table([shared_data / name])[0] for name in (
        "hiyouga__LLaMA-Factory__alpaca_en_demo.json", "lm-sys__FastChat__dummy_conversation.json",
        "openai__openai-cookbook__toy_chat_fine_tuning.jsonl")]
    return pa.concat_tables(tables)


def one_writer(tables: list[pa.Table], schema: pa.Schema, **write) -> bytes:
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, **PARQUET_OPTIONS) as w:
        for t in tables:
            w.write_table(t, **write)
    return sink.getvalue().to_pybytes()


def stitched(tables: list[pa.Table], schema: pa.Schema, **write) -> bytes:
    out = io.BytesIO()
    s = Stitcher(out)
    for t in tables:
        sink = pa.BufferOutputStream()
        pq.write_table(t, sink, **PARQUET_OPTIONS, **write)
        data = sink.getvalue().to_pybytes()
        assert s.append(data, layout(data)) == t.num_rows
    s.finish(schema, **PARQUET_OPTIONS)
    return out.getvalue()


@pytest.mark.parametrize("cuts", [[], [0], [7], [1, 1, 1], [5] * 20, [300, 2, 150]])
def test_stitched_parts_are_the_one_writer_file_byte_for_byte(rows: pa.Table, cuts: list[int]) -> None:
    """No parts (an empty file), one, many (over 15 row groups: the long list header), sizes uneven."""
    parts, at = [], 0
    for n in cuts:
        parts.append(rows.slice(at, n))
        at += n
    data = stitched(parts, rows.schema)
    assert data == one_writer(parts, rows.schema)
    back = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    assert back.equals(pa.concat_tables(parts) if parts else rows.schema.empty_table())
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == len(cuts)  # an empty table: one, empty


def test_a_part_of_several_row_groups(rows: pa.Table) -> None:
    parts = [rows.slice(0, 250), rows.slice(250, 40), rows.slice(290, 333)]
    data = stitched(parts, rows.schema, row_group_size=100)
    assert data == one_writer(parts, rows.schema, row_group_size=100)
    f = pq.ParquetFile(pa.BufferReader(data))
    assert [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)] == [100, 100, 50, 40, 100,
                                                                                          100, 100, 33]
    assert f.read().equals(pa.concat_tables(parts))


def test_sink_takes_tables_and_encoded_files_in_order(rows: pa.Table, tmp_path: Path) -> None:
    """A stitching ParquetSink, on its writer thread or not: tables it encodes and files encoded elsewhere,
    mixed, give the file a plain sink gives for the same tables."""
    parts = [rows.slice(0, 100), rows.slice(100, 3), rows.slice(103, 400), rows.slice(503, 0), rows.slice(503)]
    with ParquetSink(tmp_path / "plain.parquet", rows.schema) as sink:
        for t in parts:
            sink.write_table(t)
    for background in (False, True):
        out = tmp_path / f"stitched_{background}.parquet"
        with ParquetSink(out, rows.schema, background=background, stitch=True) as sink:
            for i, t in enumerate(parts):
                if i % 2:
                    sink.write_table(t)
                else:
                    path = tmp_path / f"part{i}.parquet"
                    sink.write_encoded(path, encode(t, path), remove=i != 2)
                    if i == 2:
                        path.unlink()  # mapped already: the sink may append it later
        assert sink.rows == rows.num_rows and not list(tmp_path.glob("part*"))  # appended, then removed
        assert out.read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    with pytest.raises(ValueError, match="schema"), ParquetSink(tmp_path / "x.parquet", rows.schema, stitch=True) as s:
        s.write_table(rows.select(["id"]))
    assert not (tmp_path / "x.parquet").exists()


def test_not_parquet_is_refused() -> None:
    with pytest.raises(FooterError, match="not a Parquet file"):
        layout(b"PAR1 but not at the end")


def test_the_footer_is_the_sinks_whatever_metadata_the_parts_carry(rows: pa.Table) -> None:
    """Parts encoded from tables with other schema metadata: the file's footer is the one a writer of the sink's
    schema writes (as pq.ParquetWriter, which takes such tables and keeps its own schema)."""
    tagged = rows.replace_schema_metadata({"made_by": "a worker"})
    parts = [tagged.slice(0, 10), tagged.slice(10, 20)]
    data = stitched(parts, rows.schema)
    assert data == one_writer(parts, rows.schema)
    assert pq.read_schema(pa.BufferReader(data)).metadata in (None, rows.schema.metadata)
