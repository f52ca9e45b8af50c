"""The run's work folder: curate writes only inside it, and deletes or replaces only what it wrote there.

WORKDIR/.curate-run.json (the ledger) lists every stage folder curate created, with the files in it,
and the files it wrote beside them (manifest.json, DATASET_CARD.md). A work folder that exists, is not
empty and has no ledger is refused; so is replacing a stage folder that holds anything the ledger does
not list. A stage folder is listed as scratch before it is created and as finished with its files
after, so a run killed in a stage leaves nothing curate cannot clean up.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from curate import __version__
from curate.dataset import atomic_path
from curate.errors import UsageError

LEDGER = ".curate-run.json"


def listing(folder: Path) -> list[str]:
    """Every file and folder under `folder`, as relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


class WorkFolder:
    """A work folder and its ledger of what curate wrote in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ledger = self._read()

    def _read(self) -> dict | None:
        f = self.path / LEDGER
        if not f.is_file():
            return None
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"unreadable": True}
        return data if isinstance(data, dict) else {"unreadable": True}

    def problems(self, stages: Iterable[str]) -> list[str]:
        """What forbids running here; empty when curate may write and replace its stage folders."""
        p = self.path
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            return [f"work folder {p} is not a folder"]
        if not p.exists():
            return []
        if self.ledger is None:
            if any(p.iterdir()):
                return [(f"work folder {p} exists, is not empty and was not made by curate run (it has no {LEDGER}); "
                         "choose a new or empty folder (a folder made by an older curate: delete it first)")]
            return []
        if self.ledger.get("unreadable"):
            return [f"work folder {p}: its ledger {LEDGER} is not readable JSON; choose a new or empty folder"]
        out = [problem for stage in stages for problem in self.foreign(stage)]
        for name in ("manifest.json", "DATASET_CARD.md"):
            if (p / name).exists() and name not in self.ledger.get("files", []):
                out.append(f"work folder {p}: {name} was not written by curate, which would replace it; move it away")
        return out

    def foreign(self, name: str) -> list[str]:
        """Why `name` (a stage folder or its scratch folder) may not be replaced; empty when it may."""
        d = self.path / name
        if not (d.exists() or d.is_symlink()):
            return []
        ledger = self.ledger or {}
        if name in ledger.get("scratch", []) and d.is_dir() and not d.is_symlink():
            return []
        known = ledger.get("folders", {}).get(name)
        if known is None or d.is_symlink() or not d.is_dir():
            return [(f"work folder {self.path}: {name} was not made by curate, which would replace it for that "
                     "stage; move it away")]
        extra = sorted(set(listing(d)) - set(known))
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            return [(f"work folder {self.path}: {name}/{extra[0]}{more} was not written by curate, which replaces "
                     f"{name} when that stage reruns; move it away")]
        return []

    def open(self) -> None:
        """Create the folder and its ledger (refusing one curate may not write in)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.ledger is None:
            self.ledger = {"curate": __version__, "folders": {}, "scratch": [], "files": []}
            self._save()

    def remove(self, name: str) -> None:
        """Delete a stage or scratch folder curate wrote; refuse one holding anything else."""
        problems = self.foreign(name)
        if problems:
            raise UsageError(problems[0])
        shutil.rmtree(self.path / name)

    def record_folder(self, name: str, files: list[str]) -> None:
        self.ledger["folders"][name] = sorted(set(files))
        self._save()

    def record_scratch(self, name: str, present: bool = True) -> None:
        scratch = set(self.ledger.setdefault("scratch", []))
        self.ledger["scratch"] = sorted(scratch | {name} if present else scratch - {name})
        self._save()

    def record_file(self, name: str) -> None:
        if name not in self.ledger.setdefault("files", []):
            self.ledger["files"].append(name)
            self._save()

    def _save(self) -> None:
        with atomic_path(self.path / LEDGER) as tmp:
            tmp.write_text(json.dumps(self.ledger, indent=1))
