"""What a recipe from someone else may do: read files only in its folders, and choose no secrets.

A recipe (`curate run`, `curate synth --recipe`) is data that may come from untrusted hands. By
default every path it names must resolve (symlinks and `..` resolved first) inside the recipe's
folder or the current directory, and it may not choose which environment variable is sent as an
API key. `--trust-recipe` (`trust=True`) lifts both; the template size limit always applies.
Each refusal is one line naming the recipe file, the key, its line and the flag that allows it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import CurateError, RecipeError
from curate.recipe import line_of

TRUST_FLAG = "--trust-recipe"
OUTSIDE = "outside the recipe's folder and the current directory"
GLOB_CHARS = "*?["


class RecipeRefused(RecipeError):
    """A recipe asked for something it may not do; one line per problem."""

    def __init__(self, lines: list[str]):
        self.problems, self.file = lines, None
        CurateError.__init__(self, "\n".join(lines))


def roots_for(*folders: str | Path | None) -> tuple[Path, ...]:
    """The folders a recipe may read from: the given ones and the current directory, resolved."""
    out: list[Path] = []
    for f in (*folders, Path.cwd()):
        if f is not None and (r := Path(f).resolve()) not in out:
            out.append(r)
    return tuple(out)


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path`, with symlinks and `..` resolved, lies in one of `roots`."""
    real = path.resolve()
    return any(real.is_relative_to(r) for r in roots)


@dataclass
class Checker:
    """Collects every problem of one recipe (and recipes it names) before anything runs."""

    file: str | None
    data: Any
    roots: tuple[Path, ...]
    trust: bool = False
    problems: list[str] = field(default_factory=list)

    def nested(self, file: str | None, data: Any) -> Checker:
        """A checker for a recipe this one names; problems are reported together."""
        return Checker(file, data, self.roots, self.trust, self.problems)

    def where(self, keys: Sequence[Any]) -> str:
        """`recipe r.yaml: synth.recipe.seeds (line 31)`: the file, the full key path and its line."""
        full = [*getattr(self.data, "keypath", ()), *keys]
        line = line_of(self.data, list(keys))
        label = self.file or "given as a dict"
        return f"recipe {label}: {'.'.join(map(str, full))}" + (f" (line {line})" if line else "")

    def add(self, keys: Sequence[Any], message: str, *, allowable: bool = False) -> None:
        """Record a problem; one that --trust-recipe lifts is skipped when trusted and says so otherwise."""
        if allowable and self.trust:
            return
        hint = f"; pass {TRUST_FLAG} to allow it" if allowable else ""
        self.problems.append(f"{self.where(keys)}: {message}{hint}")

    def path(self, keys: Sequence[Any], value: str, base: Path, *, must_exist: str | None = None) -> Path:
        """Check one path a recipe names (relative to `base`); `must_exist` is the noun for a missing one."""
        p = Path(value) if Path(value).is_absolute() else base / value
        ok = inside(p, self.roots)
        if not ok:
            shown = f"'{value}'" + (f" (resolves to {p.resolve()})" if inside(p.parent, self.roots) else "")
            self.add(keys, f"{shown} is {OUTSIDE}", allowable=True)
        if (ok or self.trust) and must_exist and not p.exists():
            self.add(keys, f"no such {must_exist} '{value}' (looked for {p.resolve()})")
        return p

    def pattern(self, keys: Sequence[Any], pattern: str, base: Path) -> list[str]:
        """Check a file or glob; every match must be inside. Returns the matches that may be read."""
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        if not any(c in pattern for c in GLOB_CHARS):
            self.path(keys, pattern, base)
            return [full] if Path(full).is_file() else []
        # the folder before the first wildcard: never search one outside
        first = min(full.index(c) for c in GLOB_CHARS if c in full)
        fixed = Path(full[: full.rfind(os.sep, 0, first) + 1] or ".")
        if not inside(fixed, self.roots) and not self.trust:
            self.add(keys, f"'{pattern}' is {OUTSIDE}", allowable=True)
            return []
        matches = sorted(glob.glob(full, recursive=True))
        outside = [m for m in matches if not inside(Path(m), self.roots)]
        if outside:
            self.add(keys, f"'{pattern}' matches {outside[0]}, which resolves to {Path(outside[0]).resolve()}, "
                           f"{OUTSIDE}", allowable=True)
        return matches if self.trust or not outside else []

    def raise_if_any(self) -> None:
        if self.problems:
            raise RecipeRefused(self.problems)
