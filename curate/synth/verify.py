"""--verify: the teacher, as a judge, labels each extracted claim given the same sources."""

from __future__ import annotations

from typing import Any

from curate.synth.cache import request_key
from curate.synth.jobs import Job, json_checker, parse_json_reply
from curate.synth.templates import Seed

LABELS = ["supported", "unsupported", "unverifiable"]
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "labels": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"claim": {"type": "integer", "minimum": 1}, "label": {"enum": LABELS}},
                "required": ["claim", "label"],
            },
        }
    },
    "required": ["labels"],
}
JUDGE_SYSTEM = (
    "You check facts. For each numbered claim, answer supported if the sources state it, unsupported if the "
    "sources contradict it, unverifiable if the sources do not say. Reply with JSON only: "
    '{"labels": [{"claim": 1, "label": "supported"}, ...]}'
)
JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 512}
_CHECK = json_checker(JUDGE_SCHEMA)


def judge_job(model: str, seed: Seed, text: str, claims: list[dict[str, Any]], sources: list[tuple[str, str]],
              max_source_chars: int = 6000) -> Job:
    """The judge request for one generated example (cached and ledgered like any other request)."""
    src = "\n\n".join(f"[{name}]\n{t}" for name, t in sources)[:max_source_chars]
    listing = "\n".join(f"{i}. ({c['kind']}) {c['claim']}" for i, c in enumerate(claims, 1))
    user = f"Sources:\n{src}\n\nGenerated text:\n{text}\n\nClaims:\n{listing}"
    messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
    key = request_key(model, messages, JUDGE_PARAMS, JUDGE_SCHEMA, 0)
    return Job(seed, 0, {}, messages, key, len(user) // 4 + 64, dict(JUDGE_PARAMS), JUDGE_SCHEMA, 3, _CHECK, "verify")


def apply_labels(claims: list[dict[str, Any]], content: str) -> int:
    """Write the judge's labels into the claims; returns how many claims got one."""
    labelled = 0
    for item in parse_json_reply(content).get("labels", []):
        i = item["claim"] - 1
        if 0 <= i < len(claims):
            claims[i]["judge"] = item["label"]
            labelled += 1
    return labelled
