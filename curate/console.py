"""The one stderr console, progress bars, and JSON output shared by every command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# soft_wrap: a log line stays one line when piped (rich would break it at 80 columns); tables still fit the width
console = Console(stderr=True, soft_wrap=True)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "records") -> Iterator[Any]:
    """A rich progress bar on stderr; yields a callable advance(n=1). Silent when stderr is not a terminal."""
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: float = 1, **fields: Any) -> None:
            bar.update(task, advance=n, **fields)

        yield advance


def print_json(obj: Any) -> None:
    """One JSON document on stdout (for --json)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
