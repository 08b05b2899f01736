"""Test helpers that build small datasets directly in the store (no files)."""

import json

import polars as pl

from curation.normalize import input_hash
from curation.store import Store, now


def make_dataset(store: Store, name: str, texts, labels=None, label_set=("ham", "spam"), groups=None,
                 meta=None) -> list[int]:
    """Create (or extend) a dataset; returns the new record ids. `labels` are label names or None."""
    n = len(texts)
    labels = labels or [None] * n
    groups = groups or [None] * n
    meta = meta or [None] * n
    with store.transaction() as cur:
        store.ensure_dataset(cur, name, list(label_set), "test")
        start = store.next_id(cur, "store.records", "record_id")
        ids = list(range(start, start + n))
        frame = pl.DataFrame({
            "record_id": ids, "text": list(texts), "group": list(groups),
            "meta": [json.dumps(m) if m is not None else None for m in meta],
            "input_hash": [input_hash(t) for t in texts], "source_row": list(range(1, n + 1)),
        })
        cur.register("new_rows", frame)
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, origin, parent_id, ingest_id, source_row, ingested_at) SELECT record_id, ?, NULL, text, \"group\", meta, input_hash, "
                    "'ingest', NULL, NULL, source_row, ? FROM new_rows", [name, now()])
        cur.unregister("new_rows")
        for rid, lab in zip(ids, labels):
            if lab is not None:
                cur.execute("INSERT INTO store.gold_labels (record_id, label, source, source_ref, annotator, updated_at) VALUES (?, ?, 'imported', 'test', NULL, ?)",
                            [rid, lab, now()])
    return ids
