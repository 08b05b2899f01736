"""Splits (make, check for leakage), contamination checks against evaluation sets, and augmentation of the train
split."""

import contextlib
import re
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile

from api import schemas as S
from api.deps import Limit, Offset, RunnerDep, StoreDep, frame_rows, json_cols, page, uploaded
from api.jobs import JobContext, job_kind, plain
from curation import augment as augmentation
from curation import splits
from curation.errors import InputError, NotFound
from curation.instructions import FORMATS as INSTRUCTION_FORMATS
from curation.store import Store

router = APIRouter()


@router.post("/datasets/{name}/splits", response_model=S.SplitOut, tags=["splits"])
def make_split(name: str, body: S.SplitIn, store: StoreDep) -> dict:
    """A new current split: whole duplicate components in one split (instruction datasets: on the prompt, template
    aware unless `template_aware` is false)."""
    opts = body.model_dump(exclude_none=True)
    ratios = opts.pop("ratios", None)
    if ratios is not None:
        opts["ratios"] = tuple(ratios)
    return plain(splits.make_split(store, name, **opts))


@router.get("/datasets/{name}/splits/check", response_model=S.SplitCheckOut, tags=["splits"])
def check_split(name: str, store: StoreDep) -> dict:
    return plain(splits.check_split(store, name))


@router.post("/datasets/{name}/augment", response_model=S.AugmentOut, tags=["augmentation"])
def augment(name: str, body: S.AugmentIn, store: StoreDep) -> dict:
    """Augment train records in the request, bounded to MAX_AUGMENT_OUTPUTS new texts (use `limit`, or `curate
    augment` on the machine that holds the store, for more)."""
    parents = body.limit or store.one(
        "SELECT count(*) FROM store.splits sp JOIN store.split_sets ss USING (split_id) WHERE ss.is_current AND "
        "ss.dataset = ? AND sp.split = 'train'", [name]) or 0
    if body.per_record * parents > S.MAX_AUGMENT_OUTPUTS:
        raise InputError(f"per_record={body.per_record} x {parents} train records = {body.per_record * parents} "
                         f"augmentations; the API makes at most {S.MAX_AUGMENT_OUTPUTS} per request: set `limit` "
                         f"(e.g. {S.MAX_AUGMENT_OUTPUTS // body.per_record}) and call again, or run `curate augment`")
    return plain(augmentation.augment(store, name, **body.model_dump(exclude_none=True)))


# -- contamination against an evaluation set ---------------------------------------------------------------------
CONTAMINATION_SHOWN = 100   # flagged records in the job's result; all of them: GET /datasets/{name}/contamination


def _eval_copy(store: Store, file: UploadFile) -> Path:
    """A copy of the uploaded evaluation file the job reads (the request's temporary file is gone by then):
    `<data dir>/uploads/contamination/<uuid>-<name>`, removed when the job succeeds."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(file.filename or "eval").name)[-100:].lstrip(".") or "eval"
    folder = store.settings.home / "uploads" / "contamination"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex[:12]}-{safe}"
    with uploaded(file) as path:
        shutil.copyfile(path, target)
    return target


@router.post("/datasets/{name}/contamination", response_model=S.JobOut, status_code=202, tags=["contamination"])
def check_contamination(
        name: str, store: StoreDep, runner: RunnerDep,
        file: Annotated[UploadFile, File(description="evaluation set: JSONL/JSON/CSV/Parquet in any ingest layout "
                                                     "(chat, alpaca, sharegpt, prompt-completion, dolly) or a "
                                                     "text column")],
        ngram: Annotated[int, Form(ge=1, le=64, description="n-gram length in normalised tokens (GPT-3: 13)")] = 13,
        min_overlap: Annotated[float, Form(ge=0, le=1, description="flag only records whose share of tokens "
                                           "covered by shared n-grams reaches this (0: any shared n-gram)")] = 0.0,
        format: Annotated[Literal["auto", "text", *INSTRUCTION_FORMATS],  # type: ignore[valid-type]
                          Form(description="layout of the file")] = "auto",
        text_field: Annotated[str, Form(max_length=200, description="the text column of a classification "
                                                                    "file")] = "text") -> dict:
    """Flag records whose prompt or response (or text) shares an n-gram with the evaluation set: a job (its result:
    the counts and the first flagged records); the flags are stored, and training refuses a train split holding
    any of them unless `allow_contamination`. Read them with GET /datasets/{name}/contamination."""
    store.dataset(name)
    path = _eval_copy(store, file)
    try:
        return runner.submit("contamination", {"dataset": name, "path": str(path), "file": file.filename,
                                               "ngram": ngram, "min_overlap": min_overlap, "format": format,
                                               "text_field": text_field})
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@router.get("/datasets/{name}/contamination", response_model=S.ContaminationPage, tags=["contamination"])
def contamination_flags(name: str, store: StoreDep, limit: Limit = 100, offset: Offset = 0,
                        check_id: Annotated[str | None, Query(max_length=200, description="a check of this "
                                                              "dataset (default: the newest)")] = None) -> dict:
    """The flags of the newest contamination check (or `check_id`), highest overlap first. `check` is null and the
    page empty when no check was run."""
    from curation.contamination import latest_check

    store.dataset(name)
    check_id = check_id or latest_check(store, name)
    if check_id is None:
        return page([], 0, limit, offset) | {"check": None}
    rows = frame_rows(store.frame("SELECT * FROM store.contamination_checks WHERE check_id = ? AND dataset = ?",
                                  [check_id, name]))
    if not rows:
        raise NotFound(f"dataset {name!r} has no contamination check {check_id!r}")
    total = store.one("SELECT count(*) FROM store.contamination WHERE check_id = ?", [check_id])
    flags = store.frame("SELECT c.record_id, r.source_id, c.overlap, c.field, c.matched FROM store.contamination c "
                        "JOIN store.records r USING (record_id) WHERE c.check_id = ? "
                        "ORDER BY c.overlap DESC, c.record_id LIMIT ? OFFSET ?", [check_id, limit, offset])
    return page(frame_rows(flags), total, limit, offset) | {"check": json_cols(rows[0], "params")}


@job_kind("contamination")
def contamination_job(ctx: JobContext) -> dict:
    from curation.contamination import check_contamination as check

    p = ctx.params
    path = Path(p["path"])
    if not path.is_file():
        raise InputError(f"the uploaded evaluation file {p.get('file')!r} is gone (a finished job removes it); "
                         f"POST it to /datasets/{p['dataset']}/contamination again")
    result = check(ctx.store, p["dataset"], path, ngram=p["ngram"], min_overlap=p["min_overlap"], fmt=p["format"],
                   text_field=p["text_field"], progress=ctx.step_progress(0.0, 1.0, "match records"))
    with contextlib.suppress(OSError):
        path.unlink()
    if p.get("file"):   # record the client's file name, not the server's temporary copy
        with ctx.store.transaction() as cur:
            cur.execute("UPDATE store.contamination_checks SET against = ? WHERE check_id = ?",
                        [p["file"], result["check_id"]])
        result["against"] = p["file"]
    result["records_shown"] = min(len(result["records"]), CONTAMINATION_SHOWN)
    result["records"] = result["records"][:CONTAMINATION_SHOWN]
    return plain(result)
