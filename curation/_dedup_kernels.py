"""numba kernels for `curation.dedup` (shingle hashing, exact Jaccard by sorted merge, signature agreement).

Each has a numpy/scipy twin in `curation.dedup` that gives the same result (tests compare them); these are the
fast path, taken when numba imports. Compiled on first use and cached beside this file.
"""

import numpy as np
from numba import njit, prange

_P = np.uint64(0x100000001B3)


@njit(cache=True, inline="always")
def _mix1(x):
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(cache=True, parallel=True)
def kgram_hashes(codes, starts, lens, k, offsets, out):
    """out[offsets[i]:offsets[i+1]] = mixed polynomial hashes of document i's k-grams (whole text if shorter)."""
    p = _P
    pk = np.uint64(1)
    for _ in range(k - 1):
        pk *= p                                   # P^(k-1), wrapping
    for i in prange(len(lens)):
        s = starts[i]
        n = lens[i]
        o = offsets[i]
        if n == 0:
            continue
        if n < k:
            v = np.uint64(0)
            for j in range(n):
                v = v * p + np.uint64(codes[s + j])
            out[o] = _mix1(v)
            continue
        h = np.uint64(0)
        for j in range(k):
            h = h * p + np.uint64(codes[s + j])
        out[o] = _mix1(h)
        for j in range(1, n - k + 1):
            h = (h - np.uint64(codes[s + j - 1]) * pk) * p + np.uint64(codes[s + j + k - 1])
            out[o + j] = _mix1(h)


@njit(cache=True, parallel=True)
def sorted_sets(tok, offsets, docs):
    """The distinct shingles of each of `docs`, sorted: (values, offsets) over len(docs) segments."""
    m = len(docs)
    sizes = np.empty(m, dtype=np.int64)
    for i in prange(m):
        sizes[i] = offsets[docs[i] + 1] - offsets[docs[i]]
    start = np.empty(m + 1, dtype=np.int64)
    start[0] = 0
    for i in range(m):
        start[i + 1] = start[i] + sizes[i]
    buf = np.empty(start[m], dtype=np.uint64)
    counts = np.empty(m, dtype=np.int64)
    for i in prange(m):
        d = docs[i]
        seg = np.sort(tok[offsets[d]:offsets[d + 1]])
        c = 0
        for j in range(len(seg)):
            if j == 0 or seg[j] != seg[j - 1]:
                buf[start[i] + c] = seg[j]
                c += 1
        counts[i] = c
    new_off = np.empty(m + 1, dtype=np.int64)
    new_off[0] = 0
    for i in range(m):
        new_off[i + 1] = new_off[i] + counts[i]
    vals = np.empty(new_off[m], dtype=np.uint64)
    for i in prange(m):
        vals[new_off[i]:new_off[i + 1]] = buf[start[i]:start[i] + counts[i]]
    return vals, new_off


@njit(cache=True, parallel=True)
def jaccard_sorted(vals, offs, a, b):
    """Jaccard of sorted distinct sets a[p] and b[p] (indexes of segments of `vals`); two empty sets: 1."""
    out = np.empty(len(a), dtype=np.float64)
    for p in prange(len(a)):
        i, ie = offs[a[p]], offs[a[p] + 1]
        j, je = offs[b[p]], offs[b[p] + 1]
        na, nb = ie - i, je - j
        inter = 0
        while i < ie and j < je:
            if vals[i] == vals[j]:
                inter += 1
                i += 1
                j += 1
            elif vals[i] < vals[j]:
                i += 1
            else:
                j += 1
        union = na + nb - inter
        out[p] = inter / union if union > 0 else 1.0
    return out


@njit(cache=True, parallel=True)
def agreement(sig, a, b):
    """Number of equal signature positions of rows a[p] and b[p]."""
    out = np.empty(len(a), dtype=np.int32)
    w = sig.shape[1]
    for p in prange(len(a)):
        c = 0
        for q in range(w):
            if sig[a[p], q] == sig[b[p], q]:
                c += 1
        out[p] = c
    return out


@njit(cache=True, parallel=True)
def band_keys(sig, bands, rows):
    """keys[i, b] = the mixed polynomial hash of row i's band b (signature columns b*rows .. b*rows+rows-1)."""
    n = sig.shape[0]
    out = np.empty((bands, n), dtype=np.uint64)
    for i in prange(n):
        for b in range(bands):
            key = np.uint64(0)
            for q in range(b * rows, (b + 1) * rows):
                key = _mix1(key * _P + np.uint64(sig[i, q]))
            out[b, i] = key
    return out


@njit(cache=True, parallel=True)
def minhash(tok, offsets, a, b, out):
    """out[i, p] = min over document i's shingle hashes h of the top 32 bits of (a[p] * h + b[p]) mod 2^64
    (multiply-shift universal hashing; a odd). A document without shingles keeps 0xFFFFFFFF everywhere."""
    n = len(offsets) - 1
    m = len(a)
    for i in prange(n):
        row = np.full(m, np.uint32(0xFFFFFFFF), dtype=np.uint32)
        for j in range(offsets[i], offsets[i + 1]):
            h = tok[j]
            for p in range(m):
                v = np.uint32((a[p] * h + b[p]) >> np.uint64(32))
                row[p] = min(row[p], v)
        out[i, :] = row


@njit(cache=True)
def _run_pairs(packed, mask, max_bucket, out, count_only):
    """Pairs (a < b, as a * n + b is formed by the caller) of row indexes in runs of equal high bits of the
    sorted `packed` (key high bits | row index low bits): each row with its next `max_bucket - 1` run members.
    Returns the number of pairs; fills out[:, 0/1] unless count_only."""
    n = len(packed)
    c = 0
    i = 0
    hi = ~mask
    while i < n:
        j = i + 1
        while j < n and (packed[j] & hi) == (packed[i] & hi):
            j += 1
        if j - i >= 2:
            for x in range(i, j):
                end = min(j, x + max_bucket)
                for y in range(x + 1, end):
                    if not count_only:
                        out[c, 0] = np.int64(packed[x] & mask)
                        out[c, 1] = np.int64(packed[y] & mask)
                    c += 1
        i = j
    return c



@njit(cache=True, parallel=True)
def intersect_sorted(vals, offs, a, b):
    """|A & B| of sorted distinct sets a[p] and b[p] (indexes of segments of `vals`), one per pair."""
    out = np.empty(len(a), dtype=np.int64)
    for p in prange(len(a)):
        i, ie = offs[a[p]], offs[a[p] + 1]
        j, je = offs[b[p]], offs[b[p] + 1]
        inter = 0
        while i < ie and j < je:
            if vals[i] == vals[j]:
                inter += 1
                i += 1
                j += 1
            elif vals[i] < vals[j]:
                i += 1
            else:
                j += 1
        out[p] = inter
    return out
