"""Does curation help? The demo loop's raw-versus-curated comparison, repeated with several training seeds.

    python3 benchmarks/bench_loop.py                  # seeds 0 1 2; writes the `loop` section of RESULTS.md
    python3 benchmarks/bench_loop.py --seeds 0 --no-write

Each seed runs `curate run recipes/demo.yaml` in a work folder of its own with `train.seed` set to it
(the LoRA weights' start and the data order): the data stages give the same data every time, so what
moves between seeds is training alone. The recipe is the shipped demo, unchanged otherwise; nothing
here looks at the eval set to choose anything. Reported per seed: task accuracy (category and
priority both right) of base, raw and curated on the 60 held-out tickets, the category accuracy, and
curated minus raw with its paired bootstrap 95% interval over the 60 prompts. Wall and CPU seconds of
each run are measured around the whole `curate run` process (one core of threads: OMP_NUM_THREADS=1).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_seed(seed: int, work: Path) -> dict:
    recipe = ROOT / "recipes" / f".bench-loop-{seed}.yaml"
    text = (ROOT / "recipes" / "demo.yaml").read_text()
    recipe.write_text(text.replace("  max_steps: 60", f"  max_steps: 60\n  seed: {seed}", 1))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "curate.cli", "run", str(recipe.relative_to(ROOT)), "--workdir",
                        str(work)], cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        recipe.unlink()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ev = json.loads((work / "eval" / "eval.json").read_text())
    by = {v["data"]: v for v in ev["variants"]}
    gap = next(c for c in ev["comparisons"] if (c["a"], c["b"]) == ("curated", "raw"))
    return {"seed": seed, "wall": time.perf_counter() - t0,
            "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            **{f"{k}_task": by[k]["task_accuracy"] for k in ("base", "raw", "curated")},
            **{f"{k}_{f}": by[k]["fields"][f]["accuracy"] for k in ("raw", "curated") for f in ("category", "priority")},
            "raw_collapsed": by["raw"]["collapsed"], "difference": gap["difference"], "ci95": gap["ci95"],
            "prompts": gap["prompts"], "raw_rows": _raw_rows(work)}


def _raw_rows(work: Path) -> int:
    manifest = json.loads((work / "manifest.json").read_text())
    ingest = next(s for s in manifest["stages"] if s["name"] == "ingest")
    return ingest["outcome"]["roles"]["train"]["counts"]["kept"]


def table(rows: list[dict]) -> str:
    out = ["| seed | base | raw | curated | curated - raw (95% interval) | category raw / curated | priority raw / curated | wall s | CPU s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        out.append(f"| {r['seed']} | {r['base_task']:.3f} | {r['raw_task']:.3f} | {r['curated_task']:.3f} | "
                   f"{r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['raw_category']:.3f} / "
                   f"{r['curated_category']:.3f} | {r['raw_priority']:.3f} / {r['curated_priority']:.3f} | {r['wall']:.0f} | {r['cpu']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="curate-bench-loop-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(seed, Path(tmp) / f"seed{seed}"))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    real = sum(lo > 0 for lo, _ in (r["ci95"] for r in rows))
    body = (
        f"Task accuracy (category and priority both right) on the demo's {rows[0]['prompts']} held-out tickets, per "
        f"training seed. Base: SmolLM2-135M-Instruct; raw: LoRA on the data as ingested ({rows[0]['raw_rows']} rows); "
        "curated: the same settings on the curated data. The interval is a paired bootstrap over the "
        f"{rows[0]['prompts']} prompts (2,000 resamples).\n\n"
        + table(rows)
        + f"\n\nCurated beat raw by more than its interval in {real} of {len(rows)} seeds "
        f"(mean difference {sum(r['difference'] for r in rows) / len(rows):+.3f}).\n"
    )
    print(body)
    if not args.no_write:
        from _results import write_section

        write_section("loop", "python benchmarks/bench_loop.py" + (
            f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else ""), body)


if __name__ == "__main__":
    main()
