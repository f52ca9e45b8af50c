"""`curate validate` on the command line: exit codes, --json, the quarantine file, the rendered table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from curate.cli import cli

ROOT = Path(__file__).resolve().parents[1]
TOY = "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"


def run(*args: str):
    return CliRunner().invoke(cli, ["validate", *map(str, args)], obj={})


def test_cookbook_toy_file_passes_with_warnings_and_tokens(shared_data: Path, tmp_path: Path) -> None:
    res = run(shared_data / TOY, "--max-tokens", 512, "--json", "-o", tmp_path / "v.parquet")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["warnings"] == {"no_system_message": 1, "no_user_message": 1, "token_limit_exceeded": 1,
                               "cut_before_eos": 1}
    assert doc["errors"] == {} and doc["counts"] == {"in": 5, "kept": 5, "rejected": 0}
    assert (doc["stage"], doc["balanced"], doc["passed"], doc["failure"]) == ("validate", True, True, None)
    assert doc["outputs"] == {"valid": str(tmp_path / "v.parquet"), "quarantine": str(tmp_path / "v.quarantine.parquet")}
    assert doc["config"]["tokenizer"] == "auto" and doc["config"]["max_tokens"] == 512
    assert doc["tokens"]["over_limit"] == 1 and doc["tokens"]["tokens"]["max"] == 8033
    assert pq.read_table(tmp_path / "v.parquet").num_rows == 5


def test_errors_over_the_rate_exit_1_and_go_to_the_quarantine(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"
    q = tmp_path / "q.parquet"
    res = run(src, "--no-tokens", "--quarantine", q)
    assert res.exit_code == 1
    assert "empty_content" in res.output and "line 1187" in res.output
    assert "2/2017 records with errors (0.099%) exceeds the allowed 0.0%" in res.output
    table = pq.read_table(q).to_pylist()
    assert [r["source"]["line"] for r in table] == [1187, 9297]
    assert table[0]["validate_codes"] == ["empty_content", "no_system_message"]
    assert run(src, "--no-tokens", "--max-error-rate", 0.01).exit_code == 0
    # with -o and no --quarantine, the rows with errors go beside the valid rows
    assert run(src, "--no-tokens", "-o", tmp_path / "valid.parquet").exit_code == 1
    assert pq.read_table(tmp_path / "valid.quarantine.parquet").num_rows == 2


def test_output_schema_compliance_on_the_example(tmp_path: Path) -> None:
    ex = ROOT / "examples" / "validate"
    res = run(ex / "sentiment.jsonl", "--output-schema", ex / "task.schema.json", "--no-tokens", "--json",
              "--max-error-rate", 0.5)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["compliance"]["records_compliant"] == 7 and doc["compliance"]["records_checked"] == 10
    assert doc["counts"] == {"in": 10, "kept": 7, "rejected": 3} and doc["passed"]
    assert doc["errors"] == {"output_not_json": 2, "output_schema_violation": 1}
    assert {m["kind"] for m in doc["mixed_formats"]} == {"reply_formats", "system_prompts"}
    table = run(ex / "sentiment.jsonl", "--output-schema", ex / "task.schema.json", "--no-tokens")
    assert table.exit_code == 1
    assert "output-format compliance (schema): 7/10 records = 70.0%" in table.output
    assert "mixed formats: assistant replies mix formats: 80% json, 20% prose" in table.output


def test_usage_errors_exit_2(shared_data: Path, tmp_path: Path) -> None:
    toy = shared_data / TOY
    res = run(toy, "--schema", "nonesuch", "--no-tokens")
    assert res.exit_code == 2 and "unknown schema 'nonesuch'" in res.output
    res = run(toy, "--schema", "report", "--no-tokens")  # a schema of curate's own documents describes no record
    assert res.exit_code == 2 and "one of the input formats' schemas: alpaca, openai-chat, preference" in res.output
    assert "run-recipe" not in res.output
    res = run(toy, "--output-regex", "x", "--output-schema", ROOT / "examples/validate/task.schema.json", "--no-tokens")
    assert res.exit_code == 2 and "not both" in res.output
    res = run(toy, "--no-tokens", "--max-tokens", 100)
    assert res.exit_code == 2 and "max_tokens needs a tokenizer" in res.output
    res = run(toy, "--no-tokens", "--max-error-rate", 1.5)
    assert res.exit_code == 2 and "1.5 is not in the range 0<=x<=1" in res.output
    res = run(tmp_path / "missing.jsonl")
    assert res.exit_code == 2 and "no such file" in res.output
    res = run(toy, "--tokenizer", tmp_path / "no-tokenizer-here")
    assert res.exit_code == 2 and "not a local folder" in res.output


def test_empty_file_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = run(empty, "--no-tokens")
    assert res.exit_code == 1 and "no records read" in res.output


def test_validating_a_canonical_parquet_keeps_counts_balanced(shared_data: Path, tmp_path: Path) -> None:
    from curate.ingest import ingest

    ingest([shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json"], tmp_path / "c.parquet")
    res = run(tmp_path / "c.parquet", "--no-tokens", "--json", "--max-error-rate", 0.01,
              "-o", tmp_path / "v.parquet", "--quarantine", tmp_path / "q.parquet")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "canonical"
    assert doc["errors"] == {"mojibake": 1}
    assert doc["counts"] == {"in": 300, "kept": 299, "rejected": 1}
    assert pq.read_table(tmp_path / "q.parquet").num_rows == 1
    assert run(tmp_path / "c.parquet", "--schema", "openai-chat", "--no-tokens").exit_code == 2


def test_every_setting_is_a_flag_with_the_configs_range_and_help() -> None:
    import annotated_types as at
    import click

    from curate.validate import ValidateConfig

    params = {p.name: p for p in cli.commands["validate"].params}
    settings = ValidateConfig.model_fields
    assert set(params) == set(settings) | {"input", "output", "quarantine", "as_json", "engine", "ray_address"}
    help_text = CliRunner().invoke(cli, ["validate", "--help"], terminal_width=200).output
    for name, info in settings.items():
        p = params[name]
        flag = "--" + name.replace("_", "-")
        assert p.opts == [flag] and p.default is None, name  # None: the config's default applies
        assert info.description in " ".join(p.help.split()), name
        assert flag in help_text, name
        if info.annotation is bool:
            assert p.secondary_opts == ["--no-" + flag[2:]], name
    ranges = {n: (p.type.min, p.type.max) for n, p in params.items() if isinstance(p.type, click.types._NumberRangeBase)}
    assert ranges == {"max_tokens": (1, None), "show_mask": (0, None), "max_error_rate": (0, 1), "batch_size": (1, None),
                      "workers": (1, None)}
    for name, (low, high) in ranges.items():
        meta = settings[name].metadata
        assert [m.ge for m in meta if isinstance(m, at.Ge)] == [low]
        assert [m.le for m in meta if isinstance(m, at.Le)] == ([high] if high is not None else [])
    assert "--no-tokens" in help_text and "[default: auto]" in help_text


def test_flags_reach_the_config(shared_data: Path, tmp_path: Path) -> None:
    res = run(shared_data / TOY, "--no-tokens", "--allow-consecutive-user", "--origin", "production",
              "--max-error-rate", 0.5, "--schema", "openai-chat", "--output-regex", ".*", "--batch-size", 2,
              "--workers", 3, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"] == {
        "schema": "openai-chat", "tokens": False, "tokenizer": "auto", "max_tokens": None, "output_schema": None,
        "output_regex": ".*", "allow_consecutive_user": True, "max_error_rate": 0.5, "origin": "production",
        "batch_size": 2, "workers": 3, "show_mask": 0}


def test_workers_default_to_the_usable_cores(shared_data: Path) -> None:
    from curate.engine import usable_cores

    res = run(shared_data / TOY, "--no-tokens", "--json")
    assert json.loads(res.stdout)["config"]["workers"] == usable_cores()


def test_findings_table_fits_80_columns(shared_data: Path) -> None:
    """A narrow terminal gets code, records and a where-and-example cell; a wide one a column each."""
    src = shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json"
    narrow = CliRunner().invoke(cli, ["validate", str(src), "--no-tokens"], env={"COLUMNS": "80"})
    rows = [line for line in narrow.stderr.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    assert rows and all(len(line) <= 80 for line in rows)
    assert "│ mojibake               │       1 │ line 286: messages[1].content: 'Ã©' looks │" in narrow.stderr
    wide = CliRunner().invoke(cli, ["validate", str(src), "--no-tokens"], env={"COLUMNS": "160"})
    assert "severity" in wide.stderr and "┃ where" in wide.stderr
