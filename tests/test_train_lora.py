"""LoRA on the embedded SmolLM2 model (CPU): loss falls, a killed run resumes, the adapter reloads and merges, eval compares."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import write_table
from curate.errors import UsageError
from curate.inputs import load_any

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "train"
# small and fast: 4 optimizer steps of 2 short packed records
SETTINGS = {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "lr": 1e-3, "warmup_ratio": 0.0, "eval_steps": 2,
            "save_steps": 2, "logging_steps": 1}


def _flat(res) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(res.output.split())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a busy 2-core machine two OpenMP threads wait on each other: one thread runs ~10x faster here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Killed(Exception):
    """Stands in for a kill signal arriving right after a checkpoint is written."""


def _kill_after_first_save():
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise Killed(state.global_step)

    return KillAfterSave()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One interrupted-then-resumed run, plus the base model's and the adapter's loss on the same batch."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

    from curate.embedded import load_tokenizer, resolve_model
    from curate.train import train
    from curate.train.data import prepare

    tmp = tmp_path_factory.mktemp("train")
    people = load_any(EXAMPLES / "people.jsonl")
    data = write_table(people.slice(0, 12), tmp / "train.parquet")
    val = write_table(people.slice(12, 2), tmp / "val.parquet")
    out = tmp / "runs" / "json-task"

    with pytest.raises(Killed):
        train(data, out, val=val, callbacks=[_kill_after_first_save()], **SETTINGS)
    first = sorted(p.name for p in (out / "checkpoints").iterdir())
    result = train(data, out, val=val, **SETTINGS)

    path = resolve_model("embedded")
    tok = load_tokenizer(path)
    batch = DataCollatorWithFlattening()(prepare(data, tok, val_fraction=0.0).train[:4])
    base = AutoModelForCausalLM.from_pretrained(path)
    base.eval()
    with torch.no_grad():
        before = base(**batch, use_cache=False).loss.item()
        tuned = PeftModel.from_pretrained(base, result.outputs["adapter"])
        tuned.eval()
        after = tuned(**batch, use_cache=False).loss.item()
    return {"result": result, "out": out, "data": data, "val": val, "first_checkpoints": first,
            "before": before, "after": after, "tuned": tuned, "tokenizer": tok}


def test_a_few_lora_steps_lower_the_training_loss(run):
    assert run["after"] < 0.8 * run["before"], (run["before"], run["after"])
    m = run["result"].summary["metrics"]
    # 4 steps of 2 rows: 8 of the 12 rows (993 tokens), which 8 fixed by the seed
    assert m["global_step"] == 4 and m["tokens_seen"] == 657


def test_killed_run_resumes_from_its_last_checkpoint(run):
    s = run["result"].summary
    assert run["first_checkpoints"] == ["checkpoint-2"]
    assert s["resumed_from"] == str(run["out"] / "checkpoints" / "checkpoint-2")
    rows = [json.loads(line) for line in (run["out"] / "loss.jsonl").read_text().splitlines()]
    # the curve spans the interruption: train losses for steps 1-4 and evaluations at 0, 2 and 4
    assert [x["step"] for x in rows if "train_loss" in x] == [1, 2, 3, 4]
    assert [x["step"] for x in rows if "eval_loss" in x] == [0, 2, 4]  # 0: the base model, before training
    assert (run["out"] / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_a_changed_config(run):
    from curate.train import train

    with pytest.raises(UsageError, match="different data, base or settings"):
        train(run["data"], run["out"], val=run["val"], **{**SETTINGS, "lr": 5e-4})


def test_adapter_and_run_card(run):
    from curate.dataset import content_hash_file
    from curate.train import TrainConfig

    r, out = run["result"], run["out"]
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32 and cfg["peft_type"] == "LORA"
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000
    mask = os.umask(0)
    os.umask(mask)  # safetensors writes 0600; the adapter's files follow the umask like every other output
    assert {f.stat().st_mode & 0o777 for f in (out / "adapter").iterdir()} == {0o666 & ~mask}
    card = json.loads((out / "run_card.json").read_text())
    assert card["data"] == {"path": str(run["data"]), "sha256": content_hash_file(run["data"]),
                            "val_path": str(run["val"]), "val_sha256": content_hash_file(run["val"])}
    # 12 training rows and the 2 of the validation file; the P95 of 12 lengths is the longest, so none is dropped
    assert card["counts"] == {"rows_in": 14, "train_rows": 12, "val_rows": 2, "dropped_too_long": 0,
                              "dropped_no_assistant": 0, "max_length": 88, "max_length_source": "p95 of data",
                              "val_source": f"file {run['val']}", "train_tokens": 993, "train_label_tokens": 358}
    assert (card["base"], card["qlora"]) == ("embedded", False)
    settings = TrainConfig(**SETTINGS).to_dict()
    # threads say how fast, not what: the card keeps them under hardware, not with the settings
    assert card["config"] == {k: v for k, v in settings.items() if k not in ("base", "qlora", "threads")}
    assert card["hardware"]["threads"]["count"] >= 1 and card["hardware"]["threads"]["why"]
    evals = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    trained = [x["eval_loss"] for x in evals if "eval_loss" in x and x["step"] > 0]
    assert card["metrics"]["eval_loss_best"] == pytest.approx(min(trained))
    assert card["metrics"]["eval_loss_best"] < card["metrics"]["eval_loss_before"]
    assert card["versions"]["peft"] and card["hardware"]["padding_free"] is False  # the CPU default pads
    # the outcome: every row read was kept (trained on or validated with)
    assert (r.counts, r.summary["reasons"]) == ({"in": 14, "kept": 14, "rejected": 0}, {"too_long": 0, "no_assistant": 0})
    assert r.summary["data"] == card["counts"] and r.summary["metrics"] == card["metrics"]
    assert r.summary["config"] == settings and r.summary["best_checkpoint"] == card["best_checkpoint"]
    assert Path(card["best_checkpoint"]).name in {"checkpoint-2", "checkpoint-4"}
    assert r.outputs == {"adapter": str(out / "adapter"), "run_card": str(out / "run_card.json"),
                         "loss": str(out / "loss.jsonl"), "loss_plot": str(out / "loss.png")}


def test_a_finished_run_is_reported_not_trained_further(run):
    from curate.train import train

    again = train(run["data"], run["out"], val=run["val"], **SETTINGS)
    assert again.summary["previously_finished"] is True
    assert again.summary["metrics"] == run["result"].summary["metrics"] and again.counts == run["result"].counts
    assert sorted(p.name for p in (run["out"] / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_no_resume_starts_over_and_takes_exactly_max_steps(run, tmp_path):
    """What `curate run --force train` does: before, the old checkpoint was resumed and one step more taken."""
    import shutil

    from curate.train import train

    out = tmp_path / "run"
    shutil.copytree(run["out"], out)
    fresh = train(run["data"], out, val=run["val"], resume=False, **SETTINGS)
    m, before = fresh.summary["metrics"], run["result"].summary["metrics"]
    assert m["global_step"] == 4 and fresh.summary["resumed_from"] is None
    card = json.loads((out / "run_card.json").read_text())
    assert card["metrics"]["global_step"] == 4 and card["resumed_from"] is None
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "train_loss" in x] == [1, 2, 3, 4]
    # the seed fixes the LoRA init and data order: the killed-and-resumed run and this one train alike
    resumed = [json.loads(line) for line in (run["out"] / "loss.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [x["step"] for x in resumed]
    for x, y in zip(rows, resumed):
        for key in ("train_loss", "eval_loss"):
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-4), (x, y)
    # (train_loss, Trainer's mean over the steps of one attempt, covers steps 3-4 only in the resumed run)
    for key in ("eval_loss_before", "eval_loss_best", "tokens_seen"):
        assert m[key] == pytest.approx(before[key], abs=1e-4), key


def test_merged_model_equals_base_plus_adapter(run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from curate.train import merge

    done = merge(run["out"], tmp_path / "merged")
    merged_dir = Path(done.outputs["model"])
    mask = os.umask(0)
    os.umask(mask)
    assert {f.stat().st_mode & 0o777 for f in merged_dir.iterdir() if f.is_file()} == {0o666 & ~mask}
    assert merged_dir == tmp_path / "merged" and done.summary["base"] == "embedded"
    assert done.summary["adapter"] == str(run["out"] / "adapter") and done.summary["config"] == {"base": None}
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    merged.eval()
    ids = torch.tensor([run["tokenizer"]("Extract: Zoe is a 30-year-old chef from Rome.")["input_ids"]])
    with torch.no_grad():
        want = run["tuned"](input_ids=ids, use_cache=False).logits
        got = merged(input_ids=ids, use_cache=False).logits
        with run["tuned"].disable_adapter():
            plain = run["tuned"](input_ids=ids, use_cache=False).logits
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    assert not torch.allclose(plain, want, atol=1e-3)  # the adapter really changes the model
    assert (merged_dir / "tokenizer.json").exists()
    res = CliRunner().invoke(cli, ["merge", str(run["out"]), "-o", str(merged_dir)])
    assert res.exit_code == 2 and "not empty" in _flat(res)


def test_eval_compares_base_and_adapter(run, tmp_path):
    from curate.evaluation.compliance import Checker

    outp, fails = tmp_path / "eval.parquet", tmp_path / "fail.parquet"
    schema = EXAMPLES / "task.schema.json"
    res = CliRunner().invoke(cli, [
        "eval", "--data", str(EXAMPLES / "heldout.jsonl"), "--adapter", str(run["out"]), "--output-schema",
        str(schema), "--max-new-tokens", "40", "--limit", "3", "-o", str(outp), "--failures", str(fails), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["models"] == ["base", "json-task"] and doc["counts"]["in"] == 3
    t = pq.read_table(outp).to_pylist()
    assert len(t) == 6 and [r["eval_model"] for r in t] == ["base"] * 3 + ["json-task"] * 3
    # stored verdicts agree with re-checking the stored replies, and the summary with the rows
    checker = Checker.build(schema, None)
    for r in t:
        ref = r["messages"][-1]["content"]
        assert checker.check(r["eval_reply"], ref).schema_valid == r["eval_schema_valid"]
    for s in doc["summary"]:
        mine = [r for r in t if r["eval_model"] == s["model"]]
        bucket = [r for r in mine if r["eval_p95_bucket"]]
        assert (s["rows"], s["regex_rate"], s["p95_rows"]) == (3, None, len(bucket))
        for key, col in (("parse_rate", "eval_parses"), ("schema_valid_rate", "eval_schema_valid"),
                         ("exact_match_rate", "eval_exact_match")):
            assert s[key] == round(sum(r[col] for r in mine) / 3, 4), key
            assert s["p95_" + key] == round(sum(r[col] for r in bucket) / len(bucket), 4), key
    # a failure is a wrong format or a wrong task field (age, the schema's one number field)
    assert doc["task"]["task_fields"] == ["age"]
    for r in t:
        assert (r["eval_failure"] is None) == (r["eval_ok"] and r["eval_task_correct"])
    failed = [r for r in t if r["eval_model"] == "json-task" and r["eval_failure"] is not None]
    seeds = pq.read_table(fails)
    assert seeds.num_rows == doc["counts"]["failed"] == len(failed)
    assert sorted(seeds.column("id").to_pylist()) == sorted(r["id"] for r in failed)
    tuned = doc["variants"][1]
    assert tuned["task_accuracy"] == round(sum(r["eval_task_correct"] for r in t[3:]) / 3, 4)
    assert tuned["format_rate"] == doc["summary"][1]["ok_rate"]


def test_packed_batches_give_the_padded_loss(run):
    """The padding-free path trains on exactly what padding would: same tokens, same loss."""
    import torch
    from transformers import DataCollatorWithFlattening

    from curate.train.data import prepare
    from curate.train.stage import PadCollator

    examples = prepare(run["data"], run["tokenizer"], val_fraction=0.0).train[:3]
    packed = DataCollatorWithFlattening()(examples)
    padded = PadCollator(run["tokenizer"].pad_token_id)(examples)
    assert packed["input_ids"].shape[0] == 1 and padded["attention_mask"].sum() == packed["input_ids"].numel()
    with torch.no_grad():
        a = run["tuned"](**packed, use_cache=False).loss
        b = run["tuned"](**padded, use_cache=False).loss
    assert torch.allclose(a, b, atol=1e-4), (a, b)


def test_packed_and_padded_training_see_the_same_tokens_and_loss(run, tmp_path):
    """One Trainer step each way on the same batch: LoRA starts as a no-op, so both losses are the base's."""
    from curate.train import train

    one = {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "val_fraction": 0.0, "logging_steps": 1}
    packed = train(run["data"], tmp_path / "packed", padding_free=True, **one).summary
    padded = train(run["data"], tmp_path / "padded", padding_free=False, **one).summary
    card = json.loads((tmp_path / "packed" / "run_card.json").read_text())
    assert card["hardware"]["padding_free"] is True
    assert packed["metrics"]["tokens_seen"] == padded["metrics"]["tokens_seen"] > 0  # real tokens only, both ways
    assert packed["metrics"]["train_loss"] == pytest.approx(padded["metrics"]["train_loss"], abs=1e-4)


def test_cli_train_json(run, tmp_path):
    res = CliRunner().invoke(cli, ["train", str(run["data"]), "-o", str(tmp_path / "r"), "--max-steps", "1",
                                   "--batch-size", "2", "--grad-accum", "1", "--val-fraction", "0",
                                   "--set", "lora_r=4", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["metrics"]["global_step"] == 1 and doc["config"]["lora_r"] == 4 and doc["data"]["val_rows"] == 0
    assert (doc["stage"], doc["counts"], doc["balanced"]) == ("train", {"in": 12, "kept": 12, "rejected": 0}, True)
    assert json.loads((tmp_path / "r" / "adapter" / "adapter_config.json").read_text())["r"] == 4
