"""Scale check for `curate dedupe`: one run over a seeded corpus of up to 10^7 records, through the CLI.

    python3 benchmarks/scale_dedupe.py                      # 10M records, writes RESULTS.md (section dedupe-scale)
    python3 benchmarks/scale_dedupe.py --rows 2000000 --no-write
    python3 benchmarks/scale_dedupe.py --raw                # the same corpus as raw chat JSONL (section dedupe-scale-raw)

The corpus is made like bench_dedupe.py's (~100 Zipf-distributed words per record; a share of records
are copies of an earlier record with a known word-substitution rate) but vectorised and written in
row groups of 1M, so 10^7 records take minutes and little memory to make. Copies come from anywhere
earlier in the corpus, so duplicates cross row groups. There is no exact-Jaccard ground truth at this
size (bench_dedupe.py measures quality); the check is that the run finishes, how long it takes on one
core, its peak memory, and that the removals follow the planted copies: a copy with a share r of its
words changed keeps about (1 - r)^5 of its 5-grams, so its Jaccard with the source is ~0.9 at r = 1%,
~0.82 at 2% (about two-thirds of such copies reach 0.8), ~0.6 at 5%. Every exact copy must go, no
original may, and copies at 10% and 20% should stay.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("CURATE_BENCH_DIR", "/tmp/curate_bench"))
RATES = np.array([0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2])
COPY_SHARE = 0.2
GROUP = 1_000_000


def make_corpus(n: int, seed: int = 0) -> tuple[Path, Path]:
    """(canonical Parquet of n records, .npy with each record's copy rate: -1 for an original)."""
    path, plan_path = CACHE / f"scale_{n}.parquet", CACHE / f"scale_{n}_rates.npy"
    if path.exists() and plan_path.exists():
        return path, plan_path
    from curate.dataset import SCHEMA

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = pa.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(60_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(p / p.sum())

    def words(k: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(k)), len(vocab) - 1).astype(np.int32)

    is_copy = rng.random(n) < COPY_SHARE
    is_copy[0] = False
    copies = np.flatnonzero(is_copy)
    src = (rng.random(len(copies)) * copies).astype(np.int64)  # a uniformly chosen earlier record
    rate = np.full(n, -1.0)
    rate[copies] = RATES[rng.integers(len(RATES), size=len(copies))]
    lengths = rng.integers(80, 121, n)
    for r, s in zip(copies.tolist(), src.tolist()):  # ascending: a copy's source has its final length
        lengths[r] = lengths[s]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.empty(offsets[-1], dtype=np.int32)  # every record's words (~4 GB at 10^7 records)
    tmp = path.with_suffix(".tmp")
    writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")
    k = 0
    for g in range(0, n, GROUP):
        hi = min(g + GROUP, n)
        flat[offsets[g] : offsets[hi]] = words(int(offsets[hi] - offsets[g]))
        while k < len(copies) and copies[k] < hi:  # copies in order: their sources are final already
            r, s = copies[k], src[k]
            d = flat[offsets[s] : offsets[s + 1]].copy()
            sub = rng.random(len(d)) < rate[r]
            d[sub] = words(int(sub.sum()))
            flat[offsets[r] : offsets[r + 1]] = d
            k += 1
        rows = np.arange(g, hi)
        words_of = vocab.take(pa.array(flat[offsets[g] : offsets[hi]]))
        texts = pc.binary_join(pa.ListArray.from_arrays(pa.array((offsets[g : hi + 1] - offsets[g]).astype(np.int32)),
                                                        words_of), " ")
        writer.write_table(_table(rows, texts), row_group_size=GROUP)
        print(f"  corpus: {hi:,} / {n:,} records", file=sys.stderr, flush=True)
    writer.close()
    tmp.rename(path)
    np.save(plan_path, rate)
    return path, plan_path


def _table(rows: np.ndarray, content: pa.Array) -> pa.Table:
    """Canonical rows with one user message each."""
    from curate.dataset import MESSAGE_TYPE, SCHEMA

    k = len(rows)
    msgs = pa.StructArray.from_arrays(
        [pa.array(["user"] * k), content, pa.nulls(k, pa.string()), pa.nulls(k, MESSAGE_TYPE.field("tool_calls").type),
         pa.nulls(k, pa.string())],
        fields=list(MESSAGE_TYPE),
    )
    return pa.table(
        {
            "id": pa.array([f"s{i:09d}" for i in rows]),
            "messages": pa.ListArray.from_arrays(pa.array(np.arange(k + 1, dtype=np.int32)), msgs),
            "tools": pa.nulls(k, pa.string()),
            "rejected": pa.nulls(k, SCHEMA.field("rejected").type),
            "source": pa.nulls(k, SCHEMA.field("source").type),
            "origin": pa.array(["synthetic"] * k),
            "meta": pa.nulls(k, pa.string()),
        },
        schema=SCHEMA,
    )


def make_raw(corpus: Path, reply: bool = False) -> Path:
    """The corpus as raw OpenAI chat JSONL (one user message a line; cached): what `--raw` deduplicates. Row r of
    the corpus is line r + 1, so the removed rows' source lines give the planted copy rates. reply: each record
    also has an assistant reply (the text's first 12 words), so that it is a valid chat record for validate
    (a user turn alone is quarantined: no assistant message)."""
    raw = corpus.with_name(corpus.stem + ("_chat" if reply else "") + ".jsonl")
    if raw.exists():
        return raw
    tmp = raw.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for batch in pq.ParquetFile(corpus).iter_batches(100_000, columns=["messages"]):
            texts = pc.list_flatten(batch.column(0)).field("content").to_pylist()
            if reply:
                f.writelines(json.dumps({"messages": [{"role": "user", "content": t},
                                                      {"role": "assistant", "content": " ".join(t.split()[:12])}]},
                                        separators=(",", ":")) + "\n" for t in texts)
            else:
                f.writelines('{"messages":[{"role":"user","content":%s}]}\n' % json.dumps(t) for t in texts)
        print(f"  raw JSONL: {raw.name}", file=sys.stderr, flush=True)
    tmp.rename(raw)
    return raw


def removed_rows(summary: dict, n: int, raw: bool) -> np.ndarray:
    """Which corpus rows the run removed: by id (the Parquet corpus) or by source line (the raw JSONL)."""
    removed = np.zeros(n, dtype=bool)
    f = pq.ParquetFile(summary["outputs"]["removed"])
    for batch in f.iter_batches(1_000_000, columns=["source"] if raw else ["id"]):
        if raw:
            idx = np.asarray(pc.struct_field(batch.column(0), "line"), dtype=np.int64) - 1
        else:
            idx = np.array([int(x[1:]) for x in batch.column(0).to_pylist()], dtype=np.int64)
        removed[idx] = True
    return removed


def run(corpus: Path, out: Path, cores: str) -> dict:
    """`curate dedupe CORPUS -o OUT --json` in a subprocess pinned to `cores`; its summary plus CPU and peak RSS."""
    cmd = [sys.executable, "-m", "curate.cli", "dedupe", str(corpus), "-o", str(out), "--json"]
    if Path("/usr/bin/taskset").exists():
        cmd = ["taskset", "-c", cores] + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"curate dedupe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    summary["wall"] = wall
    summary["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary["rss_mib"] = after.ru_maxrss / 1024  # the largest child so far: this run
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--cores", default="0", help="taskset core list for the run (default: one core)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--make-only", action="store_true", help="make (or find) the corpus and stop")
    ap.add_argument("--raw", action="store_true", help="deduplicate the corpus written as raw chat JSONL")
    a = ap.parse_args()
    if a.make_only:
        corpus, _ = make_corpus(a.rows)
        if a.raw:
            make_raw(corpus)
        return
    t0 = time.perf_counter()
    # made in a process of its own: a child forked from a parent that held the corpus's ~4 GB of word ids
    # would be charged that parent's resident size in its peak RSS (Linux keeps it across exec)
    subprocess.run([sys.executable, __file__, "--rows", str(a.rows), "--make-only"] + (["--raw"] if a.raw else []),
                   check=True)
    corpus, plan_path = make_corpus(a.rows)
    made = time.perf_counter() - t0
    rate = np.load(plan_path)
    data = make_raw(corpus) if a.raw else corpus
    s = run(data, CACHE / f"scale_out_{a.rows}{'_raw' if a.raw else ''}.parquet", a.cores)
    removed = removed_rows(s, a.rows, a.raw)
    n, cpu = a.rows, s["cpu"]
    lines = [
        (f"Corpus: {n:,} records, seeded (made, or loaded from the cache in {CACHE}, in {made:.0f} s); {COPY_SHARE:.0%} are copies of an "
        f"earlier record (anywhere before it, so across row groups of {GROUP:,}) with word-substitution rates "
        f"{RATES.tolist()}; ~100 Zipf words per record; {corpus.stat().st_size / 2**20:,.0f} MiB of zstd Parquet"
        + (f", read as raw chat JSONL ({data.stat().st_size / 2**20:,.0f} MiB)." if a.raw else ".")),
        (f"One `curate dedupe CORPUS -o OUT --json` process pinned to core(s) {a.cores}; CPU and peak RSS from the kernel's "
         "accounting of that child process."),
        "",
        "| records | wall s | CPU s | records/s (CPU) | peak RSS MiB | CPU s pass 1 / decide / write | removed | candidate pairs |",
        "|---|---|---|---|---|---|---|---|",
        (f"| {n:,} | {s['wall']:.1f} | {cpu:.1f} | {n / cpu:,.0f} | {s['rss_mib']:,.0f} | "
        f"{s['cpu_seconds']['pass1']:.1f} / {s['cpu_seconds']['decide']:.1f} / {s['cpu_seconds']['write']:.1f} | "
         f"{s['counts']['rejected']:,} | {s['candidate_pairs']:,} |"),
        "",
        "Removed share of the planted copies, by substitution rate (originals: records that are no copy):",
        "",
        "| copy rate | records | removed |",
        "|---|---|---|",
    ]
    for rt in RATES:
        sel = rate == rt
        lines.append(f"| {rt:g} | {int(sel.sum()):,} | {removed[sel].mean():.2%} |")
    sel = rate < 0
    lines.append(f"| original | {int(sel.sum()):,} | {removed[sel].mean():.3%} |")
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        from _results import write_section

        write_section("dedupe-scale-raw" if a.raw else "dedupe-scale", "python3 benchmarks/scale_dedupe.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
