"""How many judge requests the semantic judge's waves save: replay a `curate dedupe --semantic` summary's candidate
pairs through curate's own ask_judge, with the rule's verdicts standing in for the judge's answers (no teacher runs).

    python benchmarks/judge_waves.py /tmp/curate_bench/semantic_out_100000.dedupe.json

(the summary bench_semantic.py --rows 100000 leaves). Prints pairs, pairs below semantic_high (what asking every pair
would send), requests the waves send, pairs not asked, waves, and whether every pair's outcome equals asking every
pair first. (The summary's cosines are rounded to 4 places, so ties can order a few pairs otherwise than in the
run that wrote it: compare with the replay's own ask-everything star, not with that run's counts.)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from curate.dedupe import judge as pair_judge
from curate.dedupe.config import DedupeConfig
from curate.dedupe.semantic import ASK, Pair, ask_judge, star

REFUSED = ("numbers differ", "names differ", "one word swapped")


def main() -> None:
    sem = json.loads(Path(sys.argv[1]).read_text())["semantic"]
    rows: dict[int, str] = {}
    for d in sem["pairs"]:
        rows[d["kept_row"]], rows[d["other_row"]] = d["kept_text"], d["other_text"]
    index = {r: k for k, r in enumerate(sorted(rows))}
    texts = [rows[r] for r in sorted(rows)]
    order = list(dict.fromkeys(index[d["kept_row"]] for d in sem["pairs"]))  # kept rows in the star's order
    rank = np.full(len(texts), len(texts), dtype=np.int64)
    rank[order] = np.arange(len(order))
    answer: dict[tuple[str, str], bool] = {}
    pairs = []
    for d in sem["pairs"]:
        same = not d["verdict"].startswith(REFUSED)
        a, b = index[d["kept_row"]], index[d["other_row"]]
        answer[(texts[a], texts[b])] = same
        high = d["cosine"] >= sem["high"]
        pairs.append(Pair(a, b, d["cosine"], d["overlap"], high, f"cosine >= {sem['high']}" if high else ASK))
    every = [Pair(p.kept, p.other, p.cosine, p.overlap, p.duplicate, p.why) for p in pairs]
    for p in every:  # asking every pair first, then the star
        if p.why == ASK:
            p.duplicate, p.why = answer[(texts[p.kept], texts[p.other])], "asked"
    star(every, rank)
    sent: list[tuple[str, str]] = []
    waves: list[int] = []

    def ask(self, batch):
        sent.extend(batch)
        waves.append(len(batch))
        return [pair_judge.PairVerdict(answer[p], "the rule's verdict") for p in batch]

    pair_judge.PairJudge.ask = ask
    cfg = DedupeConfig(semantic=True, semantic_verifier="judge", semantic_judge={"teacher": "replay"},
                       semantic_high=sem["high"])
    with tempfile.TemporaryDirectory() as tmp:
        counts = ask_judge(pairs, texts, [], [], cfg, Path(tmp), rank)
    below = sum(p.cosine < sem["high"] for p in pairs)
    same = [p.duplicate for p in pairs] == [p.duplicate for p in every]
    print(f"pairs {len(pairs):,}; below semantic_high {below:,} (asking every pair); requests with waves "
          f"{len(sent):,} in {len(waves)} waves (largest {max(waves, default=0):,}); not asked {counts['not_asked']:,}; "
          f"removed {sum(p.duplicate for p in pairs):,}, asking every pair {sum(p.duplicate for p in every):,}, "
          f"every pair's outcome equal: {same}")


if __name__ == "__main__":
    main()
