"""Semantic dedupe at scale: `curate dedupe --semantic` end to end against its floor, the embedder alone.

    python3 benchmarks/bench_semantic.py                    # 100k rows, writes RESULTS.md (section dedupe-semantic)
    python3 benchmarks/bench_semantic.py --rows 5000 --no-write
    python3 benchmarks/bench_semantic.py --rows 10000 --side-by-side --scale 25000,50000,100000,1000000

The corpus is real text cut into rows: every string of the Alpaca, LIMA, Code Alpaca and DPO demo files and the
MT-Bench and self-instruct seed questions (../shared/data), and the 2,500 news articles of the MinHash test set,
split into consecutive windows of 8-20 words (a text shorter than that, of 3 words or more, is one row), so no two original rows share
a word position. A seeded share of rows are planted copies of an earlier row: exact copies (MinHash removes them
before the semantic pass) and light edits (one word dropped, two neighbouring words swapped, or lower-cased with
the punctuation stripped), which a 20-word row's 5-gram Jaccard puts below 0.8 and its embedding does not.

Each measurement is a child process of its own, so its CPU time and peak RSS are its own (from the kernel's
accounting, RUSAGE_SELF at the child's end), all with one BLAS/OpenMP thread:
  1. embed: the embedder alone on every row's key text (the floor: no dedupe can be faster than embedding);
  2. search: the candidate search alone on those vectors: exact (tiled) and faiss's inverted-file index, whose
     recall is measured against the exact pairs;
  3. dedupe: `curate dedupe CORPUS -o OUT --semantic --json` end to end, through the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
CACHE = Path(os.environ.get("CURATE_BENCH_DIR", "/tmp/curate_bench"))
JSON_FILES = ["hiyouga__LLaMA-Factory__alpaca_en_demo.json", "hiyouga__LLaMA-Factory__lima.json",
              "hiyouga__LLaMA-Factory__dpo_en_demo.json", "sahil280114__codealpaca__code_alpaca_2k.json"]
JSONL_FILES = ["tatsu-lab__stanford_alpaca__seed_tasks.jsonl", "lm-sys__FastChat__question.jsonl"]
ARTICLES = "chrisjmccormick__MinHash__articles_2500.train"
EXACT_SHARE, EDIT_SHARE = 0.01, 0.04
EDITS = ("drop a word", "swap two words", "lower case, no punctuation")
PROBES = (1, 4, 16, 64)


def _strings(x: object):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def real_texts() -> list[str]:
    """Every distinct string of three words or more of the real files, in file order."""
    seen: dict[str, None] = {}
    for name in JSON_FILES:
        seen.update(dict.fromkeys(_strings(json.loads((DATA / name).read_text()))))
    for name in JSONL_FILES:
        for line in (DATA / name).read_text().splitlines():
            seen.update(dict.fromkeys(_strings(json.loads(line))))
    for line in (DATA / ARTICLES).read_text().splitlines():
        seen[line.split(" ", 1)[1] if " " in line else line] = None
    return [t for t in seen if len(t.split()) >= 3]  # not ids, roles or categories ("seed_task_7", "gpt", "writing")


def windows(texts: list[str], rng: np.random.Generator) -> list[str]:
    """Consecutive, non-overlapping windows of 8-20 words of each text."""
    out = []
    for t in texts:
        words = t.split()
        at = 0
        while at < len(words):
            k = int(rng.integers(8, 21))
            out.append(" ".join(words[at: at + k]))
            at += k
    return out


def edit(text: str, kind: int, rng: np.random.Generator) -> str:
    words = text.split()
    if kind == 0 and len(words) > 3:
        del words[int(rng.integers(len(words)))]
    elif kind == 1 and len(words) > 3:
        k = int(rng.integers(len(words) - 1))
        words[k], words[k + 1] = words[k + 1], words[k]
    else:
        return re.sub(r"[^\w\s]", "", text).lower()
    return " ".join(words)


def make_corpus(n: int, seed: int = 0) -> tuple[Path, Path]:
    """(canonical Parquet of n rows, .npy of each row's plan: -1 original, else 10 * source row + kind, kind 0 an
    exact copy and 1 + k the edit EDITS[k])."""
    path, plan_path = CACHE / f"semantic_{n}.parquet", CACHE / f"semantic_{n}_plan.npy"
    if path.exists() and plan_path.exists():
        return path, plan_path
    import pyarrow.parquet as pq

    from curate.dataset import make_row, rows_to_table

    rng = np.random.default_rng(seed)
    pool = windows(real_texts(), rng)
    pool = list(dict.fromkeys(pool))
    is_copy = rng.random(n) < EXACT_SHARE + EDIT_SHARE
    is_copy[0] = False
    originals = int((~is_copy).sum())
    if originals > len(pool):
        raise SystemExit(f"the real files give {len(pool):,} distinct windows; {n:,} rows need {originals:,} originals")
    order = rng.permutation(len(pool))[:originals]
    texts: list[str] = []
    plan = np.full(n, -1, dtype=np.int64)
    taken = 0
    for r in range(n):
        if not is_copy[r]:
            texts.append(pool[order[taken]])
            taken += 1
            continue
        src = int(rng.integers(r))
        while plan[src] >= 0:  # copies are of originals
            src = int(rng.integers(r))
        kind = 0 if rng.random() < EXACT_SHARE / (EXACT_SHARE + EDIT_SHARE) else 1 + int(rng.integers(len(EDITS)))
        texts.append(texts[src] if kind == 0 else edit(texts[src], kind - 1, rng))
        plan[r] = 10 * src + kind
    rows = [make_row([{"role": "user", "content": t}], origin="synthetic") for t in texts]
    for r, row in enumerate(rows):  # ids name the corpus row, so the removed rows map back to the plan
        row["id"] = f"s{r:07d}"
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(rows_to_table(rows), tmp)
    tmp.rename(path)
    np.save(plan_path, plan)
    return path, plan_path


def _usage(t0: float) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - t0, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def stage_embed(corpus: Path, n: int) -> dict:
    """The embedder alone on the rows' key texts; the vectors are saved for the search stage."""
    import pyarrow.parquet as pq

    from curate.dedupe.semantic import key_texts
    from curate.report.embed import load_embedder

    t0 = time.perf_counter()
    texts = key_texts(pq.read_table(corpus), "user")
    t_texts = time.perf_counter() - t0
    embedder = load_embedder("auto")
    vecs, = embedder.embed_sets([texts])
    np.save(CACHE / f"semantic_{n}_vecs.npy", vecs)
    return {**_usage(t0), "texts_s": t_texts, "embedder": embedder.describe()["name"],
            "chars": float(np.mean([len(t) for t in texts]))}


def stage_search(n: int, threshold: float, probes: tuple[int, ...]) -> dict:
    """The candidate search alone: exact (tiled), then faiss IVF at each probe count, recall against exact."""
    from curate.dedupe.semantic import ann_pairs, candidate_pairs, ivf_cells
    from curate.report.embed import single_blas_thread

    vecs = np.load(CACHE / f"semantic_{n}_vecs.npy")
    out: dict = {"rows": n, "cells": ivf_cells(n), "ann": []}
    t0, c0 = time.perf_counter(), time.process_time()
    with single_blas_thread():
        i, j, _ = candidate_pairs(vecs, threshold)
    out["exact"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pairs": len(i),
                    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    truth = set((i * n + j).tolist())
    try:
        import faiss  # noqa: F401
    except ImportError:
        return out
    for p in probes:
        t0, c0 = time.perf_counter(), time.process_time()
        with single_blas_thread():
            a, b, _ = ann_pairs(vecs, threshold, nprobe=p)
        found = set((a * n + b).tolist())
        out["ann"].append({"probes": p, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                           "pairs": len(found), "recall": len(found & truth) / len(truth) if truth else 1.0,
                           "false": len(found - truth)})
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def stage_scale(n: int, threshold: float) -> dict:
    """The search alone on n seeded random unit vectors of 384 dimensions (MiniLM's): exact, then faiss at the
    default probes. Such vectors have no close pairs, so this is the search's cost with nothing to report."""
    from curate.dedupe.semantic import NPROBE, ann_pairs, candidate_pairs
    from curate.report.embed import single_blas_thread

    rng = np.random.default_rng(n)
    vecs = np.empty((n, 384), dtype=np.float32)
    for r in range(0, n, 100_000):
        block = rng.normal(size=(min(100_000, n - r), 384)).astype(np.float32)
        vecs[r: r + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict = {"rows": n, "vectors_mib": vecs.nbytes / 2**20, "rss_before_mib": base}
    if n <= 100_000:
        t0, c0 = time.perf_counter(), time.process_time()
        with single_blas_thread():
            i, _, _ = candidate_pairs(vecs, threshold)
        out["exact"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pairs": len(i),
                        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import faiss  # noqa: F401
    except ImportError:
        return out
    t0, c0 = time.perf_counter(), time.process_time()
    with single_blas_thread():
        i, _, _ = ann_pairs(vecs, threshold)
    out["ann"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pairs": len(i), "probes": NPROBE,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def stage_dedupe(corpus: Path, n: int) -> dict:
    """`curate dedupe CORPUS -o OUT --semantic --json` in this process (click, standalone off); the summary file."""
    from curate.cli import cli

    out = CACHE / f"semantic_out_{n}.parquet"
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        saved, sys.stdout = sys.stdout, null
        try:
            cli.main(["dedupe", str(corpus), "-o", str(out), "--semantic", "--json"], standalone_mode=False)
        finally:
            sys.stdout = saved
    summary = json.loads(out.with_suffix(".dedupe.json").read_text())
    return {**_usage(t0), "summary": {k: v for k, v in summary.items() if k != "semantic"},
            "semantic": {k: v for k, v in summary["semantic"].items() if k not in ("pairs", "eval_pairs")},
            "removed": str(out.with_suffix(".removed.parquet"))}


def start(stage: str, a: argparse.Namespace) -> subprocess.Popen | None:
    """Start one stage in a fresh process (one BLAS/OpenMP thread); `finish` reads its measurement. A stage named in
    --reuse whose measurement is on file is not run again."""
    if stage in a.reuse and (CACHE / f"semantic_{a.rows}_{stage}.json").exists():
        return None
    cmd = [sys.executable, __file__, "--rows", str(a.rows), "--stage", stage, "--threshold", str(a.threshold),
           "--probes", ",".join(map(str, a.probes))]
    if a.cores and Path("/usr/bin/taskset").exists():
        cmd = ["taskset", "-c", a.cores] + cmd
    print(f"  {stage} ...", file=sys.stderr, flush=True)
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})


def finish(stage: str, proc: subprocess.Popen | None, a: argparse.Namespace) -> dict:
    if proc is not None and proc.wait() != 0:
        raise SystemExit(f"stage {stage} failed ({proc.returncode})")
    return json.loads((CACHE / f"semantic_{a.rows}_{stage}.json").read_text())


def planted(removed_path: str, plan: np.ndarray) -> dict:
    """How the run's removals follow the plan: copies of each kind removed, originals removed."""
    import pyarrow.parquet as pq

    t = pq.read_table(removed_path, columns=["id", "dedupe_reason"]).to_pydict()
    gone = {int(i[1:]): r for i, r in zip(t["id"], t["dedupe_reason"])}
    kind = np.where(plan >= 0, plan % 10, -1)
    out = {"originals_removed": sum(1 for r in gone if kind[r] < 0)}
    for k, name in enumerate(("exact copy",) + EDITS):
        rows = np.flatnonzero(kind == k)
        out[name] = (sum(1 for r in rows.tolist() if r in gone), len(rows),
                     sum(1 for r in rows.tolist() if gone.get(r) == "semantic"))
    return out


def report(a: argparse.Namespace, corpus: Path, plan: np.ndarray, emb: dict, srch: dict, dd: dict | None) -> str:
    n = a.rows
    rate = lambda s: n / s if s else float("nan")
    lines = [
        (f"Corpus: {n:,} rows of real text ({corpus.stat().st_size / 2**20:.1f} MiB Parquet; key texts "
         f"{emb['chars']:.0f} characters on average): windows of 8-20 words of the Alpaca, LIMA, Code Alpaca, DPO demo, "
         f"MT-Bench and self-instruct files and the MinHash set's 2,500 news articles (../shared/data); "
         f"{EXACT_SHARE:.0%} planted exact copies and {EDIT_SHARE:.0%} planted light edits of an earlier row "
         f"({', '.join(EDITS)})."),
        (f"Each line is one child process with one BLAS/OpenMP thread{f' pinned to core(s) {a.cores}' if a.cores else ''}"
         f"{' (the end-to-end one run at the same time as the other two)' if a.side_by_side else ''}; "
         "CPU is user+sys and peak RSS the kernel's, of that process alone. The machine (2 cores) was shared with "
         "other jobs, so wall can exceed CPU."),
        "",
        "| what | rows | wall s | CPU s | rows/s (CPU) | peak RSS MiB |",
        "|---|---|---|---|---|---|",
        (f"| embedder alone ({emb['embedder']}, the floor) | {n:,} | {emb['wall']:.1f} | {emb['cpu']:.1f} | "
         f"{rate(emb['cpu']):,.0f} | {emb['rss_mib']:,.0f} |"),
        (f"| exact candidate search alone (tiled, {srch['exact']['pairs']:,} pairs >= {a.threshold}) | {n:,} | "
         f"{srch['exact']['wall']:.1f} | {srch['exact']['cpu']:.1f} | {rate(srch['exact']['cpu']):,.0f} | "
         f"{srch['exact']['rss_mib']:,.0f} |"),
    ]
    if dd is None:
        lines += ["", "`curate dedupe --semantic` end to end was not run at this size (--stages)."]
    else:
        sem, summ = dd["semantic"], dd["summary"]
        how = sem["search"]
        p = planted(dd["removed"], plan)
        minhash = summ["counts"]["rejected"] - summ["reasons"]["semantic"]
        lines += [
            (f"| `curate dedupe --semantic` end to end | {n:,} | {dd['wall']:.1f} | {dd['cpu']:.1f} | "
             f"{rate(dd['cpu']):,.0f} | {dd['rss_mib']:,.0f} |"),
            "",
            f"End to end: MinHash removed {minhash:,} rows; the semantic pass over the other {n - minhash:,} took "
            f"{sem['seconds']:.1f} s wall (its search, {how['method']}, {how['seconds']:.1f} s) and removed "
            f"{summ['reasons']['semantic']:,} ({sem['candidate_pairs']:,} candidate pairs, "
            f"{sem['rejected_pairs']:,} refused by the verifier). Planted copies removed (any reason / of / by the "
            "semantic pass): " + "; ".join(f"{k} {v[0]:,} / {v[1]:,} / {v[2]:,}" for k, v in p.items()
                                          if k != "originals_removed")
            + f"; original rows removed: {p['originals_removed']:,} (real windows close enough to an earlier one to "
            "pass the verifier).",
        ]
    if srch["ann"]:
        lines += [
            "",
            (f"faiss inverted-file index (IndexIVFFlat, {srch['cells']:,} cells, range search from every row, cosines "
            "recomputed exactly) against the exact pairs on the same vectors; `curate` switches to it above "
            "ANN_ROWS rows (curate/dedupe/semantic.py) with the probes set there:"),
            "",
            "| probes per row | wall s | CPU s | pairs found | recall vs exact | pairs not in exact |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['probes']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['pairs']:,} | {r['recall']:.4f} | "
                  f"{r['false']} |" for r in srch["ann"]]
    return "\n".join(lines)


def scale_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["", "", ("The search alone on seeded random unit vectors of 384 dimensions (no pair is close: the cost of looking, "
             "nothing found); one child process per size, peak RSS includes the vectors:"), "",
             "| rows | vectors MiB | exact CPU s (wall) | exact peak RSS MiB | faiss IVF CPU s (wall) | faiss peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ex, ann = r.get("exact"), r.get("ann")
        lines.append(f"| {r['rows']:,} | {r['vectors_mib']:,.0f} | "
                     + (f"{ex['cpu']:.1f} ({ex['wall']:.1f}) | {ex['rss_mib']:,.0f}" if ex else "not run (rows squared) | -")
                     + (f" | {ann['cpu']:.1f} ({ann['wall']:.1f}) | {ann['rss_mib']:,.0f} |" if ann else " | - | - |"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--probes", type=lambda s: tuple(int(x) for x in s.split(",")), default=PROBES)
    ap.add_argument("--cores", default=None, help="taskset core list for the children (default: not pinned)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="run the end-to-end dedupe at the same time as the embedder and search runs")
    ap.add_argument("--stages", type=lambda s: s.split(","), default=["embed", "search", "dedupe"],
                    help="which of embed,search,dedupe to run (embed and search always: the floor and the search)")
    ap.add_argument("--reuse", type=lambda s: s.split(","), default=[],
                    help="stages (embed,search,dedupe) whose measurement on file is used as it is")
    ap.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",")], default=[],
                    help="also time the search alone on this many random vectors (comma-separated row counts)")
    ap.add_argument("--stage", choices=["corpus", "embed", "search", "dedupe", "scale"], help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if a.stage == "scale":
        (CACHE / f"semantic_{a.rows}_scale.json").write_text(json.dumps(stage_scale(a.rows, a.threshold)))
        return
    if a.stage:
        corpus, _ = make_corpus(a.rows)
        if a.stage != "corpus":
            res = {"embed": lambda: stage_embed(corpus, a.rows), "search": lambda: stage_search(a.rows, a.threshold, a.probes),
                   "dedupe": lambda: stage_dedupe(corpus, a.rows)}[a.stage]()
            (CACHE / f"semantic_{a.rows}_{a.stage}.json").write_text(json.dumps(res, default=str))
        return
    subprocess.run([sys.executable, __file__, "--rows", str(a.rows), "--stage", "corpus"], check=True)
    corpus, plan_path = make_corpus(a.rows)
    dd_proc = start("dedupe", a) if "dedupe" in a.stages and a.side_by_side else None
    emb = finish("embed", start("embed", a), a)
    srch = finish("search", start("search", a), a)
    dd = None
    if "dedupe" in a.stages:  # side by side: the end-to-end run beside the other two, half the wall, CPU unchanged
        dd = finish("dedupe", dd_proc if a.side_by_side else start("dedupe", a), a)
    scale = []
    for n in a.scale:
        b = argparse.Namespace(**{**vars(a), "rows": n})
        scale.append(finish("scale", start("scale", b), b))
    body = report(a, corpus, np.load(plan_path), emb, srch, dd) + scale_table(scale)
    print(body)
    if not a.no_write:
        from benchmarks._results import write_section

        cmd = " ".join(["python3 benchmarks/bench_semantic.py"] + sys.argv[1:])
        write_section("dedupe-semantic" + ("" if a.rows == 100_000 else f"-{a.rows}"), cmd, body)


if __name__ == "__main__":
    main()
