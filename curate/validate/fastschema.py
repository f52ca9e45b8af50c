"""A compiled yes/no check for JSON Schemas, so that only the records that break one pay for jsonschema.

jsonschema reports every violation with its path, which validate needs for a record's findings, but it
walks a schema with a new validator object per keyword and subschema: on a valid chat record that is
most of validate's time. `compile_schema(doc)` turns a schema into nested closures that only answer
"valid?". A record it calls valid is valid (jsonschema would report nothing); every other record
still goes through jsonschema for the findings, so findings are the same with or without it.

It covers the keywords of the shipped format schemas and the common ones of draft 2020-12 (types,
properties, items, combinators, conditionals, enums, lengths, ranges, local `$ref`). A schema with any
other assertion keyword compiles to None (jsonschema checks every record). A value it cannot judge
exactly (a type JSON does not produce) raises Unsure inside, and the record goes to jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

Check = Callable[[Any], bool]

ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default", "examples",
               "format", "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
               "contentSchema", "$vocabulary"}


class Unsure(Exception):
    """A value the compiled check cannot judge exactly; jsonschema decides."""


class Unsupported(Exception):
    """A schema keyword the compiler does not cover."""


def compile_schema(doc: Any) -> Check | None:
    """A predicate that is True only for instances valid against `doc` (None if `doc` uses other keywords)."""
    try:
        check = _Compiler(doc).compile(doc, root=True)
    except Unsupported:
        return None

    def valid(instance: Any) -> bool:
        try:
            return check(instance)
        except (Unsure, RecursionError):
            return False

    return valid


def _is_number(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, float)):
        return True
    raise Unsure  # Decimal, Fraction, numpy scalars: jsonschema's rules, not ours


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, float):
        return x.is_integer()
    if isinstance(x, (str, list, dict, type(None))):
        return False
    raise Unsure


_SIMPLE_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def _type_check(x: Any, name: str) -> bool:
    if name == "number":
        return False if isinstance(x, (str, list, dict, type(None))) else _is_number(x)
    if name == "integer":
        return _is_integer(x)
    return _SIMPLE_TYPES[name](x)


def _known(x: Any) -> None:
    if not isinstance(x, (str, int, float, bool, list, dict, type(None))):
        raise Unsure


def equal(a: Any, b: Any) -> bool:
    """jsonschema's equality: booleans are not numbers, 1 == 1.0, lists and objects compared element-wise."""
    _known(a)
    _known(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return a == b


class _Compiler:
    def __init__(self, doc: Any):
        self.doc = doc
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any, root: bool = False) -> Check:
        if schema is True:
            return lambda x: True
        if schema is False:
            return lambda x: False
        if not isinstance(schema, dict):
            raise Unsupported
        if "$id" in schema and not root:
            raise Unsupported  # a nested resource changes what its refs resolve against
        checks: list[Check] = []
        for key, value in schema.items():
            if key in ANNOTATIONS or key in ("then", "else", "additionalProperties", "patternProperties"):
                continue  # then/else belong to `if`; additional/pattern properties are compiled with properties
            make = getattr(self, "k_" + key.lstrip("$"), None)
            if make is None:
                raise Unsupported
            checks.append(make(value, schema))
        if any(k in schema for k in ("additionalProperties", "patternProperties")) and "properties" not in schema:
            checks.append(self.k_properties({}, schema))
        if not checks:
            return lambda x: True
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(c(x) for c in checks)

    # --- keywords (each applies to its own instance type; others pass, as in JSON Schema)
    def k_ref(self, ref: str, schema: dict) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unsupported
        if ref not in self.refs:
            target: Any = self.doc
            for part in [unquote(p).replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]]:
                if isinstance(target, dict) and part in target:
                    target = target[part]
                elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    raise Unsupported
            cell: list[Check] = []
            self.refs[ref] = lambda x: cell[0](x)  # recursive schemas refer to themselves
            cell.append(self.compile(target))
        return self.refs[ref]

    def k_type(self, types: Any, schema: dict) -> Check:
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or any(n not in (*_SIMPLE_TYPES, "number", "integer") for n in names):
            raise Unsupported
        return lambda x: any(_type_check(x, n) for n in names)

    def k_enum(self, values: Any, schema: dict) -> Check:
        if not isinstance(values, list):
            raise Unsupported
        return lambda x: any(equal(x, v) for v in values)

    def k_const(self, value: Any, schema: dict) -> Check:
        return lambda x: equal(x, value)

    def k_properties(self, props: Any, schema: dict) -> Check:
        if not isinstance(props, dict):
            raise Unsupported
        named = {k: self.compile(v) for k, v in props.items()}
        patterns = [(re.compile(p), self.compile(s)) for p, s in schema.get("patternProperties", {}).items()]
        extra = self.compile(schema["additionalProperties"]) if "additionalProperties" in schema else None

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for k, v in x.items():
                known = k in named
                if known and not named[k](v):
                    return False
                matched = False
                for rx, sub in patterns:
                    if rx.search(k):
                        matched = True
                        if not sub(v):
                            return False
                if extra is not None and not known and not matched and not extra(v):
                    return False
            return True

        return check

    def k_required(self, names: Any, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or all(n in x for n in names)

    def k_minProperties(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) >= n

    def k_maxProperties(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) <= n

    def k_prefixItems(self, subs: Any, schema: dict) -> Check:
        checks = [self.compile(s) for s in subs]
        return lambda x: not isinstance(x, list) or all(c(v) for c, v in zip(checks, x))

    def k_items(self, sub: Any, schema: dict) -> Check:
        if isinstance(sub, list):
            raise Unsupported  # the draft 4-7 tuple form
        check = self.compile(sub)
        skip = len(schema.get("prefixItems", []))
        return lambda x: not isinstance(x, list) or all(check(v) for v in x[skip:])

    def k_minItems(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= n

    def k_maxItems(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= n

    def k_minLength(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= n

    def k_maxLength(self, n: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, str) or len(x) <= n

    def k_pattern(self, pattern: str, schema: dict) -> Check:
        rx = re.compile(pattern)
        return lambda x: not isinstance(x, str) or rx.search(x) is not None

    def _bound(self, limit: Any, ok: Callable[[Any, Any], bool]) -> Check:
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise Unsupported
        return lambda x: isinstance(x, (str, list, dict, bool, type(None))) or not _is_number(x) or ok(x, limit)

    def k_minimum(self, limit: Any, schema: dict) -> Check:
        return self._bound(limit, lambda x, m: x >= m)

    def k_maximum(self, limit: Any, schema: dict) -> Check:
        return self._bound(limit, lambda x, m: x <= m)

    def k_exclusiveMinimum(self, limit: Any, schema: dict) -> Check:
        return self._bound(limit, lambda x, m: x > m)

    def k_exclusiveMaximum(self, limit: Any, schema: dict) -> Check:
        return self._bound(limit, lambda x, m: x < m)

    def k_allOf(self, subs: Any, schema: dict) -> Check:
        checks = [self.compile(s) for s in subs]
        return lambda x: all(c(x) for c in checks)

    def k_anyOf(self, subs: Any, schema: dict) -> Check:
        checks = [self.compile(s) for s in subs]
        return lambda x: any(c(x) for c in checks)

    def k_oneOf(self, subs: Any, schema: dict) -> Check:
        checks = [self.compile(s) for s in subs]
        return lambda x: sum(1 for c in checks if c(x)) == 1

    def k_not(self, sub: Any, schema: dict) -> Check:
        check = self.compile(sub)
        return lambda x: not check(x)

    def k_if(self, sub: Any, schema: dict) -> Check:
        cond = self.compile(sub)
        then = self.compile(schema.get("then", True))
        other = self.compile(schema.get("else", True))
        return lambda x: then(x) if cond(x) else other(x)
