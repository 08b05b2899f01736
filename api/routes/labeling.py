"""Weak supervision: apply declarative LFs, import external votes, the LF report, fit the label model."""

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from api import schemas as S
from api.deps import StoreDep, uploaded
from api.jobs import plain
from curation.errors import InputError
from labeling import weak

DECLARATIVE_LF_SUFFIXES = (".yaml", ".yml", ".json")

router = APIRouter(tags=["weak supervision"])


@router.post("/datasets/{name}/lfs", response_model=S.LfSetOut, response_model_exclude_unset=True)
def apply_lfs(name: str, store: StoreDep,
                  file: Annotated[UploadFile, File(description="a declarative LF file (.yaml, .yml, .json)")]) -> dict:
    """Apply declarative LFs. Python LF files run code when loaded, so the API refuses them."""
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in DECLARATIVE_LF_SUFFIXES:
        raise InputError(f"{file.filename}: the API applies only declarative LF files "
                         f"({', '.join(DECLARATIVE_LF_SUFFIXES)}); a Python LF file runs code when loaded, so "
                         f"apply it with `curate lf apply --lfs FILE` on the machine that owns the store")
    with uploaded(file) as path:
        return plain(weak.apply_lfs(store, name, path))


@router.post("/datasets/{name}/votes", response_model=S.LfSetOut,
             response_model_exclude_unset=True)
def import_votes(name: str, store: StoreDep,
                     file: Annotated[UploadFile, File(description="external LF votes")]) -> dict:
    with uploaded(file) as path:
        return plain(weak.import_votes(store, path, name))


@router.get("/datasets/{name}/lfs/report", response_model=S.LfReportOut)
def lf_report(name: str, store: StoreDep) -> dict:
    return plain(weak.lf_report(store, name))


@router.post("/datasets/{name}/label-model", response_model=S.LabelModelOut)
def label_model(name: str, body: S.LabelModelIn, store: StoreDep) -> dict:
    return plain(weak.fit_label_model(store, name, body.kind))
