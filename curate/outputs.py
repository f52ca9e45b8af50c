"""Output files published as one set: all of a command's outputs appear together, or none of them do.

Every file is written under a temporary name beside its target (`.NAME.PID.RANDOM.curate.tmp`). On
commit a journal listing the renames is written first (one atomic rename); then the old primary
output is removed, stale companions from earlier runs (files this run owns but did not write) are
removed, the companions are renamed into place, and the primary last. So whenever the primary file
exists, its companions are the ones written with it. A kill inside the commit leaves the journal;
the next command that writes the same output (or `recover()`) finishes it. Temporary files of
killed runs (their process is gone) are removed whenever a command writes into their folder.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".curate.tmp"
JOURNAL_SUFFIX = ".curate-commit"
# CRC32 of every page: a flipped byte in a file curate wrote is found when it is read back
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_page_checksum": True}


def target_of(path: str | Path) -> Path:
    """The file a temporary name stands for (any other path as it is), for messages."""
    path = Path(path)
    name = path.name
    if name.startswith(".") and name.endswith(TMP_SUFFIX):
        parts = name[1 : -len(TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit():
            return path.with_name(parts[0])
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove temporary files that killed curate processes left in `folder`; returns what was removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    needed = None
    for name in names:
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
            continue
        parts = name[: -len(TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        path = folder / name
        needed = _journal_temps(folder) if needed is None else needed
        if path in needed:
            continue  # an unfinished commit still needs it; recover() will move it into place
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _journal_temps(folder: Path) -> set[Path]:
    temps: set[Path] = set()
    for j in folder.glob(f".*{JOURNAL_SUFFIX}"):
        try:
            temps |= {Path(tmp) for tmp, _ in json.loads(j.read_text())["renames"]}
        except (OSError, ValueError, KeyError):
            continue
    return temps


def _journal(primary: Path) -> Path:
    return primary.with_name(f".{primary.name}{JOURNAL_SUFFIX}")


def recover(primary: str | Path) -> bool:
    """Finish a commit of `primary`'s output set that a killed process left half done; True if there was one."""
    journal = _journal(Path(primary))
    try:
        plan = json.loads(journal.read_text())
    except FileNotFoundError:
        return False
    except ValueError:
        journal.unlink(missing_ok=True)  # torn journal: it was never renamed into place, so nothing moved
        return False
    _apply(plan)
    journal.unlink(missing_ok=True)
    return True


def _apply(plan: dict[str, Any]) -> None:
    renames = [(Path(t), Path(f)) for t, f in plan["renames"]]
    primary_tmp, primary = renames[-1]
    if primary_tmp.exists():  # the primary has not moved yet: take the old one away before any companion moves
        primary.unlink(missing_ok=True)
        for stale in plan["remove"]:
            Path(stale).unlink(missing_ok=True)
        for tmp, final in renames:
            if tmp.exists():
                os.replace(tmp, final)


class OutputSet:
    """The files one command writes, published together by `commit()` (or dropped by `abort()`).

    primary: the main output (it appears last and disappears first); owned: every other file the
    command may write there, so that one an earlier run left and this run does not write is removed.
    """

    def __init__(self, primary: str | Path, owned: Iterable[str | Path] = ()):
        self.primary = Path(primary)
        self.owned = [Path(p) for p in owned if Path(p) != self.primary]
        self.temps: dict[Path, Path] = {}
        self.done = False
        self.primary.parent.mkdir(parents=True, exist_ok=True)
        recover(self.primary)
        for folder in {self.primary.parent, *(p.parent for p in self.owned)}:
            clean_leftovers(folder)

    def tmp(self, final: str | Path) -> Path:
        """The temporary path to write `final` to (the same one when asked twice)."""
        final = Path(final)
        if final not in self.temps:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.temps[final] = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        return self.temps[final]

    def commit(self) -> None:
        """Publish every file written, remove owned files not written, in the order that keeps the set whole."""
        if self.done:
            return
        missing = [str(f) for f, t in self.temps.items() if not t.exists()]
        if missing:
            raise RuntimeError(f"output set of {self.primary}: nothing was written for {', '.join(missing)}")
        if self.primary not in self.temps:
            raise RuntimeError(f"output set of {self.primary}: the primary output was not written")
        renames = [(str(t), str(f)) for f, t in self.temps.items() if f != self.primary]
        renames.append((str(self.temps[self.primary]), str(self.primary)))
        plan = {"renames": renames, "remove": [str(p) for p in self.owned if p not in self.temps]}
        journal = _journal(self.primary)
        staged = journal.with_name(journal.name + f".{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        staged.write_text(json.dumps(plan))
        os.replace(staged, journal)  # the commit point: from here on the set is published, if need be by recover()
        _apply(plan)
        journal.unlink(missing_ok=True)
        self.done = True

    def abort(self) -> None:
        """Drop every temporary file; the outputs of earlier runs stay as they were."""
        for t in self.temps.values():
            t.unlink(missing_ok=True)
        self.done = True

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, et: Any, exc: Any, tb: Any) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    with OutputSet(path) as outs:
        yield outs.tmp(path)


def write_table(table: pa.Table, path: str | Path, outputs: OutputSet | None = None) -> Path:
    """Write a table to Parquet, atomically on its own or as part of an output set."""
    if outputs is not None:
        pq.write_table(table, outputs.tmp(path), **PARQUET_OPTIONS)
        return Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
    return Path(path)


class ParquetSink:
    """A streaming Parquet writer into an output set (its own set when none is given).

    background=True encodes and compresses on a writer thread (Arrow releases the GIL while it does), so the
    process that makes the rows goes on with the next batch meanwhile; at most QUEUED tables wait for it.
    stitch=True also takes parts encoded elsewhere (write_encoded: a pool's workers encode, this process only
    appends their bytes; curate.stitch). The file is the same either way, byte for byte: the tables are
    written in the order given, each as the row groups one writer makes of it.
    """

    QUEUED = 2

    def __init__(self, path: str | Path, schema: pa.Schema, outputs: OutputSet | None = None, *,
                 background: bool = False, stitch: bool = False):
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._own = outputs is None
        self.outputs = outputs if outputs is not None else OutputSet(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._stitcher: Any = None
        if stitch:
            from curate.stitch import Stitcher

            self._stitcher = Stitcher(open(self.outputs.tmp(self.path), "wb"))  # noqa: SIM115 closed in close()
        else:
            self._writer = pq.ParquetWriter(self.outputs.tmp(self.path), schema, **PARQUET_OPTIONS)
        self._queue: queue.Queue | None = None
        self._failed: BaseException | None = None
        self._skip = False
        if background:
            self._queue = queue.Queue(self.QUEUED)
            self._thread = threading.Thread(target=self._drain, name=f"write {self.path.name}", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._failed is None and not self._skip:
                try:
                    self._write(item)
                except BaseException as e:  # noqa: BLE001 raised in the caller's thread at its next write or close
                    self._failed = e
            if not isinstance(item, pa.Table):
                self._done_with(item)

    def _write(self, item: Any) -> None:
        """Write a table, or append an encoded part: (its mapped file, its Layout)."""
        if self._stitcher is None:
            self._writer.write_table(item)
        elif isinstance(item, pa.Table):
            from curate.stitch import encode_buffer

            data, found = encode_buffer(item)
            self._stitcher.append(memoryview(data), found)
        else:
            self._stitcher.append(memoryview(item[0].read_buffer()), item[1])

    def write_encoded(self, path: str | Path | bytes | pa.Buffer, layout: Any, remove: bool = True) -> None:
        """Append a Parquet file of this schema written elsewhere with PARQUET_OPTIONS (a stitching sink only), or
        its bytes; its Layout (curate.stitch) says how many rows. The file is mapped now (so it may go after this
        call) and removed once appended (`remove`)."""
        if self._stitcher is None:
            raise ValueError("write_encoded needs ParquetSink(stitch=True)")
        if isinstance(path, (bytes, pa.Buffer)):  # the part itself, from a worker elsewhere
            item = (pa.BufferReader(path), layout, None)
        else:
            item = (pa.memory_map(str(path)), layout, Path(path) if remove else None)
        if self._queue is None:
            try:
                self._write(item)
            finally:
                self._done_with(item)
        else:
            self._raise_failed()
            self._queue.put(item)
        self.rows += layout.rows

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    @staticmethod
    def _done_with(item: tuple) -> None:
        item[0].close()
        if item[2] is not None:
            item[2].unlink(missing_ok=True)

    def write_table(self, table: pa.Table) -> None:
        if self._stitcher is not None and not table.schema.equals(self.schema):
            raise ValueError(f"table schema does not match the sink's schema:\n{table.schema}\nvs\n{self.schema}")
        if self._queue is None:
            self._write(table)
        else:
            self._raise_failed()
            self._queue.put(table)
        self.rows += table.num_rows

    def _finish_writing(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def close(self) -> None:
        """Finish the file; publish it when the sink owns its set (else the set's commit does)."""
        self._finish_writing()
        if self._failed is not None:
            self.abort()
            raise self._failed
        if self._stitcher is not None:
            with self._stitcher.file:
                self._stitcher.finish(self.schema, **PARQUET_OPTIONS)
        else:
            self._writer.close()
        if self._own:
            self.outputs.commit()

    def abort(self) -> None:
        self._skip = True  # the thread drops what is still queued
        self._finish_writing()
        if self._stitcher is not None:
            self._stitcher.file.close()
        else:
            self._writer.close()
        if self._own:
            self.outputs.abort()
        else:
            self.outputs.tmp(self.path).unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, et: Any, exc: Any, tb: Any) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


def umask_modes(folder: str | Path) -> None:
    """Give every file under `folder` the mode the user's umask asks for (0o666 & ~umask), as `open()` would:
    some libraries write their files 0600 (safetensors does), which a shared run folder should not keep."""
    mask = os.umask(0)
    os.umask(mask)
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)
