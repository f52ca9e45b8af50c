"""How many CPU threads torch uses in train, eval and merge: chosen from the free cores, not torch's default.

torch starts one OpenMP thread per core. Each operation ends at a barrier that waits for its slowest
thread, so when another process keeps one of those cores busy, every operation waits for a thread
the scheduler has put aside, and a small model runs several times slower than on one thread
(benchmarks/RESULTS.md, section `threads`). So the count is

    threads = usable cores - cores kept busy by other processes (rounded), at least 1

where a core counts as busy once other processes use more than BUSY of it. Precedence: a number
given as the `threads` setting; else MKL_NUM_THREADS or OMP_NUM_THREADS, read as torch reads them
(MKL's wins when both are set); else the rule. torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# the environment variables torch reads at start-up, the one it obeys first (torch has none of its own)
ENV = ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
# share of a core that other processes may use before it no longer counts as free
BUSY = 0.25
SAMPLE_S = 0.5  # how long the load of other processes is sampled


@dataclass(frozen=True)
class Threads:
    """The thread count torch runs with, and why (what run cards and eval summaries record)."""

    count: int
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "why": self.why}


def rule(cores: int, load: float) -> int:
    """Threads for `cores` usable cores while other processes keep `load` cores busy (in core units)."""
    busy = math.ceil(max(load, 0.0) - BUSY) if load > BUSY else 0
    return max(1, cores - busy)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to honour
    return max(1, cores)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of these CPUs since boot, from /proc/stat."""
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if int(name[3:]) not in cpus:
                continue
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def other_load(seconds: float = SAMPLE_S) -> float | None:
    """Cores kept busy by other processes over `seconds` (this process's own CPU time taken out); None off Linux."""
    try:
        cpus = os.sched_getaffinity(0)
        b0, t0 = _cpu_ticks(cpus)
    except (OSError, AttributeError, ValueError):
        return None
    own0, w0 = _own_cpu(), time.monotonic()
    time.sleep(seconds)
    b1, t1 = _cpu_ticks(cpus)
    own, wall = _own_cpu() - own0, time.monotonic() - w0
    if t1 <= t0:
        return None
    busy = (b1 - b0) / (t1 - t0) * len(cpus)
    return round(max(0.0, busy - own / wall), 2)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _from_env(env: Mapping[str, str]) -> tuple[str, int] | None:
    for name in ENV:
        text = env.get(name, "").strip()
        if not text:
            continue
        first = text.split(",")[0].strip()  # OpenMP allows a list per nesting level
        if first.isdigit() and int(first) > 0:
            return name, int(first)
    return None


def choose(setting: str | int = "auto", *, env: Mapping[str, str] | None = None, cores: int | None = None,
           load: float | None = None) -> Threads:
    """The thread count for `setting` ("auto" or a number); env, cores and load default to this machine's."""
    if setting != "auto":
        return Threads(int(setting), "set by the threads setting")
    found = _from_env(os.environ if env is None else env)
    if found:
        name, n = found
        return Threads(n, f"{name}={n} in the environment")
    cores = usable_cores() if cores is None else cores
    load = other_load() if load is None else load
    if load is None:
        return Threads(cores, f"{cores} usable cores (the load of other processes is unknown here)")
    n = rule(cores, load)
    return Threads(n, f"{cores} usable cores, other processes keeping {load:.2f} of a core busy: "
                      f"{n} thread{'s' if n > 1 else ''}")


@contextlib.contextmanager
def torch_threads(setting: str | int = "auto") -> Iterator[Threads]:
    """Run torch with the chosen thread count inside the block; the caller's intra-op count comes back after it.

    Inter-op threads are set once per process (torch refuses later changes), to the same count. Inside the block
    the libraries' known FutureWarning about `is_gradient_checkpointing` is silenced.
    """
    import torch

    chosen = choose(setting)
    before = torch.get_num_threads()
    torch.set_num_threads(chosen.count)
    if torch.get_num_interop_threads() != chosen.count:
        with contextlib.suppress(RuntimeError):  # already set, or inter-op work already started
            torch.set_num_interop_threads(chosen.count)
    try:
        with warnings.catch_warnings():
            # peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecated: a FutureWarning on
            # every train and eval that says nothing about the user's run
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated",
                                    category=FutureWarning)
            yield chosen
    finally:
        torch.set_num_threads(before)
