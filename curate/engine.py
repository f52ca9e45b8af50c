"""Where a stage's batches run: in this process, or in a pool of worker processes, results in input order.

A stage maps record batches through one function of (state, batch); the engine does not change what comes
out, only where it is computed, so outputs are identical for any number of workers (tests check it).

    with Engine(workers=4, setup=load_tokenizer, setup_args=("embedded",)) as engine:
        for result in engine.map(count_tokens, batches):
            ...

`setup(*setup_args)` runs once in each worker (once in this process for workers=1) and its result is the
`state` argument of every call: a tokenizer, a compiled kernel, settings. At most `window` batches are in
flight, so memory stays bounded by the batch size, never by the input. Workers start with `forkserver`
(or `spawn`): a forked copy of a process holding torch or numba threads is not safe.

`threads=True` runs the calls on a pool of threads of this process instead, with one `setup` shared by all:
for work that releases the GIL (numba's nogil kernels, Arrow compute, Rust tokenizers), where shipping every
batch to another process and its results back would cost more than the work.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

_STATE: Any = None  # the worker's setup result
_ENGINE = "local"  # the engine of the data stages in this process: curate.engine.use() sets it


@contextlib.contextmanager
def use(kind: str = "local", address: str | None = None) -> Iterator[None]:
    """Run the data stages inside the block on `kind`: "local" (processes of this machine) or "ray" (actors of the
    Ray cluster at `address`; None: a local Ray instance). Outputs are the same on either."""
    global _ENGINE
    if kind not in ("local", "ray"):
        from curate.errors import UsageError

        raise UsageError(f"unknown engine '{kind}'; choose local or ray")
    before = _ENGINE
    with contextlib.ExitStack() as stack:
        if kind == "ray":
            from curate.ray_engine import session

            stack.enter_context(session(address))
        _ENGINE = kind
        try:
            yield
        finally:
            _ENGINE = before


def current() -> str:
    """The engine the data stages use now: local or ray."""
    return _ENGINE


def default_workers() -> int:
    """Workers when a stage's setting leaves it open: the usable cores, or the Ray cluster's CPUs."""
    if _ENGINE == "ray":
        from curate.ray_engine import cluster_cpus

        return cluster_cpus()
    return usable_cores()


def make(workers: int | None = None, setup: Callable[..., Any] | None = None, setup_args: tuple = (),
         window: int | None = None, threads: bool = False, worth: bool = True) -> Any:
    """An engine of the kind in use (Engine or curate.ray_engine.RayEngine) with these settings; on Ray, `threads`
    work runs on actors like the rest, also with one worker. `worth`: whether the work is large enough for a pool
    or a cluster at all (else it runs here, in this process)."""
    if not worth:
        return Engine(1, setup, setup_args)
    if _ENGINE == "ray":
        from curate.ray_engine import RayEngine

        return RayEngine(workers, setup, setup_args, window)
    return Engine(workers, setup, setup_args, window, threads)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _preloaded() -> list[str]:
    """What the fork server imports once, before it forks any worker: the main module and the curate modules
    this process has loaded (the stage's own among them), so that no worker imports them again (about 1.5 CPU s
    a worker). Where torch is loaded (training), only the main module, as multiprocessing does by default: the
    server must hold no thread a fork would copy."""
    if "torch" in sys.modules:
        return ["__main__"]
    import importlib.util

    # pyarrow imports pandas, where installed, the first time pa.array is given a Python list (~0.7 CPU s)
    pandas = ["pandas"] if importlib.util.find_spec("pandas") is not None else []
    return ["__main__", *sorted(m for m in sys.modules if m.startswith("curate.")), *pandas]


GC_ALLOCATIONS = 50_000  # the cyclic collector's first threshold in batch work (Python's default: 700)


def worker_gc() -> None:
    """A worker's cyclic garbage collector set to run rarely, for the worker's life.

    Batch functions allocate many small containers a row (findings, lists, dicts) and make no cycles; at the
    default threshold they set off full collections, each walking every object of the process: validate's
    checks took 30% more CPU in a worker than in the parent, which sets the same threshold around its loop.
    """
    gc.set_threshold(max(gc.get_threshold()[0], GC_ALLOCATIONS), *gc.get_threshold()[1:])


def _init(setup: Callable[..., Any] | None, args: tuple) -> None:
    global _STATE
    worker_gc()
    _STATE = setup(*args) if setup is not None else None


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_STATE, item)


class Engine:
    """Runs fn(state, item) over items, in order, on `workers` processes, or threads (1: here, no pool)."""

    kind = "local"

    def __init__(self, workers: int | None = None, setup: Callable[..., Any] | None = None,
                 setup_args: tuple = (), window: int | None = None, threads: bool = False):
        self.workers = max(1, workers if workers is not None else usable_cores())
        self.window = window or 2 * self.workers
        self.threads = threads
        self._setup, self._args = setup, setup_args
        self._pool: Executor | None = None
        self._state: Any = None

    def __enter__(self) -> Engine:
        if self.workers == 1 or self.threads:
            self._state = self._setup(*self._args) if self._setup is not None else None
            if self.workers > 1:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="curate-engine")
        else:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            context = mp.get_context(method)
            if method == "forkserver":  # read when the server starts: the first pool of this process
                context.set_forkserver_preload(_preloaded())
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init,
                                             initargs=(self._setup, self._args))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, fn: Callable[[Any, Any], Any], item: Any) -> Future:
        """fn(state, item) as a Future (run at once here when there is no pool); for work that depends on
        results map() gave, queued behind the calls map() has in flight."""
        if self._pool is None:
            done: Future = Future()
            done.set_result(fn(self._state, item))
            return done
        return self._pool.submit(fn, self._state, item) if self.threads else self._pool.submit(_call, fn, item)

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """fn(state, item) for every item, yielded in input order."""
        if self._pool is None:
            for item in items:
                yield fn(self._state, item)
            return
        pending: deque[Future] = deque()
        for item in items:
            pending.append(self._pool.submit(fn, self._state, item) if self.threads else
                           self._pool.submit(_call, fn, item))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
