"""Coverage of a target set (production) by a reference set (training) in embedding space.

Production is clustered with k-means, k chosen by silhouette. A reference point counts for the cluster
whose centroid is nearest, and only if it lies within that cluster's radius (the 90th percentile of its
production members' distances), so training data far from every production cluster covers nothing.
A cluster whose share of training is under `gap_ratio` times its share of production is a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RADIUS_PERCENTILE = 90
MAX_K = 20
K_CANDIDATES = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)
EXAMPLES = 3


@dataclass
class Coverage:
    """The JSON section plus the arrays the HTML plots need."""

    section: dict[str, Any]
    labels: np.ndarray  # target cluster per row
    ref_labels: np.ndarray  # nearest cluster per reference row, -1 when outside every radius
    nn_distance: np.ndarray  # target row -> nearest reference row (cosine distance)
    xy_target: np.ndarray
    xy_reference: np.ndarray
    gap_clusters: list[int]


def choose_k(x: np.ndarray, seed: int, max_k: int = MAX_K) -> tuple[int, dict[int, float]]:
    """k with the best cosine silhouette among candidates up to max_k (clusters average 25+ rows)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    hi = min(max_k, n // 25)
    if hi < 2:
        return 1, {}
    # Scored on a seeded sample with one k-means start each: the choice, not the final fit, is cheap.
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(n, size=min(n, 1200), replace=False))]
    scores = {}
    for k in (k for k in K_CANDIDATES if k <= hi):
        labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(sample)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = round(float(silhouette_score(sample, labels, metric="cosine")), 4)
    if not scores:
        return 1, {}
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def nearest_distance(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Cosine distance from every row of a to its nearest row of b (both L2-normalised)."""
    if b.shape[0] == 0:
        return np.full(a.shape[0], 2.0)
    out = np.empty(a.shape[0])
    for s in range(0, a.shape[0], chunk):
        out[s : s + chunk] = 1.0 - (a[s : s + chunk] @ b.T).max(axis=1)
    return np.clip(out, 0.0, 2.0)


def cluster_terms(texts: list[str], labels: np.ndarray, k: int, top: int = 4) -> list[str]:
    """A short name per cluster: the terms most over-represented in it (class-based TF-IDF)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vec = TfidfVectorizer(stop_words="english", min_df=2, max_features=20_000, token_pattern=r"(?u)\b[a-zA-Z][\w+#.]{1,}\b")
        x = vec.fit_transform(texts)
    except ValueError:  # no term occurs twice (tiny or empty sets)
        return [f"cluster {c}" for c in range(k)]
    terms = np.array(vec.get_feature_names_out())
    overall = np.asarray(x.mean(axis=0)).ravel()
    names = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if rows.size == 0:
            names.append(f"cluster {c}")
            continue
        score = np.asarray(x[rows].mean(axis=0)).ravel() - overall
        best = [terms[i] for i in np.argsort(-score, kind="stable")[:top] if score[i] > 0]
        names.append(" / ".join(best) or f"cluster {c}")
    return names


def domain_auc(a: np.ndarray, b: np.ndarray, seed: int) -> float | None:
    """Cross-validated ROC AUC of a classifier telling set a from set b (0.5: indistinguishable)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if min(a.shape[0], b.shape[0]) < 5:
        return None
    x = np.vstack([a, b])
    y = np.r_[np.zeros(a.shape[0]), np.ones(b.shape[0])]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    proba = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]
    return round(float(roc_auc_score(y, proba)), 4)


def coverage(
    reference: np.ndarray,
    target: np.ndarray,
    target_texts: list[str],
    *,
    seed: int,
    k: int | None,
    gap_ratio: float,
) -> Coverage:
    """Cluster the target, measure how much of the reference falls in each cluster, and list gaps."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = target.shape[0]
    scores: dict[int, float] = {}
    if k is None:
        k, scores = choose_k(target, seed)
    k = max(1, min(k, n))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(target)
    labels = km.labels_
    centroids = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    tdist = 1.0 - (target @ centroids.T)[np.arange(n), labels]
    radius = np.array([np.percentile(tdist[labels == c], RADIUS_PERCENTILE) if (labels == c).any() else 0.0 for c in range(k)])
    if reference.shape[0]:
        rsim = reference @ centroids.T
        nearest = rsim.argmax(axis=1)
        inside = 1.0 - rsim[np.arange(reference.shape[0]), nearest] <= radius[nearest] + 1e-9
        ref_labels = np.where(inside, nearest, -1)
    else:
        ref_labels = np.zeros(0, dtype=int)
    nn = nearest_distance(target, reference)
    names = cluster_terms(target_texts, labels, k)
    pca = PCA(n_components=2, random_state=seed).fit(target) if n >= 2 else None
    xy_t = pca.transform(target) if pca else np.zeros((n, 2))
    xy_r = pca.transform(reference) if pca is not None and reference.shape[0] else np.zeros((reference.shape[0], 2))
    nref = max(reference.shape[0], 1)
    clusters, gaps = [], []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        share_t = members.size / n
        share_r = float((ref_labels == c).sum()) / nref
        ratio = share_r / share_t if share_t else 0.0
        gap = ratio < gap_ratio
        if gap:
            gaps.append(c)
        order = members[np.argsort(tdist[members], kind="stable")][:EXAMPLES]
        clusters.append(
            {
                "id": c,
                "label": names[c],
                "size": int(members.size),
                "target_share": round(share_t, 4),
                "reference_share": round(share_r, 4),
                "coverage_ratio": round(ratio, 4),
                "nn_distance_p50": round(float(np.median(nn[members])), 4),
                "nn_distance_p90": round(float(np.percentile(nn[members], 90)), 4),
                "radius": round(float(radius[c]), 4),
                "gap": gap,
                "x": round(float(xy_t[members, 0].mean()), 4),
                "y": round(float(xy_t[members, 1].mean()), 4),
                "examples": [target_texts[i][:300] for i in order],
            }
        )
    gap_rows = np.isin(labels, gaps)
    section = {
        "k": k,
        "k_scores": {str(kk): v for kk, v in scores.items()},
        "gap_ratio": gap_ratio,
        "clusters": clusters,
        "gap_clusters": gaps,
        "uncovered_share": round(float(gap_rows.mean()) if n else 0.0, 4),
        "reference_outside_share": round(float((ref_labels == -1).mean()) if reference.shape[0] else 0.0, 4),
        "nn_distance": {
            "p50": round(float(np.median(nn)), 4) if n else 0.0,
            "p95": round(float(np.percentile(nn, 95)), 4) if n else 0.0,
        },
        "domain_auc": domain_auc(reference, target, seed),
    }
    return Coverage(section, labels, ref_labels, nn, xy_t, xy_r, gaps)
