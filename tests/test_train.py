"""Fast tests of `curate train`'s pieces: config, data preparation, overfitting guard, QLoRA guard, CLI errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table, write_table
from curate.errors import UsageError
from curate.train.callbacks import curve_points, guard_check
from curate.train.config import TrainConfig, parse_sets


def _flat(res) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_config_defaults_match_the_design():
    c = TrainConfig()
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.bias, c.task_type) == (16, 32, 0.05, "none", "CAUSAL_LM")
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (c.epochs, c.batch_size, c.grad_accum, c.lr, c.scheduler, c.warmup_ratio) == (3, 4, 4, 2e-4, "cosine", 0.1)
    assert (c.eval_steps, c.save_steps, c.max_length) == (100, 100, None)


def test_config_from_recipe_dict_and_string_overrides():
    c = TrainConfig.from_any({"lora_r": 8, "target_modules": "q_proj, v_proj"}, lr=1e-3, epochs=None)
    assert c.lora_r == 8 and c.target_modules == ["q_proj", "v_proj"] and c.lr == 1e-3 and c.epochs == 3
    c = TrainConfig.from_any(parse_sets(["max-length=64", "guard=false", "bf16=auto", "lora_dropout=0.1"]))
    assert c.max_length == 64 and c.guard is False and c.bf16 == "auto" and c.lora_dropout == 0.1


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"lora_rank": 8}, "unknown train setting(s): lora_rank"),
        ({"lora_r": "eight"}, "lora_r: cannot read 'eight'"),
        ({"val_fraction": 1.5}, "val_fraction must be in [0, 1)"),
        ({"eval_steps": 30, "save_steps": 100}, "must be a multiple of eval_steps"),
    ],
)
def test_config_errors_name_the_setting(cfg, message):
    with pytest.raises(UsageError) as e:
        TrainConfig.from_any(cfg)
    assert message in str(e.value)


def _log(points):
    """A trainer log history: one train-loss log and one eval log per (train, val) pair."""
    out, step = [], 0
    for train, val in points:
        step += 10
        out += [{"loss": train, "step": step}, {"eval_loss": val, "step": step}]
    return out


def test_guard_stops_on_rising_validation_while_training_falls():
    planted = _log([(2.0, 1.50), (1.6, 1.40), (1.2, 1.45), (0.9, 1.52), (0.6, 1.60)])
    reason = guard_check(planted, patience=3)
    assert reason and "validation loss rose for 3 evaluations" in reason and "step 50" in reason
    # one evaluation earlier, val had risen only twice: keep going
    assert guard_check(planted[:-2], patience=3) is None


@pytest.mark.parametrize(
    "points",
    [
        [(2.0, 1.5), (1.6, 1.4), (1.2, 1.3), (0.9, 1.2), (0.6, 1.1)],  # both falling: learning
        [(1.0, 1.5), (1.1, 1.6), (1.2, 1.7), (1.3, 1.8)],  # both rising: diverging, not overfitting
        [(2.0, 1.5), (1.6, 1.6), (1.2, 1.55), (0.9, 1.7), (0.6, 1.8)],  # val rise interrupted
    ],
)
def test_guard_keeps_going_without_the_overfitting_pattern(points):
    assert guard_check(_log(points), patience=3) is None


def test_guard_min_delta_ignores_noise():
    noisy = _log([(2.0, 1.500), (1.6, 1.501), (1.2, 1.502), (0.9, 1.503)])
    assert guard_check(noisy, patience=3) is not None
    assert guard_check(noisy, patience=3, min_delta=0.01) is None


def test_curve_points_average_the_training_logs_between_evaluations():
    hist = [{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2}, {"eval_loss": 1.7, "step": 2}]
    assert curve_points(hist) == [{"step": 2, "eval_loss": 1.7, "train_loss": 1.5}]


def _tiny_rows(n, long_every=0):
    rows = []
    for i in range(n):
        reply = json.dumps({"n": i}) if not long_every or i % long_every else json.dumps({"n": i, "pad": "word " * 200})
        rows.append(make_row([{"role": "user", "content": f"number {i}?"}, {"role": "assistant", "content": reply}]))
    rows.append(make_row([{"role": "user", "content": "no reply here"}]))
    return rows_to_table(rows)


def test_prepare_labels_assistant_tokens_only_and_drops_long_rows(tmp_path):
    from curate.embedded import load_tokenizer, render
    from curate.train.data import IGNORE, prepare, tokenize_table

    path = write_table(_tiny_rows(20, long_every=7), tmp_path / "d.parquet")
    tok = load_tokenizer("embedded")
    td = prepare(path, tok, val_fraction=0.2, max_length=64)
    s = td.summary()
    assert s["rows_in"] == 21 and s["dropped_no_assistant"] == 1
    assert s["dropped_too_long"] == 3  # rows 0, 7, 14 carry a 200-word pad
    assert s["train_rows"] + s["val_rows"] + s["dropped_too_long"] == 20
    assert all(len(e["input_ids"]) <= 64 for e in td.train + td.val)
    ex = td.train[0]
    labelled = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
    assert tok.decode(labelled).startswith('{"n":') and "user" not in tok.decode(labelled)
    # labels follow render()'s assistant mask, the one `curate validate` counts with
    msgs = [{"role": "user", "content": "number 1?"}, {"role": "assistant", "content": '{"n": 1}'}]
    r = render(tok, msgs)
    one = tokenize_table(rows_to_table([make_row(msgs)]), tok, "mem")[0][0]
    assert one["labels"] == [t if m else IGNORE for t, m in zip(r.input_ids, r.assistant_mask)]
    assert 0 < sum(r.assistant_mask) < len(r.input_ids)


def test_prepare_default_max_length_is_p95(tmp_path):
    from curate.embedded import load_tokenizer
    from curate.train.data import percentile, prepare

    path = write_table(_tiny_rows(40, long_every=20), tmp_path / "d.parquet")
    td = prepare(path, load_tokenizer("embedded"), val_fraction=0.0)
    assert td.max_length_source == "p95 of data"
    assert td.dropped_too_long == 2 and td.max_length < 100
    assert percentile([1, 2, 3, 4, 100], 95) == 100 and percentile(list(range(1, 101)), 95) == 95


def test_qlora_without_cuda_fails_before_loading(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from curate.train import train

    # the data file does not even exist: the CUDA check comes first
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        train(tmp_path / "missing.parquet", output=tmp_path / "run", qlora=True)
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "r"), "--qlora"])
    assert res.exit_code == 2 and "--qlora" in _flat(res) and "CUDA" in _flat(res)
    assert not (tmp_path / "r").exists()


def test_cli_train_usage_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["train", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no such file" in _flat(res)
    res = runner.invoke(cli, ["train", "x.parquet", "-o", str(tmp_path / "r"), "--set", "lora_r"])
    assert res.exit_code == 2 and "KEY=VALUE" in _flat(res)
    res = runner.invoke(cli, ["train", "x.parquet", "-o", str(tmp_path / "r"), "--set", "nonsense=1"])
    assert res.exit_code == 2 and "unknown train setting(s): nonsense" in _flat(res)


def test_guard_callback_stops_the_trainer_and_writes_curves(tmp_path):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from curate.train.callbacks import CurateCallback

    cb = CurateCallback(tmp_path, guard=True, patience=3, min_delta=0.0)
    state = SimpleNamespace(log_history=_log([(2.0, 1.50), (1.6, 1.40), (1.2, 1.45)]), global_step=30)
    control = TrainerControl()
    cb.on_evaluate(None, state, control)
    assert not control.should_training_stop and cb.stop_reason is None
    state.log_history += _log([(0.9, 1.52), (0.6, 1.60)])
    for e in state.log_history[-4:]:
        e["step"] += 30
    cb.on_evaluate(None, state, control)
    assert control.should_training_stop and "overfitting" in cb.stop_reason
    rows = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [r["eval_loss"] for r in rows if "eval_loss" in r] == [1.50, 1.40, 1.45, 1.52, 1.60]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"

    off = CurateCallback(tmp_path, guard=False, patience=3, min_delta=0.0)
    control = TrainerControl()
    off.on_evaluate(None, state, control)
    assert not control.should_training_stop
