import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import InputError
from curation.ingest import FieldMap, ingest
from curation.normalize import input_hash
from tests.conftest import DATA

MALFORMED = Path(__file__).parent / "data" / "malformed"
LABELS = ["ham", "spam"]
F = FieldMap(id="id", label="label")


def quarantined(store, result):
    return sorted(store.query("SELECT row, field, rule FROM store.quarantine WHERE ingest_id = ?", [result.ingest_id]))


@pytest.mark.parametrize("name, read, accepted, expected", [
    ("ragged.csv", 4, 3, [(3, None, "row_shape")]),
    ("blank_text.csv", 5, 2, [(2, "text", "required"), (3, "text", "not_blank"), (4, "text", "not_blank")]),
    ("bad_label.csv", 5, 3, [(2, "label", "in_label_set"), (4, "label", "in_label_set")]),
    ("dup_ids.csv", 4, 3, [(3, "source_id", "unique")]),
    ("mixed_encoding.csv", 3, 2, [(2, "text", "valid_utf8")]),
    ("multiline.csv", 3, 2, [(2, None, "row_shape")]),
    ("too_long.csv", 2, 1, [(2, "text", "max_length")]),
    ("header_only.csv", 0, 0, []),
])
def test_malformed_rows_are_quarantined_with_row_field_rule(store, name, read, accepted, expected):
    r = ingest(store, MALFORMED / name, "d", fields=F, labels=LABELS)
    assert (r.rows_read, r.accepted) == (read, accepted)
    assert r.rows_read == r.accepted + r.quarantined
    assert quarantined(store, r) == expected
    msgs = [m for (m,) in store.query("SELECT message FROM store.quarantine")]
    assert all(len(m) > 20 for m in msgs)  # a message says what is wrong and what to do


def test_jsonl_faults(store):
    r = ingest(store, MALFORMED / "bad.jsonl", "d", fields=FieldMap(label="label"), labels=LABELS)
    assert (r.rows_read, r.accepted, r.quarantined) == (7, 2, 5)
    assert [q[2] for q in quarantined(store, r)] == ["row_shape", "row_shape", "row_shape", "valid_utf8", "not_blank"]
    meta = store.one("SELECT meta FROM store.records WHERE text = 'last'")
    assert json.loads(meta) == {"extra": {"k": [1]}}


def test_accepted_rows_keep_their_row_numbers_around_rejects(store):
    ingest(store, MALFORMED / "multiline.csv", "d", fields=F, labels=LABELS)
    rows = store.query("SELECT source_id, source_row, text FROM store.records ORDER BY source_row")
    assert rows == [("1", 1, "line one\nline two"), ("3", 3, "after multiline")]


def test_labels_by_name_or_index_and_provenance(store):
    r = ingest(store, MALFORMED / "bad_label.csv", "d", fields=F, labels=LABELS)
    got = dict(store.query("SELECT r.source_id, g.label FROM store.records r LEFT JOIN store.gold_labels g "
                           "USING (record_id)"))
    assert got == {"1": "ham", "3": "spam", "5": None}
    assert store.query("SELECT DISTINCT source FROM store.gold_labels") == [("imported",)]
    assert r.labeled == 2


@pytest.mark.parametrize("name, needle", [
    ("utf16.csv", "UTF-16"), ("latin1_only.csv", "iconv"), ("not_csv.csv", "not readable as CSV"),
    ("missing_column.csv", "--text-field"), ("empty.csv", "empty"), ("nope.csv", "no such file"),
])
def test_unreadable_files_raise_and_change_nothing(store, name, needle):
    ingest(store, MALFORMED / "ragged.csv", "keep", fields=F, labels=LABELS)
    before = store.query("SELECT count(*) FROM store.records UNION ALL SELECT count(*) FROM store.datasets "
                         "UNION ALL SELECT count(*) FROM store.quarantine")
    with pytest.raises(InputError) as e:
        ingest(store, MALFORMED / name, "d", fields=F, labels=LABELS)
    assert needle in str(e.value) and name in str(e.value)
    after = store.query("SELECT count(*) FROM store.records UNION ALL SELECT count(*) FROM store.datasets "
                        "UNION ALL SELECT count(*) FROM store.quarantine")
    assert before == after


def test_youtube_csv_with_field_mapping(store):
    r = ingest(store, DATA / "raw" / "Youtube01-Psy.csv", "yt",
               fields=FieldMap(text="CONTENT", label="CLASS", id="COMMENT_ID", group="AUTHOR"), labels=LABELS)
    assert (r.rows_read, r.accepted, r.quarantined) == (350, 350, 0)
    row = store.frame("SELECT * FROM main.records WHERE source_id = 'LZQPQhLyRh80UYxNuaDWhIGQYNQ96IuCg-AYWqNPjpU'")
    assert row["group"][0] == "Julius NM" and row["label"][0] == "spam"
    assert json.loads(row["meta"][0]) == {"DATE": "2013-11-07T06:20:48"}
    assert row["input_hash"][0] == input_hash(row["text"][0])


def test_excluded_fields_are_not_stored(store, tmp_path):
    ingest(store, DATA / "raw" / "Youtube01-Psy.csv", "yt",
           fields=FieldMap(text="CONTENT", id="COMMENT_ID", exclude=("CLASS", "DATE")), labels=LABELS)
    assert {tuple(json.loads(m)) for (m,) in store.query("SELECT meta FROM store.records")} == {("AUTHOR",)}
    (tmp_path / "x.jsonl").write_text('{"text": "a", "secret": 1, "keep": 2}\n')
    ingest(store, tmp_path / "x.jsonl", "j", fields=FieldMap(exclude=("secret",)), labels=LABELS)
    assert json.loads(store.one("SELECT meta FROM store.records WHERE dataset = 'j'")) == {"keep": 2}


def test_reingest_same_file_quarantines_duplicate_ids(store):
    path = DATA / "raw" / "Youtube01-Psy.csv"
    fields = FieldMap(text="CONTENT", label="CLASS", id="COMMENT_ID")
    ingest(store, path, "yt", fields=fields, labels=LABELS)
    r = ingest(store, path, "yt", fields=fields)
    assert (r.accepted, r.quarantined) == (0, 350)
    assert store.one("SELECT count(*) FROM store.records") == 350


def test_duplicates_counted_by_normalised_hash(store):
    r = ingest(store, DATA / "wrench" / "youtube.jsonl", "w", fields=FieldMap(id="id", label="label"), labels=LABELS)
    assert r.accepted == 1956
    distinct = store.one("SELECT count(DISTINCT input_hash) FROM store.records")
    assert r.duplicates == 1956 - distinct > 0


def test_label_set_conflict_and_missing_declaration(store):
    ingest(store, MALFORMED / "ragged.csv", "d", fields=F, labels=LABELS)
    with pytest.raises(InputError, match="has labels"):
        ingest(store, MALFORMED / "ragged.csv", "d", fields=F, labels=["spam", "ham"])
    with pytest.raises(InputError, match="--labels"):
        ingest(store, MALFORMED / "ragged.csv", "new", fields=F)


def test_parquet_and_hf_datasets(store, tmp_path):
    import datasets

    df = pl.DataFrame({"body": ["a b", "c", "  "], "y": [0, 1, 1], "n": [1.5, 2.0, 3.0]})
    df.write_parquet(tmp_path / "x.parquet")
    r = ingest(store, tmp_path / "x.parquet", "pq", fields=FieldMap(text="body", label="y"), labels=LABELS)
    assert (r.rows_read, r.accepted, r.quarantined) == (3, 2, 1)
    assert json.loads(store.one("SELECT meta FROM store.records WHERE text = 'a b'")) == {"n": 1.5}

    feats = datasets.Features({"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "y": [1, 0]}, features=feats)
    r = ingest(store, ds, "hf", fields=FieldMap(text="sentence", label="y"))
    assert r.labels == ["neg", "pos"] and r.accepted == 2
    ds.save_to_disk(str(tmp_path / "hf"))
    r = ingest(store, tmp_path / "hf", "hf2", fields=FieldMap(text="sentence", label="y"))
    assert r.format == "hf" and r.accepted == 2
    assert dict(store.query("SELECT r.text, g.label FROM store.records r JOIN store.gold_labels g USING (record_id) "
                            "WHERE dataset = 'hf2'")) == {"good": "pos", "bad": "neg"}


# -- the accounting invariant, for any mix of good and bad rows ------------------------------------------

row = st.fixed_dictionaries({
    "id": st.one_of(st.none(), st.integers(0, 30).map(str)),
    "text": st.one_of(st.just(""), st.just("   "), st.text(min_size=1, max_size=30)),
    "label": st.sampled_from(["ham", "spam", "0", "1", "", "eggs", "9"]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, max_size=40), fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_rows_read_equals_accepted_plus_quarantined(tmp_path_factory, rows, fmt):
    from curation.settings import Settings
    from curation.store import Store

    tmp = tmp_path_factory.mktemp("prop")
    frame = pl.DataFrame(rows, schema={"id": pl.String, "text": pl.String, "label": pl.String})
    path = tmp / f"in.{fmt}"
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "jsonl":
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path)
    with Store.open(Settings(db=tmp / "p.duckdb")) as store:
        try:
            r = ingest(store, path, "p", fields=F, labels=LABELS)
        except InputError:
            assert not rows  # only an empty file may be refused
            return
        assert r.rows_read == len(rows) == r.accepted + r.quarantined
        assert store.one("SELECT count(*) FROM store.records") == r.accepted
        assert store.one("SELECT count(*) FROM store.quarantine") == r.quarantined
        ids = [x["id"] for x in rows if x["id"] is not None]
        assert store.one("SELECT count(*) - count(DISTINCT source_id) FROM store.records WHERE source_id IS NOT NULL") == 0
        assert r.quarantined >= len(ids) - len(set(ids))


# -- a killed ingest leaves nothing behind -------------------------------------------------------------

KILL_CHILD = """
import sys
from curation.settings import Settings
from curation.store import Store
from curation.ingest import ingest, FieldMap
import curation.ingest as ing
ing.BATCH_ROWS = 20_000
store = Store.open(Settings(db=sys.argv[1]))
def progress(done, total):
    print("PROGRESS", done, flush=True)
    import time; time.sleep(0.5)
ingest(store, sys.argv[2], "big", fields=FieldMap(id="id", label="label"), labels=["ham", "spam"], progress=progress)
print("DONE", flush=True)
"""


def test_sigkill_mid_ingest_leaves_store_as_before(tmp_path):
    from curation.settings import Settings
    from curation.store import Store

    db = tmp_path / "k.duckdb"
    with Store.open(Settings(db=db)) as store:
        ingest(store, MALFORMED / "ragged.csv", "before", fields=F, labels=LABELS)
        before = store.query("SELECT dataset, count(*) FROM store.records GROUP BY 1")
    n = 200_000
    pl.DataFrame({"id": [str(i) for i in range(n)], "text": [f"comment number {i}" for i in range(n)],
                  "label": ["ham", "spam"] * (n // 2)}).write_csv(tmp_path / "big.csv")
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(db), str(tmp_path / "big.csv")],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    line = child.stdout.readline()
    assert line.startswith("PROGRESS"), line
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Store.open(Settings(db=db)) as store:
        assert store.query("SELECT dataset, count(*) FROM store.records GROUP BY 1") == before
        assert store.query("SELECT name FROM store.datasets") == [("before",)]
        assert store.one("SELECT count(*) FROM store.ingests") == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_stored_input_hash_is_pinned(store, tmp_path, fmt):
    from tests.test_normalize import PINNED

    texts = [t for t, _ in PINNED]
    frame = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts, "label": ["ham"] * len(texts)})
    path = tmp_path / f"in.{fmt}"
    {"csv": frame.write_csv, "jsonl": frame.write_ndjson, "parquet": frame.write_parquet}[fmt](path)
    r = ingest(store, path, "p", fields=F, labels=LABELS)
    blank = {i for i, t in enumerate(texts) if not t.strip()}  # "" and "   "
    assert r.accepted == len(texts) - len(blank)
    got = dict(store.query("SELECT source_id::INT, input_hash FROM store.records"))
    assert got == {i: h for i, (_, h) in enumerate(PINNED) if i not in blank}
    assert dict(store.query("SELECT source_id::INT, text FROM store.records")) == {
        i: t for i, t in enumerate(texts) if i not in blank}


# -- issue 12, finding 9 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("at", [1, 2])
def test_csv_field_over_2mb_quarantines_that_row_only(store, tmp_path, at):
    rows = ["1,hello,ham", "3,bye,spam"]
    rows.insert(at - 1, '2,"' + "x " * 1_500_000 + '",spam')  # a 3 MB field: DuckDB's default line limit is 2 MB
    path = tmp_path / "big.csv"
    path.write_text("id,text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    r = ingest(store, path, "d", fields=F, labels=LABELS)
    assert (r.rows_read, r.accepted, r.quarantined) == (3, 2, 1)
    assert quarantined(store, r) == [(at, "text", "max_length")]
    assert sorted(store.query("SELECT source_row, text FROM store.records")) == [
        (1 if at != 1 else 2, "hello"), (3, "bye")]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_nul_bytes_in_text_are_quarantined(store, tmp_path, fmt):
    frame = pl.DataFrame({"id": ["1", "2", "3"], "text": ["fine", "bad\x00byte", "also fine"], "label": ["ham", "spam", "ham"]})
    path = tmp_path / f"nul.{fmt}"
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "jsonl":
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path)
    r = ingest(store, path, "d", fields=F, labels=LABELS)
    assert (r.rows_read, r.accepted, r.quarantined) == (3, 2, 1)
    assert quarantined(store, r) == [(2, "text", "no_nul")]
    assert "NUL" in store.one("SELECT message FROM store.quarantine")
    assert store.one("SELECT count(*) FROM store.records WHERE contains(text, chr(0))") == 0


def test_import_contract_declares_no_nul():
    from curation.contracts import import_contract

    assert "no_nul" in import_contract().fields["text"].rules
