"""`curate dedupe --workers N` and `curate dedupe RAW.jsonl`: wall, CPU and peak RSS, and outputs compared.

    python3 benchmarks/bench_dedupe_workers.py                 # writes RESULTS.md (section dedupe-workers)
    python3 benchmarks/bench_dedupe_workers.py --repeats 1 --raw-rows 200000 --no-write

1. The 1M-record corpus of bench_dedupe.py (canonical Parquet) through the CLI with 1 and with 2 workers,
   interleaved, `--repeats` times each; every run's kept, removed and clusters tables are compared with the
   first 1-worker run's.
2. The signature pass alone (tokenise, shingle, MinHash, band keys) over the corpus's first `--sign-rows` rows,
   read into memory first: in this process, on 2 threads, and on 2 worker processes (curate.engine.Engine, the
   same function in each), to show which pool suits it.
3. The corpus's first `--raw-rows` records written as raw chat JSONL, deduplicated from the raw file, and the
   same file ingested first and deduplicated from the Parquet: outputs compared.

CPU is user + system time from the kernel's accounting of each child process (and of the pool's worker
processes), which a shared machine disturbs far less than wall time; the load average is shown with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("CURATE_BENCH_DIR", "/tmp/curate_bench"))
CORPUS = CACHE / "corpus_1000000.parquet"


def cli(args: list[str]) -> dict:
    """`python -m curate.cli ARGS` in a child process: its JSON output plus wall, CPU and peak RSS of that child."""
    import tempfile

    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=stdout, stderr=stderr, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own accounting
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        text, err = stdout.read().decode(), stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"curate {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    out = json.loads(text) if text.strip() else {}
    out.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mib=usage.ru_maxrss / 1024)
    return out


def same_outputs(a: dict, b: dict) -> bool:
    import pyarrow.parquet as pq

    return all(pq.read_table(a["outputs"][k]).equals(pq.read_table(b["outputs"][k])) for k in ("kept", "removed", "clusters"))


def load() -> str:
    return " / ".join(open("/proc/loadavg").read().split()[:3])


def workers_runs(repeats: int, out: Path) -> tuple[list[str], bool]:
    rows, runs = [], []
    for r in range(repeats):
        for w in (1, 2):
            s = cli(["dedupe", str(CORPUS), "-o", str(out / f"w{w}_{r}" / "k.parquet"), "--workers", str(w), "--json"])
            s["w"] = w
            runs.append(s)
            print(f"  workers {w}: wall {s['wall']:.1f} s, CPU {s['cpu']:.1f} s", file=sys.stderr, flush=True)
    first = next(s for s in runs if s["w"] == 1)
    equal = all(same_outputs(first, s) for s in runs)
    for s in runs:
        rows.append(f"| {s['w']} | {s['wall']:.1f} | {s['cpu']:.1f} | {s['seconds_pass1']:.2f} | "
                    f"{s['cpu_seconds']['pass1']:.2f} | {s['rss_mib']:,.0f} |")
    return rows, equal


def _proc_cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def sign_runs(rows: int) -> list[str]:
    """The signature pass over `rows` rows already in memory: here, 2 threads, 2 processes."""
    from curate.dedupe.result import batches
    from curate.dedupe.signing import SignSettings, settings_of, sign
    from curate.engine import Engine
    from curate.inputs import open_input

    src = open_input(CORPUS, pre_buffer=False, buffer_size=1 << 23)
    data = []
    for _, b in batches(src, 5_000, ["id", "messages"], keys_only=True):
        data.append(b)
        if sum(x.num_rows for x in data) >= rows:
            break
    settings = SignSettings("user", frozenset(), "word", 5, "curate", 128, 1, 21, 6, False)
    sign(settings, data[0])  # compiled kernels loaded
    out = []
    for name, workers, threads in (("1 (this process)", 1, True), ("2 threads", 2, True), ("2 processes", 2, False)):
        t0, c0 = time.perf_counter(), time.process_time()
        with Engine(workers, settings_of, (settings,), threads=threads) as engine:
            for _ in engine.map(sign, data):
                pass
            pool = getattr(engine, "_pool", None)
            pids = list(getattr(pool, "_processes", {}) or {}) if not threads else []
            child = _proc_cpu(pids) if pids else 0.0
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + child
        out.append(f"| {name} | {wall:.2f} | {cpu:.2f} |")
        print(f"  sign {name}: wall {wall:.2f} s, CPU {cpu:.2f} s", file=sys.stderr, flush=True)
    return out


def make_raw(n: int) -> Path:
    """The corpus's first n records as raw chat JSONL (cached)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    raw = CACHE / f"chat_raw_{n}.jsonl"
    if raw.exists():
        return raw
    done = 0
    with open(raw.with_suffix(".tmp"), "w") as f:
        for b in pq.ParquetFile(CORPUS).iter_batches(50_000, columns=["messages"]):
            texts = pc.list_flatten(b.column(0)).field("content").to_pylist()[: n - done]
            f.writelines(json.dumps({"messages": [{"role": "user", "content": t}]}) + "\n" for t in texts)
            done += len(texts)
            if done >= n:
                break
    raw.with_suffix(".tmp").rename(raw)
    return raw


def raw_runs(n: int, out: Path) -> tuple[list[str], bool]:
    raw = CACHE / f"chat_raw_{n}.jsonl"
    from_raw = cli(["dedupe", str(raw), "-o", str(out / "raw" / "k.parquet"), "--json"])
    ingested = cli(["ingest", str(raw), "-o", str(out / "ingested.parquet"), "--json"])
    from_parquet = cli(["dedupe", str(out / "ingested.parquet"), "-o", str(out / "parquet" / "k.parquet"), "--json"])
    rows = [f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_mib']:,.0f} |" for name, r in (
        (f"curate dedupe {raw.name}", from_raw), (f"curate ingest {raw.name}", ingested),
        ("curate dedupe of the ingested Parquet", from_parquet))]
    return rows, same_outputs(from_raw, from_parquet)


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sign-rows", type=int, default=300_000)
    ap.add_argument("--raw-rows", type=int, default=1_000_000)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--make-raw", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sign-only", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_raw:
        make_raw(a.make_raw)
        return
    if a.sign_only:
        print(json.dumps(sign_runs(a.sign_only)))
        return
    if not CORPUS.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_dedupe.py"), "--sizes", "1000000", "--no-write"],
                       check=True)
    with tempfile.TemporaryDirectory(prefix="curate-bench-workers-") as tmp:
        out = Path(tmp)
        start_load = load()
        # the corpus is read, and the signing data held, in processes of their own: Linux charges a child the
        # parent's peak RSS at the time it is started, so this process stays small
        subprocess.run([sys.executable, __file__, "--make-raw", str(a.raw_rows)], check=True)
        raw_rows, raw_equal = raw_runs(a.raw_rows, out)
        sign = json.loads(subprocess.run([sys.executable, __file__, "--sign-only", str(a.sign_rows)], check=True,
                                         capture_output=True, text=True).stdout)
        wrows, equal = workers_runs(a.repeats, out)
        end_load = load()
    body = "\n".join([
        (f"Load average (1 / 5 / 15 min) at the start {start_load}, at the end {end_load}: other jobs shared this "
         "machine, so wall times are noisy; CPU is user + system time of each child process."),
        "",
        f"`curate dedupe {CORPUS.name} --workers N` (1,000,000 records), every run:",
        "",
        "| workers | wall s | CPU s | pass 1 wall s | pass 1 CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
        *wrows,
        "",
        f"Kept, removed and clusters tables of every run equal to the first 1-worker run's: {'yes' if equal else 'NO'}.",
        "",
        (f"The signature pass alone over the corpus's first {a.sign_rows:,} rows (read into memory first), "
         "the same function on curate.engine.Engine:"),
        "",
        "| pool | wall s | CPU s (workers included) |",
        "|---|---|---|",
        *sign,
        "",
        (f"Raw input: the corpus's first {a.raw_rows:,} records as chat JSONL "
         "(`{\"messages\": [{\"role\": \"user\", ...}]}` per line):"),
        "",
        "| command | wall s | CPU s | peak RSS MiB |",
        "|---|---|---|---|",
        *raw_rows,
        "",
        f"Outputs of the raw run equal to those of the ingested Parquet's: {'yes' if raw_equal else 'NO'}.",
    ])
    print(body)
    if not a.no_write:
        from _results import write_section

        write_section("dedupe-workers", "python3 benchmarks/bench_dedupe_workers.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
