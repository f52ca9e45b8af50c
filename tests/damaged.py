"""A corpus of damaged input files of the kinds real dumps contain, each with what a reader must keep.

    python tests/damaged.py OUTDIR      # writes the files and prints what each must give

Every case is made here from code (no checked-in binaries): JSON arrays and streams with one bad
element in each layout, structural damage (an unterminated string, lost brackets, a cut), deep
nesting, UTF-8 across chunk boundaries, cut and corrupt gzip, damaged Parquet, UTF-16/32 with and
without a byte-order mark. `good` is the exact number of records a reader must keep, `rejects` the
reasons (substrings, in file order) of what it must reject, `codes` the validate codes they get.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

N = 100
BAD = 50  # 0-based index of the damaged record: line 52 of a one-record-per-line array


@dataclass
class Case:
    name: str
    file: str
    good: int
    rejects: list[str]
    codes: list[str]
    lines: list[int | None] = field(default_factory=list)  # the reject lines, where they are exact


def record(i: int, text: str | None = None) -> dict:
    return {"messages": [{"role": "user", "content": text or f"Question number {i}: what is {i} + {i}?"},
                         {"role": "assistant", "content": f"It is {2 * i}."}]}


def records(n: int = N) -> list[dict]:
    return [record(i) for i in range(n)]


def _undefined(text: str) -> str:
    """Break record BAD the way a JavaScript dump does: a value that is not JSON."""
    return text.replace(f'"It is {2 * BAD}."', "undefined")


def _lines_array(parts: list[str]) -> str:
    return "[\n" + ",\n".join(parts) + "\n]\n"


def _cut_gzip(data: bytes, keep: float) -> tuple[bytes, bytes]:
    """A gzip of `data` cut at `keep` of its length, and the bytes a reader can still decompress from it."""
    gz = gzip.compress(data, mtime=0)
    cut = gz[: int(len(gz) * keep)]
    d = zlib.decompressobj(wbits=31)
    prefix = b"".join(d.decompress(cut[i : i + 4096]) for i in range(0, len(cut), 4096))
    return cut, prefix


def build(out: Path) -> list[Case]:
    """Write every damaged file into `out`; the cases say what must come of each."""
    out.mkdir(parents=True, exist_ok=True)
    recs = records()
    lines = [json.dumps(r) for r in recs]
    pretty = [json.dumps(r, indent=2) for r in recs]
    cases: list[Case] = []

    def add(name: str, data: str | bytes, good: int, rejects: list[str], codes: list[str],
            reject_lines: list[int | None] | None = None) -> None:
        path = out / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        cases.append(Case(name, str(path), good, rejects, codes, reject_lines or []))

    # one malformed element, in every layout: only that element is lost
    bad_lines = list(lines)
    bad_lines[BAD] = _undefined(bad_lines[BAD])
    add("array_lines_undefined.json", _lines_array(bad_lines), N - 1, ["invalid JSON"], ["json_parse_error"], [52])
    add("array_compact_undefined.json", "[" + ",".join(bad_lines) + "]", N - 1, ["invalid JSON"], ["json_parse_error"])
    bad_pretty = list(pretty)
    bad_pretty[BAD] = _undefined(bad_pretty[BAD])
    add("array_pretty_undefined.json", "[\n" + ",\n".join(bad_pretty) + "\n]\n", N - 1, ["invalid JSON"],
        ["json_parse_error"], [2 + 12 * BAD])
    add("concatenated_undefined.json", "\n".join(bad_pretty) + "\n", N - 1, ["invalid JSON"], ["json_parse_error"],
        [1 + 12 * BAD])
    deep = '{"messages": ' + "[" * 10_000 + "]" * 10_000 + "}"
    add("array_lines_deep.json", _lines_array(lines[:BAD] + [deep] + lines[BAD + 1 :]), N - 1,
        ["nested too deeply"], ["json_parse_error"], [52])
    add("array_compact_deep.json", "[" + ",".join(lines[:BAD] + [deep] + lines[BAD + 1 :]) + "]", N - 1,
        ["nested too deeply"], ["json_parse_error"])
    add("array_trailing_comma_pretty.json", "[\n" + ",\n".join(
        p.replace(f'"It is {2 * i}."', f'"It is {2 * i}.",') if i == BAD else p for i, p in enumerate(pretty)) + "\n]\n",
        N - 1, ["invalid JSON"], ["json_parse_error"])

    # structural damage: brackets or strings do not balance, so reading resumes at the next record
    unterminated = [p.replace(f'"It is {2 * i}."', f'"It is {2 * i}.') if i == BAD else p for i, p in enumerate(pretty)]
    add("array_pretty_unterminated_string.json", "[\n" + ",\n".join(unterminated) + "\n]\n", N - 1,
        ["a string runs past the end of its line"], ["json_parse_error"], [2 + 12 * BAD])
    compact_cut = [ln.replace(f'"It is {2 * i}."', f'"It is {2 * i}.') if i == BAD else ln for i, ln in enumerate(lines)]
    add("array_compact_unterminated_string.json", "[" + ",".join(compact_cut) + "]", N - 1, ["invalid JSON"],
        ["json_parse_error"])
    lost = [ln.removesuffix("]}") if i == BAD else ln for i, ln in enumerate(lines)]
    add("array_lines_lost_brackets.json", _lines_array(lost), N - 1, ["a new record starts before it closes"],
        ["json_parse_error"], [52])
    text = _lines_array(lines)
    add("array_cut.json", text[: text.index(f"Question number {80}")], 80, ["file ends inside this record"],
        ["truncated_file"], [82])
    add("array_not_closed.json", "[\n" + ",\n".join(lines[:10]) + ",\n", 10, ["array not closed"], ["truncated_file"])
    add("array_non_objects.json", "[" + ",".join([lines[0], "42", '"text"', "null", lines[1]]) + "]", 2,
        ["JSON int", "JSON str", "JSON NoneType"], ["data_type"] * 3)
    add("array_then_garbage.json", _lines_array(lines[:10]) + "garbage\n" + lines[10] + "\n", 11,
        ["invalid JSON"], ["json_parse_error"])
    add("arrays_concatenated.json", _lines_array(lines[:5]) + _lines_array(lines[5:10]), 10, [], [])
    add("empty_array.json", "[]\n", 0, [], [])

    # text encodings
    chinese = [record(i, "请解释这个问题的答案，并给出详细的步骤。" * 200 + f"（第{i}题）") for i in range(400)]
    add("chinese_4mb.json", "[" + ",".join(json.dumps(r, ensure_ascii=False) for r in chinese) + "]", 400, [], [])
    jsonl = "\n".join(lines[:20]) + "\n"
    add("utf16_bom.jsonl", jsonl.encode("utf-16"), 20, [], [])
    add("utf16le_no_bom.jsonl", jsonl.encode("utf-16-le"), 0, ["looks like UTF-16-LE"], ["unreadable_file"])
    add("utf32_bom.json", _lines_array(lines[:20]).encode("utf-32"), 20, [], [])
    add("utf8_bom.jsonl", b"\xef\xbb\xbf" + jsonl.encode(), 20, [], [])
    add("invalid_utf8.jsonl", "\n".join(lines[:2]).encode() + b'\n{"messages": "caf\xe9"}\n' + "\n".join(lines[2:4]).encode()
        + b"\n", 4, ["invalid UTF-8"], ["invalid_utf8"], [3])
    add("zeros.jsonl", b"\0" * 5000, 0, ["only zero bytes"], ["unreadable_file"])

    # cut and corrupt gzip: every complete record before the damage is kept
    data = ("\n".join(json.dumps(r) for r in records(5000)) + "\n").encode()
    cut, prefix = _cut_gzip(data, 0.6)
    add("cut.jsonl.gz", cut, prefix.count(b"\n"), ["gzip file is truncated"], ["truncated_file"])
    arr = _lines_array([json.dumps(r) for r in records(3000)]).encode()
    cut, prefix = _cut_gzip(arr, 0.5)
    add("cut.json.gz", cut, prefix.count(b"\n") - 1, ["gzip file is truncated"], ["truncated_file"])
    csv = ("messages\n" + "".join('"' + json.dumps(r["messages"]).replace('"', '""') + '"\n' for r in records(3000))).encode()
    cut, prefix = _cut_gzip(csv, 0.5)
    add("cut.csv.gz", cut, prefix.count(b"\n") - 1, ["gzip file is truncated"], ["truncated_file"])

    cases += _parquet_cases(out)
    return cases


def _parquet_cases(out: Path) -> list[Case]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records(300))
    good = out / "ok.parquet"
    # page checksums, as curate writes its own files: a flipped byte in a data page is found, not read as text
    pq.write_table(table, good, row_group_size=100, compression="zstd", write_page_checksum=True)
    data = good.read_bytes()
    cases = []

    def add(name: str, damaged: bytes, n: int, rejects: list[str]) -> None:
        (out / name).write_bytes(damaged)
        cases.append(Case(name, str(out / name), n, rejects, ["unreadable_file"] * len(rejects)))

    add("cut_footer.parquet", data[:-100], 0, ["the file is cut or not Parquet"])
    flipped = bytearray(data)
    for i in range(len(data) - 200, len(data) - 20):
        flipped[i] ^= 0x5A
    add("flipped_footer.parquet", bytes(flipped), 0, ["its metadata is corrupt"])
    add("zeros.parquet", b"\0" * len(data), 0, ["the file is cut or not Parquet"])
    meta = pq.ParquetFile(good).metadata
    start = meta.row_group(1).column(1).data_page_offset
    flipped = bytearray(data)
    for i in range(start + 40, start + 100):
        flipped[i] ^= 0xFF
    add("flipped_page_header.parquet", bytes(flipped), 200, ["row group 1 cannot be decoded"] * 100)
    flipped = bytearray(data)
    for i in range(start + 300, start + 310):
        flipped[i] ^= 0xFF
    add("flipped_page_data.parquet", bytes(flipped), 200, ["checksum does not match"] * 100)
    good.unlink()
    return cases


def main(argv: list[str]) -> None:
    for c in build(Path(argv[0] if argv else "damaged")):
        print(f"{c.name}: keep {c.good}, reject {len(c.rejects)} {c.rejects[:3]}")


if __name__ == "__main__":
    main(sys.argv[1:])
