"""Inputs of every stage: a canonical table from a canonical Parquet or from any file `curate ingest` reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curate.dataset import canonical_parquet, read_dataset
from curate.errors import InputError


def load_any(path: str | Path, fmt: str = "auto", origin: str | None = None) -> pa.Table:
    """A canonical table from a canonical Parquet or from any input `curate ingest` reads.

    Used by stages that take raw files directly (e.g. an eval set for decontamination);
    records that cannot be read raise, naming file and line, rather than vanish.
    """
    path = Path(path)
    if canonical_parquet(path):
        return read_dataset(path)
    from curate.ingest.stage import ingest_table

    table, rejects = ingest_table([path], fmt=fmt, origin=origin)
    if len(rejects) == 1 and rejects[0]["row"] is None:  # the file as a whole (a damaged container)
        raise InputError(rejects[0]["reason"], file=rejects[0]["file"], line=rejects[0]["line"])
    if rejects:
        first = rejects[0]
        raise InputError(
            f"{len(rejects)} unreadable record(s); first: {first['reason']} "
            "(run `curate ingest` to write them to a rejects file)",
            file=first["file"],
            line=first["line"],
        )
    return table
