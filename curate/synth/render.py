"""Sandboxed jinja2 templates for synth recipes: compile once, render per seed, errors that name the key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from curate.errors import InputError, RecipeError

# StrictUndefined: a template that names a field the seed lacks is an error, not an empty string.
ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
ENV.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)


def compile_template(text: str, key: str, line: int | None, file: str | None) -> jinja2.Template:
    """Compile one recipe template; a syntax error names the recipe key and line."""
    try:
        return ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        where = f" (line {line + exc.lineno - 1 if line else exc.lineno})" if exc.lineno else ""
        raise RecipeError([f"{key}{where}: template syntax error: {exc.message}"], file) from exc


def render(template: jinja2.Template, variables: dict[str, Any], key: str, seed: Seed) -> str:
    """Render a template for one seed; a missing field names the seed's file and line."""
    try:
        return template.render(**variables).strip()
    except jinja2.UndefinedError as exc:
        known = ", ".join(sorted(k for k in variables if not k.startswith("_")))
        raise InputError(
            f"recipe template '{key}' failed for seed {seed.id}: {exc.message}; fields available: {known}",
            file=seed.source.get("file"),
            line=seed.source.get("line") or seed.source.get("row"),
        ) from exc
    except jinja2.TemplateError as exc:
        raise InputError(f"recipe template '{key}' failed for seed {seed.id}: {exc}",
                         file=seed.source.get("file")) from exc


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
