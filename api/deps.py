"""What every route needs: the app's state, typed dependencies (store, runner, the caller's identity), and small
helpers (a page of items, polars rows as JSON, the JSON body of a webhook, uploads as temporary files).

Routes import from here, never from `api.app` (which only assembles the app).

Auth is not a per-route dependency: `api.security.SecurityMiddleware` checks every request against the one table
of route roles (`api.security.ROUTE_ROLES`) before a route runs, so a new route is covered (admin-only until it is
listed there).
"""

import contextlib
import datetime as dt
import json
import queue
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query, Request, UploadFile

from api.jobs import JobRunner, plain
from api.keys import KeyIdentity
from api.rounds import EventRecorder
from api.security import AuditWriter, HostPolicy, KeyRing, same_secret, upload_dir_prefix  # noqa: F401
from curation.errors import InputError
from curation.settings import Settings
from curation.store import Store

MAX_PAGE = 1000
MAX_OFFSET = 2**31 - 1   # DuckDB takes int64 offsets; no store is near 2**31 rows


class ApiError(Exception):
    """An error the API answers with a given status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# -- state ------------------------------------------------------------------------------------------------
@dataclass
class AppState:
    settings: Settings
    store: Store
    runner: JobRunner
    recorder: EventRecorder
    started_at: dt.datetime
    keyring: KeyRing
    audit: AuditWriter
    hosts: HostPolicy
    sql_pool: ThreadPoolExecutor
    sql_slots: threading.BoundedSemaphore = field(default_factory=threading.BoundedSemaphore)


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "curate", None)
    if state is None:
        raise ApiError(503, "starting", "the server is starting or stopping; retry in a moment")
    return state


def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


def get_runner(state: Annotated[AppState, Depends(get_state)]) -> JobRunner:
    return state.runner


StateDep = Annotated[AppState, Depends(get_state)]
StoreDep = Annotated[Store, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (at most {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]


def get_identity(request: Request) -> KeyIdentity | None:
    """The caller's key (name, role), as the security middleware found it; None in keyless mode."""
    return request.scope.get("state", {}).get("curate_identity")


IdentityDep = Annotated[KeyIdentity | None, Depends(get_identity)]


# -- helpers ----------------------------------------------------------------------------------------------
def page(items: list, total: int, limit: int, offset: int) -> dict:
    nxt = offset + len(items)
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next_offset": nxt if nxt < total else None}


def frame_rows(df: Any) -> list[dict]:
    """A polars frame as JSON-ready rows."""
    return plain(df.to_dicts())


def json_cols(row: dict, *cols: str) -> dict:
    """Parse the row's JSON text columns in place (a column that is not JSON stays text)."""
    for c in cols:
        if isinstance(row.get(c), str):
            with contextlib.suppress(ValueError):
                row[c] = json.loads(row[c])
    return row


async def json_body(request: Request) -> dict:
    """The request body as a JSON object (webhooks: Label Studio's payloads are not modelled field by field)."""
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as e:
        raise ApiError(400, "bad_request", f"the body is not JSON ({e})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return payload


def queue_event(state: AppState, payload: dict) -> int:
    """Hand a Label Studio event to the recorder; a full queue is a 503 with Retry-After (Label Studio does not
    retry, but the round's `pull_annotations` reconciles what was missed)."""
    try:
        return state.recorder.put(payload)
    except queue.Full:
        raise ApiError(503, "queue_full", f"{state.settings.webhook_queue_max} webhook events are waiting to be "
                                          f"stored (CURATE_WEBHOOK_QUEUE_MAX); retry later - the next round's pull "
                                          f"from Label Studio recovers this event", headers={"Retry-After": "5"}
                       ) from None


def _unreadable_types() -> tuple[type[BaseException], ...]:
    import polars as pl
    import pyarrow as pa

    return (pl.exceptions.PolarsError, pa.ArrowInvalid, UnicodeDecodeError, json.JSONDecodeError)


@contextlib.contextmanager
def uploaded(file: UploadFile) -> Iterator[Path]:
    """The upload as a temporary file with the client's suffix (the stages detect the format from it). A file the
    readers cannot parse (empty, not CSV/JSON/Parquet, wrong encoding) is the client's error: 400, not 500."""
    suffix = "".join(Path(file.filename or "upload").suffixes[-2:])
    with tempfile.TemporaryDirectory(prefix=upload_dir_prefix()) as d:
        path = Path(d) / f"upload{suffix}"
        with path.open("wb") as f:
            while chunk := file.file.read(1 << 20):
                f.write(chunk)
        try:
            yield path
        except _unreadable_types() as e:
            raise InputError(f"{file.filename or 'the upload'}: cannot read it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'empty'}); send a non-empty CSV, "
                             f"JSONL or Parquet file") from None
