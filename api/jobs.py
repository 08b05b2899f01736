"""Jobs: long work (training, scoring, rounds) runs outside the request, recorded in `store.jobs`.

A job has an id, a kind, a status (`queued` → `running` → `succeeded` | `failed`), a progress in [0, 1], a short
message ("step 2/5: train"), its params, and a result or an error. The runner is in-process: one worker thread for
heavy jobs (they compete for the same CPU/GPU), so the request threads and the webhook stay free.

Each kind is a function `fn(ctx: JobContext) -> dict` registered with `@job_kind("name")`; a kind's params are
plain JSON, so a job can be run again from its row (`retry`). A job left `queued`/`running` by a process that
died is marked failed at the next start (`recover_interrupted`), with an error that says how to run it again.
"""

import datetime as dt
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from curation.errors import CurateError, InputError, NotFound
from curation.store import Store, equals_where, now

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed")
ACTIVE = ("queued", "running")


class JobCancelled(CurateError):
    """The server is shutting down; the job stopped at its next progress report."""


class JobConflict(CurateError):
    """The job cannot be retried or started in its current state."""


class JobLimit(CurateError):
    """As many jobs of this kind as `max_active_jobs` are queued or running (the API answers 429)."""


def plain(obj: Any) -> Any:
    """A JSON-ready copy (job results, responses): numpy scalars and arrays, dates, paths, result objects."""

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


StudioFactory = Callable[[], Any]


@dataclass
class JobContext:
    """What a job function gets: its params, the store, the Label Studio client factory, and `progress()`."""

    job_id: str
    kind: str
    params: dict
    store: Store
    studio: StudioFactory | None   # makes the Label Studio client (None: no Label Studio configured)
    runner: "JobRunner"
    _last_write: float = 0.0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float | None = None, message: str | None = None, *, force: bool = False) -> None:
        """Record progress (throttled to one write per 0.25 s). Raises JobCancelled when the server stops."""
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job_id} ({self.kind}) stopped: the server is shutting down; "
                               f"POST /jobs/{self.job_id}/retry to run it again")
        t = time.monotonic()
        if not force and t - self._last_write < 0.25 and (fraction is None or fraction < 1.0):
            return
        self._last_write = t
        sets, args = [], []
        if fraction is not None:
            sets.append("progress = ?")
            args.append(max(0.0, min(1.0, float(fraction))))
        if message is not None:
            sets.append("message = ?")
            args.append(message)
        if sets:
            with self.store.transaction() as cur:
                cur.execute(f"UPDATE store.jobs SET {', '.join(sets)} WHERE job_id = ?", [*args, self.job_id])

    def step_progress(self, start: float, end: float, message: str | None = None) -> Callable[..., None]:
        """A callback for a sub-step that reports its own fraction (or done/total) mapped into [start, end]."""

        def cb(done: float = 1, total: float | None = None, *_: Any, **__: Any) -> None:
            frac = done / total if total else done
            frac = max(0.0, min(1.0, float(frac)))
            self.progress(start + (end - start) * frac, message)

        return cb


JobFn = Callable[[JobContext], dict]
_KINDS: dict[str, tuple[JobFn, bool]] = {}


def job_kind(name: str, *, heavy: bool = True) -> Callable[[JobFn], JobFn]:
    """Register a job kind. Heavy kinds share one worker; light ones run beside them."""

    def deco(fn: JobFn) -> JobFn:
        _KINDS[name] = (fn, heavy)
        return fn

    return deco


def kind_fn(name: str) -> tuple[JobFn, bool]:
    if name not in _KINDS:
        raise InputError(f"unknown job kind {name!r}; valid: {', '.join(sorted(_KINDS)) or 'none registered'}")
    return _KINDS[name]


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]


def _row_to_job(row: tuple, columns: list[str]) -> dict:
    job = dict(zip(columns, row))
    for key in ("params", "result"):
        if isinstance(job.get(key), str):
            job[key] = json.loads(job[key])
    return job


_JOB_COLUMNS = ["job_id", "kind", "status", "progress", "message", "params", "result", "error", "retry_of",
                "created_at", "started_at", "finished_at"]
_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)} FROM store.jobs"


def get_job(store: Store, job_id: str) -> dict:
    rows = store.query(f"{_SELECT} WHERE job_id = ?", [job_id])
    if not rows:
        raise NotFound(f"no job {job_id!r}; list jobs with GET /jobs or `curate jobs`")
    return _row_to_job(rows[0], _JOB_COLUMNS)


def list_jobs(store: Store, *, kind: str | None = None, status: str | None = None, limit: int = 50,
              offset: int = 0) -> tuple[list[dict], int]:
    if status is not None and status not in STATUSES:
        raise InputError(f"status {status!r}: use one of {', '.join(STATUSES)}")
    clause, args = equals_where(kind=kind or None, status=status or None)
    total = store.one(f"SELECT count(*) FROM store.jobs{clause}", args)
    rows = store.query(f"{_SELECT}{clause} ORDER BY created_at DESC, job_id LIMIT ? OFFSET ?",
                       [*args, limit, offset])
    return [_row_to_job(r, _JOB_COLUMNS) for r in rows], total


def recover_interrupted(store: Store) -> list[str]:
    """Mark jobs, rounds and training runs a dead process left queued/running as failed. Returns the job ids."""
    at = now()
    with store.transaction() as cur:
        rows = cur.execute("SELECT job_id, status FROM store.jobs WHERE status IN ('queued', 'running')").fetchall()
        for job_id, status in rows:
            cur.execute("UPDATE store.jobs SET status = 'failed', finished_at = ?, message = 'failed', error = ? "
                        "WHERE job_id = ?",
                        [at, (f"interrupted: the job was {status} when the previous server process stopped "
                              f"(crash or kill); run it again with POST /jobs/{job_id}/retry or `curate jobs "
                              f"{job_id} --retry`"), job_id])
        ids = [r[0] for r in rows]
        cur.execute("UPDATE store.rounds SET status = 'failed', finished_at = ?, "
                    "error = 'interrupted: the server stopped during this round; request a new round' "
                    "WHERE status IN ('queued', 'running')", [at])
        runs = [r[0] for r in cur.execute("SELECT run_id FROM store.runs WHERE status = 'running'").fetchall()]
        cur.execute("UPDATE store.runs SET status = 'failed', finished_at = ?, "
                    "error = 'interrupted: the process training this run stopped (crash or kill); train again' "
                    "WHERE status = 'running'", [at])
    if ids:
        log.warning("marked %d interrupted job(s) failed: %s", len(ids), ", ".join(ids))
    if runs:
        log.warning("marked %d interrupted training run(s) failed: %s", len(runs), ", ".join(runs))
    return ids


class JobRunner:
    """An in-process job runner over the server's Store (the single writer). `studio` makes the Label Studio
    client the jobs push to and pull from (None: not configured)."""

    def __init__(self, store: Store, *, heavy_workers: int = 1, light_workers: int = 2,
                 studio: StudioFactory | None = None):
        self.store, self.studio = store, studio
        self._heavy = ThreadPoolExecutor(heavy_workers, thread_name_prefix="curate-heavy")
        self._light = ThreadPoolExecutor(light_workers, thread_name_prefix="curate-light")
        self._futures: dict[str, Future] = {}
        self._contexts: dict[str, JobContext] = {}
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._closed = False
        self.on_finish: list[Callable[[dict], None]] = []   # called with the finished job (e.g. rounds re-check)

    # -- submitting --------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once `shutdown` began (no new jobs)."""
        return self._closed

    def submit(self, kind: str, params: dict, *, retry_of: str | None = None, job_id: str | None = None) -> dict:
        """Record a queued job and hand it to a worker. Returns the job row."""
        fn, heavy = kind_fn(kind)
        if self._closed:
            raise JobConflict("the server is shutting down; submit the job again after it restarts")
        job_id = job_id or new_job_id()
        params_json = json.dumps(params, default=str)
        cap = self.store.settings.max_active_jobs
        with self._submit_lock, self.store.transaction() as cur:
            active = cur.execute("SELECT count(*) FROM store.jobs WHERE kind = ? AND status IN ('queued', "
                                 "'running')", [kind]).fetchall()[0][0]
            if active >= cap:
                raise JobLimit(f"{active} {kind} job(s) are queued or running (at most {cap} per kind, "
                               f"CURATE_MAX_ACTIVE_JOBS); wait for one to finish (GET /jobs?kind={kind}) and "
                               f"submit again")
            cur.execute("INSERT INTO store.jobs (job_id, kind, status, progress, message, params, retry_of, "
                        "created_at) VALUES (?, ?, 'queued', 0, 'queued', ?, ?, ?)",
                        [job_id, kind, params_json, retry_of, now()])
        queued = get_job(self.store, job_id)
        ctx = JobContext(job_id, kind, json.loads(params_json), self.store, self.studio, self)
        with self._lock:
            self._contexts[job_id] = ctx
            pool = self._heavy if heavy else self._light
            self._futures[job_id] = pool.submit(self._run, fn, ctx)
        return queued

    def retry(self, job_id: str) -> dict:
        """Run a failed job again as a new job with the same kind and params (`retry_of` links them)."""
        job = get_job(self.store, job_id)
        if job["status"] != "failed":
            raise JobConflict(f"job {job_id} is {job['status']}; only a failed job can be retried")
        retry = _RETRY_HOOKS.get(job["kind"])
        params = retry(self.store, job) if retry else job["params"]
        return self.submit(job["kind"], params, retry_of=job_id)

    def _run(self, fn: JobFn, ctx: JobContext) -> None:
        started = now()
        with self.store.transaction() as cur:
            cur.execute("UPDATE store.jobs SET status = 'running', started_at = ?, message = 'running' "
                        "WHERE job_id = ?", [started, ctx.job_id])
        status, result, error = "failed", None, None
        try:
            result = fn(ctx) or {}
            status = "succeeded"
        except CurateError as e:
            error = f"{type(e).__name__}: {e}"
            log.warning("job %s (%s) failed: %s", ctx.job_id, ctx.kind, error)
        except Exception as e:  # noqa: BLE001 - any failure ends the job: traceback in the log, summary in the row
            error = f"{type(e).__name__}: {e}"
            log.error("job %s (%s) crashed:\n%s", ctx.job_id, ctx.kind, traceback.format_exc())
        try:
            with self.store.transaction() as cur:
                cur.execute(
                    "UPDATE store.jobs SET status = ?, progress = CASE WHEN ? = 'succeeded' THEN 1 ELSE progress "
                    "END, message = ?, result = ?, error = ?, finished_at = ? WHERE job_id = ?",
                    [status, status, status, json.dumps(result, default=str) if result is not None else None,
                     error, now(), ctx.job_id])
        except Exception:
            log.exception("job %s: could not record its end (%s)", ctx.job_id, status)
        finally:
            with self._lock:
                self._contexts.pop(ctx.job_id, None)
        job = {"job_id": ctx.job_id, "kind": ctx.kind, "status": status, "params": ctx.params, "result": result,
               "error": error}
        for hook in list(self.on_finish):
            try:
                hook(job)
            except Exception:
                log.exception("job %s: on_finish hook failed", ctx.job_id)

    # -- waiting and stopping ------------------------------------------------------------------------------
    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """Block until the job ends (for tests and the local CLI). Returns the job row."""
        with self._lock:
            fut = self._futures.get(job_id)
        if fut is not None:
            fut.result(timeout=timeout)
        return get_job(self.store, job_id)

    def running(self) -> list[str]:
        with self._lock:
            return [j for j, f in self._futures.items() if not f.done()]

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, ask running ones to stop at their next progress report, and wait a while."""
        self._closed = True
        with self._lock:
            for ctx in self._contexts.values():
                ctx._cancel.set()
            futures = dict(self._futures)
        self._heavy.shutdown(wait=False, cancel_futures=True)
        self._light.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for job_id, fut in futures.items():
            if fut.cancelled():
                continue
            try:
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout or the job's own error (already recorded)
                log.warning("job %s still running at shutdown; it will be marked failed at the next start",
                            job_id)
        # jobs cancelled before they started are still 'queued' in the table
        cancelled = [j for j, f in futures.items() if f.cancelled()]
        if cancelled:
            with self.store.transaction() as cur:
                for job_id in cancelled:
                    cur.execute("UPDATE store.jobs SET status = 'failed', finished_at = ?, error = "
                                "'cancelled: the server stopped before the job started; retry it' "
                                "WHERE job_id = ? AND status = 'queued'", [now(), job_id])


# A kind may rewrite its params for a retry (e.g. a round gets a new round id).
_RETRY_HOOKS: dict[str, Callable[[Store, dict], dict]] = {}


def retry_hook(kind: str) -> Callable:
    def deco(fn: Callable[[Store, dict], dict]) -> Callable[[Store, dict], dict]:
        _RETRY_HOOKS[kind] = fn
        return fn

    return deco
