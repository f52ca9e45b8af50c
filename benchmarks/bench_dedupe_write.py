"""dedupe's writing pass with 2 workers: row groups encoded on the pool vs in the driver, side by side.

    python3 benchmarks/bench_dedupe_write.py                          # 10M records, RESULTS.md (dedupe-write)
    python3 benchmarks/bench_dedupe_write.py --rows 1000000 --repeats 1 --no-write
    python3 benchmarks/bench_dedupe_write.py --rows 1000000 --engine ray     # section dedupe-write-ray

The corpus is scale_dedupe.py's (canonical Parquet, cached in $CURATE_BENCH_DIR). Each run is one child process
calling `dedupe(CORPUS, OUT, workers=2)` as `curate dedupe` does, with `curate.dedupe.result.ENCODE_ON_POOL` on
(the kept and removed row groups encoded by the pool's workers and appended by the driver: curate.stitch) or off
(encoded by the driver, as before). The two modes alternate, `--repeats` times each. CPU: the driver's own
(getrusage self) and its pool's (getrusage children, after the fork server is stopped and so has waited for its
workers); the driver's writing pass is `cpu_seconds.write` of the summary. Every run's kept, removed and clusters
files are compared byte for byte (sha256) with the first run's. With `--engine ray` each run starts a local Ray
instance of 2 CPUs (`curate.engine.use("ray")`); the row groups go to the actors through the object store, and
the actors' CPU is not counted (Ray's processes are not this process's children to wait for): only the driver's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CACHE = Path(os.environ.get("CURATE_BENCH_DIR", "/tmp/curate_bench"))
FILES = ("k.parquet", "k.removed.parquet", "k.clusters.parquet")


def child(mode: str, corpus: str, out: str, engine: str = "local") -> None:
    """One run, in this process: the summary's figures and this process's and its pool's CPU, as JSON."""
    import multiprocessing.forkserver
    import resource

    from curate.dedupe import dedupe, result
    from curate.engine import use

    result.ENCODE_ON_POOL = mode == "pool"
    t0 = time.perf_counter()
    with use(engine):
        o = dedupe(corpus, out, workers=2, tune_allocator=True)
    wall = time.perf_counter() - t0
    if engine == "local":
        multiprocessing.forkserver._forkserver._stop()  # waits for the server, which has waited for the workers
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    s = o.summary
    print(json.dumps({"wall": wall, "write_wall": s["seconds"] - s["seconds_pass1"] - s["seconds_pass2"],
                      "cpu_seconds": s["cpu_seconds"], "driver_cpu": me.ru_utime + me.ru_stime,
                      "pool_cpu": kids.ru_utime + kids.ru_stime, "driver_rss": me.ru_maxrss / 1024,
                      "pool_rss": kids.ru_maxrss / 1024, "counts": o.counts}))


def run(mode: str, corpus: Path, out: Path, engine: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(corpus), str(out / "k.parquet"), engine],
                          capture_output=True, text=True, check=False, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"run {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got["mode"] = mode
    got["digests"] = [hashlib.sha256((out / f).read_bytes()).hexdigest() for f in FILES]
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    from scale_dedupe import make_corpus

    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_dedupe.py"), "--rows", str(a.rows),
                    "--make-only"], check=True)
    corpus, _ = make_corpus(a.rows)
    out = CACHE / f"bench_dedupe_write_{a.rows}_{a.engine}"
    runs = []
    for r in range(a.repeats):
        for mode in ("driver", "pool"):
            load = " / ".join(Path("/proc/loadavg").read_text().split()[:3])
            got = run(mode, corpus, out / f"{mode}{r}", a.engine)
            got["load"] = load
            runs.append(got)
            print(f"  {mode}: wall {got['wall']:.1f} s, write {got['write_wall']:.1f} s, driver write CPU "
                  f"{got['cpu_seconds']['write']:.1f} s", file=sys.stderr, flush=True)
    same = all(g["digests"] == runs[0]["digests"] for g in runs)
    n = a.rows
    lines = [
        (f"Corpus: scale_dedupe.py's {n:,} records ({corpus.stat().st_size / 2**20:,.0f} MiB of zstd Parquet); "
        f"`dedupe(CORPUS, OUT, workers=2)` on the {a.engine} engine in a child process a run, the two modes "
        "alternating. `pool`: the kept and removed row groups encoded by the workers and appended by the driver "
        "(curate.stitch); `driver`: encoded by the driver (before). "
        + ("Ray: a local instance of 2 CPUs a run; only the driver's CPU is counted (the actors are not its "
           "children)." if a.engine == "ray" else
           "Pool CPU: the worker processes (pass 1 signs on threads of the driver; the pool exists only in the "
           "writing pass).")),
        "",
        ("| mode | wall s | writing pass wall s | CPU s all | driver CPU s | driver CPU s writing | pool CPU s | "
        "driver peak RSS MiB | load before |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in runs:
        ray = a.engine == "ray"  # the actors' CPU is not counted
        total = "-" if ray else f"{g['driver_cpu'] + g['pool_cpu']:.1f}"
        pool = "-" if ray else f"{g['pool_cpu']:.1f}"
        lines.append(f"| {g['mode']} | {g['wall']:.1f} | {g['write_wall']:.1f} | {total} | "
                     f"{g['driver_cpu']:.1f} | {g['cpu_seconds']['write']:.1f} | {pool} | "
                     f"{g['driver_rss']:,.0f} | {g['load']} |")
    lines += ["", (f"Outputs (kept, removed, clusters) byte for byte equal across all runs: {'yes' if same else 'NO'} "
              f"({runs[0]['counts']['kept']:,} kept, {runs[0]['counts']['rejected']:,} removed).")]
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        from _results import write_section

        write_section("dedupe-write" + ("-ray" if a.engine == "ray" else ""), "python3 benchmarks/bench_dedupe_write.py " + " ".join(sys.argv[1:]), body)
    if not same:
        raise SystemExit("outputs differ between runs")


if __name__ == "__main__":
    main()
