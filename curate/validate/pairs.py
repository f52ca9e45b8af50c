"""Preference pairs (canonical rows with a `rejected` reply) and unpaired KTO labels: per-row lint, merged figures.

A canonical preference row holds the prompt and the chosen reply in `messages` and the rejected reply in
`rejected`. The prompt is every message up to the last user turn; the chosen side is what follows it. A side's
text is its messages' contents (and tool calls) joined. On a worker, `pair_findings` checks one pair: the same
text on both sides, nearly the same text, an empty side, the last user turn repeated word for word in a reply.
In the parent, PairStats merges what needs every pair, in input order: pairs per prompt (by an 8-byte digest of
the prompt, as duplicates are tracked), how often the chosen reply is the longer, the length ratios; and the
labels of unpaired (KTO) rows, a boolean `kto_tag` or `label` in `meta`.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import statistics
from array import array
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Any

from curate.validate.codes import Finding

NEAR_RATIO = 0.95  # difflib's ratio over the two replies' normalized words at or above this: near-identical
LEAK_MIN_CHARS = 40  # shorter user turns ("more verses", "continue") are repeated in replies by nature
RATIO_EDGES = (0.25, 0.5, 0.8, 1.25, 2.0, 4.0)  # histogram of chosen/rejected length ratios
EXAMPLES = 3
KTO_KEYS = ("kto_tag", "label")


@dataclass(frozen=True)
class PairFacts:
    """What the parent needs of one pair: its prompt's digest and the two sides' lengths in characters."""

    prompt: int
    chosen: int
    rejected: int


def prompt_end(messages: list[dict]) -> int:
    """The number of prompt messages: up to the last user turn (without one, the messages before the first reply)."""
    roles = [m.get("role") for m in messages]
    if "user" in roles:
        return len(roles) - roles[::-1].index("user")
    return next((i for i, r in enumerate(roles) if r in ("assistant", "tool")), len(roles))


def side_text(messages: list[dict]) -> str:
    """A side's text: its contents, and its tool calls as name(arguments), one per line."""
    parts = []
    for m in messages:
        if m.get("content"):
            parts.append(m["content"])
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append(f"{fn.get('name')}({fn.get('arguments') or ''})")
    return "\n".join(parts)


def normalized(text: str) -> str:
    """Case folded, runs of whitespace as one space."""
    return " ".join(text.casefold().split())


def similarity(a: str, b: str) -> float:
    """difflib.SequenceMatcher's ratio over the words of two normalized texts (0 when it cannot reach NEAR_RATIO)."""
    wa, wb = a.split(), b.split()
    if not wa or not wb or 2 * min(len(wa), len(wb)) / (len(wa) + len(wb)) < NEAR_RATIO:
        return 0.0
    m = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    if m.quick_ratio() < NEAR_RATIO:  # an upper bound of ratio(), cheap
        return 0.0
    return m.ratio()


def _digest(obj: Any) -> int:
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def pair_findings(messages: list[dict], rejected: list[dict]) -> tuple[list[Finding], PairFacts]:
    """The findings of one preference pair, and its facts for the parent's figures."""
    end = prompt_end(messages)
    prompt = messages[:end]
    chosen, other = side_text(messages[end:]), side_text(rejected)
    out: list[Finding] = []
    empty = [name for name, text in (("chosen", chosen), ("rejected", other)) if not text.strip()]
    if empty:
        out.append(Finding("preference_empty_side", f"{' and '.join(empty)}: no reply text"))
    elif chosen == other:
        out.append(Finding("preference_identical", f"chosen and rejected are the same {len(chosen)} characters"))
    else:
        a, b = normalized(chosen), normalized(other)
        if a == b:
            out.append(Finding("preference_near_identical", "chosen and rejected differ only in case and spacing"))
        else:
            ratio = similarity(a, b)
            if ratio >= NEAR_RATIO:
                out.append(Finding("preference_near_identical",
                                   f"chosen and rejected are {ratio:.3f} similar (difflib ratio over words, "
                                   f">= {NEAR_RATIO})"))
    last_user = next((i for i in range(end - 1, -1, -1) if prompt[i].get("role") == "user"), None)
    asked = normalized(prompt[last_user].get("content") or "") if last_user is not None else ""
    if len(asked) >= LEAK_MIN_CHARS:
        leaked = [name for name, text in (("chosen", chosen), ("rejected", other)) if asked in normalized(text)]
        if leaked:
            said = " ".join((prompt[last_user].get("content") or "").split())
            quote = said if len(said) <= 60 else said[:57] + "..."
            verb = "contains" if len(leaked) == 1 else "contain"
            out.append(Finding("preference_prompt_leak", f"{' and '.join(leaked)} {verb} the last user turn "
                                                         f"(messages[{last_user}], {len(asked)} characters) word for "
                                                         f"word: {quote!r}"))
    key = [[m.get("role"), m.get("content"), m.get("tool_calls")] for m in prompt]
    return out, PairFacts(_digest(key), len(chosen), len(other))


def kto_label(meta: Any) -> bool | None:
    """An unpaired row's desirability label: a boolean `kto_tag` or `label` in its meta JSON, else None."""
    if not isinstance(meta, str) or not any(f'"{k}"' in meta for k in KTO_KEYS):
        return None
    try:
        obj = json.loads(meta)
    except json.JSONDecodeError:
        return None  # meta that is not a JSON object carries no label
    if not isinstance(obj, dict):
        return None
    value = next((obj[k] for k in KTO_KEYS if k in obj), None)
    return value if isinstance(value, bool) else None


class PairStats:
    """Pairs per prompt, length bias and KTO labels over the whole input (merged in input order)."""

    def __init__(self) -> None:
        self.by_prompt: dict[int, list[int]] = {}  # prompt digest -> [pairs, row of the first]
        self.repeats: list[dict] = []  # the first EXAMPLES prompts seen a second time
        self.pairs = self.chosen_longer = self.rejected_longer = 0
        self.ratios = array("d")  # chosen / rejected characters, pairs with both sides non-empty
        self.labels: Counter[bool] = Counter()

    def add(self, facts: PairFacts, row: int, where: tuple[str | None, int | None]) -> None:
        self.pairs += 1
        self.chosen_longer += facts.chosen > facts.rejected
        self.rejected_longer += facts.chosen < facts.rejected
        if facts.chosen and facts.rejected:
            self.ratios.append(facts.chosen / facts.rejected)
        seen = self.by_prompt.get(facts.prompt)
        if seen is None:
            self.by_prompt[facts.prompt] = [1, row]
            return
        seen[0] += 1
        if seen[0] == 2 and len(self.repeats) < EXAMPLES:
            self.repeats.append({"prompt": facts.prompt, "row": row, "file": where[0], "line": where[1],
                                 "first_row": seen[1]})

    def add_labels(self, batch: Any) -> None:
        """The KTO labels of a batch of canonical rows (those that reached the checks)."""
        self.labels.update(batch_labels(batch))

    def summary(self) -> dict[str, Any] | None:
        """The preference figures (None without pairs)."""
        if not self.pairs:
            return None
        several = [v for v in self.by_prompt.values() if v[0] > 1]
        ratios = sorted(self.ratios)
        bins = [0] * (len(RATIO_EDGES) + 1)
        for r in ratios:
            bins[bisect_right(RATIO_EDGES, r)] += 1
        names = ([f"< {RATIO_EDGES[0]}"] + [f"{a}-{b}" for a, b in itertools.pairwise(RATIO_EDGES)]
                 + [f">= {RATIO_EDGES[-1]}"])
        return {
            "pairs": self.pairs,
            "chosen_longer": self.chosen_longer,
            "rejected_longer": self.rejected_longer,
            "equal_length": self.pairs - self.chosen_longer - self.rejected_longer,
            "chosen_longer_share": self.chosen_longer / self.pairs,
            "median_length_ratio": statistics.median(ratios) if ratios else None,
            "length_ratio_histogram": [{"ratio": n, "pairs": c} for n, c in zip(names, bins)],
            "prompts": len(self.by_prompt),
            "prompts_with_several_pairs": len(several),
            "pairs_sharing_a_prompt": sum(v[0] for v in several),
            "max_pairs_per_prompt": max(v[0] for v in self.by_prompt.values()),
            "several_pairs_examples": [{"row": e["row"], "file": e["file"], "line": e["line"],
                                        "first_row": e["first_row"], "pairs": self.by_prompt[e["prompt"]][0]}
                                       for e in self.repeats],
        }

    def kto(self) -> dict[str, Any] | None:
        """Label balance of unpaired rows (None without labels)."""
        n = self.labels[True] + self.labels[False]
        if not n:
            return None
        return {"records": n, "desirable": self.labels[True], "undesirable": self.labels[False],
                "desirable_share": self.labels[True] / n}


def batch_labels(batch: Any) -> Counter[bool]:
    """The KTO labels of a batch of canonical rows, counted (where the batch is checked: a worker)."""
    labels: Counter[bool] = Counter()
    if batch is None or "meta" not in batch.schema.names:
        return labels
    import pyarrow.compute as pc

    meta = batch.column("meta")
    hit = pc.match_substring(meta, f'"{KTO_KEYS[0]}"')
    for k in KTO_KEYS[1:]:
        hit = pc.or_(hit, pc.match_substring(meta, f'"{k}"'))
    for text in meta.filter(pc.fill_null(hit, False)).to_pylist():
        label = kto_label(text)
        if label is not None:
            labels[label] += 1
    return labels
