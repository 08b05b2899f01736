"""Duplicate clusters: the units a split may not cut.

Three kinds of edge tie records together, and the connected components of all of them are the components:

- exact: the same normalised text (`curation.normalize`: NFKC, case folding, punctuation and format characters
  dropped, whitespace collapsed), i.e. the same `input_hash`;
- near: MinHash LSH over shingles of the normalised text proposes candidate pairs, and a candidate becomes an edge
  only when its true Jaccard similarity (of the shingle sets) reaches the threshold — no estimate is trusted;
- group: the same value in an optional group column (author, source document, conversation).

Defaults (why): character 5-grams, because the texts this product sees are short (YouTube comments: median 48
characters) and one edited character changes at most 5 shingles, so a typo keeps Jaccard high where word
shingles of a 10-word comment would lose a whole word's worth of overlap; threshold 0.7, which keeps template
spam ("check out my channel ...") with a changed name or link together while two unrelated comments of the same
topic stay apart (measured in `benchmarks/bench_dedup.py`). The LSH banding is picked from the threshold so that
a pair exactly at the threshold becomes a candidate with probability >= `target_recall` (0.99), using as many
rows per band as the permutation budget (`max_perm`, 160) allows, which keeps false candidates few.

Everything here is pure: texts and groups in, component ids (per row: the index of the component's first row)
and the verified pairs out. The store edge is `curation.splits`.
"""

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from curation.errors import InputError
from curation.normalize import normalise_series

log = logging.getLogger(__name__)

SHINGLES = ("char", "word")
_DEFAULT_K = {"char": 5, "word": 1}
_P = np.uint64(0x100000001B3)  # FNV prime: the polynomial base of the rolling k-gram hash
_MASK64 = (1 << 64) - 1
_PAIR_CHUNK = 1 << 17     # pairs compared at a time (bounds memory: 130 permutations x 4 bytes x 2 per pair)


@dataclass(frozen=True)
class DedupConfig:
    """How near duplicates are found. `k=None` takes the shingle kind's default (char: 5, word: 1)."""

    threshold: float = 0.7
    shingle: str = "char"
    k: int | None = None
    target_recall: float = 0.99   # candidate probability of a pair exactly at the threshold
    max_perm: int = 160           # permutation budget for choosing the banding
    bands: int | None = None      # override the banding (both or neither)
    rows: int | None = None
    max_bucket: int = 100         # an LSH bucket larger than this is paired within a sliding window of this size
    seed: int = 1
    # template-aware mode (instruction prompts): word n-grams in many records are template text, dropped before
    # shingling, so similarity is over content; plus a containment edge for a passage inside a longer prompt
    template_aware: bool = False
    template_ngram: int = 3         # word n-grams that detect template text
    template_min_df: int = 50       # a template n-gram is in >= max(template_min_df, template_df * texts) texts
    template_df: float = 0.01
    containment: float | None = 0.8   # |A & B| / min(|A|, |B|) of content shingles that makes an edge (None: off)
    min_content: int = 50           # content shingles the smaller text needs for a containment edge
    anchors: int = 8                # bottom-k shingles per text that look for containing texts

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise InputError(f"near-duplicate threshold {self.threshold}: use a Jaccard similarity in (0, 1]")
        if self.shingle not in SHINGLES:
            raise InputError(f"shingle {self.shingle!r}: unknown; valid: {', '.join(SHINGLES)}")
        if self.k is not None and not 1 <= self.k <= 32:
            raise InputError(f"shingle size k={self.k}: use 1..32")
        if not 0.5 <= self.target_recall < 1.0:
            raise InputError(f"target_recall {self.target_recall}: use a value in [0.5, 1)")
        if (self.bands is None) != (self.rows is None):
            raise InputError("give both bands and rows, or neither (then they follow from the threshold)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1):
            raise InputError(f"bands={self.bands}, rows={self.rows}: both must be >= 1")
        if self.max_bucket < 2:
            raise InputError(f"max_bucket {self.max_bucket}: use >= 2")
        if not 1 <= self.template_ngram <= 8:
            raise InputError(f"template_ngram {self.template_ngram}: use 1..8 words")
        if not 0.0 < self.template_df <= 1.0 or self.template_min_df < 2:
            raise InputError(f"template_df {self.template_df}, template_min_df {self.template_min_df}: use a share "
                             "in (0, 1] and a count >= 2")
        if self.containment is not None and not 0.0 < self.containment <= 1.0:
            raise InputError(f"containment {self.containment}: use a share in (0, 1] or None")
        if self.min_content < 1 or self.anchors < 1:
            raise InputError(f"min_content {self.min_content}, anchors {self.anchors}: both must be >= 1")

    @property
    def shingle_size(self) -> int:
        return self.k if self.k is not None else _DEFAULT_K[self.shingle]

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return lsh_params(self.threshold, self.target_recall, self.max_perm)

    def as_dict(self) -> dict:
        bands, rows = self.banding()
        out = {"threshold": self.threshold, "shingle": self.shingle, "k": self.shingle_size, "bands": bands,
               "rows": rows, "num_perm": bands * rows, "max_bucket": self.max_bucket, "seed": self.seed}
        if self.template_aware:
            out |= {"template_aware": True, "template_ngram": self.template_ngram,
                    "template_min_df": self.template_min_df, "template_df": self.template_df,
                    "containment": self.containment, "min_content": self.min_content, "anchors": self.anchors}
        return out


def prompt_config(threshold: float = 0.7, **kw) -> DedupConfig:
    """The template-aware setting used for instruction prompts (`make_split` of an instruction dataset)."""
    return DedupConfig(threshold=threshold, template_aware=True, **kw)


@dataclass
class Duplicates:
    """`component[i]`: index of the first row of row i's component. `pairs`: the edges (row indexes a < b,
    kind 'exact' | 'near' | 'group', similarity: Jaccard for near, 1.0 for exact, null for group)."""

    component: np.ndarray
    pairs: pl.DataFrame
    stats: dict = field(default_factory=dict)


USE_NUMBA = True   # the numba kernels (`curation._dedup_kernels`) when numba imports; False: numpy/scipy twins


@functools.cache
def _numba_kernels():
    try:
        from curation import _dedup_kernels
    except ImportError as e:  # numba missing: the numpy/scipy path gives the same results, slower
        log.warning("numba is not available (%s); near-duplicate detection uses the slower numpy path", e)
        return None
    return _dedup_kernels


def _kernels():
    return _numba_kernels() if USE_NUMBA else None


# -- LSH parameters -------------------------------------------------------------------------------------
def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(a pair with Jaccard s shares at least one band) = 1 - (1 - s^rows)^bands."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def lsh_params(threshold: float, target_recall: float = 0.99, max_perm: int = 160) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose banding reaches `target_recall` at `threshold` within
    `max_perm` permutations (more rows = fewer false candidates). num_perm = bands * rows."""
    best = None
    for rows in range(1, 65):
        p = threshold**rows
        if p >= 1.0:
            bands = 1
        elif p <= 0.0:
            break
        else:
            bands = max(1, math.ceil(math.log(1.0 - target_recall) / math.log(1.0 - p)))
        if bands * rows > max_perm:
            break
        best = (bands, rows)
    if best is None:
        raise InputError(f"threshold {threshold}: no banding reaches recall {target_recall} within "
                         f"{max_perm} permutations; raise max_perm or the threshold")
    return best


# -- shingles -------------------------------------------------------------------------------------------
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def kgrams(codes: np.ndarray, lens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the k-grams of each document, given the documents' codes concatenated (`codes`, uint64) and
    their lengths. A document shorter than k (but not empty) gets one shingle: the whole document."""
    n = len(codes)
    lens = lens.astype(np.int64)
    ends = np.cumsum(lens)
    starts = ends - lens
    counts = np.where(lens >= k, lens - k + 1, np.minimum(lens, 1))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    tok = np.empty(int(offsets[-1]), dtype=np.uint64)
    kern = _kernels()
    if kern is not None:
        kern.kgram_hashes(codes, starts, lens, k, offsets, tok)
        return tok, offsets
    codes = codes.astype(np.uint64, copy=False)
    short = np.flatnonzero((lens > 0) & (lens < k))
    if n >= k:
        with np.errstate(over="ignore"):
            m = n - k + 1
            h = codes[:m].copy()
            for j in range(1, k):
                h *= _P
                h += codes[j:j + m]
        valid = np.ones(m, dtype=bool)
        for d in range(1, k):  # windows that run past their document's end
            e = ends - d
            e = e[(e >= starts) & (e < m)]
            valid[e] = False
        slots = np.ones(len(tok), dtype=bool)
        slots[offsets[short]] = False
        tok[slots] = h[valid]
    for i in short:  # few: texts shorter than k
        v = 0
        for c in codes[starts[i]:ends[i]]:
            v = (v * int(_P) + int(c)) & _MASK64
        tok[offsets[i]] = v
    with np.errstate(over="ignore"):
        _mix(tok)
    return tok, offsets


def shingle_hashes(norm: pl.Series | Sequence[str], kind: str = "char", k: int = 5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the shingles of already normalised texts: (tokens uint64, offsets int64 of len n+1);
    document i's shingles are tokens[offsets[i]:offsets[i+1]] (a multiset; empty text: none).
    char: k-grams of Unicode code points; word: k-grams of words split on single spaces."""
    s = norm if isinstance(norm, pl.Series) else pl.Series("t", list(norm), dtype=pl.String)
    s = s.fill_null("")
    if kind == "char":
        lens = s.str.len_chars().to_numpy()
        joined = s.str.join("").item() if len(s) else ""
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return kgrams(codes, lens, k)
    if kind == "word":
        words = pl.DataFrame({"w": s.str.split(" ")}).with_row_index("doc").explode("w").filter(
            pl.col("w").is_not_null() & (pl.col("w") != ""))
        lens = np.bincount(words["doc"].to_numpy(), minlength=len(s)) if words.height else np.zeros(len(s), int)
        codes = words["w"].hash(seed=0x5EED).to_numpy().astype(np.uint64)
        return kgrams(codes, lens, k)
    raise InputError(f"shingle {kind!r}: unknown; valid: {', '.join(SHINGLES)}")


# -- MinHash signatures, LSH banding, candidates, verification ------------------------------------------
# The core is four pure functions over arrays, composed by `find_duplicates` (and by a distributed engine:
# signatures per block, band keys shuffled by key, pairs from each key group, verification, components):
#   signatures / minhash_signatures -> band_keys -> candidate_pairs_from_keys -> verify -> connected_components
def _gather(tok: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shingles of a subset of documents, re-packed (tokens, offsets)."""
    lens = offsets[docs + 1] - offsets[docs]
    sub_off = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lens, out=sub_off[1:])
    idx = np.repeat(offsets[docs] - sub_off[:-1], lens) + np.arange(sub_off[-1], dtype=np.int64)
    return tok[idx], sub_off


def perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the `num_perm` hash functions h -> top 32 bits of (a * h + b) mod 2^64 (a odd), drawn from
    `seed`: the same seed gives the same signatures in every process and block."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.uint64).max
    a = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def minhash_signatures(tok: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1) -> np.ndarray:
    """MinHash signatures (uint32, (n, num_perm)) of the shingle hashes of each document (`shingle_hashes`'s
    tokens and offsets). Multiply-shift hashing of the already mixed 64-bit shingle hashes; a document without
    shingles gets 0xFFFFFFFF everywhere (callers keep it out of banding)."""
    a, b = perm_params(num_perm, seed)
    tok = np.ascontiguousarray(tok, dtype=np.uint64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    out = np.empty((n, num_perm), dtype=np.uint32)
    kern = _kernels()
    if kern is not None:
        kern.minhash(tok, offsets, a, b, out)
        return out
    out.fill(0xFFFFFFFF)
    lens = np.diff(offsets)
    shift = np.uint64(32)
    step = max(1, (1 << 22) // max(1, num_perm))   # shingles hashed at a time
    lo = 0
    while lo < n:
        hi = lo + 1
        while hi < n and offsets[hi + 1] - offsets[lo] <= step:
            hi += 1
        docs = np.arange(lo, hi)[lens[lo:hi] > 0]
        if len(docs):
            t = tok[offsets[lo]:offsets[hi]]
            with np.errstate(over="ignore"):
                v = ((t[:, None] * a[None, :] + b[None, :]) >> shift).astype(np.uint32)
            out[docs] = np.minimum.reduceat(v, offsets[docs] - offsets[lo], axis=0)
        lo = hi
    return out


def signatures(texts: pl.Series | Sequence[str], config: DedupConfig | None = None, *,
               normalised: bool = False) -> np.ndarray:
    """MinHash signatures of a block of texts under `config` (its shingles, banding size and seed): uint32
    (len(texts), bands * rows). Texts are normalised first unless `normalised`."""
    config = config or DedupConfig()
    s = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)
    norm = s if normalised else normalise_series(s.fill_null(""))
    bands, rows = config.banding()
    tok, offsets = shingle_hashes(norm, config.shingle, config.shingle_size)
    return minhash_signatures(tok, offsets, bands * rows, config.seed)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """keys[b, i]: a 64-bit hash of row i's band b (signature columns b*rows .. b*rows+rows-1); rows that agree
    on a whole band share its key. (bands, n) uint64."""
    if sig.shape[1] < bands * rows:
        raise InputError(f"signatures have {sig.shape[1]} columns; banding {bands}x{rows} needs {bands * rows}")
    kern = _kernels()
    if kern is not None:
        return kern.band_keys(np.ascontiguousarray(sig), bands, rows)
    n = sig.shape[0]
    out = np.empty((bands, n), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            key = np.zeros(n, dtype=np.uint64)
            for c in sig[:, b * rows:(b + 1) * rows].T:
                key = _mix(key * _P + c.astype(np.uint64))
            out[b] = key
    return out


def _run_pairs_numpy(packed: np.ndarray, mask: np.uint64, max_bucket: int) -> np.ndarray:
    """numpy twin of `_dedup_kernels._run_pairs`."""
    n = len(packed)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    hi = packed & ~mask
    members = (packed & mask).astype(np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = hi[1:] != hi[:-1]
    bucket = np.cumsum(new) - 1
    size = np.bincount(bucket)[bucket]
    keep = size >= 2
    members, mb, msize = members[keep], bucket[keep], size[keep]
    out = []
    for d in range(1, max_bucket):
        if len(members) <= d:
            break
        same = mb[:-d] == mb[d:]
        if not same.any():
            break
        out.append(np.stack([members[:-d][same], members[d:][same]], axis=1))
        big = msize > d + 1   # buckets that still have pairs at distance d+1
        members, mb, msize = members[big], mb[big], msize[big]
    return np.concatenate(out) if out else np.empty((0, 2), dtype=np.int64)


def run_pairs(packed: np.ndarray, mask: np.uint64, max_bucket: int) -> np.ndarray:
    """Pairs of members (low `mask` bits) of each bucket (the high bits) of sorted packed values: every pair of
    a bucket, or each member with its next `max_bucket - 1` members in a larger one. (m, 2) int64, a < b."""
    kern = _kernels()
    if kern is None:
        return _run_pairs_numpy(packed, mask, max_bucket)
    k = kern._run_pairs(packed, mask, max_bucket, np.empty((0, 2), dtype=np.int64), True)
    part = np.empty((k, 2), dtype=np.int64)
    kern._run_pairs(packed, mask, max_bucket, part, False)
    return part


def candidate_pairs_from_keys(keys: np.ndarray, *, max_bucket: int = 100, valid: np.ndarray | None = None,
                              sig: np.ndarray | None = None, min_agreement: int = 0) -> np.ndarray:
    """Distinct row pairs (a < b, int64 (m, 2), sorted) that share a band key in any band of `keys` ((bands, n)
    from `band_keys`); rows where `valid` is False (e.g. texts without shingles) take part in none. A bucket
    larger than `max_bucket` pairs each row with its next `max_bucket - 1` members in row order only
    (sorted neighbourhood), which keeps it connected. With `sig` and `min_agreement`, only pairs whose
    signatures agree in at least that many positions are kept (the MinHash prefilter of `verify`).

    Each band is one sort of (key high bits | row index) — the row index in the low bits keeps a bucket's rows
    in row order, so the pairs do not depend on the sort. Keys that agree on their high bits but not in full
    share a bucket too; such rare false candidates fail verification."""
    return _candidate_search(keys, max_bucket, valid, sig, min_agreement)[0]


def _candidate_search(keys: np.ndarray, max_bucket: int, valid: np.ndarray | None, sig: np.ndarray | None,
                      min_agreement: int) -> tuple[np.ndarray, int]:
    """`candidate_pairs_from_keys` and the number of distinct pairs before the signature filter."""
    keys = np.atleast_2d(keys)
    bands, n = keys.shape
    if n < 2:
        return np.empty((0, 2), dtype=np.int64), 0
    nbits = max(1, (n - 1).bit_length())
    if nbits > 40:
        raise InputError(f"{n} rows in one candidate search: at most 2^40; split the band-key shuffle")
    mask = np.uint64((1 << nbits) - 1)
    idx = np.arange(n, dtype=np.uint64)
    rows_ok = None if valid is None else np.flatnonzero(valid)
    m = n if rows_ok is None else len(rows_ok)
    srt = np.empty((bands, m), dtype=np.uint64)   # per band: (key high bits | row), sorted
    for b in range(bands):
        packed = (keys[b] & ~mask) | idx
        srt[b] = packed if rows_ok is None else packed[rows_ok]
        srt[b].sort()
    kern = _kernels()
    found = []
    for b in range(bands):
        if kern is not None:
            k = kern._run_pairs(srt[b], mask, max_bucket, np.empty((0, 2), dtype=np.int64), True)
            part = np.empty((k, 2), dtype=np.int64)
            kern._run_pairs(srt[b], mask, max_bucket, part, False)
        else:
            part = _run_pairs_numpy(srt[b], mask, max_bucket)
        found.append(part[:, 0] * n + part[:, 1])    # a < b: row order within a bucket
    flat = np.unique(np.concatenate(found))
    n_pairs = len(flat)
    if sig is not None and min_agreement > 0 and len(flat):
        flat = flat[signature_agreement(sig, np.stack([flat // n, flat % n], axis=1)) >= min_agreement]
    return np.stack([flat // n, flat % n], axis=1), n_pairs


def signature_agreement(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Number of equal signature positions of each pair's two rows (int32, one per pair)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    aa, cc = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    kern = _kernels()
    if kern is not None:
        return kern.agreement(sig, aa, cc)
    return np.concatenate([(sig[aa[i:i + _PAIR_CHUNK]] == sig[cc[i:i + _PAIR_CHUNK]]).sum(axis=1)
                           for i in range(0, len(aa), _PAIR_CHUNK)] or [np.empty(0, dtype=np.int64)]
                          ).astype(np.int32)


def prefilter_estimate(threshold: float, num_perm: int, sigmas: float = 3.0) -> float:
    """The MinHash estimate below which a candidate is dropped before exact verification: `sigmas` standard
    deviations of the estimate at the threshold below it (0.7, 130 permutations, 3 sigma -> 0.58: a pair at
    the threshold is dropped with probability ~0.0014)."""
    return max(0.0, threshold - sigmas * math.sqrt(threshold * (1.0 - threshold) / num_perm))


def verify(tok: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, threshold: float, *,
           sig: np.ndarray | None = None, sigmas: float = 3.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The candidate pairs whose exact Jaccard (of their shingle sets) reaches `threshold`: (pairs (m, 2),
    similarity (m,), counts). With signatures, a pair whose MinHash estimate is more than `sigmas` standard
    deviations below the threshold is dropped first (`prefilter_estimate`); no estimate makes an edge."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    stats: dict = {"lsh_pairs": len(pairs)}
    if sig is not None and len(pairs):
        est = prefilter_estimate(threshold, sig.shape[1], sigmas)
        need = math.ceil(est * sig.shape[1] - 1e-9)
        pairs = pairs[signature_agreement(sig, pairs) >= need]
        stats["prefilter_estimate"] = round(est, 4)
    stats["candidates"] = len(pairs)
    sim = jaccard(tok, offsets, pairs)
    ok = sim >= threshold - 1e-12
    stats["near_pairs"] = int(ok.sum())
    stats["candidates_rejected"] = int((~ok).sum())
    return pairs[ok], sim[ok], stats


def lsh_candidates(tok: np.ndarray, offsets: np.ndarray, *, bands: int, rows: int, seed: int = 1,
                   max_bucket: int = 100, threshold: float = 0.7, sigmas: float = 3.0) -> tuple[np.ndarray, dict]:
    """Candidate document pairs (a < b, int64 (m, 2)) from MinHash LSH over the shingles, kept when their
    MinHash estimate is within `sigmas` standard deviations of the threshold. Empty documents are never
    candidates. (The first stages of `find_duplicates`, for callers that verify on their own.)"""
    valid = offsets[1:] > offsets[:-1]
    sig = minhash_signatures(tok, offsets, bands * rows, seed)
    pairs = candidate_pairs_from_keys(band_keys(sig, bands, rows), max_bucket=max_bucket, valid=valid)
    stats = {"lsh_docs": int(valid.sum()), "lsh_flagged": n_docs(pairs), "lsh_pairs": len(pairs)}
    if len(pairs):
        est = prefilter_estimate(threshold, bands * rows, sigmas)
        pairs = pairs[signature_agreement(sig, pairs) >= math.ceil(est * bands * rows - 1e-9)]
        stats["prefilter_estimate"] = round(est, 4)
    stats["candidates"] = len(pairs)
    return pairs, stats


def n_docs(pairs: np.ndarray) -> int:
    """Distinct rows in a pair list."""
    if not len(pairs):
        return 0
    seen = np.zeros(int(pairs.max()) + 1, dtype=bool)
    seen[pairs.ravel()] = True
    return int(seen.sum())


def jaccard(tok: np.ndarray, offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of each document pair (float64, one per pair): with numba,
    a merge of the two sorted distinct sets; without, rows of a sparse binary matrix over the distinct
    shingles, |A & B| being the row-wise product."""
    from scipy.sparse import csr_matrix

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.empty(0, dtype=np.float64)
    docs, inv = np.unique(pairs, return_inverse=True)
    inv = inv.reshape(-1, 2)
    kern = _kernels()
    if kern is not None:   # sorted distinct sets, merged pair by pair
        vals, offs = kern.sorted_sets(tok, offsets.astype(np.int64), docs)
        return kern.jaccard_sorted(vals, offs, inv[:, 0].copy(), inv[:, 1].copy())
    sub_tok, sub_off = _gather(tok, offsets, docs)
    uniq, col = np.unique(sub_tok, return_inverse=True)
    x = csr_matrix((np.ones(len(col), dtype=np.float32), col.astype(np.int64), sub_off),
                   shape=(len(docs), max(1, len(uniq))))
    x.sum_duplicates()                   # a shingle twice in one text counts once
    x.data[:] = 1.0
    size = np.diff(x.indptr).astype(np.float64)
    inter = np.empty(len(pairs), dtype=np.float64)
    step = _PAIR_CHUNK * 4
    for lo in range(0, len(pairs), step):
        a, b = inv[lo:lo + step, 0], inv[lo:lo + step, 1]
        inter[lo:lo + len(a)] = np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel()
    union = size[inv[:, 0]] + size[inv[:, 1]] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # two empty sets: identical


# -- template-aware content (instruction prompts) ------------------------------------------------------
def _words(norm: pl.Series) -> tuple[pl.DataFrame, np.ndarray]:
    """The words of normalised texts in order (doc, w) and the word count of each text."""
    words = pl.DataFrame({"w": norm.fill_null("").str.split(" ")}).with_row_index("doc").explode("w").filter(
        pl.col("w").is_not_null() & (pl.col("w") != ""))
    lens = (np.bincount(words["doc"].to_numpy(), minlength=len(norm)) if words.height
            else np.zeros(len(norm), dtype=np.int64))
    return words, lens


def document_frequency(tok: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct shingle hashes sorted, the number of documents holding each)."""
    doc = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    pairs = np.unique(np.stack([tok, doc.astype(np.uint64)], axis=1), axis=0) if len(tok) else np.empty((0, 2),
                                                                                                       np.uint64)
    vals, df = np.unique(pairs[:, 0], return_counts=True)
    return vals, df


def template_threshold(n_texts: int, config: DedupConfig) -> int:
    """Documents a word n-gram must appear in to count as template text: max(min_df, df share * texts)."""
    return max(config.template_min_df, math.ceil(config.template_df * n_texts))


def strip_templates(norm: pl.Series, config: DedupConfig) -> tuple[pl.Series, dict]:
    """The content of already normalised texts: the words not covered by a template n-gram (a word n-gram in at
    least `template_threshold` texts), in order. A text shorter than n words is one n-gram (all template or all
    content). Returns (content texts, stats)."""
    n = config.template_ngram
    words, lens = _words(norm)
    codes = words["w"].hash(seed=0x5EED).to_numpy().astype(np.uint64)
    tok, offsets = kgrams(codes, lens, n)
    thr = template_threshold(len(norm), config)
    vals, df = document_frequency(tok, offsets)
    tmpl = np.sort(vals[df >= thr])
    stats = {"template_threshold": thr, "template_ngrams": len(tmpl)}
    if not len(tmpl):
        return norm, stats | {"template_words": 0, "texts_without_content": int((lens == 0).sum())}
    pos = np.searchsorted(tmpl, tok)
    hit = tmpl[np.minimum(pos, len(tmpl) - 1)] == tok
    # gram q of doc i starts at word starts[i] + (q - offsets[i]) and spans min(n, lens[i]) words
    starts = np.cumsum(lens) - lens
    doc_of = np.repeat(np.arange(len(lens), dtype=np.int64), np.diff(offsets))
    gstart = starts[doc_of] + (np.arange(len(tok), dtype=np.int64) - offsets[doc_of])
    span = np.minimum(n, lens[doc_of])
    diff = np.zeros(len(codes) + 1, dtype=np.int64)
    np.add.at(diff, gstart[hit], 1)
    np.add.at(diff, gstart[hit] + span[hit], -1)
    covered = np.cumsum(diff[:-1]) > 0
    covered |= _edge_templates(words, lens, n - 1, thr)
    kept = words.filter(pl.Series(~covered)).group_by("doc", maintain_order=True).agg(pl.col("w").str.join(" "))
    content = pl.DataFrame({"doc": np.arange(len(norm), dtype=np.uint32)}).join(
        kept.with_columns(pl.col("doc").cast(pl.UInt32)), on="doc", how="left").sort("doc")["w"].fill_null("")
    stats |= {"template_words": int(covered.sum()), "texts_without_content": int((content == "").sum())}
    return content.alias("content"), stats


def _edge_templates(words: pl.DataFrame, lens: np.ndarray, k_max: int, thr: int) -> np.ndarray:
    """Words of a text's first or last k (< n) words where that prefix or suffix starts or ends at least `thr`
    texts: short template text at the edges ("Comment: {x}") that no n-gram covers."""
    covered = np.zeros(words.height, dtype=bool)
    if k_max < 1 or not words.height:
        return covered
    starts = np.cumsum(lens) - lens
    doc = words["doc"].to_numpy().astype(np.int64)
    pos = np.arange(words.height, dtype=np.int64) - starts[doc]
    rpos = lens[doc] - 1 - pos
    w = words.with_columns(pl.Series("pos", pos), pl.Series("rpos", rpos))
    for k in range(1, k_max + 1):
        for col in ("pos", "rpos"):
            part = w.filter((pl.col(col) < k) & (pl.col("doc").cast(pl.Int64).map_batches(
                lambda d: pl.Series(lens[d.to_numpy()])) > k))
            keys = part.group_by("doc", maintain_order=True).agg(pl.col("w").str.join(" ").alias("key"))
            common = keys.group_by("key").len().filter(pl.col("len") >= thr)["key"]
            if not len(common):
                continue
            docs = keys.filter(pl.col("key").is_in(common.implode()))["doc"].to_numpy().astype(np.int64)
            hit = np.isin(doc, docs) & (w[col].to_numpy() < k)
            covered |= hit
    return covered


def containment_candidates(tok: np.ndarray, offsets: np.ndarray, *, anchors: int = 8, max_df: int = 100,
                           min_size: int = 1) -> np.ndarray:
    """Pairs (a < b) where one text may contain much of the other: each text (of >= `min_size` distinct
    shingles) takes its `anchors` smallest shingle hashes among those held by 2..`max_df` texts (a bottom-k
    sample) and pairs with every text holding one. A text whose shingles are a share c inside another misses
    it only when no anchor is shared: about (1 - c)^anchors."""
    n = len(offsets) - 1
    doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    order = np.lexsort((doc, tok))
    t, d = tok[order], doc[order]
    if not len(t):
        return np.empty((0, 2), dtype=np.int64)
    keep = np.ones(len(t), dtype=bool)
    keep[1:] = (t[1:] != t[:-1]) | (d[1:] != d[:-1])
    t, d = t[keep], d[keep]
    new = np.ones(len(t), dtype=bool)
    new[1:] = t[1:] != t[:-1]
    run = np.cumsum(new) - 1
    run_start = np.flatnonzero(new)
    df = np.diff(np.append(run_start, len(t)))
    size = np.bincount(d, minlength=n)
    ok = (df[run] >= 2) & (df[run] <= max_df) & (size[d] >= min_size)
    at, ad, arun = t[ok], d[ok], run[ok]
    o = np.lexsort((at, ad))
    ad, arun = ad[o], arun[o]
    first = np.ones(len(ad), dtype=bool)
    first[1:] = ad[1:] != ad[:-1]
    rank = np.arange(len(ad)) - np.maximum.accumulate(np.where(first, np.arange(len(ad)), 0))
    sel = rank < anchors
    ad, arun = ad[sel], arun[sel]
    cnt = df[arun]
    if not len(cnt):
        return np.empty((0, 2), dtype=np.int64)
    idx = np.repeat(run_start[arun], cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    a, b = np.repeat(ad, cnt), d[idx]
    m = a != b
    lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
    flat = np.unique(lo * n + hi)
    return np.stack([flat // n, flat % n], axis=1)


def set_overlaps(tok: np.ndarray, offsets: np.ndarray, pairs: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|A & B|, |A|, |B|) of the distinct shingle sets of each pair (int64 arrays, one value per pair)."""
    from scipy.sparse import csr_matrix

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        z = np.empty(0, dtype=np.int64)
        return z, z, z
    docs, inv = np.unique(pairs, return_inverse=True)
    inv = inv.reshape(-1, 2)
    kern = _kernels()
    if kern is not None:
        vals, offs = kern.sorted_sets(tok, offsets.astype(np.int64), docs)
        size = np.diff(offs)
        inter = kern.intersect_sorted(vals, offs, inv[:, 0].copy(), inv[:, 1].copy())
        return inter, size[inv[:, 0]], size[inv[:, 1]]
    sub_tok, sub_off = _gather(tok, offsets, docs)
    uniq, col = np.unique(sub_tok, return_inverse=True)
    x = csr_matrix((np.ones(len(col), dtype=np.float32), col.astype(np.int64), sub_off),
                   shape=(len(docs), max(1, len(uniq))))
    x.sum_duplicates()
    x.data[:] = 1.0
    size = np.diff(x.indptr).astype(np.int64)
    inter = np.empty(len(pairs), dtype=np.int64)
    step = _PAIR_CHUNK * 4
    for lo in range(0, len(pairs), step):
        a, b = inv[lo:lo + step, 0], inv[lo:lo + step, 1]
        inter[lo:lo + len(a)] = np.rint(np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel()).astype(np.int64)
    return inter, size[inv[:, 0]], size[inv[:, 1]]


def contained_pairs(tok: np.ndarray, offsets: np.ndarray, config: DedupConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pairs whose content shingles overlap by >= `config.containment` of the smaller set, which has at least
    `config.min_content` shingles: (pairs, containment, stats)."""
    cand = containment_candidates(tok, offsets, anchors=config.anchors, max_df=config.max_bucket,
                                  min_size=config.min_content)
    inter, sa, sb = set_overlaps(tok, offsets, cand)
    small = np.minimum(sa, sb)
    cont = np.divide(inter, small, out=np.zeros(len(inter)), where=small > 0)
    ok = (small >= config.min_content) & (cont >= config.containment - 1e-12)
    return cand[ok], cont[ok], {"containment_candidates": len(cand), "contained_pairs": int(ok.sum())}


# -- components -----------------------------------------------------------------------------------------
def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component of each of n nodes under the undirected edges (a[i], b[i]); the id is the smallest node
    index in the component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    if n == 0:
        return np.empty(0, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = cc(g, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    return first[labels]


def _near_local(texts_for_shingles: pl.Series, config: DedupConfig, stats: dict, timings: dict, cpu: dict,
                step: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate candidates in-process: shingles -> signatures -> band keys -> prefiltered candidates."""
    bands, rws = config.banding()
    t, c = time.perf_counter(), time.process_time()
    tok, offsets = shingle_hashes(texts_for_shingles, config.shingle, config.shingle_size)
    timings["shingle_s"] = time.perf_counter() - t
    cpu["shingle_s"] = time.process_time() - c
    step("shingle")
    t, c = time.perf_counter(), time.process_time()
    sig = minhash_signatures(tok, offsets, bands * rws, config.seed)
    timings["minhash_s"] = time.perf_counter() - t
    cpu["minhash_s"] = time.process_time() - c
    step("minhash")
    t, c = time.perf_counter(), time.process_time()
    valid = offsets[1:] > offsets[:-1]
    est = prefilter_estimate(config.threshold, bands * rws)
    cand, n_pairs = _candidate_search(band_keys(sig, bands, rws), config.max_bucket, valid, sig,
                                      math.ceil(est * bands * rws - 1e-9))
    del sig
    stats.update({"lsh_docs": int(valid.sum()), "lsh_pairs": n_pairs, "prefilter_estimate": round(est, 4),
                  "lsh_flagged": n_docs(cand)})
    timings["lsh_s"] = time.perf_counter() - t
    cpu["lsh_s"] = time.process_time() - c
    step("lsh")
    return tok, offsets, cand


def _empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "kind": pl.String, "similarity": pl.Float64})


def find_duplicates(texts: pl.Series | Sequence[str], groups: pl.Series | Sequence[str | None] | None = None,
                    config: DedupConfig | None = None, *, near: bool = True,
                    progress: Callable[[str], None] | None = None, engine=None) -> Duplicates:
    """Exact, near-duplicate and group edges over `texts` (row i = texts[i]) and their connected components.
    `engine` ('ray' or a `curation.engine.Engine`): the near-duplicate stage runs on Ray (same pairs)."""
    config = config or DedupConfig()
    step = progress or (lambda name: None)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t0 = t = time.perf_counter()
    c0 = c = time.process_time()
    s = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)
    n = len(s)
    if s.null_count():
        raise InputError(f"{s.null_count()} texts are null (first at row {s.is_null().arg_true()[0]}); "
                         "every record needs a text")
    norm = normalise_series(s)
    rows = pl.DataFrame({"norm": norm, "row": np.arange(n, dtype=np.int64)})
    reps = rows.group_by("norm").agg(pl.col("row").min().alias("rep")).sort("rep")
    rep_of_row = rows.join(reps, on="norm", how="left").sort("row")["rep"].to_numpy()
    timings["normalise_s"] = time.perf_counter() - t
    cpu["normalise_s"] = time.process_time() - c
    step("normalise")
    edges = []
    ex = np.flatnonzero(rep_of_row != np.arange(n))
    if len(ex):
        edges.append(pl.DataFrame({"a": rep_of_row[ex], "b": ex, "kind": "exact", "similarity": 1.0}))
    stats: dict = {"rows": n, "unique_texts": reps.height, "exact_duplicate_rows": len(ex)}
    if near and reps.height >= 2:
        t, c = time.perf_counter(), time.process_time()
        texts_for_shingles = reps["norm"]
        if config.template_aware:
            texts_for_shingles, tstats = strip_templates(reps["norm"], config)
            stats.update(tstats)
        if engine is not None and engine != "local":   # the same core per block on Ray (curation.engine)
            from curation.engine import ray_near_pairs

            tok, offsets, near_pairs, sim, rstats = ray_near_pairs(texts_for_shingles, config, engine)
            stats.update(rstats)
            timings["near_ray_s"] = time.perf_counter() - t
            cpu["near_ray_s"] = time.process_time() - c
            for name in ("shingle", "minhash", "lsh", "verify"):
                step(name)
            t, c = time.perf_counter(), time.process_time()
        else:
            tok, offsets, cand = _near_local(texts_for_shingles, config, stats, timings, cpu, step)
            t, c = time.perf_counter(), time.process_time()
            near_pairs, sim, vstats = verify(tok, offsets, cand, config.threshold)   # prefiltered above
            stats.update({k: v for k, v in vstats.items() if k != "lsh_pairs"})
        rep_rows = reps["rep"].to_numpy()
        if len(near_pairs):
            edges.append(pl.DataFrame({"a": rep_rows[near_pairs[:, 0]], "b": rep_rows[near_pairs[:, 1]],
                                       "kind": "near", "similarity": sim}))
        if config.template_aware and config.containment is not None:
            cpairs, cont, cstats = contained_pairs(tok, offsets, config)
            if len(near_pairs) and len(cpairs):   # pairs already joined by Jaccard keep that edge
                m = len(reps)
                cpairs_key = cpairs[:, 0] * m + cpairs[:, 1]
                new = ~np.isin(cpairs_key, near_pairs[:, 0] * m + near_pairs[:, 1])
                cpairs, cont = cpairs[new], cont[new]
            cstats["contained_pairs"] = len(cpairs)
            stats.update(cstats)
            if len(cpairs):
                edges.append(pl.DataFrame({"a": rep_rows[cpairs[:, 0]], "b": rep_rows[cpairs[:, 1]],
                                           "kind": "contained", "similarity": cont}))
        timings["verify_s"] = time.perf_counter() - t
        cpu["verify_s"] = time.process_time() - c
        step("verify")
    else:
        stats.update({"lsh_docs": 0, "lsh_flagged": 0, "lsh_pairs": 0, "candidates": 0, "near_pairs": 0,
                      "candidates_rejected": 0})
    if groups is not None:
        g = groups if isinstance(groups, pl.Series) else pl.Series("g", list(groups), dtype=pl.String)
        if len(g) != n:
            raise InputError(f"groups has {len(g)} values for {n} texts; give one group (or null) per text")
        gf = pl.DataFrame({"g": g.cast(pl.String), "row": np.arange(n, dtype=np.int64)}).filter(
            pl.col("g").is_not_null())
        gf = gf.with_columns(pl.col("row").min().over("g").alias("rep")).filter(pl.col("row") != pl.col("rep"))
        stats["group_edges"] = gf.height
        if gf.height:
            edges.append(pl.DataFrame({"a": gf["rep"], "b": gf["row"], "kind": "group",
                                       "similarity": pl.Series([None] * gf.height, dtype=pl.Float64)}))
    t, c = time.perf_counter(), time.process_time()
    pairs = pl.concat([e.cast({"a": pl.Int64, "b": pl.Int64, "kind": pl.String, "similarity": pl.Float64})
                       for e in edges]) if edges else _empty_pairs()
    pairs = pairs.with_columns(pl.min_horizontal("a", "b").alias("a"), pl.max_horizontal("a", "b").alias("b"))
    component = connected_components(n, pairs["a"].to_numpy(), pairs["b"].to_numpy())
    timings["components_s"] = time.perf_counter() - t
    cpu["components_s"] = time.process_time() - c
    step("components")
    sizes = np.bincount(component, minlength=n) if n else np.zeros(0, int)
    stats.update({"components": int((sizes > 0).sum()), "largest_component": int(sizes.max()) if n else 0,
                  "rows_in_multi_record_components": int(sizes[sizes > 1].sum()) if n else 0,
                  "config": config.as_dict(), "timings": timings | {"total_s": time.perf_counter() - t0},
                  "cpu_timings": cpu | {"total_s": time.process_time() - c0}})
    log.info("dedup: %d rows, %d unique texts, %d near pairs, %d components", n, reps.height,
             stats["near_pairs"], stats["components"])
    return Duplicates(component=component, pairs=pairs, stats=stats)
