"""Where synth's rows go as each chunk of requests finishes: one output set, streamed, published when complete.

OUT (the kept rows), OUT.review.parquet (held rows) and OUT.failures.parquet are written under temporary
names as chunks finish and renamed together when the run completes (curate/outputs.py OutputSet), so a
killed or failed run leaves none of them. The failures file lists the generation failures first, then
each later phase's entries (label checks, agreement with the data, --verify, the fact gate): the entries
of a later phase wait in an unnamed temporary Parquet file of their own until the run ends, so the file
reads as it did when every phase ran over all rows at once, and memory holds one chunk.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset import SCHEMA, SOURCE_TYPE
from curate.outputs import OutputSet, ParquetSink
from curate.synth.facts import CLAIM_TYPE

PROVENANCE = [
    ("synth_teacher", pa.string()), ("synth_base_url_host", pa.string()), ("synth_recipe", pa.string()),
    ("synth_recipe_hash", pa.string()), ("synth_prompt_hash", pa.string()), ("synth_seed_id", pa.string()),
    ("synth_sample", pa.int64()), ("synth_prompt_tokens", pa.int64()), ("synth_completion_tokens", pa.int64()),
    ("synth_attempts", pa.int64()), ("synth_finish_reason", pa.string()), ("synth_timestamp", pa.string()),
    ("synth_status", pa.string()),
]
OUTPUT_SCHEMA = pa.schema(list(SCHEMA) + [pa.field(n, t) for n, t in PROVENANCE] + [
    pa.field("claims", pa.list_(CLAIM_TYPE)), pa.field("unsupported_claims", pa.list_(CLAIM_TYPE))])
# reply: the teacher's reply of a row a check rejected (rejected_check, rejected_facts), for a person to look at
FAILURES_SCHEMA = pa.schema([pa.field(n, t) for n, t in PROVENANCE] + [
    ("synth_kind", pa.string()), ("reason", pa.string()), ("source", SOURCE_TYPE), ("request", pa.string()),
    ("reply", pa.string())])

GENERATE, CHECK, AGREE, VERIFY, FACTS = range(5)  # the phases, in the order their failures are listed
_SPOOL_OPTIONS: dict[str, Any] = {"compression": "lz4"}  # read back once by this run


class SynthSinks:
    """OUT, OUT.review.parquet and OUT.failures.parquet of one run, and the failure counts by reason."""

    def __init__(self, output: Path, failures: Path, review: Path):
        self.paths = {"data": output, "failures": failures, "review": review}
        self.set = OutputSet(output, [failures, review])  # stale companions of an earlier run go with it
        self.rows = ParquetSink(output, OUTPUT_SCHEMA, self.set)
        self.held: ParquetSink | None = None
        self.failures: ParquetSink | None = None
        self.spools: dict[int, tuple[IO[bytes], pq.ParquetWriter]] = {}
        self.reasons: dict[str, int] = {}  # failure_reasons: the reason up to its first " (", in the file's order
        self.folder = output.parent

    @property
    def outputs(self) -> dict[str, str]:
        """The files this run writes: the rows, and the failures and the review file when it has any."""
        return {name: str(self.paths[name]) for name, sink in
                (("data", self.rows), ("failures", self.failures), ("review", self.held)) if sink is not None}

    def write(self, rows: list[dict[str, Any]], held: list[dict[str, Any]]) -> None:
        """The kept and held rows of one chunk (their `_` keys are not columns)."""
        self.rows.write_rows(rows)
        if held:
            if self.held is None:
                self.held = ParquetSink(self.paths["review"], OUTPUT_SCHEMA, self.set)
            self.held.write_rows(held)

    def fail(self, phase: int, entries: list[dict[str, Any]]) -> None:
        """Failures-file entries of one chunk: generation's go to the file, a later phase's wait for the end."""
        if not entries:
            return
        if phase == GENERATE:
            self._failures(pa.Table.from_pylist(entries, schema=FAILURES_SCHEMA))
            return
        if phase not in self.spools:
            file = tempfile.TemporaryFile(prefix=".curate-synth-", dir=self.folder)  # noqa: SIM115 (closed in __exit__)
            self.spools[phase] = (file, pq.ParquetWriter(file, FAILURES_SCHEMA, **_SPOOL_OPTIONS))
        self.spools[phase][1].write_table(pa.Table.from_pylist(entries, schema=FAILURES_SCHEMA))

    def _failures(self, table: pa.Table) -> None:
        if self.failures is None:
            self.failures = ParquetSink(self.paths["failures"], FAILURES_SCHEMA, self.set)
        self.failures.write_table(table)
        for reason in table.column("reason").to_pylist():
            key = reason.split(" (")[0][:80]
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def finish(self) -> None:
        """Append the later phases' failures in phase order, then publish every file together."""
        for phase in sorted(self.spools):
            file, writer = self.spools[phase]
            writer.close()
            file.seek(0)
            for batch in pq.ParquetFile(file).iter_batches():
                self._failures(pa.Table.from_batches([batch], FAILURES_SCHEMA))
        for sink in (self.rows, self.held, self.failures):
            if sink is not None:
                sink.close()
        self.set.commit()

    def abort(self) -> None:
        for sink in (self.rows, self.held, self.failures):
            if sink is not None:
                sink.abort()
        self.set.abort()

    def __enter__(self) -> SynthSinks:  # noqa: PYI034
        return self

    def __exit__(self, et: object, *exc: object) -> None:
        try:
            if et is None:
                self.finish()
            else:
                self.abort()
        finally:
            for file, writer in self.spools.values():
                if writer.is_open:
                    writer.close()
                file.close()


class RowSpool:
    """Rows waiting for a phase that needs every row first (checks.agree_with_data), a chunk at a time in an
    unnamed temporary file: memory holds one chunk, the file goes when the run ends or is killed."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(prefix=".curate-synth-", dir=folder)  # noqa: SIM115 (closed by close())
        self.chunks = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        pickle.dump(rows, self.file, protocol=pickle.HIGHEST_PROTOCOL)
        self.chunks += 1

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        self.file.seek(0)
        for _ in range(self.chunks):
            yield pickle.load(self.file)  # this run's own file: never named, never shared

    def close(self) -> None:
        self.file.close()
