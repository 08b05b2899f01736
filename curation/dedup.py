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
import itertools
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
_SIG_CHUNK = 1 << 16      # signatures read back from rensa at a time


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

    @property
    def shingle_size(self) -> int:
        return self.k if self.k is not None else _DEFAULT_K[self.shingle]

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return lsh_params(self.threshold, self.target_recall, self.max_perm)

    def as_dict(self) -> dict:
        bands, rows = self.banding()
        return {"threshold": self.threshold, "shingle": self.shingle, "k": self.shingle_size, "bands": bands,
                "rows": rows, "num_perm": bands * rows, "max_bucket": self.max_bucket, "seed": self.seed}


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


def _kgrams(codes: np.ndarray, lens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
        return _kgrams(codes, lens, k)
    if kind == "word":
        words = pl.DataFrame({"w": s.str.split(" ")}).with_row_index("doc").explode("w").filter(
            pl.col("w").is_not_null() & (pl.col("w") != ""))
        lens = np.bincount(words["doc"].to_numpy(), minlength=len(s)) if words.height else np.zeros(len(s), int)
        codes = words["w"].hash(seed=0x5EED).to_numpy().astype(np.uint64)
        return _kgrams(codes, lens, k)
    raise InputError(f"shingle {kind!r}: unknown; valid: {', '.join(SHINGLES)}")


# -- MinHash LSH candidates -----------------------------------------------------------------------------
def _rensa():
    try:
        import rensa
    except ImportError as e:  # pragma: no cover - rensa is a dependency
        raise InputError("near-duplicate detection needs `rensa` (pip install rensa)") from e
    return rensa


def _digests(tok: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int):
    rensa = _rensa()
    return rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(tok, dtype=np.uint64), np.ascontiguousarray(offsets, dtype=np.uint64), num_perm, seed)


def _gather(tok: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shingles of a subset of documents, re-packed (tokens, offsets)."""
    lens = offsets[docs + 1] - offsets[docs]
    sub_off = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lens, out=sub_off[1:])
    idx = np.repeat(offsets[docs] - sub_off[:-1], lens) + np.arange(sub_off[-1], dtype=np.int64)
    return tok[idx], sub_off


def _band_pairs(sig: np.ndarray, bands: int, rows: int, max_bucket: int, min_estimate: float) -> np.ndarray:
    """Row pairs (a < b) that share a band of the signature matrix and whose MinHash estimate of Jaccard is at
    least `min_estimate`. A bucket larger than `max_bucket` pairs each row with its next `max_bucket - 1`
    neighbours only (sorted-neighbourhood), which keeps it connected."""
    out = []
    n = sig.shape[0]
    need = math.ceil(min_estimate * sig.shape[1] - 1e-9)
    kern = _kernels()
    if kern is not None:
        all_keys = kern.band_keys(sig, bands, rows)
    for b in range(bands):
        if kern is not None:
            key = all_keys[b]
        else:
            with np.errstate(over="ignore"):
                key = np.zeros(n, dtype=np.uint64)
                for c in sig[:, b * rows:(b + 1) * rows].T:
                    key = _mix(key * _P + c.astype(np.uint64))
        order = np.argsort(key)
        ks = key[order]
        new = np.empty(n, dtype=bool)
        new[0] = True
        new[1:] = ks[1:] != ks[:-1]
        bucket = np.cumsum(new) - 1
        size = np.bincount(bucket)[bucket]
        keep = size >= 2
        members, mb, msize = order[keep], bucket[keep], size[keep]
        within = np.lexsort((members, mb))   # rows of a bucket in row order: windows do not depend on the sort
        members, mb, msize = members[within], mb[within], msize[within]
        for d in range(1, max_bucket):
            if len(members) <= d:
                break
            same = mb[:-d] == mb[d:]
            if not same.any():
                break
            a, c = members[:-d][same], members[d:][same]
            out.append(np.minimum(a, c).astype(np.int64) * n + np.maximum(a, c))
            big = msize > d + 1  # buckets that still have pairs at distance d+1
            members, mb, msize = members[big], mb[big], msize[big]
        if len(out) > 1 and sum(len(x) for x in out) > _PAIR_CHUNK * 256:   # bound memory
            out = [_estimate_filter(sig, np.concatenate(out), need, kern)]
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    keys = _estimate_filter(sig, np.concatenate(out), need, kern)
    return np.stack([keys // n, keys % n], axis=1)


def _estimate_filter(sig: np.ndarray, keys: np.ndarray, need: int, kern) -> np.ndarray:
    """The distinct pair keys (a * n + b) whose signatures agree in at least `need` positions: the filter runs
    first (pairs repeat across bands, and most fail it), then the survivors are de-duplicated."""
    n = sig.shape[0]
    keep = np.zeros(len(keys), dtype=bool)
    step = _PAIR_CHUNK * 8
    for lo in range(0, len(keys), step):
        aa, cc = keys[lo:lo + step] // n, keys[lo:lo + step] % n
        if kern is not None:
            agree = kern.agreement(sig, aa, cc)
        else:
            agree = np.concatenate([(sig[aa[i:i + _PAIR_CHUNK]] == sig[cc[i:i + _PAIR_CHUNK]]).sum(axis=1)
                                    for i in range(0, len(aa), _PAIR_CHUNK)])
        keep[lo:lo + len(aa)] = agree >= need
    return np.unique(keys[keep])


def prefilter_estimate(threshold: float, num_perm: int, sigmas: float = 3.0) -> float:
    """The MinHash estimate below which a candidate is dropped before exact verification: `sigmas` standard
    deviations of the estimate at the threshold below it (0.7, 130 permutations, 3 sigma -> 0.58: a pair at
    the threshold is dropped with probability ~0.0014)."""
    return max(0.0, threshold - sigmas * math.sqrt(threshold * (1.0 - threshold) / num_perm))


def lsh_candidates(tok: np.ndarray, offsets: np.ndarray, *, bands: int, rows: int, seed: int = 1,
                   max_bucket: int = 100, threshold: float = 0.7, sigmas: float = 3.0) -> tuple[np.ndarray, dict]:
    """Candidate document pairs (a < b, int64 (m, 2)) from MinHash LSH (rensa) over the shingles.

    rensa computes the signatures and flags the documents that share any band with another one (in Rust, over
    all documents); only those are read back and banded again here to name the pairs, and a pair is kept when
    its MinHash estimate is within `sigmas` standard deviations of the threshold (`prefilter_estimate`).
    Empty documents are never candidates."""
    rensa = _rensa()
    num_perm = bands * rows
    docs = np.flatnonzero(offsets[1:] > offsets[:-1])
    stats = {"lsh_docs": len(docs), "lsh_flagged": 0, "candidates": 0}
    if len(docs) < 2:
        return np.empty((0, 2), dtype=np.int64), stats
    sub_tok, sub_off = _gather(tok, offsets, docs) if len(docs) < len(offsets) - 1 else (tok, offsets)
    mat = _digests(sub_tok, sub_off, num_perm, seed)
    del sub_tok
    lsh = rensa.RMinHashLSH(threshold, num_perm, bands)
    flags = np.fromiter(lsh.query_duplicate_flags_matrix_one_shot(mat), dtype=bool, count=len(docs))
    del mat
    flagged = docs[flags]
    stats["lsh_flagged"] = len(flagged)
    if len(flagged) < 2:
        return np.empty((0, 2), dtype=np.int64), stats
    sig = np.empty((len(flagged), num_perm), dtype=np.uint32)
    for lo in range(0, len(flagged), _SIG_CHUNK):   # read the flagged signatures back, a chunk at a time
        part = flagged[lo:lo + _SIG_CHUNK]
        f_tok, f_off = _gather(tok, offsets, part)
        rows_ = _digests(f_tok, f_off, num_perm, seed).to_rows()
        sig[lo:lo + len(part)] = np.fromiter(itertools.chain.from_iterable(rows_), dtype=np.uint32,
                                             count=len(part) * num_perm).reshape(len(part), num_perm)
    est = prefilter_estimate(threshold, num_perm, sigmas)
    pairs = flagged[_band_pairs(sig, bands, rows, max_bucket, est)]
    stats["candidates"] = len(pairs)
    stats["prefilter_estimate"] = round(est, 4)
    return pairs, stats


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


def _empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "kind": pl.String, "similarity": pl.Float64})


def find_duplicates(texts: pl.Series | Sequence[str], groups: pl.Series | Sequence[str | None] | None = None,
                    config: DedupConfig | None = None, *, near: bool = True,
                    progress: Callable[[str], None] | None = None) -> Duplicates:
    """Exact, near-duplicate and group edges over `texts` (row i = texts[i]) and their connected components."""
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
        bands, rws = config.banding()
        tok, offsets = shingle_hashes(reps["norm"], config.shingle, config.shingle_size)
        timings["shingle_s"] = time.perf_counter() - t
        cpu["shingle_s"] = time.process_time() - c
        step("shingle")
        t, c = time.perf_counter(), time.process_time()
        cand, lstats = lsh_candidates(tok, offsets, bands=bands, rows=rws, seed=config.seed,
                                      max_bucket=config.max_bucket, threshold=config.threshold)
        stats.update(lstats)
        timings["lsh_s"] = time.perf_counter() - t
        cpu["lsh_s"] = time.process_time() - c
        step("lsh")
        t, c = time.perf_counter(), time.process_time()
        sim = jaccard(tok, offsets, cand)
        ok = sim >= config.threshold - 1e-12
        stats["near_pairs"] = int(ok.sum())
        stats["candidates_rejected"] = int((~ok).sum())
        rep_rows = reps["rep"].to_numpy()
        if ok.any():
            edges.append(pl.DataFrame({"a": rep_rows[cand[ok, 0]], "b": rep_rows[cand[ok, 1]], "kind": "near",
                                       "similarity": sim[ok]}))
        timings["verify_s"] = time.perf_counter() - t
        cpu["verify_s"] = time.process_time() - c
        step("verify")
    else:
        stats.update({"lsh_docs": 0, "lsh_flagged": 0, "candidates": 0, "near_pairs": 0, "candidates_rejected": 0})
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
