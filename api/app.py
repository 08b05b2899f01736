"""The service: REST resources over the store, jobs, rounds, the Label Studio webhook and ML backend.

`create_app(settings, store=None)` builds the app. The app opens one Store at startup (the process's single
writer) unless one is passed in, marks jobs a dead process left running as failed, and starts the job runner and
the webhook event recorder; at shutdown it stops them and closes the store it opened.

Auth: every mutating route (POST/PUT/PATCH/DELETE) needs the `X-API-Key` header equal to `CURATE_API_KEY`
(constant-time compare); without a configured key the server is open, and `curate serve` refuses to bind a
non-loopback address. The Label Studio webhook (`POST /webhooks/labelstudio`) and the ML backend (`/ml/...`)
take the webhook secret instead (`CURATE_WEBHOOK_SECRET`, else the API key): as a token header or as the password
of HTTP basic auth, which Label Studio sends for an ML backend URL like `http://curate:SECRET@host:8000/ml`.

Errors are JSON `{"error": {"code", "message"}}`; a 500 carries an incident id, never a traceback.
"""

import contextlib
import datetime as dt
import hmac
import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import jobs as jobs_mod
from api import rounds as rounds_mod
from api import schemas as S
from api.services import Services, ServiceUnavailable, call_with_supported
from curation import errors as E
from curation.settings import Settings
from curation.store import Store, equals_where

log = logging.getLogger(__name__)

VERSION = "0.1.0"
MAX_PAGE = 1000


# -- errors ---------------------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error the API answers with a given status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# own error type -> (status, code); the first matching base wins, so subclasses come first
ERROR_MAP: list[tuple[type[BaseException], int, str]] = [
    (ServiceUnavailable, 503, "stage_unavailable"),
    (jobs_mod.JobConflict, 409, "conflict"),
    (E.StoreLocked, 503, "store_locked"),
    (E.NotFound, 404, "not_found"),
    (E.SqlRefused, 400, "sql_refused"),
    (E.SqlLimit, 400, "sql_limit"),
    (E.LeakageError, 409, "leakage"),
    (E.InputError, 400, "invalid_input"),
    (E.CurateError, 400, "error"),
]
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, details: list | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, headers=e.headers)

    @app.exception_handler(E.CurateError)
    async def _curate_error(_: Request, e: E.CurateError) -> JSONResponse:
        for cls, status, code in ERROR_MAP:
            if isinstance(e, cls):
                return error_response(status, code, str(e))
        return error_response(400, "error", str(e))   # pragma: no cover - CurateError is last in the map

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # keep where and why; drop the submitted values (they may hold secrets or whole documents)
        details = [{"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
                   for err in e.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(422, "invalid_request", f"the request does not validate: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(e.status_code, "http_error")
        message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail, default=str)
        if e.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see /docs for the API"
        return error_response(e.status_code, code, message, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s: %s %s failed", incident, request.method, request.url.path, exc_info=e)
        return error_response(500, "internal", f"internal error (incident {incident}); the server log has the "
                                               f"details")


# -- state and dependencies -----------------------------------------------------------------------------------
@dataclass
class AppState:
    settings: Settings
    store: Store
    runner: jobs_mod.JobRunner
    recorder: rounds_mod.EventRecorder
    started_at: dt.datetime


def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "curate", None)
    if state is None:
        raise ApiError(503, "starting", "the server is starting or stopping; retry in a moment")
    return state


def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


def get_runner(state: Annotated[AppState, Depends(get_state)]) -> jobs_mod.JobRunner:
    return state.runner


def get_services(request: Request) -> Services:
    return request.app.state.services


def current_services(app: FastAPI) -> Services:
    """The services as routes see them (honours a dependency override, for the background threads too)."""
    override = app.dependency_overrides.get(get_services)
    return override() if override is not None else app.state.services


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(request: Request,
                    x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=False)] = None
                    ) -> None:
    """Mutating routes: the `X-API-Key` header must equal CURATE_API_KEY (open when no key is configured)."""
    key = get_state(request).settings.api_key
    if key is None:
        return
    if not x_api_key:
        raise ApiError(401, "unauthorized", "this endpoint changes data: send the API key in the X-API-Key "
                                            "header (the server's CURATE_API_KEY)",
                       headers={"WWW-Authenticate": "APIKey"})
    if not _same(x_api_key, key.get_secret_value()):
        raise ApiError(403, "forbidden", "the X-API-Key header does not match the server's CURATE_API_KEY")


def webhook_secret(settings: Settings) -> str | None:
    secret = settings.webhook_secret or settings.api_key
    return secret.get_secret_value() if secret is not None else None


WEBHOOK_HEADER = "X-Curate-Webhook-Token"   # labeling.studio.WEBHOOK_HEADER (register_webhook sends it)


def require_webhook_token(request: Request) -> None:
    """Label Studio webhooks and ML-backend calls: the webhook secret in the `X-Curate-Webhook-Token` header
    (what `labeling.studio.register_webhook` configures), as a bearer token, or as the basic-auth password."""
    secret = webhook_secret(get_state(request).settings)
    if secret is None:
        return
    if _token_from_headers(request.headers, secret):
        return
    raise ApiError(401, "unauthorized", f"webhook token missing or wrong: Label Studio must send the "
                                        f"CURATE_WEBHOOK_SECRET (webhook header `{WEBHOOK_HEADER}`, or the password "
                                        f"of basic auth in the ML backend URL)",
                   headers={"WWW-Authenticate": 'Basic realm="curate"'})


def _verify(given: str | None, secret: str) -> bool:
    try:
        from labeling.studio import verify_webhook_token
    except ImportError:
        return _same(given, secret)
    return bool(verify_webhook_token(given, secret))


def _token_from_headers(headers: Any, secret: str) -> bool:
    import base64

    if _verify(headers.get(WEBHOOK_HEADER), secret):
        return True
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and _verify(value.strip(), secret):
        return True
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return _verify(password, secret)
    return False


StoreDep = Annotated[Store, Depends(get_store)]
ServicesDep = Annotated[Services, Depends(get_services)]
RunnerDep = Annotated[jobs_mod.JobRunner, Depends(get_runner)]
StateDep = Annotated[AppState, Depends(get_state)]
Auth = [Depends(require_api_key)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (at most {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]


def plain(obj: Any) -> Any:
    """JSON-ready (numpy scalars/arrays, dates, paths, dataclasses with to_dict)."""

    def default(o: Any) -> Any:
        if hasattr(o, "to_dict"):
            return o.to_dict()
        if hasattr(o, "tolist"):
            return o.tolist()
        if hasattr(o, "model_dump"):
            return o.model_dump()
        if isinstance(o, (dt.datetime, dt.date)):
            return o.isoformat()
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def page(items: list, total: int, limit: int, offset: int) -> dict:
    nxt = offset + len(items)
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next_offset": nxt if nxt < total else None}


def frame_rows(df: Any) -> list[dict]:
    return plain(df.to_dicts())


# -- routes -----------------------------------------------------------------------------------------------------
def _routes() -> APIRouter:
    r = APIRouter()

    @r.get("/health", response_model=S.HealthOut, tags=["service"])
    def health(state: StateDep, services: ServicesDep) -> dict:
        store = state.store
        counts = dict(store.query("SELECT status, count(*) FROM store.jobs WHERE status IN ('queued', 'running') "
                                  "GROUP BY status"))
        stats = state.recorder.stats
        return {"status": "ok", "version": VERSION, "db": str(store.path),
                "schema_version": store.one("SELECT value FROM store.meta WHERE key = 'schema_version'"),
                "datasets": store.one("SELECT count(*) FROM store.datasets"),
                "jobs_running": counts.get("running", 0), "jobs_queued": counts.get("queued", 0),
                "auth": "api_key" if state.settings.api_key else "open",
                "webhook_events": {"received": stats.received, "recorded": stats.recorded, "failed": stats.failed,
                                   "rounds_started": stats.rounds_started, "last_error": stats.last_error},
                "stages": services.available()}

    # datasets ------------------------------------------------------------------------------------------------
    @r.get("/datasets", response_model=S.Page[S.DatasetOut], tags=["datasets"])
    def list_datasets(store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict:
        total = store.one("SELECT count(*) FROM store.datasets")
        rows = store.frame("SELECT d.*, s.settings FROM main.datasets d JOIN store.datasets s USING (name) "
                           "ORDER BY name LIMIT ? OFFSET ?", [limit, offset])
        items = frame_rows(rows)
        for it in items:
            it["settings"] = json.loads(it["settings"]) if it.get("settings") else {}
        return page(items, total, limit, offset)

    @r.get("/datasets/{name}", response_model=S.DatasetOut, tags=["datasets"])
    def get_dataset(name: str, store: StoreDep) -> dict:
        ds = store.dataset(name)
        ds["records"] = store.one("SELECT count(*) FROM store.records WHERE dataset = ?", [name])
        ds["settings"] = rounds_mod.round_config(store, name) | ds["settings"]
        return plain(ds)

    @r.patch("/datasets/{name}/settings", dependencies=Auth, tags=["datasets"])
    def set_settings(name: str, body: S.DatasetSettingsIn, store: StoreDep) -> dict:
        values = rounds_mod.validate_round_settings(body.model_dump(exclude_none=True))
        if "round_train" in values:
            _check_train_config(values["round_train"])
        store.dataset(name)
        return store.set_dataset_settings(name, **values)

    @r.post("/datasets/{name}/ingest", dependencies=Auth, tags=["datasets"], status_code=201)
    def ingest_upload(name: str, store: StoreDep, services: ServicesDep,
                      file: Annotated[UploadFile, File(description="CSV, JSONL or Parquet")],
                      text_field: Annotated[str, Form()] = "text",
                      label_field: Annotated[str | None, Form()] = None,
                      id_field: Annotated[str | None, Form()] = None,
                      group_field: Annotated[str | None, Form()] = None,
                      labels: Annotated[str | None, Form(description="comma-separated label set")] = None,
                      format: Annotated[str | None, Form(description="csv|jsonl|parquet (default: suffix)")] = None
                      ) -> dict:
        from curation.ingest import FieldMap

        fields = FieldMap(text=text_field, label=label_field, id=id_field, group=group_field)
        label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
        with _uploaded(file) as path:
            result = call_with_supported(services.ingest, store, path, name, fields=fields, labels=label_list,
                                         fmt=format)
        out = plain(result)
        out["file"] = file.filename
        return out

    @r.get("/datasets/{name}/records", response_model=S.Page[S.RecordOut], tags=["datasets"])
    def records(name: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0,
                label: Annotated[str | None, Query(description="gold label equals")] = None,
                labeled: Annotated[bool | None, Query(description="has a gold label")] = None,
                origin: Annotated[str | None, Query(pattern="^(ingest|augment)$")] = None,
                split: Annotated[str | None, Query(pattern="^(train|val|test)$")] = None,
                q: Annotated[str | None, Query(max_length=500, description="text contains (case-insensitive)")]
                = None,
                group: str | None = None) -> dict:
        store.dataset(name)
        where, args = ["r.dataset = ?"], [name]
        for col, val in (("r.label", label), ("r.origin", origin), ("s.split", split), ('r."group"', group)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if labeled is not None:
            where.append(f"r.label IS {'NOT ' if labeled else ''}NULL")
        if q:
            where.append("contains(lower(r.text), lower(?))")
            args.append(q)
        base = ("FROM main.records r LEFT JOIN (SELECT sp.record_id, sp.split FROM store.splits sp JOIN "
                "store.split_sets ss USING (split_id) WHERE ss.is_current AND ss.dataset = ?) s USING (record_id) "
                f"WHERE {' AND '.join(where)}")
        total = store.one(f"SELECT count(*) {base}", [name, *args])
        rows = store.frame(f"SELECT r.record_id, r.dataset, r.source_id, r.text, r.label, r.label_source, "
                           f"r.\"group\", r.meta, r.input_hash, r.origin, r.parent_id, s.split {base} "
                           f"ORDER BY r.record_id LIMIT ? OFFSET ?", [name, *args, limit, offset])
        items = frame_rows(rows)
        for it in items:
            if isinstance(it.get("meta"), str):
                with contextlib.suppress(ValueError):
                    it["meta"] = json.loads(it["meta"])
        return page(items, total, limit, offset)

    # SQL -----------------------------------------------------------------------------------------------------
    @r.post("/sql", response_model=S.SqlOut, tags=["sql"])
    def sql(body: S.SqlIn, store: StoreDep, services: ServicesDep) -> dict:
        """Read-only sandboxed SQL over the stable views (not mutating, so no API key needed)."""
        result = services.run_sql(store, body.query, limit=body.limit, timeout_s=body.timeout_s)
        return plain(result.to_json())

    # weak supervision ------------------------------------------------------------------------------------------
    @r.post("/datasets/{name}/lfs", dependencies=Auth, tags=["weak supervision"])
    def apply_lfs(name: str, store: StoreDep, services: ServicesDep,
                  file: Annotated[UploadFile, File(description="a declarative LF file (.yaml, .yml, .json)")]) -> dict:
        """Apply declarative LFs. Python LF files run code when loaded, so the API refuses them."""
        suffix = Path(file.filename or "").suffix.lower()
        if suffix not in DECLARATIVE_LF_SUFFIXES:
            raise E.InputError(f"{file.filename}: the API applies only declarative LF files "
                               f"({', '.join(DECLARATIVE_LF_SUFFIXES)}); a Python LF file runs code when loaded, so "
                               f"apply it with `curate lf apply --lfs FILE` on the machine that owns the store")
        with _uploaded(file) as path:
            return plain(services.apply_lfs(store, name, path))

    @r.post("/datasets/{name}/votes", dependencies=Auth, tags=["weak supervision"])
    def import_votes(name: str, store: StoreDep, services: ServicesDep,
                     file: Annotated[UploadFile, File(description="external LF votes")]) -> dict:
        with _uploaded(file) as path:
            return plain(services.import_votes(store, path, name))

    @r.get("/datasets/{name}/lfs/report", tags=["weak supervision"])
    def lf_report(name: str, store: StoreDep, services: ServicesDep) -> dict:
        return plain(services.lf_report(store, name))

    @r.post("/datasets/{name}/label-model", dependencies=Auth, tags=["weak supervision"])
    def label_model(name: str, body: S.LabelModelIn, store: StoreDep, services: ServicesDep) -> dict:
        return plain(services.fit_label_model(store, name, body.kind))

    # splits and augmentation -----------------------------------------------------------------------------------
    @r.post("/datasets/{name}/splits", dependencies=Auth, tags=["splits"])
    def make_split(name: str, body: S.SplitIn, store: StoreDep, services: ServicesDep) -> dict:
        opts = body.model_dump(exclude_none=True)
        ratios = opts.pop("ratios", None)
        args = [store, name] + ([tuple(ratios)] if ratios is not None else [])
        return plain(call_with_supported(services.make_split, *args, **opts))

    @r.get("/datasets/{name}/splits/check", tags=["splits"])
    def check_split(name: str, store: StoreDep, services: ServicesDep) -> dict:
        return plain(services.check_split(store, name))

    @r.post("/datasets/{name}/augment", dependencies=Auth, tags=["augmentation"])
    def augment(name: str, body: S.AugmentIn, store: StoreDep, services: ServicesDep) -> dict:
        return plain(call_with_supported(services.augment, store, name, **body.model_dump(exclude_none=True)))

    # runs and predictions ---------------------------------------------------------------------------------------
    @r.get("/runs", tags=["runs"])
    def list_runs(store: StoreDep, dataset: str | None = None, status: str | None = None, limit: Limit = 50,
                  offset: Offset = 0) -> dict:
        clause, args = equals_where(dataset=dataset or None, status=status or None)
        total = store.one(f"SELECT count(*) FROM main.runs {clause}", args)
        rows = store.frame(f"SELECT run_id, dataset, snapshot_id, status, metrics, error, started_at, finished_at "
                           f"FROM main.runs {clause} ORDER BY started_at DESC NULLS LAST, run_id "
                           f"LIMIT ? OFFSET ?", [*args, limit, offset])
        return page([_json_cols(x, "metrics") for x in frame_rows(rows)], total, limit, offset)

    @r.get("/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, store: StoreDep) -> dict:
        rows = frame_rows(store.frame("SELECT * FROM main.runs WHERE run_id = ?", [run_id]))
        if not rows:
            raise E.NotFound(f"no run {run_id!r}; list runs with GET /runs")
        return _json_cols(rows[0], "config", "data_counts", "history", "metrics")

    @r.post("/runs", dependencies=Auth, response_model=S.JobOut, status_code=202, tags=["runs"])
    def start_training(body: S.TrainIn, store: StoreDep, runner: RunnerDep, services: ServicesDep) -> dict:
        store.dataset(body.dataset)
        _check_train_config(body.config)
        return runner.submit("train", body.model_dump(), services)

    @r.post("/runs/{run_id}/score", dependencies=Auth, response_model=S.JobOut, status_code=202, tags=["runs"])
    def start_scoring(run_id: str, body: S.ScoreIn, store: StoreDep, runner: RunnerDep,
                      services: ServicesDep) -> dict:
        if not store.one("SELECT count(*) FROM store.runs WHERE run_id = ?", [run_id]):
            raise E.NotFound(f"no run {run_id!r}; list runs with GET /runs")
        return runner.submit("score", {"run_id": run_id, **body.model_dump()}, services)

    @r.get("/runs/{run_id}/predictions", tags=["runs"])
    def predictions(run_id: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0,
                    label: str | None = None,
                    order: Annotated[str, Query(pattern="^(record_id|uncertain|confident)$")] = "record_id") -> dict:
        if not store.one("SELECT count(*) FROM store.runs WHERE run_id = ?", [run_id]):
            raise E.NotFound(f"no run {run_id!r}; list runs with GET /runs")
        where, args = ["p.run_id = ?"], [run_id]
        if label is not None:
            where.append("p.label = ?")
            args.append(label)
        order_by = {"record_id": "p.record_id", "uncertain": "p.confidence ASC, p.record_id",
                    "confident": "p.confidence DESC, p.record_id"}[order]
        clause = " AND ".join(where)
        total = store.one(f"SELECT count(*) FROM main.predictions p WHERE {clause}", args)
        rows = store.frame(f"SELECT p.record_id, r.text, p.label, p.probs, p.confidence, p.least_confidence, "
                           f"p.margin, p.entropy, p.scored_at FROM main.predictions p JOIN store.records r "
                           f"USING (record_id) WHERE {clause} ORDER BY {order_by} LIMIT ? OFFSET ?",
                           [*args, limit, offset])
        return page(frame_rows(rows), total, limit, offset)

    # selections ---------------------------------------------------------------------------------------------------
    @r.post("/selections", dependencies=Auth, tags=["selections"], status_code=201)
    def select(body: S.SelectIn, store: StoreDep, services: ServicesDep) -> dict:
        return plain(call_with_supported(services.select, store, body.run_id, body.strategy, body.n,
                                         seed=body.seed, round=body.round))

    @r.get("/selections", tags=["selections"])
    def list_selections(store: StoreDep, dataset: str | None = None, limit: Limit = 50,
                        offset: Offset = 0) -> dict:
        clause, args = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
        total = store.one(f"SELECT count(DISTINCT selection_id) FROM main.selections {clause}", args)
        rows = store.frame(f"SELECT selection_id, any_value(dataset) AS dataset, any_value(round) AS round, "
                           f"any_value(run_id) AS run_id, any_value(strategy) AS strategy, count(*) AS n, "
                           f"min(created_at) AS created_at FROM main.selections {clause} GROUP BY selection_id "
                           f"ORDER BY created_at DESC, selection_id LIMIT ? OFFSET ?", [*args, limit, offset])
        return page(frame_rows(rows), total, limit, offset)

    @r.get("/selections/{selection_id}", tags=["selections"])
    def get_selection(selection_id: str, store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict:
        total = store.one("SELECT count(*) FROM main.selections WHERE selection_id = ?", [selection_id])
        if not total:
            raise E.NotFound(f"no selection {selection_id!r}; list them with GET /selections")
        rows = store.frame("SELECT s.record_id, s.rank, s.score, s.strategy, s.round, s.run_id, r.text "
                           "FROM main.selections s JOIN store.records r USING (record_id) WHERE s.selection_id = ? "
                           "ORDER BY s.rank LIMIT ? OFFSET ?", [selection_id, limit, offset])
        return page(frame_rows(rows), total, limit, offset)

    # rounds ---------------------------------------------------------------------------------------------------------
    @r.post("/datasets/{name}/rounds", dependencies=Auth, response_model=S.RoundRequestOut, tags=["rounds"],
            responses={200: {"description": "a round was already queued or running; that one is returned"},
                       202: {"description": "a round job was queued"}})
    def request_round(name: str, store: StoreDep, runner: RunnerDep, services: ServicesDep,
                      body: S.RoundIn | None = None) -> JSONResponse:
        out = rounds_mod.request_round(store, runner, services, name, (body or S.RoundIn()).trigger)
        return JSONResponse(plain(out), status_code=202 if out["created"] else 200)

    @r.get("/datasets/{name}/rounds", response_model=S.Page[S.RoundOut], tags=["rounds"])
    def list_rounds(name: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0) -> dict:
        items, total = rounds_mod.list_rounds(store, name, limit, offset)
        return page(plain(items), total, limit, offset)

    @r.get("/rounds/{round_id}", response_model=S.RoundOut, tags=["rounds"])
    def get_round(round_id: str, store: StoreDep) -> dict:
        return plain(rounds_mod.get_round(store, round_id))

    # jobs -------------------------------------------------------------------------------------------------------------
    @r.get("/jobs", response_model=S.Page[S.JobOut], tags=["jobs"])
    def list_jobs(store: StoreDep, kind: str | None = None, status: str | None = None, limit: Limit = 50,
                  offset: Offset = 0) -> dict:
        items, total = jobs_mod.list_jobs(store, kind=kind, status=status, limit=limit, offset=offset)
        return page(plain(items), total, limit, offset)

    @r.get("/jobs/{job_id}", response_model=S.JobOut, tags=["jobs"])
    def get_job(job_id: str, store: StoreDep) -> dict:
        return plain(jobs_mod.get_job(store, job_id))

    @r.post("/jobs/{job_id}/retry", dependencies=Auth, response_model=S.JobOut, status_code=202, tags=["jobs"])
    def retry_job(job_id: str, runner: RunnerDep, services: ServicesDep) -> dict:
        return plain(runner.retry(job_id, services))

    # Label Studio webhook -----------------------------------------------------------------------------------------
    @r.post("/webhooks/labelstudio", dependencies=[Depends(require_webhook_token)], response_model=S.WebhookAck,
            tags=["label studio"])
    async def ls_webhook(request: Request, state: StateDep) -> dict:
        """Queue the event and answer at once; a recorder thread stores it and checks the round trigger."""
        return {"accepted": True, "queued": state.recorder.put(await _json_body(request))}

    return r


async def _json_body(request: Request) -> dict:
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as e:
        raise ApiError(400, "bad_request", f"the body is not JSON ({e})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return payload


def _json_cols(row: dict, *cols: str) -> dict:
    for c in cols:
        if isinstance(row.get(c), str):
            with contextlib.suppress(ValueError):
                row[c] = json.loads(row[c])
    return row


def _check_train_config(config: dict) -> None:
    try:
        from training.config import TrainConfig
    except ImportError:
        return
    from pydantic import ValidationError

    try:
        TrainConfig(**config)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise E.InputError(f"config: {problems}") from None


DECLARATIVE_LF_SUFFIXES = (".yaml", ".yml", ".json")


@contextlib.contextmanager
def _uploaded(file: UploadFile) -> Any:
    """The upload as a temporary file with the client's suffix (ingest detects the format from it)."""
    suffix = "".join(Path(file.filename or "upload").suffixes[-2:])
    with tempfile.TemporaryDirectory(prefix="curate-upload-") as d:
        path = Path(d) / f"upload{suffix}"
        with path.open("wb") as f:
            while chunk := file.file.read(1 << 20):
                f.write(chunk)
        yield path


# -- the heavy job kinds the API starts ------------------------------------------------------------------------------
@jobs_mod.job_kind("train")
def _train_job(ctx: jobs_mod.JobContext) -> dict:
    config = rounds_mod._train_config(ctx.params.get("config") or {})
    run = call_with_supported(ctx.services.train, ctx.store, ctx.params["dataset"], config,
                              progress=ctx.step_progress(0.0, 1.0, "train"))
    return plain(run)


@jobs_mod.job_kind("score")
def _score_job(ctx: jobs_mod.JobContext) -> dict:
    p = ctx.params
    return plain(call_with_supported(ctx.services.score, ctx.store, p["run_id"], p.get("dataset"),
                                     p.get("include_labeled", False),
                                     progress=ctx.step_progress(0.0, 1.0, "score")))


# -- the app ----------------------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, store: Store | None = None, *, services: Services | None = None,
               studio: Callable[[], Any] | None = None, heavy_workers: int = 1) -> FastAPI:
    """The FastAPI app. Opens its own Store at startup unless `store` is given (then the caller closes it).
    `studio` makes the Label Studio client rounds push with (default: from settings/environment)."""
    settings = settings or (store.settings if store is not None else Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = Store.open(settings) if own else store
        try:
            interrupted = jobs_mod.recover_interrupted(st)
            runner = jobs_mod.JobRunner(st, heavy_workers=heavy_workers)
            recorder = rounds_mod.EventRecorder(st, runner, lambda: current_services(app))
            runner.on_finish.append(_after_round(app, st, runner))
            app.state.curate = AppState(settings, st, runner, recorder, dt.datetime.now(dt.UTC))
            log.info("curate service on %s (%d interrupted job(s) marked failed; auth: %s)", st.path,
                     len(interrupted), "api key" if settings.api_key else "OPEN (no CURATE_API_KEY)")
            yield
        finally:
            state = getattr(app.state, "curate", None)
            app.state.curate = None
            if state is not None:
                state.recorder.close()
                state.runner.shutdown()
            if own:
                st.close()

    app = FastAPI(title="curate", version=VERSION, lifespan=lifespan,
                  description="Data curation service: datasets, sandboxed SQL, weak supervision, splits, "
                              "augmentation, training runs, predictions, active-learning selections, Label Studio "
                              "rounds and jobs. Mutating endpoints need the `X-API-Key` header. The Label Studio "
                              "ML backend is served under `/ml`.")
    app.state.services = services or Services()
    app.state.curate = None
    if studio is not None:
        app.state.services.studio = studio
    elif app.state.services.studio is None:
        app.state.services.studio = _studio_factory(settings)
    _install_error_handlers(app)
    app.include_router(_routes())
    from api.ml_backend import router as ml_router

    app.include_router(ml_router, prefix="/ml", tags=["label studio ml backend"])
    return app


def _after_round(app: FastAPI, store: Store, runner: jobs_mod.JobRunner) -> Callable[[dict], None]:
    """After a round ends, annotations that arrived meanwhile may already call for the next one."""

    def hook(job: dict) -> None:
        if job["kind"] != "round" or runner._closed:
            return
        rounds_mod.maybe_trigger(store, runner, current_services(app), job["params"]["dataset"])

    return hook


def _studio_factory(settings: Settings) -> Callable[[], Any] | None:
    """The Label Studio client for round pulls and pushes (`CURATE_LS_URL`, `CURATE_LS_TOKEN`). None when not
    configured (rounds then keep their selection in the store and push nothing)."""
    url = settings.ls_url
    token = settings.ls_token.get_secret_value() if settings.ls_token else None
    if not url or not token:
        return None

    def factory() -> Any:
        from labeling.studio import StudioClient

        return StudioClient(url, token)

    return factory
