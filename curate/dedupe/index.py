"""A persistent LSH index (`--index DIR`): later batches are deduplicated against every row kept before.

Layout: DIR/index.json (config, parts, row count) and per run one part of .npy files: ids,
exact-key hashes, band keys, and the rows' shingle sets (so matches against old rows are verified
by exact Jaccard too). Shingle sets are memory-mapped: only candidates' sets are ever read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curate.dataset import atomic_path
from curate.dedupe.config import DedupeConfig
from curate.errors import UsageError

VERSION = 2  # 2: the token hash changed (curate 0.1.0 after 2026-11-24); hashes of version 1 do not match
# the settings an index must be reused with: key in index.json -> setting (the file keeps its own names)
COMPAT = {"on": "on", "shingle": "shingle", "ngram": "ngram", "hash": "hash", "num_perm": "num_perm", "seed": "seed",
          "bands": "bands", "rows": "rows_per_band"}
_FILES = ("ids", "exact", "bands", "offsets", "values")


class LshIndex:
    """Rows kept by earlier runs: their ids, exact hashes, band keys and shingle sets."""

    def __init__(self, path: str | Path, cfg: DedupeConfig):
        """The index in `path` (empty if there is none yet), for rows compared with `cfg` (bands chosen)."""
        self.path = Path(path)
        self.config = {k: getattr(cfg, name) for k, name in COMPAT.items()}
        self.parts: list[dict] = []
        manifest = self.path / "index.json"
        if manifest.exists():
            try:
                data = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                raise UsageError(f"{manifest}: not a curate dedupe index ({exc}); pass another --index DIR") from exc
            if data.get("version") != VERSION:
                raise UsageError(
                    f"{manifest}: the index is format version {data.get('version')!r}, this curate reads version "
                    f"{VERSION} (its hashes differ); rebuild it by running the earlier batches into a new --index DIR"
                )
            old = data.get("config", {})
            diff = [f"{name}={old.get(k)!r} (now {self.config[k]!r})" for k, name in COMPAT.items()
                    if old.get(k) != self.config[k]]
            if diff:
                raise UsageError(
                    f"{manifest}: the index was built with {', '.join(diff)}; rerun with the same "
                    "options or use a new --index DIR"
                )
            self.parts = data.get("parts", [])
        self._arrays = [self._load(p["name"]) for p in self.parts]

    def _load(self, name: str) -> dict[str, np.ndarray]:
        out = {}
        for f in _FILES:
            file = self.path / f"{name}.{f}.npy"
            if not file.exists():
                raise UsageError(f"{file}: missing from the dedupe index; the index is damaged, rebuild it")
            out[f] = np.load(file, mmap_mode="r" if f in ("offsets", "values") else None)
        return out

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.parts)

    def ids(self) -> list[str]:
        return [str(x) for a in self._arrays for x in a["ids"]]

    def exact(self) -> np.ndarray:
        return _cat([a["exact"] for a in self._arrays], (0, 2))

    def bands(self, nbands: int) -> np.ndarray:
        return _cat([a["bands"] for a in self._arrays], (0, nbands))

    def sets(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(docs, values, offsets) of the shingle sets of index rows `docs` (global = index order)."""
        vals, sizes, out_docs = [], [], []
        base = 0
        for a in self._arrays:
            n = len(a["ids"])
            mine = docs[(docs >= base) & (docs < base + n)]
            for d in mine - base:
                lo, hi = int(a["offsets"][d]), int(a["offsets"][d + 1])
                vals.append(np.asarray(a["values"][lo:hi]))
                sizes.append(hi - lo)
            out_docs.append(mine)
            base += n
        off = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=off[1:])
        values = np.concatenate(vals) if vals else np.zeros(0, np.uint32)
        return _cat(out_docs, (0,)).astype(np.int64), values, off

    def append(self, ids: list[str], exact: np.ndarray, bands: np.ndarray, offsets: np.ndarray, values: np.ndarray) -> None:
        """Add one part (this run's kept rows) and rewrite the manifest last, atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.parts):05d}"
        arrays = {
            "ids": np.asarray(ids, dtype=str),
            "exact": exact,
            "bands": bands,
            "offsets": offsets,
            "values": values,
        }
        for f, arr in arrays.items():
            with atomic_path(self.path / f"{name}.{f}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        self.parts.append({"name": name, "rows": len(ids)})
        with atomic_path(self.path / "index.json") as tmp:
            tmp.write_text(json.dumps({"version": VERSION, "config": self.config, "parts": self.parts}, indent=2))
        self._arrays.append(self._load(name))


def _cat(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    parts = [np.asarray(p) for p in parts if len(p)]
    if not parts:
        return np.zeros(empty_shape, dtype=np.uint64 if len(empty_shape) > 1 else np.int64)
    return np.concatenate(parts)
