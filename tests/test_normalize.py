import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.normalize import hash_texts, input_hash, normalise, normalise_series


def test_examples():
    assert normalise("  Hello,   WORLD!! ") == "hello world"
    assert normalise("Straße\ufeff") == "strasse"
    assert normalise("ﬁne\u200b“quotes”") == "finequotes"
    assert input_hash("Check out my channel!") == input_hash("check out my channel")
    assert input_hash("a") != input_hash("b") and len(input_hash("a")) == 16


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=20))
def test_vectorised_path_equals_reference(texts):
    assert normalise_series(pl.Series(texts, dtype=pl.String)).to_list() == [normalise(t) for t in texts]
    assert hash_texts(pl.Series(texts, dtype=pl.String)).to_list() == [input_hash(t) for t in texts]


def test_duckdb_md5_matches(store):
    from tests.helpers import make_dataset

    make_dataset(store, "d", ["Some Text!"])
    assert store.one("SELECT input_hash FROM records") == input_hash("some text")


def test_casefold_table_matches_python():
    import sys

    from curation._casefold import FOLD

    fold = {}
    for i in range(0x80, sys.maxunicode + 1):
        low = chr(i).lower()
        if low != low.casefold() and low not in fold:
            fold[low] = low.casefold()
    assert FOLD == fold
