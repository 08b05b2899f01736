"""Duplicate clusters: shingles, MinHash LSH candidates, exact Jaccard verification, components."""

import random

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.dedup import (
    DedupConfig,
    candidate_probability,
    connected_components,
    find_duplicates,
    jaccard,
    lsh_params,
    shingle_hashes,
)
from curation.errors import InputError
from curation.normalize import normalise
from tests.conftest import DATA


def _sets(texts, kind="char", k=5):
    tok, off = shingle_hashes(texts, kind, k)
    return [set(tok[off[i]:off[i + 1]].tolist()) for i in range(len(texts))]


def _true_jaccard(a: str, b: str, kind="char", k=5) -> float:
    def grams(t):
        if kind == "char":
            return {t[i:i + k] for i in range(len(t) - k + 1)} if len(t) >= k else ({t} if t else set())
        w = [x for x in t.split(" ") if x]
        return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)} if len(w) >= k else ({tuple(w)} if w else set())
    A, B = grams(normalise(a)), grams(normalise(b))
    return len(A & B) / len(A | B) if A | B else 1.0


@pytest.fixture(scope="module")
def youtube():
    return pl.read_ndjson(DATA / "wrench" / "youtube.jsonl")


def test_char_shingles_count_and_short_texts():
    tok, off = shingle_hashes(["abcdefg", "abc", "", "abcde"], "char", 5)
    assert np.diff(off).tolist() == [3, 1, 0, 1]
    assert tok.dtype == np.uint64
    # the same 5-gram hashes the same in every document
    assert tok[off[3]] == tok[off[0]]


def test_word_shingles():
    s = _sets(["the cat sat", "the cat", "sat the cat"], "word", 2)
    assert len(s[0]) == 2 and len(s[1]) == 1
    assert s[1] <= s[0] and s[1] <= s[2]


@given(st.lists(st.text(alphabet="abc de", max_size=14), min_size=2, max_size=12), st.sampled_from(["char", "word"]),
       st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_jaccard_matches_python_sets(texts, kind, k):
    norm = [normalise(t) for t in texts]
    tok, off = shingle_hashes(norm, kind, k)
    pairs = np.array([(i, j) for i in range(len(norm)) for j in range(i + 1, len(norm))], dtype=np.int64)
    got = jaccard(tok, off, pairs)
    for (i, j), g in zip(pairs, got):
        want = _true_jaccard(norm[i], norm[j], kind, k)
        if not norm[i] and not norm[j]:
            continue  # two empty texts: no shingles (they are exact duplicates anyway)
        assert g == pytest.approx(want), (norm[i], norm[j])


def test_lsh_params_reach_the_target_recall():
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        b, r = lsh_params(t, 0.99, 160)
        assert b * r <= 160
        assert candidate_probability(t, b, r) >= 0.99
    assert lsh_params(0.7) == (26, 5)


def test_config_errors_name_the_field():
    with pytest.raises(InputError, match="threshold"):
        DedupConfig(threshold=0)
    with pytest.raises(InputError, match="valid: char, word"):
        DedupConfig(shingle="byte")
    with pytest.raises(InputError, match="both"):
        DedupConfig(bands=4)


def test_connected_components_is_transitive_and_named_by_first_row():
    comp = connected_components(6, np.array([4, 1]), np.array([2, 4]))
    assert comp.tolist() == [0, 1, 1, 3, 1, 5]


def test_exact_near_and_group_edges():
    texts = [
        "Check out my channel, please subscribe!",      # 0
        "check out my CHANNEL please subscribe",        # 1 exact after normalisation
        "Check out my channel, please subscribee!",     # 2 near (one character)
        "What a beautiful song, I love it",             # 3 unrelated
        "Totally different words here",                 # 4 tied to 3 by group
        "Nothing to see",                               # 5 alone
    ]
    d = find_duplicates(texts, groups=[None, None, None, "g1", "g1", None])
    c = d.component.tolist()
    assert c[0] == c[1] == c[2] == 0
    assert c[3] == c[4] == 3
    assert c[5] == 5
    kinds = {(a, b): k for a, b, k, _ in d.pairs.iter_rows()}
    assert kinds[(0, 1)] == "exact" and kinds[(0, 2)] == "near" and kinds[(3, 4)] == "group"
    assert d.stats["exact_duplicate_rows"] == 1 and d.stats["near_pairs"] == 1 and d.stats["components"] == 3


def test_group_edges_only_when_asked():
    d = find_duplicates(["a b c d e f", "x y z w v u"], groups=["same", "same"])
    assert d.component.tolist() == [0, 0]
    assert find_duplicates(["a b c d e f", "x y z w v u"]).component.tolist() == [0, 1]
    with pytest.raises(InputError, match="one group"):
        find_duplicates(["a", "b"], groups=["x"])


def test_every_near_pair_is_verified_by_true_jaccard(youtube):
    texts = youtube["text"].to_list()
    d = find_duplicates(texts)
    near = d.pairs.filter(pl.col("kind") == "near")
    assert near.height > 50
    for a, b, _, sim in near.iter_rows():
        assert sim >= 0.7
        assert sim == pytest.approx(_true_jaccard(texts[a], texts[b]))
    # every edge joins rows of one component
    comp = d.component
    assert (comp[d.pairs["a"].to_numpy()] == comp[d.pairs["b"].to_numpy()]).all()


def _edit(text: str, rng: random.Random, n: int) -> str:
    chars = list(text)
    for _ in range(n):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
        elif op < 0.7:
            chars.insert(i, rng.choice("abcdefghijklmnopqrstuvwxyz"))
        elif len(chars) > 1:
            del chars[i]
    return "".join(chars)


def test_recall_on_planted_edits(youtube):
    """Planted edits of real comments: every planted pair with true Jaccard >= 0.7 must be found (>= 95%)."""
    rng = random.Random(7)
    base = [t for t in dict.fromkeys(youtube["text"].to_list()) if len(normalise(t)) >= 30][:600]
    copies = [_edit(t, rng, rng.randint(1, 4)) for t in base]
    texts = base + copies
    d = find_duplicates(texts)
    n = len(base)
    planted = [(i, n + i) for i in range(n) if _true_jaccard(base[i], copies[i]) >= 0.7]
    assert len(planted) > 300
    found = sum(d.component[i] == d.component[j] for i, j in planted)
    assert found / len(planted) >= 0.95


def test_seed_and_order_do_not_change_components(youtube):
    texts = youtube["text"].to_list()[:800]
    a = find_duplicates(texts, config=DedupConfig(seed=1)).component
    b = find_duplicates(texts, config=DedupConfig(seed=2)).component
    # the partition (not only its names) is the same: LSH misses at this size are negligible
    assert len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_large_bucket_uses_a_window_and_stays_connected():
    texts = [f"the same long template comment number {i % 7} with a tail" for i in range(400)]
    texts += [f"the same long template comment number x{i} with a tail" for i in range(300)]
    d = find_duplicates(texts, config=DedupConfig(max_bucket=10))
    u = d.stats["unique_texts"]
    assert d.stats["candidates"] < u * (u - 1) / 4  # far fewer than all pairs of the one big bucket
    assert len(set(d.component.tolist())) == 1


def test_word_shingles_end_to_end():
    texts = ["the quick brown fox jumps over the lazy dog", "the quick brown fox jumped over the lazy dog",
             "an entirely different sentence about cats"]
    d = find_duplicates(texts, config=DedupConfig(shingle="word", threshold=0.7))
    assert d.component.tolist() == [0, 0, 2]


def test_empty_and_punctuation_only_texts():
    d = find_duplicates(["!!!", "???", "", "real text here"])
    assert d.component.tolist() == [0, 0, 0, 3]
    with pytest.raises(InputError, match="null"):
        find_duplicates(pl.Series(["a", None]))


def test_numba_kernels_match_the_numpy_path(youtube, monkeypatch):
    from curation import dedup

    if dedup._numba_kernels() is None:
        pytest.skip("numba is not installed")
    texts = youtube["text"].to_list()
    norm = [normalise(t) for t in texts] + ["", "ab", "é😀x"]
    runs = {}
    for use in (True, False):
        monkeypatch.setattr(dedup, "USE_NUMBA", use)
        tok, off = shingle_hashes(norm, "char", 5)
        wtok, woff = shingle_hashes(norm, "word", 2)
        pairs = np.array([(i, i + 1) for i in range(0, len(norm) - 1, 3)] + [(0, len(norm) - 3)], dtype=np.int64)
        runs[use] = (tok, off, wtok, woff, jaccard(tok, off, pairs), find_duplicates(texts).component)
    for x, y in zip(runs[True], runs[False]):
        assert np.array_equal(x, y) if x.dtype != np.float64 else np.allclose(x, y)


def test_pure_stages_compose_to_find_duplicates_and_are_deterministic(youtube):
    """signatures -> band_keys -> candidate_pairs_from_keys -> verify -> connected_components gives the
    near edges of find_duplicates; the same seed gives the same signatures in every block and run."""
    from curation.dedup import band_keys, candidate_pairs_from_keys, signatures, verify
    from curation.normalize import normalise_series

    texts = list(dict.fromkeys(normalise(t) for t in youtube["text"].to_list()))[:1200]
    config = DedupConfig()
    bands, rows = config.banding()
    sig = signatures(texts, config, normalised=True)
    assert sig.shape == (len(texts), bands * rows) and sig.dtype == np.uint32
    assert np.array_equal(sig, signatures(texts, config, normalised=True))
    # per block, as a distributed engine computes them
    assert np.array_equal(np.concatenate([signatures(texts[:500], config, normalised=True),
                                          signatures(texts[500:], config, normalised=True)]), sig)
    assert not np.array_equal(sig, signatures(texts, DedupConfig(seed=2), normalised=True))
    assert np.array_equal(signatures(youtube["text"][:50], config),
                          signatures(normalise_series(youtube["text"][:50]), config, normalised=True))
    keys = band_keys(sig, bands, rows)
    assert keys.shape == (bands, len(texts))
    tok, off = shingle_hashes(texts, config.shingle, config.shingle_size)
    cand = candidate_pairs_from_keys(keys, max_bucket=config.max_bucket, valid=off[1:] > off[:-1])
    assert (cand[:, 0] < cand[:, 1]).all() and len(np.unique(cand[:, 0] * len(texts) + cand[:, 1])) == len(cand)
    pairs, sim, counts = verify(tok, off, cand, config.threshold, sig=sig)
    assert (sim >= config.threshold).all() and counts["near_pairs"] == len(pairs)
    comp = connected_components(len(texts), pairs[:, 0], pairs[:, 1])
    d = find_duplicates(texts, config=config)
    assert np.array_equal(d.component, comp)
    near = d.pairs.filter(pl.col("kind") == "near").sort("a", "b")
    assert near["a"].to_list() == pairs[:, 0].tolist() and near["b"].to_list() == pairs[:, 1].tolist()


def test_numba_and_numpy_signatures_and_candidates_match(youtube, monkeypatch):
    from curation import dedup

    if dedup._numba_kernels() is None:
        pytest.skip("numba is not installed")
    texts = [normalise(t) for t in youtube["text"].to_list()[:700]] + ["", "ab"]
    texts += [f"the same template comment {i % 3}" for i in range(150)]   # a bucket over max_bucket
    runs = {}
    for use in (True, False):
        monkeypatch.setattr(dedup, "USE_NUMBA", use)
        tok, off = shingle_hashes(texts, "char", 5)
        sig = dedup.minhash_signatures(tok, off, 130, 1)
        keys = dedup.band_keys(sig, 26, 5)
        cand = dedup.candidate_pairs_from_keys(keys, max_bucket=20, valid=off[1:] > off[:-1], sig=sig,
                                               min_agreement=60)
        runs[use] = (sig, keys, cand)
    for x, y in zip(runs[True], runs[False]):
        assert np.array_equal(x, y)
