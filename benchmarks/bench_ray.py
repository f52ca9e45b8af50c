"""The Ray engine beside the local one: ingest, validate and dedupe on 1 and 2 CPUs, outputs compared.

    python3 benchmarks/bench_ray.py                      # 1M records, writes RESULTS.md (section ray)
    python3 benchmarks/bench_ray.py --rows 100000 --no-write
    python3 benchmarks/bench_ray.py --stages dedupe --configs local1,ray2   # a subset (section ray-dedupe)
    python3 benchmarks/bench_ray.py --rows 10000000 --scale --stages dedupe  # scale_dedupe.py's 10M corpus

Inputs: bench_raw.py's raw chat JSONL of bench_dedupe.py's seeded corpus (ingest and validate read it) and
the local 1-worker ingest's Parquet of it (dedupe reads it). Each command runs as its own process tree, one after
another: `--engine local --workers N` and `--engine ray --workers N` (a local Ray instance of this
machine's cores, started by the command and included in its figures). On Ray the workers read their blocks
(JSONL) or row ranges (dedupe's texts) and write ingest's rows themselves (curate/ray_io.py), and dedupe decides
on the cluster (curate/dedupe/distributed.py). CPU is user+sys of the whole tree (Ray's own processes
included), wall the elapsed time; peak RSS of the driver (the `curate` process) and of the largest other
process (a worker, or Ray's own), each on its own: Ray's object store is shared memory that every process maps,
so a sum would count it many times. Every output is compared with the local 1-worker run's. The note under the
table works out, from per-row sizes measured here, what 10^7 and 10^8 records on N nodes would hold and shuffle.
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


def measure(cmd: list[str], cwd: Path, stdout: Path) -> dict:
    """Run cmd: CPU s (user+sys) of its process tree, wall s, peak RSS of the driver and of the largest other one."""
    import subprocess
    import time

    import psutil

    t0 = time.perf_counter()
    with open(stdout, "wb") as out:
        proc = psutil.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        cpu: dict[int, float] = {}
        driver = other = 0
        while proc.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    t, r = p.cpu_times(), p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system if p is proc else t.user + t.system
                if p is proc:
                    driver = max(driver, r)
                else:
                    other = max(other, r)
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    return {"cpu_s": sum(cpu.values()), "wall_s": wall, "driver_mib": driver / 2**20, "other_mib": other / 2**20,
            "rss_max_mib": max(driver, other) / 2**20, "rc": proc.returncode, "stderr": err[-500:]}


def curate(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *args]


def equal(a: Path, b: Path, rows: int = 200_000) -> bool:
    """The same rows in the same order, compared 200,000 rows at a time (a 10^7-row file does not fit twice)."""
    import itertools

    import pyarrow as pa
    import pyarrow.parquet as pq

    def slices(path: Path):
        f = pq.ParquetFile(path)
        held, count = [], 0
        for batch in f.iter_batches(rows):
            held.append(batch)
            count += batch.num_rows
            while count >= rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, rows)
                held, count = table.slice(rows).to_batches(), count - rows
        if count:
            yield pa.Table.from_batches(held)

    fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    if fa.metadata.num_rows != fb.metadata.num_rows or not fa.schema_arrow.equals(fb.schema_arrow):
        return False
    return all(x is not None and y is not None and x.equals(y)
               for x, y in itertools.zip_longest(slices(a), slices(b)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--stages", default="ingest,validate,dedupe",
                    help="which stages (dedupe also runs the local 1-worker ingest it reads)")
    ap.add_argument("--configs", default="local1,local2,ray1,ray2", help="engine and workers of each run")
    ap.add_argument("--scale", action="store_true",
                    help="scale_dedupe.py's vectorised corpus (minutes at 10^7 records; bench_dedupe.py's takes hours)")
    ap.add_argument("--report-only", action="store_true",
                    help="the report of the runs an earlier invocation recorded (its folder's runs.json), none run")
    ap.add_argument("--add", action="store_true",
                    help="add these runs to the ones an earlier invocation recorded in its folder (report on all)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    n = a.rows
    stages = [s for s in ("ingest", "validate", "dedupe") if s in a.stages.split(",")]
    configs = [(c.rstrip("0123456789"), int(c[len(c.rstrip("0123456789")):])) for c in a.configs.split(",")]
    plan = [(stage, engine, w) for stage in stages for engine, w in configs]
    made_for_dedupe = "dedupe" in stages and ("ingest", "local", 1) not in plan
    if made_for_dedupe:
        plan.insert(0, ("ingest", "local", 1))  # dedupe's input
    if a.scale:
        import scale_dedupe

        corpus, _ = scale_dedupe.make_corpus(n)
        raw = scale_dedupe.make_raw(corpus)
        # its records are a user turn alone, which validate quarantines: validate reads them with a reply
        checked = scale_dedupe.make_raw(corpus, reply=True) if "validate" in stages else raw
    else:
        corpus, _ = make_corpus(n)
        raw, _ = make_raw(n)
        checked = raw
    out = CACHE / f"bench_ray_{n}"
    if a.report_only or a.add:
        runs = json.loads((out / "runs.json").read_text())
        done = {(r["stage"], r["engine"], r["workers"]) for r in runs}
        if a.report_only:
            plan = []
        elif made_for_dedupe and ("ingest", "local", 1) in done:
            plan.remove(("ingest", "local", 1))  # dedupe's input is there
        # a run made again replaces the recorded one
        runs = [r for r in runs if (r["stage"], r["engine"], r["workers"]) not in plan]
        stages = sorted({r["stage"] for r in runs} | set(stages), key=("ingest", "validate", "dedupe").index)
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        runs = []
    for stage, engine, w in plan:
        tag = f"{stage}_{engine}{w}"
        common = ["--engine", engine, "--workers", str(w)]
        if stage == "ingest":
            cmd = ["ingest", str(raw), "-o", str(out / f"{tag}.parquet")]
            files = [f"{tag}.parquet"]
        elif stage == "validate":
            cmd = ["validate", str(checked), "--no-tokens", "--max-error-rate", "1", "-o",
                   str(out / f"{tag}.parquet"), "--quarantine", str(out / f"{tag}.q.parquet")]
            files = [f"{tag}.parquet", f"{tag}.q.parquet"]
        else:
            # ingest's output (row groups of a block each, as `curate run` gives dedupe): on Ray the actors
            # read its row groups' texts themselves
            cmd = ["dedupe", str(out / "ingest_local1.parquet"), "-o", str(out / tag / "kept.parquet"), "--json"]
            files = [f"{tag}/kept.parquet", f"{tag}/kept.removed.parquet", f"{tag}/kept.clusters.parquet"]
        r = measure(curate(cmd + common), ROOT, out / f"{tag}.out")
        if r["rc"] != 0:
            raise SystemExit(f"{tag} failed ({r['rc']}): {r['stderr']}")
        r.update(stage=stage, engine=engine, workers=w, files=files)
        runs.append(r)
        (out / "runs.json").write_text(json.dumps(runs, indent=1))  # what --report-only reads
        print(f"{tag:18} CPU {r['cpu_s']:7.1f} s  wall {r['wall_s']:7.1f} s  driver "
              f"{r['driver_mib']:6,.0f} MiB  largest other {r['other_mib']:6,.0f} MiB", file=sys.stderr,
              flush=True)
    body = report(n, raw, checked, corpus, out, runs, a.scale)
    print(body)
    if not a.no_write:
        from _results import write_section

        name = "ray" + ("" if n == 1_000_000 else f"-{n}") + ("" if len(stages) == 3 else "-" + "-".join(stages))
        write_section(name, "python3 benchmarks/bench_ray.py " + " ".join(sys.argv[1:]), body)


def sizes(corpus: Path) -> dict:
    """Per-row sizes measured on 20,000 rows of the corpus: a signed Block (what the object store holds until the
    decision), the id column the driver keeps, and the band records shuffled (distributed.band_split's 3 x uint64)."""
    import pyarrow.parquet as pq

    from curate.dedupe.config import DedupeConfig
    from curate.dedupe.distributed import BlockSettings, sign_block
    from curate.dedupe.minhash import choose_bands
    from curate.dedupe.signing import SignSettings

    cfg = DedupeConfig()
    bands, per_band = choose_bands(cfg.threshold, cfg.num_perm)
    cfg = cfg.model_copy(update={"bands": bands, "rows_per_band": per_band})
    table = pq.ParquetFile(corpus).iter_batches(20_000, columns=["id", "messages"]).__next__()
    settings = BlockSettings(SignSettings(cfg.on, frozenset(), cfg.shingle, cfg.ngram, cfg.hash, cfg.num_perm, cfg.seed,
                                          cfg.bands, cfg.rows_per_band, False), cfg.keep, tuple(cfg.origin_priority))
    import pyarrow as pa

    _, block = sign_block(settings, (0, pa.Table.from_batches([table]).drop_columns(["id"])))
    n = table.num_rows
    held = sum(a.nbytes for a in (block.exact, block.band, block.hash32, block.offsets)
               if a is not None) + (block.rule.nbytes if block.rule is not None else 0)
    return {"bands": cfg.bands, "block": held / n, "ids": table.column("id").nbytes / n, "record": 3 * 8}


def report(n: int, raw: Path, checked: Path, corpus: Path, out: Path, runs: list[dict], scale: bool = False) -> str:
    head = ("| stage | engine | workers | CPU s | wall s | records/s (wall) | driver peak MiB | largest other MiB | "
            "speed-up | scaling efficiency | outputs = local 1 worker |")
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["stage"]: r for r in runs if r["engine"] == "local" and r["workers"] == 1}
    one = {(r["stage"], r["engine"]): r for r in runs if r["workers"] == 1}
    for r in runs:
        ref = base.get(r["stage"])
        same = "-" if ref is None else "yes" if all((out / f).exists() and equal(out / f, out / g)
                                                    for f, g in zip(r["files"], ref["files"])) else "NO"
        first = one.get((r["stage"], r["engine"]))
        speed = f"{first['wall_s'] / r['wall_s']:.2f}x" if first else "-"
        eff = f"{first['wall_s'] / r['wall_s'] / r['workers']:.0%}" if first else "-"
        rows.append(f"| {r['stage']} | {r['engine']} | {r['workers']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | "
                    f"{n / r['wall_s']:,.0f} | {r['driver_mib']:,.0f} | {r['other_mib']:,.0f} | {speed} | "
                    f"{eff} | {same} |")
    made = ("scale_dedupe.py's corpus (a user turn a record, ~100 Zipf words, 20% planted copies)" if scale else
            "bench_dedupe.py's corpus with a 12-word reply (bench_raw.py)")
    kinds = {r["stage"] for r in runs}
    reads = [f"raw chat JSONL {raw.stat().st_size / 2**20:,.0f} MiB"
             + (" (ingest" + (", validate `--no-tokens`)" if "validate" in kinds and checked == raw else ")")
                if "ingest" in kinds or checked == raw else "")]
    if "validate" in kinds and checked != raw:
        reads.append(f"validate `--no-tokens` reads the same records with an assistant reply each (the user text's "
                     f"first 12 words; a user turn alone is quarantined), {checked.stat().st_size / 2**20:,.0f} MiB")
    if "dedupe" in kinds:
        reads.append(f"dedupe reads the local ingest's Parquet of it "
                     f"({(out / 'ingest_local1.parquet').stat().st_size / 2**20:,.0f} MiB, a row group per 4 MiB block "
                     "of JSONL)")
    intro = (
        f"Inputs: {n:,} records of {made}; " + "; ".join(reads) + ". Ray: a local "
        "instance of this machine's 2 cores, started by each command (its start-up is in the figures), so the "
        "'nodes' share the driver's cores, disk and page cache. The machine was shared with other work while this "
        "ran: compare CPU s more than wall. Speed-up and scaling efficiency are against the same engine's 1-worker run.")
    sign = next((r for r in runs if (r["stage"], r["engine"], r["workers"]) == ("dedupe", "ray", 2)), None)
    if sign is None:
        return "\n".join([intro, "", *rows])
    z = sizes(corpus)
    raw_row = raw.stat().st_size / n
    ing = (out / "ingest_local1.parquet").stat().st_size
    gib = 2**30

    def at(rows: float, nodes: int) -> str:
        band = z["record"] * rows / gib
        return (f"10^{len(str(int(rows))) - 1} on {nodes} nodes: {band:,.1f} GiB shuffled per band ({z['bands'] * band:,.0f} "
                f"GiB for {z['bands']} bands, {z['bands'] * band / nodes:,.0f} GiB through each node), blocks "
                f"{z['block'] * rows / nodes / gib:,.1f} GiB in each node's object store, the driver "
                f"{(z['ids'] + 1) * rows / gib:,.1f} GiB of ids and flags")

    note = (
        "How it grows (arithmetic from per-row sizes measured on this corpus, not a run): a signed block holds "
        f"{z['block']:,.0f} bytes a row in the object store until the decision; the shuffle moves one (band, key, row) "
        f"record of {z['record']} bytes per row and band, plus {z['record']} bytes a row of exact hashes; the driver "
        f"keeps the ids ({z['ids']:,.0f} bytes a row) and a flag a row while deciding, plus the edges. "
        f"{at(1e7, 4)}; {at(1e8, 16)}. The driver no longer reads the input (raw {raw_row:,.0f} bytes a record, "
        f"Parquet {ing / n:,.0f}) for ingest, validate of JSONL and dedupe's first pass; ingest's and validate's "
        "actors encode their output rows as Parquet parts that the driver appends to the one output file (every "
        "stage reads one file), and validate's rows stay in the object store; dedupe's writing pass still reads the "
        f"input again on the driver and encodes its outputs there. At the dedupe CPU measured here on Ray with 2 workers ({sign['cpu_s']:.0f} CPU s "
        f"per {n:,}), 10^8 records are ~{sign['cpu_s'] * 1e8 / n / 3600:,.1f} CPU hours.")
    return "\n".join([intro, "", *rows, "", note])


if __name__ == "__main__":
    main()
