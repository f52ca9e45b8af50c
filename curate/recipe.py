"""YAML recipes: safe loading with line numbers, and JSON-Schema validation that reports every problem.

No code runs from a recipe: yaml.SafeLoader only, and no dotted-path imports.
A problem names the key path and the line, e.g. `synth.temperature (line 12): 3 is greater than 2`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from curate.errors import RecipeError, UsageError

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        lines[key] = key_node.start_mark.line + 1
    return _LinedDict(mapping, lines, node.start_mark.line + 1)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode, deep: bool = False) -> list:
    items = yaml.SafeLoader.construct_sequence(loader, node, deep=deep)
    return _LinedList(items, [item.start_mark.line + 1 for item in node.value])


class _LinedDict(dict):
    # file and keypath say where this mapping sits, so an inline synth recipe's problems name the run recipe
    file: str | None = None
    keypath: tuple[Any, ...] = ()

    def __init__(self, data: Any = (), lines: dict | None = None, line: int | None = None):
        super().__init__(data)
        self.key_lines = lines or {}
        self.line = line


class _LinedList(list):
    def __init__(self, data: Any = (), lines: list[int] | None = None):
        super().__init__(data)
        self.item_lines = lines or []


def _tag(node: Any, file: str, keypath: tuple[Any, ...], seen: set[int] | None = None) -> None:
    """Record in every mapping the file it came from and its key path there."""
    seen = set() if seen is None else seen
    if not isinstance(node, (dict, list)) or id(node) in seen:
        return  # YAML aliases share nodes: visit each once (a nest of aliases would otherwise explode)
    seen.add(id(node))
    if isinstance(node, _LinedDict):
        node.file, node.keypath = file, keypath
    for k, v in node.items() if isinstance(node, dict) else enumerate(node):
        _tag(v, file, (*keypath, k), seen)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
# YAML 1.2 booleans only: `on: user` (dedupe's key) must stay the string "on", not True.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _LineLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file safely; a syntax error names the line."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such recipe: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RecipeError([f"YAML syntax error{where}: {getattr(exc, 'problem', exc)}"], str(path)) from exc
    if not isinstance(data, dict):
        raise RecipeError(["the top level must be a mapping of keys to values"], str(path))
    _tag(data, str(path), ())
    return data


def line_of(data: Any, path: list[Any]) -> int | None:
    """The line of the deepest key in `path` that carries one."""
    line = getattr(data, "line", None)
    node = data
    for key in path:
        if isinstance(node, _LinedDict) and key in node.key_lines:
            line = node.key_lines[key]
        elif isinstance(node, _LinedList) and isinstance(key, int) and 0 <= key < len(node.item_lines):
            line = node.item_lines[key]
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        line = getattr(node, "line", line) if not isinstance(node, _LinedDict) else line
    return line


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema from schemas/ by name (with or without .schema.json), or from a path."""
    candidates = [Path(name), SCHEMAS_DIR / name, SCHEMAS_DIR / f"{name}.schema.json", SCHEMAS_DIR / f"{name}.json"]
    for p in candidates:
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    known = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS_DIR.glob("*.schema.json"))
    raise UsageError(f"unknown schema '{name}'; give a path or one of: {', '.join(known)}")


def validate(data: dict[str, Any], schema: dict[str, Any] | str, file: str | None = None) -> None:
    """Raise RecipeError listing every schema violation, each with its key path and line."""
    from jsonschema import Draft202012Validator

    if isinstance(schema, str):
        schema = load_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    problems = []
    prefix = list(getattr(data, "keypath", ()))  # an inline synth recipe: keys as the run recipe spells them
    for e in errors:
        path = list(e.absolute_path)
        key = ".".join(str(p) for p in prefix + path) or "(top level)"
        if e.validator == "additionalProperties" and e.validator_value is False:
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            for name in extra:
                line = line_of(data, path + [name])
                sub = ".".join(str(p) for p in prefix + path + [name])
                problems.append(f"{sub}{f' (line {line})' if line else ''}: unknown key")
            continue
        line = line_of(data, path)
        problems.append(f"{key}{f' (line {line})' if line else ''}: {e.message}")
    raise RecipeError(problems, file)


def load_recipe(path: str | Path, schema: str) -> dict[str, Any]:
    """Load a YAML recipe and validate it against schemas/<schema>.schema.json."""
    data = load_yaml(path)
    validate(data, schema, str(path))
    return data
