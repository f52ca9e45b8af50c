"""Sandboxed jinja2 templates for synth recipes: compile once, render per seed, errors that name the key.

A recipe may come from someone else, so rendering is bounded: no value built inside a template (by `*`,
`**`, `+`, `%`, `~`, string methods or filters) and no rendered output may exceed MAX_CHARS. The checks
run before the value is built, so `{{ ('x' * 200000000) | length }}` fails at once, in little memory.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.sandbox import SandboxedEnvironment

from curate.errors import InputError, RecipeError
from curate.trust import RecipeRefused

MAX_CHARS = 1 << 20  # 1 MiB: far above any prompt, far below what hurts a machine
_PCT = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d+))?")
_BRACE = re.compile(r"\{[^{}]*?(?::[^{}\d]*(\d*)(?:\.(\d+))?)?[^{}]*\}")
_budget = threading.local()  # characters a render may still produce, captured `{% set %}` blocks included


class TemplateTooLarge(Exception):
    """A value inside a template would exceed MAX_CHARS; render() turns it into an error naming the key."""


def _size(v: Any) -> int:
    if isinstance(v, (str, bytes, list, tuple, dict, set)):
        return len(v)
    return v.bit_length() // 8 if isinstance(v, int) else 0


def _guard(n: int, what: str) -> None:
    if n > MAX_CHARS:
        raise TemplateTooLarge(f"{what} would build a value of {n:,} characters")


def _format_size(fmt: str, rx: re.Pattern, args: Any) -> int:
    """Upper bound of `fmt` filled with `args`: every field as wide as the widest argument or width."""
    values = list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, tuple) else [args]
    fields = rx.findall(fmt)
    widths = [int(n) for f in fields for n in f if n] + [_size(v) if isinstance(v, str) else 8 * _size(v) + 32
                                                          for v in values]
    return len(fmt) + len(fields) * max(widths, default=0)


def _grow(name: str, s: Any, args: tuple, kwargs: dict) -> int:
    """Size of what a string method or filter named `name` would build from `s` (0: it cannot grow much)."""
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(_size(str(s)), first if isinstance(first, int) else 80)
    if name == "indent":
        width = first if first is not None else kwargs.get("width", 4)
        return _size(str(s)) + (str(s).count("\n") + 1) * (width if isinstance(width, int) else _size(str(width)))
    if name == "expandtabs":
        tab = first if isinstance(first, int) else kwargs.get("tabsize", 8)
        return _size(str(s)) + str(s).count("\t") * max(tab, 0)
    if name == "replace" and len(args) >= 2:
        text, old, new = str(s), str(args[0]), str(args[1])
        return len(text) + (text.count(old) if old else len(text) + 1) * max(0, len(new) - len(old))
    if name in ("format", "format_map"):
        return _format_size(str(s), _BRACE, first if name == "format_map" else (*args, *kwargs.values()))
    if name == "%format":
        return _format_size(str(s), _PCT, args or kwargs)
    if name == "join" and isinstance(first if isinstance(s, str) else s, (list, tuple)):
        items, sep = (first, s) if isinstance(s, str) else (s, str(first or ""))
        return len(sep) * len(items) + sum(_size(x) if isinstance(x, str) else 32 for x in items)
    if name == "sum" and isinstance(s, (list, tuple)):
        return sum(_size(x) for x in s)
    return 0


def _binop_size(op: str, a: Any, b: Any) -> int:
    seq = (str, list, tuple)
    if op == "*":
        a, b = (b, a) if isinstance(a, int) and isinstance(b, seq) else (a, b)
        if isinstance(a, seq) and isinstance(b, int):
            return len(a) * max(b, 0)
        if isinstance(a, int) and isinstance(b, int):
            return (a.bit_length() + b.bit_length()) // 8
    if op == "**" and isinstance(a, int) and isinstance(b, int) and b > 0:
        return a.bit_length() * b // 8
    if op == "+" and isinstance(a, seq) and isinstance(b, seq):
        return len(a) + len(b)
    if op == "%" and isinstance(a, str):
        return _format_size(a, _PCT, b)
    return 0


def _finalize(value: Any) -> Any:
    """Every `{{ }}` value passes here, also inside `{% set %}` blocks, which the output cap cannot see."""
    n = _size(value)
    _guard(n, "an expression")
    left = getattr(_budget, "left", None)
    if left is not None:
        _budget.left = left - n
        if _budget.left < 0:
            raise TemplateTooLarge(f"its expressions ({{% set %}} blocks included) would produce over "
                                   f"{4 * MAX_CHARS:,} characters")
    return value


class _Generator(CodeGenerator):
    @optimizeconst
    def visit_Concat(self, node: Any, frame: Any) -> None:
        # `a ~ b` normally compiles to a plain join; route it through the environment to bound it
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(SandboxedEnvironment):
    """A sandbox whose operators, string methods and filters refuse to build values over MAX_CHARS."""

    code_generator_class = _Generator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _guard(_binop_size(operator, left, right), f"the operator '{operator}'")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        target = getattr(obj, "__wrapped__", obj)  # str.format arrives wrapped by the sandbox
        owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "a call")
        if isinstance(owner, str):
            _guard(_grow(name, owner, args, kwargs), f"str.{name}")
        result = super().call(context, obj, *args, **kwargs)
        _guard(_size(result), name)
        if isinstance(owner, (list, dict, set)):  # append, extend, update grow their owner in place
            _guard(len(owner), f"{type(owner).__name__}.{name}")
        return result

    def bounded_concat(self, parts: tuple) -> str:
        texts = [str(p) for p in parts]
        _guard(sum(map(len, texts)), "the operator '~'")
        return "".join(texts)


def _bounded_filter(name: str, f: Any) -> Any:
    skip = 1 if getattr(f, "jinja_pass_arg", None) else 0  # eval context / environment come first

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value, rest = args[skip], args[skip + 1:]
        _guard(_grow("%format" if name == "format" else name, value, rest, kwargs), f"the {name} filter")
        out = f(*args, **kwargs)
        _guard(_size(out), f"the {name} filter")
        return out

    return functools.update_wrapper(wrapper, f)


# StrictUndefined: a template that names a field the seed lacks is an error, not an empty string.
ENV = _BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
                          finalize=_finalize)
ENV.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
ENV.filters.update({name: _bounded_filter(name, f) for name, f in ENV.filters.items()})


def compile_template(text: str, key: str, line: int | None, file: str | None) -> jinja2.Template:
    """Compile one recipe template; a syntax error names the recipe key and line."""
    try:
        template = ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        where = f" (line {line + exc.lineno - 1 if line else exc.lineno})" if exc.lineno else ""
        raise RecipeError([f"{key}{where}: template syntax error: {exc.message}"], file) from exc
    template.curate_where = f"recipe {file or 'given as a dict'}: {key}" + (f" (line {line})" if line else "")
    return template


def render(template: jinja2.Template, variables: dict[str, Any], key: str, seed: Seed) -> str:
    """Render a template for one seed; a missing field names the seed's file and line."""
    out: list[str] = []
    total = 0
    _budget.left = 4 * MAX_CHARS
    try:
        for piece in template.generate(**variables):
            total += len(piece)
            if total > MAX_CHARS:
                raise TemplateTooLarge(f"the rendered text would exceed {MAX_CHARS:,} characters")
            out.append(piece)
        return "".join(out).strip()
    except TemplateTooLarge as exc:
        where = getattr(template, "curate_where", f"recipe template '{key}'")
        raise RecipeRefused([(f"{where}: {exc} (seed {seed.id}); a template's values and output are limited to "
                              f"{MAX_CHARS:,} characters (1 MiB)")]) from exc
    except jinja2.UndefinedError as exc:
        known = ", ".join(sorted(k for k in variables if not k.startswith("_")))
        raise InputError(
            f"recipe template '{key}' failed for seed {seed.id}: {exc.message}; fields available: {known}",
            file=seed.source.get("file"),
            line=seed.source.get("line") or seed.source.get("row"),
        ) from exc
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise InputError(f"recipe template '{key}' failed for seed {seed.id}: {exc}",
                         file=seed.source.get("file")) from exc
    finally:
        _budget.left = None


@dataclass
class Seed:
    """One seed: its id, the variables templates see, where it came from, and its text for fact checks."""

    id: str
    variables: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (source name, text) for fact checking


def seed_from_row(row: dict[str, Any], extra: dict[str, Any]) -> Seed:
    """Template variables of a canonical row: prompt, response, system, messages, meta and its keys, extras."""
    msgs = row.get("messages") or []

    def first(role: str) -> str | None:
        return next((m.get("content") for m in msgs if m.get("role") == role), None)

    meta = json.loads(row["meta"]) if row.get("meta") else {}
    variables: dict[str, Any] = dict(meta) if isinstance(meta, dict) else {}
    variables.update(extra)
    variables.update(
        prompt=first("user"),
        response=first("assistant"),
        system=first("system"),
        messages=[{"role": m.get("role"), "content": m.get("content")} for m in msgs],
        meta=meta,
        seed_id=row["id"],
    )
    texts = [(f"seed:{m.get('role')}", m.get("content") or "") for m in msgs if m.get("content")]
    if row.get("meta"):
        texts.append(("seed:meta", row["meta"]))
    texts += [(f"seed:{k}", str(v)) for k, v in extra.items() if isinstance(v, (str, int, float)) and v != ""]
    return Seed(id=row["id"], variables=variables, source=dict(row.get("source") or {}), texts=texts)
