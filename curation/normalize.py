"""Text normalisation and `input_hash`: one definition drives de-duplication, leakage checks and idempotent
pushes to Label Studio.

normalise(text) = NFKC → case folding → drop punctuation (Unicode categories P*) and format characters (Cf:
zero-width spaces, the BOM YouTube appends) → collapse whitespace runs to one space → strip.
Case folding is Unicode lower-casing plus the few full folds that differ from it (ß → ss, ς → σ, ...).
`input_hash` is the first 16 hex digits of the MD5 of the normalised text's UTF-8 (DuckDB's `md5` computes the
same in SQL, multi-threaded). It identifies content; it is not a security hash.

`normalise_series` is the vectorised path (polars, multi-threaded); `normalise` is the reference and the two
agree exactly (a property test checks it).
"""

import functools
import hashlib
import logging
import re
import unicodedata
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import regex

from curation._casefold import FOLD

log = logging.getLogger(__name__)

_WS_CLASS = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
_WS = re.compile(_WS_CLASS)
_DROP = r"[\p{P}\p{Cf}]+"  # the same class in the `regex` module and in polars (Rust regex)
_DROP_RE = regex.compile(_DROP)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    if not text.isascii():
        text = "".join(FOLD.get(ch, ch) for ch in text)
    return _WS.sub(" ", _DROP_RE.sub("", text)).strip(" ")


def input_hash(text: str) -> str:
    return hashlib.md5(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def normalise_expr(col: str | pl.Expr) -> pl.Expr:
    e = pl.col(col) if isinstance(col, str) else col
    return (
        e.str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_many(list(FOLD), list(FOLD.values()))
        .str.replace_all(_DROP, "")
        .str.replace_all(_WS_CLASS, " ")
        .str.strip_chars(" ")
    )


# Rows of ASCII (plus U+FEFF, which YouTube appends) need no NFKC or case-fold table: the same result, cheaper.
_SIMPLE = r"^[\x00-\x7f\ufeff]*$"
_SIMPLE_DROP = "[" + "".join(regex.escape(chr(i)) for i in range(128) if _DROP_RE.fullmatch(chr(i))) + "\ufeff]+"

USE_NUMBA = True  # the numba kernel (`curation._normalize_kernels`) when numba imports; False: the polars twin


@functools.cache
def _kernels() -> Any:
    try:
        from curation import _normalize_kernels
    except ImportError as e:  # numba missing: the polars path gives the same result, slower
        log.warning("numba is not available (%s); text normalisation uses the slower polars path", e)
        return None
    return _normalize_kernels


@functools.cache
def _byte_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per ASCII byte: its class (keep / drop / space) for the kernel, and its lower-case form."""
    from curation._normalize_kernels import DROP, KEEP, SPACE

    cls = np.full(256, KEEP, dtype=np.uint8)
    for i in range(128):
        if _DROP_RE.fullmatch(chr(i)):
            cls[i] = DROP
        elif _WS.fullmatch(chr(i)):
            cls[i] = SPACE
    lower = np.array([ord(chr(i).lower()) if i < 128 else i for i in range(256)], dtype=np.uint8)
    return cls, lower


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The data bytes and the `len(arr) + 1` offsets of a string / large_string array (offsets index the data)."""
    _, off, data = arr.buffers()
    dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(off, dtype=dtype)[arr.offset:arr.offset + len(arr) + 1]
    if data is None:
        return np.zeros(0, dtype=np.uint8), offsets
    return np.frombuffer(data, dtype=np.uint8), offsets


def normalise_arrow(arr: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """Vectorised `normalise` of an Arrow string array (nulls stay null): ASCII rows by the numba kernel straight
    on the Arrow buffers, the rest by the polars expression; no copy into another frame library for the former."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    k = _kernels() if USE_NUMBA else None
    if k is None:
        return normalise_series(pl.Series("t", arr)).to_arrow(compat_level=pl.CompatLevel.oldest())
    n = len(arr)
    data, offsets = _buffers(arr)
    cls, lower = _byte_tables()
    out = np.empty(len(data), dtype=np.uint8)
    out_len = np.empty(n, dtype=np.int64)
    k.ascii_normalise(data, offsets, cls, lower, out, out_len)
    valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    slow = out_len < 0
    if valid is not None:
        slow &= valid
        out_len[~valid] = 0
    slow_idx = np.flatnonzero(slow)
    slow_row = np.zeros(n, dtype=np.int64)
    if len(slow_idx):
        done = pl.Series("t", arr.take(pa.array(slow_idx))).to_frame().select(normalise_expr("t"))["t"]
        slow_arr = done.to_arrow(compat_level=pl.CompatLevel.oldest())
        if isinstance(slow_arr, pa.ChunkedArray):
            slow_arr = slow_arr.combine_chunks()
        slow_data, slow_offsets = _buffers(slow_arr.cast(pa.large_string()))
        out_len[slow_idx] = np.diff(slow_offsets)
        slow_row[slow_idx] = np.arange(len(slow_idx))
    else:
        slow_data, slow_offsets = np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_len, out=new_offsets[1:])
    dest = np.empty(int(new_offsets[-1]), dtype=np.uint8)
    with_slow = np.where(slow, -1, out_len) if len(slow_idx) else out_len
    k.merge(out, offsets, with_slow, slow_data, slow_offsets, slow_row, new_offsets, dest)
    validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(new_offsets), pa.py_buffer(dest), validity,
                                            null_count=arr.null_count)


def _normalise_series_polars(texts: pl.Series) -> pl.Series:
    lf = pl.LazyFrame({"t": texts}).with_row_index("i")
    simple = pl.col("t").str.contains(_SIMPLE)
    fast = lf.filter(simple).select(
        "i", pl.col("t").str.to_lowercase().str.replace_all(_SIMPLE_DROP, "")
        .str.replace_all(r"[\t\n\x0b\x0c\r ]+", " ").str.strip_chars(" "))
    slow = lf.filter(~simple | pl.col("t").is_null()).select("i", normalise_expr("t"))
    out = pl.concat([fast, slow]).sort("i").collect(engine="streaming")
    return out["t"].alias(texts.name)


def normalise_series(texts: pl.Series) -> pl.Series:
    """Vectorised `normalise`: rows that need Unicode work take the full path, the rest a cheap exact one."""
    if USE_NUMBA and _kernels() is not None and texts.dtype == pl.String:
        return pl.Series(texts.name, normalise_arrow(texts.to_arrow(compat_level=pl.CompatLevel.oldest())))
    return _normalise_series_polars(texts)


def hash_texts(texts: pl.Series) -> pl.Series:
    """`input_hash` of every text (nulls stay null), vectorised."""
    norm = normalise_series(texts)
    return pl.Series("input_hash", [None if s is None else hashlib.md5(s.encode()).hexdigest()[:16] for s in norm])
