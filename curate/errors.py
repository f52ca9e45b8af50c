"""Errors a user can act on.

    CurateError                  exit 1 unless said otherwise
    +-- UsageError               exit 2: bad option, missing file, unknown format or schema
    |   +-- MissingDependency    an optional extra is not installed; says which pip install fixes it
    +-- InputError               bad data, with file / line / field where known
    +-- RecipeError              a recipe YAML is invalid; names the key and the line
    +-- ThresholdExceeded        data problems over a user-set threshold (exit 1)

Only cli.py turns these into `Error: ...` and an exit code; library code raises them.
"""

from __future__ import annotations


class CurateError(Exception):
    """Base of every error curate raises on purpose."""

    exit_code = 1


class UsageError(CurateError):
    exit_code = 2


class MissingDependency(UsageError):
    def __init__(self, package: str, extra: str, purpose: str = ""):
        self.package = package
        self.extra = extra
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the optional package '{package}' is not installed{why}; "
            f"install it with: pip install 'curate-ft[{extra}]'"
        )


class InputError(CurateError):
    def __init__(self, message: str, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(p) for p in (file, line) if p is not None)
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class RecipeError(CurateError):
    exit_code = 2

    def __init__(self, problems: list[str], file: str | None = None):
        self.problems = problems
        head = f"invalid recipe {file}" if file else "invalid recipe"
        super().__init__(head + ":\n  " + "\n  ".join(problems))


class ThresholdExceeded(CurateError):
    exit_code = 1
