"""Splits (make, check for leakage) and augmentation of the train split."""

from fastapi import APIRouter

from api import schemas as S
from api.deps import StoreDep
from api.jobs import plain
from curation import augment as augmentation
from curation import splits
from curation.errors import InputError

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
