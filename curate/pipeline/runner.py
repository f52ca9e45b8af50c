"""The stage runner behind `curate run`: content-hashed skipping, atomic stage folders, the run manifest.

A stage's key hashes its name, its configuration, the bytes of its inputs and curate's version.
Its outputs are written in a temporary folder that is renamed into place with a `stage.json`
only when the stage finishes, so a run killed at any point resumes at the first unfinished stage.
Stages that must not lose work when killed (synth's request cache, training checkpoints) keep
it in `WORKDIR/.cache/STAGE/`, which survives the rename. Curate deletes only what its ledger says
it wrote (curate/pipeline/workdir.py).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from curate import __version__
from curate.console import console
from curate.dataset import content_hash_file
from curate.errors import UsageError
from curate.pipeline.workdir import WorkFolder, listing

STAGE_FILE = "stage.json"


@dataclass
class StageResult:
    """What a stage function returns: its output files (relative names), counts, and a summary."""

    outputs: dict[str, str]
    counts: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # ran | cached | skipped
    inputs: dict[str, dict[str, str]]
    config: dict[str, Any]
    outputs: dict[str, dict[str, str]]
    counts: dict[str, Any]
    summary: dict[str, Any]
    seconds: float

    def path(self, name: str) -> Path:
        return Path(self.outputs[name]["path"])


def hash_inputs(inputs: dict[str, Path | None]) -> dict[str, dict[str, str]]:
    out = {}
    for name, p in inputs.items():
        if p is None:
            continue
        p = Path(p)
        out[name] = {"path": str(p), "sha256": _hash_path(p)}
    return out


def _hash_path(p: Path) -> str:
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and x.name != STAGE_FILE):
            h.update(str(f.relative_to(p)).encode() + b"\0" + content_hash_file(f).encode())
        return h.hexdigest()
    return content_hash_file(p)


def versions() -> dict[str, str]:
    out = {"curate": __version__, "python": platform.python_version()}
    for pkg in ("pyarrow", "datasketch", "transformers", "torch", "peft", "openai", "llama-cpp-python"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class Runner:
    """Runs stages in order inside WORKDIR, skipping those whose key matches a finished run."""

    def __init__(self, workdir: Path, force: tuple[str, ...] = (), only: str | None = None,
                 stages: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.only = only
        self.work = WorkFolder(self.workdir)
        problems = self.work.problems(stages)
        if problems:
            raise UsageError("\n".join(problems))
        self.work.open()
        self.force = set(force)
        self.records: list[StageRecord] = []

    def cache_dir(self, name: str) -> Path:
        d = self.workdir / ".cache" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def stage(
        self,
        name: str,
        inputs: dict[str, Path | None],
        config: dict[str, Any],
        fn: Callable[[Path], StageResult],
    ) -> StageRecord:
        hashed = hash_inputs(inputs)
        key = hashlib.sha256(
            json.dumps({"stage": name, "config": config, "inputs": {k: v["sha256"] for k, v in hashed.items()},
                        "curate": __version__}, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        final = self.workdir / name
        done = final / STAGE_FILE
        if self.only and name != self.only:
            # --only STAGE: the other stages' last results are used as they are
            if not done.exists():
                raise UsageError(f"--only {self.only}: stage '{name}' has not run yet in {self.workdir}; run without --only first")
            prev = json.loads(done.read_text())
            if prev.get("key") != key:
                console.print(f"[yellow]{name}: its inputs or settings changed since it ran; using its last outputs (--only)[/]")
            rec = StageRecord(**{**prev, "status": "cached"})
            self.records.append(rec)
            return rec
        if name not in self.force and done.exists():
            prev = json.loads(done.read_text())
            if prev.get("key") == key and all(Path(o["path"]).exists() for o in prev["outputs"].values()):
                rec = StageRecord(**{**prev, "status": "cached"})
                console.print(f"[dim]{name}: unchanged since the last run (key {key}), skipped[/]")
                self.records.append(rec)
                return rec
        console.rule(f"[bold]{name}")
        tmp = self.workdir / f".{name}.partial"
        if tmp.exists() or tmp.is_symlink():
            self.work.remove(tmp.name)
        self.work.record_scratch(tmp.name)  # listed before it exists: whatever a killed stage leaves is curate's
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        result = fn(tmp)
        seconds = round(time.perf_counter() - start, 2)
        if final.exists() or final.is_symlink():
            self.work.remove(name)
        # listed before the rename, so a kill right after it still leaves the folder curate's own
        self.work.record_folder(name, [*listing(tmp), STAGE_FILE, f".{STAGE_FILE}.tmp"])
        tmp.rename(final)
        self.work.record_scratch(tmp.name, present=False)
        outputs = {k: {"path": str(final / rel), "sha256": _hash_path(final / rel)} for k, rel in result.outputs.items()}
        rec = StageRecord(name, key, "ran", hashed, config, outputs, result.counts, result.summary, seconds)
        tmp_done = final / f".{STAGE_FILE}.tmp"
        tmp_done.write_text(json.dumps(asdict(rec), indent=2, default=str))
        tmp_done.rename(done)  # the stage counts as finished only once this file exists
        self.records.append(rec)
        return rec

    def skipped(self, name: str, reason: str) -> None:
        self.records.append(StageRecord(name, "", "skipped", {}, {}, {}, {}, {"reason": reason}, 0.0))
        console.print(f"[dim]{name}: skipped ({reason})[/]")

    def manifest(self, recipe_path: str | None, recipe_sha: str | None) -> dict[str, Any]:
        return {
            "recipe": recipe_path,
            "recipe_sha256": recipe_sha,
            "workdir": str(self.workdir),
            "versions": versions(),
            "stages": [asdict(r) for r in self.records],
        }
