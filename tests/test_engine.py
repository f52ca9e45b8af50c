"""The local engine's worker processes: what they start with."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate import engine

HELPER = """
import gc, sys

def facts(_state, _item):
    return gc.get_threshold()[0], sorted(m for m in ("curate.stitch", "pandas", "pyarrow") if m in sys.modules)
"""

PARENT = """
import json, sys
import curate.stitch  # loaded here before the pool: the fork server imports it once for every worker
from curate.engine import Engine
from helper import facts

with Engine(2) as pool:
    print(json.dumps(list(pool.map(facts, range(4)))))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux's start method")
def test_workers_start_with_this_process_modules_and_a_rare_garbage_collector(tmp_path: Path) -> None:
    """A worker forked by the fork server finds the curate modules this process had loaded (and pandas, which
    pyarrow imports on its first pa.array of a list) already imported, and runs the cyclic collector rarely."""
    (tmp_path / "helper.py").write_text(HELPER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", PARENT], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout)
    assert len(got) == 4
    for threshold, loaded in got:
        assert threshold >= engine.GC_ALLOCATIONS
        assert loaded == ["curate.stitch", *(["pandas"] if importlib.util.find_spec("pandas") else []), "pyarrow"]


def test_a_process_holding_torch_preloads_only_the_main_module(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", object())
    assert engine._preloaded() == ["__main__"]
    monkeypatch.delitem(sys.modules, "torch")
    assert "curate.engine" in engine._preloaded()
