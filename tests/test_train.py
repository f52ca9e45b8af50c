"""Fast tests of `curate train`'s pieces: config, data preparation, overfitting guard, QLoRA guard, CLI errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table, write_table
from curate.errors import UsageError
from curate.train.callbacks import curve_points, guard_check
from curate.train.config import MergeConfig, TrainConfig, parse_sets


def _flat(res) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_config_defaults_match_the_design():
    c = TrainConfig()
    assert (c.base, c.qlora) == ("embedded", False)
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.bias, c.task_type) == (16, 32, 0.05, "none", "CAUSAL_LM")
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (c.epochs, c.batch_size, c.grad_accum, c.lr, c.scheduler, c.warmup_ratio) == (3, 4, 4, 2e-4, "cosine", 0.1)
    assert (c.eval_steps, c.save_steps, c.max_length) == (100, 100, None)
    assert (c.padding_free, c.bf16, c.gradient_checkpointing) == ("auto", "auto", "auto")


def test_config_from_recipe_dict_and_string_overrides():
    c = TrainConfig.build({"lora_r": 8, "target_modules": "q_proj, v_proj"}, lr=1e-3, epochs=None)
    assert (c.lora_r, c.target_modules, c.lr, c.epochs) == (8, ["q_proj", "v_proj"], 1e-3, 3.0)
    c = TrainConfig.build(parse_sets(["max-length=64", "guard=false", "bf16=auto", "lora_dropout=0.1",
                                      "padding_free=TRUE", "gradient_checkpointing=off", "base=/models/x"]))
    assert (c.max_length, c.guard, c.bf16, c.lora_dropout) == (64, False, "auto", 0.1)
    assert (c.padding_free, c.gradient_checkpointing, c.base) == (True, False, "/models/x")
    assert TrainConfig.build(parse_sets(["max_length=none"])).max_length is None


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"lora_rank": 8}, "lora_rank: unknown key; did you mean 'lora_r'?"),
        ({"lora_r": "eight"}, "lora_r: input should be a valid integer, unable to parse string as an integer (got 'eight')"),
        ({"lora_r": 0}, "lora_r: input should be greater than or equal to 1 (got 0)"),
        ({"val_fraction": 1.5}, "val_fraction: input should be less than 1 (got 1.5)"),
        ({"eval_steps": 30, "save_steps": 100},
         "save_steps: must be a multiple of eval_steps (30) so the best checkpoint can be kept (got 100)"),
        ({"bf16": "maybe"}, "bf16: expected auto, true or false (got 'maybe')"),
        ({"target_modules": []}, "target_modules: name at least one module (e.g. q_proj)"),
        ({"max_length": 4}, "max_length: input should be greater than or equal to 8 (got 4)"),
        ({"scheduler": "cosine_with_min_lr"}, "scheduler: input should be 'linear', 'cosine', "),
    ],
)
def test_config_errors_name_the_setting(cfg, message):
    with pytest.raises(UsageError) as e:
        TrainConfig.build(cfg)
    assert str(e.value).startswith("invalid train settings: ") and message in str(e.value)


def test_cli_options_follow_the_config():
    import click

    for command, config in (("train", TrainConfig), ("merge", MergeConfig)):
        params = {p.name: p for p in cli.commands[command].params}
        for name, info in config.model_fields.items():
            p = params[name]
            assert "--" + name.replace("_", "-") in p.opts and p.default is None, name
            assert p.help.startswith(info.description), name
    params = {p.name: p for p in cli.commands["train"].params}
    ranges = {"lora_r": (1, None, False, False), "batch_size": (1, None, False, False), "max_steps": (-1, None, False, False),
              "max_length": (8, None, False, False), "val_fraction": (0, 1, False, True), "lora_dropout": (0, 1, False, True),
              "lr": (0, None, True, False), "length_percentile": (0, 100, True, False)}
    for name, (lo, hi, lo_open, hi_open) in ranges.items():
        t = params[name].type
        assert (t.min, t.max, t.min_open, t.max_open) == (lo, hi, lo_open, hi_open), name
    assert list(params["bias"].type.choices) == ["none", "all", "lora_only"]
    assert list(params["scheduler"].type.choices) == ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                                "constant_with_warmup", "inverse_sqrt"]
    assert params["guard"].opts == ["--guard"] and params["guard"].secondary_opts == ["--no-guard"]
    assert isinstance(params["epochs"].type, click.FloatRange) and isinstance(params["seed"].type, click.IntRange)
    shown = _flat(CliRunner().invoke(cli, ["train", "--help"]))
    for text in ("--base TEXT", "[default: embedded]", "--qlora / --no-qlora", "--lora-r INTEGER RANGE", "[x>=1]",
                 "--target-modules MODULES", "[default: q_proj,k_proj,v_proj,o_proj] (','-separated)",
                 "--padding-free auto|true|false", "--val-fraction FLOAT RANGE", "[0<=x<1]", "--set KEY=VALUE",
                 "--resume / --no-resume", "--val PATH"):
        assert text in shown, text
    res = CliRunner().invoke(cli, ["train", "d.jsonl", "-o", "r", "--lora-r", "0"])
    assert res.exit_code == 2 and "0 is not in the range x>=1" in _flat(res)
    res = CliRunner().invoke(cli, ["train", "d.jsonl", "-o", "r", "--scheduler", "cosine_with_min_lr"])
    assert res.exit_code == 2 and "'cosine_with_min_lr' is not one of" in _flat(res)


@pytest.fixture
def fake_library_train(monkeypatch):
    """`curate train` with the library call replaced: records the config the CLI built."""
    import curate.train
    from curate.outcome import StageOutcome

    seen = {}

    def fake(data, output, config, *, val=None, resume=True):
        seen.update(config=config, val=val, resume=resume)
        return StageOutcome("train", {"in": 3, "kept": 2, "rejected": 1},
                            {"adapter": f"{output}/adapter", "run_card": f"{output}/run_card.json", "loss_plot": f"{output}/loss.png"},
                            {"config": config.to_dict(), "stopped_early": None,
                             "metrics": {"global_step": 7, "train_loss": 0.25, "eval_loss_best": 0.125},
                             "data": {"train_rows": 2, "dropped_too_long": 1, "max_length": 64}})

    monkeypatch.setattr(curate.train, "train", fake)
    return seen


def test_cli_set_is_a_second_spelling_of_the_flags(fake_library_train, tmp_path):
    runner = CliRunner()

    def config(*args):
        res = runner.invoke(cli, ["train", "d.jsonl", "-o", str(tmp_path / "r"), *args])
        assert res.exit_code == 0, res.output
        return fake_library_train["config"]

    by_flags = config("--lora-r", "4", "--target-modules", "q_proj,v_proj", "--no-guard", "--bf16", "true",
                      "--max-length", "64", "--lr", "1e-3", "--base", "/models/x", "--qlora")
    by_sets = config("--set", "lora_r=4", "--set", "target_modules=q_proj,v_proj", "--set", "guard=false",
                     "--set", "bf16=true", "--set", "max-length=64", "--set", "lr=1e-3", "--set", "base=/models/x",
                     "--set", "qlora=true")
    assert by_flags == by_sets
    assert (by_flags.lora_r, by_flags.target_modules, by_flags.guard, by_flags.bf16) == (4, ["q_proj", "v_proj"], False, True)
    assert (by_flags.base, by_flags.qlora) == ("/models/x", True)
    # a flag wins over --set of the same setting; the others still apply
    both = config("--lora-r", "4", "--set", "lora_r=8", "--set", "lora_dropout=0.2", "--no-resume")
    assert (both.lora_r, both.lora_dropout, fake_library_train["resume"]) == (4, 0.2, False)
    res = runner.invoke(cli, ["train", "d.jsonl", "-o", str(tmp_path / "r"), "--max-length", "64"])
    assert _flat(res) == (f"7 steps, 2 training rows (1 dropped as longer than 64 tokens); train_loss 0.2500, "
                          f"eval_loss_best 0.1250 adapter: {tmp_path}/r/adapter run card: {tmp_path}/r/run_card.json "
                          f"curves: {tmp_path}/r/loss.png")


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
    assert res.exit_code == 2 and "invalid train settings: nonsense: unknown key; known: " in _flat(res)
    res = runner.invoke(cli, ["train", "x.parquet", "-o", str(tmp_path / "r"), "--set", "lora_r=eight"])
    assert res.exit_code == 2 and "lora_r: input should be a valid integer" in _flat(res)
    assert not (tmp_path / "r").exists()


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


@pytest.fixture
def fake_run(monkeypatch):
    """train() for real up to the Trainer; the training itself replaced by writing checkpoints and a card as it would.

    A call trains to max_steps, or is killed after the step count queued in `steps`; each call's
    resume_from and the run folder as it found it are recorded in `calls`.
    """
    from curate.train import stage

    calls: list[dict] = []
    steps: list[int] = []

    def run(td, cfg, model_path, run_dir, fp, resume_from, callbacks, threads):
        calls.append({"resume_from": resume_from, "files": sorted(p.name for p in run_dir.iterdir()),
                      "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*"))})
        step = steps.pop(0) if steps else cfg.max_steps
        done = step >= cfg.max_steps
        ckpt = run_dir / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        control = {"TrainerControl": {"args": {"should_training_stop": done}}}
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": cfg.max_steps,
                                                              "stateful_callbacks": control}))
        if not done:
            raise KeyboardInterrupt  # killed after this checkpoint
        (run_dir / "adapter").mkdir()
        (run_dir / "adapter" / "adapter_config.json").write_text("{}")
        (run_dir / "loss.jsonl").write_text("")
        card = {"base": fp["base"], "qlora": fp["qlora"], "config": fp["config"], "counts": td.summary(),
                "data": {"path": fp["data"], "sha256": fp["data_sha256"], "val_path": fp["val"],
                         "val_sha256": fp["val_sha256"]},
                "metrics": {"global_step": step}, "stopped_early": None,
                "resumed_from": str(resume_from) if resume_from else None, "best_checkpoint": str(ckpt),
                "hardware": {"threads": threads.to_dict()}}
        (run_dir / "run_card.json").write_text(json.dumps(card))
        return card

    monkeypatch.setattr(stage, "_run", run)
    return calls, steps


def test_train_outcome_counts_and_summary(fake_run, tmp_path):
    from curate.train import train

    data = write_table(_tiny_rows(20, long_every=7), tmp_path / "d.parquet")
    out = train(data, tmp_path / "run", max_steps=4, max_length=64, val_fraction=0.2, threads=1)
    # 21 rows: 3 carry a 200-word pad (too long), 1 has no assistant reply; 17 left, 4 of them validation
    assert out.counts == {"in": 21, "kept": 17, "rejected": 4} and out.balanced
    s = out.summary
    assert s["reasons"] == {"too_long": 3, "no_assistant": 1}
    assert (s["data"]["train_rows"], s["data"]["val_rows"], s["data"]["max_length"]) == (13, 4, 64)
    assert s["config"] == TrainConfig(max_steps=4, max_length=64, val_fraction=0.2, threads=1).to_dict()
    assert (s["previously_finished"], s["resumed_from"], s["metrics"]) == (False, None, {"global_step": 4})
    assert s["threads"] == {"count": 1, "why": "set by the threads setting"}
    run = tmp_path / "run"
    assert out.outputs == {"adapter": str(run / "adapter"), "run_card": str(run / "run_card.json"),
                           "loss": str(run / "loss.jsonl")}
    doc = out.to_dict()
    assert (doc["stage"], doc["counts"], doc["balanced"], doc["passed"]) == ("train", out.counts, True, True)
    # the same rows from a table in memory (no file): same counts
    from curate.inputs import open_input

    table = open_input(data).read()
    again = train(table, tmp_path / "run2", max_steps=4, max_length=64, val_fraction=0.2, threads=1)
    assert again.counts == out.counts and again.summary["data"] == s["data"]


def test_resume_continues_a_killed_run_and_starts_over_exactly(fake_run, tmp_path):
    from curate.train import train

    calls, steps = fake_run
    data = write_table(_tiny_rows(10), tmp_path / "d.parquet")
    run = tmp_path / "run"
    settings = {"max_steps": 4, "eval_steps": 2, "save_steps": 2}

    steps.append(2)  # killed after checkpoint-2
    with pytest.raises(KeyboardInterrupt):
        train(data, run, **settings)
    (run / "checkpoints" / "checkpoint-3").mkdir()  # killed while saving: its trainer state is cut
    (run / "checkpoints" / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3, "max_')
    out = train(data, run, **settings, threads=2)  # how fast is not what: another thread count resumes
    assert calls[-1]["resume_from"] == run / "checkpoints" / "checkpoint-2"
    assert "threads" not in json.loads((run / "run_started.json").read_text())["config"]
    assert out.summary["resumed_from"] == str(run / "checkpoints" / "checkpoint-2")

    # the same command again: the finished run is reported, not trained a step further
    again = train(data, run, **settings, threads=1)
    assert len(calls) == 2 and again.summary["previously_finished"] is True
    assert again.summary["metrics"] == {"global_step": 4} and again.counts == out.counts

    # different settings on its checkpoints are refused; resume=False starts over
    with pytest.raises(UsageError, match="different data, base or settings"):
        train(data, run, **settings, lr=1e-3)
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "keep.txt").write_text("mine")
    fresh = train(data, run, resume=False, **settings)
    # before training, what the earlier run wrote was gone (checkpoints, adapter, card, curves); other files stay
    assert calls[-1] == {"resume_from": None, "files": ["checkpoints", "notes.txt", "run_started.json"],
                         "checkpoints": ["keep.txt"]}
    assert fresh.summary["resumed_from"] is None and fresh.summary["previously_finished"] is False
    assert json.loads((run / "run_started.json").read_text())["config"]["max_steps"] == 4

    # a final checkpoint whose card was never written (killed while saving): resuming would add a step, so start over
    (run / "run_card.json").unlink()
    train(data, run, **settings)
    assert calls[-1]["resume_from"] is None and calls[-1]["checkpoints"] == ["keep.txt"]
