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
import re
import sys
import unicodedata

import polars as pl

_WS_CLASS = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
_WS = re.compile(_WS_CLASS)


@functools.cache
def _tables() -> tuple[dict[int, None], dict[str, str]]:
    drop, fold = {}, {}
    for i in range(sys.maxunicode + 1):
        c = chr(i)
        cat = unicodedata.category(c)
        if cat[0] == "P" or cat == "Cf":
            drop[i] = None
        low = c.lower()
        if low.casefold() != low and low not in fold:
            fold[low] = low.casefold()
    return drop, fold


def normalise(text: str) -> str:
    drop, fold = _tables()
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(fold.get(ch, ch) for ch in text) if not text.isascii() else text
    return _WS.sub(" ", text.translate(drop)).strip(" ")


def input_hash(text: str) -> str:
    return hashlib.md5(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def normalise_expr(col: str | pl.Expr) -> pl.Expr:
    _, fold = _tables()
    e = pl.col(col) if isinstance(col, str) else col
    return (
        e.str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_many(list(fold), list(fold.values()))
        .str.replace_all(r"[\p{P}\p{Cf}]+", "")
        .str.replace_all(_WS_CLASS, " ")
        .str.strip_chars(" ")
    )


def normalise_series(texts: pl.Series) -> pl.Series:
    return pl.LazyFrame({"t": texts}).select(normalise_expr("t")).collect(engine="streaming").to_series()


def hash_texts(texts: pl.Series) -> pl.Series:
    """`input_hash` of every text (nulls stay null), vectorised."""
    norm = normalise_series(texts)
    return pl.Series("input_hash", [None if s is None else hashlib.md5(s.encode()).hexdigest()[:16] for s in norm])
