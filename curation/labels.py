"""Import gold labels for records already in the store, matched by their source id.

Use it for labels made elsewhere (another tool, an earlier campaign), or to label only an evaluation set:
`--splits val,test` writes labels only for records in those splits of the current split set, so the training
pool stays unlabeled for active learning. Provenance: `gold_labels.source = 'imported'`, `source_ref` = the file.
"""

from pathlib import Path
from typing import Any

import polars as pl

from curation.errors import InputError
from curation.ingest import FieldMap, check_rows, open_source, stringify
from curation.store import Store, now


def import_labels(store: Store, source: str | Path | Any, dataset: str, *, id_field: str, label_field: str,
                  splits: list[str] | None = None, fmt: str | None = None) -> dict:
    """Write gold labels by source id. Returns counts; unknown ids and bad labels are counted, with examples."""
    labels = store.dataset(dataset)["labels"]
    if splits:
        split_id = store.one("SELECT split_id FROM store.split_sets WHERE dataset = ? AND is_current", [dataset])
        if split_id is None:
            raise InputError(f"--splits needs a split of {dataset!r}; run `curate split --dataset {dataset}` first")
    src = open_source(source, FieldMap(text="", label=label_field, id=id_field), fmt=fmt)
    result = {"dataset": dataset, "file": src.name, "rows_read": 0, "written": 0, "unmatched_ids": 0,
              "invalid_labels": 0, "outside_splits": 0, "examples": []}
    with store.transaction() as cur:
        for batch in src.batches:
            if batch.columns.height == 0:
                continue
            missing = [c for c in (id_field, label_field) if c not in batch.columns.columns]
            if missing:
                raise InputError(f"{src.name}: no column {missing[0]!r} (columns: {', '.join(batch.columns.columns)})")
            df = stringify(batch.columns.select(id_field, label_field)).rename(
                {id_field: "source_id", label_field: "label_raw"}).with_columns(pl.lit("x").alias("text"))
            df = check_rows(df, labels, max_length=1).with_columns(batch.rows.alias("row"))
            result["rows_read"] += df.height
            bad = df.filter(pl.col("label").is_null() & pl.col("label_raw").is_not_null())
            result["invalid_labels"] += bad.height
            result["examples"] += [f"row {r}: label {v!r} is not one of {', '.join(labels)}"
                                   for r, v in bad.select("row", "label_raw").head(3).iter_rows()]
            cur.register("_in", df.filter(pl.col("label").is_not_null()).select("row", "source_id", "label"))
            matched = cur.sql(
                "SELECT i.row, i.source_id, r.record_id, i.label, s.split FROM _in i "
                "LEFT JOIN store.records r ON r.source_id = i.source_id AND r.dataset = ? "
                "LEFT JOIN store.splits s ON s.record_id = r.record_id AND s.split_id = "
                "(SELECT split_id FROM store.split_sets WHERE dataset = ? AND is_current)",
                params=[dataset, dataset]).pl()
            cur.unregister("_in")
            unmatched = matched.filter(pl.col("record_id").is_null())
            result["unmatched_ids"] += unmatched.height
            result["examples"] += [f"row {r}: no record with source id {i!r}"
                                   for r, i in unmatched.select("row", "source_id").head(3).iter_rows()]
            keep = matched.filter(pl.col("record_id").is_not_null())
            if splits:
                inside = keep.filter(pl.col("split").is_in(splits))
                result["outside_splits"] += keep.height - inside.height
                keep = inside
            cur.register("_gold", keep.select("record_id", "label"))
            cur.execute("INSERT OR REPLACE INTO store.gold_labels (record_id, label, source, source_ref, annotator, updated_at) SELECT record_id, label, 'imported', ?, NULL, ? "
                        "FROM _gold", [src.name, now()])
            cur.unregister("_gold")
            result["written"] += keep.height
    result["examples"] = result["examples"][:10]
    return result
