"""The service: REST resources over the store, jobs, rounds, the Label Studio webhook and ML backend.

`create_app(settings, store=None)` builds the app: the error handlers and the routers of `api.routes` (one per
resource; their dependencies and helpers are in `api.deps`). The app opens one Store at startup (the process's
single writer) unless one is passed in, marks jobs a dead process left running as failed, and starts the job
runner and the webhook event recorder; at shutdown it stops them and closes the store it opened.

Security (`api.security`): one middleware checks every request before a route runs: Host and cross-site
checks, the key and its role against the one route→role table (`ROUTE_ROLES`), the content type, body size and
JSON depth; mutating requests go to the audit trail (`store.audit`). With any key configured every route but
`/health` and the docs needs one; without one the server is for loopback only (`curate serve` refuses a public
bind). Keys: `api.keys` and `curate keys`.

Errors are JSON `{"error": {"code", "message"}}`; a 500 carries an incident id, never a traceback.
"""

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import jobs as jobs_mod
from api import rounds as rounds_mod
from api.deps import ApiError, AppState
from api.jobs import StudioFactory
from api.routes import (
    datasets,
    health,
    jobs,
    keys,
    labeling,
    ml_backend,
    quality,
    rounds,
    runs,
    splits,
    sql,
    webhooks,
)
from api.security import AuditWriter, HostPolicy, KeyRing, SecurityMiddleware, clean_stale_uploads
from curation import errors as E
from curation.settings import Settings
from curation.store import Store

log = logging.getLogger(__name__)

VERSION = health.VERSION

ROUTERS = [health.router, datasets.router, sql.router, labeling.router, splits.router, runs.router, rounds.router,
           jobs.router, webhooks.router, keys.router, quality.router]

# own error type -> (status, code); the first matching base wins, so subclasses come first
ERROR_MAP: list[tuple[type[BaseException], int, str]] = [
    (jobs_mod.JobLimit, 429, "too_many_requests"),
    (jobs_mod.JobConflict, 409, "conflict"),
    (E.StoreLocked, 503, "store_locked"),
    (E.NotFound, 404, "not_found"),
    (E.SqlRefused, 400, "sql_refused"),
    (E.SqlLimit, 400, "sql_limit"),
    (E.LeakageError, 409, "leakage"),
    (E.InputError, 400, "invalid_input"),
    (E.CurateError, 400, "error"),
]
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
              422: "invalid_request", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, details: list | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, headers=e.headers)

    @app.exception_handler(E.CurateError)
    async def curate_error(_: Request, e: E.CurateError) -> JSONResponse:
        for cls, status, code in ERROR_MAP:
            if isinstance(e, cls):
                return error_response(status, code, str(e))
        return error_response(400, "error", str(e))   # pragma: no cover - CurateError is last in the map

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # keep where and why; drop the submitted values (they may hold secrets or whole documents)
        details = [{"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
                   for err in e.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(422, "invalid_request", f"the request does not validate: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(e.status_code, "http_error")
        message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail, default=str)
        if e.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see /docs for the API"
        return error_response(e.status_code, code, message, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s: %s %s failed", incident, request.method, request.url.path, exc_info=e)
        return error_response(500, "internal", f"internal error (incident {incident}); the server log has the "
                                               f"details")


def create_app(settings: Settings | None = None, store: Store | None = None, *,
               studio: StudioFactory | None = None, heavy_workers: int = 1,
               bind: tuple[str, int] | None = None) -> FastAPI:
    """The FastAPI app. Opens its own Store at startup unless `store` is given (then the caller closes it).
    `studio` makes the Label Studio client rounds push with (default: from settings, `CURATE_LS_URL` and
    `CURATE_LS_TOKEN`; none configured: rounds keep their selection in the store). `bind` (host, port) is where
    `curate serve` listens: the default allowed Host values are made from it."""
    settings = settings or (store.settings if store is not None else Settings())
    studio = studio or rounds_mod.studio_factory(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = Store.open(settings) if own else store
        try:
            interrupted = jobs_mod.recover_interrupted(st)
            clean_stale_uploads()
            runner = jobs_mod.JobRunner(st, heavy_workers=heavy_workers, studio=studio)
            recorder = rounds_mod.EventRecorder(st, runner)
            runner.on_finish.append(after_round(st, runner))
            keyring = KeyRing(st, settings)
            app.state.curate = AppState(
                settings, st, runner, recorder, dt.datetime.now(dt.UTC), keyring=keyring, audit=AuditWriter(st),
                hosts=HostPolicy(settings.allowed_hosts, bind),
                sql_pool=ThreadPoolExecutor(settings.sql_max_concurrent, thread_name_prefix="curate-sql",
                                            initializer=lower_thread_priority),
                sql_slots=threading.BoundedSemaphore(settings.sql_max_concurrent))
            log.info("curate service on %s (%d interrupted job(s) marked failed; auth: %s)", st.path,
                     len(interrupted), "keys" if keyring.keyed else "OPEN (keyless loopback mode)")
            yield
        finally:
            state = getattr(app.state, "curate", None)
            app.state.curate = None
            if state is not None:
                state.recorder.close()
                state.runner.shutdown()
                state.sql_pool.shutdown(wait=False, cancel_futures=True)
                state.audit.close()
            if own:
                st.close()

    app = FastAPI(title="curate", version=VERSION, lifespan=lifespan,
                  description="Data curation service: datasets, sandboxed SQL, weak supervision, splits, "
                              "augmentation, training runs, predictions, active-learning selections, Label Studio "
                              "rounds and jobs. With keys configured every endpoint but `/health` needs the "
                              "`X-API-Key` header (roles: annotator, engineer, trainer, admin). The Label Studio "
                              "ML backend is served under `/ml`.")
    app.add_middleware(SecurityMiddleware)
    app.state.curate = None
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ml_backend.router, prefix="/ml", tags=["label studio ml backend"])
    return app


def warm_imports() -> None:
    """Import the augmenters' library once, in the background (its first import takes seconds, 25 s on a busy
    machine; without this the first augment request pays it). `curate serve` calls it at start."""

    def run() -> None:
        import importlib

        for module in ("nlpaug.augmenter.char", "nlpaug.augmenter.word"):
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - optional: the augment route names what is missing
                log.info("augmenters not preloaded (%s: %s)", type(e).__name__, e)
                return

    threading.Thread(target=run, name="curate-warm-imports", daemon=True).start()


def lower_thread_priority() -> None:
    """SQL threads run at a lower CPU priority (nice +10, Linux per thread) than the event loop, so heavy queries
    on a busy machine cannot starve the webhook acknowledgement and /health."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def after_round(store: Store, runner: jobs_mod.JobRunner) -> Callable[[dict], None]:
    """After a round ends, annotations that arrived meanwhile may already call for the next one."""

    def hook(job: dict) -> None:
        if job["kind"] != "round" or runner.closed:
            return
        rounds_mod.maybe_trigger(store, runner, job["params"]["dataset"])

    return hook
