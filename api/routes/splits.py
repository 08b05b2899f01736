"""Splits (make, check for leakage) and augmentation of the train split."""

from fastapi import APIRouter

from api import schemas as S
from api.deps import StoreDep
from api.jobs import plain
from curation import augment as augmentation
from curation import splits

router = APIRouter()


@router.post("/datasets/{name}/splits", response_model=S.SplitOut, tags=["splits"])
def make_split(name: str, body: S.SplitIn, store: StoreDep) -> dict:
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
    return plain(augmentation.augment(store, name, **body.model_dump(exclude_none=True)))
