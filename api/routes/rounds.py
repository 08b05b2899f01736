"""Rounds: request one (a job; never two of a dataset at once), list a dataset's rounds, show one."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import rounds as round_jobs
from api import schemas as S
from api.deps import Limit, Offset, RunnerDep, StoreDep, page
from api.jobs import plain

router = APIRouter(tags=["rounds"])


@router.post("/datasets/{name}/rounds", response_model=S.RoundRequestOut,
             responses={200: {"description": "a round was already queued or running; that one is returned"},
                        202: {"description": "a round job was queued"}})
def request_round(name: str, store: StoreDep, runner: RunnerDep, body: S.RoundIn | None = None) -> JSONResponse:
    out = round_jobs.request_round(store, runner, name, (body or S.RoundIn()).trigger)
    return JSONResponse(plain(out), status_code=202 if out["created"] else 200)


@router.get("/datasets/{name}/rounds", response_model=S.Page[S.RoundOut])
def list_rounds(name: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0) -> dict:
    items, total = round_jobs.list_rounds(store, name, limit, offset)
    return page(plain(items), total, limit, offset)


@router.get("/rounds/{round_id}", response_model=S.RoundOut)
def get_round(round_id: str, store: StoreDep) -> dict:
    return plain(round_jobs.get_round(store, round_id))
