"""The embedded teacher without llama.cpp: SmolLM2-135M-Instruct in transformers behind a small
OpenAI-compatible server (Starlette + uvicorn), for machines without llama-cpp-python.

It serves the safetensors copy curate already caches for train/eval (the dequantised Q4_1 GGUF, so its
replies are close to llama.cpp's, not identical) and runs like llama.cpp's server in local.py: a child
process on a free 127.0.0.1 port that dies with curate. What it serves is what curate's client sends:
`GET /v1/models`, and `POST /v1/chat/completions` with messages, temperature, top_p, top_k, min_p,
max_tokens, seed, stop, repeat_penalty and response_format, answering with usage token counts.
Sampling follows llama.cpp's server defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, and a
1.1 repeat penalty over the last 64 generated tokens, also at temperature 0), so greedy replies can be
compared token for token. JSON mode (`json_object` or `json_schema`) does not constrain tokens as
llama.cpp's grammar does: the reply is started with `{` and ends where that object closes; the schema is
not enforced here (curate's client validates every reply and retries). Requests run one at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.errors import MissingDependency

MODEL_ALIAS = "smollm2-135m-instruct-hf"  # not llama.cpp's name: the request cache keeps their replies apart
N_CTX = 2048
PENALTY_LAST_N = 64
DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}


class BadRequest(ValueError):
    """A request the server answers with 400."""


def json_end(text: str) -> int | None:
    """Index just past the JSON value `text` starts with (an object or array), None while it is open."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
    return None


def _params(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("'messages' must be a non-empty list of objects with a 'role'")
    p = {k: body.get(k, v) if body.get(k) is not None else v for k, v in DEFAULTS.items()}
    for k, value in p.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadRequest(f"'{k}' must be a number")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("'stop' must be a string or a list of strings")
    fmt = body.get("response_format") or {}
    kind = fmt.get("type", "text") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise BadRequest("'response_format.type' must be text, json_object or json_schema")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise BadRequest("'seed' must be an integer")
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    return dict(p, messages=messages, max_tokens=max_tokens, stop=[s for s in stop if s], json=kind != "text",
                seed=seed)


class Generator:
    """The model and tokenizer, and one chat completion at a time."""

    def __init__(self, model_dir: str | Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
        self.model.eval()
        self.lock = threading.Lock()

    def complete(self, p: dict[str, Any]) -> tuple[str, str, int, int]:
        """(content, finish_reason, prompt_tokens, completion_tokens) for parsed request parameters."""
        torch = self.torch
        prompt = self.tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
        prefix = "{" if p["json"] else ""  # JSON mode: the reply starts as an object
        ids = self.tok(prompt + prefix, add_special_tokens=False, return_tensors="pt").input_ids
        n_prompt = len(self.tok(prompt, add_special_tokens=False).input_ids)
        room = N_CTX - ids.shape[1]
        if room < 1:
            raise BadRequest(f"the prompt has {n_prompt} tokens; the context holds {N_CTX}")
        limit = min(p["max_tokens"] or room, room)
        eos = self.tok.eos_token_id
        out = [int(t) for t in ids[0, n_prompt:]]  # the prefilled `{` counts as generated
        text, finish = prefix, "length"
        with self.lock, torch.inference_mode():
            gen = torch.Generator().manual_seed(p["seed"] if p["seed"] is not None else int.from_bytes(os.urandom(4), "little"))
            past, step = None, ids
            while len(out) < limit:
                res = self.model(input_ids=step, past_key_values=past, use_cache=True)
                past, logits = res.past_key_values, res.logits[0, -1].float()
                token = self._pick(logits, out[-PENALTY_LAST_N:], p, gen)
                if token == eos:
                    finish = "stop"
                    break
                out.append(token)
                text = self.tok.decode(out, skip_special_tokens=True)
                cut = self._cut(text, p)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                    break
                step = torch.tensor([[token]])
        return text, finish, n_prompt, len(out)

    def _pick(self, logits: Any, recent: list[int], p: dict[str, Any], gen: Any) -> int:
        torch = self.torch
        if recent and p["repeat_penalty"] != 1.0:  # llama.cpp's penalty: over recent tokens, at any temperature
            idx = torch.tensor(sorted(set(recent)))
            vals = logits[idx]
            logits[idx] = torch.where(vals > 0, vals / p["repeat_penalty"], vals * p["repeat_penalty"])
        if p["temperature"] <= 0:
            return int(torch.argmax(logits))
        # llama.cpp's chain: top-k, top-p, min-p, temperature, then a draw
        k = min(int(p["top_k"]), logits.numel()) if p["top_k"] > 0 else logits.numel()
        vals, idx = torch.topk(logits, k)
        probs = torch.softmax(vals, -1)
        keep = (torch.cumsum(probs, -1) - probs) < p["top_p"]
        keep &= probs >= p["min_p"] * probs[0]
        keep[0] = True
        vals, idx = vals[keep], idx[keep]
        probs = torch.softmax(vals / p["temperature"], -1)
        return int(idx[torch.multinomial(probs, 1, generator=gen)])

    @staticmethod
    def _cut(text: str, p: dict[str, Any]) -> int | None:
        cuts = [i for i in (text.find(s) for s in p["stop"]) if i >= 0]
        if p["json"]:
            end = json_end(text)
            cuts += [end] if end is not None else []
        return min(cuts) if cuts else None


def app(generator: Generator, alias: str) -> Any:
    """The Starlette application serving `generator` under the model name `alias`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}}, status)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "curate"}]})

    async def chat(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            if body.get("stream"):
                raise BadRequest("streaming is not supported")
            params = _params(body)
            content, finish, pt, ct = await run_in_threadpool(generator.complete, params)
        except (BadRequest, ValueError) as exc:
            return error(400, str(exc))
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": alias,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        })

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def main(argv: list[str] | None = None) -> None:
    """Serve until killed (run by start_hf_teacher in a child process)."""
    ap = argparse.ArgumentParser(prog="curate.synth.hf_server")
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alias", default=MODEL_ALIAS)
    args = ap.parse_args(argv)
    import uvicorn

    uvicorn.run(app(Generator(args.model, args.threads), args.alias), host="127.0.0.1", port=args.port,
                log_level="warning")


@contextmanager
def start_hf_teacher(model_dir: str | Path | None = None, *, n_threads: int | None = None,
                     startup_timeout: float = 180.0) -> Iterator[Any]:
    """Start the transformers server on a free loopback port, wait until it answers, yield it, stop it.

    Like start_local_teacher: the server dies with curate; enter and leave the block in the same thread.
    """
    from curate.synth.local import GUARD, LocalTeacher, free_port, serve

    for module in ("torch", "starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependency(module, "local-hf", "the embedded teacher without llama.cpp") from exc
    if model_dir is None:
        from curate.embedded import embedded_model_dir

        model_dir = embedded_model_dir()
    port = free_port()
    child = GUARD + "\nimport runpy\nsys.argv = ['curate.synth.hf_server', *sys.argv[2:]]\n" \
                    "runpy.run_module('curate.synth.hf_server', run_name='__main__', alter_sys=True)\n"
    cmd = [sys.executable, "-c", child, str(os.getpid()), "--model", str(model_dir), "--port", str(port),
           "--threads", str(n_threads or max(1, (os.cpu_count() or 2) // 2))]
    with serve(cmd, f"http://127.0.0.1:{port}/v1", startup_timeout) as pid:
        yield LocalTeacher(f"http://127.0.0.1:{port}/v1", MODEL_ALIAS, pid)


if __name__ == "__main__":
    main()

