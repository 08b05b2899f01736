"""`POST /sql`: read-only sandboxed SQL over the stable views.

Queries run in the server's own small thread pool (`sql_max_concurrent` threads, not the request pool and never
the event loop), and at most that many at once: one more is answered 429 with Retry-After at once, so heavy SQL
cannot starve the webhook, `/health` or the other routes.
"""

import asyncio

from fastapi import APIRouter

from api import schemas as S
from api.deps import ApiError, StateDep
from api.jobs import plain
from curation.sql import run_sql

router = APIRouter(tags=["sql"])


@router.post("/sql", response_model=S.SqlOut,
             responses={429: {"description": "as many queries as CURATE_SQL_MAX_CONCURRENT are running; retry"}})
async def sql(body: S.SqlIn, state: StateDep) -> dict:
    """Read-only sandboxed SQL over the stable views (engineers and admins)."""
    if not state.sql_slots.acquire(blocking=False):
        raise ApiError(429, "too_many_requests", f"{state.settings.sql_max_concurrent} SQL queries are running "
                                                 f"(CURATE_SQL_MAX_CONCURRENT); retry in a moment",
                       headers={"Retry-After": "1"})
    try:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            state.sql_pool, lambda: run_sql(state.store, body.query, limit=body.limit, timeout_s=body.timeout_s))
        return plain(result.to_json())
    finally:
        state.sql_slots.release()
