"""Typed stage settings: one class per stage is the single source of its options, defaults and ranges.

A stage's config is a pydantic model, and from it follow
    the library call     dedupe(data, output, DedupeConfig(threshold=0.9)) or dedupe(..., threshold=0.9)
    the CLI options      @cli_options(DedupeConfig): flag names, types, ranges, choices and help
    the recipe section   its JSON Schema in schemas/run-recipe.schema.json (generated; a test compares)
    the files it reads   fields marked with Opt(kind=...), hashed into `curate run`'s cache key and
                         checked by the recipe policy (curate/trust.py)
A setting has one name everywhere: `rows_per_band` in Python and recipes, `--rows-per-band` on the CLI.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import annotated_types as at
import click
from pydantic import BaseModel, ConfigDict, ValidationError

from curate.errors import UsageError

# kinds of path a setting can name: what a stage reads (hashed, confined by the recipe policy) or writes
READS = ("file", "files", "folder")
KINDS = (*READS, "model", "schema", "writes")


@dataclass(frozen=True)
class Opt:
    """How a setting appears outside Python.

    kind: "file" / "files" / "folder" it reads; "model" (a model folder, or a name such as `embedded`);
    "schema" (a shipped schema name or a file); "writes" (a folder it writes, e.g. dedupe's index).
    sep: on the CLI a list is one value split on this separator (`--origin-priority a,b`), else the
    option repeats (`--fail-on X --fail-on Y`). cli / recipe: whether the setting is offered there.
    """

    kind: str | None = None
    sep: str | None = None
    cli: bool = True
    recipe: bool = True
    short: str | None = None
    metavar: str | None = None


class StageConfig(BaseModel):
    """Base of every stage's settings: unknown names are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: ClassVar[str] = ""

    @classmethod
    def build(cls, config: StageConfig | Mapping[str, Any] | None = None, /, **overrides: Any):
        """A config from None, an instance or a mapping, then keyword overrides that are not None."""
        base: dict[str, Any] = {}
        if isinstance(config, StageConfig):
            base = config.model_dump()
        elif isinstance(config, Mapping):
            base = dict(config)
        elif config is not None:
            raise UsageError(f"{cls.stage} settings must be a {cls.__name__} or a mapping, got {type(config).__name__}")
        base.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(base)
        except ValidationError as exc:
            raise UsageError(f"invalid {cls.stage} settings: " + "; ".join(describe(cls, exc))) from exc

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values (what manifests and summaries record)."""
        return self.model_dump(mode="json")

    def paths(self, base: Path | None = None) -> Iterator[tuple[str, str, Path]]:
        """(setting, kind, path) for every path-valued setting that is set, relative to `base` when given."""
        for name, info in type(self).model_fields.items():
            opt = option_of(info)
            value = getattr(self, name)
            if opt.kind is None or value is None or isinstance(value, Mapping):
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                p = Path(v)
                yield name, opt.kind, p if base is None or p.is_absolute() else base / p


def option_of(info: Any) -> Opt:
    return next((m for m in info.metadata if isinstance(m, Opt)), Opt())


def describe(cls: type[StageConfig], exc: ValidationError, prefix: Sequence[Any] = (),
             line_of: Callable[[list[Any]], int | None] | None = None) -> list[str]:
    """One line per problem, in line order: `key (line N): what is wrong`, with a close match for an unknown key."""
    out: list[tuple[float, str]] = []
    for err in exc.errors():
        loc = [*prefix, *err["loc"]]
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(loc) if line_of else None
        where = f"{key} (line {line})" if line else key
        if err["type"] == "extra_forbidden":
            known = _known_names(cls, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
            out.append((line or float("inf"), f"{where}: unknown key{hint}"))
        else:
            shown = err.get("input")
            got = f" (got {shown!r})" if not isinstance(shown, (dict, list)) and "input" in err else ""
            out.append((line or float("inf"), f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}{got}"))
    return [text for _, text in sorted(out, key=lambda x: x[0])]


def _known_names(cls: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The setting names valid at `loc` inside `cls` (nested models are followed)."""
    model: Any = cls
    for part in loc:
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = _model_in(info.annotation)
    return sorted(n for n, i in getattr(model, "model_fields", {}).items() if option_of(i).recipe)


def _model_in(annotation: Any) -> Any:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


# ---------------------------------------------------------------- CLI options from a config


def _inner(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def _bounds(info: Any) -> dict[str, Any]:
    b: dict[str, Any] = {}
    for m in info.metadata:
        if isinstance(m, at.Ge):
            b["min"] = m.ge
        elif isinstance(m, at.Gt):
            b["min"], b["min_open"] = m.gt, True
        elif isinstance(m, at.Le):
            b["max"] = m.le
        elif isinstance(m, at.Lt):
            b["max"], b["max_open"] = m.lt, True
    return b


def _click_type(tp: Any, info: Any, opt: Opt) -> Any:
    if typing.get_origin(tp) is Literal:
        return click.Choice([str(v) for v in typing.get_args(tp)])
    bounds = _bounds(info)
    if tp is int:
        return click.IntRange(**bounds) if bounds else int
    if tp is float:
        return click.FloatRange(**bounds) if bounds else float
    if opt.kind in READS or opt.kind == "writes":
        return click.Path(path_type=str)
    return str


def _help(info: Any, default: Any) -> str:
    text = info.description or ""
    if default not in (None, (), [], "") and not isinstance(default, bool):
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text += f"  [default: {shown}]"
    return text


def cli_options(cls: type[StageConfig], *, exclude: Sequence[str] = ()) -> Callable[[Any], Any]:
    """Click options for every CLI-visible setting of `cls`: flag `--name-with-dashes`, its type and help."""
    decorators = []
    for name, info in cls.model_fields.items():
        opt = option_of(info)
        if not opt.cli or name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        names = [flag, *([opt.short] if opt.short else [])]
        required = info.is_required()  # a setting without a default (synth's teacher): click requires the flag
        default = None if required else info.get_default(call_default_factory=True)
        tp, _ = _inner(info.annotation)
        origin = typing.get_origin(tp)
        if tp is bool:
            names = [f"{flag}/--no-{flag[2:]}"]
            kwargs: dict[str, Any] = {"default": None, "help": info.description + f"  [default: {'on' if default else 'off'}]"}
        elif origin in (list, tuple):
            item = typing.get_args(tp)[0]
            kwargs = {"default": None, "help": _help(info, default), "metavar": opt.metavar}
            if opt.sep:
                kwargs["help"] += f" ({opt.sep!r}-separated)"
            else:
                kwargs.update(multiple=True, type=_click_type(item, info, opt))
        elif isinstance(tp, type) and issubclass(tp, BaseModel) or tp is dict:
            continue  # nested settings are for recipes only
        else:
            kwargs = {"default": None, "type": _click_type(tp, info, opt), "help": _help(info, default),
                      "metavar": opt.metavar}
            if required:  # with an explicit default=None, click (8.5) does not report the flag as missing
                kwargs = {k: v for k, v in kwargs.items() if k != "default"} | {"required": True}
        decorators.append(click.option(*names, name, **{k: v for k, v in kwargs.items() if v is not None or k == "default"}))

    def apply(f: Any) -> Any:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def from_cli(cls: type[StageConfig], params: dict[str, Any]) -> Any:
    """The config from a command's parameters; the settings are taken out of `params`."""
    given: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        if name not in params:
            continue
        value = params.pop(name)
        if value is None or value == ():
            continue  # not given: the config's default applies
        opt = option_of(info)
        if opt.sep and isinstance(value, str):
            value = [v.strip() for v in value.split(opt.sep) if v.strip()]
        given[name] = list(value) if isinstance(value, tuple) else value
    return cls.build(given)


# ---------------------------------------------------------------- recipe schema from configs


def section_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a config's recipe-visible settings (no titles; $defs inlined)."""
    schema = cls.model_json_schema(mode="validation")
    defs = schema.pop("$defs", {})
    hidden = [n for n, i in cls.model_fields.items() if not option_of(i).recipe]
    for n in hidden:
        schema["properties"].pop(n, None)
    return _clean(schema, defs)


def _clean(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _clean(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _clean(v, defs) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_clean(v, defs) for v in node]
    return node
