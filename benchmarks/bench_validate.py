"""`curate validate` at scale: CPU time and peak memory, streaming, 1 vs N workers, token check vs the tokenizer.

    python benchmarks/bench_validate.py --rows 200000                 # corpus + every measurement, prints a table
    python benchmarks/bench_validate.py --rows 200000 --base /tmp/base   # also the in-memory validate of an older tree
    python benchmarks/bench_validate.py --rows 200000 --only corpus      # just write the corpus (JSONL + Parquet)
    python benchmarks/bench_validate.py --rows 200000 --only tokenizer   # just the token-check overhead

The corpus is seeded OpenAI chat JSONL of ~100 words a record (a system prompt from a few, a user question,
an assistant answer), with planted problems so every per-row path runs: exact copies of earlier records,
reused declared ids, empty replies, a missing system prompt, mojibake, prose and JSON replies. Its ingested
Parquet (`curate ingest`) is the canonical input. Each command runs in its own process tree; CPU is
user+sys of the whole tree (workers included) and RSS the peak of the tree's summed resident memory and
of the largest single process, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CURATE_BENCH_DIR", "/tmp/curate_bench"))
SYSTEMS = ["You are a helpful assistant.", "You are a concise expert. Answer in plain words.",
           "You are a support agent for an online shop."]


def make_chat_jsonl(n: int, path: Path, seed: int = 0) -> Path:
    """n seeded chat records as raw OpenAI JSONL (written once; see the module docstring for what is planted)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20_000)]
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(p / p.sum())

    def words(k: int) -> str:
        return " ".join(vocab[i] for i in np.minimum(np.searchsorted(cdf, rng.random(k)), len(vocab) - 1))

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    lines: list[str] = []
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            u = rng.random()
            if i > 10 and u < 0.01:  # an exact copy of an earlier record
                line = lines[int(rng.integers(0, len(lines)))]
            else:
                msgs = []
                if u >= 0.03:  # 2% without a system prompt
                    msgs.append({"role": "system", "content": SYSTEMS[int(rng.integers(0, len(SYSTEMS)))]})
                msgs.append({"role": "user", "content": words(int(rng.integers(10, 40))) + "?"})
                if u < 0.032 and u >= 0.031:
                    reply = ""  # empty_content: quarantined
                elif u < 0.033 and u >= 0.032:
                    reply = "fianc\u00c3\u00a9 " + words(20)  # mojibake: quarantined
                elif u < 0.15:
                    reply = json.dumps({"label": vocab[int(rng.integers(0, 50))], "score": round(float(rng.random()), 3)})
                else:
                    reply = words(int(rng.integers(40, 100))) + "."
                msgs.append({"role": "assistant", "content": reply})
                rec: dict = {"messages": msgs}
                if u >= 0.033 and u < 0.035:  # a declared id, reused now and then by a different record
                    rec["id"] = f"rec-{int(rng.integers(0, max(1, n // 500)))}"
                line = json.dumps(rec, ensure_ascii=False)
            lines.append(line)
            if len(lines) > 50_000:
                del lines[: 25_000]
            f.write(line + "\n")
    os.replace(tmp, path)
    return path


def corpus(n: int) -> tuple[Path, Path]:
    """(raw JSONL, its ingested canonical Parquet) of n records."""
    raw = make_chat_jsonl(n, CACHE / f"chat_{n}.jsonl")
    pq_path = CACHE / f"chat_{n}.parquet"
    if not pq_path.exists():
        subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(raw), "-o", str(pq_path)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    return raw, pq_path


def measure(cmd: list[str], cwd: Path, stdout: Path | None = None) -> dict:
    """Run cmd; CPU seconds (user+sys) of its whole process tree, wall seconds, peak RSS (tree sum, largest one).
    `stdout`: a file for its output (else it is dropped)."""
    import psutil

    t0 = time.perf_counter()
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL
    proc = psutil.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    cpu: dict[int, float] = {}  # the last reading of every process seen (workers are the forkserver's children)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        rss = 0
        try:
            tree = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                t = p.cpu_times()
                r = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            cpu[p.pid] = t.user + t.system
            rss += r
            peak_one = max(peak_one, r)
        peak_sum = max(peak_sum, rss)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if stdout is not None:
        out.close()
    err = proc.stderr.read().decode() if proc.stderr else ""
    return {"cpu_s": sum(cpu.values()), "parent_cpu_s": cpu.get(proc.pid, 0.0), "wall_s": wall,
            "rss_sum_mib": peak_sum / 2**20,
            "rss_max_mib": peak_one / 2**20, "rc": proc.returncode, "stderr": err[-500:]}


def tokenizer_overhead(n: int, records: int = 50_000, batch: int = 4_096) -> dict:
    """CPU of validate's token check (render + tokenize + attribute) vs the tokenizer alone on the same rendered texts."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from curate.embedded import load_tokenizer, template_messages
    from curate.validate.tokens import TokenCheck

    tok = load_tokenizer("embedded")
    _, pq_path = corpus(n)
    rows = pq.read_table(pq_path, columns=["messages", "tools"]).slice(0, records).to_pylist()
    recs = [(r["messages"], r["tools"]) for r in rows]
    texts = [tok.apply_chat_template(template_messages(m), tokenize=False) for m, _ in recs]
    check = TokenCheck(tok)
    best: dict[str, float] = {}
    for _ in range(3):  # the lowest of three: the machine is shared
        t = time.process_time()
        for i in range(0, len(recs), batch):
            counted = check.count(recs[i : i + batch])
        best["validate"] = min(best.get("validate", 1e9), time.process_time() - t)
        t = time.process_time()
        for i in range(0, len(texts), batch):
            tok(texts[i : i + batch], add_special_tokens=False)
        best["tokenizer"] = min(best.get("tokenizer", 1e9), time.process_time() - t)
    tokens = sum(len(e) for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False))
    del counted
    return {"records": len(recs), "tokens": tokens, "validate_tokens_cpu_s": round(best["validate"], 3),
            "tokenizer_cpu_s": round(best["tokenizer"], 3), "tokenizer_tokens_per_s": round(tokens / best["tokenizer"]),
            "ratio": round(best["validate"] / best["tokenizer"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--base", type=Path, help="a tree of an older curate whose validate to measure too")
    ap.add_argument("--only", choices=["corpus", "tokenizer", "validate"])
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    raw, pq_path = corpus(a.rows)
    if a.only == "corpus":
        print(raw, pq_path)
        return
    if a.only in (None, "tokenizer"):
        print(json.dumps(tokenizer_overhead(a.rows)), flush=True)
    if a.only == "tokenizer":
        return
    out = CACHE / "bench_validate_out"
    out.mkdir(exist_ok=True)
    runs = []
    for tokens in ("--no-tokens", "--tokens"):
        for src in (raw, pq_path):
            trees = [("old", a.base, [])] if a.base else []
            trees += [(f"new w{w}", ROOT, ["--workers", w]) for w in a.workers.split(",")]
            for label, tree, extra in trees:
                cmd = [sys.executable, "-m", "curate.cli", "validate", str(src), tokens, "--max-error-rate", "1",
                       "-o", str(out / "v.parquet"), "--quarantine", str(out / "q.parquet"), *extra]
                r = measure(cmd, tree)
                runs.append((label, src.suffix, tokens, r))
                print(f"{label:7} {src.name:22} {tokens:11} cpu {r['cpu_s']:7.1f} s  wall {r['wall_s']:7.1f} s  "
                      f"rss tree {r['rss_sum_mib']:6.0f} MiB  largest {r['rss_max_mib']:6.0f} MiB  rc {r['rc']}",
                      flush=True)
                if r["rc"] not in (0, 1):
                    print(r["stderr"])


if __name__ == "__main__":
    main()
