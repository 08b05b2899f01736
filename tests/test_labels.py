import polars as pl

from curation.ingest import FieldMap, ingest
from curation.labels import import_labels


def test_import_labels_by_source_id_and_split(store, tmp_path):
    pl.DataFrame({"id": ["a", "b", "c", "d"], "text": ["one", "two", "three", "four"]}).write_csv(tmp_path / "in.csv")
    ingest(store, tmp_path / "in.csv", "d", fields=FieldMap(id="id"), labels=["ham", "spam"])
    pl.DataFrame({"id": ["a", "b", "c", "zz", "d"], "y": ["ham", "1", "eggs", "ham", "spam"]}).write_csv(tmp_path / "l.csv")
    with store.transaction() as cur:  # a split: a, b in train; c, d in test
        cur.execute("INSERT INTO store.split_sets VALUES ('s1', 'd', 'computed', NULL, NULL, true, now())")
        cur.execute("INSERT INTO store.splits SELECT 's1', record_id, CASE WHEN source_id IN ('a', 'b') THEN 'train' "
                    "ELSE 'test' END, record_id, NULL, false FROM store.records")
    r = import_labels(store, tmp_path / "l.csv", "d", id_field="id", label_field="y", splits=["test"])
    assert (r["rows_read"], r["written"], r["unmatched_ids"], r["invalid_labels"], r["outside_splits"]) == (5, 1, 1, 1, 2)
    assert store.query("SELECT r.source_id, g.label, g.source FROM store.gold_labels g JOIN store.records r "
                       "USING (record_id)") == [("d", "spam", "imported")]
    r = import_labels(store, tmp_path / "l.csv", "d", id_field="id", label_field="y")
    assert r["written"] == 3
    assert dict(store.query("SELECT source_id, label FROM records WHERE label IS NOT NULL")) == {
        "a": "ham", "b": "spam", "d": "spam"}
