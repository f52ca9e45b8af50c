"""Before any stage runs: what a run recipe may read, where its work folder goes, which API key synth sends.

The policy (README, "What a recipe may do") lives in curate/trust.py; this module applies it to every
key of a run recipe that names a path or a secret, and reports every problem at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import option_of
from curate.console import console
from curate.embedded import EMBEDDED, EMBEDDED_ID
from curate.pipeline.recipe import SECTIONS
from curate.pipeline.workdir import WorkFolder
from curate.recipe import SCHEMAS_DIR, load_yaml
from curate.synth.recipe import check_paths
from curate.trust import OUTSIDE, TRUST_FLAG, Checker, RecipeRefused, inside, roots_for

DEFAULT_BASE_URL = "https://api.openai.com/v1"  # synthesize's own default
NO_KEY = ""  # names no environment variable (none can be empty-named), so synth sends its placeholder key
JUDGES = (("score", "judge"), ("dedupe", "semantic_judge"))  # the recipe's judges: (section, setting)


@dataclass
class Plan:
    """What the checks decided: the work folder and the synth stage's settings."""

    workdir: Path
    synth_settings: dict[str, Any] = field(default_factory=dict)  # overrides of the recipe's synth settings
    synth_call: dict[str, Any] = field(default_factory=dict)  # passed to synthesize() as well, never hashed
    # overrides of the recipe's judge settings, by (section, setting): score.judge, dedupe.semantic_judge
    judge_settings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def preflight(recipe: dict[str, Any], path: Path, *, stages: tuple[str, ...], trust: bool = False,
              workdir: str | Path | None = None, base_url: str | None = None, ray_address: str | None = None) -> Plan:
    """Check every path, secret and the work folder of a run recipe; raise RecipeRefused listing every problem.

    The paths are the settings each stage's config marks with a kind (curate/config.py, Opt): files and
    folders it reads must lie inside the recipe's folder or the current directory (and files must
    exist); a model or schema setting is checked when it names a path; a folder it writes (dedupe's
    index) must lie inside too.
    """
    rdir = path.parent
    c = Checker(str(path), recipe, roots_for(rdir), trust)
    if recipe["name"] in (".", ".."):
        c.add(["name"], f"'{recipe['name']}' is not a plain name; it names the work folder runs/NAME")
    work = Path(workdir) if workdir else _recipe_workdir(c, recipe)
    for role in ("train", "production", "eval"):
        for i, f in enumerate((recipe.get("data") or {}).get(role) or []):
            if isinstance(f, dict):  # {path, weight} / {path, count}; a malformed entry is the model's to report
                if isinstance(f.get("path"), str):
                    c.path(["data", role, i, "path"], f["path"], rdir, must_exist="file")
                continue
            c.path(["data", role, i], f, rdir, must_exist="file")
    for section, config in SECTIONS.items():
        values = recipe.get(section) or {}
        for name, info in config.model_fields.items():
            kind, value = option_of(info).kind, values.get(name)
            if kind is None or value is None or isinstance(value, dict) or (section, name) == ("synth", "recipe"):
                continue
            for i, v in enumerate(value if isinstance(value, list) else [value]):
                keys = [section, name, i] if isinstance(value, list) else [section, name]
                if kind in ("file", "files"):
                    c.path(keys, v, rdir, must_exist="file")
                elif kind == "folder":
                    c.path(keys, v, rdir, must_exist="folder")
                elif kind == "writes":
                    c.path(keys, v, rdir)
                elif (rdir / v).exists() or (kind == "model" and v not in (EMBEDDED, EMBEDDED_ID)
                                             and ("/" in v or v.startswith("."))) or \
                        (kind == "schema" and not _shipped_schema(v)):
                    c.path(keys, v, rdir)  # a model folder or schema file, not a name such as `embedded`
    plan = Plan(work or Path("runs"))
    address = (recipe.get("engine") or {}).get("address") if isinstance(recipe.get("engine"), dict) else None
    if address not in (None, "", "local") and not c.trust and not ray_address:
        # a cluster the recipe names would receive every record: the user says so, not the recipe
        c.add(["engine", "address"], f"'{address}' sends the data to a Ray cluster the recipe chose; pass "
                                     f"--ray-address {address} or {TRUST_FLAG} to allow it")
    if recipe.get("synth"):
        _check_synth(c, recipe["synth"], rdir, base_url, plan)
    for section, name in JUDGES:
        judge = recipe.get(section).get(name) if isinstance(recipe.get(section), dict) else None
        if isinstance(judge, dict):
            _check_judge(c, (section, name), judge, rdir, plan)
    problems = WorkFolder(work).problems(stages) if work else []  # a refused location is not looked at
    if problems and not workdir and recipe.get("workdir"):
        problems = [f"{c.where(['workdir'])}: {p}" for p in problems]
    c.problems += problems
    c.raise_if_any()
    for note in plan.notes:
        console.print(note, style="yellow", markup=False, highlight=False)
    return plan


def _recipe_workdir(c: Checker, recipe: dict[str, Any]) -> Path | None:
    """The recipe's work folder, or None where it is refused."""
    value = recipe.get("workdir")
    if not value:
        return None if recipe["name"] in (".", "..") else Path("runs") / recipe["name"]
    if not inside(Path(value), c.roots) and not c.trust:  # relative to the current directory, as always
        c.add(["workdir"], f"'{value}' is {OUTSIDE}; curate would write there", allowable=True)
        return None
    return Path(value)


def _shipped_schema(name: str) -> bool:
    return any((SCHEMAS_DIR / n).is_file() for n in (name, f"{name}.schema.json", f"{name}.json"))


def _check_synth(c: Checker, scfg: dict[str, Any], rdir: Path, base_url: str | None, plan: Plan) -> None:
    """The synth recipe's files, and the key: a recipe may not choose the variable nor the server it goes to."""
    if "api_key_env" in scfg:
        c.add(["synth", "api_key_env"], f"a recipe may not choose which environment variable is sent as the "
                                        f"API key ('{scfg['api_key_env']}')", allowable=True)
    if base_url and scfg.get("teacher") == "local":
        c.add(["synth", "teacher"], "is 'local', which starts its own server; drop --base-url")
    recipe = scfg.get("recipe")
    if isinstance(recipe, str):
        p = c.path(["synth", "recipe"], recipe, rdir, must_exist="synth recipe")
        if p.is_file() and (c.trust or inside(p, c.roots)):
            data = load_yaml(p)
            check_paths(c.nested(os.path.normpath(rdir / recipe), data), data, p.parent)  # relative to itself
    elif isinstance(recipe, dict):
        check_paths(c.nested(c.file, recipe), recipe, rdir)
    plan.synth_call = {"trust": c.trust}
    own = scfg.get("base_url")
    if base_url:
        plan.synth_settings["base_url"] = base_url  # the user's choice overrides the recipe's
    elif own and str(own).rstrip("/") != DEFAULT_BASE_URL and not c.trust:
        plan.synth_call["api_key_env"] = NO_KEY
        plan.notes.append(f"synth: the recipe chose the server {own}; no API key is sent to it "
                          f"(pass --base-url {own} or {TRUST_FLAG} to send yours)")


def _check_judge(c: Checker, where: tuple[str, str], jcfg: dict[str, Any], rdir: Path, plan: Plan) -> None:
    """A judge (score.judge, dedupe.semantic_judge) as synth's teacher: its rubric file inside, the key's variable
    not the recipe's to choose, and no key sent to a server the recipe chose unless trusted."""
    if "api_key_env" in jcfg:
        c.add([*where, "api_key_env"], f"a recipe may not choose which environment variable is sent as "
                                       f"the API key ('{jcfg['api_key_env']}')", allowable=True)
    if isinstance(jcfg.get("rubric_file"), str):
        c.path([*where, "rubric_file"], jcfg["rubric_file"], rdir, must_exist="file")
    own = jcfg.get("base_url")
    if own and str(own).rstrip("/") != DEFAULT_BASE_URL and not c.trust:
        plan.judge_settings[where] = {"api_key_env": NO_KEY}
        plan.notes.append(f"{where[0]}: the recipe chose the judge's server {own}; no API key is sent to it "
                          f"(pass {TRUST_FLAG} to send yours)")


__all__ = ["Plan", "RecipeRefused", "preflight"]
