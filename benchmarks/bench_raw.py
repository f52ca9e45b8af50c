"""From raw JSONL at full speed: curate's ingest, validate and dedupe on 1 worker and on all cores, beside the
rensa and datasketch reference pipelines and pyarrow's JSON reader, on one raw file, in one run.

    python3 benchmarks/bench_raw.py                        # 1M records, writes RESULTS.md (section raw)
    python3 benchmarks/bench_raw.py --rows 100000 --no-write

The corpus is bench_dedupe.py's seeded one (~100 Zipf words a record, 20% planted copies with known
substitution rates), written as raw OpenAI chat JSONL: the text as the user turn, a short reply from its
first words as the assistant turn. Every measurement is its own process tree, run one after another:
CPU is user + system of the whole tree (pool workers included), peak RSS the largest sum over the
tree's processes (sampled every 50 ms, psutil), wall the elapsed time. The machine is shared, so CPU is
the figure to compare; the load average before each run is shown. Outputs of 1 and N workers are
compared row for row (ingest, validate's valid and quarantine files, dedupe's kept, removed, clusters).
The references get the texts the way their documented pipelines would from this file: parse each line
with Python's json, take the user turn (bench_dedupe.py's worker, fed from the JSONL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dedupe import CACHE, make_corpus, prf
from bench_validate import measure

GIB = 1024


def make_raw(n: int) -> tuple[Path, object]:
    """(raw chat JSONL of the n-record corpus, its duplicate truth); the file is written once and cached."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    corpus, truth = make_corpus(n)
    raw = CACHE / f"raw_chat_{n}.jsonl"
    if raw.exists():
        return raw, truth
    tmp = raw.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for b in pq.ParquetFile(corpus).iter_batches(50_000, columns=["messages"]):
            for t in pc.list_flatten(b.column(0)).field("content").to_pylist():
                reply = "Noted: " + " ".join(t.split()[:12]) + "."
                f.write(json.dumps({"messages": [{"role": "user", "content": t},
                                                 {"role": "assistant", "content": reply}]}) + "\n")
    tmp.rename(raw)
    return raw, truth


REFERENCE = r"""
import json, sys, numpy as np
sys.path.insert(0, {bench!r})
from bench_dedupe import run_datasketch, run_rensa
texts = []
with open({raw!r}, encoding="utf-8") as f:
    for line in f:
        texts.append(next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"))
removed, _ = (run_datasketch if {name!r} == "datasketch" else run_rensa)(texts)
np.save({out!r}, removed)
"""

FLOOR = r"""
import pyarrow as pa, pyarrow.json as pj
t = pj.read_json({raw!r}, read_options=pj.ReadOptions(use_threads=False, block_size=1 << 24))
print(t.num_rows)
"""


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def curate(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *args]


def same_parquet(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    return pq.read_table(a).equals(pq.read_table(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=None, help="the 'all cores' count (default: the usable cores)")
    ap.add_argument("--skip", default="", help="comma-separated runs to leave out: datasketch, rensa, tokens")
    ap.add_argument("--only", default="", help="comma-separated runs to keep (floor, ingest, validate, tokens, dedupe, "
                                               "rensa, datasketch); written to the section raw-ONLY")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    from curate.engine import usable_cores

    n, cores = a.rows, a.workers or usable_cores()
    skip = set(filter(None, a.skip.split(",")))
    raw, truth = make_raw(n)
    out = CACHE / f"bench_raw_{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    plan: list[tuple[str, str, list[str]]] = [
        ("floor", "pyarrow.json.read_json, one thread", [sys.executable, "-c", FLOOR.format(raw=str(raw))]),
    ]
    # 1 worker also pinned to one core (taskset): its writer thread otherwise takes a second core
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and cores > 1 else None
    for w in (1, cores):
        plan.append((f"ingest{w}", f"curate ingest --workers {w}",
                     curate(["ingest", str(raw), "-o", str(out / f"ingest{w}.parquet"), "--workers", str(w)])))
    if pin:
        plan.insert(-1, ("ingest1pin", "curate ingest --workers 1, on one core",
                         pin + curate(["ingest", str(raw), "-o", str(out / "ingest1pin.parquet"), "--workers", "1"])))
    for w in (1, cores):
        plan.append((f"validate{w}", f"curate validate --no-tokens --workers {w}",
                     curate(["validate", str(raw), "--no-tokens", "--max-error-rate", "1", "--workers", str(w),
                             "-o", str(out / f"valid{w}.parquet"), "--quarantine", str(out / f"quar{w}.parquet")])))
    if pin:
        plan.insert(-1, ("validate1pin", "curate validate --no-tokens --workers 1, on one core",
                         pin + curate(["validate", str(raw), "--no-tokens", "--max-error-rate", "1", "--workers", "1",
                                       "-o", str(out / "valid1pin.parquet"),
                                       "--quarantine", str(out / "quar1pin.parquet")])))
    if "tokens" not in skip:
        for w in (1, cores):
            plan.append((f"tokens{w}", f"curate validate --tokens --workers {w}",
                         curate(["validate", str(raw), "--tokens", "--max-error-rate", "1", "--workers", str(w),
                                 "-o", str(out / f"tvalid{w}.parquet"),
                                 "--quarantine", str(out / f"tquar{w}.parquet")])))
    for w in (1, cores):
        plan.append((f"dedupe{w}", f"curate dedupe --workers {w}",
                     curate(["dedupe", str(raw), "-o", str(out / f"dedupe{w}" / "kept.parquet"), "--workers", str(w),
                             "--json"])))
    # the path `curate run` takes: dedupe of validate's output Parquet (the raw file is converted once, by validate)
    plan.append(("dedupev1", "curate dedupe of validate's output --workers 1",
                 curate(["dedupe", str(out / "valid1.parquet"), "-o", str(out / "dedupev1" / "kept.parquet"),
                         "--workers", "1", "--json"])))
    for name in ("rensa", "datasketch"):
        if name not in skip:
            plan.append((name, f"{name} reference pipeline (dedupe only)",
                         [sys.executable, "-c", REFERENCE.format(bench=str(ROOT / "benchmarks"), raw=str(raw),
                                                                 name=name, out=str(out / f"{name}.npy"))]))
    only = set(filter(None, a.only.split(",")))
    if only:
        plan = [x for x in plan if x[0].removesuffix("pin").rstrip("0123456789") in only
                or x[0] == "dedupev1" and {"validate", "dedupe"} <= only]
    res: dict[str, dict] = {}
    for key, label, cmd in plan:
        before = load()
        r = measure(cmd, ROOT, out / f"{key}.out")
        r["label"], r["load"] = label, before
        if r["rc"] != 0:
            raise SystemExit(f"{label} failed ({r['rc']}): {r['stderr']}")
        res[key] = r
        print(f"{label:45} CPU {r['cpu_s']:7.1f} s  wall {r['wall_s']:7.1f} s  RSS {r['rss_sum_mib']:7,.0f} MiB  "
              f"(load {before})", file=sys.stderr, flush=True)

    # outputs for 1 and N workers
    equal = {}
    if "ingest1" in res:
        equal["ingest"] = same_parquet(out / "ingest1.parquet", out / f"ingest{cores}.parquet")
        equal["ingest, byte for byte"] = (out / "ingest1.parquet").read_bytes() == (out / f"ingest{cores}.parquet").read_bytes()
    if "validate1" in res:
        equal["validate"] = all(same_parquet(out / f"{k}1.parquet", out / f"{k}{cores}.parquet") for k in ("valid", "quar"))
    if "dedupe1" in res:
        equal["dedupe"] = all(same_parquet(out / "dedupe1" / f, out / f"dedupe{cores}" / f)
                              for f in os.listdir(out / "dedupe1") if f.endswith(".parquet"))
    if "tokens1" in res:
        equal["validate --tokens"] = all(same_parquet(out / f"t{k}1.parquet", out / f"t{k}{cores}.parquet")
                                         for k in ("valid", "quar"))
    quality = {}
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if "dedupe1" in res:
        removed = np.zeros(n, dtype=bool)
        summary = json.loads((out / "dedupe1.out").read_text())
        lines = pc.struct_field(pq.read_table(summary["outputs"]["removed"], columns=["source"]).column(0), "line")
        removed[np.asarray(lines, dtype=np.int64) - 1] = True
        quality["curate"] = prf(removed, truth)
    for name in ("rensa", "datasketch"):
        if (out / f"{name}.npy").exists():
            quality[name] = prf(np.load(out / f"{name}.npy"), truth)
    tok = tokenizer_overhead_raw(raw) if "tokens" not in skip and (not only or "tokens" in only) else None

    body = report(n, raw, cores, res, equal, quality, tok)
    print(body)
    if not a.no_write:
        from _results import write_section

        name = "raw-" + "-".join(sorted(only)) if only else "raw"
        write_section(name, "python3 benchmarks/bench_raw.py " + " ".join(sys.argv[1:]), body)


def tokenizer_overhead_raw(raw: Path, records: int = 50_000) -> dict:
    """validate's token check against the tokenizer's own batch speed on the same rendered texts (lowest of 3)."""
    import itertools

    from curate.embedded import load_tokenizer, template_messages
    from curate.validate.tokens import TokenCheck

    tok = load_tokenizer("embedded")
    with open(raw, encoding="utf-8") as f:
        recs = [(json.loads(line)["messages"], None) for line in itertools.islice(f, records)]
    texts = [tok.apply_chat_template(template_messages(m), tokenize=False) for m, _ in recs]
    check, batch = TokenCheck(tok), 4_096
    best: dict[str, float] = {}
    for _ in range(3):
        t = time.process_time()
        for i in range(0, len(recs), batch):
            check.count(recs[i : i + batch])
        best["check"] = min(best.get("check", 1e9), time.process_time() - t)
        t = time.process_time()
        for i in range(0, len(texts), batch):
            tok(texts[i : i + batch], add_special_tokens=False)
        best["tokenizer"] = min(best.get("tokenizer", 1e9), time.process_time() - t)
    tokens = sum(len(e) for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False))
    return {"records": len(recs), "tokens": tokens, "check": best["check"], "tokenizer": best["tokenizer"],
            "ratio": best["check"] / best["tokenizer"]}


def report(n: int, raw: Path, cores: int, res: dict, equal: dict, quality: dict, tok: dict | None) -> str:
    rows = ["| command | CPU s | of it the parent's | wall s | peak RSS MiB | load before | records/s (CPU) |",
            "|---|---|---|---|---|---|---|"]
    for r in res.values():
        rows.append(f"| {r['label']} | {r['cpu_s']:.1f} | {r['parent_cpu_s']:.1f} | {r['wall_s']:.1f} | "
                    f"{r['rss_sum_mib']:,.0f} | {r['load']} | {n / r['cpu_s']:,.0f} |")
    lines = [
        f"Corpus: {n:,} records of raw OpenAI chat JSONL ({raw.stat().st_size / 2**20:,.0f} MiB; bench_dedupe.py's seeded "
        "texts as the user turn, a 12-word reply), on a machine of "
        f"{os.cpu_count()} cores; all cores = {cores} workers. Each command is its own process tree; CPU = user+sys of the "
        "tree, peak RSS = the largest sum of the tree's resident memory (psutil, 50 ms).",
        "", *rows, "",
    ]
    t = []
    if "rensa" in res and "validate1" in res and "dedupev1" in res:
        both = res["validate1"]["cpu_s"] + res["dedupev1"]["cpu_s"]
        t.append(f"- validate (structure) of raw JSONL, then dedupe of its output (as `curate run` does), 1 worker, "
                 f"{both:.1f} CPU s, less than rensa's dedupe alone ({res['rensa']['cpu_s']:.1f} CPU s): "
                 f"{'met' if both < res['rensa']['cpu_s'] else 'MISSED'}")
        if "dedupe1" in res:
            again = res["validate1"]["cpu_s"] + res["dedupe1"]["cpu_s"]
            t.append(f"  - with dedupe reading the raw file again instead (converting it a second time): {again:.1f} "
                     f"CPU s: {'met' if again < res['rensa']['cpu_s'] else 'MISSED'}")
    ours = [r for k, r in res.items() if k.rstrip("0123456789") in ("ingest", "validate", "tokens", "dedupe", "dedupev")]
    worst = max(ours, key=lambda r: r["rss_sum_mib"]) if ours else None
    if worst:
        t.append(f"- every curate command at most 2 GiB peak RSS at this size: largest {worst['rss_sum_mib']:,.0f} MiB "
                 f"({worst['label']}): {'met' if worst['rss_sum_mib'] <= 2 * GIB else 'MISSED'}")
    if cores > 1:
        for stage in ("ingest", "validate", "tokens", "dedupe"):
            if f"{stage}1" in res and f"{stage}{cores}" in res:
                x = res[f"{stage}{cores}"]["wall_s"] / res[f"{stage}1"]["wall_s"]
                t.append(f"- {res[f'{stage}{cores}']['label']}: wall {x:.2f}x the 1-worker wall (target <= 0.6x): "
                         f"{'met' if x <= 0.6 else 'MISSED'}")
                if f"{stage}1pin" in res:
                    y = res[f"{stage}{cores}"]["wall_s"] / res[f"{stage}1pin"]["wall_s"]
                    t.append(f"  - against 1 worker on one core: {y:.2f}x")
                par = res[f"{stage}{cores}"]
                if stage == "dedupe":  # its workers are threads of the parent: its CPU is theirs too, no bound
                    continue
                t.append(f"  - the parent's own CPU (its writer thread included; what more workers cannot spread): "
                         f"{par['parent_cpu_s']:.1f} of {par['cpu_s']:.1f} CPU s, so on any number of cores the wall "
                         f"stays above {par['parent_cpu_s']:.1f} s, at best {res[f'{stage}1']['wall_s'] / max(par['parent_cpu_s'], 1e-9):.1f}x "
                         "faster than 1 worker")
    if tok:
        t.append(f"- token check within 1.2x the tokenizer's own batch speed on the rendered text: {tok['ratio']:.2f}x "
                 f"({tok['records']:,} records, {tok['tokens']:,} tokens; check {tok['check']:.2f} CPU s, tokenizer "
                 f"{tok['tokenizer']:.2f} CPU s = {tok['tokens'] / tok['tokenizer']:,.0f} tokens/s): "
                 f"{'met' if tok['ratio'] <= 1.2 else 'MISSED'}")
    lines += ["Targets:", "", *t, "",
              "Outputs of 1 and " + str(cores) + " workers equal, row for row: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in equal.items()) + "."]
    if quality:
        lines += ["", "Dedupe quality against the exact 5-gram Jaccard >= 0.8 truth (precision / recall / F1): "
                  + "; ".join(f"{k} {p:.3f} / {r:.3f} / {f:.3f}" for k, (p, r, f) in quality.items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
