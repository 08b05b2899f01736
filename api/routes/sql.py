"""`POST /sql`: read-only sandboxed SQL over the stable views."""

from fastapi import APIRouter

from api import schemas as S
from api.deps import StoreDep
from api.jobs import plain
from curation.sql import run_sql

router = APIRouter(tags=["sql"])


@router.post("/sql", response_model=S.SqlOut)
def sql(body: S.SqlIn, store: StoreDep) -> dict:
    """Read-only sandboxed SQL over the stable views (not mutating, so no API key needed)."""
    return plain(run_sql(store, body.query, limit=body.limit, timeout_s=body.timeout_s).to_json())
