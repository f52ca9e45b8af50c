"""The Ray engine: the data stages' per-batch work on the actors of a Ray cluster instead of local processes.

`curate.engine.use("ray", address)` makes every `curate.engine.make(...)` of the data stages (ingest's
JSONL blocks, validate's batches and blocks, dedupe's signature pass) a RayEngine: one actor per
worker, placed by Ray across the cluster's nodes, each running the stage's `setup` once (the tokenizer,
the compiled schemas, the MinHash settings) and then fn(state, item) for the items sent to it. Items go
round-robin with at most `window` in flight and come back in input order, so the outputs are the same
functions' results in the same order as on the local engine: equal, byte for byte.

What crosses the network: each item (a JSONL block's bytes, a batch's rows) and its result (with `map_held`,
only its small part: dedupe's blocks of signatures and shingles stay in the object store). Reading
the input and writing the outputs stay in the driver (the `curate` process), which is what keeps them
one output set that a killed run never leaves half-written.

Faults: an actor that dies (its node lost, its process killed) is restarted by Ray (max_restarts) and
the calls it had are retried on the new one (max_task_retries); the stage's functions are pure, so a
retried call gives the same result. A call that keeps failing fails the stage with one line.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from curate.errors import CurateError, MissingDependency, UsageError

RESTARTS = 3  # an actor is restarted this many times, and a call retried as often


def require() -> Any:
    """The ray module, or a MissingDependency error that says what to install."""
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", "ray", "--engine ray") from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None) -> Iterator[Any]:
    """A connection to Ray for the block: the running one when this process has joined one already (a test, a
    notebook); else a new local instance on this machine's usable cores, bound to 127.0.0.1 (address None or
    "local"), or the cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"), left running afterwards."""
    ray = require()
    if ray.is_initialized():
        yield ray
        return
    from curate.engine import usable_cores

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address in (None, "", "local"):
            # loopback only: Ray would otherwise advertise (and dial) the machine's network address
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
            # "local": a new instance even where one is running on this machine already (ray.init() would join
            # the newest one, or the one RAY_ADDRESS names, and refuse num_cpus)
            ray.init(address="local", num_cpus=usable_cores(), _node_ip_address="127.0.0.1", **quiet)
        elif address.startswith("ray://"):
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        what = f"--ray-address {address}: cannot join the Ray cluster" if address not in (None, "", "local") else \
            "--engine ray: cannot start a local Ray instance"
        raise UsageError(f"{what}: {str(exc).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus() -> int:
    """The CPUs of the cluster this process has joined (at least 1)."""
    ray = require()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class _Worker:
    """One actor: the stage's setup, once, then calls."""

    def __init__(self, setup: Callable[..., Any] | None, args: tuple):
        from curate.engine import worker_gc

        worker_gc()
        self.state = setup(*args) if setup is not None else None

    def call(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.state, item)

    def call_held(self, fn: Callable[[Any, Any], tuple[Any, Any]], item: Any) -> tuple[Any, Any]:
        """fn's (small, large) result as two return values (the caller asks for num_returns=2)."""
        return fn(self.state, item)


class RayEngine:
    """Runs fn(state, item) over items, in order, on `workers` Ray actors (at most the cluster's CPUs)."""

    kind = "ray"

    def __init__(self, workers: int | None = None, setup: Callable[..., Any] | None = None, setup_args: tuple = (),
                 window: int | None = None):
        self.ray = require()
        cpus = cluster_cpus()
        # one CPU an actor: more actors than CPUs would wait for a CPU forever
        self.workers = max(1, min(workers if workers is not None else cpus, cpus))
        self.window = window or 2 * self.workers
        self._setup, self._args = setup, setup_args
        self._actors: list[Any] = []
        self._submitted = 0

    def __enter__(self) -> RayEngine:
        actor = self.ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)(_Worker)
        self._actors = [actor.remote(self._setup, self._args) for _ in range(self.workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for a in self._actors:
            self.ray.kill(a)
        self._actors = []

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """fn(state, item) for every item on the actors, yielded in input order."""
        pending: deque[Any] = deque()
        for i, item in enumerate(items):
            pending.append(self._actors[i % len(self._actors)].call.remote(fn, item))
            if len(pending) >= self.window:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def submit(self, fn: Callable[[Any, Any], Any], item: Any) -> _Submitted:
        """fn(state, item) on the next actor, queued behind its calls in flight: done() and result() as a Future's."""
        self._submitted += 1
        return _Submitted(self, self._actors[self._submitted % len(self._actors)].call.remote(fn, item))

    def map_held(self, fn: Callable[[Any, Any], tuple[Any, Any]], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """For every item, in input order: fn(state, item) = (small, large) on the actors, the small part fetched
        here and the large part left in the cluster's object store (a reference this process owns, so the object
        outlives the actor that made it)."""
        pending: deque[Any] = deque()

        def call(i: int, item: Any) -> Any:
            return self._actors[i % len(self._actors)].call_held.options(num_returns=2).remote(fn, item)

        for i, item in enumerate(items):
            pending.append(call(i, item))
            if len(pending) >= self.window:
                small, large = pending.popleft()
                yield self._get(small), large
        while pending:
            small, large = pending.popleft()
            yield self._get(small), large

    def _get(self, ref: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:  # the stage's own error, raised on the actor: raise it here as it is
            cause = exc.as_instanceof_cause()
            if isinstance(cause, CurateError):
                raise cause from None
            raise
        except RayActorError as exc:
            raise CurateError(f"ray: a worker died {RESTARTS + 1} times on one batch: {str(exc).splitlines()[0]}") from None


class _Submitted:
    """A call RayEngine.submit sent: the two methods of a Future that callers use."""

    def __init__(self, engine: RayEngine, ref: Any):
        self.engine, self.ref = engine, ref

    def done(self) -> bool:
        ready, _ = self.engine.ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self) -> Any:
        return self.engine._get(self.ref)
