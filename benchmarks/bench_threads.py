"""Torch threads on a shared CPU: training step and eval generation times with 1 and 2 threads, idle and loaded.

    python3 benchmarks/bench_threads.py                        # writes the `threads` section of RESULTS.md
    python3 benchmarks/bench_threads.py --threads 1,2,auto --spinners 0,0.5,1 --repeat 2

For each load of spinners (processes running `while True: pass`, one core each; 0.5: one busy half of
every 10 ms; started and killed by this script) and each thread count, it runs the two commands below as
their own processes and reads the times they record: the mean optimizer step and the validation passes
from the run card, the generation from eval's summary. Other processes on the machine are not
controlled: the load they and the spinners put on the cores during each run is measured (/proc/stat
minus the command's own CPU) and reported.

    curate train examples/train/people.jsonl -o TMP --max-steps 8 --grad-accum 1 --eval-steps 4 --save-steps 4
    curate eval --data examples/train/heldout.jsonl --limit 6 --max-new-tokens 24
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TRAIN = ["train", "examples/train/people.jsonl", "--max-steps", "8", "--grad-accum", "1", "--eval-steps", "4",
         "--save-steps", "4", "--no-resume"]
EVAL = ["eval", "--data", "examples/train/heldout.jsonl", "--limit", "6", "--max-new-tokens", "24"]


def _env() -> dict[str, str]:
    # the thread count comes from --threads alone
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def measured(argv: list[str]) -> tuple[dict, float, float]:
    """(the command's --json document, its wall seconds, the cores other processes kept busy meanwhile)."""
    from curate.train.threads import _cpu_ticks

    cpus = os.sched_getaffinity(0)
    b0, t0 = _cpu_ticks(cpus)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "curate.cli", *argv, "--json"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - w0
    b1, t1 = _cpu_ticks(cpus)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stderr[-3000:]}")
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    busy = (b1 - b0) / (t1 - t0) * len(cpus)
    return json.loads(res.stdout), wall, round(max(0.0, busy - own / wall), 2)


def one(threads: str, tmp: Path) -> dict:
    run = tmp / f"run-{threads}"
    _, tr_wall, tr_load = measured([*TRAIN, "-o", str(run), "--threads", threads])
    card = json.loads((run / "run_card.json").read_text())
    ev, ev_wall, ev_load = measured([*EVAL, "--threads", threads])
    m = card["metrics"]
    return {"threads": threads, "chosen": card["hardware"]["threads"]["count"],
            "train_load": tr_load, "step_s": m["step_seconds"], "validation_s": m["eval_seconds"],
            "train_wall_s": round(tr_wall, 1), "eval_load": ev_load, "eval_chosen": ev["threads"]["count"],
            "generate_s": ev["seconds"]["generate"], "eval_wall_s": round(ev_wall, 1)}


SPIN = "while True: pass"
# busy for `share` of every 10 ms, asleep for the rest
PART = ("import sys, time\nshare = float(sys.argv[1])\nwhile True:\n    t = time.perf_counter()\n"
        "    while time.perf_counter() - t < 0.01 * share: pass\n    time.sleep(0.01 * (1 - share))\n")


def spin(load: float) -> list[subprocess.Popen]:
    """Processes keeping `load` cores busy: one spinner per whole core, one busy part of the time for the rest."""
    whole, part = int(load), round(load - int(load), 2)
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(whole)]
    if part:
        procs.append(subprocess.Popen([sys.executable, "-c", PART, str(part)]))
    return procs


def bench(thread_settings: list[str], spinners: list[float], repeat: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in spinners:
            procs = spin(n)
            try:
                time.sleep(1)
                for _ in range(repeat):
                    for t in thread_settings:
                        row = {"spinners": n, **one(t, Path(d))}
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        rows.append(row)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    return rows


def table(rows: list[dict]) -> str:
    head = ("| spinners | other load, train (cores) | threads | train step s | validation passes s | train wall s "
            "| other load, eval (cores) | eval generation s | eval wall s |\n|---|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        t = r["threads"] if r["threads"] != "auto" else f"auto ({r['chosen']} / eval {r['eval_chosen']})"
        body += (f"| {r['spinners']:g} | {r['train_load']:.2f} | {t} | {r['step_s']:.2f} | {r['validation_s']:.1f} | "
                 f"{r['train_wall_s']:.1f} | {r['eval_load']:.2f} | {r['generate_s']:.1f} | {r['eval_wall_s']:.1f} |\n")
    return head + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2,auto", help="thread settings to compare (comma-separated)")
    ap.add_argument("--spinners", default="0,0.5,1",
                    help="cores kept busy by spinners beside the command (comma-separated; 0.5: busy half the time)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print the table; leave RESULTS.md alone")
    a = ap.parse_args()
    before = os.getloadavg()
    rows = bench(a.threads.split(","), [float(x) for x in a.spinners.split(",")], a.repeat)
    text = table(rows)
    print(text)
    if a.no_write:
        return
    from _results import write_section

    cmd = "python3 benchmarks/bench_threads.py " + " ".join(sys.argv[1:])
    notes = (
        f"Commands: `curate {' '.join(TRAIN)} -o RUN --threads N` and `curate {' '.join(EVAL)} --threads N` "
        "(SmolLM2-135M-Instruct on CPU, each its own process). *spinners*: processes running `while True: pass` "
        "beside it (0.5: one busy 5 ms of every 10 ms); *other load*: cores kept busy by every other process "
        "(spinners and whatever else ran on the shared machine) during that command, from /proc/stat minus "
        "the command's own CPU time. *train step*: mean optimizer step (batch 4, evaluations and saves left "
        "out); *validation passes*: the three evaluations (before training, steps 4 and 8) together. "
        f"Load average before the run: {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}.\n\n"
    )
    write_section("threads", cmd, notes + text)


if __name__ == "__main__":
    main()
