"""Recipes from someone else cannot leave their folder: no file outside read, no secret sent where the
recipe says, nothing curate did not write deleted, no unbounded template; `--trust-recipe` lifts the first two."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.pipeline import run_recipe
from curate.pipeline.checks import preflight
from curate.pipeline.stages import STAGE_NAMES
from curate.pipeline.workdir import LEDGER
from curate.recipe import load_yaml
from curate.synth import load_synth_recipe, synthesize
from curate.trust import RecipeRefused
from tests.fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
OUTSIDE = "is outside the recipe's folder and the current directory; pass --trust-recipe to allow it"
SKIP_ALL_BUT_INGEST = "skip: [validate, dedupe, report, synth, final, train, eval]\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_line(output: str) -> str:
    """The CLI's message with the console's soft line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture
def proj(tmp_path, monkeypatch):
    """The current directory, holding recipes/ with a data file; a secret file lies outside both."""
    proj = tmp_path / "proj"
    (proj / "recipes").mkdir(parents=True)
    shutil.copy(DEMO / "train.jsonl", proj / "recipes" / "train.jsonl")
    write(tmp_path / "outside" / "secret.txt", "TOP-SECRET-CONTENT 42\n")
    write(tmp_path / "outside" / "s.json", '{"type": "object"}\n')
    monkeypatch.chdir(proj)
    return proj


def check(recipe: Path, **kw) -> None:
    preflight(load_yaml(recipe), recipe, stages=STAGE_NAMES, workdir=kw.pop("workdir", "w"), **kw)


# ---- reading files


def test_every_path_key_outside_is_refused_at_once_and_allowed_with_trust(proj):
    write(proj / "recipes" / "r.yaml", """
        name: t
        data:
          train: [train.jsonl, ../../outside/secret.txt]
          eval:
            - /etc/passwd
        validate:
          output_schema: ../../outside/s.json
          tokenizer: ../../outside
          schema: ../../outside/s.json
        eval:
          output_schema: ../../outside/s.json
          base: embedded
        train:
          base: ../../outside
        synth:
          teacher: local
          api_key_env: OTHER_SECRET
          recipe:
            name: s
            prompt: "{{ prompt }}"
            seeds: ../../outside/secret.txt
            grounding:
              documents: ["../../outside/*.txt"]
        """)
    with pytest.raises(RecipeRefused) as err:
        check(Path("recipes/r.yaml"))
    head = "recipe recipes/r.yaml: "
    assert str(err.value).splitlines() == [
        f"{head}data.train.1 (line 3): '../../outside/secret.txt' {OUTSIDE}",
        f"{head}data.eval.0 (line 5): '/etc/passwd' {OUTSIDE}",
        f"{head}validate.schema (line 9): '../../outside/s.json' {OUTSIDE}",
        f"{head}validate.tokenizer (line 8): '../../outside' {OUTSIDE}",
        f"{head}validate.output_schema (line 7): '../../outside/s.json' {OUTSIDE}",
        f"{head}train.base (line 14): '../../outside' {OUTSIDE}",
        f"{head}eval.output_schema (line 11): '../../outside/s.json' {OUTSIDE}",
        (f"{head}synth.api_key_env (line 17): a recipe may not choose which environment variable is sent as the "
         "API key ('OTHER_SECRET'); pass --trust-recipe to allow it"),
        f"{head}synth.recipe.seeds (line 21): '../../outside/secret.txt' {OUTSIDE}",
        f"{head}synth.recipe.grounding.documents.0 (line 23): '../../outside/*.txt' {OUTSIDE}",
    ]
    check(Path("recipes/r.yaml"), trust=True)


def test_symlinks_and_dotdot_are_resolved_before_checking(proj):
    (proj / "recipes" / "link.jsonl").symlink_to(proj.parent / "outside" / "secret.txt")
    (proj / "recipes" / "docs").mkdir()
    (proj / "recipes" / "docs" / "a.md").write_text("A harmless document.\n")
    (proj / "recipes" / "docs" / "b.md").symlink_to(proj.parent / "outside" / "secret.txt")
    r = write(proj / "recipes" / "r.yaml", """
        name: t
        data:
          train: [link.jsonl, docs/../train.jsonl]
        synth:
          teacher: local
          recipe:
            name: s
            prompt: "{{ prompt }}"
            grounding:
              documents: ["docs/*.md"]
        """)
    with pytest.raises(RecipeRefused) as err:
        check(r)
    secret = (proj.parent / "outside" / "secret.txt").resolve()
    assert str(err.value).splitlines() == [
        f"recipe {r}: data.train.0 (line 3): 'link.jsonl' (resolves to {secret}) {OUTSIDE}",
        (f"recipe {r}: synth.recipe.grounding.documents.0 (line 10): 'docs/*.md' matches {r.parent}/docs/b.md, "
         f"which resolves to {secret}, outside the recipe's folder and the current directory; pass --trust-recipe "
         "to allow it"),
    ]
    check(r, trust=True)


def test_synth_recipe_file_cannot_read_outside(proj, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user")
    write(proj / "seeds.jsonl", '{"messages": [{"role": "user", "content": "hello"}]}\n')
    write(proj / "recipes" / "s.yaml", """
        name: leak
        prompt: "{{ prompt }} {{ documents }}"
        max_tokens: 20
        grounding:
          documents: ["../../outside/secret.txt"]
        """)
    with pytest.raises(RecipeRefused, match=r"^recipe recipes/s.yaml: grounding.documents.0 \(line 5\): "
                                            r"'../../outside/secret.txt' is outside .*--trust-recipe"):
        load_synth_recipe("recipes/s.yaml")
    with FakeServer() as srv:
        args = ["synth", "--teacher", "m", "--base-url", srv.base_url, "--recipe", "recipes/s.yaml", "--seeds",
                "seeds.jsonl", "-o", "out.parquet", "--max-retries", "0", "--json"]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2
        assert one_line(res.stderr) == ("Error: recipe recipes/s.yaml: grounding.documents.0 (line 5): "
                                        f"'../../outside/secret.txt' {OUTSIDE}")
        assert json.loads(res.stdout)["kind"] == "usage"  # --json: the error as a JSON object on stdout
        assert srv.requests == []
        res = CliRunner().invoke(cli, args + ["--trust-recipe"])
        assert res.exit_code == 0, res.output
        assert "TOP-SECRET-CONTENT" in str(srv.requests[0]["messages"])  # trusted: the file was read


def test_inline_synth_recipe_in_run_recipe_is_refused_before_any_stage(proj):
    write(proj / "recipes" / "r.yaml", """
        name: t
        data:
          train: [train.jsonl]
        synth:
          teacher: local
          recipe:
            name: s
            prompt: "{{ prompt }}"
            grounding:
              documents: ["../../../../../../../../etc/passwd"]
        """)
    res = CliRunner().invoke(cli, ["run", "recipes/r.yaml"])
    assert res.exit_code == 2
    assert one_line(res.output) == ("Error: recipe recipes/r.yaml: synth.recipe.grounding.documents.0 (line 10): "
                                    f"'../../../../../../../../etc/passwd' {OUTSIDE}")
    assert not (proj / "runs").exists()


# ---- secrets


@pytest.fixture(scope="module")
def teacher():
    with FakeServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, teacher):
    """A finished run whose report found gaps, so each test reruns only its synth stage (fast)."""
    proj = tmp_path_factory.mktemp("synthproj")
    for f in ("train.jsonl", "production.jsonl"):
        shutil.copy(DEMO / f, proj / f)
    r = write(proj / "base.yaml", SYNTH_RECIPE.format(extra=""))
    run_recipe(r, workdir=proj / "work", base_url=teacher.base_url)
    return proj


SYNTH_RECIPE = """
name: sec
data:
  train: [train.jsonl]
  production: [production.jsonl]
skip: [validate, dedupe]
report:
  embedder: tfidf
synth:
  teacher: fake-model
  max_seeds: 1
{extra}  recipe:
    name: s
    prompt: "Rewrite: {{{{ prompt }}}}"
    max_tokens: 20
"""


def rerun_synth(synth_run: Path, tmp_path: Path, extra: str, **kw) -> dict:
    work = tmp_path / "work"
    shutil.copytree(synth_run / "work", work, ignore=shutil.ignore_patterns("requests.sqlite*"))  # no cached replies
    r = write(synth_run / f"{tmp_path.name}.yaml", SYNTH_RECIPE.format(extra=extra))
    return run_recipe(r, workdir=work, only="synth", force=["synth"], **kw)


def keys_received(srv: FakeServer, since: int) -> list[str]:
    return [h.get("authorization") for h in srv.request_headers[since:] if h.get("content-length")]


def test_recipe_cannot_choose_the_environment_variable_sent_as_key(synth_run, teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("OTHER_SECRET", "other-secret-value")
    extra = f"  base_url: {teacher.base_url}\n  api_key_env: OTHER_SECRET\n"
    n = len(teacher.request_headers)
    with pytest.raises(RecipeRefused) as err:
        rerun_synth(synth_run, tmp_path, extra)
    assert str(err.value) == (f"recipe {synth_run}/{tmp_path.name}.yaml: synth.api_key_env (line 12): a recipe may "
                              "not choose which environment variable is sent as the API key ('OTHER_SECRET'); pass "
                              "--trust-recipe to allow it")
    assert teacher.request_headers[n:] == []
    shutil.rmtree(tmp_path / "work")
    rerun_synth(synth_run, tmp_path, extra, trust=True)
    assert keys_received(teacher, n) == ["Bearer other-secret-value"]


def test_recipe_server_gets_no_key_unless_named_by_the_user_or_trusted(synth_run, teacher, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-secret")
    n = len(teacher.request_headers)
    rerun_synth(synth_run, tmp_path / "a", f"  base_url: {teacher.base_url}\n")
    assert keys_received(teacher, n) == ["Bearer no-key"]  # the placeholder: the user's key stayed home
    assert f"the recipe chose the server {teacher.base_url}; no API key is sent to it" in one_line(capsys.readouterr().err)
    n = len(teacher.request_headers)
    rerun_synth(synth_run, tmp_path / "b", f"  base_url: {teacher.base_url}\n", trust=True)
    assert keys_received(teacher, n) == ["Bearer sk-user-secret"]


def test_command_line_base_url_overrides_the_recipe_and_gets_the_key(synth_run, teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-secret")
    with FakeServer() as attacker:
        work = tmp_path / "work"
        shutil.copytree(synth_run / "work", work, ignore=shutil.ignore_patterns("requests.sqlite*"))
        r = write(synth_run / f"{tmp_path.name}.yaml", SYNTH_RECIPE.format(extra=f"  base_url: {attacker.base_url}\n"))
        n = len(teacher.request_headers)
        res = CliRunner().invoke(cli, ["run", str(r), "--workdir", str(work), "--only", "synth", "--force", "synth",
                                       "--base-url", teacher.base_url])
        assert res.exit_code == 0, res.output
        assert attacker.request_headers == []
        assert keys_received(teacher, n) == ["Bearer sk-user-secret"]


# ---- writing and deleting


def test_name_dotdot_is_refused_and_the_current_directory_survives(proj):
    write(proj / "ingest" / "mine.txt", "mine\n")
    write(proj / "validate" / "mine.txt", "mine too\n")
    write(proj / "runs" / "keep.txt", "kept\n")  # runs/.. is the current directory, which is not empty
    write(proj / "recipes" / "r.yaml", "name: ..\ndata:\n  train: [train.jsonl]\n" + SKIP_ALL_BUT_INGEST)
    for extra in ([], ["--trust-recipe"]):
        res = CliRunner().invoke(cli, ["run", "recipes/r.yaml", *extra])
        assert res.exit_code == 2
        assert one_line(res.output) == ("Error: invalid recipe recipes/r.yaml: name (line 1): not a plain name; it "
                                        "names the work folder runs/NAME (got '..')")
    assert (proj / "ingest" / "mine.txt").read_text() == "mine\n"
    assert (proj / "validate" / "mine.txt").read_text() == "mine too\n"
    assert sorted(p.name for p in proj.iterdir()) == ["ingest", "recipes", "runs", "validate"]
    write(proj / "recipes" / "r.yaml", "name: a/b\ndata:\n  train: [train.jsonl]\n")
    res = CliRunner().invoke(cli, ["run", "recipes/r.yaml"])
    assert res.exit_code == 2 and "name (line 1): not a plain name; it names the work folder runs/NAME (got 'a/b')" in one_line(res.output)


def test_workdir_that_curate_did_not_make_is_refused(proj):
    write(proj / "victim" / "dedupe" / "important.txt", "important\n")
    write(proj / "r.yaml", "name: w\nworkdir: victim\ndata:\n  train: [recipes/train.jsonl]\nskip: [validate]\n")
    for extra in ([], ["--trust-recipe"]):  # what curate may delete is never a matter of trust
        res = CliRunner().invoke(cli, ["run", "r.yaml", *extra])
        assert res.exit_code == 2
        assert one_line(res.output) == (
            f"Error: recipe r.yaml: workdir (line 2): work folder victim exists, is not empty and was not made by "
            f"curate run (it has no {LEDGER}); choose a new or empty folder (a folder made by an older curate: "
            "delete it first)")
    assert (proj / "victim" / "dedupe" / "important.txt").read_text() == "important\n"
    assert sorted(p.name for p in (proj / "victim").rglob("*")) == ["dedupe", "important.txt"]


def test_workdir_outside_is_refused_unless_trusted(proj):
    write(proj / "recipes" / "r.yaml", "name: w\nworkdir: ../elsewhere\ndata:\n  train: [train.jsonl]\n"
          + SKIP_ALL_BUT_INGEST)
    with pytest.raises(RecipeRefused, match=r"^recipe recipes/r.yaml: workdir \(line 2\): '../elsewhere' is outside "
                                            r"the recipe's folder and the current directory; curate would write "
                                            r"there; pass --trust-recipe to allow it$"):
        run_recipe("recipes/r.yaml")
    assert not (proj.parent / "elsewhere").exists()
    run_recipe("recipes/r.yaml", trust=True)
    assert (proj.parent / "elsewhere" / "ingest" / "train.parquet").is_file()
    check(Path("recipes/r.yaml"), workdir=proj.parent / "chosen")  # --workdir is the user's own choice


def test_stage_folder_holding_foreign_files_is_never_replaced(proj):
    write(proj / "recipes" / "r.yaml", "name: t\ndata:\n  train: [train.jsonl]\n" + SKIP_ALL_BUT_INGEST)
    run_recipe("recipes/r.yaml")
    work = proj / "runs" / "t"
    assert (work / LEDGER).is_file()
    again = run_recipe("recipes/r.yaml", force=["ingest"])  # a rerun replaces what curate wrote
    assert [s["status"] for s in again["stages"] if s["name"] == "ingest"] == ["ran"]
    write(work / "ingest" / "notes.txt", "my notes\n")
    write(work / "dedupe" / "important.txt", "important\n")
    with pytest.raises(RecipeRefused) as err:
        run_recipe("recipes/r.yaml", force=["ingest"])
    assert str(err.value).splitlines() == [
        ("work folder runs/t: ingest/notes.txt was not written by curate, which replaces ingest when that stage "
         "reruns; move it away"),
        "work folder runs/t: dedupe was not made by curate, which would replace it for that stage; move it away",
    ]
    assert (work / "ingest" / "notes.txt").read_text() == "my notes\n"
    assert (work / "dedupe" / "important.txt").read_text() == "important\n"
    assert (work / "ingest" / "train.parquet").is_file()


def test_stage_folders_curate_listed_are_cleaned_and_others_refused(proj):
    write(proj / "recipes" / "r.yaml", "name: t\ndata:\n  train: [train.jsonl]\n" + SKIP_ALL_BUT_INGEST)
    run_recipe("recipes/r.yaml")
    work = proj / "runs" / "t"
    write(work / "validate" / "important.txt", "important\n")
    with pytest.raises(RecipeRefused, match=r"^work folder runs/t: validate was not made by curate"):
        run_recipe("recipes/r.yaml")
    assert (work / "validate" / "important.txt").is_file()
    shutil.rmtree(work / "validate")
    # a stage killed mid-way leaves its folder without stage.json, listed as scratch; the rerun cleans it
    (work / "ingest" / "stage.json").unlink()
    write(work / "ingest" / "half.parquet", "half\n")
    from curate.pipeline.workdir import WorkFolder

    WorkFolder(work).record_scratch("ingest")
    run_recipe("recipes/r.yaml")
    assert not (work / "ingest" / "half.parquet").exists() and (work / "ingest" / "stage.json").is_file()


# ---- templates


def test_template_size_is_bounded_even_when_trusted(proj, tmp_path):
    write(proj / "seeds.jsonl", '{"messages": [{"role": "user", "content": "hello"}]}\n')
    write(proj / "bomb.yaml", "name: bomb\nprompt: \"{{ ('x'*200000000)|length }}\"\n")
    with FakeServer() as srv:
        for trust in (False, True):
            tracemalloc.start()
            start = time.perf_counter()
            with pytest.raises(RecipeRefused) as err:
                synthesize(tmp_path / "o.parquet", recipe="bomb.yaml", teacher="m", base_url=srv.base_url,
                           seeds="seeds.jsonl", max_retries=0, show_progress=False, trust=trust)
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert seconds < 5 and peak < 50e6, (seconds, peak)  # the 200 MB string is never built
            assert str(err.value).startswith("recipe bomb.yaml: prompt (line 2): the operator '*' would build a "
                                             "value of 200,000,000 characters (seed ")
            assert str(err.value).endswith("a template's values and output are limited to 1,048,576 characters (1 MiB)")
        res = CliRunner().invoke(cli, ["synth", "--teacher", "m", "--base-url", srv.base_url, "--recipe", "bomb.yaml",
                                       "--seeds", "seeds.jsonl", "-o", str(tmp_path / "o.parquet"), "--trust-recipe"])
        assert res.exit_code == 2 and one_line(res.output).startswith("Error: recipe bomb.yaml: prompt (line 2):")
        assert srv.requests == []


@pytest.mark.parametrize("template, what", [
    ("{{ 2 ** 100000000 }}", "the operator '**'"),
    ("{% set a = 'x' * 1000 %}" + "{% set a = a ~ a %}" * 12 + "{{ a }}", "the operator '~'"),
    ("{% set a = 'x' * 1000 %}" + "{% set a %}{{ a }}{{ a }}{% endset %}" * 12 + "{{ a }}", "an expression"),
    ("{{ ('x' * 100000) | replace('x', 'y' * 100000) }}", "the replace filter"),
    ("{{ 'x'.ljust(200000000) }}", "str.ljust"),
    ("{{ '{:>200000000}'.format(1) }}", "str.format"),
    ("{{ '%200000000s' % 'x' }}", "the operator '%'"),
    ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "the rendered text"),
], ids=["pow", "concat", "set-block", "replace", "ljust", "format", "percent", "output"])
def test_other_ways_to_build_huge_values_are_refused(template, what):
    from curate.synth.templates import Seed, compile_template, render

    t = compile_template(template, "prompt", 4, "r.yaml")
    with pytest.raises(RecipeRefused, match=rf"^recipe r.yaml: prompt \(line 4\): {re.escape(what)} would "):
        render(t, {}, "prompt", Seed("s1", {}))


def test_ordinary_templates_render_as_before():
    from curate.synth.templates import Seed, compile_template, render

    t = compile_template("{{ a * 2 }}|{{ b + [3] }}|{{ '%03d' % 7 }}|{{ 'x' ~ 1 }}|{{ items | join(', ') }}|"
                         "{{ '{:>4}'.format('y') }}|{{ 2 ** 10 }}|{{ d | tojson }}", "prompt", 1, None)
    out = render(t, {"a": "ab", "b": [1, 2], "items": ["p", "q"], "d": {"k": 1}}, "prompt", Seed("s", {}))
    assert out == 'abab|[1, 2, 3]|007|x1|p, q|   y|1024|{"k": 1}'


# ---- errors before any stage


def test_missing_data_file_is_one_line_exit_2(proj):
    write(proj / "r.yaml", "name: m\ndata:\n  train: [nope.jsonl]\n")
    env = {**os.environ, "COLUMNS": "400", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "curate.cli", "run", "r.yaml"], check=False, cwd=proj, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr == f"Error: recipe r.yaml: data.train.0 (line 3): no such file 'nope.jsonl' (looked for {proj.resolve()}/nope.jsonl)\n"
    assert not (proj / "runs").exists()
