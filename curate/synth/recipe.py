"""Synth recipes: YAML (or an embedded dict) validated against schemas/synth-recipe.schema.json, plus seeds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from curate.errors import RecipeError, UsageError
from curate.recipe import line_of, load_yaml, validate
from curate.synth.templates import Seed, compile_template, seed_from_row
from curate.trust import Checker, roots_for

SCHEMA_NAME = "synth-recipe"
_ROWS = 256  # seed records turned into Python objects at a time


@dataclass
class Document:
    """One grounding-document chunk."""

    name: str
    text: str
    line: int
    chunk: int


@dataclass
class SynthRecipe:
    """A validated recipe with compiled templates and loaded grounding documents."""

    name: str
    data: dict[str, Any]
    file: str | None
    base_dir: Path
    hash: str
    templates: dict[str, jinja2.Template]
    documents: list[Document] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def reply_schema(self) -> dict[str, Any] | None:
        return (self.data.get("reply") or {}).get("schema")

    @property
    def max_attempts(self) -> int:
        return int((self.data.get("reply") or {}).get("max_attempts", 3))

    @property
    def grounding_use(self) -> str:
        return (self.data.get("grounding") or {}).get("use", "all")

    @property
    def consistency(self) -> int:
        """Answers per request whose labels must agree (1: the check is off)."""
        return int((self.data.get("checks") or {}).get("consistency", 1))

    @property
    def check_temperature(self) -> float:
        """The temperature of the extra answers of the consistency check."""
        return float((self.data.get("checks") or {}).get("check_temperature", 0.7))

    @property
    def agree_with_data(self) -> int:
        """k of the check against the reference data's labels (0: off)."""
        return int((self.data.get("checks") or {}).get("agree_with_data", 0))

    @property
    def verify_labels(self) -> bool:
        return bool((self.data.get("checks") or {}).get("verify_labels", False))

    @property
    def unsupported_facts(self) -> str:
        """What becomes of a row with unsupported claims: keep | drop | review."""
        return (self.data.get("facts") or {}).get("unsupported", "keep")

    @property
    def label_fields(self) -> list[tuple[str, ...]]:
        """Paths of the reply schema's enum fields (properties with `enum`, in nested objects too): the labels."""
        return label_fields(self.reply_schema)

    def params(self) -> dict[str, Any]:
        """Sampling parameters sent with every request (and hashed into its cache key)."""
        p = {"temperature": float(self.data.get("temperature", 0.7)), "max_tokens": int(self.data.get("max_tokens", 512))}
        if "top_p" in self.data:
            p["top_p"] = float(self.data["top_p"])
        return p


def _source(recipe: str | Path | dict[str, Any],
            base_dir: str | Path | None) -> tuple[dict[str, Any], str | None, Path, tuple[Path, ...]]:
    """(the recipe's data, its file, the folder its paths are relative to, the folders it may read)."""
    if isinstance(recipe, dict):  # an inline recipe names the run recipe it sits in
        base = Path(base_dir) if base_dir else Path.cwd()
        return recipe, getattr(recipe, "file", None), base, roots_for(base)
    base = Path(base_dir) if base_dir else Path(recipe).resolve().parent
    return load_yaml(recipe), str(recipe), base, roots_for(Path(recipe).parent, base_dir)


def load_synth_recipe(recipe: str | Path | dict[str, Any], base_dir: str | Path | None = None, *,
                      trust: bool = False) -> SynthRecipe:
    """Load and validate a synth recipe from a YAML path or a dict; the files it names must lie in its folder
    (or `base_dir`) or the current directory unless `trust` (see curate/trust.py).

    Paths in the recipe are relative to `base_dir`, default the recipe file's folder (a dict: the current
    directory). Every problem is raised at once, each with its key and line: first the recipe's shape
    (RecipeError), then the files it may not read (RecipeRefused), then the reply schema and the templates.
    Call it on its own to check a recipe before anything runs.
    """
    data, file, base, roots = _source(recipe, base_dir)
    validate(data, SCHEMA_NAME, file)
    checker = Checker(file, data, roots, trust)
    matches = check_paths(checker, data, base)
    checker.raise_if_any()
    prefix = "".join(f"{k}." for k in getattr(data, "keypath", ()))  # key names as the user's file spells them
    problems: list[str] = []
    schema = (data.get("reply") or {}).get("schema")
    if schema is not None:
        from jsonschema import Draft202012Validator, SchemaError
        from jsonschema.validators import validator_for

        try:  # with the draft the reply check uses (curate/replies.py): the one its $schema names, else 2020-12
            validator_for(schema, default=Draft202012Validator).check_schema(schema)
        except SchemaError as exc:
            line = line_of(data, ["reply", "schema", *exc.path])
            problems.append(f"{prefix}reply.schema (line {line}): not a valid JSON Schema: {exc.message}")
    templates = {}
    sources = [(key, data[key], [key]) for key in ("system", "prompt") if key in data]
    sources += [(f"output.{key}", text, ["output", key]) for key, text in (data.get("output") or {}).items()]
    for name, text, keys in sources:
        try:
            templates[name] = compile_template(text, prefix + name, line_of(data, keys), file)
        except RecipeError as exc:
            problems += exc.problems
    checks = data.get("checks") or {}
    for key in ("consistency", "verify_labels", "agree_with_data"):
        if checks.get(key) and not label_fields(schema):
            problems.append(f"{prefix}checks.{key} (line {line_of(data, ['checks', key])}): compares labels, but "
                            "reply.schema has no property with an `enum` (the labels to check)")
    if problems:
        raise RecipeError(problems, file)
    documents = _load_documents(data, base, matches)
    h = hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode())
    for d in documents:
        h.update(f"\0{d.name}\0{d.text}".encode())
    return SynthRecipe(data["name"], data, file, base, h.hexdigest()[:16], templates, documents)


def label_fields(schema: dict[str, Any] | None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the properties with an `enum` in a JSON Schema, through nested objects' `properties`."""
    out: list[tuple[str, ...]] = []
    props = schema.get("properties") if isinstance(schema, dict) else None
    for name, sub in (props.items() if isinstance(props, dict) else ()):
        if isinstance(sub, dict) and isinstance(sub.get("enum"), list):
            out.append((*path, name))
        elif isinstance(sub, dict):
            out += label_fields(sub, (*path, name))
    return out


def grounding_files(recipe: str | Path | dict[str, Any], base_dir: str | Path | None = None) -> list[Path]:
    """The files a recipe's grounding documents name (what `curate run` hashes into the synth stage's key).

    A relative recipe path is relative to `base_dir`, as its document patterns are. The recipe policy is
    not applied here: load_synth_recipe() applies it before anything is read.
    """
    if not isinstance(recipe, dict) and base_dir is not None and not Path(recipe).is_absolute():
        recipe = Path(base_dir) / recipe
    data, file, base, roots = _source(recipe, base_dir)
    grounding = data.get("grounding")
    patterns = grounding.get("documents") if isinstance(grounding, dict) else None
    checker = Checker(file, data, roots, trust=True)  # lists every match; refusing is load_synth_recipe's job
    found = [m for i, p in enumerate(patterns if isinstance(patterns, list) else []) if isinstance(p, str)
             for m in checker.pattern(["grounding", "documents", i], p, base)]
    return [Path(m) for m in dict.fromkeys(found)]


def check_paths(checker: Checker, data: dict[str, Any], base: Path) -> list[list[str]]:
    """Check every path a synth recipe names (seeds, grounding documents); each document pattern's matches."""
    if isinstance(data.get("seeds"), str):
        checker.path(["seeds"], data["seeds"], base)
    grounding = data.get("grounding")
    patterns = grounding.get("documents") if isinstance(grounding, dict) else None
    out = []
    for i, pattern in enumerate(patterns if isinstance(patterns, list) else []):
        if not isinstance(pattern, str):
            continue
        n = len(checker.problems)
        out.append(checker.pattern(["grounding", "documents", i], pattern, base))
        if not out[-1] and len(checker.problems) == n:
            checker.add(["grounding", "documents", i], f"no file matches '{pattern}' (paths are relative to {base})")
    return out


def _load_documents(data: dict[str, Any], base: Path, matches: list[list[str]]) -> list[Document]:
    grounding = data.get("grounding")
    if not grounding:
        return []
    size = int(grounding.get("chunk_chars", 2000))
    docs: list[Document] = []
    for path in (m for found in matches for m in found):
        name = str(Path(path).relative_to(base)) if Path(path).is_relative_to(base) else path
        docs += chunk_document(name, Path(path).read_text(encoding="utf-8"), size)
    return docs


def chunk_document(name: str, text: str, size: int) -> list[Document]:
    """Split on blank lines into chunks of about `size` characters, keeping each chunk's first line."""
    chunks: list[Document] = []
    buf: list[str] = []
    start = line = 1
    for para in text.split("\n\n"):
        if buf and sum(len(p) + 2 for p in buf) + len(para) > size:
            chunks.append(Document(name, "\n\n".join(buf).strip(), start, len(chunks)))
            buf, start = [], line
        buf.append(para)
        line += para.count("\n") + 2
    if buf and "\n\n".join(buf).strip():
        chunks.append(Document(name, "\n\n".join(buf).strip(), start, len(chunks)))
    return chunks


def load_seeds(recipe: SynthRecipe, seeds: str | Path | None = None,
               max_seeds: int | None = None) -> tuple[list[Seed], int]:
    """The distinct seeds and the duplicate count: exact duplicates collapse (they would send identical requests).

    `max_seeds` reads only the first N seed records (duplicates among them still collapse); the recipe's
    `limit_seeds` then keeps the first N distinct ones. With grounding.use: each every document chunk is a seed.
    """
    stream = SeedStream(recipe, seeds, max_seeds)
    return list(stream.read(count=True)), stream.duplicates


class SeedStream:
    """A recipe's distinct seeds (those of `load_seeds`), read from their file on every pass instead of held.

    A pass keeps only the ids it has seen. `check()` reads the whole file once (a missing or unreadable seed
    file fails there) and sets `count` (distinct seeds) and `duplicates` (as `load_seeds` counts them).
    """

    def __init__(self, recipe: SynthRecipe, seeds: str | Path | None = None, max_seeds: int | None = None):
        self.recipe, self.max_seeds = recipe, max_seeds
        self.count = self.duplicates = 0
        self.path: Path | None = None
        if recipe.grounding_use == "each":
            if seeds is not None or recipe.get("seeds"):
                raise UsageError(f"recipe {recipe.name} uses grounding.use: each (every document chunk is a seed); "
                                 "it takes no --seeds file")
            return
        path = Path(seeds) if seeds is not None else (recipe.base_dir / recipe.get("seeds") if recipe.get("seeds")
                                                      else None)
        if path is None:
            raise UsageError(f"recipe {recipe.name} names no seeds file; pass --seeds FILE")
        if not path.exists():
            raise UsageError(f"no such seeds file: {path}")
        self.path = path

    def check(self) -> SeedStream:
        """Read every seed record once (nothing held) to count them; raises on an unreadable seed file."""
        for _ in self.read(count=True):
            pass
        return self

    def __iter__(self) -> Iterator[Seed]:
        return self.read()

    def read(self, count: bool = False) -> Iterator[Seed]:
        """The distinct seeds in file order, up to the recipe's `limit_seeds`; `count` reads on past that limit to
        count every duplicate among the first `max_seeds` records, and sets `count` and `duplicates`."""
        limit = self.recipe.get("limit_seeds") or None
        kept = 0
        if self.path is None:  # grounding.use: each
            for d in self.recipe.documents[: self.max_seeds]:
                if limit is not None and kept >= limit:
                    break
                sid = hashlib.sha256(f"{d.name}\0{d.text}".encode()).hexdigest()[:16]
                variables = {"document": {"name": d.name, "text": d.text}, "seed_id": sid}
                kept += 1
                yield Seed(sid, variables, {"file": d.name, "line": d.line, "row": d.chunk}, [(d.name, d.text)])
            if count:
                self.count, self.duplicates = kept, 0
            return
        from curate.dataset import CANONICAL_COLUMNS
        from curate.inputs import open_input

        seen: set[str] = set()
        dup = read = 0
        for batch in open_input(self.path, self.recipe.get("seed_format", "auto")).batches():
            extra_cols = [c for c in batch.schema.names if c not in CANONICAL_COLUMNS]
            if self.max_seeds is not None:
                batch = batch.slice(0, self.max_seeds - read)
            for start in range(0, batch.num_rows, _ROWS):  # Python objects for a few rows at a time
                for row in batch.slice(start, _ROWS).to_pylist():
                    read += 1
                    if row["id"] in seen:
                        dup += 1
                        continue
                    seen.add(row["id"])
                    if limit is not None and kept >= limit:
                        if not count:
                            return
                        continue
                    kept += 1
                    yield seed_from_row(row, {c: row[c] for c in extra_cols})
            if self.max_seeds is not None and read >= self.max_seeds:
                break
        if count:
            self.count, self.duplicates = kept, dup
