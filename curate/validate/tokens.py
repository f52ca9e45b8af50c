"""Token check: render each record with the tokenizer's chat template, count tokens per role, flag long ones.

Records are counted a batch at a time: every record is rendered (curate.embedded.chat_layout: the whole
conversation and its prefixes, which give each message's span), then the batch is tokenized in one call of
the fast tokenizer, and each token is given to the message its first character falls in. The counts are
those of curate.embedded.render, record by record (tests compare). Rendering calls the tokenizer's compiled
chat template directly where that is exactly what `apply_chat_template` renders (plain messages, no
tools; checked on probe conversations when the check starts), and remembers one-message prefixes (a
dataset has few system prompts).

The same pass audits what training would learn, from the spans and offsets already computed (no second
tokenization): the loss mask is curate.embedded.render's `assistant_mask` (curate.train.data turns it into the
labels), so each record gets its share of trained tokens; each assistant turn's end-of-turn token (the first
special token the template writes after a reply, else the tokenizer's eos_token) must be on the mask; a turn
cut by --max-tokens before that token, and a message whose content is not in its own span of the rendered
text (dropped, or merged into another message's), are named.

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
SHARE_PERCENTILES = (5, 50, 95)
PREFIX_CACHE = 1024  # one-message renders remembered (system prompts); cleared when full
VIEW_HEAD, VIEW_TAIL, VIEW_AROUND = 160, 48, 16  # --show-mask: tokens shown at the start, the end, around the cut
_first = itemgetter(0)


def percentiles(values: Sequence[int]) -> dict[str, int]:
    """P50/P95/P99/max of token counts (nearest-rank, so every figure is a real record's count)."""
    if not len(values):
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0}
    arr = np.asarray(values)
    out = {f"p{p}": int(np.percentile(arr, p, method="inverted_cdf")) for p in PERCENTILES}
    out["max"] = int(arr.max())
    return out


@dataclass
class Counted:
    """One record's token check: findings, tokens, assistant tokens within max_tokens, tokens per role."""

    findings: list[Finding]
    tokens: int | None = None
    trainable: int | None = None
    roles: dict[str, int] | None = None  # roles that own at least one token; None when the record did not render
    view: list[list] | None = None  # --show-mask: the rendered text as [text, kind] runs (trained, other, gap, cut)


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


def end_of_turn(tokenizer: Any, renderer: _Renderer | None = None) -> tuple[str | None, str]:
    """The token that ends an assistant turn, and where it comes from: the first special token the chat template
    writes after a reply's content (a probe conversation shows it), else the tokenizer's eos_token."""
    from jinja2 import TemplateError

    renderer = renderer or _Renderer(tokenizer)
    special = set(getattr(tokenizer, "all_special_tokens", None) or [])
    special |= {t.content for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
                if getattr(t, "special", False)}
    special.discard("")
    reply = "Probe reply 7f3a."
    for probe in ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply}],
                  [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": reply}]):
        try:
            text = renderer.text_of(probe, None)
        except (TemplateError, TypeError, KeyError, ValueError):
            continue  # a template that refuses this probe (one that needs a system message, say): the next one
        at = text.rfind(reply)
        if at < 0:
            continue
        after = text[at + len(reply):]
        found = [(after.find(t), -len(t), t) for t in special if t in after]
        if found:
            return min(found)[2], "chat template"
        break
    eos = getattr(tokenizer, "eos_token", None)
    return (eos or None), "eos_token"


class TokenCheck:
    """Counts tokens of rendered records, a batch at a time; never truncates, only reports."""

    def __init__(self, tokenizer: Any, max_tokens: int | None = None, show_mask: int = 0):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.show_mask = show_mask
        self.renderer = _Renderer(tokenizer)
        self.eot, self.eot_source = end_of_turn(tokenizer, self.renderer)
        self.stats_ = TokenStats(max_tokens)

    def count(self, records: Sequence[tuple[list[dict], str | None]]) -> list[Counted]:
        """The token check of each (messages, tools) record, in order (nothing is added to the stats)."""
        from jinja2 import TemplateError

        from curate.embedded import chat_layout, template_messages

        out: list[Counted | None] = [None] * len(records)
        texts: list[str] = []
        layouts: list[tuple[int, list, list[dict]]] = []
        for i, (messages, tools) in enumerate(records):
            try:
                msgs = template_messages(messages)
                tool_list = json.loads(tools) if isinstance(tools, str) else tools
                full, bounds = chat_layout(lambda ms, tl=tool_list: self.renderer.text_of(ms, tl), msgs)
            except (InputError, TemplateError, TypeError, KeyError) as exc:
                # the template itself rejects the record (e.g. roles that must alternate)
                out[i] = Counted([Finding("template_error", f"the chat template cannot render this record: {exc}")])
                continue
            texts.append(full)
            layouts.append((i, bounds, msgs))
        views = [0, 0]  # --show-mask: views made for records with a finding, and for any records (the first of each)
        for (i, bounds, msgs), full, enc in zip(layouts, texts, self._encode(texts)):
            out[i] = self._counted(full, msgs, bounds, enc, views)
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

    def _counted(self, full: str, msgs: list[dict], bounds: list[tuple[int, int, str, int]], enc: Any,
                 views: list[int]) -> Counted:
        offsets = enc.offsets
        n = len(offsets)
        starts = list(map(_first, offsets))
        ends = [b[1] for b in bounds]
        roles: dict[str, int] = {}
        masked: list[tuple[int, int]] = []  # token index ranges on the assistant mask
        mask = None  # per token, where offsets are out of order
        ordered = bool(bounds) and starts == sorted(starts) and ends == sorted(ends)
        if ordered:
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
        if assistant == 0 and any(b[2] == "assistant" for b in bounds):
            findings.append(Finding("assistant_truncated", "no token of the assistant replies is on the loss mask (all "
                                                           "labels would be -100): the chat template renders none"))
        findings += self._audit(full, msgs, bounds, starts, mask)
        c = Counted(findings, n, trainable, roles)
        if self.show_mask and (views[1] < self.show_mask or (findings and views[0] < self.show_mask)):
            views[0] += bool(findings)
            views[1] += 1
            c.view = self._view(full, offsets, starts if ordered else None, masked)
        return c

    def _audit(self, full: str, msgs: list[dict], bounds: list[tuple[int, int, str, int]], starts: list[int],
               mask: list[int] | None) -> list[Finding]:
        """template_drift per message whose content is not in its own span; per assistant turn, eos_not_trained
        (its end-of-turn token is not on the mask) or cut_before_eos (--max-tokens cuts the turn before that token).

        `mask`: the per-token mask where the offsets are out of order (else the spans and `starts` give it).
        """
        out: list[Finding] = []
        limit, eot = self.max_tokens, self.eot
        n = len(starts)
        for j, (start, end, role, body) in enumerate(bounds):
            content = msgs[j]["content"]
            stop = start  # where the content ends in the rendered text (its span's start when it is not there)
            if content:
                if body != start or full.startswith(content, start, end):
                    stop = body + len(content)
                else:
                    trimmed = content.strip()  # a template that trims replies still renders them
                    at = full.find(trimmed, start, end) if trimmed and trimmed != content else -1
                    if at >= 0:
                        stop = at + len(trimmed)
                    else:
                        out.append(Finding("template_drift", _drift(full, bounds, j, role, content)))
            if role != "assistant":
                continue
            # the turn's first token on the mask (its content, or the span's first token when that is not found)
            first = bisect_left(starts, body) if mask is None else next(
                (k for k, s in enumerate(starts) if mask[k] and start <= s < end), n)
            if first >= n or starts[first] >= end:
                continue  # nothing of this turn is trained: assistant_truncated / template_drift say why
            at = full.find(eot, stop, end) if eot else -1
            k = _token_at(starts, at, mask is None) if at >= 0 else None
            if k is None or (mask is not None and not mask[k]):
                out.append(Finding("eos_not_trained", self._untrained_eos(full, j, stop, end, at)))
            elif limit and k >= limit > first:
                out.append(Finding("cut_before_eos", f"messages[{j}] (assistant) is cut by --max-tokens {limit}: its "
                                   f"end-of-turn {eot!r} is token {k + 1}, so {limit - first} of its reply tokens "
                                   "would be trained without it"))
        return out

    def _untrained_eos(self, full: str, j: int, stop: int, end: int, at: int) -> str:
        eot = self.eot
        if not eot:
            return (f"messages[{j}] (assistant): the chat template writes no special token after a reply and the "
                    "tokenizer has no eos_token, so training never teaches the reply to stop")
        if at >= 0:
            where = "follows the reply but not as a trained token of its own"
        elif full.find(eot, end) >= 0:
            where = "is written only later, in another message's span, off this turn's loss mask"
        else:
            where = "is not written after the reply"
        return (f"messages[{j}] (assistant): the end-of-turn token {eot!r} ({self.eot_source}) {where}, so "
                "training never teaches the reply to stop")

    def _view(self, full: str, offsets: Any, starts: list[int] | None, masked: list[tuple[int, int]]) -> list[list]:
        """The rendered text as runs of [text, kind]: trained / other tokens, `gap` for tokens left out of a long
        record (its start, its end and the --max-tokens cut are shown), `cut` where --max-tokens cuts."""
        n = len(offsets)
        trained = bytearray(n)
        for lo, hi in masked:
            trained[lo:hi] = b"\x01" * (hi - lo)
        limit = self.max_tokens if self.max_tokens and self.max_tokens < n else None
        shown = [(0, VIEW_HEAD), (n - VIEW_TAIL, n)] + ([(limit - VIEW_AROUND, limit + VIEW_AROUND)] if limit else [])
        runs: list[list] = []

        def add(text: str, kind: str) -> None:
            if runs and runs[-1][1] == kind and kind in ("trained", "other"):
                runs[-1][0] += text
            else:
                runs.append([text, kind])

        done = 0
        for lo, hi in sorted((max(0, a), min(n, b)) for a, b in shown):
            lo = max(lo, done)
            if lo >= hi:
                continue
            if lo > done:
                add(f"… {lo - done} tokens …", "gap")
            for k in range(lo, hi):
                if k == limit:
                    add(f"✂ --max-tokens {limit}", "cut")
                if starts is None:
                    text = full[offsets[k][0]:offsets[k][1]]
                else:
                    text = full[0 if k == 0 else starts[k]:starts[k + 1] if k + 1 < n else len(full)]
                add(text, "trained" if trained[k] else "other")
            done = hi
        if done < n:
            add(f"… {n - done} tokens …", "gap")
        return runs

    def check(self, messages: list[dict], tools: str | None) -> tuple[list[Finding], int | None, int | None]:
        """One record: (findings, tokens in the rendered record, assistant tokens kept within max_tokens); counted in stats()."""
        c = self.count([(messages, tools)])[0]
        self.stats_.add(c)
        return c.findings, c.tokens, c.trainable

    def stats(self) -> dict[str, Any]:
        return self.stats_.stats()


class TokenStats:
    """Token counts of every rendered record in input order: totals and per role (8 bytes a record and role),
    trained tokens (8 more), and the first --show-mask views (records with a finding first)."""

    def __init__(self, max_tokens: int | None = None, show_mask: int = 0):
        self.max_tokens = max_tokens
        self.totals = array("q")
        self.trained = array("q")
        self.per_role: dict[str, array] = {}
        self.over_limit = 0
        self.show_mask = show_mask
        self.flagged: list[dict] = []  # views of the first records with a token finding
        self.first: list[dict] = []  # views of the first records

    def add(self, c: Counted, row: int | None = None, where: tuple[str | None, int | None] = (None, None)) -> None:
        """Count one record (`row`, 1-based, and its (file, line) name it in a --show-mask view)."""
        if c.roles is None:
            return
        self.totals.append(c.tokens)
        self.trained.append(c.trainable)
        if c.view is not None:
            entry = {"row": row, "file": where[0], "line": where[1], "tokens": c.tokens, "trained": c.trainable,
                     "codes": [f.code for f in c.findings], "text": c.view}
            if c.findings and len(self.flagged) < self.show_mask:
                self.flagged.append(entry)
            if len(self.first) < self.show_mask:
                self.first.append(entry)
        n = len(self.totals)
        for role in c.roles:
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
            "trained_share": self.trained_share(),
            "masks": self.masks(),
        }

    def trained_share(self) -> dict[str, float]:
        """Trained tokens (on the loss mask, within max_tokens) per record's tokens (within max_tokens): P5/P50/P95
        over records (nearest rank) and over all tokens together."""
        tokens = np.asarray(self.totals, dtype=np.int64)
        if self.max_tokens:
            tokens = np.minimum(tokens, self.max_tokens)
        trained = np.asarray(self.trained, dtype=np.int64)
        if not len(tokens):
            return {**{f"p{p}": 0.0 for p in SHARE_PERCENTILES}, "all": 0.0}
        share = trained / np.maximum(tokens, 1)
        out = {f"p{p}": round(float(np.percentile(share, p, method="inverted_cdf")), 4) for p in SHARE_PERCENTILES}
        out["all"] = round(float(trained.sum() / max(int(tokens.sum()), 1)), 4)
        return out

    def masks(self) -> list[dict]:
        """The --show-mask views: the first records with a token finding, then the first records, show_mask in all."""
        rows = {e["row"] for e in self.flagged}
        return (self.flagged + [e for e in self.first if e["row"] not in rows])[: self.show_mask]


def _token_at(starts: list[int], at: int, ordered: bool) -> int | None:
    """The index of the token that starts at character `at`, if one does."""
    if ordered:
        k = bisect_left(starts, at)
        return k if k < len(starts) and starts[k] == at else None
    return next((k for k, s in enumerate(starts) if s == at), None)


def _drift(full: str, bounds: list[tuple[int, int, str, int]], j: int, role: str, content: str) -> str:
    """Where a message's content went, when it is not in its own span of the rendered text."""
    at = full.find(content)
    owner = next((i for i, b in enumerate(bounds) if b[0] <= at < b[1]), None) if at >= 0 else None
    if owner is not None:
        return (f"messages[{j}] ({role}): the chat template renders its content inside messages[{owner}] "
                f"({bounds[owner][2]}), not in a turn of its own (turns merged)")
    return f"messages[{j}] ({role}): its content is not in the rendered text (the chat template drops it)"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{role} {n}" for role, n in sorted(counts.items()))
