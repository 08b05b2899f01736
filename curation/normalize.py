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

import hashlib
import re
import unicodedata

import polars as pl
import regex

from curation._casefold import FOLD

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


def normalise_series(texts: pl.Series) -> pl.Series:
    """Vectorised `normalise`: rows that need Unicode work take the full path, the rest a cheap exact one."""
    lf = pl.LazyFrame({"t": texts}).with_row_index("i")
    simple = pl.col("t").str.contains(_SIMPLE)
    fast = lf.filter(simple).select(
        "i", pl.col("t").str.to_lowercase().str.replace_all(_SIMPLE_DROP, "")
        .str.replace_all(r"[\t\n\x0b\x0c\r ]+", " ").str.strip_chars(" "))
    slow = lf.filter(~simple | pl.col("t").is_null()).select("i", normalise_expr("t"))
    out = pl.concat([fast, slow]).sort("i").collect(engine="streaming")
    return out["t"].alias(texts.name)


def hash_texts(texts: pl.Series) -> pl.Series:
    """`input_hash` of every text (nulls stay null), vectorised."""
    norm = normalise_series(texts)
    return pl.Series("input_hash", [None if s is None else hashlib.md5(s.encode()).hexdigest()[:16] for s in norm])
