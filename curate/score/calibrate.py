"""Calibrating the judge: how far its scores can be trusted, measured, not assumed.

Three measures, each on the settings a run would use:
    self-agreement   two samples of every labelled row (sample 0 and sample 1; at temperature 0 this only
                     shows whether the server is deterministic)
    hand labels      the judge's score (and its first sample alone) against a person's 1-5 labels
                     (examples/judge/labels.jsonl: chat rows, `label`, `why`)
    preference pairs optional: a file with chosen/rejected replies (the canonical `rejected` column, e.g. a
                     DPO set): how often the chosen reply scores higher than the rejected one
Each agreement has: exact agreement, within-1 agreement, Cohen's kappa, quadratic weighted kappa and
Spearman's rho. Labelled near-duplicate pairs (MinHash .truth files) say two documents are near-identical,
nothing about quality, and they are no chat rows: they calibrate nothing here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.dataset import ROLES
from curate.errors import InputError, UsageError
from curate.score.judge import JudgeSettings, judge_at, open_endpoint

CATEGORIES = (1, 2, 3, 4, 5)
NEAR_DUPLICATES = ("not used: labelled near-duplicate pairs say two texts are near-identical, not how good a reply "
                   "is, and they are documents, not chat rows")


def read_labels(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Hand-labelled rows of a JSONL file ({messages, label 1-5, why?, id?} a line) and one line per bad line.

    Every good line is kept; lines = rows + problems (blank lines aside).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read labels file {path}: {exc}") from exc
    rows, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_label_row(line, str(path), n))
        except InputError as exc:
            problems.append(str(exc))
    return rows, problems


def _label_row(line: str, file: str, n: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc.msg} at char {exc.pos})", file, n) from None
    if not isinstance(obj, dict):
        raise InputError(f"a line must be a JSON object, not {type(obj).__name__}", file, n)
    label = obj.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or label not in CATEGORIES:
        raise InputError(f"must be an integer from 1 to 5, got {json.dumps(label)[:40]}", file, n, "label")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("must be a non-empty list of {role, content}", file, n, "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"message {i} must be {{role: one of {', '.join(ROLES)}, content: string}}", file, n,
                             "messages")
    if messages[-1]["role"] != "assistant":
        raise InputError("the last message must be the assistant reply to judge", file, n, "messages")
    why = obj.get("why", "")
    if not isinstance(why, str):
        raise InputError("must be a string", file, n, "why")
    row_id = obj.get("id")
    if row_id is None:
        row_id = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": str(row_id), "messages": messages, "label": label, "why": why, "line": n}


def agreement(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """Agreement of two 1-5 ratings of the same items: exact, within 1, Cohen's kappa, quadratic weighted kappa,
    Spearman's rho (None where undefined: no items, or one side constant), means and the confusion counts."""
    n = len(a)
    if n != len(b):
        raise ValueError("both ratings must cover the same items")
    out: dict[str, Any] = {"n": n, "exact": None, "within_1": None, "kappa": None, "weighted_kappa": None,
                           "spearman": None, "mean_a": None, "mean_b": None}
    if n == 0:
        return out
    k = len(CATEGORIES)
    idx = {c: i for i, c in enumerate(CATEGORIES)}
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        observed[idx[x]][idx[y]] += 1 / n
    pa = [sum(row) for row in observed]
    pb = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    po = sum(observed[i][i] for i in range(k))
    pe = sum(pa[i] * pb[i] for i in range(k))
    weight = [[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)]
    w_obs = sum(weight[i][j] * observed[i][j] for i in range(k) for j in range(k))
    w_exp = sum(weight[i][j] * pa[i] * pb[j] for i in range(k) for j in range(k))
    out.update(
        exact=round(po, 4), within_1=round(sum(abs(x - y) <= 1 for x, y in zip(a, b)) / n, 4),
        kappa=round((po - pe) / (1 - pe), 4) + 0.0 if pe < 1 - 1e-12 else None,
        weighted_kappa=round(1 - w_obs / w_exp, 4) + 0.0 if w_exp > 1e-12 else None,
        spearman=_spearman(a, b), mean_a=round(sum(a) / n, 3), mean_b=round(sum(b) / n, 3),
        confusion={str(x): {str(y): round(observed[idx[x]][idx[y]] * n) for y in CATEGORIES
                            if observed[idx[x]][idx[y]]} for x in CATEGORIES if pa[idx[x]]})
    return out


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):  # ties share their average rank
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return round(cov / math.sqrt(va * vb), 4) if va > 0 and vb > 0 else None


def preference_rows(path: str | Path, limit: int | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(chosen row, rejected row) of the first `limit` preference pairs in any file `curate ingest` reads."""
    from curate.inputs import open_input

    pairs = []
    for r in open_input(path).read(["id", "messages", "rejected"]).to_pylist():
        msgs, rejected = r["messages"] or [], r["rejected"] or []
        if not rejected or not msgs or msgs[-1]["role"] != "assistant":
            continue
        pairs.append(({"id": r["id"], "messages": msgs},
                      {"id": r["id"] + ":rejected", "messages": msgs[:-1] + rejected}))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise InputError("no preference pairs (rows with a `rejected` reply after an assistant turn)", str(path))
    return pairs


def calibrate(labels: str | Path, settings: JudgeSettings | Mapping[str, Any], cache_dir: Path, *,
              pairs: str | Path | None = None, max_pairs: int | None = 20, progress: bool | None = None
              ) -> dict[str, Any]:
    """Judge the hand-labelled rows twice (samples >= 2) and, if given, the preference pairs once; the measures.

    The judge's requests share its cache (cache_dir), so a calibration after a scoring run, or a second
    calibration, pays only for what is new.
    """
    cfg = JudgeSettings.build(settings)
    twice = JudgeSettings.build(cfg, samples=max(2, cfg.samples))
    rows, problems = read_labels(labels)
    if not rows:
        raise InputError("no usable labelled rows" + (f" ({len(problems)} bad lines; first: {problems[0]})"
                                                      if problems else ""), str(labels))
    pair_rows = preference_rows(pairs, max_pairs) if pairs is not None else []
    with open_endpoint(cfg) as endpoint:
        run = judge_at(endpoint, rows, twice, cache_dir=cache_dir, progress=progress)
        pair_run = judge_at(endpoint, [r for p in pair_rows for r in p], cfg, cache_dir=cache_dir,
                            progress=progress) if pair_rows else None
    v = run.verdicts
    both = [(x.samples[0], x.samples[1]) for x in v if x.samples[0] is not None and x.samples[1] is not None]
    first = [(r["label"], x.samples[0]) for r, x in zip(rows, v) if x.samples[0] is not None]
    scored = [(r["label"], x.score) for r, x in zip(rows, v) if x.score is not None]
    off = sorted(((abs(x.score - r["label"]), r, x) for r, x in zip(rows, v) if x.score is not None),
                 key=lambda t: -t[0])
    report: dict[str, Any] = {
        "labels": str(labels), "lines": len(rows) + len(problems), "rows": len(rows), "bad_lines": problems,
        "settings": {"teacher": run.summary["teacher"], "temperature": cfg.temperature, "samples": twice.samples,
                     "max_tokens": cfg.max_tokens, "rubric_hash": run.summary["rubric_hash"]},
        "self_agreement": agreement(*_split(both)),
        "vs_labels": {"first_sample": agreement(*_split(first)), "score": agreement(*_split(scored))},
        "disagreements": [{"id": r["id"], "line": r["line"], "label": r["label"], "score": x.score,
                           "samples": x.samples, "reason": x.reason, "why": r["why"]} for d, r, x in off if d >= 2][:10],
        "counts": run.counts, "pairs": None, "near_duplicate_pairs": NEAR_DUPLICATES,
    }
    if pair_run is not None:
        report["pairs"] = _pairs(str(pairs), [(pair_run.verdicts[2 * i].score, pair_run.verdicts[2 * i + 1].score)
                                              for i in range(len(pair_rows))])
        report["pairs"]["counts"] = pair_run.counts
    return report


def _split(pairs: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    return [a for a, _ in pairs], [b for _, b in pairs]


def _pairs(path: str, scores: list[tuple[int | None, int | None]]) -> dict[str, Any]:
    judged = [(c, r) for c, r in scores if c is not None and r is not None]
    higher = sum(c > r for c, r in judged)
    tied = sum(c == r for c, r in judged)
    n = len(judged)
    return {"file": path, "pairs": len(scores), "judged": n, "chosen_higher": higher, "tied": tied,
            "rejected_higher": n - higher - tied, "accuracy": round(higher / n, 4) if n else None,
            "accuracy_ties_half": round((higher + tied / 2) / n, 4) if n else None}


def format_calibration(report: Mapping[str, Any]) -> str:
    """The calibration for people: one line per measure."""
    def line(name: str, m: Mapping[str, Any]) -> str:
        cells = [f"{k} {m[k]}" for k in ("exact", "within_1", "kappa", "weighted_kappa", "spearman")]
        return f"{name:<28} n={m['n']:<4} " + "  ".join(cells)

    s = report["settings"]
    head = (f"judge {s['teacher']} (temperature {s['temperature']}, rubric {s['rubric_hash']}) on "
            f"{report['rows']} labelled rows of {report['labels']}")
    out = [head,
           line("self-agreement (2 samples)", report["self_agreement"]),
           line("vs labels: first sample", report["vs_labels"]["first_sample"]),
           line("vs labels: score (median)", report["vs_labels"]["score"])]
    p = report.get("pairs")
    if p:
        out.append(f"{'preference pairs':<28} n={p['judged']:<4} chosen higher {p['chosen_higher']}, tied {p['tied']}, "
                   f"rejected higher {p['rejected_higher']}: accuracy {p['accuracy']} (ties as half "
                   f"{p['accuracy_ties_half']})")
    c = report["counts"]
    out.append(f"requests {int(c['requests'])} ({int(c['cached'])} cached), sent {int(c['sent'])}, "
               f"invalid replies {int(c['invalid'])}, failed rows {int(c['failed'])}")
    if report["bad_lines"]:
        out.append(f"{len(report['bad_lines'])} bad label lines skipped; first: {report['bad_lines'][0]}")
    return "\n".join(out)
