"""The `keep` rules of `curate score`: a small expression language, parsed here (never Python's eval: recipes are
untrusted data) and evaluated on Arrow batches with Kleene logic.

    rule    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare | "(" or ")"
    compare := value OP value | COLUMN ["not"] "in" "[" literal ("," literal)* "]"
    value   := COLUMN | literal            (a comparison names at least one column)
    literal := NUMBER | 'text' | "text" | true | false
    OP      := < | <= | > | >= | == | !=

A comparison with a missing (null) value is unknown, and so is a rule whose outcome hangs on it: `and` / `or`
follow Kleene's logic (false and unknown = false; true or unknown = true), so a rule that holds or fails whatever
the missing value is decided all the same. What happens to an undecided row is the stage's `missing` setting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import UsageError

OPS = ("<=", ">=", "==", "!=", "<", ">")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_PC = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal, "==": pc.equal, "!=": pc.not_equal}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op><=|>=|==|!=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
KEYWORDS = ("and", "or", "not", "in", "true", "false")


@dataclass(frozen=True)
class Col:
    name: str


@dataclass(frozen=True)
class Lit:
    value: float | str | bool


@dataclass(frozen=True)
class Compare:
    left: Col | Lit
    op: str
    right: Col | Lit


@dataclass(frozen=True)
class In:
    column: Col
    values: tuple[float | str | bool, ...]
    negated: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | In | BoolOp | Not


class _Parser:
    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(f"unexpected character {text[pos]!r} at position {pos + 1}")
            kind = m.lastgroup
            if kind != "space":
                value = m.group()
                if kind == "name" and value in KEYWORDS:
                    kind = value
                self.tokens.append((kind, value, pos))
            pos = m.end()
        self.i = 0

    def fail(self, problem: str) -> None:
        raise UsageError(f"{self.where} '{self.text}': {problem}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, *kinds: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            self.fail(f"ends too early (expected {' or '.join(kinds)})")
        if tok[0] not in kinds and tok[1] not in kinds:
            self.fail(f"expected {' or '.join(kinds)} at position {tok[2] + 1}, found {tok[1]!r}")
        self.i += 1
        return tok

    def at(self, *kinds: str) -> bool:
        tok = self.peek()
        return tok is not None and (tok[0] in kinds or tok[1] in kinds)

    def rule(self) -> Node:
        if not self.tokens:
            self.fail("is empty")
        node = self.or_()
        tok = self.peek()
        if tok is not None:
            self.fail(f"unexpected {tok[1]!r} at position {tok[2] + 1}")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.at("or"):
            self.take("or")
            items.append(self.and_())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while self.at("and"):
            self.take("and")
            items.append(self.not_())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_(self) -> Node:
        if self.at("not"):
            self.take("not")
            return Not(self.not_())
        if self.at("("):
            self.take("(")
            node = self.or_()
            self.take(")")
            return node
        return self.compare()

    def value(self) -> Col | Lit:
        kind, text, _ = self.take("name", "number", "string", "true", "false")
        if kind == "name":
            return Col(text)
        return Lit(self._literal(kind, text))

    @staticmethod
    def _literal(kind: str, text: str) -> float | str | bool:
        if kind == "number":
            return float(text)
        if kind == "string":
            return text[1:-1]
        return kind == "true"

    def compare(self) -> Node:
        start = self.peek()
        left = self.value()
        if self.at("not", "in"):
            negated = self.at("not")
            if negated:
                self.take("not")
            self.take("in")
            if not isinstance(left, Col):
                self.fail(f"'in' needs a column on its left (position {start[2] + 1})")
            self.take("[")
            values = [self._literal(*self.take("number", "string", "true", "false")[:2])]
            while self.at(","):
                self.take(",")
                values.append(self._literal(*self.take("number", "string", "true", "false")[:2]))
            self.take("]")
            return In(left, tuple(values), negated)
        op = self.take("op")[1]
        right = self.value()
        if not isinstance(left, Col) and not isinstance(right, Col):
            self.fail(f"the comparison at position {start[2] + 1} names no column")
        return Compare(left, op, right)


def _columns(node: Node) -> list[str]:
    if isinstance(node, Compare):
        return [v.name for v in (node.left, node.right) if isinstance(v, Col)]
    if isinstance(node, In):
        return [node.column.name]
    if isinstance(node, Not):
        return _columns(node.item)
    return [c for item in node.items for c in _columns(item)]


@dataclass(frozen=True)
class Rule:
    """One parsed rule: its text, the setting it came from (`keep[0]`) and the columns it names, in order."""

    text: str
    where: str
    node: Node
    columns: tuple[str, ...]

    def bind(self, schema: pa.Schema) -> None:
        """Refuse a column the data will not have, or a comparison of text with a number; before any row is read."""
        for name in self.columns:
            if name not in schema.names:
                known = ", ".join(n for n in schema.names if _kind(schema.field(n).type) is not None)
                raise UsageError(f"{self.where} '{self.text}': unknown column '{name}'; known: {known}")
            if _kind(schema.field(name).type) is None:
                raise UsageError(f"{self.where} '{self.text}': column '{name}' is {schema.field(name).type}, "
                                 "not a number, text or true/false a rule can compare")
        self._check(self.node, schema)

    def _check(self, node: Node, schema: pa.Schema) -> None:
        if isinstance(node, (BoolOp, Not)):
            for item in node.items if isinstance(node, BoolOp) else (node.item,):
                self._check(item, schema)
            return
        sides = [node.left, node.right] if isinstance(node, Compare) else [node.column, *map(Lit, node.values)]
        kinds = {(s.name if isinstance(s, Col) else repr(s.value)): (_kind(schema.field(s.name).type)
                                                                     if isinstance(s, Col) else _kind_of(s.value))
                 for s in sides}
        if len(set(kinds.values())) > 1:
            shown = ", ".join(f"{k} is {v}" for k, v in kinds.items())
            raise UsageError(f"{self.where} '{self.text}': compares values of different kinds ({shown})")
        if isinstance(node, Compare) and node.op not in ("==", "!=") and "true/false" in kinds.values():
            raise UsageError(f"{self.where} '{self.text}': true/false compare with == or != only")

    def evaluate(self, table: pa.Table | pa.RecordBatch) -> pa.BooleanArray:
        """True, false or null (undecided) per row."""
        out = _eval(self.node, table)
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out

    def values(self, row: dict[str, Any]) -> str:
        """The row's values of the rule's columns, for a reason: `score_judge = 2, score_repetition = 0.05`."""
        return ", ".join(f"{name} = {shown(row.get(name))}" for name in dict.fromkeys(self.columns))

    def missing(self, row: dict[str, Any]) -> list[str]:
        return [name for name in dict.fromkeys(self.columns) if row.get(name) is None]


def shown(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return repr(value) if isinstance(value, str) else str(value)


def _kind(tp: pa.DataType) -> str | None:
    if pa.types.is_integer(tp) or pa.types.is_floating(tp):
        return "a number"
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return "text"
    if pa.types.is_boolean(tp):
        return "true/false"
    return None


def _kind_of(value: Any) -> str:
    return "true/false" if isinstance(value, bool) else "text" if isinstance(value, str) else "a number"


def _operand(v: Col | Lit, table: Any) -> Any:
    return table.column(v.name) if isinstance(v, Col) else pa.scalar(v.value)


def _eval(node: Node, table: Any) -> Any:
    if isinstance(node, Compare):
        left, right, op = node.left, node.right, node.op
        if isinstance(left, Lit):  # 3 < col is col > 3: the column first, as pyarrow wants an array there
            left, right, op = right, left, _FLIP[op]
        return _PC[op](_operand(left, table), _operand(right, table))
    if isinstance(node, In):
        col = table.column(node.column.name)
        found = pc.is_in(col, value_set=pa.array(list(node.values), type=col.type))
        if node.negated:
            found = pc.invert(found)
        return pc.if_else(pc.is_valid(col), found, pa.scalar(None, pa.bool_()))  # a missing value is undecided
    if isinstance(node, Not):
        return pc.invert(_eval(node.item, table))
    fn = pc.and_kleene if node.op == "and" else pc.or_kleene
    out = _eval(node.items[0], table)
    for item in node.items[1:]:
        out = fn(out, _eval(item, table))
    return out


def parse_rule(text: str, where: str = "keep") -> Rule:
    """Parse one rule; a syntax error is a UsageError naming `where`, the rule and the position."""
    if not isinstance(text, str):
        raise UsageError(f"{where}: a rule is text, got {text!r}")
    node = _Parser(text, where).rule()
    return Rule(text.strip(), where, node, tuple(_columns(node)))


def parse_rules(texts: list[str] | tuple[str, ...]) -> list[Rule]:
    return [parse_rule(t, f"keep[{i}]") for i, t in enumerate(texts)]
