"""What `curate validate` keeps across batches, merged in input order: duplicates, counts, examples, profiles.

Duplicates are tracked by an 8-byte digest of each row's id (and of its declared id, where it has one),
with the row number of its first occurrence: about 100 bytes a row in Python dicts, never the text.
The token counts are 8 bytes a record and role (curate.validate.tokens.TokenStats); the mixed-format
profile keeps a count per reply style and per distinct system prompt; preference pairs an 8-byte prompt digest
and a length ratio a pair (curate.validate.pairs.PairStats).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from curate.validate.checks import BatchResult
from curate.validate.codes import CODES, Finding, is_error
from curate.validate.compliance import FormatProfile, OutputCheck
from curate.validate.pairs import PairStats
from curate.validate.tokens import TokenStats

EXAMPLES_PER_CODE = 3


def digest(text: str) -> int:
    """An 8-byte digest of an id (a lone surrogate from a raw file's JSON escapes included)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def add_keys(res: BatchResult) -> BatchResult:
    """The digests of a batch's ids and declared ids, made where the batch was checked (a worker)."""
    res.keys = [None if c is None else digest(c) for c in res.ids]
    res.declared_keys = [None if d is None else digest(d) for d in res.declared]
    return res


class Tally:
    """Per-code counts and first examples, duplicate tracking, token stats, compliance and mixed-format tallies."""

    def __init__(self, max_tokens: int | None, out_check: OutputCheck, show_mask: int = 0):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[dict]] = {}
        self.by_content: dict[int | None, int] = {}
        self.by_declared: dict[int, tuple[int | None, int]] = {}
        self.tokens = TokenStats(max_tokens, show_mask)
        self.out_check = out_check
        self.profile = FormatProfile()
        self.pairs = PairStats()  # pairs per prompt, length bias, KTO labels
        self.rows = 0

    def merge(self, res: BatchResult, where: Any) -> list[tuple[bool, list[Finding]]]:
        """Take one batch's results in order; per row (valid, its findings: one per code). `where[i]`: row i's
        (file, line)."""
        out = []
        # rows of a batch often share one findings list (curate.validate.fastpath): each distinct list is reduced
        # to one finding per code once, by its id (`seen` holds the lists, so no id is reused meanwhile)
        seen: dict[int, _Seen] = {}
        if res.keys is None:
            add_keys(res)
        repeated = self._repeated(res)
        declared = res.declared_keys
        for i in range(len(res.first)):
            self.rows += 1
            findings = res.first[i]
            checked = res.checked[i]
            if checked:
                extra = self._duplicates(i, res) if declared[i] is not None or res.keys[i] in repeated else []
                if extra or res.after[i]:
                    findings = findings + extra + res.after[i]
                if res.tokens[i] is not None:
                    self.tokens.add(res.tokens[i], self.rows, where[i])
                if res.pairs is not None and res.pairs[i] is not None:
                    self.pairs.add(res.pairs[i], self.rows, where[i])
            known = seen.get(id(findings))
            if known is None:
                known = seen[id(findings)] = _Seen(findings)
            known.rows += 1
            if known.examples_open:
                known.examples_open = self._examples(known.findings, where[i])
            out.append((checked and not known.error, known.findings))
        for known in seen.values():
            for f in known.findings:
                self.counts[f.code] += known.rows
        p = self.profile
        p.records += res.profiled
        p.styles.update(res.styles)
        p.systems.update(res.systems)
        p.input_formats.update(res.input_formats)
        c = self.out_check
        records, compliant, replies, replies_ok = res.compliance
        c.records, c.compliant, c.replies, c.replies_ok = (c.records + records, c.compliant + compliant,
                                                           c.replies + replies, c.replies_ok + replies_ok)
        return out

    def _examples(self, findings: list[Finding], where: tuple[str | None, int | None]) -> bool:
        """Keep this row as an example of its codes that have fewer than EXAMPLES_PER_CODE; whether any still has."""
        more = False
        for f in findings:
            ex = self.examples.setdefault(f.code, [])
            if len(ex) < EXAMPLES_PER_CODE:
                ex.append({"row": self.rows, "file": where[0], "line": where[1], "message": f.message})
                more = more or len(ex) < EXAMPLES_PER_CODE
        return more

    def _repeated(self, res: BatchResult) -> set[int | None]:
        """The content digests of the batch's checked rows that repeat one in the batch or before it. Every other
        checked row is a first occurrence: recorded here at once, so only rows with a repeated digest (or a
        declared id) take the check per row, in order."""
        checked = res.checked
        keys = res.keys if all(checked) else [k for k, c in zip(res.keys, checked) if c]
        counts = Counter(keys)
        repeated = {k for k, n in counts.items() if n > 1}
        repeated.update(counts.keys() & self.by_content.keys())
        first = self.rows + 1  # the batch's first row number
        self.by_content.update((k, first + i) for i, (k, c) in enumerate(zip(res.keys, checked))
                               if c and k not in repeated)
        return repeated

    def _duplicates(self, i: int, res: BatchResult) -> list[Finding]:
        """Row i's duplicate findings against the rows before it (self.rows is its row number)."""
        out = []
        cid, key, declared = res.ids[i], res.keys[i], res.declared[i]
        if declared is not None:
            d = res.declared_keys[i]
            first = self.by_declared.get(d)
            if first is None:
                self.by_declared[d] = (key, self.rows)
            elif first[0] != key:
                out.append(Finding("duplicate_id", f"id {declared!r} already used by a different record (row {first[1]})"))
        first_row = self.by_content.setdefault(key, self.rows)
        if first_row != self.rows:
            out.append(Finding("duplicate_record", f"same content as row {first_row} (id {cid})"))
        return out

    def codes(self) -> dict[str, Any]:
        """errors and warnings (count per code), and codes: each with severity, description and examples."""
        codes = [
            {"code": c, "severity": CODES[c].severity, "count": n, "description": CODES[c].description,
             "examples": self.examples.get(c, [])}
            for c, n in sorted(self.counts.items(), key=lambda kv: (CODES[kv[0]].severity, -kv[1], kv[0]))
        ]
        return {"errors": {c["code"]: c["count"] for c in codes if c["severity"] == "error"},
                "warnings": {c["code"]: c["count"] for c in codes if c["severity"] == "warning"},
                "codes": codes}


class _Seen:
    """One findings list of a batch: its one finding per code, whether one is an error, the rows that have it."""

    __slots__ = ("error", "examples_open", "findings", "rows", "source")

    def __init__(self, findings: list[Finding]):
        self.source = findings  # held, so that its id stays its own while the batch is merged
        self.findings = _first_per_code(findings)
        self.error = any(is_error(f.code) for f in self.findings)
        self.rows = 0
        self.examples_open = bool(self.findings)


def _first_per_code(findings: list[Finding]) -> list[Finding]:
    """One finding per code per record (the first, which names the earliest place)."""
    seen: dict[str, Finding] = {}
    for f in findings:
        seen.setdefault(f.code, f)
    return list(seen.values())
