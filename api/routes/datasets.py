"""Datasets: list, show, round settings, ingest an upload, and the records with paging and filters."""

import json
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import Field

from api import schemas as S
from api.deps import Limit, Offset, StoreDep, frame_rows, json_cols, page, uploaded
from api.jobs import plain
from api.rounds import check_train_config, round_config, validate_round_settings
from curation.errors import InputError
from curation.ingest import FieldMap, ingest
from curation.versions import ExportOptions, export

router = APIRouter(tags=["datasets"])


@router.get("/datasets", response_model=S.Page[S.DatasetOut])
def list_datasets(store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict:
    total = store.one("SELECT count(*) FROM store.datasets")
    rows = store.frame("SELECT d.*, s.settings FROM main.datasets d JOIN store.datasets s USING (name) "
                       "ORDER BY name LIMIT ? OFFSET ?", [limit, offset])
    items = frame_rows(rows)
    for it in items:
        it["settings"] = json.loads(it["settings"]) if it.get("settings") else {}
    return page(items, total, limit, offset)


@router.get("/datasets/{name}", response_model=S.DatasetOut)
def get_dataset(name: str, store: StoreDep) -> dict:
    ds = store.dataset(name)
    ds["records"] = store.one("SELECT count(*) FROM store.records WHERE dataset = ?", [name])
    ds["settings"] = round_config(store, name) | ds["settings"]
    return plain(ds)


@router.patch("/datasets/{name}/settings", response_model=S.DatasetSettingsOut,
              response_model_exclude_unset=True)
def set_settings(name: str, body: S.DatasetSettingsIn, store: StoreDep) -> dict:
    values = validate_round_settings(body.model_dump(exclude_none=True))
    if "round_train" in values:
        store.dataset(name)
        check_train_config(values["round_train"], store.one("SELECT task FROM store.datasets WHERE name = ?",
                                                            [name]) == "instruction")
    store.dataset(name)
    return store.set_dataset_settings(name, **values)


@router.post("/datasets/{name}/ingest", response_model=S.IngestOut, status_code=201)
def ingest_upload(name: str, store: StoreDep,
                  file: Annotated[UploadFile, File(description="CSV, JSONL or Parquet")],
                  text_field: Annotated[str, Form()] = "text",
                  label_field: Annotated[str | None, Form()] = None,
                  id_field: Annotated[str | None, Form()] = None,
                  group_field: Annotated[str | None, Form()] = None,
                  labels: Annotated[str | None, Form(description="comma-separated label set")] = None,
                  format: Annotated[str | None, Form(description="csv|jsonl|parquet (default: suffix)")] = None
                  ) -> dict:
    fields = FieldMap(text=text_field, label=label_field, id=id_field, group=group_field)
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    with uploaded(file) as path:
        result = ingest(store, path, name, fields=fields, labels=label_list, fmt=format)
    return plain(result) | {"file": file.filename}


@router.get("/datasets/{name}/records", response_model=S.Page[S.RecordOut])
def records(name: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0,
            label: Annotated[str | None, Query(description="gold label equals")] = None,
            labeled: Annotated[bool | None, Query(description="has a gold label")] = None,
            origin: Annotated[str | None, Query(pattern="^(ingest|augment)$")] = None,
            split: Annotated[str | None, Query(pattern="^(train|val|test)$")] = None,
            q: Annotated[str | None, Query(max_length=500, description="text contains (case-insensitive)")] = None,
            group: str | None = None) -> dict:
    store.dataset(name)
    where, args = ["r.dataset = ?"], [name]
    for col, val in (("r.label", label), ("r.origin", origin), ("s.split", split), ('r."group"', group)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    if labeled is not None:
        where.append(f"r.label IS {'NOT ' if labeled else ''}NULL")
    if q:
        where.append("contains(lower(r.text), lower(?))")
        args.append(q)
    base = ("FROM main.records r LEFT JOIN (SELECT sp.record_id, sp.split FROM store.splits sp JOIN "
            "store.split_sets ss USING (split_id) WHERE ss.is_current AND ss.dataset = ?) s USING (record_id) "
            f"WHERE {' AND '.join(where)}")
    total = store.one(f"SELECT count(*) {base}", [name, *args])
    rows = store.frame(f"SELECT r.record_id, r.dataset, r.source_id, r.text, r.label, r.label_source, "
                       f"r.\"group\", r.meta, r.input_hash, r.origin, r.parent_id, s.split {base} "
                       f"ORDER BY r.record_id LIMIT ? OFFSET ?", [name, *args, limit, offset])
    return page([json_cols(it, "meta") for it in frame_rows(rows)], total, limit, offset)


class ExportIn(S._In):
    format: Literal["parquet", "csv", "hf", "chat-jsonl", "alpaca"] = "chat-jsonl"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="folder (or file) name under "
                      "<data dir>/exports/<dataset>/; the server never writes elsewhere")
    min_quality: float | None = Field(None, ge=0, le=1, description="instruction: weak P(keep) needed without gold "
                                      "(default 0.5; 0 also keeps unlabeled records)")
    min_confidence: float | None = Field(None, ge=0, le=1, description="classification + template: weak "
                                         "confidence needed without gold (default 0.9)")
    template: str | None = Field(None, max_length=10_000, description="classification as instructions: the user "
                                 "turn, e.g. 'Classify this comment as {labels}.\\n\\n{text}'")
    allow_contamination: bool = False


class SplitCounts(S._Out):
    kept: int
    dropped: dict[str, int]


class ExportOut(S._Out):
    dataset: str
    path: str
    format: str
    rows: int
    sha256: str
    version_id: str | None = None
    counts: dict[str, SplitCounts] | None = Field(None, description="fine-tuning formats: kept and dropped by "
                                                  "reason, per split")
    files: dict[str, str] | None = Field(None, description="fine-tuning formats: sha256 per file")


@router.post("/datasets/{name}/export", response_model=ExportOut, status_code=201)
def export_dataset(name: str, body: ExportIn, store: StoreDep) -> dict:
    if body.name in (".", ".."):
        raise InputError(f"name {body.name!r}: give a file or folder name")
    store.dataset(name)  # 404 for an unknown dataset, before its name becomes part of a path
    out = store.settings.home / "exports" / name / body.name
    options = ExportOptions(body.min_quality, body.min_confidence, body.template, body.allow_contamination)
    return plain(export(store, name, out, body.format, options))
