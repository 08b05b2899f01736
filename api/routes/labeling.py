"""Weak supervision: apply declarative LFs or a built-in set, import external votes, the LF report, fit the label
model."""

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api import schemas as S
from api.deps import StoreDep, uploaded
from api.jobs import plain
from curation.errors import InputError
from labeling import weak
from labeling.lfs.load import BUILTIN_PREFIX

DECLARATIVE_LF_SUFFIXES = (".yaml", ".yml", ".json")

router = APIRouter(tags=["weak supervision"])


@router.post("/datasets/{name}/lfs", response_model=S.LfSetOut, response_model_exclude_unset=True)
def apply_lfs(name: str, store: StoreDep,
              file: Annotated[UploadFile | None, File(description="a declarative LF file (.yaml, .yml, .json)")] = None,
              lfs: Annotated[str | None, Form(max_length=200, description="instead of a file: a built-in LF set "
                                              "shipped with the product, e.g. `builtin:instruction-quality`")] = None,
              force: Annotated[bool, Form(description="re-apply an unchanged set to unchanged records")] = False
              ) -> dict:
    """Apply declarative LFs (an uploaded file) or a built-in set by name (multipart form field `lfs`). Python LF
    files run code when loaded, so the API refuses them; built-in sets are code shipped with the product."""
    if (file is None) == (lfs is None):
        raise InputError("send either an LF file (`file`) or a built-in set name (`lfs`, e.g. "
                         f"{BUILTIN_PREFIX}instruction-quality), not {'both' if file else 'neither'}")
    if lfs is not None:
        return plain(weak.apply_lfs(store, name, builtin_name(lfs), force=force))
    assert file is not None
    suffix = PurePath(file.filename or "").suffix.lower()
    if suffix not in DECLARATIVE_LF_SUFFIXES:
        raise InputError(f"{file.filename}: the API applies only declarative LF files "
                         f"({', '.join(DECLARATIVE_LF_SUFFIXES)}); a Python LF file runs code when loaded, so "
                         f"apply it with `curate lf apply --lfs FILE` on the machine that owns the store")
    with uploaded(file) as path:
        return plain(weak.apply_lfs(store, name, path, force=force))


def builtin_name(value: str) -> str:
    """`builtin:NAME` (or NAME) of a registered built-in set, as `load_lfs` takes it; anything else (a path, an
    unknown name) is refused before it reaches the loader, which would open a path."""
    from labeling.builtin import BUILTIN_SETS

    key = value.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_SETS:
        raise InputError(f"lfs {value!r}: not a built-in LF set; valid: "
                         f"{', '.join(BUILTIN_PREFIX + k for k in sorted(BUILTIN_SETS))} (upload other LFs as a "
                         f"declarative file)")
    return BUILTIN_PREFIX + key


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
