"""Signatures, shingles and LSH parameters: bit-compatibility with datasketch 2.x."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH

from curate.dedupe import minhash as M
from curate.dedupe import shingle as S

TEXTS = [
    "Hello, World! This is a test of the emergency broadcast system, ok?",
    "Hello world this is a test of the emergency broadcast system ok",
    "short one",
    "",
    "Ünïcode wörds — and 中文 text here; with_underscores and averylongtokenwithmorethan8bytes!!",
    "a b c d e f g h i j k",
]


def _curate(texts: list[str], kind: str, n: int, num_perm: int = 128) -> tuple[S.Shingles, np.ndarray]:
    tok = S.tokenize(pa.array(texts), np.arange(len(texts)), len(texts))
    sh = S.word_shingles(tok, n) if kind == "word" else S.char_shingles(tok, n)
    return sh, M.signatures((sh.hashes >> np.uint64(32)).astype(np.uint32), sh.offsets, num_perm)


@pytest.mark.parametrize("ascii_only", [False, True], ids=["mixed-scripts", "ascii-batch"])
@pytest.mark.parametrize("kind,n", [("word", 5), ("word", 1), ("char", 5)])
def test_vectorised_shingles_equal_python_mirror(kind, n, ascii_only):
    # an all-ASCII batch is lower-cased inside the tokeniser kernel; any other batch by Arrow first
    texts = [t for t in TEXTS if t.isascii()] if ascii_only else TEXTS
    sh, _ = _curate(texts, kind, n)
    for d, text in enumerate(texts):
        expected = [S.shingle_hash_py(x, kind) for x in S.shingles_py(text, kind, n)]
        assert [int(v) for v in sh.hashes[sh.offsets[d] : sh.offsets[d + 1]]] == expected


@pytest.mark.parametrize("ascii_only", [False, True], ids=["mixed-scripts", "ascii-batch"])
def test_token_hashes_of_random_pieces_equal_python_mirror(ascii_only):
    # random cuts, empty pieces, runs of word bytes split between two pieces of one document, tokens
    # straddling 8-byte boundaries: the kernel's 8-byte loads must agree with the byte-level mirror
    rng = np.random.default_rng(7)
    alphabet = list("aBzZ09 .,-_\n\tQxYLONGER") + ([] if ascii_only else ["é", "中", "Ⅷ", "？"])
    for _ in range(50):
        pieces = ["".join(rng.choice(alphabet, int(rng.integers(0, 40)))) for _ in range(int(rng.integers(1, 8)))]
        doc = np.sort(rng.integers(0, 3, len(pieces)))
        tok = S.tokenize(pa.array(pieces), doc, 3)
        expected: list[list[int]] = [[], [], []]
        for d, piece in zip(doc.tolist(), pieces):
            expected[d] += [S.token_hash(t.encode()) for t in S._py_tokens(piece)]
        assert tok.counts.tolist() == [len(e) for e in expected]
        assert [int(h) for h in tok.hashes] == [h for e in expected for h in e]


@pytest.mark.parametrize("kind,num_perm", [("word", 128), ("char", 64), ("word", 256)])
def test_signatures_equal_datasketch_minhash(kind, num_perm):
    _, sig = _curate(TEXTS, kind, 5, num_perm)
    assert sig.dtype == np.uint32
    for d, text in enumerate(TEXTS):
        m = MinHash(num_perm=num_perm, hashfunc=S.hashfunc(kind))
        m.update_batch(S.shingles_py(text, kind, 5))
        assert m.hashvalues.dtype == sig.dtype
        np.testing.assert_array_equal(m.hashvalues, sig[d])


def test_permutations_are_datasketchs():
    a, b = M.permutations(128, 1)
    ref = MinHash(num_perm=128, seed=1).permutations
    np.testing.assert_array_equal(a, ref[0])
    np.testing.assert_array_equal(b, ref[1])


def test_curate_signature_in_datasketch_lsh_finds_same_candidates():
    rng = np.random.default_rng(7)
    vocab = [f"tok{i}" for i in range(400)]
    base = [list(rng.choice(vocab, 60)) for _ in range(30)]
    texts = []
    for words in base:
        texts.append(" ".join(words))
        edited = list(words)
        for k in rng.choice(len(edited), 2, replace=False):
            edited[k] = "edit"
        texts.append(" ".join(edited))
    _, sig = _curate(texts, "word", 3)
    ours, theirs = MinHashLSH(threshold=0.7, num_perm=128), MinHashLSH(threshold=0.7, num_perm=128)
    ds = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=128, hashfunc=S.hashfunc("word"))
        m.update_batch(S.shingles_py(text, "word", 3))
        ds.append(m)
        theirs.insert(i, m)
        ours.insert(i, MinHash(hashvalues=sig[i], scheme="affine32"))
    found = 0
    for i in range(len(texts)):
        mine = sorted(ours.query(MinHash(hashvalues=sig[i], scheme="affine32")))
        assert mine == sorted(theirs.query(ds[i]))
        found += len(mine) > 1
    assert found >= 50  # the planted edited copies really are candidates, so the comparison means something


def test_choose_bands_favours_recall():
    bands, rows = M.choose_bands(0.8, 128)
    assert bands * rows <= 128
    assert M.collision_probability(0.8, bands, rows) >= 0.99
    # datasketch's default weights catch a pair at exactly 0.8 far less often
    ref = MinHashLSH(threshold=0.8, num_perm=128)
    assert M.collision_probability(0.8, ref.b, ref.r) < 0.6


def test_empty_document_keeps_datasketch_initial_values():
    _, sig = _curate(["", "   ...  "], "word", 5)
    np.testing.assert_array_equal(sig, np.full((2, 128), 0xFFFFFFFF, dtype=np.uint32))
    np.testing.assert_array_equal(sig[0], MinHash(num_perm=128).hashvalues)


def test_turns_of_one_document_do_not_glue_tokens():
    tok = S.tokenize(pa.array(["alpha", "beta", "gamma"]), np.array([0, 0, 1]), 2)
    assert [tok.text(i, i + 1) for i in range(len(tok.hashes))] == ["alpha", "beta", "gamma"]
    assert list(tok.doc) == [0, 0, 1]


def test_sha1_mode_equals_default_datasketch_minhash_and_lsh():
    from curate.dedupe import shingles_py, text_signatures

    texts = TEXTS + [" ".join(f"w{i % 37}" for i in range(k, k + 40)) for k in range(0, 200, 3)]
    sig = text_signatures(texts, hash="sha1")
    theirs, ours = MinHashLSH(threshold=0.6, num_perm=128), MinHashLSH(threshold=0.6, num_perm=128)
    default = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=128)  # datasketch's defaults: sha1_hash32, seed 1, affine32
        m.update_batch(shingles_py(text))
        default.append(m)
        np.testing.assert_array_equal(m.hashvalues, sig[i])
        theirs.insert(i, m)
        ours.insert(i, MinHash(hashvalues=sig[i], scheme="affine32"))
    multi = 0
    for i in range(len(texts)):
        got = sorted(ours.query(default[i]))
        assert got == sorted(theirs.query(MinHash(hashvalues=sig[i], scheme="affine32")))
        multi += len(got) > 1
    assert multi > 10


def test_sha1_mode_dedupes_like_default(shared_data):
    from curate.dedupe import dedupe

    a = dedupe(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json", hash="sha1")
    assert a.summary["reasons"]["exact"] == 14 and a.summary["config"]["hash"] == "sha1"


def test_shingle_sets_and_exact_jaccard_equal_python_sets():
    # rows from empty to far larger than the kernels' initial 256-slot tables, with repeated values
    from curate.dedupe import lsh

    rng = np.random.default_rng(3)
    sizes = np.array([5, 300, 2000, 0, 7, 130])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    values = rng.integers(0, 600, offsets[-1]).astype(np.uint32)
    docs = np.array([40, 10, 30, 20, 50, 60])  # not in order: build_sets sorts rows by document
    sets = lsh.build_sets(docs, values, offsets)
    py = {int(d): set(values[offsets[i] : offsets[i + 1]].tolist()) for i, d in enumerate(docs)}
    assert sets.docs.tolist() == sorted(py)
    for k, d in enumerate(sets.docs.tolist()):
        row = sets.values[sets.offsets[k] : sets.offsets[k + 1]].tolist()
        assert len(row) == len(set(row)) and set(row) == py[d]
    pairs = np.array([[10, 30], [10, 40], [10, 60], [20, 30], [30, 50], [30, 60]])
    expected = [len(py[a] & py[b]) / len(py[a] | py[b]) if py[a] | py[b] else 0.0 for a, b in pairs.tolist()]
    assert lsh.jaccard(sets, pairs).tolist() == expected


def test_spilled_sets_equal_python_sets_across_windows():
    """Rows read back from the spill file, in windows smaller than the request, unordered and repeated."""
    from curate.dedupe.spill import ShingleSpill

    rng = np.random.default_rng(5)
    sizes = rng.integers(0, 400, 50)
    sizes[[3, 4, 20]] = 0  # empty rows, two of them adjacent
    spill = ShingleSpill(len(sizes), window=7)
    rows_values = [rng.integers(0, 300, k).astype(np.uint32) for k in sizes]
    for start in range(0, len(sizes), 12):  # batches of 12 rows
        part = rows_values[start : start + 12]
        spill.add(start, np.concatenate(part), np.concatenate([[0], np.cumsum([len(v) for v in part])]))
    want = rng.choice(len(sizes), 30, replace=False).tolist() + [3, 4, 20, 7, 7]
    sets = spill.sets(np.array(want))
    spill.close()
    assert sets.docs.tolist() == sorted(set(want))
    for k, d in enumerate(sets.docs.tolist()):
        row = sets.values[sets.offsets[k] : sets.offsets[k + 1]].tolist()
        assert len(row) == len(set(row)) and set(row) == set(rows_values[d].tolist()), d


def test_candidate_pairs_equal_brute_force_and_chance_collisions_only_add():
    """LSH candidates from the radix-sorted bands, on rows picked out of a larger matrix, are exactly the
    brute-force pairs sharing the sorted top bits of a band key: every pair sharing a whole key, plus
    the few that share only those bits by chance (verification rejects them later)."""
    from curate.dedupe import lsh

    rng = np.random.default_rng(3)
    n, nb = 3000, 6
    bands = rng.integers(0, 1 << 63, (n, nb), dtype=np.uint64)
    for s, d, b in zip(rng.integers(0, n, 400), rng.integers(0, n, 400), rng.integers(0, nb, 400)):
        bands[d, b] = bands[s, b]  # planted shared keys: buckets of a few rows
    docs = np.sort(rng.choice(n, 2000, replace=False))
    bits = lsh.key_bits(len(docs), max(int(len(docs) - 1).bit_length(), 1))
    assert bits < 64

    def brute(keys: np.ndarray) -> set:
        return {(int(a), int(b)) for k in range(nb) for key in np.unique(keys[docs, k])
                for grp in [docs[keys[docs, k] == key]] if len(grp) > 1 for i, a in enumerate(grp) for b in grp[i + 1:]}

    got = {tuple(p) for p in lsh.candidate_pairs(bands, docs).tolist()}
    whole = brute(bands)
    assert got == brute(bands >> np.uint64(64 - bits)) and whole <= got and len(whole) > 100
    assert len(got - whole) < len(whole) / 10  # chance collisions stay rare

    near = bands.copy()
    near[docs[1], 0] = near[docs[0], 0] ^ np.uint64(1)  # differs only below the sorted bits
    assert (int(docs[0]), int(docs[1])) in {tuple(p) for p in lsh.candidate_pairs(near, docs).tolist()}


def test_removed_rows_jaccard_reuses_candidate_values_and_computes_the_rest():
    from curate.dedupe.plan import _known_or_new

    pairs = np.array([[0, 5], [1, 2], [1, 9], [3, 4], [7, 8]])
    values = np.array([0.5, 0.9, 0.81, 0.7, 1.0])
    asked = []

    def compute(q):
        asked.append(q.tolist())
        return np.full(len(q), -1.0)

    query = np.array([[1, 9], [2, 3], [7, 8], [0, 5], [8, 9]])
    assert _known_or_new(query, pairs, values, compute).tolist() == [0.81, -1.0, 1.0, 0.5, -1.0]
    assert asked == [[[2, 3], [8, 9]]]
    assert _known_or_new(query, pairs[:0], values[:0], compute).tolist() == [-1.0] * 5
