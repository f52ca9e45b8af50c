"""`validate()`: run every check over a raw file or a canonical dataset and split it into valid and quarantined rows.

The input streams in batches of `batch_size` records. Raw files go through the conversion `curate ingest`
uses (curate.ingest.convert.Conversion, so a parse error names file and line and a valid row is the row
ingest would write); each record is also checked against its format's JSON Schema, and a record that
breaks it is reported for that only. Canonical Parquet and tables come through curate.inputs.open_input.
Each batch is checked by curate.validate.checks (messages, encoding, tokens, output format) on `workers`
processes (curate.engine.Engine); what needs every row (duplicate ids and exact duplicates, the first
examples per code, mixed formats, token percentiles) is merged here in input order (curate.validate.tally),
and the batch's valid rows and quarantine are written before the next batch is read. So memory is bounded
by the batch size and ~100 bytes a row of duplicate keys, and the outputs are the same for any number of
workers. Errors quarantine a row, warnings are counted and kept; counts balance: in = kept + rejected.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.console import progress
from curate.dataset import MESSAGE_TYPE, SCHEMA, SOURCE_TYPE
from curate.engine import GC_ALLOCATIONS, Engine, current, default_workers, make
from curate.errors import MissingDependency, UsageError
from curate.ingest.blocks import shift_rows
from curate.ingest.convert import Conversion, raw_text
from curate.ingest.readers import Reject, file_problem
from curate.inputs import Input, open_input
from curate.outcome import StageOutcome, over_rate
from curate.outputs import OutputSet, ParquetSink
from curate.validate.checks import (
    CANONICAL_READ,
    BatchResult,
    BlockJob,
    RawItem,
    Spec,
    check_block,
    check_canonical,
    check_raw,
    setup,
)
from curate.validate.codes import Finding
from curate.validate.compliance import OutputCheck
from curate.validate.config import ValidateConfig
from curate.validate.pairs import batch_labels
from curate.validate.structure import FORMAT_SCHEMAS, SCHEMA_FORMATS, reject_code
from curate.validate.tally import Tally, add_keys

QUARANTINE_SCHEMA = pa.schema(
    [
        ("validate_row", pa.int64()),
        ("validate_codes", pa.list_(pa.string())),
        ("validate_errors", pa.list_(pa.string())),
        ("source", SOURCE_TYPE),
        ("id", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("tools", pa.string()),
        ("rejected", pa.list_(MESSAGE_TYPE)),
        ("origin", pa.string()),
        ("meta", pa.string()),
        ("validate_raw", pa.string()),
    ]
)
# pyarrow's default pre-buffering keeps every row group it read until the file is closed: memory would grow
# with the input. An 8 MiB read buffer instead (as dedupe reads).
PARQUET_READ = {"pre_buffer": False, "buffer_size": 8 << 20}
ADDED_COLUMNS = {
    "validate_codes": pa.list_(pa.string()),
    "validate_tokens": pa.int64(),
    "validate_assistant_tokens": pa.int64(),
    "validate_compliant": pa.bool_(),
}


def validate(source: str | Path | pa.Table, output: str | Path | None = None,
             config: ValidateConfig | Mapping[str, Any] | None = None, *, quarantine: str | Path | None = None,
             tokenizer_object: Any = None, keep: bool = True, **overrides: Any) -> StageOutcome:
    """Check every record; write (when paths are given) or return the valid and the quarantined rows.

    source: a raw file of any format `curate ingest` reads, a canonical Parquet, or a canonical table.
    output / quarantine: Parquet files for the valid and the quarantined rows (one output set), written
    batch by batch. The outcome's `kept` / `rejected` tables hold the rows that have no file (None for
    the ones written to a file, and for both when keep=False: the CLI's check-only run holds no rows).
    tokenizer_object: a tokenizer already loaded, used instead of the `tokenizer` setting.
    The outcome's counts are in = kept (valid) + rejected (quarantined); `failure` is set when the
    share of quarantined records is over max_error_rate, or when no record was read.
    """
    cfg = ValidateConfig.build(config, **overrides)
    out_check = OutputCheck(cfg.output_schema, cfg.output_regex)
    src = open_input(source, origin=cfg.origin, **PARQUET_READ)
    if not src.raw and cfg.schema is not None:
        raise UsageError("--schema checks raw files; a canonical dataset is checked on its messages (drop --schema)")
    notes: list[str] = []
    tok = _tokenizer(cfg, tokenizer_object, notes)
    if cfg.workers is None:
        cfg = cfg.model_copy(update={"workers": default_workers()})
    info: dict[str, Any] = {"format": "canonical", "schema": None}
    schema_doc = None
    if src.raw:
        reader = _RawReader(src, cfg, notes, info)
        schema_doc, batches = reader.schema_doc, reader.batches(cfg.batch_size)
        base = SCHEMA
    else:
        batches = ((b, b.select([c for c in CANONICAL_READ if c in b.schema.names])) for b in src.batches(cfg.batch_size))
        base = pa.schema([f for f in src.schema if f.name not in ADDED_COLUMNS])
    valid_schema = pa.schema(list(base) + [pa.field(k, t) for k, t in ADDED_COLUMNS.items()])
    spec = Spec(tok, cfg.max_tokens, cfg.output_schema, cfg.output_regex, cfg.allow_consecutive_user, schema_doc,
                show_mask=cfg.show_mask)
    # a worker loads the tokenizer by name (or unpickles the one given) in its setup, once
    pool_tok = tokenizer_object if tokenizer_object is not None else _tokenizer_name(cfg)
    pool_spec = replace(spec, tokenizer=pool_tok) if tok is not None else spec
    tally = Tally(cfg.max_tokens, out_check, cfg.show_mask)
    kept = 0
    with _Sinks(output, quarantine, valid_schema, keep) as sinks, progress("validate") as advance, \
            _restored("TOKENIZERS_PARALLELISM"), _rare_collections():
        for held, result in _blocks_done(_checked(batches, src.raw, spec, pool_spec, cfg.workers, sinks), notes):
            verdicts = tally.merge(result, _where(held, result, src.raw))
            if result.labels is not None:  # counted where the rows are (on Ray they stay there)
                tally.pairs.labels.update(result.labels)
            else:
                tally.pairs.add_labels(result.rows if src.raw else held)  # the rows that reached the checks
            kept += _write(sinks, held, result, verdicts, tally.rows - len(verdicts), src.raw)
            advance(len(verdicts))
    total = tally.rows
    rejected = total - kept
    failure = "no records read" if total == 0 else over_rate(rejected, total, cfg.max_error_rate, "records with errors")
    summary = {"config": cfg.to_dict(), "input": src.name, "format": info["format"], "schema": info["schema"],
               "error_rate": rejected / total if total else 0.0,
               **tally.codes(), "tokens": tally.tokens.stats() if tok is not None else None,
               "compliance": out_check.summary(), "mixed_formats": tally.profile.findings(),
               "preferences": tally.pairs.summary(), "kto": tally.pairs.kto(), "notes": notes}
    return StageOutcome("validate", {"in": total, "kept": kept, "rejected": rejected}, sinks.outputs, summary,
                        kept=sinks.kept_table(), rejected=sinks.rejected_table(), failure=failure)


@contextlib.contextmanager
def _restored(name: str) -> Iterator[None]:
    """An environment variable as it was before the block (the checks set it in this process too)."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    """Python's cyclic garbage collector run less often during the checks, as before afterwards.

    A batch keeps a few small containers a row until it is written (findings, verdicts, where each row came
    from); at the default threshold they set off full collections, each walking every object of the process
    (pyarrow's and jsonschema's included), many times a file. Nothing here makes cycles: memory stays the same.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_ALLOCATIONS), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _tokenizer(cfg: ValidateConfig, loaded: Any, notes: list[str]) -> Any:
    """The tokenizer of the token check, or None (tokens off, or `auto` without the embedded one: a note says so)."""
    if not cfg.tokens:
        return None
    if loaded is not None:
        return loaded
    from curate.embedded import load_tokenizer

    if cfg.tokenizer != "auto":
        return load_tokenizer(cfg.tokenizer)
    try:
        return load_tokenizer("embedded")
    except MissingDependency as exc:
        if cfg.max_tokens is not None:
            raise UsageError(f"--max-tokens needs a tokenizer (give --tokenizer embedded or a folder): {exc}") from exc
        notes.append(f"token check skipped: {exc}")
        return None


def _tokenizer_name(cfg: ValidateConfig) -> str:
    """What a worker loads: the setting, with `auto` as the embedded tokenizer (this process found it)."""
    return "embedded" if cfg.tokenizer == "auto" else cfg.tokenizer


def _checked(batches: Iterator[tuple[Any, Any]], raw: bool, spec: Spec, pool_spec: Spec,
             workers: int, sinks: _Sinks | None = None) -> Iterator[tuple[Any, BatchResult]]:
    """(what this process keeps of a batch, the batch's BatchResult), in input order; a pool only for 2+ batches.
    With a local pool, its workers also encode the valid rows of `sinks` (curate.stitch.Offload)."""
    head = list(itertools.islice(batches, 2))
    workers = workers if len(head) > 1 else 1
    held: deque = deque()

    def feed() -> Iterator[Any]:
        for mine, theirs in itertools.chain(head, batches):
            held.append(mine)
            yield theirs

    remote = len(head) > 1 and current() == "ray"
    pool = make(workers, setup, (pool_spec,)) if workers > 1 or remote else Engine(1, setup, (spec,))
    with _offload(sinks, pool) as engine:
        if remote and raw and sinks is not None and sinks.offload is not None:
            # the rows stay in the cluster's object store; an actor encodes the valid ones (_write)
            for small, rows in engine.map_held(_check_held, feed()):
                (small[1] if isinstance(small, tuple) else small).remote = rows
                yield held.popleft(), small
            return
        if raw and sinks is not None and sinks.offload is not None and sinks.offload.folder is not None:
            # the rows stay in shared memory; a worker makes and encodes the valid ones (_write)
            folder = sinks.offload.folder
            for result in engine.map(_check_spilled, ((folder, item) for item in feed())):
                yield held.popleft(), result
            return
        for result in engine.map(_check if raw else _check_canonical, feed()):
            yield held.popleft(), result


def _rows_apart(checker: Any, item: Any) -> tuple[Any, BatchResult, pa.RecordBatch | None]:
    """_check's result (and its BatchResult) without its canonical rows, whose KTO labels are counted here; the
    rows."""
    got = _check(checker, item)
    res = got[1] if isinstance(got, tuple) else got
    rows, res.rows = res.rows, None
    res.labels = batch_labels(rows)
    return got, res, rows


def _check_spilled(checker: Any, job: tuple[str, Any]) -> Any:
    """_check's result with its canonical rows left in an Arrow file in `folder` (shared memory: res.remote)."""
    folder, item = job
    got, res, rows = _rows_apart(checker, item)
    if rows is not None:
        fd, res.remote = tempfile.mkstemp(".arrow", dir=folder)
        with os.fdopen(fd, "wb") as f, pa.ipc.new_file(f, rows.schema) as writer:
            writer.write_batch(rows)
    return got


def _check_held(checker: Any, item: Any) -> tuple[Any, Any]:
    """_check's result without its canonical rows, and the rows: Ray's map_held leaves them in the object store."""
    got, _, rows = _rows_apart(checker, item)
    return got, rows


@contextlib.contextmanager
def _offload(sinks: _Sinks | None, pool: Any) -> Iterator[Any]:
    """The pool, entered; the valid rows encoded by its workers while the block runs (a local process pool, a
    file output, a roomy /dev/shm), all appended when it ends; else nothing changes. The spill folder outlives
    the pool: its workers are waited for (or on Ray killed) before the folder they write to is removed."""
    from curate.ingest.blocks import _spill_folder
    from curate.stitch import Offload

    wanted = not (sinks is None or sinks.valid is None or (pool.kind != "ray" and (pool.workers < 2 or pool.threads)))
    with contextlib.ExitStack() as stack:
        folder = None  # on Ray, parts travel by the object store: the actors may be on other machines
        if wanted and pool.kind != "ray":
            folder = stack.enter_context(_spill_folder(pool.workers))
            wanted = folder is not None
        engine = stack.enter_context(pool)
        if not wanted:
            yield engine
            return
        sinks.offload = Offload(sinks.valid, engine, folder, engine.workers)
        try:
            yield engine
            sinks.offload.close()
        finally:
            sinks.offload = None


def _check(checker: Any, item: Any) -> Any:
    """A raw batch's check: its RawItems (converted here), or a JSONL block a worker converts itself."""
    if isinstance(item, BlockJob):
        held, res, notices, spanned = check_block(checker, item)
        return held, add_keys(res), notices, spanned
    return add_keys(check_raw(checker, item))


def _check_canonical(checker: Any, batch: pa.RecordBatch) -> BatchResult:
    return add_keys(check_canonical(checker, batch))


def _blocks_done(results: Iterator[tuple[Any, Any]], notes: list[str]) -> Iterator[tuple[list[tuple], BatchResult]]:
    """A JSONL block's (held, result) from its worker: rows numbered after the blocks before, notices noted."""
    base = 0
    for held, result in results:
        if held is not None:  # records converted here
            yield held, result
            continue
        held, result, notices, spanned = result
        notes.extend(n for n in notices if n not in notes)
        if base and result.rows is not None and result.rows.num_rows:
            result.rows = shift_rows(result.rows, base)
        result.base = base  # for rows left on the cluster (result.remote), shifted where they are used
        base += spanned
        yield held, result


def _load_schema(schema: str | dict) -> tuple[dict, str]:
    """A format schema's document and name, checked to be a valid JSON Schema."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from curate.recipe import load_schema

    if isinstance(schema, dict):
        doc, name = schema, schema.get("title", "(given schema)")
    else:
        named = str(schema).removesuffix(".json").removesuffix(".schema")
        if not Path(schema).is_file() and named not in SCHEMA_FORMATS:  # report, run-recipe, ... describe no record
            raise UsageError(f"unknown schema '{schema}'; give a path or one of the input formats' schemas: "
                             f"{', '.join(sorted(SCHEMA_FORMATS))}")
        try:
            doc = load_schema(str(schema))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--schema {schema}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        name = str(schema)
    try:
        Draft202012Validator.check_schema(doc)
    except SchemaError as exc:
        raise UsageError(f"schema {name} is not a valid JSON Schema: {exc.message}") from exc
    return doc, name


class _RawReader:
    """A raw file's records in batches: (file, line, record, reject text) kept here, RawItems for the checks.

    A UTF-8 JSONL file goes to the workers whole instead (`jsonl`): blocks of lines (curate.ingest.blocks) that
    a worker reads, converts and checks itself (checks.check_block), so the parent only merges and writes.
    """

    def __init__(self, src: Input, cfg: ValidateConfig, notes: list[str], info: dict[str, Any]):
        from curate.ingest import blocks as jsonl_blocks

        schema = cfg.schema
        fixed = SCHEMA_FORMATS.get(schema) if isinstance(schema, str) else None  # a shipped schema's name fixes the format
        conversion = Conversion(src.path, fixed or "auto", cfg.origin)
        self.notes = notes
        layout = jsonl_blocks._jsonl(src.path)
        self.jsonl = layout is not None
        if self.jsonl:
            self.path, self.fmt, self.origin = src.path, fixed or "auto", cfg.origin
            conversion.format = fixed
            planned = None
            if current() == "ray":  # the actors read their blocks where they can (curate/ray_io.py)
                from curate import ray_io

                planned = ray_io.plan_blocks(src.path, layout, jsonl_blocks.BLOCK_BYTES)
            if planned is not None:
                if fixed is None:
                    ray_io.sniff(conversion, planned)
                blocks = iter(planned)
            else:
                blocks = jsonl_blocks.read_blocks(src.path, layout, jsonl_blocks.BLOCK_BYTES)
                if fixed is None:  # the file's format from its first records, as the record path decides it
                    blocks = itertools.chain(jsonl_blocks._sniffed(conversion, blocks), blocks)
            self.blocks = blocks
        else:
            self.items = iter(conversion)
            self.first = next(self.items, None)  # the conversion knows the file's format once the first item is out
        fmt = self.format = info["format"] = conversion.format
        if schema is None and fmt is not None:
            schema = FORMAT_SCHEMAS.get(fmt)
            if schema is None:
                notes.append(f"no JSON Schema ships for format '{fmt}'; only the semantic checks ran")
        self.schema_doc, info["schema"] = _load_schema(schema) if schema is not None else (None, None)

    def batches(self, size: int) -> Iterator[tuple[list[tuple] | None, Any]]:
        if self.jsonl:
            where = str(Path(self.path).absolute())
            for b in self.blocks:
                # a local worker reads a plain file's bytes itself; a Ray actor may be on another machine
                block = b if current() == "ray" else b.without_data()
                yield None, BlockJob(str(self.path), self.fmt, self.format, self.origin, block, where)
            return
        if self.first is None:
            return
        mine: list[tuple] = []
        theirs: list[RawItem] = []
        for x in itertools.chain([self.first], self.items):
            if isinstance(x, Reject):
                notice = file_problem(x)
                if notice and notice not in self.notes:
                    self.notes.append(notice)
                theirs.append(RawItem(None, None, [Finding(reject_code(x), x.reason)]))
                mine.append((x.file, x.line, None, x.raw))
            else:
                rec = x.record
                obj = rec.obj if self.schema_doc is not None else None
                theirs.append(RawItem(x.detected, x.row, [], obj, x.code, x.problem, rec.obj.get("id"), True))
                mine.append((rec.file, rec.line, rec.obj, None))
            if len(theirs) >= size:
                yield mine, theirs
                mine, theirs = [], []
        if theirs:
            yield mine, theirs


def _where(held: Any, result: BatchResult, raw: bool) -> Any:
    """(file, line) of row i at [i]: a raw batch's from what this process holds of it, looked up when asked."""
    return _HeldWhere(held) if raw else result.where


class _HeldWhere:
    """(file, line) of a raw batch's rows, from the tuples this process holds of them."""

    __slots__ = ("held",)

    def __init__(self, held: list[tuple]):
        self.held = held

    def __getitem__(self, i: int) -> tuple[str | None, int | None]:
        file, line, _, _ = self.held[i]
        return file, line


def _write(sinks: _Sinks, held: Any, res: BatchResult, verdicts: list[tuple[bool, list[Finding]]], first_row: int,
           raw: bool) -> int:
    """Write one batch's valid rows (with the validate_ columns) and quarantine; the number of valid rows."""
    quarantined: list[int] = []
    mask: list[bool] = []  # over the rows of `rows` below
    kept: list[int] = []
    for i, (ok, _) in enumerate(verdicts):
        if res.checked[i] or not raw:
            mask.append(ok)
        (kept if ok else quarantined).append(i)
    tokens = [res.tokens[i] for i in kept]
    # as Arrow arrays: a worker that makes the valid part gets them pickled as buffers, where lists of a million
    # small lists cost seconds each way
    added = {"validate_codes": _per_findings(verdicts, kept, [lambda f: f.code])[0],
             **{name: pa.array(values, ADDED_COLUMNS[name]) for name, values in (
                 ("validate_tokens", [c and c.tokens for c in tokens]),
                 ("validate_assistant_tokens", [c and c.trainable for c in tokens]),
                 ("validate_compliant", [res.compliant[i] for i in kept]))}}
    valid = pa.array(mask, pa.bool_())
    if quarantined and raw and res.rows is None and res.remote is not None:  # before a worker takes them
        res.rows = shift_rows(_held_rows(res.remote), res.base)
    if raw and res.remote is not None:  # the rows are where they were checked: a worker makes and encodes the part
        sinks.offload.submit(encode_valid, _RemoteValid(res.remote, res.base, valid, added, sinks.valid_schema))
    else:
        sinks.write_valid(_valid_rows(res.rows if raw else held, valid, added))
    if quarantined:
        sinks.write_rejected(_quarantine_table(held, res, verdicts, quarantined, first_row, raw))
    return len(kept)


def _valid_rows(rows: pa.RecordBatch, mask: pa.BooleanArray, added: dict[str, pa.Array]) -> pa.RecordBatch:
    """A batch's valid rows (`mask` over its rows) with the validate_ columns (`added`, over the valid rows)."""
    whole = len(mask) == rows.num_rows and mask.false_count == 0
    valid = rows if whole else rows.filter(mask)
    valid = valid.drop_columns([c for c in valid.schema.names if c in ADDED_COLUMNS])
    for name, typ in ADDED_COLUMNS.items():
        valid = valid.append_column(pa.field(name, typ), added[name])
    return valid


def _per_findings(verdicts: list[tuple[bool, list[Finding]]], rows: list[int],
                  texts: list[Callable[[Finding], str]]) -> list[pa.Array]:
    """For each of `texts`, a list<string> column over `rows`: the text of each finding of the row's list. Rows
    share findings lists (Tally.merge), so each distinct list is made into texts once, by its id."""
    which: dict[int, int] = {}
    distinct: list[list[Finding]] = []
    pick = []
    for i in rows:
        findings = verdicts[i][1]
        k = which.setdefault(id(findings), len(distinct))
        if k == len(distinct):
            distinct.append(findings)
        pick.append(k)
    picked = pa.array(pick, pa.int64())
    return [pa.array([[text(f) for f in fs] for fs in distinct], pa.list_(pa.string())).take(picked) for text in texts]


def _held_rows(where: Any) -> pa.RecordBatch:
    """A batch's canonical rows where a worker left them: an Arrow file in shared memory (mapped, not copied), or
    a reference into Ray's object store."""
    if isinstance(where, str):
        with pa.memory_map(where) as source:
            return pa.ipc.open_file(source).get_batch(0)
    from curate.ray_engine import require

    return require().get(where)


@dataclass
class _RemoteValid:
    rows: Any  # the batch's canonical rows where a worker left them (_held_rows)
    base: int  # rows before the batch: its source.row values count from its first
    mask: pa.BooleanArray  # over the batch's checked rows
    added: dict[str, pa.Array]  # the validate_ columns, over the valid rows
    schema: pa.Schema  # the valid file's


def encode_valid(_state: object, job: _RemoteValid) -> tuple[str | pa.Buffer, Any]:
    """A batch's valid rows made and encoded as Parquet where its rows are (a worker's call): (a Parquet file in
    shared memory that replaces the rows' Arrow file, or on Ray its bytes; its Layout)."""
    from curate import stitch

    rows = _held_rows(job.rows)
    if isinstance(job.rows, str):
        os.unlink(job.rows)  # mapped: the rows stay readable
    table = pa.Table.from_batches([_valid_rows(shift_rows(rows, job.base), job.mask, job.added)])
    if not table.schema.equals(job.schema):  # a part of another schema would corrupt the file it is stitched into
        raise ValueError(f"valid rows of schema\n{table.schema}\nwhere the file has\n{job.schema}")
    return stitch.encode_beside(table, job.rows) if isinstance(job.rows, str) else stitch.encode_buffer(table)


def _quarantine_table(held: Any, res: BatchResult, verdicts: list[tuple[bool, list[Finding]]], rows: list[int],
                      first_row: int, raw: bool) -> pa.Table:
    """The quarantine rows of a batch's rows `rows`, column by column: their canonical columns taken as Arrow
    data (null for a raw record that did not become a row), not through a Python dict a row, which cost ~50 us
    a row (a file whose every record fails took 557 CPU s at 10M records)."""
    n = len(rows)
    codes, errors = _per_findings(verdicts, rows, [lambda f: f.code, lambda f: f"{f.code}: {f.message}"])
    if raw:
        position = list(itertools.accumulate(res.checked))  # a checked row's index in res.rows is position - 1
        canonical = res.rows.take(pa.array([position[i] - 1 if res.checked[i] else None for i in rows], pa.int64())) \
            if res.rows is not None else None
        where = [(held[i][0], held[i][1]) for i in rows]
        texts = [raw_text(held[i][2], None) if held[i][2] is not None else held[i][3] for i in rows]
    else:
        canonical = held.take(pa.array(rows, pa.int64()))
        where = [res.where[i] for i in rows]
        texts = [None] * n

    def column(name: str) -> pa.Array:
        typ = QUARANTINE_SCHEMA.field(name).type
        if canonical is None or name not in canonical.schema.names:
            return pa.nulls(n, typ)
        return canonical.column(name).cast(typ)

    # a row's own source where it has one, else where its record was read
    files, lines = zip(*where) if where else ((), ())
    read_at = pa.StructArray.from_arrays([pa.array(files, pa.string()), pa.array(lines, pa.int64()),
                                          pa.nulls(n, pa.int64())], fields=list(SOURCE_TYPE))
    source = column("source")
    source = pc.if_else(source.is_valid(), source, read_at)
    return pa.Table.from_arrays(
        [pa.array([first_row + i + 1 for i in rows], pa.int64()), codes, errors, source,
         *(column(k) for k in ("id", "messages", "tools", "rejected", "origin", "meta")), pa.array(texts, pa.string())],
        schema=QUARANTINE_SCHEMA)


class _Sinks:
    """The valid rows and the quarantine: Parquet files of one output set, or tables in memory, or neither."""

    def __init__(self, output: str | Path | None, quarantine: str | Path | None, valid_schema: pa.Schema, keep: bool):
        self.valid_schema = valid_schema
        self.outputs: dict[str, str] = {}
        self.set = None
        self.valid = self.quarantine = None
        if output is not None or quarantine is not None:
            # valid rows and quarantine are one set: both appear together or neither does
            owned = [quarantine] if output is not None and quarantine is not None else []
            self.set = OutputSet(output if output is not None else quarantine, owned)
        self.offload: Any = None  # curate.stitch.Offload, while a pool encodes the valid rows
        if output is not None:
            self.valid = ParquetSink(output, valid_schema, self.set, background=True, stitch=True)
            self.outputs["valid"] = str(Path(output))
        if quarantine is not None:
            self.quarantine = ParquetSink(quarantine, QUARANTINE_SCHEMA, self.set)
            self.outputs["quarantine"] = str(Path(quarantine))
        self.kept: list[pa.RecordBatch] | None = [] if keep and output is None else None
        self.rejected: list[pa.Table] | None = [] if keep and quarantine is None else None

    def write_valid(self, batch: pa.RecordBatch) -> None:
        if self.offload is not None and self.offload.folder is not None:
            self.offload.put(pa.Table.from_batches([batch]))
        elif self.valid is not None:
            self.valid.write_table(pa.Table.from_batches([batch]))
        elif self.kept is not None:
            self.kept.append(batch)

    def write_rejected(self, table: pa.Table) -> None:
        if self.quarantine is not None:
            self.quarantine.write_table(table)
        elif self.rejected is not None:
            self.rejected.append(table)

    def kept_table(self) -> pa.Table | None:
        return None if self.kept is None else pa.Table.from_batches(self.kept, schema=self.valid_schema)

    def rejected_table(self) -> pa.Table | None:
        if self.rejected is None:
            return None
        return pa.concat_tables(self.rejected) if self.rejected else QUARANTINE_SCHEMA.empty_table()

    def __enter__(self) -> _Sinks:
        return self

    def __exit__(self, et: Any, exc: Any, tb: Any) -> None:
        sinks = [s for s in (self.valid, self.quarantine) if s is not None]
        if et is None:
            try:
                for s in sinks:
                    s.close()
            except BaseException:
                for s in sinks:
                    s.abort()
                if self.set is not None:
                    self.set.abort()
                raise
            if self.set is not None:
                self.set.commit()
        else:
            for s in sinks:
                s.abort()
            if self.set is not None:
                self.set.abort()
