"""Jobs: list, show (progress, result, error), retry a failed one."""

from fastapi import APIRouter

from api import jobs as jobs_mod
from api import schemas as S
from api.deps import Limit, Offset, RunnerDep, StoreDep, page
from api.jobs import plain

router = APIRouter(tags=["jobs"])


@router.get("/jobs", response_model=S.Page[S.JobOut])
def list_jobs(store: StoreDep, kind: str | None = None, status: str | None = None, limit: Limit = 50,
         offset: Offset = 0) -> dict:
    items, total = jobs_mod.list_jobs(store, kind=kind, status=status, limit=limit, offset=offset)
    return page(plain(items), total, limit, offset)


@router.get("/jobs/{job_id}", response_model=S.JobOut)
def get_job(job_id: str, store: StoreDep) -> dict:
    return plain(jobs_mod.get_job(store, job_id))


@router.post("/jobs/{job_id}/retry", response_model=S.JobOut, status_code=202)
def retry_job(job_id: str, runner: RunnerDep) -> dict:
    return plain(runner.retry(job_id))
