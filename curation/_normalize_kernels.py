"""numba kernels for `curation.normalize`: the exact normalisation of rows that are ASCII (plus U+FEFF, which
YouTube appends), straight on an Arrow string array's buffers, and the merge with the rows that took the full
Unicode path. Compiled on first use and cached beside this file; `curation.normalize` has a polars twin that gives
the same result (tests compare them).

For an ASCII row NFKC is the identity and case folding is ASCII lower-casing, so `normalise` reduces to: lower-case
A-Z, drop ASCII punctuation (category P) and U+FEFF (Cf), collapse runs of [\\t\\n\\v\\f\\r ] to one space, strip.
"""

from numba import njit, prange

KEEP, DROP, SPACE = 0, 1, 2


@njit(cache=True, parallel=True, nogil=True)
def ascii_normalise(data, offsets, cls, lower, out, out_len):
    """Row i is data[offsets[i]:offsets[i + 1]]. A row with a non-ASCII byte other than U+FEFF's gets
    out_len[i] = -1 (it needs the Unicode path); any other row is normalised into out[offsets[i]:] and out_len[i]
    is its length in bytes (never more than the input's)."""
    for i in prange(len(offsets) - 1):
        s = offsets[i]
        e = offsets[i + 1]
        o = s
        pending = False
        simple = True
        j = s
        while j < e:
            b = data[j]
            if b >= 128:
                if b == 0xEF and j + 2 < e and data[j + 1] == 0xBB and data[j + 2] == 0xBF:
                    j += 3
                    continue
                simple = False
                break
            c = cls[b]
            if c == SPACE:
                pending = o > s
            elif c == KEEP:
                if pending:
                    out[o] = 32
                    o += 1
                    pending = False
                out[o] = lower[b]
                o += 1
            j += 1
        out_len[i] = o - s if simple else -1


@njit(cache=True, parallel=True, nogil=True)
def merge(out, offsets, out_len, slow_data, slow_offsets, slow_row, new_offsets, dest):
    """dest[new_offsets[i]:new_offsets[i + 1]] = the normalised row i: from `out` where out_len[i] >= 0, else row
    slow_row[i] of the slow path's (slow_data, slow_offsets)."""
    for i in prange(len(out_len)):
        d = new_offsets[i]
        if out_len[i] >= 0:
            s = offsets[i]
            dest[d:d + out_len[i]] = out[s:s + out_len[i]]
        else:
            r = slow_row[i]
            dest[d:new_offsets[i + 1]] = slow_data[slow_offsets[r]:slow_offsets[r + 1]]
