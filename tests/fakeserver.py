"""A fault-injecting OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib only).

Faults: 429 with Retry-After, 500, slow replies, dropped connections, malformed JSON bodies, replies
whose content is not the JSON the request asked for, and the ones a provider bills although the client
never reads the reply: `late` (the reply comes after `late_s`, past the client's timeout) and `cut` (the
connection drops halfway through the reply body). `echoauth` answers 401 with an error message that
echoes the request's Authorization header, as some proxies do. Each log entry says whether the server
`billed` the request and with which `usage`. Each distinct request body gets at most
`max_faults_per_body` faults, so every request eventually succeeds unless its text contains
`fail_marker` (then it always gets 500). Every request is logged (in memory and, optionally, as JSON
lines in a file) so tests can prove what was and was not sent; `request_headers` holds every request's
headers (which API key arrived).

Label tasks:  FakeServer(reply_fn=LabelTeacher(label, verdict)) answers the n-th request with a prompt with
              label(prompt, n) and a label check (`{"correct": ...}` schema) with verdict(check text).

In-process:   with FakeServer(faults={"429": 0.2}) as srv: srv.base_url, srv.requests
Subprocess:   python tests/fakeserver.py --port 0 --log req.jsonl [--fault 500=0.1 ...] (prints the port)
Fast backoff: fast_backoff(monkeypatch) makes synthesize() wait milliseconds, not seconds, between retries
              (a Retry-After header is still honoured exactly).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

FAULT_KINDS = ("429", "500", "slow", "drop", "malformed", "badjson", "late", "cut", "echoauth")
BILLED = {None, "slow", "malformed", "badjson", "late", "cut"}  # the server generated a reply for these


def fast_backoff(monkeypatch: Any, base: float = 0.01, cap: float = 0.05) -> None:
    """Backoff of milliseconds for every synthesize() in this test (max_retries still comes from the settings)."""
    import functools

    from curate.synth.client import RetryPolicy

    monkeypatch.setattr("curate.synth.stage.RetryPolicy", functools.partial(RetryPolicy, base=base, cap=cap))


def body_key(body: dict[str, Any]) -> str:
    """Identity of a request for fault accounting and logs: its messages."""
    return hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:16]


def instance_of(schema: dict[str, Any]) -> Any:
    """A minimal value matching a (simple) JSON schema, so JSON-mode requests get valid replies."""
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type", "string")
    t = t[0] if isinstance(t, list) else t
    if t == "object":
        props = schema.get("properties", {})
        return {k: instance_of(v) for k, v in props.items()}
    if t == "array":
        return [instance_of(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if t in ("integer", "number"):
        return schema.get("minimum", 1)
    if t == "boolean":
        return True
    return "text " * max(1, schema.get("minLength", 1) // 5 + 1)


def reply_content(body: dict[str, Any]) -> str:
    """Deterministic content: JSON matching the requested schema, or an echo of the last user turn."""
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return json.dumps(instance_of(rf["json_schema"]["schema"]))
    if rf.get("type") == "json_object":
        return json.dumps(instance_of(rf.get("schema") or {"type": "object", "properties": {"answer": {}}}))
    users = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"]
    return "Echo: " + (users[-1][:200] if users else "")


class LabelTeacher:
    """A reply function for label tasks, deterministic from the requests: the n-th request (0-based) whose last
    user message is `prompt` gets label(prompt, n) as JSON; a label check request (its schema asks for `correct`)
    gets {"correct": verdict(its user message)}."""

    def __init__(self, label: Callable[[str, int], dict[str, Any]], verdict: Callable[[str], bool] = lambda text: True):
        self.label, self.verdict = label, verdict
        self.seen: Counter[str] = Counter()  # the server answers on one event loop thread: no lock needed

    def __call__(self, body: dict[str, Any]) -> str:
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") or rf.get("schema") or {}
        prompt = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"][-1]
        if "correct" in schema.get("properties", {}):
            return json.dumps({"correct": self.verdict(prompt)})
        n = self.seen[prompt]
        self.seen[prompt] += 1
        return json.dumps(self.label(prompt, n))


class FakeServer:
    """The server; runs its own event loop in a background thread."""

    def __init__(
        self,
        faults: dict[str, float] | None = None,
        *,
        max_faults_per_body: int = 2,
        fail_marker: str | None = None,
        delay: float = 0.0,
        slow_s: float = 3.0,
        late_s: float = 2.0,
        retry_after: str = "0.05",
        seed: int = 0,
        log_path: str | None = None,
        port: int = 0,
        reply_fn: Callable[[dict[str, Any]], str] | None = None,
    ):
        self.faults = {k: v for k, v in (faults or {}).items() if v}
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.max_faults_per_body = max_faults_per_body
        self.fail_marker = fail_marker
        self.delay, self.slow_s, self.late_s, self.retry_after = delay, slow_s, late_s, retry_after
        self.rng = random.Random(seed)
        self.log_path = log_path
        self.port = port
        self.reply_fn = reply_fn or reply_content
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []  # every request's headers (lower-case names), in order
        self.faults_given: dict[str, int] = {}
        self._faulted: dict[str, int] = {}
        self._log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115 (closed in stop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- lifecycle

    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
        if self._log:
            self._log.close()

    def __enter__(self) -> FakeServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, key: str) -> int:
        return sum(1 for r in self.requests if r["key"] == key)

    def billed(self) -> list[dict[str, Any]]:
        """The requests a provider would bill: those the server generated a reply for, read or not."""
        return [r for r in self.requests if r["billed"]]

    async def _shutdown(self) -> None:
        if self._server:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- HTTP

    async def serve_forever(self) -> None:
        """Run on the current loop (subprocess mode)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        print(self.port, flush=True)
        await self._server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                self.request_headers.append(headers)
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._respond(method, path, body, writer, headers):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _pick_fault(self, body: dict[str, Any], key: str, raw: bytes) -> str | None:
        if self.fail_marker and self.fail_marker.encode() in raw:
            return "500"
        if self._faulted.get(key, 0) >= self.max_faults_per_body:
            return None
        for kind, p in self.faults.items():
            if self.rng.random() < p:
                self._faulted[key] = self._faulted.get(key, 0) + 1
                return kind
        return None

    async def _respond(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter,
                       headers: dict[str, str] | None = None) -> bool:
        if method == "GET" and path.endswith("/models"):
            return await self._send(writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        if not (method == "POST" and path.endswith("/chat/completions")):
            return await self._send(writer, 404, {"error": {"message": f"no route {path}"}})
        body = json.loads(raw)
        key = body_key(body)
        fault = self._pick_fault(body, key, raw)
        content = self.reply_fn(body)
        if fault == "badjson":
            content = content[: max(1, len(content) // 2)]
        prompt_tokens = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + 1
        completion_tokens = len(content) // 4 + 1
        billed = fault in BILLED
        entry = {"t": time.time(), "key": key, "fault": fault, "messages": body.get("messages"), "billed": billed,
                 "usage": [prompt_tokens, completion_tokens] if billed else [0, 0],
                 "temperature": body.get("temperature")}
        self.requests.append(entry)
        self.faults_given[fault or "none"] = self.faults_given.get(fault or "none", 0) + 1
        if self._log:
            self._log.write(json.dumps(entry) + "\n")
        if self.delay:
            await asyncio.sleep(self.delay)
        if fault == "429":
            return await self._send(writer, 429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                    extra={"retry-after": self.retry_after})
        if fault == "500":
            return await self._send(writer, 500, {"error": {"message": "internal error", "type": "server_error"}})
        if fault == "echoauth":
            auth = (headers or {}).get("authorization", "")
            key = auth.split(" ", 1)[-1]
            message = f"Incorrect API key provided: {key}. You sent Authorization: {auth} (api-key: {key})"
            return await self._send(writer, 401, {"error": {"message": message, "type": "invalid_request_error"}})
        if fault == "drop":
            return False
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "late":
            await asyncio.sleep(self.late_s)  # billed, but the client has given up by now
        reply = {
            "id": f"chatcmpl-{key}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if fault == "malformed":
            return await self._send(writer, 200, None, raw_body=json.dumps(reply)[:40].encode())
        if fault == "cut":
            data = json.dumps(reply).encode()
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
                         .encode() + data[: len(data) // 2])
            await writer.drain()
            return False  # the connection closes halfway through the body
        return await self._send(writer, 200, reply)

    async def _send(self, writer: asyncio.StreamWriter, status: int, obj: Any, extra: dict | None = None,
                    raw_body: bytes | None = None) -> bool:
        data = raw_body if raw_body is not None else json.dumps(obj).encode()
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error"}[status]
        head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--fault", action="append", default=[], help="KIND=PROB, e.g. 429=0.1")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before every reply")
    ap.add_argument("--fail-marker")
    args = ap.parse_args(argv)
    faults = {k: float(v) for k, v in (f.split("=", 1) for f in args.fault)}
    srv = FakeServer(faults, fail_marker=args.fail_marker, delay=args.delay, log_path=args.log, port=args.port)
    try:
        asyncio.run(srv.serve_forever())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
