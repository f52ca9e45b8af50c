"""Cheap text statistics of each row, on Arrow batches: lengths, repetition, non-letter share, language.

The reply is the content of the row's assistant messages (what training's loss covers; tool-call arguments
are left out), the prompt the content of every other message. Per row:

    score_reply_chars / score_prompt_chars   characters (code points)
    score_reply_words / score_prompt_words   runs of characters that are not whitespace (CJK text has few)
    score_repetition   share of the reply's lower-cased word N-grams (N: repetition_n) that repeat an earlier
                       one in the same reply: 0 for varied text (and a reply shorter than N words), near 1 for a
                       loop (Gopher's repetition filters, Rae et al. 2021, count the same by characters); null
                       for a reply without a word
    score_non_alpha    share of the reply's non-space characters that are not letters (digits, punctuation,
                       code symbols); null for a reply with no non-space character
    score_language     the reply's language (ISO 639-1, py3langid's 97 languages), from its first LANG_CHARS
    score_language_prob  characters, with py3langid's normalised probability; both null for a reply without
                       a letter. Code and very short replies get unreliable labels: gate on the probability too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import MissingDependency

LANG_CHARS = 2_000  # characters of a reply the language is read from: the label settles long before
_WORD = r"[^\s\p{Z}]+"
_NON_SPACE = r"[^\s\p{Z}]"
_NON_LETTER = r"[^\s\p{Z}\p{L}\p{M}]"  # combining marks are part of letters (Devanagari vowel signs, accents)

FIELDS = {
    "score_reply_chars": pa.int64(), "score_reply_words": pa.int64(), "score_prompt_chars": pa.int64(),
    "score_prompt_words": pa.int64(), "score_repetition": pa.float64(), "score_non_alpha": pa.float64(),
    "score_language": pa.string(), "score_language_prob": pa.float64(),
}


@lru_cache(maxsize=1)
def identifier() -> Any:
    """py3langid's identifier with normalised probabilities (its model ships inside the package)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise MissingDependency("py3langid", "score", "score_language in curate score") from exc
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _per_row(values: pa.Array, rows: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Sum of a per-message count over the messages of each row that `mask` selects."""
    v = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.bincount(rows[mask], weights=v[mask], minlength=n).astype(np.int64)


def repetition(words: list[str], n: int) -> float | None:
    """Share of the word n-grams that repeat an earlier one: 0 for fewer than n words (none can repeat), None for
    no word at all."""
    if not words:
        return None
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    grams = zip(*(words[k:] for k in range(n))) if n > 1 else words
    return round((total - len(set(grams))) / total, 6)


def text_stats(messages: pa.Array | pa.ChunkedArray, repetition_n: int = 3) -> dict[str, pa.Array]:
    """The score_* text columns of a batch's `messages` column."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    n = len(messages)
    flat = pc.list_flatten(messages)
    rows = np.asarray(pc.list_parent_indices(messages).to_numpy(), dtype=np.int64)
    content = flat.field("content")
    reply = np.asarray(pc.equal(flat.field("role"), "assistant").fill_null(False).to_numpy(zero_copy_only=False),
                       dtype=bool)
    prompt = ~reply
    chars = pc.utf8_length(content)
    words = pc.count_substring_regex(content, _WORD)
    out: dict[str, Any] = {
        "score_reply_chars": _per_row(chars, rows, reply, n), "score_reply_words": _per_row(words, rows, reply, n),
        "score_prompt_chars": _per_row(chars, rows, prompt, n), "score_prompt_words": _per_row(words, rows, prompt, n),
    }
    non_space = _per_row(pc.count_substring_regex(content, _NON_SPACE), rows, reply, n)
    non_letter = _per_row(pc.count_substring_regex(content, _NON_LETTER), rows, reply, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.round(non_letter / non_space, 6)
    out["score_non_alpha"] = pa.array(share, mask=non_space == 0, type=pa.float64())

    # the replies as text, for what needs Python: repetition and language
    texts = content.to_pylist()
    replies: list[list[str]] = [[] for _ in range(n)]
    for r, is_reply, t in zip(rows.tolist(), reply.tolist(), texts):
        if is_reply and t:
            replies[r].append(t)
    joined = ["\n".join(parts) for parts in replies]
    out["score_repetition"] = pa.array([repetition(t.lower().split(), repetition_n) for t in joined], pa.float64())
    ident = identifier()
    lang: list[str | None] = []
    prob: list[float | None] = []
    for t, letters in zip(joined, (non_space - non_letter).tolist()):
        if letters <= 0:
            lang.append(None)
            prob.append(None)
            continue
        label, p = ident.classify(t[:LANG_CHARS])
        lang.append(label)
        prob.append(round(float(p), 4))
    out["score_language"] = pa.array(lang, pa.string())
    out["score_language_prob"] = pa.array(prob, pa.float64())
    return {name: pa.array(out[name], type=tp) if not isinstance(out[name], pa.Array) else out[name]
            for name, tp in FIELDS.items()}
