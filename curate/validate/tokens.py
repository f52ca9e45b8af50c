"""Token check: render each record with the tokenizer's chat template, count tokens per role, flag long ones.

Records are counted a batch at a time: every record is rendered (curate.embedded.chat_layout: the whole
conversation and its prefixes, which give each message's span), then the batch is tokenized in one call of
the fast tokenizer, and each token is given to the message its first character falls in. The counts are
those of curate.embedded.render, record by record (tests compare). Rendering calls the tokenizer's compiled
chat template directly where that is exactly what `apply_chat_template` renders (plain messages, no
tools; checked on probe conversations when the check starts), and remembers one-message prefixes (a
dataset has few system prompts).

`TokenCheck` counts (in a worker, say); `TokenStats` adds the counts up in input order.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from curate.errors import InputError
from curate.validate.codes import Finding

PERCENTILES = (50, 95, 99)
PREFIX_CACHE = 1024  # one-message renders remembered (system prompts); cleared when full
_first = itemgetter(0)


def percentiles(values: Sequence[int]) -> dict[str, int]:
    """P50/P95/P99/max of token counts (nearest-rank, so every figure is a real record's count)."""
    if not len(values):
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0}
    arr = np.asarray(values)
    out = {f"p{p}": int(np.percentile(arr, p, method="nearest")) for p in PERCENTILES}
    out["max"] = int(arr.max())
    return out


@dataclass
class Counted:
    """One record's token check: findings, tokens, assistant tokens within max_tokens, tokens per role."""

    findings: list[Finding]
    tokens: int | None = None
    trainable: int | None = None
    roles: dict[str, int] | None = None  # roles that own at least one token; None when the record did not render


class _Renderer:
    """text_of(messages, tools) as `apply_chat_template(..., tokenize=False)` renders it, with fewer overheads."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[tuple[str, str], str] = {}
        self.compiled = self._compiled()

    def _compiled(self) -> Any:
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str):
            return None
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template
        except ImportError:
            return None
        compiled = _compile_jinja_template(template)
        kwargs = dict(self.tokenizer.special_tokens_map)
        probes = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                  [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"},
                   {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}],
                  [{"role": "system", "content": "probe"}]]
        from jinja2 import TemplateError

        try:
            same = all(compiled.render(messages=p, tools=None, documents=None, add_generation_prompt=False, **kwargs)
                       == self._slow(p, None) for p in probes)
        except (TemplateError, TypeError, KeyError, ValueError):
            return None  # a template that refuses a probe: apply_chat_template renders everything

        return (compiled, kwargs) if same else None

    def _slow(self, ms: list[dict], tools: Any) -> str:
        return self.tokenizer.apply_chat_template(ms, tools=tools, tokenize=False, add_generation_prompt=False)

    def text_of(self, ms: list[dict], tools: Any) -> str:
        if self.compiled is None or tools is not None or not ms:
            return self._slow(ms, tools)  # (an empty conversation: apply_chat_template's own error)
        key = (ms[0]["role"], ms[0]["content"]) if len(ms) == 1 and len(ms[0]) == 2 else None
        if key is not None and key in self.cache:
            return self.cache[key]
        compiled, kwargs = self.compiled
        # apply_chat_template renders plain messages (template_messages: no None values, no reasoning fields) so
        text = compiled.render(messages=ms, tools=None, documents=None, add_generation_prompt=False, **kwargs)
        if key is not None:
            if len(self.cache) >= PREFIX_CACHE:
                self.cache.clear()
            self.cache[key] = text
        return text


class TokenCheck:
    """Counts tokens of rendered records, a batch at a time; never truncates, only reports."""

    def __init__(self, tokenizer: Any, max_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.renderer = _Renderer(tokenizer)
        self.stats_ = TokenStats(max_tokens)

    def count(self, records: Sequence[tuple[list[dict], str | None]]) -> list[Counted]:
        """The token check of each (messages, tools) record, in order (nothing is added to the stats)."""
        from jinja2 import TemplateError

        from curate.embedded import chat_layout, template_messages

        out: list[Counted | None] = [None] * len(records)
        texts: list[str] = []
        layouts: list[tuple[int, list]] = []
        for i, (messages, tools) in enumerate(records):
            try:
                msgs = template_messages(messages)
                tool_list = json.loads(tools) if isinstance(tools, str) else tools
                full, bounds = chat_layout(lambda ms: self.renderer.text_of(ms, tool_list), msgs)
            except (InputError, TemplateError, TypeError, KeyError) as exc:
                # the template itself rejects the record (e.g. roles that must alternate)
                out[i] = Counted([Finding("template_error", f"the chat template cannot render this record: {exc}")])
                continue
            texts.append(full)
            layouts.append((i, bounds))
        for (i, bounds), enc in zip(layouts, self._encode(texts)):
            out[i] = self._counted(bounds, enc)
        return out  # type: ignore[return-value]

    def _encode(self, texts: list[str]) -> list[Any]:
        """Encodings (ids and offsets) of the texts, as `tokenizer(texts, add_special_tokens=False)` makes them."""
        if not texts:
            return []
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        plain = (backend is not None and backend.truncation is None and backend.padding is None
                 and getattr(backend, "encode_special_tokens", None) == bool(getattr(tok, "split_special_tokens", False)))
        if plain:  # what the tokenizer's own call runs, without turning every id and offset into a Python list
            return backend.encode_batch(texts, add_special_tokens=False)
        return tok(texts, add_special_tokens=False, return_offsets_mapping=True).encodings

    def _counted(self, bounds: list[tuple[int, int, str, int]], enc: Any) -> Counted:
        offsets = enc.offsets
        n = len(offsets)
        starts = list(map(_first, offsets))
        ends = [b[1] for b in bounds]
        roles: dict[str, int] = {}
        masked: list[tuple[int, int]] = []  # token index ranges on the assistant mask
        if bounds and starts == sorted(starts) and ends == sorted(ends):
            # a token belongs to the first span that ends after its start (as curate.embedded.token_roles walks them)
            owned = 0
            for j, (start, end, role, body) in enumerate(bounds):
                lo = bisect_left(starts, start if j == 0 else bounds[j - 1][1])
                hi = bisect_left(starts, end)
                if hi > lo:
                    roles[role] = roles.get(role, 0) + hi - lo
                    owned += hi - lo
                    if role == "assistant":
                        masked.append((max(lo, bisect_left(starts, body)), hi))
            if n > owned:
                roles["template"] = n - owned
        else:
            from curate.embedded import token_roles

            per_token, mask = token_roles(bounds, offsets)
            for r in per_token:
                roles[r] = roles.get(r, 0) + 1
            masked = [(k, k + 1) for k, m in enumerate(mask) if m]
        limit = self.max_tokens
        assistant = sum(hi - lo for lo, hi in masked)
        trainable = sum(max(0, min(hi, limit) - lo) for lo, hi in masked) if limit else assistant
        findings = []
        if limit and n > limit:
            findings.append(Finding("token_limit_exceeded", f"{n} tokens > --max-tokens {limit} ({counts_text(roles)})"))
            if trainable == 0 and assistant:
                findings.append(Finding("assistant_truncated", f"the first {limit} tokens hold no assistant reply token"))
        return Counted(findings, n, trainable, roles)

    def check(self, messages: list[dict], tools: str | None) -> tuple[list[Finding], int | None, int | None]:
        """One record: (findings, tokens in the rendered record, assistant tokens kept within max_tokens); counted in stats()."""
        c = self.count([(messages, tools)])[0]
        self.stats_.add(c)
        return c.findings, c.tokens, c.trainable

    def stats(self) -> dict[str, Any]:
        return self.stats_.stats()


class TokenStats:
    """Token counts of every rendered record in input order: totals and per role (8 bytes a record and role)."""

    def __init__(self, max_tokens: int | None = None):
        self.max_tokens = max_tokens
        self.totals = array("q")
        self.per_role: dict[str, array] = {}
        self.over_limit = 0

    def add(self, c: Counted) -> None:
        if c.roles is None:
            return
        self.totals.append(c.tokens)
        n = len(self.totals)
        for role, k in c.roles.items():
            if role not in self.per_role:
                self.per_role[role] = array("q", bytes(8 * (n - 1)))  # zeros for the records before its first
        for role, values in self.per_role.items():
            values.append(c.roles.get(role, 0))
        if self.max_tokens and c.tokens > self.max_tokens:
            self.over_limit += 1

    def stats(self) -> dict[str, Any]:
        """Token percentiles over all rendered records, overall and per role."""
        return {
            "records": len(self.totals),
            "max_tokens": self.max_tokens,
            "over_limit": self.over_limit,
            "total_tokens": int(sum(self.totals)),
            "tokens": percentiles(self.totals),
            "per_role": {
                role: {"sum": int(sum(v)), **percentiles(v)} for role, v in sorted(self.per_role.items())
            },
        }


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{role} {n}" for role, n in sorted(counts.items()))
