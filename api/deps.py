"""What every route needs: the app's state, typed dependencies (store, runner, auth), and small helpers
(a page of items, polars rows as JSON, the JSON body of a webhook, uploads as temporary files).

Routes import from here, never from `api.app` (which only assembles the app).

Auth: every mutating route (POST/PUT/PATCH/DELETE) takes `Auth` (the `X-API-Key` header must equal
`CURATE_API_KEY`, constant-time compare; without a configured key the server is open). The Label Studio webhook
and the ML backend take `WebhookAuth` (the webhook secret, `CURATE_WEBHOOK_SECRET`, else the API key) as a token
header, a bearer token, or the password of HTTP basic auth.
"""

import base64
import contextlib
import datetime as dt
import hmac
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, UploadFile

from api.jobs import JobRunner, plain
from api.rounds import EventRecorder
from curation.settings import Settings
from curation.store import Store
from labeling.studio import WEBHOOK_HEADER, verify_webhook_token

MAX_PAGE = 1000


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


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "curate", None)
    if state is None:
        raise ApiError(503, "starting", "the server is starting or stopping; retry in a moment")
    return state


def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


def get_runner(state: Annotated[AppState, Depends(get_state)]) -> JobRunner:
    return state.runner


# -- auth -------------------------------------------------------------------------------------------------
def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(state: Annotated[AppState, Depends(get_state)],
                    x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=False)] = None
                    ) -> None:
    """Mutating routes: the `X-API-Key` header must equal CURATE_API_KEY (open when no key is configured)."""
    key = state.settings.api_key
    if key is None:
        return
    if not x_api_key:
        raise ApiError(401, "unauthorized", "this endpoint changes data: send the API key in the X-API-Key "
                                            "header (the server's CURATE_API_KEY)",
                       headers={"WWW-Authenticate": "APIKey"})
    if not same_secret(x_api_key, key.get_secret_value()):
        raise ApiError(403, "forbidden", "the X-API-Key header does not match the server's CURATE_API_KEY")


def webhook_secret(settings: Settings) -> str | None:
    secret = settings.webhook_secret or settings.api_key
    return secret.get_secret_value() if secret is not None else None


def token_in_headers(headers: Mapping[str, str], secret: str) -> bool:
    """The secret as the `X-Curate-Webhook-Token` header, a bearer/token authorization, or a basic-auth password."""
    if verify_webhook_token(headers.get(WEBHOOK_HEADER), secret):
        return True
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and verify_webhook_token(value.strip(), secret):
        return True
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return verify_webhook_token(password, secret)
    return False


def require_webhook_token(request: Request, state: Annotated[AppState, Depends(get_state)]) -> None:
    """Label Studio webhooks and ML-backend calls: the webhook secret in the `X-Curate-Webhook-Token` header
    (what `labeling.studio.register_webhook` configures), as a bearer token, or as the basic-auth password."""
    secret = webhook_secret(state.settings)
    if secret is None or token_in_headers(request.headers, secret):
        return
    raise ApiError(401, "unauthorized", f"webhook token missing or wrong: Label Studio must send the "
                                        f"CURATE_WEBHOOK_SECRET (webhook header `{WEBHOOK_HEADER}`, or the password "
                                        f"of basic auth in the ML backend URL)",
                   headers={"WWW-Authenticate": 'Basic realm="curate"'})


StateDep = Annotated[AppState, Depends(get_state)]
StoreDep = Annotated[Store, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
Auth = [Depends(require_api_key)]
WebhookAuth = [Depends(require_webhook_token)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (at most {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]


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


@contextlib.contextmanager
def uploaded(file: UploadFile) -> Iterator[Path]:
    """The upload as a temporary file with the client's suffix (the stages detect the format from it)."""
    suffix = "".join(Path(file.filename or "upload").suffixes[-2:])
    with tempfile.TemporaryDirectory(prefix="curate-upload-") as d:
        path = Path(d) / f"upload{suffix}"
        with path.open("wb") as f:
            while chunk := file.file.read(1 << 20):
                f.write(chunk)
        yield path
