"""Torch threads: the rule (cores and load in, count out), the setting and the environment variables over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import UsageError
from curate.evaluation.config import EvalConfig
from curate.train.config import TrainConfig, parse_sets
from curate.train.threads import Threads, choose, rule

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cores, load, expected",
    [
        (2, 0.0, 2), (2, 0.25, 2), (2, 0.26, 1), (2, 0.9, 1), (2, 1.0, 1), (2, 1.25, 1), (2, 2.0, 1), (2, 5.0, 1),
        (1, 0.0, 1), (1, 1.0, 1),
        (4, 0.1, 4), (4, 0.5, 3), (4, 1.2, 3), (4, 1.3, 2), (4, 2.0, 2), (4, 3.9, 1),
        (8, 1.0, 7), (8, 2.5, 5), (8, -0.1, 8),
    ],
)
def test_rule_takes_out_the_cores_other_processes_keep_busy(cores, load, expected):
    assert rule(cores, load) == expected


def test_choose_setting_then_environment_then_rule():
    omp, mkl = {"OMP_NUM_THREADS": "1"}, {"MKL_NUM_THREADS": "3"}
    assert choose(3, env=omp, cores=2, load=0.0) == Threads(3, "set by the threads setting")
    assert choose("auto", env=omp, cores=2, load=0.0) == Threads(1, "OMP_NUM_THREADS=1 in the environment")
    # torch obeys MKL_NUM_THREADS over OMP_NUM_THREADS: so does curate
    assert choose("auto", env={**omp, **mkl}, cores=2, load=0.0) == Threads(3, "MKL_NUM_THREADS=3 in the environment")
    assert choose("auto", env={"OMP_NUM_THREADS": "2,1"}, cores=8, load=0.0) == Threads(
        2, "OMP_NUM_THREADS=2 in the environment")  # an OpenMP list: its first level
    # empty or meaningless values are not settings
    for env in ({}, {"OMP_NUM_THREADS": ""}, {"OMP_NUM_THREADS": "0"}, {"OMP_NUM_THREADS": "many"}):
        assert choose("auto", env=env, cores=2, load=1.0) == Threads(
            1, "2 usable cores, other processes keeping 1.00 of a core busy: 1 thread")
    assert choose("auto", env={}, cores=4, load=0.1) == Threads(
        4, "4 usable cores, other processes keeping 0.10 of a core busy: 4 threads")
    assert Threads(2, "x").to_dict() == {"count": 2, "why": "x"}


def test_threads_setting_in_train_and_eval_configs():
    for cls, name in ((TrainConfig, "train"), (EvalConfig, "eval")):
        assert cls().threads == "auto"
        assert [cls.build(threads=v).threads for v in ("AUTO", " 2 ", 3)] == ["auto", 2, 3]
        for bad in (0, "0", -1, "x", True, 1.5):
            with pytest.raises(UsageError) as e:
                cls.build(threads=bad)
            assert str(e.value) == (f"invalid {name} settings: threads: expected auto or a number of threads "
                                    f"(1 or more) (got {bad!r})")
    assert TrainConfig.build(parse_sets(["threads=1"])).threads == 1
    for command in ("train", "eval"):
        shown = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        assert "--threads auto|N CPU threads torch uses (auto: MKL_NUM_THREADS or OMP_NUM_THREADS when set" in shown
        assert "[default: auto]" in shown


# after curate's setup, in a fresh process: what torch itself reports
PROBE = """
import json, sys
import torch
from curate.train import threads
threads.usable_cores = lambda: 2
threads.other_load = lambda: float(sys.argv[2])
setting = sys.argv[1] if sys.argv[1] == "auto" else int(sys.argv[1])
before = torch.get_num_threads()
with threads.torch_threads(setting) as t:
    inside = [torch.get_num_threads(), torch.get_num_interop_threads(), t.count]
print(json.dumps({"before": before, "inside": inside, "after": torch.get_num_threads()}))
"""


@pytest.mark.parametrize(
    "env, setting, load, inside",
    [
        ({}, "auto", "0.0", [2, 2, 2]),              # idle: every core
        ({}, "auto", "1.0", [1, 1, 1]),              # one core busy elsewhere: one thread
        ({}, "1", "0.0", [1, 1, 1]),                 # the setting
        ({"OMP_NUM_THREADS": "1"}, "auto", "0.0", [1, 1, 1]),   # the environment over auto
        ({"OMP_NUM_THREADS": "2"}, "auto", "1.0", [2, 2, 2]),   # ... even when the rule would say otherwise
        ({"OMP_NUM_THREADS": "2"}, "1", "0.0", [1, 1, 1]),      # the setting over the environment
        ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"}, "auto", "0.0", [1, 1, 1]),
    ],
)
def test_torch_runs_with_the_chosen_count(env, setting, load, inside):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", PROBE, setting, load], env={**base, **env}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["inside"] == inside
    assert got["after"] == got["before"]  # the caller's count comes back


def test_validation_pass_shows_batches_on_the_training_bar(tmp_path, monkeypatch):
    """Before training its own bar; during training the training bar's text; timings of steps and passes kept."""
    from contextlib import contextmanager

    from transformers import TrainerControl

    from curate.train import callbacks
    from curate.train.callbacks import CurateCallback

    shown: list[tuple] = []

    @contextmanager
    def fake_progress(description, total=None, unit="records"):
        shown.append(("open", description, total, unit))
        yield lambda n=1, **fields: shown.append((description, n, fields))
        shown.append(("close", description))

    monkeypatch.setattr(callbacks, "progress", fake_progress)
    cb = CurateCallback(tmp_path, guard=False, patience=3, min_delta=0.0, plot=False)
    state = SimpleNamespace(log_history=[], global_step=0, max_steps=4, num_input_tokens_seen=0)
    control = TrainerControl()
    val = [object(), object(), object()]  # three validation batches
    for _ in val:
        cb.on_prediction_step(None, state, control, eval_dataloader=val)
    cb.on_evaluate(None, state, control)
    assert shown == [("open", "validation loss", 3, "batches"), ("validation loss", 1, {}), ("validation loss", 1, {}),
                     ("validation loss", 1, {}), ("close", "validation loss")]
    shown.clear()
    cb.on_train_begin(None, state, control)
    cb.on_step_begin(None, state, control)
    state.num_input_tokens_seen, state.global_step = 100, 1
    cb.on_step_end(None, state, control)
    for _ in val:
        cb.on_prediction_step(None, state, control, eval_dataloader=val)
    cb.on_evaluate(None, state, control)
    cb.on_train_end(None, state, control)
    assert shown[0] == ("open", "training", 4, "steps") and shown[1] == ("training", 0, {})
    rate = shown[2][2]["rate"]
    assert shown[2][:2] == ("training", 1) and rate.endswith(" tok/s")
    assert shown[3:] == [("training", 0, {"rate": "validation loss: batch 1/3"}),
                         ("training", 0, {"rate": "validation loss: batch 2/3"}),
                         ("training", 0, {"rate": "validation loss: batch 3/3"}),
                         ("training", 0, {"rate": rate}),  # back to the token rate
                         ("close", "training")]
    assert len(cb.step_seconds) == 1 and len(cb.eval_seconds) == 2


# train and eval for real in a fresh process, the machine's cores and load fixed: the count torch runs with inside
REAL = """
import json, sys
import torch
from transformers import TrainerCallback
from curate.train import threads
threads.usable_cores = lambda: 2
threads.other_load = lambda: float(sys.argv[2])
stage, out, setting = sys.argv[1], sys.argv[3], sys.argv[4]
seen = []
if stage == "train":
    from curate.train import train

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            seen.append(torch.get_num_threads())

    res = train("examples/train/people.jsonl", out, max_steps=1, batch_size=2, grad_accum=1, val_fraction=0.0,
                threads=setting, callbacks=[Probe()]).to_dict()
    recorded = json.load(open(out + "/run_card.json"))["hardware"]["threads"]
else:
    from curate.evaluation import evaluate, model

    real = model.generate
    def generate(*a, **kw):
        seen.append(torch.get_num_threads())
        return real(*a, **kw)
    model.generate = generate
    res = evaluate("examples/train/heldout.jsonl", limit=1, max_new_tokens=2, threads=setting).to_dict()
    recorded = res["threads"]
print(json.dumps({"seen": seen, "summary": res["threads"], "recorded": recorded}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, env, load, setting, expected",
    [
        ("train", {}, "1.0", "auto", Threads(1, "2 usable cores, other processes keeping 1.00 of a core busy: 1 thread")),
        ("train", {"OMP_NUM_THREADS": "1"}, "0.0", "auto", Threads(1, "OMP_NUM_THREADS=1 in the environment")),
        ("eval", {}, "1.0", "auto", Threads(1, "2 usable cores, other processes keeping 1.00 of a core busy: 1 thread")),
        ("eval", {"OMP_NUM_THREADS": "2"}, "0.0", "1", Threads(1, "set by the threads setting")),
    ],
)
def test_train_and_eval_run_with_the_chosen_count(stage, env, load, setting, expected, tmp_path):
    """OMP_NUM_THREADS unset here unless the case sets it: the rule, the environment and the setting for real."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", REAL, stage, load, str(tmp_path / "run"), setting],
                         env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["seen"] == [expected.count]
    assert got["summary"] == got["recorded"] == expected.to_dict()
    assert f"torch threads: {expected.count} ({expected.why})" in " ".join(res.stderr.split())
