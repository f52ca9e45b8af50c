"""The public API and the CLI shell: __all__ is importable, --help is instant and lists every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import curate
from curate.errors import RecipeError
from curate.recipe import load_schema, validate

PUBLIC = [
    "__version__", "CurateError", "InputError", "MissingDependency", "RecipeError", "ThresholdExceeded", "UsageError",
    "SCHEMA", "make_row", "read_dataset", "write_table", "open_input", "load_any", "StageOutcome",
    "IngestConfig", "ExportConfig", "ValidateConfig", "DedupeConfig", "ReportConfig", "SynthConfig", "TrainConfig",
    "MergeConfig", "EvalConfig", "ingest_table", "export", "CODES", "synthesize", "start_local_teacher", "merge",
    "evaluate", "run_recipe", "ScoreConfig",
]


def test_all_is_exactly_the_public_names_and_each_exists():
    assert curate.__all__ == PUBLIC
    for name in curate.__all__:
        assert hasattr(curate, name), name


def test_names_resolve_lazily():
    code = (
        "import sys, json\n"
        "import curate\n"
        "before = sorted(m for m in sys.modules if m.startswith('curate.'))\n"
        "from curate import synthesize\n"
        "from curate.dedupe import dedupe\n"
        "import curate.dedupe\n"
        "print(json.dumps({'before': before, 'synth': 'curate.synth' in sys.modules,\n"
        "                  'dedupe': type(dedupe).__name__, 'package': type(curate.dedupe).__name__}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out == {"before": [], "synth": True, "dedupe": "function", "package": "module"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        curate.nope  # noqa: B018


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from curate.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'openai', 'llama_cpp', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print(json.dumps({'code': r.exit_code, 'out': r.output, 'heavy': heavy}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["code"] == 0
    assert out["heavy"] == []
    for command in ("ingest", "export", "validate", "dedupe", "report", "synth", "train", "eval", "merge", "run",
                    "score"):
        assert f"  {command}" in out["out"], command


def test_recipe_errors_name_key_and_line(tmp_path):
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"a": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}},
    }
    f = tmp_path / "r.yaml"
    f.write_text("a:\n  n: 9\nb: 1\n")
    from curate.recipe import load_yaml

    with pytest.raises(RecipeError) as err:
        validate(load_yaml(f), schema, str(f))
    text = str(err.value)
    assert "a.n (line 2): 9 is greater than the maximum of 3" in text
    assert "b (line 3): unknown key" in text
    f.write_text("a: [1,\n")
    with pytest.raises(RecipeError, match=r"line \d"):
        load_yaml(f)


def test_unknown_schema_is_a_usage_error():
    from curate.errors import UsageError

    with pytest.raises(UsageError, match="unknown schema"):
        load_schema("no-such-schema")
