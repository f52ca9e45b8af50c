"""`dedupe --semantic --semantic-verifier judge`: a teacher decides whether a candidate pair is one request.

Each candidate pair below `semantic_high` cosine that still matters is one request (curate/dedupe/semantic.py asks
in waves and skips a pair whose row an earlier pair removed) to the teacher through the judge machinery of
`curate score` (curate/score/judge.py): the synth client's bounded retries, rate limits and budget, its SQLite
request cache and ledger (a rerun pays nothing, a killed run resumes with the rest). The prompt is fixed
(PAIR_PROMPT): the same request worded differently, which one answer would serve, or different requests on the
same topic. The reply must be JSON {"same": true|false, "reason": "..."}; one that is not is sent again up to
`max_attempts` times and counted as invalid. The two texts are shown in sorted order, so a pair is one request
whichever of its rows is kept. A pair the judge did not answer (budget, failures) is not a duplicate: it stays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import Field

from curate.score.judge import (
    JudgeTeacher,
    budget_of,
    cut,
    judge_job,
    open_endpoint,
    parse_judged,
    parsed,
    reply_check,
    send,
    why_unanswered,
)

PAIR_PROMPT = """\
You check a fine-tuning dataset for duplicate requests. You are shown two texts, each a request or question \
that a user sent to an assistant. Decide whether they are the same request worded differently, so that one \
answer would serve both equally well, or different requests, even if they are on the same topic.
Same: a paraphrase; synonyms, another word order, a shorter, longer or politer wording of one request, with the \
same numbers, names and constraints.
Different: another object, number, name, place, language or unit; another action on the same thing; another \
aspect of the same subject; an extra constraint that would change the answer.
Reply with JSON only, one object: {"same": true or false, "reason": "<one short sentence saying why>"}"""
PAIR_SCHEMA = {
    "type": "object",
    "properties": {"same": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["same", "reason"],
}


class PairJudgeSettings(JudgeTeacher):
    """The teacher that judges candidate pairs, and the limits on what a run may send and spend (names as in synth)."""

    stage: ClassVar[str] = "semantic_judge"
    max_chars: int = Field(2000, ge=200, description="Characters of each text shown to the judge (a longer one is "
                                                     "cut, head and tail kept).")


@dataclass
class PairVerdict:
    """The judge on one pair: same (None when it did not answer), its reason, and why it did not answer."""

    same: bool | None
    reason: str
    error: str | None = None

    def why(self) -> str:
        """The verdict as the pair's evidence reads it."""
        if self.same is None:
            return f"judge: no answer ({self.error})"
        return f"judge: {'same' if self.same else 'different'}: {self.reason}"


@dataclass
class PairRun:
    """The verdicts in the pairs' order and the counts (asked = same + different + failed + budget)."""

    verdicts: list[PairVerdict]
    counts: dict[str, Any] = field(default_factory=dict)


def parse_same(content: str) -> tuple[bool, str]:
    """(same, reason) of a reply: JSON (also in one ``` fence) with a boolean `same` ("true"/"false" taken) and a
    string `reason`; anything else raises ValueError saying what is wrong."""
    return parse_judged(content, "same", _bool_of, "true or false")


def _bool_of(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value if isinstance(value, bool) else None


check_same = reply_check(parse_same)  # why a reply is not the JSON asked for, or None


def pair_prompt(a: str, b: str, max_chars: int) -> list[dict[str, str]]:
    """The request for one pair: the fixed instructions, then the two texts (sorted, each cut to max_chars)."""
    first, second = sorted((cut(a.strip(), max_chars), cut(b.strip(), max_chars)))
    user = (f"Text 1:\n<<<\n{first}\n>>>\n\nText 2:\n<<<\n{second}\n>>>\n\n"
            "Are text 1 and text 2 the same request worded differently?")
    return [{"role": "system", "content": PAIR_PROMPT}, {"role": "user", "content": user}]


class PairJudge:
    """Asks the teacher about pairs, in as many calls (waves) as the caller needs, through one endpoint (a local
    teacher is started at the first pair, once) and one budget; the counts add up over the calls."""

    def __init__(self, settings: PairJudgeSettings, *, cache_dir: Path, progress: bool | None = None) -> None:
        self.settings, self.cache_dir, self.progress = settings, cache_dir, progress
        self.budget = budget_of(settings)
        self.counts: dict[str, Any] = {"teacher": settings.teacher, "asked": 0, "answered": 0,
                                       **dict.fromkeys(("same", "different", "failed", "budget"), 0)}
        self._stack = ExitStack()
        self._endpoint: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def ask(self, pairs: Sequence[tuple[str, str]]) -> list[PairVerdict]:
        """The verdicts on these pairs of texts, in order."""
        if not pairs:
            return []
        if self._endpoint is None:
            self._endpoint = self._stack.enter_context(open_endpoint(self.settings))
        s, c = self.settings, self.counts
        jobs = [judge_job(f"pair {k}", pair_prompt(a, b, s.max_chars), self._endpoint.model, s, PAIR_SCHEMA,
                          check_same) for k, (a, b) in enumerate(pairs)]
        sent = send(self._endpoint, jobs, s, cache_dir=self.cache_dir, progress=self.progress, budget=self.budget)
        verdicts = []
        for job in jobs:
            value, out = parsed(sent.outcomes[job.key], parse_same)
            v = PairVerdict(*value) if value is not None else PairVerdict(None, "", why_unanswered(
                [out], self._endpoint.api_key))
            c["same" if v.same else "different" if v.same is not None else "budget" if v.error == "budget"
              else "failed"] += 1
            verdicts.append(v)
        c["asked"] += len(pairs)
        c["answered"] = c["same"] + c["different"]
        c["waves"] = c.get("waves", 0) + 1
        n = sent.counts
        for k, v in {**n, "tokens": n["prompt_tokens"] + n["completion_tokens"]}.items():
            c[k] = c.get(k, 0) + v
        for k, v in sent.summary.items():  # the facts: the last call's, what stopped any of them, errors summed
            if k == "errors":
                c[k] = dict(Counter(c.get(k, {})) + Counter(v))
            elif k == "response_format_downgraded":
                c[k] = c.get(k, False) or v
            elif k != "stopped_by" or v is not None or k not in c:
                c[k] = v
        return verdicts


def judge_pairs(pairs: Sequence[tuple[str, str]], settings: PairJudgeSettings, *, cache_dir: Path,
                progress: bool | None = None) -> PairRun:
    """Ask the teacher about each pair of texts, in order, in one call; nothing is sent (nor a local teacher started)
    for none."""
    with PairJudge(settings, cache_dir=cache_dir, progress=progress) as judge:
        verdicts = judge.ask(pairs)
        return PairRun(verdicts, judge.counts)
