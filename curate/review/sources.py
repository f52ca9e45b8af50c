"""Which rows need a person: read a `curate run` work folder or stage outputs and list them as review items.

    synth_unsupported_claims  a synthetic row kept with claims the sources do not support (synth's fact flags)
    synth_review              a synthetic row synth held for review (`facts.unsupported: review`, OUT.review.parquet)
    near_duplicate            a row dedupe removed whose Jaccard against the kept row is under threshold + margin
    validate_warning          a valid row whose `validate_codes` hold warnings (skip codes aside)
    eval_failure              a held-out row a model gets wrong (eval's failures.parquet)

Rows named by several sources become one item with every reason. Rows that are not in the dataset any
more (removed, held) carry their canonical columns, so a person's `keep` can bring them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.dataset import CANONICAL_COLUMNS, open_parquet, parquet_batches
from curate.errors import InputError, UsageError
from curate.review.config import ReviewExportConfig

DEFAULT_THRESHOLD = 0.8  # DedupeConfig's default, for a removed file without its summary


@dataclass
class Item:
    """One row a person should look at, with why."""

    id: str
    row: dict[str, Any]  # its canonical columns
    reasons: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    in_dataset: bool = True  # False: removed or held, so `keep` restores it
    kept_id: str | None = None  # near duplicates: the row dedupe kept
    kept_text: str | None = None


@dataclass
class Found:
    items: dict[str, Item] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[tuple[str, float]] = field(default_factory=list)  # (removed file, dedupe threshold used)

    def add(self, row: dict[str, Any], reason: str, evidence: list[str], file: Path, in_dataset: bool = True,
            **extra: Any) -> Item:
        item = self.items.get(row["id"])
        if item is None:
            item = self.items[row["id"]] = Item(row["id"], {c: row.get(c) for c in CANONICAL_COLUMNS},
                                                in_dataset=in_dataset)
        item.in_dataset = item.in_dataset and in_dataset
        if reason not in item.reasons:
            item.reasons.append(reason)
        item.evidence.extend(evidence)
        if str(file) not in item.files:
            item.files.append(str(file))
        for k, v in extra.items():
            setattr(item, k, v)
        return item


def find_items(sources: list[str | Path], config: ReviewExportConfig) -> Found:
    """Every row of `sources` (run folders or stage outputs) that needs a person."""
    found = Found()
    for src in map(Path, sources):
        if not src.exists():
            raise UsageError(f"no such file or folder: {src}")
        if config.kind == "run" or (config.kind == "auto" and src.is_dir()):
            _run_folder(src, config, found)
            continue
        if src.is_dir():
            raise UsageError(f"{src} is a folder: --kind {config.kind} takes files")
        kind = config.kind if config.kind != "auto" else _kind_of(src)
        _read(kind, src, config, found)
        found.sources.append({"file": str(src), "kind": kind})
    return found


def _kind_of(path: Path) -> str:
    if path.suffix != ".parquet":
        raise UsageError(f"{path}: review reads the Parquet files curate's stages write, or a `curate run` folder")
    names = set(open_parquet(path).schema_arrow.names)
    if "dedupe_reason" in names:
        return "removed"
    if "eval_failure" in names:
        return "eval-failures"
    if "synth_status" in names or "unsupported_claims" in names:
        return "synth"
    if "validate_codes" in names:
        return "validated"
    raise UsageError(f"{path}: not a file review reads (no dedupe_reason, eval_failure, synth_status or "
                     "validate_codes column); pass --kind")


def _read(kind: str, path: Path, config: ReviewExportConfig, found: Found) -> None:
    if kind == "removed":
        _near_duplicates(path, config, found)
    elif kind == "eval-failures":
        _eval_failures(path, found)
    elif kind == "synth":
        _synth(path, found)
    else:
        _warnings(path, config, found)


def _run_folder(folder: Path, config: ReviewExportConfig, found: Found) -> None:
    """The stages of a run, from its manifest.json (else each stage's stage.json, for a run killed midway)."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        stages = json.loads(manifest.read_text())["stages"]
    else:
        stages = [json.loads(p.read_text()) for p in sorted(folder.glob("*/stage.json"))]
        if not stages:
            raise UsageError(f"{folder}: no manifest.json and no finished stage: not a `curate run` work folder")
    for rec in stages:
        outputs = {k: Path(v["path"]) for k, v in (rec.get("outputs") or {}).items()}
        stage = (rec.get("outcome") or {}).get("stage")
        if stage == "validate" and "valid" in outputs:
            _warnings(outputs["valid"], config, found)
        elif stage == "dedupe" and "removed" in outputs:
            threshold = (rec.get("config") or {}).get("threshold") or (rec["outcome"].get("config") or {}).get("threshold")
            _near_duplicates(outputs["removed"], config, found, kept=outputs.get("kept"), threshold=threshold)
        elif stage == "synth":
            for name in ("data", "review"):
                if name in outputs:
                    _synth(outputs[name], found)
        elif stage == "eval" and "failures" in outputs:
            _eval_failures(outputs["failures"], found)
        if stage in ("validate", "dedupe", "synth", "eval"):
            found.sources.append({"stage": rec.get("name"), "outputs": {k: str(v) for k, v in outputs.items()}})


def _batches(path: Path, columns: list[str] | None = None) -> Any:
    pf = open_parquet(path)
    missing = [c for c in (columns or []) if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"no column {', '.join(missing)}: not the file --kind says", file=str(path))
    return parquet_batches(pf, path, batch_size=4096, columns=columns)


def _rows(path: Path, mask_of: Any) -> Any:
    """The rows (as dicts) of `path` for which `mask_of(batch)` is true, batch by batch."""
    for batch in _batches(path):
        mask = mask_of(batch)
        if mask is None or not pc.any(mask).as_py():
            continue
        yield from pa.Table.from_batches([batch]).filter(mask).to_pylist()


def _synth(path: Path, found: Found) -> None:
    names = set(open_parquet(path).schema_arrow.names)
    has_claims = "unsupported_claims" in names
    has_status = "synth_status" in names

    def mask(batch: pa.RecordBatch) -> Any:
        parts = []
        if has_claims:
            parts.append(pc.fill_null(pc.greater(pc.list_value_length(batch.column("unsupported_claims")), 0), False))
        if has_status:
            parts.append(pc.fill_null(pc.equal(batch.column("synth_status"), "review"), False))
        return parts[0] if len(parts) == 1 else pc.or_(*parts) if parts else None

    for row in _rows(path, mask):
        claims = [_claim(c) for c in row.get("unsupported_claims") or []]
        if row.get("synth_status") == "review":
            found.add(row, "synth_review", [f"held for review by synth ({len(claims)} unsupported claims)", *claims],
                      path, in_dataset=False)
        else:
            found.add(row, "synth_unsupported_claims", claims, path)


def _claim(c: dict[str, Any]) -> str:
    judge = f"; judge: {c['judge']}" if c.get("judge") else ""
    return f"unsupported {c.get('kind') or 'claim'} {c.get('claim')!r}: {c.get('reason') or 'not found in the sources'}{judge}"


def _warnings(path: Path, config: ReviewExportConfig, found: Found) -> None:
    from curate.validate.codes import CODES

    skip = set(config.skip_code)
    warn = {name for name, code in CODES.items() if code.severity == "warning" and name not in skip}

    def mask(batch: pa.RecordBatch) -> Any:
        codes = batch.column("validate_codes").to_pylist()
        return pa.array([bool(c) and any(x in warn for x in c) for c in codes])

    _batches(path, ["validate_codes"])  # a clear error when the column is missing
    for row in _rows(path, mask):
        codes = [c for c in row["validate_codes"] if c in warn]
        found.add(row, "validate_warning", [f"{c}: {CODES[c].description}" for c in codes], path)


def _near_duplicates(path: Path, config: ReviewExportConfig, found: Found, kept: Path | None = None,
                     threshold: float | None = None) -> None:
    threshold = config.threshold or threshold or _recorded_threshold(path) or DEFAULT_THRESHOLD
    limit = threshold + config.margin
    found.thresholds.append((str(path), threshold))
    _batches(path, ["dedupe_reason", "dedupe_jaccard"])

    def jaccard(batch: pa.RecordBatch) -> Any:  # verified, else (--no-verify) the MinHash estimate
        j = batch.column("dedupe_jaccard")
        return pc.coalesce(j, batch.column("dedupe_jaccard_est")) if "dedupe_jaccard_est" in batch.schema.names else j

    def mask(batch: pa.RecordBatch) -> Any:
        near = pc.equal(batch.column("dedupe_reason"), "near")
        return pc.fill_null(pc.and_(near, pc.less(jaccard(batch), limit)), False)

    rows = list(_rows(path, mask))
    texts = _kept_texts(kept or _kept_beside(path), {r["dedupe_duplicate_of"] for r in rows})
    for r in rows:
        j = r["dedupe_jaccard"] if r["dedupe_jaccard"] is not None else r.get("dedupe_jaccard_est")
        est = r.get("dedupe_jaccard_est")
        where = f" (row {r['dedupe_duplicate_row']})" if r.get("dedupe_duplicate_row") is not None else ""
        why = "below the threshold: joined through another member of its cluster" if j < threshold else \
            f"within {config.margin:g} of the threshold"
        evidence = [f"near duplicate of {r['dedupe_duplicate_of']}{where}: Jaccard {j:.3f}"
                    + (f" (MinHash estimate {est:.3f})" if est is not None else "")
                    + f", threshold {threshold:g}: {why}"]
        if r.get("dedupe_evidence"):
            evidence.append(f"dedupe evidence: {r['dedupe_evidence']}")
        found.add(r, "near_duplicate", evidence, path, in_dataset=False, kept_id=r["dedupe_duplicate_of"],
                  kept_text=texts.get(r["dedupe_duplicate_of"], "(the kept row was not found beside "
                                                                  f"{path.name})"))


def _recorded_threshold(removed: Path) -> float | None:
    """The threshold dedupe recorded in OUT.dedupe.json beside its removed file."""
    summary = removed.with_name(removed.name.replace(".removed.parquet", ".dedupe.json"))
    try:
        return float(json.loads(summary.read_text())["config"]["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kept_beside(removed: Path) -> Path:
    return removed.with_name(removed.name.replace(".removed.parquet", ".parquet"))


def _kept_texts(kept: Path, ids: set[str]) -> dict[str, str]:
    """The kept rows' conversations, rendered, by id (only the ids asked for)."""
    from curate.review.render import conversation_text

    if not ids or not kept.is_file():
        return {}
    wanted = pa.array(sorted(ids))
    out: dict[str, str] = {}
    for batch in _batches(kept, ["id", "messages", "rejected"]):
        for row in pa.Table.from_batches([batch]).filter(pc.is_in(batch.column("id"), wanted)).to_pylist():
            out[row["id"]] = conversation_text(row)
    return out


def _eval_failures(path: Path, found: Found) -> None:
    _batches(path, ["eval_failure"])
    for row in _rows(path, lambda b: pa.array([True] * b.num_rows)):
        models = ", ".join(json.loads(row["eval_failed_models"])) if row.get("eval_failed_models") else "?"
        evidence = [f"eval failure ({models}): {row['eval_failure']}"]
        if row.get("eval_reply") is not None:
            evidence.append(f"model reply: {row['eval_reply']}")
        found.add(row, "eval_failure", evidence, path)
