"""The embedded teacher on llama.cpp (llama-cpp-python's server, Q4_1 GGUF) vs transformers (curate's
hf_server on the dequantised safetensors copy), side by side on the same prompts.

Prompts: the first N production tickets of examples/demo wrapped in recipes/demo.yaml's synth prompt.
Each server answers every prompt twice, greedy (temperature 0, max_tokens from the recipe), one request
at a time: as text, and in JSON mode as curate's client sends it (`json_object` with the reply schema).
Measured: server start (wall, and the server's CPU until it answers), per request wall and server CPU
(user + system of the server process, psutil), completion tokens per second of wall, and fidelity
against llama.cpp: text replies identical, the share of llama.cpp's reply tokens in the common prefix,
JSON replies that parse / match the schema, and category + priority equal to llama.cpp's.
`--gpt4all PYTHON` adds gpt4all (prebuilt llama.cpp, no server) run by that interpreter on a copy of the
GGUF whose pre-tokenizer name is one gpt4all knows (text mode only). `--install` adds download sizes.

    OMP_NUM_THREADS=1 python benchmarks/bench_teacher.py [--n 20] [--threads 1] [--gpt4all /venv/bin/python]
        [--install] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil
import yaml

from benchmarks._results import write_section
from curate.synth.local import start_local_teacher


def prompts(n: int) -> tuple[list[list[dict]], dict, int]:
    recipe = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())["synth"]["recipe"]
    rows = [json.loads(line) for line in (ROOT / "examples" / "demo" / "production.jsonl").read_text().splitlines()]
    tickets = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows[:n]]
    convs = [[{"role": "system", "content": recipe["system"]},
              {"role": "user", "content": recipe["prompt"].replace("{{ prompt }}", t)}] for t in tickets]
    return convs, recipe["reply"]["schema"], recipe["max_tokens"]


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def run_server(server: str, convs: list[list[dict]], schema: dict, max_tokens: int, threads: int) -> dict:
    from openai import OpenAI

    w0, c_self = time.perf_counter(), time.process_time()
    with start_local_teacher(server=server, n_threads=threads) as t:
        start_wall, start_cpu = time.perf_counter() - w0, cpu(t.pid)
        client = OpenAI(base_url=t.base_url, api_key="x", max_retries=0, timeout=300)
        out: dict = {"start_wall": start_wall, "start_cpu": start_cpu}
        for mode, fmt in (("text", None), ("json", {"type": "json_object", "schema": schema})):
            replies, walls, cpus, tokens = [], [], [], []
            for msgs in convs:
                c0, r0 = cpu(t.pid), time.perf_counter()
                kw = {"response_format": fmt} if fmt else {}
                r = client.chat.completions.create(model=t.model, messages=msgs, temperature=0, max_tokens=max_tokens,
                                                   **kw)
                walls.append(time.perf_counter() - r0)
                cpus.append(cpu(t.pid) - c0)
                tokens.append(r.usage.completion_tokens)
                replies.append(r.choices[0].message.content)
            out[mode] = {"replies": replies, "wall": walls, "cpu": cpus, "tokens": tokens}
    out["client_cpu"] = time.process_time() - c_self
    return out


GPT4ALL = r"""
import json, os, resource, sys, time
from gpt4all import GPT4All
gguf, threads = sys.argv[1], int(sys.argv[2])
prompts = json.load(sys.stdin)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
w, c = time.perf_counter(), cpu()
m = GPT4All(os.path.basename(gguf), model_path=os.path.dirname(gguf), allow_download=False, device="cpu",
            n_threads=threads, n_ctx=2048)
out = {"start_wall": time.perf_counter() - w, "start_cpu": cpu() - c, "text": {"replies": [], "wall": [], "cpu": [], "tokens": []}}
for p, max_tokens in prompts:
    w, c, n = time.perf_counter(), cpu(), 0
    text = ""
    for piece in m.generate(p, max_tokens=max_tokens, temp=0, top_k=1, repeat_penalty=1.1, repeat_last_n=64, streaming=True):
        text += piece; n += 1
    out["text"]["replies"].append(text); out["text"]["wall"].append(time.perf_counter() - w)
    out["text"]["cpu"].append(cpu() - c); out["text"]["tokens"].append(n)
print(json.dumps(out))
"""


def run_gpt4all(python: str, convs: list[list[dict]], max_tokens: int, threads: int) -> dict:
    from curate.embedded import embedded_gguf_path, load_tokenizer

    data = embedded_gguf_path().read_bytes()
    i = data.index(b"tokenizer.ggml.pre")
    j = data.index(b"smollm", i)
    # gpt4all's llama.cpp predates the `smollm` pre-tokenizer; `refact` is the same regex and the same length
    patched = Path(tempfile.mkdtemp()) / "smollm2-refact.gguf"
    patched.write_bytes(data[:j] + b"refact" + data[j + 6:])
    tok = load_tokenizer()
    texts = [[tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True), max_tokens] for m in convs]
    w0 = time.perf_counter()
    r = subprocess.run([python, "-c", GPT4ALL, str(patched), str(threads)], input=json.dumps(texts),
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["start_wall_total"] = time.perf_counter() - w0
    patched.unlink()
    return out


def prefix_share(a: str, b: str, tok) -> float:
    """Share of reference `a`'s tokens that `b` reproduces before the first difference."""
    x, y = tok(a, add_special_tokens=False).input_ids, tok(b, add_special_tokens=False).input_ids
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n / max(1, len(x))


def parse(reply: str) -> dict | None:
    try:
        v = json.loads(reply)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, dict) else None


def install_sizes() -> list[tuple[str, str]]:
    rows = []
    for spec in ("llama-cpp-python", "starlette", "uvicorn", "gpt4all", "ctransformers", "llamacpp", "pyllamacpp"):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, spec],
                               check=False, capture_output=True, text=True)
            files = list(Path(d).iterdir())
            rows.append((spec, ", ".join(f"{f.name} ({f.stat().st_size / 1e6:.1f} MB)" for f in files)
                         if r.returncode == 0 else "not found"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpt4all", metavar="PYTHON")
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import jsonschema

    from curate.embedded import load_tokenizer

    tok = load_tokenizer()
    convs, schema, max_tokens = prompts(args.n)
    results = {"llama.cpp": run_server("llama.cpp", convs, schema, max_tokens, args.threads),
               "transformers": run_server("transformers", convs, schema, max_tokens, args.threads)}
    if args.gpt4all:
        results["gpt4all"] = run_gpt4all(args.gpt4all, convs, max_tokens, args.threads)
    ref = results["llama.cpp"]
    lines = [(f"{args.n} demo synth prompts (examples/demo/production.jsonl in recipes/demo.yaml's prompt), greedy, "
              f"max_tokens {max_tokens}, one request at a time, {args.threads} thread(s) per server, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}."), "",
             ("| server | start s (server CPU s) | mode | tokens/s | server CPU s/request | wall s/request | "
              "same reply as llama.cpp | llama.cpp prefix kept | JSON parses | schema-valid | labels = llama.cpp |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for mode in ("text", "json"):
            if mode not in r:
                continue
            m = r[mode]
            toks = sum(m["tokens"])
            same = sum(a == b for a, b in zip(ref[mode]["replies"], m["replies"]))
            share = sum(prefix_share(a, b, tok) for a, b in zip(ref[mode]["replies"], m["replies"])) / args.n
            parsed = [parse(x) for x in m["replies"]]
            valid = sum(p is not None for p in parsed)
            schema_ok = sum(p is not None and jsonschema.Draft202012Validator(schema).is_valid(p) for p in parsed)
            refp = [parse(x) for x in ref[mode]["replies"]]
            labels = sum(p is not None and q is not None and (p.get("category"), p.get("priority")) ==
                         (q.get("category"), q.get("priority")) for p, q in zip(parsed, refp))
            lines.append(f"| {name} | {r['start_wall']:.1f} ({r['start_cpu']:.1f}) | {mode} | "
                         f"{toks / sum(m['wall']):.1f} | {sum(m['cpu']) / args.n:.3f} | {sum(m['wall']) / args.n:.2f} | "
                         f"{same}/{args.n} | {share:.0%} | {valid}/{args.n} | {schema_ok}/{args.n} | {labels}/{args.n} |")
    body = "\n".join(lines)
    if args.install:
        body += "\n\nDownloads (`pip download --no-deps`):\n\n" + "\n".join(
            f"- {spec}: {what}" for spec, what in install_sizes())
    print(body)
    examples = {name: r["json"]["replies"][:3] for name, r in results.items() if "json" in r}
    print(json.dumps(examples, indent=1), file=sys.stderr)
    if not args.no_write:
        write_section("teacher", "OMP_NUM_THREADS=1 python benchmarks/bench_teacher.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
