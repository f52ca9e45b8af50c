"""LoRA on the embedded SmolLM2 model (CPU): loss falls, a killed run resumes, the adapter reloads and merges, eval compares."""

from __future__ import annotations

import json
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
        train(data, output=out, val=val, callbacks=[_kill_after_first_save()], **SETTINGS)
    first = sorted(p.name for p in (out / "checkpoints").iterdir())
    result = train(data, output=out, val=val, **SETTINGS)

    path = resolve_model("embedded")
    tok = load_tokenizer(path)
    batch = DataCollatorWithFlattening()(prepare(data, tok, val_fraction=0.0).train[:4])
    base = AutoModelForCausalLM.from_pretrained(path)
    base.eval()
    with torch.no_grad():
        before = base(**batch, use_cache=False).loss.item()
        tuned = PeftModel.from_pretrained(base, str(result.adapter_dir))
        tuned.eval()
        after = tuned(**batch, use_cache=False).loss.item()
    return {"result": result, "out": out, "data": data, "val": val, "first_checkpoints": first,
            "before": before, "after": after, "tuned": tuned, "tokenizer": tok}


def test_a_few_lora_steps_lower_the_training_loss(run):
    assert run["after"] < 0.8 * run["before"], (run["before"], run["after"])
    m = run["result"].metrics
    assert m["global_step"] == 4 and m["tokens_seen"] > 0


def test_killed_run_resumes_from_its_last_checkpoint(run):
    r = run["result"]
    assert run["first_checkpoints"] == ["checkpoint-2"]
    assert r.resumed_from and r.resumed_from.endswith("checkpoint-2")
    rows = [json.loads(line) for line in (run["out"] / "loss.jsonl").read_text().splitlines()]
    # the curve spans the interruption: train losses for steps 1-4 and evaluations at 0, 2 and 4
    assert [x["step"] for x in rows if "train_loss" in x] == [1, 2, 3, 4]
    assert [x["step"] for x in rows if "eval_loss" in x] == [0, 2, 4]  # 0: the base model, before training
    assert (run["out"] / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_a_changed_config(run):
    from curate.train import train

    with pytest.raises(UsageError, match="different data, base or settings"):
        train(run["data"], output=run["out"], val=run["val"], **{**SETTINGS, "lr": 5e-4})


def test_adapter_and_run_card(run):
    r, out = run["result"], run["out"]
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32 and cfg["peft_type"] == "LORA"
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000
    card = json.loads((out / "run_card.json").read_text())
    from curate.dataset import content_hash_file

    assert card["data"]["sha256"] == content_hash_file(run["data"])
    assert card["counts"]["train_rows"] + card["counts"]["dropped_too_long"] == 12
    assert card["counts"]["val_rows"] + card["counts"]["train_rows"] + card["counts"]["dropped_too_long"] <= 14
    assert card["config"]["lr"] == 1e-3 and card["config"]["lora_r"] == 16
    evals = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    trained = [x["eval_loss"] for x in evals if "eval_loss" in x and x["step"] > 0]
    assert card["metrics"]["eval_loss_best"] == pytest.approx(min(trained))
    assert card["metrics"]["eval_loss_best"] < card["metrics"]["eval_loss_before"]
    assert card["versions"]["peft"] and card["hardware"]["padding_free"] is False  # the CPU default pads
    assert r.best_checkpoint and Path(r.best_checkpoint).name in {"checkpoint-2", "checkpoint-4"}


def test_merged_model_equals_base_plus_adapter(run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from curate.train import merge

    merged_dir = merge(run["out"], tmp_path / "merged")
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
    assert doc["models"] == ["base", "json-task"] and doc["rows"] == 3
    for s in doc["summary"]:
        for key in ("parse_rate", "schema_valid_rate", "exact_match_rate", "p95_schema_valid_rate"):
            assert 0.0 <= s[key] <= 1.0
        assert s["regex_rate"] is None and s["p95_rows"] >= 1
    t = pq.read_table(outp).to_pylist()
    assert len(t) == 6 and {r["eval_model"] for r in t} == {"base", "json-task"}
    # stored verdicts agree with re-checking the stored replies, and the summary with the rows
    checker = Checker.build(schema, None)
    for r in t:
        ref = r["messages"][-1]["content"]
        assert checker.check(r["eval_reply"], ref).schema_valid == r["eval_schema_valid"]
    for s in doc["summary"]:
        mine = [r for r in t if r["eval_model"] == s["model"]]
        assert s["schema_valid_rate"] == round(sum(r["eval_schema_valid"] for r in mine) / 3, 4)
    failed = [r for r in t if r["eval_model"] == "json-task" and not r["eval_ok"]]
    seeds = pq.read_table(fails)
    assert seeds.num_rows == doc["failures_count"] == len(failed)
    assert sorted(seeds.column("id").to_pylist()) == sorted(r["id"] for r in failed)


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
    packed = train(run["data"], output=tmp_path / "packed", padding_free=True, **one)
    padded = train(run["data"], output=tmp_path / "padded", padding_free=False, **one)
    card = json.loads((tmp_path / "packed" / "run_card.json").read_text())
    assert card["hardware"]["padding_free"] is True
    assert packed.metrics["tokens_seen"] == padded.metrics["tokens_seen"] > 0  # real tokens only, both ways
    assert packed.metrics["train_loss"] == pytest.approx(padded.metrics["train_loss"], abs=1e-4)


def test_cli_train_json(run, tmp_path):
    res = CliRunner().invoke(cli, ["train", str(run["data"]), "-o", str(tmp_path / "r"), "--max-steps", "1",
                                   "--batch-size", "2", "--grad-accum", "1", "--val-fraction", "0",
                                   "--set", "lora_r=4", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["metrics"]["global_step"] == 1 and doc["config"]["lora_r"] == 4 and doc["counts"]["val_rows"] == 0
    assert json.loads((tmp_path / "r" / "adapter" / "adapter_config.json").read_text())["r"] == 4
