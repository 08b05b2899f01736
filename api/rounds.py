"""The jobs the service runs: `train`, `score`, and the round (pull → snapshot → train → score → select → push,
one job per round, recorded in `store.rounds`). No FastAPI here: the CLI runs a round with the same code.

The stages are called directly (`train`, `score`, `select`, `push_selection`, `pull_annotations`,
`handle_webhook`, imported below); tests swap one with `monkeypatch.setattr(api.rounds, "train", fake)`.

A round starts on request (`POST /datasets/{name}/rounds`, `curate round`, Label Studio's "Start training") or
by itself after every N new annotations of a dataset (`round_every`, a per-dataset setting). Never two rounds of
a dataset at once: a request while one is queued or running returns that one.

Per-dataset settings (`store.set_dataset_settings(name, ...)` or `PATCH /datasets/{name}/settings`):

| key | default | meaning |
|---|---|---|
| `round_every` | 50 | new (not yet used) annotations that start a round; 0 turns automatic rounds off |
| `round_size` | 50 | tasks selected and pushed to Label Studio per round |
| `round_strategy` | `margin` | the active-learning strategy (`labeling.active`, the same default as `curate select`); instruction datasets: `highest_loss` |
| `round_seed` | 0 | base seed; a round uses `round_seed + number` |
| `round_train` | `{}` | training options (`training.config.TrainConfig` fields; instruction datasets: `training.sft_runs.SftRunConfig`) |

Annotation events arrive on the webhook; the webhook only queues them (`EventRecorder`) and answers at once; a
recorder thread stores them (`labeling.studio.handle_webhook`) and checks the round trigger. Events missed while
the server was down are reconciled by the round's first step (`pull_annotations`).
"""

import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.jobs import JobConflict, JobContext, JobRunner, StudioFactory, job_kind, plain, retry_hook
from curation.errors import InputError, NotFound
from curation.settings import Settings
from curation.store import Store, now
from labeling.active import PoolExhausted, select
from labeling.active.strategies import DEFAULT_STRATEGY
from labeling.studio import StudioClient, handle_webhook, pull_annotations, push_selection
from training.config import TrainConfig
from training.score import score
from training.train import train

log = logging.getLogger(__name__)

ROUND_DEFAULTS: dict[str, Any] = {
    "round_every": 50,
    "round_size": 50,
    "round_strategy": DEFAULT_STRATEGY,
    "round_seed": 0,
    "round_train": {},
}
_ROUND_KEYS = set(ROUND_DEFAULTS)
_round_lock = threading.Lock()   # one check-and-insert of a round at a time (never two rounds of a dataset)


def round_config(store: Store, dataset: str) -> dict:
    """The dataset's round settings over the defaults."""
    stored = store.dataset(dataset)["settings"]
    cfg = dict(ROUND_DEFAULTS)
    cfg.update({k: v for k, v in stored.items() if k in _ROUND_KEYS})
    if "round_strategy" not in stored and _is_instruction(store, dataset):
        cfg["round_strategy"] = "highest_loss"     # SFT runs: their pool is ranked by response loss
    return cfg


def _is_instruction(store: Store, dataset: str) -> bool:
    return store.one("SELECT task FROM store.datasets WHERE name = ?", [dataset]) == "instruction"


def validate_round_settings(values: dict) -> dict:
    """Check round settings before they are stored; the message names the key and the valid ones."""
    unknown = set(values) - _ROUND_KEYS
    if unknown:
        raise InputError(f"unknown round setting(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(sorted(_ROUND_KEYS))}")
    for key in ("round_every", "round_size", "round_seed"):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 0):
            raise InputError(f"{key}={values[key]!r}: use an integer >= 0")
    if values.get("round_size") == 0:
        raise InputError("round_size=0: a round must select at least 1 task")
    if "round_train" in values and not isinstance(values["round_train"], dict):
        raise InputError("round_train: use an object of training options (TrainConfig fields)")
    if "round_strategy" in values and not isinstance(values["round_strategy"], str):
        raise InputError("round_strategy: use a strategy name")
    return values


def count_annotations(store: Store, dataset: str) -> int:
    """Live (not deleted, not cancelled) annotations of the dataset's records."""
    return store.one("SELECT count(*) FROM store.annotations a JOIN store.records r USING (record_id) "
                     "WHERE r.dataset = ? AND NOT a.deleted AND NOT coalesce(a.was_cancelled, false)",
                     [dataset]) or 0


def ls_project(store: Store, dataset: str) -> int | None:
    return store.one("SELECT project_id FROM store.ls_projects WHERE dataset = ?", [dataset])


def dataset_of_project(store: Store, project_id: int) -> str | None:
    return store.one("SELECT dataset FROM store.ls_projects WHERE project_id = ?", [project_id])


_ROUND_COLUMNS = ["round_id", "dataset", "number", "status", "trigger", "annotations_used", "snapshot_id",
                  "run_id", "metrics", "selection_id", "tasks_pushed", "job_id", "error", "created_at",
                  "started_at", "finished_at"]


def _round_rows(store: Store, where: str, params: list) -> list[dict]:
    rows = store.query(f"SELECT {', '.join(_ROUND_COLUMNS)} FROM store.rounds WHERE {where}", params)
    out = []
    for r in rows:
        d = dict(zip(_ROUND_COLUMNS, r))
        if isinstance(d["metrics"], str):
            d["metrics"] = json.loads(d["metrics"])
        out.append(d)
    return out


def get_round(store: Store, round_id: str) -> dict:
    rows = _round_rows(store, "round_id = ?", [round_id])
    if not rows:
        raise NotFound(f"no round {round_id!r}; list a dataset's rounds with GET /datasets/NAME/rounds")
    return rows[0]


def list_rounds(store: Store, dataset: str, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    store.dataset(dataset)
    total = store.one("SELECT count(*) FROM store.rounds WHERE dataset = ?", [dataset])
    return _round_rows(store, "dataset = ? ORDER BY number DESC LIMIT ? OFFSET ?", [dataset, limit, offset]), total


def _set_round(store: Store, round_id: str, **values: Any) -> None:
    if "metrics" in values and values["metrics"] is not None:
        values["metrics"] = json.dumps(values["metrics"], default=str)
    cols = ", ".join(f"{k} = ?" for k in values)
    with store.transaction() as cur:
        cur.execute(f"UPDATE store.rounds SET {cols} WHERE round_id = ?", [*values.values(), round_id])


def _new_round_row(store: Store, dataset: str, trigger: str) -> dict:
    """Insert a queued round (caller holds _round_lock and checked that none is active)."""
    with store.transaction() as cur:
        number = cur.execute("SELECT coalesce(max(number), 0) + 1 FROM store.rounds WHERE dataset = ?",
                             [dataset]).fetchall()[0][0]
        round_id = f"{dataset}.r{number}"
        cur.execute("INSERT INTO store.rounds (round_id, dataset, number, status, trigger, created_at) "
                    "VALUES (?, ?, ?, 'queued', ?, ?)", [round_id, dataset, number, trigger, now()])
    return {"round_id": round_id, "number": number}


def active_round(store: Store, dataset: str) -> dict | None:
    rows = _round_rows(store, "dataset = ? AND status IN ('queued', 'running') ORDER BY number", [dataset])
    return rows[0] if rows else None


def request_round(store: Store, runner: JobRunner, dataset: str, trigger: str = "request") -> dict:
    """Queue a round of `dataset` unless one is queued or running. Returns `{created, round, job}`."""
    store.dataset(dataset)   # NotFound names the known datasets
    with _round_lock:
        current = active_round(store, dataset)
        if current is not None:
            return {"created": False, "round": current, "job_id": current["job_id"]}
        row = _new_round_row(store, dataset, trigger)
        try:
            job = runner.submit("round", {"dataset": dataset, "round_id": row["round_id"], "trigger": trigger})
        except BaseException as e:
            _set_round(store, row["round_id"], status="failed", finished_at=now(),
                       error=f"could not queue the round job: {e}")
            raise
        _set_round(store, row["round_id"], job_id=job["job_id"])
    return {"created": True, "round": get_round(store, row["round_id"]), "job_id": job["job_id"]}


def pending_annotations(store: Store, dataset: str) -> tuple[int, int]:
    """(annotations now, annotations the last finished round started from)."""
    used = store.one("SELECT max(annotations_used) FROM store.rounds WHERE dataset = ? "
                     "AND status IN ('succeeded', 'failed')", [dataset]) or 0
    return count_annotations(store, dataset), used


def maybe_trigger(store: Store, runner: JobRunner, dataset: str) -> dict | None:
    """Start a round when `round_every` new annotations arrived since the last round started. Else None."""
    every = round_config(store, dataset)["round_every"]
    if not every or active_round(store, dataset) is not None:
        return None
    n, used = pending_annotations(store, dataset)
    if n - used < every:
        return None
    log.info("dataset %s: %d new annotations (round_every=%d): starting a round", dataset, n - used, every)
    return request_round(store, runner, dataset, trigger=f"annotations:{n - used}")


def check_train_config(config: dict, sft: bool = False):
    """Training options as a TrainConfig (an instruction dataset's: `training.sft_runs.SftRunConfig`); InputError
    names each bad field (checked before a job is queued)."""
    if sft:
        from training.sft_runs import sft_config

        return sft_config(config)
    try:
        return TrainConfig(**config)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InputError(f"config: {problems}") from None


def studio_factory(settings: Settings) -> StudioFactory | None:
    """The Label Studio client for round pulls and pushes (`CURATE_LS_URL`, `CURATE_LS_TOKEN`). None when not
    configured (rounds then keep their selection in the store and push nothing)."""
    url = settings.ls_url
    token = settings.ls_token.get_secret_value() if settings.ls_token else None
    if not url or not token:
        return None
    return lambda: StudioClient(url, token)


# -- the heavy job kinds ----------------------------------------------------------------------------------
@job_kind("train")
def train_job(ctx: JobContext) -> dict:
    from training.sft_runs import is_sft

    dataset = ctx.params["dataset"]
    config = check_train_config(ctx.params.get("config") or {}, is_sft(ctx.store, dataset))
    return plain(train(ctx.store, dataset, config, progress=ctx.step_progress(0.0, 1.0, "train")))


@job_kind("score")
def score_job(ctx: JobContext) -> dict:
    p = ctx.params
    return plain(score(ctx.store, p["run_id"], p.get("dataset"), p.get("include_labeled", False),
                       progress=ctx.step_progress(0.0, 1.0, "score")))


@job_kind("round")
def run_round(ctx: JobContext) -> dict:
    """The round job. Each step's result is kept in the job's result and the round's row."""
    store = ctx.store
    dataset, round_id = ctx.params["dataset"], ctx.params["round_id"]
    rnd = get_round(store, round_id)
    number = rnd["number"]
    cfg = round_config(store, dataset)
    _set_round(store, round_id, status="running", started_at=now(), job_id=ctx.job_id,
               annotations_used=count_annotations(store, dataset))
    result: dict[str, Any] = {"round_id": round_id, "dataset": dataset, "number": number,
                              "trigger": ctx.params.get("trigger")}
    client = None
    try:
        client = ctx.studio() if ctx.studio is not None else None   # None: the selection stays in the store

        ctx.progress(0.01, "step 1/5: pull annotations from Label Studio", force=True)
        if client is not None and ls_project(store, dataset) is not None:
            result["pulled"] = plain(pull_annotations(store, dataset, client))
        used = count_annotations(store, dataset)
        result["annotations_used"] = used
        _set_round(store, round_id, annotations_used=used)

        # training takes the snapshot itself (curation.versions.snapshot), so the run names it
        ctx.progress(0.05, "step 2/5: snapshot and train", force=True)
        run = train(store, dataset, check_train_config(cfg["round_train"], _is_instruction(store, dataset)),
                    progress=ctx.step_progress(0.05, 0.7, "step 2/5: snapshot and train"))
        run_id = run["run_id"]
        result["run_id"], result["snapshot_id"] = run_id, run.get("snapshot_id")
        result["metrics"] = plain(run.get("metrics"))
        _set_round(store, round_id, run_id=run_id, snapshot_id=run.get("snapshot_id"), metrics=result["metrics"])

        unlabeled = store.one("SELECT count(*) FROM store.records r LEFT JOIN store.gold_labels g USING "
                              "(record_id) WHERE r.dataset = ? AND r.origin = 'ingest' AND g.record_id IS NULL",
                              [dataset])
        if not unlabeled:
            result.update(scored=0, selection_id=None, selected=0, tasks_pushed=0,
                          push={"skipped": "pool exhausted: every record has a gold label"})
            _set_round(store, round_id, status="succeeded", tasks_pushed=0, finished_at=now())
            return result

        ctx.progress(0.7, "step 3/5: score the pool", force=True)
        scored = score(store, run_id, dataset, progress=ctx.step_progress(0.7, 0.9, "step 3/5: score the pool"))
        result["scored"] = scored["scored"]

        ctx.progress(0.9, "step 4/5: select", force=True)
        sel = select_round(store, run_id, cfg, number)
        if sel is None:
            result.update(selection_id=None, selected=0, tasks_pushed=0,
                          push={"skipped": "pool exhausted: every scored record is labeled or pending"})
            _set_round(store, round_id, status="succeeded", tasks_pushed=0, finished_at=now())
            return result
        result["selection_id"] = sel["selection_id"]
        result["selected"] = sel["n"]
        _set_round(store, round_id, selection_id=result["selection_id"])

        ctx.progress(0.95, "step 5/5: push to Label Studio", force=True)
        if client is not None:
            pushed = push_selection(store, result["selection_id"], run_id=run_id, client=client)
            result["push"] = plain(pushed)
            tasks_pushed = pushed["created"]
        else:
            result["push"] = {"skipped": "no Label Studio configured (CURATE_LS_URL, CURATE_LS_TOKEN); the "
                                         "selection is in store.selections"}
            tasks_pushed = 0
        result["tasks_pushed"] = tasks_pushed
        _set_round(store, round_id, status="succeeded", tasks_pushed=tasks_pushed, finished_at=now())
        return result
    except BaseException as e:
        _set_round(store, round_id, status="failed", finished_at=now(), error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if client is not None:
            client.close()


def select_round(store: Store, run_id: str, cfg: dict, number: int) -> dict | None:
    """Select `round_size` records; near the end of the pool, as many as are left (None: none left)."""
    n = cfg["round_size"]
    for _ in range(2):
        try:
            return select(store, run_id, cfg["round_strategy"], n, seed=cfg["round_seed"] + number, round=number)
        except PoolExhausted as e:
            n = e.available
            if n == 0:
                return None
            log.info("round %d: pool has %d selectable records (< round_size %d)", number, n, cfg["round_size"])
    return None


@retry_hook("round")
def _retry_round(store: Store, job: dict) -> dict:
    """A retried round is a new round (new number) of the same dataset."""
    dataset = job["params"]["dataset"]
    with _round_lock:
        current = active_round(store, dataset)
        if current is not None:
            raise JobConflict(f"dataset {dataset} already has round {current['round_id']} {current['status']} "
                              f"(job {current['job_id']}); wait for it instead of retrying")
        row = _new_round_row(store, dataset, f"retry:{job['job_id']}")
    return {"dataset": dataset, "round_id": row["round_id"], "trigger": f"retry:{job['job_id']}"}


# -- webhook events ---------------------------------------------------------------------------------------
@dataclass
class RecorderStats:
    received: int = 0
    recorded: int = 0
    failed: int = 0
    refused: int = 0          # answered 503: the queue was full
    rounds_started: int = 0
    last_error: str | None = None
    errors_by_action: dict[str, int] = field(default_factory=dict)


class EventRecorder:
    """Queue of Label Studio events, stored by one thread so the webhook answers without waiting on the writer.

    Each event goes to `labeling.studio.handle_webhook(store, payload)`; after each event the recorder checks
    the round trigger of the event's dataset. Failures are counted (by action) and logged, never swallowed.
    """

    def __init__(self, store: Store, runner: JobRunner, maxsize: int | None = None):
        self.store, self.runner = store, runner
        self.stats = RecorderStats()
        self._q: queue.Queue = queue.Queue(store.settings.webhook_queue_max if maxsize is None else maxsize)
        self._thread = threading.Thread(target=self._loop, name="curate-events", daemon=True)
        self._thread.start()

    def put(self, payload: dict) -> int:
        """Queue the event; `queue.Full` when the queue is at its bound (the caller answers 503)."""
        try:
            self._q.put_nowait(payload)
        except queue.Full:
            self.stats.refused += 1
            raise
        self.stats.received += 1
        return self._q.qsize()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is handled (tests, shutdown). True when drained."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        with contextlib.suppress(queue.Full):
            self._q.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            payload = self._q.get()
            try:
                if payload is None:
                    return
                self._handle(payload)
            finally:
                self._q.task_done()

    def _handle(self, payload: dict) -> None:
        action = str(payload.get("action") or "unknown")
        try:
            handle_webhook(self.store, payload)
            self.stats.recorded += 1
        except Exception as e:  # noqa: BLE001 - counted by action and logged; the recorder must keep running
            self.stats.failed += 1
            self.stats.errors_by_action[action] = self.stats.errors_by_action.get(action, 0) + 1
            self.stats.last_error = f"{action}: {type(e).__name__}: {e}"
            log.error("webhook event %s not recorded: %s: %s", action, type(e).__name__, e)
            return
        dataset = self._dataset(payload)
        if dataset is None or not action.startswith("ANNOTATION"):
            return
        try:
            if maybe_trigger(self.store, self.runner, dataset):
                self.stats.rounds_started += 1
        except Exception as e:  # noqa: BLE001 - counted and logged; the recorder must keep running
            self.stats.failed += 1
            self.stats.last_error = f"round trigger for {dataset}: {type(e).__name__}: {e}"
            log.error("round trigger for %s failed: %s", dataset, e)

    def _dataset(self, payload: dict) -> str | None:
        project = payload.get("project")
        pid = project.get("id") if isinstance(project, dict) else project
        if pid is None and isinstance(payload.get("task"), dict):
            pid = payload["task"].get("project")
        try:
            return dataset_of_project(self.store, int(pid)) if pid is not None else None
        except (TypeError, ValueError):
            return None
