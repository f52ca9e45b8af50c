"""Allocator settings for the length of one dedupe run: keep freed memory for the next batch.

Every batch of a run allocates and frees the same few-MiB scratch buffers (decoded Parquet pages,
token edges, shingle hashes, signatures). With the default settings glibc hands freed memory back to
the kernel (heap trimming, and munmap of every block above its mmap threshold) and Arrow's mimalloc
pool purges freed pages, so the next batch page-faults freshly zeroed pages again: about 350k page
faults and 2-3 s of system time per million rows, ~0.8 s of it avoidable (benchmarks/RESULTS.md).

While a run lasts, Arrow allocates through the system allocator and glibc keeps what is freed (mmap
threshold 32 MiB, the most glibc accepts; trim threshold 1 GiB). Afterwards glibc is left as its own
adaptive mode leaves itself after freeing a 32 MiB block (mmap threshold 32 MiB, trim threshold
64 MiB), the memory held is returned to the kernel (malloc_trim), and Arrow's pool is restored.

`small_pages()` is for the hashing and deciding passes: numpy stops asking the kernel for transparent
huge pages for its arrays of 4 MiB and more. Where the kernel defragments on such requests
(defrag=madvise, the usual default), a fault then waits for memory compaction, which after a few
hundred batches costs more than the huge pages save: ~0.3 s of pass 1 and deciding at 1M rows. The
writing pass is ~0.8 s faster with them, so it runs with numpy's setting as it was.
Where the C library is not glibc, only the Arrow pool changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
RUN_TRIM_THRESHOLD = 1 << 30
RUN_TOP_PAD = 64 << 20
AFTER_TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
AFTER_TOP_PAD = 128 << 10  # glibc's default

# numpy's switch for madvise(MADV_HUGEPAGE) on large arrays (numpy >= 1.20); it returns the previous value
_set_hugepage = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)


def _glibc():
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()
_lock = threading.Lock()


def _shared(enter: Callable[[], object], leave: Callable[[object], None]):
    """A context manager that runs `enter` when the first of any nested or concurrent uses begins and
    `leave(what enter returned)` when the last ends."""
    state = {"depth": 0, "saved": None}

    @contextmanager
    def scope() -> Iterator[None]:
        with _lock:
            if state["depth"] == 0:
                state["saved"] = enter()
            state["depth"] += 1
        try:
            yield
        finally:
            with _lock:
                state["depth"] -= 1
                if state["depth"] == 0:
                    leave(state["saved"])

    return scope


def _keep_freed() -> pa.MemoryPool:
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _LIBC.mallopt(M_TRIM_THRESHOLD, RUN_TRIM_THRESHOLD)
        _LIBC.mallopt(M_TOP_PAD, RUN_TOP_PAD)
    return pool


def _hand_back(pool: pa.MemoryPool) -> None:
    pa.set_memory_pool(pool)
    if _LIBC is not None:
        _LIBC.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
        _LIBC.mallopt(M_TOP_PAD, AFTER_TOP_PAD)
        _LIBC.malloc_trim(0)


# Keep freed memory for reuse while the body runs; also usable as a decorator (`@reuse_freed_memory()`).
reuse_freed_memory = _shared(_keep_freed, _hand_back)

# numpy asks for no transparent huge pages while the body runs; numpy's own setting is restored after.
small_pages = _shared(lambda: _set_hugepage(False) if _set_hugepage else None,
                      lambda before: _set_hugepage(before) if _set_hugepage else None)
