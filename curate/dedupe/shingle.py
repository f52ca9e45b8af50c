"""Normalisation, tokenisation and shingle hashing of Arrow string arrays (the loops are compiled in `kernels`).

Normalisation: Unicode NFKC and lower case; ASCII punctuation and whitespace separate tokens (other bytes
belong to words, so non-Latin scripts survive). A shingle is a run of `n` consecutive tokens
(`word`) or of `n` code points of the tokens joined by single spaces (`char`). Every shingle gets a
64-bit hash; its top 32 bits feed MinHash, all 64 bits are used for exact Jaccard.

`hashfunc(shingle, ngram)` is the same hash as a plain Python function of the shingle's bytes, so
datasketch's `MinHash(hashfunc=...)` reproduces curate's signatures exactly.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedupe import kernels

M64 = (1 << 64) - 1
SEED_TOKEN, SEED_SHINGLE = int(kernels.SEED_TOKEN), int(kernels.SEED_SHINGLE)
MUL_A = int(kernels.MUL_A)

# True for bytes that belong to a token: everything except ASCII whitespace, control and punctuation.
WORD_BYTE = np.ones(256, dtype=bool)
WORD_BYTE[:48] = False  # controls, space, !"#$%&'()*+,-./
WORD_BYTE[58:65] = False  # :;<=>?@
WORD_BYTE[91:97] = False  # [\]^_`
WORD_BYTE[123:128] = False  # {|}~ DEL
WORD_BYTE_U8 = WORD_BYTE.astype(np.uint8)
ASCII_LOWER = np.arange(256, dtype=np.uint8)
ASCII_LOWER[65:91] += 32


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


@dataclass
class Tokens:
    """Tokens of a batch of documents, flattened in document order."""

    hashes: np.ndarray  # uint64 per token
    counts: np.ndarray  # int64 tokens per document
    raw: np.ndarray  # the bytes the tokens point into: lower-cased already, or ASCII to lower through ASCII_LOWER
    edges: np.ndarray  # int64: token j is raw[edges[2j]:edges[2j + 1]]
    lowered: bool = True

    @property
    def ndocs(self) -> int:
        return len(self.counts)

    @property
    def doc(self) -> np.ndarray:
        """Document index per token."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    @property
    def starts(self) -> np.ndarray:
        return self.edges[0::2]

    @property
    def ends(self) -> np.ndarray:
        return self.edges[1::2]

    @property
    def data(self) -> np.ndarray:
        """Normalised (lower-cased) bytes the tokens point into."""
        if not self.lowered:
            self.raw, self.lowered = ASCII_LOWER[self.raw], True
        return self.raw

    def text(self, i: int, j: int) -> str:
        """The tokens i..j-1 joined by spaces (for evidence shown to users)."""
        starts, ends, data = self.starts, self.ends, self.data
        return " ".join(bytes(data[starts[k] : ends[k]]).decode("utf-8", "replace") for k in range(i, j))


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64, data uint8) of a non-null string array, without copying the character data."""
    if arr.type not in (pa.string(), pa.large_string()):
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    width = np.int64 if arr.type == pa.large_string() else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _piece_bytes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first piece, the pieces' bytes) of a non-null string array."""
    offsets, data = _string_buffers(texts)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def tokenize(texts: pa.Array, doc: np.ndarray, ndocs: int) -> Tokens:
    """Tokenise text pieces; piece k belongs to document doc[k] (non-decreasing: a document's pieces are adjacent)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts, "")
    doc = np.asarray(doc, dtype=np.int64)
    rel, data = _piece_bytes(texts)
    # ASCII text is lower-cased inside the kernel, sparing a lower-cased copy of the batch
    ascii_only, edges, hashes, counts = kernels.tokenize(data, rel, doc, ndocs, WORD_BYTE_U8, True)
    if not ascii_only:
        # NFKC folds full-width punctuation, letters and digits ("？" -> "?") before splitting
        rel, data = _piece_bytes(pc.utf8_lower(pc.utf8_normalize(texts, form="NFKC")))
        _, edges, hashes, counts = kernels.tokenize(data, rel, doc, ndocs, WORD_BYTE_U8, False)
    return Tokens(hashes, counts, data, edges, lowered=not ascii_only)


def token_hash(token: bytes) -> int:
    """Pure-Python mirror of the compiled token hash (`kernels.tokenize`): the token's little-endian 8-byte
    words, the last zero-padded, folded as fmix64(h) ^ word from h = seed ^ first word, then fmix64."""
    words = [int.from_bytes(token[c : c + 8].ljust(8, b"\0"), "little") for c in range(0, len(token), 8)]
    h = SEED_TOKEN ^ words[0]
    for word in words[1:]:
        h = _fmix64_int(h) ^ word
    return _fmix64_int(h)


@dataclass
class Shingles:
    """Shingle hashes of a batch: hashes[offsets[d]:offsets[d+1]] belong to document d."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, ndocs + 1

    @property
    def doc(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated arange(starts[i], starts[i] + lengths[i]), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=seg[1:])
    return np.arange(total) - np.repeat(seg[:-1] - starts, lengths)


def _windows(values: np.ndarray, counts: np.ndarray, n: int, whole_if_short: bool,
             kernel=kernels.windows) -> tuple[np.ndarray, np.ndarray]:
    """Fold every run of n consecutive values inside each document (documents are contiguous, counts long)."""
    return kernel(np.ascontiguousarray(values, dtype=np.uint64), np.asarray(counts, dtype=np.int64), n, whole_if_short)


def word_shingles(tok: Tokens, n: int, whole_if_short: bool = True) -> Shingles:
    """Word n-gram hashes per document; a document shorter than n tokens is one shingle of them all
    (or none, with whole_if_short=False)."""
    return Shingles(*_windows(tok.hashes, tok.counts, n, whole_if_short))


def char_shingles(tok: Tokens, n: int) -> Shingles:
    """Character n-gram hashes over each document's tokens joined by single spaces."""
    return Shingles(*_windows(*_joined_codepoints(tok), n, True))


def shingle_tops(tok: Tokens, shingle: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(top 32 bits of each `shingle` ("word" / "char") n-gram hash as uint32, offsets), straight from the fold:
    the hashes of `word_shingles` / `char_shingles` >> 32, with no 64-bit array."""
    values, counts = (tok.hashes, tok.counts) if shingle == "word" else _joined_codepoints(tok)
    return _windows(values, counts, n, True, kernels.window_tops)


def _joined_codepoints(tok: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """(code points of every document's tokens joined by single spaces, code points per document)."""
    ntok = len(tok.starts)
    if ntok == 0:
        return np.zeros(0, np.uint64), np.zeros(tok.ndocs, np.int64)
    lengths = tok.ends - tok.starts
    doc = tok.doc
    last = np.ones(ntok, dtype=bool)
    last[:-1] = doc[1:] != doc[:-1]
    seg = lengths + ~last  # each token's bytes, then a space unless it ends its document
    dest = np.zeros(ntok, dtype=np.int64)
    np.cumsum(seg[:-1], out=dest[1:])
    buf = np.full(int(seg.sum()), 32, dtype=np.uint8)
    buf[ranges(dest, lengths)] = tok.data[ranges(tok.starts, lengths)]
    # tokens end only at ASCII bytes, so the buffer is valid UTF-8; one decode for the whole batch
    cps = np.frombuffer(buf.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lead = (buf & 0xC0) != 0x80
    counts = np.bincount(np.repeat(doc, seg)[lead], minlength=tok.ndocs)
    return cps, counts


def shingle_hash_py(shingle: bytes, kind: str) -> int:
    """64-bit hash of one shingle's bytes, identical to the compiled one (`kernels.windows`)."""
    if kind == "word":
        parts = [token_hash(t) for t in shingle.split(b" ") if t]
    else:
        parts = [ord(ch) for ch in shingle.decode("utf-8")]
    s = SEED_SHINGLE
    for p in parts:
        s = ((s * MUL_A) & M64) ^ p
    return _fmix64_int(s)


def hashfunc(shingle: str = "word") -> Callable[[bytes], int]:
    """A datasketch `hashfunc` giving curate's 32-bit shingle hash for one shingle's UTF-8 bytes."""
    if shingle not in ("word", "char"):
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")

    def _hash(b: bytes) -> int:
        return shingle_hash_py(b, shingle) >> 32

    return _hash


def shingles_py(text: str, shingle: str = "word", ngram: int = 5) -> list[bytes]:
    """The shingles of one text as bytes, as curate forms them (for datasketch's MinHash.update)."""
    tokens = [t for t in _py_tokens(text)]
    if shingle == "word":
        if len(tokens) < ngram:
            return [" ".join(tokens).encode()] if tokens else []
        return [" ".join(tokens[i : i + ngram]).encode() for i in range(len(tokens) - ngram + 1)]
    joined = " ".join(tokens)
    if len(joined) < ngram:
        return [joined.encode()] if joined else []
    return [joined[i : i + ngram].encode() for i in range(len(joined) - ngram + 1)]


def _py_tokens(text: str) -> list[str]:
    data = unicodedata.normalize("NFKC", text).lower().encode("utf-8")
    out, cur = [], bytearray()
    for byte in data:
        if WORD_BYTE[byte]:
            cur.append(byte)
        elif cur:
            out.append(cur.decode("utf-8"))
            cur = bytearray()
    if cur:
        out.append(cur.decode("utf-8"))
    return out


def with_sha1(tok: Tokens, sh: Shingles, shingle: str, n: int) -> Shingles:
    """Replace each shingle hash's top 32 bits with datasketch's default `sha1_hash32` of its bytes.

    Signatures then equal those of a plain `datasketch.MinHash()` updated with the same shingles, at
    the price of one SHA-1 per shingle in Python (several times slower than the default hash).
    """
    import hashlib

    tstart = np.concatenate([[0], np.cumsum(tok.counts)])
    top = np.empty(len(sh.hashes), dtype=np.uint64)
    k = 0
    for d in range(tok.ndocs):
        words = [bytes(tok.data[tok.starts[i] : tok.ends[i]]) for i in range(tstart[d], tstart[d + 1])]
        if shingle == "word":
            grams = [b" ".join(words[i : i + n]) for i in range(len(words) - n + 1)] if len(words) >= n else (
                [b" ".join(words)] if words else [])
        else:
            text = b" ".join(words).decode("utf-8")
            grams = [text[i : i + n].encode() for i in range(len(text) - n + 1)] if len(text) >= n else (
                [text.encode()] if text else [])
        for g in grams:
            top[k] = int.from_bytes(hashlib.sha1(g).digest()[:4], "little")
            k += 1
    return Shingles((top << np.uint64(32)) | (sh.hashes & np.uint64(0xFFFFFFFF)), sh.offsets)


def shingles_of(tok: Tokens, shingle: str, ngram: int, hash: str = "curate") -> Shingles:
    sh = word_shingles(tok, ngram) if shingle == "word" else char_shingles(tok, ngram)
    return with_sha1(tok, sh, shingle, ngram) if hash == "sha1" else sh


def minhash_inputs(tok: Tokens, shingle: str, ngram: int, hash: str = "curate") -> tuple[np.ndarray, np.ndarray]:
    """(uint32 hashes, offsets): what MinHash takes of each row's shingles, the top 32 bits of their hashes."""
    if hash == "curate":
        return shingle_tops(tok, shingle, ngram)
    sh = shingles_of(tok, shingle, ngram, hash)
    return (sh.hashes >> np.uint64(32)).astype(np.uint32), sh.offsets
