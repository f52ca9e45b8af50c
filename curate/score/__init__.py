"""`curate score`: per-row quality scores as score_* columns, and `keep` rules that quarantine the rows failing them.

    score("train.parquet", "scored.parquet")                                      text statistics
    score("train.parquet", "scored.parquet", perplexity=True, keep=["score_repetition < 0.3"])

    config.py        ScoreConfig: which scores run, the rules, the judge's settings
    stats.py         text statistics: lengths, repetition, non-letter share, language
    perplexity.py    the base model's perplexity of the replies given the prompt
    judge.py         a teacher model as judge (score_judge, with its reason)
    gate.py          the rules' expression language: parsed, never eval'd
    distribution.py  distributions of score_* columns (the summary, and `curate report`)
    stage.py         score(): streamed batches, the kept rows and the quarantine, the counts
    render.py        what the command prints for people
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "ScoreConfig": "curate.score.config",
    "parse_rule": "curate.score.gate",
    "score": "curate.score.stage",
    "text_stats": "curate.score.stats",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = ["ScoreConfig", "parse_rule", "score", "text_stats"]
