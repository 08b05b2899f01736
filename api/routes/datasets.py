"""Datasets: list, show, round settings, ingest an upload (classification or instruction), the records with paging
and filters, an instruction record's revisions, and exports."""

import json
import threading
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from pydantic import Field

from api import schemas as S
from api.deps import Limit, Offset, StoreDep, frame_rows, json_cols, page, uploaded
from api.jobs import plain
from api.rounds import check_train_config, round_config, validate_round_settings
from curation.errors import InputError, NotFound
from curation.ingest import FieldMap, ingest
from curation.instructions import FORMATS as INSTRUCTION_FORMATS
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
                  file: Annotated[UploadFile, File(description="CSV, JSONL, JSON or Parquet")],
                  text_field: Annotated[str, Form()] = "text",
                  label_field: Annotated[str | None, Form()] = None,
                  id_field: Annotated[str | None, Form()] = None,
                  group_field: Annotated[str | None, Form()] = None,
                  labels: Annotated[str | None, Form(description="comma-separated label set")] = None,
                  exclude_fields: Annotated[str | None, Form(description="columns not stored at all (PII, answer "
                                                             "keys), comma-separated")] = None,
                  format: Annotated[str | None, Form(description="csv|jsonl|parquet (default: suffix); an "
                                                     "instruction layout name is taken as `layout`")] = None,
                  task: Annotated[Literal["classification", "instruction"] | None,
                                  Form(description="default: the dataset's task, else instruction when a layout "
                                                   "or prompt field is given, else classification")] = None,
                  layout: Annotated[Literal["auto", *INSTRUCTION_FORMATS] | None,  # type: ignore[valid-type]
                                    Form(description="instruction layout (default auto: detected from the "
                                                     "first rows)")] = None,
                  prompt_field: Annotated[str | None, Form(description="instruction: column with the prompt")] = None,
                  response_field: Annotated[str | None, Form(description="instruction: column with the "
                                                                         "response")] = None,
                  system_field: Annotated[str | None, Form(description="instruction: column with a system "
                                                                       "prompt")] = None,
                  max_tokens: Annotated[int | None, Form(ge=1, le=10_000_000, description="instruction: "
                                                         "quarantine longer conversations")] = None,
                  tokenizer: Annotated[Literal["llm", "whitespace"], Form(description="instruction: count tokens "
                                       "with the default base LLM's tokenizer (loaded once per server; whitespace "
                                       "words when it is not installed) or as whitespace words")] = "llm",
                  ) -> dict:
    """Ingest an upload under the import contract (violating rows go to the quarantine). An instruction dataset
    takes conversations in the chat, Alpaca, ShareGPT, prompt/completion or Dolly layout (`docs/store.md`,
    "Instruction datasets")."""
    from curation.instructions import InstructionFields, dataset_task, ingest_instructions

    if format in (*INSTRUCTION_FORMATS, "auto"):   # as `curate ingest --format chat`: a layout, not a file format
        if layout not in (None, format):
            raise InputError(f"format {format} and layout {layout} disagree; give the layout once")
        format, layout, task = None, format, task or "instruction"
    instruction_only = {"layout": layout, "prompt_field": prompt_field, "response_field": response_field,
                        "system_field": system_field, "max_tokens": max_tokens}
    task = task or dataset_task(store, name) or ("instruction" if layout or prompt_field else "classification")
    exclude = tuple(c.strip() for c in (exclude_fields or "").split(",") if c.strip())
    with uploaded(file) as path:
        if task == "instruction":
            if label_field or labels or text_field != "text":
                raise InputError("text_field, label_field and labels are for classification; an instruction file "
                                 "names its columns with prompt_field/response_field/system_field")
            fields = InstructionFields(prompt_field, response_field, system_field, id_field, group_field, exclude)
            result = ingest_instructions(store, path, name, fmt=layout or "auto", fields=fields,
                                         max_tokens=max_tokens, file_format=format,
                                         count_tokens=token_counter() if tokenizer == "llm" else None)
        else:
            given = [k for k, v in instruction_only.items() if v is not None]
            if given:
                raise InputError(f"{', '.join(given)}: for instruction files; set task=instruction")
            fields = FieldMap(text_field, label_field, id_field, group_field, exclude)
            label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
            result = ingest(store, path, name, fields=fields, labels=label_list, fmt=format)
    return plain(result) | {"file": file.filename}


_counter_lock = threading.Lock()
_counter: list = []   # [counter or None] once loaded


def token_counter():
    """The ingest token counter of the default base LLM (`training.sft_runs.ingest_token_counter`), loaded once per
    process; None (whitespace words) when no LLM tokenizer is installed. The API never takes a model path from the
    client."""
    with _counter_lock:
        if not _counter:
            from training.sft_runs import ingest_token_counter

            _counter.append(ingest_token_counter(None))
        return _counter[0]


@router.get("/datasets/{name}/records", response_model=S.Page[S.RecordOut])
def records(name: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0,
            label: Annotated[str | None, Query(description="gold label equals")] = None,
            labeled: Annotated[bool | None, Query(description="has a gold label")] = None,
            origin: Annotated[str | None, Query(pattern="^(ingest|augment)$")] = None,
            split: Annotated[str | None, Query(pattern="^(train|val|test)$")] = None,
            q: Annotated[str | None, Query(max_length=500, description="text contains (case-insensitive); "
                                           "instruction datasets: the prompt or the response")] = None,
            group: str | None = None) -> dict:
    """A page of records. Instruction datasets add prompt, response, messages, revision, turns and tokens (the
    `instructions` view: the latest accepted revision)."""
    instruction = store.dataset(name)["task"] == "instruction"
    where, args = ["r.dataset = ?"], [name]
    for col, val in (("r.label", label), ("r.origin", origin), ("s.split", split), ('r."group"', group)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    if labeled is not None:
        where.append(f"r.label IS {'NOT ' if labeled else ''}NULL")
    if q:
        where.append("(contains(lower(r.text), lower(?)) OR contains(lower(i.response), lower(?)))" if instruction
                     else "contains(lower(r.text), lower(?))")
        args += [q, q] if instruction else [q]
    join = "LEFT JOIN main.instructions i USING (record_id) " if instruction else ""
    extra = ", i.prompt, i.response, i.messages, i.revision, i.turns, i.tokens" if instruction else ""
    base = ("FROM main.records r LEFT JOIN (SELECT sp.record_id, sp.split FROM store.splits sp JOIN "
            f"store.split_sets ss USING (split_id) WHERE ss.is_current AND ss.dataset = ?) s USING (record_id) {join}"
            f"WHERE {' AND '.join(where)}")
    total = store.one(f"SELECT count(*) {base}", [name, *args])
    rows = store.frame(f"SELECT r.record_id, r.dataset, r.source_id, r.text, r.label, r.label_source, "
                       f"r.\"group\", r.meta, r.input_hash, r.origin, r.parent_id, s.split{extra} {base} "
                       f"ORDER BY r.record_id LIMIT ? OFFSET ?", [name, *args, limit, offset])
    return page([json_cols(it, "meta", "messages") for it in frame_rows(rows)], total, limit, offset)


@router.get("/datasets/{name}/records/{record_id}/revisions", response_model=S.RevisionsOut)
def revisions(name: str, record_id: Annotated[int, Path(ge=0, le=2**63 - 1)], store: StoreDep) -> dict:
    """The revisions of an instruction record's response, oldest first: 0 as ingested, then each edit made in
    review (parent, annotator, status). `current` is the one exports and training use."""
    if store.dataset(name)["task"] != "instruction":
        raise InputError(f"dataset {name!r} is a classification dataset; revisions are edits of an instruction "
                         "record's response")
    rec = store.query("SELECT record_id, response, messages, ingested_at FROM store.records WHERE dataset = ? AND "
                      "record_id = ?", [name, record_id])
    if not rec:
        raise NotFound(f"dataset {name!r} has no record {record_id}; list them with GET /datasets/{name}/records")
    current = store.one("SELECT revision FROM main.instructions WHERE record_id = ?", [record_id]) or 0
    _, response, messages, ingested = rec[0]
    items = [{"revision": 0, "response": response, "messages": messages, "parent_revision": None,
              "source": "ingest", "annotator": None, "annotation_id": None, "status": "accepted",
              "created_at": ingested}]
    items += frame_rows(store.frame(
        "SELECT revision, response, messages, parent_revision, source, annotator, annotation_id, status, "
        "created_at FROM store.revisions WHERE record_id = ? AND revision > 0 ORDER BY revision", [record_id]))
    for it in items:
        json_cols(it, "messages")
        it["current"] = it["revision"] == current
    return plain({"record_id": record_id, "dataset": name, "current": current, "revisions": items})


class ExportIn(S.InModel):
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


class SplitCounts(S.OutModel):
    kept: int
    dropped: dict[str, int]


class ExportOut(S.OutModel):
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
