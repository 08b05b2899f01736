"""Immutable snapshots (what training reads) and exports (Parquet, CSV, HF `datasets`).

A snapshot is one Parquet file plus `manifest.json` in `<home>/snapshots/<dataset>/<version_id>/`. Its id is
derived from the content hash, so taking a snapshot of unchanged data returns the existing one. Files are written
to a temporary name and renamed, so a crash never leaves a half snapshot; `load_snapshot` re-checks the sha256.
Augmented rows take their parent's gold and weak labels here, so a later change of the parent's label follows.
"""

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation.contracts import export_contract
from curation.errors import InputError, NotFound
from curation.store import Store, now

EXPORT_FORMATS = ("parquet", "csv", "hf")

# one row per record of the dataset; see docs/ARCHITECTURE.md for the columns
_SNAPSHOT_SQL = """
WITH lm AS (
    SELECT model_id FROM store.label_models WHERE dataset = $dataset ORDER BY created_at DESC, model_id DESC LIMIT 1
), ss AS (
    SELECT split_id FROM store.split_sets WHERE dataset = $dataset AND is_current LIMIT 1
)
SELECT r.record_id, r.text, r.input_hash, r.origin, r.parent_id, r."group",
       g.label, g.source AS label_source,
       w.label AS weak_label, w.probs AS weak_probs, w.model_id AS weak_model_id,
       s.split, s.component, coalesce(s.leaks, false) AS leaks
FROM store.records r
LEFT JOIN store.gold_labels g ON g.record_id = coalesce(r.parent_id, r.record_id)
LEFT JOIN store.weak_labels w ON w.record_id = coalesce(r.parent_id, r.record_id)
     AND w.model_id = (SELECT model_id FROM lm)
LEFT JOIN store.splits s ON s.record_id = r.record_id AND s.split_id = (SELECT split_id FROM ss)
WHERE r.dataset = $dataset
ORDER BY r.record_id
"""


def dataset_arrow(store: Store, dataset: str) -> pa.Table:
    """The dataset as the snapshot sees it (records, gold/weak labels, split), as an Arrow table."""
    store.dataset(dataset)
    cur = store.cursor()
    try:
        return cur.sql(_SNAPSHOT_SQL, params={"dataset": dataset}).to_arrow_table()
    finally:
        cur.close()


def dataset_frame(store: Store, dataset: str) -> pl.DataFrame:
    return pl.from_arrow(dataset_arrow(store, dataset))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(store: Store, dataset: str) -> dict:
    """Write (or reuse) an immutable snapshot of `dataset`; returns its manifest with `path`."""
    info = store.dataset(dataset)
    table = dataset_arrow(store, dataset)
    base = store.settings.snapshots_dir / dataset
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{dt.datetime.now().timestamp():.0f}.parquet"
    pq.write_table(table, tmp, compression="zstd")
    digest = _sha256(tmp)
    version_id = f"{dataset}-{digest[:12]}"
    folder = base / version_id
    existing = store.query("SELECT manifest FROM store.versions WHERE version_id = ?", [version_id])
    if existing and (folder / "records.parquet").exists():
        tmp.unlink()
        return json.loads(existing[0][0]) | {"path": str(folder), "reused": True}
    split = store.query("SELECT split_id FROM store.split_sets WHERE dataset = ? AND is_current", [dataset])
    frame = pl.from_arrow(table)
    counts = {
        "rows": frame.height,
        "gold": int(frame["label"].is_not_null().sum()),
        "weak": int(frame["weak_label"].is_not_null().sum()),
        "augmented": int((frame["origin"] == "augment").sum()),
        "by_split": {str(k): v for k, v in frame.group_by("split").len().iter_rows()},
    }
    leaks = frame.filter(pl.col("leaks"))["component"].n_unique() if frame["leaks"].any() else 0
    manifest = {
        "version_id": version_id, "dataset": dataset, "labels": info["labels"], "rows": frame.height,
        "sha256": digest, "contract_version": export_contract().tag, "created_at": now().isoformat(),
        "split_id": split[0][0] if split else None, "split_leaks": leaks,
        "label_model_id": frame["weak_model_id"].drop_nulls().first() if counts["weak"] else None,
        "counts": counts,
    }
    staging = base / f".tmp-{version_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tmp.rename(staging / "records.parquet")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    with store.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO store.versions VALUES (?, ?, 'snapshot', ?, ?, ?, ?, ?, ?)",
                    [version_id, dataset, str(folder), frame.height, digest, manifest["contract_version"],
                     json.dumps(manifest), now()])
    return manifest | {"path": str(folder), "reused": False}


def load_snapshot(ref: str | Path, store: Store | None = None) -> tuple[pl.DataFrame, dict]:
    """A snapshot by folder, manifest path or version id (with a store). Checks the file's sha256."""
    path = Path(ref)
    if not path.exists() and store is not None:
        row = store.query("SELECT path FROM store.versions WHERE version_id = ?", [str(ref)])
        if not row:
            raise NotFound(f"no snapshot {ref!r}; list them with `curate sql \"SELECT * FROM versions\"`")
        path = Path(row[0][0])
    if path.name == "manifest.json":
        path = path.parent
    if not (path / "manifest.json").exists():
        raise NotFound(f"{path}: not a snapshot folder (no manifest.json)")
    manifest = json.loads((path / "manifest.json").read_text())
    data = path / "records.parquet"
    if _sha256(data) != manifest["sha256"]:
        raise InputError(f"{data}: sha256 differs from its manifest; the snapshot was modified. Take a new one "
                         f"with `curate snapshot --dataset {manifest['dataset']}`")
    return pl.read_parquet(data), manifest | {"path": str(path)}


def export(store: Store, dataset: str, out: str | Path, fmt: str | None = None) -> dict:
    """Export the dataset (snapshot columns) to Parquet, CSV or a HF `datasets` folder."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(out.suffix.lower(), "hf")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    table = dataset_arrow(store, dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd")
    elif fmt == "csv":
        frame = pl.from_arrow(table).with_columns(
            pl.col("weak_probs").map_elements(lambda v: json.dumps(list(v)), return_dtype=pl.String, skip_nulls=True))
        frame.write_csv(tmp)
    else:
        import datasets

        shutil.rmtree(tmp, ignore_errors=True)
        datasets.Dataset(table).save_to_disk(str(tmp))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    digest = _sha256(out) if out.is_file() else _sha256(next(out.glob("*.arrow")))
    result = {"dataset": dataset, "path": str(out), "format": fmt, "rows": table.num_rows, "sha256": digest,
              "contract_version": export_contract().tag}
    with store.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO store.versions VALUES (?, ?, 'export', ?, ?, ?, ?, ?, ?)",
                    [f"{dataset}-export-{digest[:12]}-{fmt}", dataset, str(out), table.num_rows, digest,
                     result["contract_version"], json.dumps(result), now()])
    return result
