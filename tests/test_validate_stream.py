"""`curate validate` streams: the same outputs as the in-memory implementation, for any workers and batch size,
in bounded memory.

validate_golden.json holds, per case, a digest of what the in-memory validate (the HEAD before issue 18)
gave: the summary (less config and outputs), every valid row and every quarantine row, with the folders
of the inputs replaced by placeholders. Regenerate only for an intended change of outputs:
    PYTHONPATH=/path/to/reference/tree python tests/test_validate_stream.py golden
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("validate_golden.json")
SHARED = ROOT.parent / "shared" / "data"
TOKEN_CASES = ("openai__openai-cookbook__toy_chat_fine_tuning.jsonl", "hiyouga__LLaMA-Factory__dpo_en_demo.json",
               "lm-sys__FastChat__dummy_conversation.json")


def cases(damaged_dir: Path) -> list[tuple[str, Path, dict]]:
    """(name, input, settings): every shared file, three with the token check, and the damaged corpus."""
    sys.path.insert(0, str(Path(__file__).parent))
    from damaged import build

    out = [(f.name, f, {"tokens": False}) for f in sorted(SHARED.iterdir()) if f.name != "README.md"]
    out += [(f"{name}:tokens", SHARED / name, {"tokenizer": "embedded", "max_tokens": 64}) for name in TOKEN_CASES]
    out += [("toy:regex", SHARED / TOKEN_CASES[0], {"tokens": False, "output_regex": "[A-Z].*"})]
    out += [(f"damaged:{c.name}", Path(c.file), {"tokens": False}) for c in build(damaged_dir)]
    return out


def digest(validate, src: Path, settings: dict, work: Path, folders: dict[str, str]) -> str:
    """A digest of everything validate gives for one input (the outputs read back from the files it wrote)."""
    out = validate(src, work / "v.parquet", quarantine=work / "q.parquet", **settings)
    summary = {k: v for k, v in out.to_dict().items() if k not in ("config", "outputs")}
    doc = json.dumps([summary, pq.read_table(work / "v.parquet").to_pylist(), pq.read_table(work / "q.parquet").to_pylist(),
                      pq.read_schema(work / "v.parquet").to_string(), pq.read_schema(work / "q.parquet").to_string()],
                     sort_keys=True, default=str)
    for folder, name in folders.items():
        doc = doc.replace(json.dumps(folder)[1:-1], name)
    return hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()


def all_digests(validate, extra: dict, tmp: Path) -> dict[str, str]:
    damaged = tmp / "damaged"
    damaged.mkdir()
    folders = {str(SHARED): "SHARED", str(damaged): "DAMAGED"}
    got = {}
    for name, src, settings in cases(damaged):
        work = tmp / "out"
        work.mkdir(exist_ok=True)
        got[name] = digest(validate, src, {**settings, **extra}, work, folders)
    return got


@pytest.mark.slow
def test_outputs_equal_the_in_memory_implementation_on_real_and_damaged_files(tmp_path: Path) -> None:
    from curate.validate import validate

    want = json.loads(GOLDEN.read_text())
    got = all_digests(validate, {"workers": 1}, tmp_path)
    assert got == want


@pytest.mark.slow
def test_outputs_are_the_same_for_two_workers_and_small_batches(tmp_path: Path) -> None:
    """Duplicates, first examples and mixed formats across batch and worker boundaries give the same outputs."""
    from curate.validate import validate

    want = json.loads(GOLDEN.read_text())
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    folders = {str(SHARED): "SHARED", str(damaged): "DAMAGED"}
    picked = {"hiyouga__LLaMA-Factory__dpo_en_demo.json:tokens", "hiyouga__LLaMA-Factory__alpaca_en_demo.json",
              "damaged:array_lines_undefined.json", "damaged:cut.jsonl.gz"}
    for name, src, settings in cases(damaged):
        if name in picked:
            work = tmp_path / "out"
            work.mkdir(exist_ok=True)
            assert digest(validate, src, {**settings, "workers": 2, "batch_size": 7}, work, folders) == want[name], name
            picked.remove(name)
    assert picked == set()


@pytest.mark.slow
def test_jsonl_in_small_blocks_on_two_workers_equals_the_golden_outputs(tmp_path: Path, monkeypatch) -> None:
    """A JSONL file is read, converted and checked block by block on the workers: cut into 2 KiB blocks (so
    duplicates, declared ids, examples and damage cross blocks), two workers give the in-memory outputs."""
    from curate.ingest import blocks
    from curate.validate import validate

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    want = json.loads(GOLDEN.read_text())
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    folders = {str(SHARED): "SHARED", str(damaged): "DAMAGED"}
    picked = {"openai__openai-cookbook__toy_chat_fine_tuning.jsonl:tokens", "damaged:cut.jsonl.gz",
              "damaged:invalid_utf8.jsonl", "toy:regex"}
    seen = set()
    for name, src, settings in cases(damaged):
        if name in picked or (name.startswith("damaged:") and name.endswith(".jsonl")):
            work = tmp_path / "out"
            work.mkdir(exist_ok=True)
            assert digest(validate, src, {**settings, "workers": 2}, work, folders) == want[name], name
            seen.add(name)
    assert picked <= seen and len(seen) > len(picked)


def test_a_canonical_parquet_in_two_workers_equals_one(shared_data: Path, tmp_path: Path) -> None:
    """A canonical input across batches and workers: duplicates found across batches, same rows and summary."""
    from curate.ingest import ingest
    from curate.validate import validate

    ingest([shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"], tmp_path / "a.parquet")
    one = validate(tmp_path / "a.parquet", tokens=False, workers=1)
    two = validate(tmp_path / "a.parquet", tokens=False, workers=2, batch_size=50)
    assert one.counts == two.counts == {"in": 999, "kept": 999, "rejected": 0}
    assert two.summary["warnings"] == {"no_system_message": 999, "duplicate_record": 14}
    assert one.kept.equals(two.kept) and one.rejected.equals(two.rejected)
    assert {k: v for k, v in one.summary.items() if k != "config"} == {k: v for k, v in two.summary.items()
                                                                        if k != "config"}


def test_a_declared_id_reused_in_a_later_batch_is_found(tmp_path: Path) -> None:
    src = tmp_path / "ids.jsonl"
    rec = [{"id": "a", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "r"}]}
           for i in range(6)]
    rec[3]["id"] = "b"
    src.write_text("".join(json.dumps(r) + "\n" for r in rec))
    from curate.validate import validate

    out = validate(src, tokens=False, batch_size=2, workers=1)
    assert out.summary["errors"] == {"duplicate_id": 4}
    assert [x["validate_row"] for x in out.rejected.to_pylist()] == [2, 3, 5, 6]
    assert out.rejected.column("validate_errors").to_pylist()[0] == [
        "no_system_message: no message has role 'system'",
        "duplicate_id: id 'a' already used by a different record (row 1)"]


def _write_corpus(path: Path, n: int) -> int:
    """n canonical rows of ~1.5 KB of text each, written in row groups of 10,000; the bytes of text."""
    import pyarrow as pa

    from curate.dataset import SCHEMA, make_row

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    text = 0
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as w:
        for start in range(0, n, 10_000):
            rows = []
            for i in range(start, min(n, start + 10_000)):
                body = " ".join(words[(i * 7 + k * 3) % 12] for k in range(250))
                msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"},
                        {"role": "assistant", "content": f"Answer {i}: {body}"}]
                text += sum(len(m["content"]) for m in msgs)
                rows.append(make_row(msgs, origin="seed"))
            w.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
    return text


PEAK = """
import resource, sys
from curate.validate import validate
out = validate(sys.argv[1], sys.argv[2], quarantine=sys.argv[3], tokens=False, workers=1, batch_size=1000, keep=False)
assert out.counts["kept"] == int(sys.argv[4]), out.counts
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak(src: Path, tmp: Path, n: int) -> int:
    res = subprocess.run([sys.executable, "-c", PEAK, str(src), str(tmp / "v.parquet"), str(tmp / "q.parquet"), str(n)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1])


@pytest.mark.slow
def test_memory_is_bounded_by_the_batch_not_the_input(tmp_path: Path) -> None:
    """200,000 records (~300 MB of text) in batches of 1,000 peak less than 64 MiB above 20,000 records.

    What may grow with the input is per-row state: the 8-byte digest of each row's id with its row number
    in a dict (~110 bytes a row, ~20 MB for the 180,000 more rows). Holding the extra rows' text alone
    would add ~270 MB (as Arrow; several times that as Python dicts); the rest of the peak is imports,
    allocator arenas and one batch, the same in both runs.
    """
    small, big = tmp_path / "small.parquet", tmp_path / "big.parquet"
    _write_corpus(small, 20_000)
    text = _write_corpus(big, 200_000)
    assert text > 280_000_000
    base, peak = _peak(small, tmp_path, 20_000), _peak(big, tmp_path, 200_000)
    assert peak - base < 64 << 20, (base >> 20, peak >> 20)
    assert pq.read_metadata(tmp_path / "v.parquet").num_rows == 200_000


if __name__ == "__main__" and sys.argv[1:] == ["golden"]:
    from curate.validate import validate as _validate  # the installed curate, or the tree on PYTHONPATH

    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(all_digests(_validate, {}, Path(d)), indent=1, sort_keys=True) + "\n")


def test_two_workers_encode_the_valid_rows_and_the_file_is_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    """With a local pool the rows stay in shared memory where the workers checked them, a worker makes and
    encodes each batch's valid part and this process appends it (curate.stitch): the valid file is byte for byte
    the one-worker file."""
    from curate.ingest import blocks
    from curate.outputs import ParquetSink
    from curate.validate import validate

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    put = []
    real = ParquetSink.write_encoded
    monkeypatch.setattr(ParquetSink, "write_encoded", lambda self, p, found, **k: (put.append(found.rows),
                                                                                  real(self, p, found, **k)))
    src = SHARED / "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"
    big = tmp_path / "toy20.jsonl"
    big.write_text(src.read_text() * 20)  # duplicates across blocks: quarantined the same either way
    outs = [validate(big, tmp_path / f"v{n}.parquet", quarantine=tmp_path / f"q{n}.parquet", tokens=False, workers=n,
                     max_error_rate=1) for n in (1, 2)]
    assert outs[0].counts == outs[1].counts and outs[0].counts["kept"] > 0
    assert (tmp_path / "v1.parquet").read_bytes() == (tmp_path / "v2.parquet").read_bytes()
    assert pq.read_table(tmp_path / "q1.parquet").equals(pq.read_table(tmp_path / "q2.parquet"))
    if blocks.roomy_shm(2):
        assert sum(put) == outs[1].counts["kept"] and len(put) > 1
