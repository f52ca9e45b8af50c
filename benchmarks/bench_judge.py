"""Calibrate the judge for real: the embedded teacher (SmolLM2-135M on llama.cpp) on the hand labels of
examples/judge/labels.jsonl, twice each (self-agreement), and on the first N preference pairs of
../shared/data/hiyouga__LLaMA-Factory__dpo_en_demo.json (chosen vs rejected).

Measured: every agreement measure of curate.score.calibrate, the requests (sent, invalid replies), and the
time: wall, and CPU (user + system) of this process and of its children (the llama.cpp server is one; its
time is counted once it has exited, which calibrate() waits for). The cache is a fresh temporary folder
unless --cache is given, so every request is really sent.

    python benchmarks/bench_judge.py [--teacher local] [--temperature 0.7] [--pairs 10] [--max-chars 3000]
        [--cache DIR] [--json OUT] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_section
from curate.score.calibrate import calibrate, format_calibration

PAIRS = ROOT.parent / "shared" / "data" / "hiyouga__LLaMA-Factory__dpo_en_demo.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="local")
    ap.add_argument("--base-url")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--pairs", type=int, default=10, help="preference pairs to judge (0: none)")
    ap.add_argument("--max-chars", type=int, default=3000)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--labels", default=str(ROOT / "examples" / "judge" / "labels.jsonl"))
    ap.add_argument("--cache")
    ap.add_argument("--json", help="write the whole report here")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    settings = {"teacher": args.teacher, "base_url": args.base_url, "temperature": args.temperature,
                "max_chars": args.max_chars, "max_tokens": args.max_tokens, "concurrency": 1}
    settings = {k: v for k, v in settings.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        t0, c0 = time.perf_counter(), os.times()
        report = calibrate(args.labels, settings, cache, pairs=PAIRS if args.pairs else None, max_pairs=args.pairs)
        wall, c1 = time.perf_counter() - t0, os.times()
    own = c1.user - c0.user + c1.system - c0.system
    children = c1.children_user - c0.children_user + c1.children_system - c0.children_system
    report["time"] = {"wall_s": round(wall, 1), "cpu_self_s": round(own, 1), "cpu_children_s": round(children, 1)}
    text = format_calibration(report)
    c = report["counts"]
    pc = (report["pairs"] or {}).get("counts") or {}
    requests = int(c["requests"]) + int(pc.get("requests", 0))
    timing = (f"time: {wall:.0f} s wall, CPU {own:.0f} s (curate) + {children:.0f} s (the teacher server) for "
              f"{requests} judge requests ({int(c['sent']) + int(pc.get('sent', 0))} sent); the machine was shared")
    print(text + "\n" + timing)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if not args.no_write:
        dis = "\n".join(f"| {d['line']} | {d['label']} | {d['samples']} | {d['why']} | {d['reason'][:80]} |"
                        for d in report["disagreements"][:6])
        body = (f"```\n{text}\n{timing}\n```\n\nLargest disagreements with the hand labels (line, label, judge's "
                f"samples, why the label, the judge's reason):\n\n| line | label | samples | why | judge |\n"
                f"|---|---|---|---|---|\n{dis}\n")
        cmd = "python benchmarks/bench_judge.py " + " ".join(sys.argv[1:])
        write_section("judge", cmd.strip(), body)


if __name__ == "__main__":
    main()
