"""The Ray engine beside the local one: ingest, validate and dedupe on 1 and 2 CPUs, outputs compared.

    python3 benchmarks/bench_ray.py                      # 1M records, writes RESULTS.md (section ray)
    python3 benchmarks/bench_ray.py --rows 100000 --no-write

Inputs: bench_raw.py's raw chat JSONL of bench_dedupe.py's seeded corpus (ingest and validate read it) and
that corpus's canonical Parquet (dedupe reads it). Each command runs as its own process tree, one after
another: `--engine local --workers N` and `--engine ray --workers N` (a local Ray instance of this
machine's cores, started by the command and included in its figures). CPU is user+sys of the whole tree
(Ray's own processes included), wall the elapsed time, and peak RSS the largest single process of the
tree (Ray's object store is shared memory that every process maps, so a sum would count it many times).
Every output is compared with the local 1-worker run's. The note under the table works out, from these
figures, what 10^8 records on N nodes would take.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dedupe import CACHE, make_corpus
from bench_raw import make_raw
from bench_validate import measure


def curate(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *args]


def equal(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    return pq.read_table(a).equals(pq.read_table(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    n = a.rows
    corpus, _ = make_corpus(n)
    raw, _ = make_raw(n)
    out = CACHE / f"bench_ray_{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    runs: list[dict] = []
    for stage in ("ingest", "validate", "dedupe"):
        for engine in ("local", "ray"):
            for w in (1, 2):
                tag = f"{stage}_{engine}{w}"
                common = ["--engine", engine, "--workers", str(w)]
                if stage == "ingest":
                    cmd = ["ingest", str(raw), "-o", str(out / f"{tag}.parquet")]
                    files = [f"{tag}.parquet"]
                elif stage == "validate":
                    cmd = ["validate", str(raw), "--no-tokens", "--max-error-rate", "1", "-o",
                           str(out / f"{tag}.parquet"), "--quarantine", str(out / f"{tag}.q.parquet")]
                    files = [f"{tag}.parquet", f"{tag}.q.parquet"]
                else:
                    cmd = ["dedupe", str(corpus), "-o", str(out / tag / "kept.parquet"), "--json"]
                    files = [f"{tag}/kept.parquet", f"{tag}/kept.removed.parquet", f"{tag}/kept.clusters.parquet"]
                r = measure(curate(cmd + common), ROOT, out / f"{tag}.out")
                if r["rc"] != 0:
                    raise SystemExit(f"{tag} failed ({r['rc']}): {r['stderr']}")
                r.update(stage=stage, engine=engine, workers=w, files=files)
                runs.append(r)
                print(f"{tag:18} CPU {r['cpu_s']:7.1f} s  wall {r['wall_s']:7.1f} s  largest process "
                      f"{r['rss_max_mib']:6,.0f} MiB", file=sys.stderr, flush=True)
    body = report(n, raw, corpus, out, runs)
    print(body)
    if not a.no_write:
        from _results import write_section

        write_section("ray", "python3 benchmarks/bench_ray.py " + " ".join(sys.argv[1:]), body)


def report(n: int, raw: Path, corpus: Path, out: Path, runs: list[dict]) -> str:
    rows = ["| stage | engine | workers | CPU s | wall s | records/s (wall) | largest process MiB | speed-up | "
            "scaling efficiency | outputs = local 1 worker |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["stage"]: r for r in runs if r["engine"] == "local" and r["workers"] == 1}
    one = {(r["stage"], r["engine"]): r for r in runs if r["workers"] == 1}
    for r in runs:
        ref = base[r["stage"]]
        same = all((out / f).exists() and equal(out / f, out / g) for f, g in zip(r["files"], ref["files"]))
        first = one[(r["stage"], r["engine"])]
        speed = first["wall_s"] / r["wall_s"]
        rows.append(f"| {r['stage']} | {r['engine']} | {r['workers']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | "
                    f"{n / r['wall_s']:,.0f} | {r['rss_max_mib']:,.0f} | {speed:.2f}x | {speed / r['workers']:.0%} | "
                    f"{'yes' if same else 'NO'} |")
    sign = next(r for r in runs if (r["stage"], r["engine"], r["workers"]) == ("dedupe", "ray", 2))
    dsum = json.loads((out / "dedupe_local1.out").read_text())
    bands = dsum["config"]["bands"]
    per_row = 8 * bands + 40
    lines = [
        f"Inputs: {n:,} records; raw chat JSONL {raw.stat().st_size / 2**20:,.0f} MiB (ingest, validate "
        f"`--no-tokens`), canonical Parquet {corpus.stat().st_size / 2**20:,.0f} MiB (dedupe). Ray: a local "
        "instance of this machine's 2 cores, started by each command (its start-up, ~5 s, is in the figures). "
        "Speed-up and scaling efficiency are against the same engine's 1-worker run.",
        "", *rows, "",
        "How it grows (arithmetic from these figures, not a run): the actors' work grows with records / CPUs, "
        f"but the driver keeps about {per_row} bytes a row for dedupe's decision ({bands} bands x 8 bytes + 40): "
        f"{per_row * 1e8 / 2**30:,.0f} GiB at 10^8 records, which one driver machine must hold; and it reads every "
        f"input byte and writes every output row (here {raw.stat().st_size / n:,.0f} bytes a raw record: "
        f"{raw.stat().st_size / n * 1e8 / 2**30:,.0f} GiB at 10^8). A distributed decision would shuffle "
        f"{bands} x 16 bytes (band key, row) a row, {bands * 16 * 1e8 / 2**30:,.0f} GiB at 10^8 over all nodes, and "
        "is not built (README: Ray). At the dedupe CPU measured here on Ray with 2 workers "
        f"({sign['cpu_s']:.0f} CPU s per {n:,}), 10^8 records are ~{sign['cpu_s'] * 1e8 / n / 3600:,.1f} CPU hours, "
        "before the driver's share.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
