import json

import datasets
import polars as pl
import pytest

from curation.errors import InputError
from curation.versions import export, load_snapshot, snapshot
from tests.helpers import make_dataset


def test_snapshot_is_immutable_and_reused(store):
    make_dataset(store, "d", ["a", "b", "c"], ["ham", "spam", None])
    m = snapshot(store, "d")
    assert m["rows"] == 3 and len(m["sha256"]) == 64 and m["contract_version"] == "export@1.0.0"
    assert m["counts"]["gold"] == 2 and not m["reused"]
    again = snapshot(store, "d")
    assert again["version_id"] == m["version_id"] and again["reused"]
    df, manifest = load_snapshot(m["path"])
    assert df["text"].to_list() == ["a", "b", "c"] and manifest["sha256"] == m["sha256"]
    assert store.query("SELECT version_id, rows FROM versions") == [(m["version_id"], 3)]
    make_dataset(store, "d", ["d"])
    assert snapshot(store, "d")["version_id"] != m["version_id"]


def test_tampered_snapshot_is_refused(store):
    make_dataset(store, "d", ["a"], ["ham"])
    m = snapshot(store, "d")
    pl.DataFrame({"x": [1]}).write_parquet(f"{m['path']}/records.parquet")
    with pytest.raises(InputError, match="sha256"):
        load_snapshot(m["path"])


def test_augmented_rows_take_their_parents_labels(store):
    (pid,) = make_dataset(store, "d", ["parent"], ["spam"])
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, origin, parent_id, ingest_id, source_row, ingested_at) SELECT 99, dataset, NULL, 'parnet', \"group\", NULL, 'h', 'augment', "
                    "record_id, NULL, NULL, ingested_at FROM store.records WHERE record_id = ?", [pid])
    df, _ = load_snapshot(snapshot(store, "d")["path"])
    assert df.filter(pl.col("record_id") == 99)["label"].to_list() == ["spam"]


def test_exports_round_trip(store, tmp_path):
    make_dataset(store, "d", ["a", "b"], ["ham", "spam"])
    p = export(store, "d", tmp_path / "d.parquet")
    assert pl.read_parquet(p["path"])["label"].to_list() == ["ham", "spam"]
    c = export(store, "d", tmp_path / "d.csv")
    assert pl.read_csv(c["path"])["text"].to_list() == ["a", "b"]
    h = export(store, "d", tmp_path / "hf", "hf")
    assert datasets.load_from_disk(h["path"])["label"] == ["ham", "spam"]
    kinds = {k for (k,) in store.query("SELECT kind FROM versions")}
    assert kinds == {"export"}
    assert json.loads(store.one("SELECT manifest FROM versions LIMIT 1"))["rows"] == 2


def test_export_formats_for_fine_tuning_dispatch(store, tmp_path):
    from curation.versions import EXPORT_FORMATS, ExportOptions

    assert {"chat-jsonl", "alpaca", "hf"} <= set(EXPORT_FORMATS)
    make_dataset(store, "d", ["a", "b"], ["ham", "spam"])
    with pytest.raises(InputError, match="apply to chat-jsonl, alpaca and hf"):
        export(store, "d", tmp_path / "d.parquet", options=ExportOptions(template="{text}"))
    with pytest.raises(InputError, match="unknown export format 'jsonl'"):
        export(store, "d", tmp_path / "x", "jsonl")
    # a classification dataset's folder without a template stays the plain HF export of every column
    assert datasets.load_from_disk(export(store, "d", tmp_path / "hf")["path"])["text"] == ["a", "b"]
