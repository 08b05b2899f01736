"""The Label Studio ML backend protocol, served under `/ml` by the same app.

Connect it in Label Studio (project → Settings → Model → Connect model) with the URL `http://HOST:PORT/ml`; when the
server has a webhook secret (CURATE_WEBHOOK_SECRET, else CURATE_API_KEY), choose basic auth with any user and the
secret as password, or put them in the URL: `http://curate:SECRET@HOST:PORT/ml` (Label Studio then also sends them
with the `/ml/webhook` events it registers by itself).

How Label Studio 1.23 calls it (see DESIGN.md §4):

- `GET /ml/health` → `{"status": "UP"}`;
- `POST /ml/setup` `{"project": "<id>.<created-ts>", "schema": <label config>}` → `{"model_version"}` (before every
  prediction batch, so it is one query);
- `POST /ml/predict` `{"tasks": [...], "label_config", "project"}` → `{"results": [{"result", "score",
  "model_version"}]}` one per task in order. The model is the dataset's latest succeeded run, loaded once per
  version (`training.score.load_model` caches it); tasks whose record the run already scored take the stored
  prediction, so only new texts go through the model. `score` is the model's confidence (max probability), which
  Label Studio's uncertainty sampling serves lowest first;
- `POST /ml/webhook`: `START_TRAINING` (the "Start training" button) queues a round; annotation events are stored
  like those of `/webhooks/labelstudio`;
- `GET /ml/versions` → `{"versions": [run ids, newest first]}`.

Tests swap the model loader with `monkeypatch.setattr(api.routes.ml_backend, "load_model", fake)`.
"""

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api import schemas as S
from api.deps import StateDep, StoreDep, json_body, queue_event
from api.rounds import dataset_of_project, request_round
from curation.errors import InputError, NotFound
from curation.store import Store
from training.score import load_model

log = logging.getLogger(__name__)

UNTRAINED = "curate-untrained"

router = APIRouter()   # role: annotator (api.security.ROUTE_ROLES)


def project_id(uid: Any) -> int | None:
    """Label Studio's project uid `"<id>.<created-ts>"` (or a bare id) → the id."""
    if uid is None:
        return None
    if isinstance(uid, dict):
        uid = uid.get("id")
    try:
        return int(str(uid).split(".", 1)[0])
    except ValueError:
        raise InputError(f"project {uid!r}: expected Label Studio's '<id>.<timestamp>' project uid") from None


def dataset_for(store: Store, uid: Any) -> str:
    pid = project_id(uid)
    if pid is None:
        raise InputError("the request names no project; Label Studio sends `project` as '<id>.<timestamp>'")
    dataset = dataset_of_project(store, pid)
    if dataset is None:
        known = store.query("SELECT project_id, dataset FROM store.ls_projects ORDER BY project_id")
        raise NotFound(f"Label Studio project {pid} is not linked to a dataset (known: "
                       f"{', '.join(f'{p}={d}' for p, d in known) or 'none; push a selection first'})")
    return dataset


def latest_run(store: Store, dataset: str) -> tuple[str, str] | None:
    """(run_id, run_dir) of the dataset's newest succeeded run with an adapter."""
    row = store.query("SELECT run_id, adapter_path FROM store.runs WHERE dataset = ? AND status = 'succeeded' "
                      "AND adapter_path IS NOT NULL ORDER BY finished_at DESC NULLS LAST, started_at DESC LIMIT 1",
                      [dataset])
    if not row:
        return None
    return row[0][0], str(Path(row[0][1]).parent)


def parse_label_config(config: str | None) -> dict:
    """The first Choices tag: its name (from_name), toName, choice values, and the data key of its object."""
    out = {"from_name": "label", "to_name": "text", "data_key": "text", "choices": None}
    if not config:
        return out
    try:
        root = ET.fromstring(config)
    except ET.ParseError as e:
        raise InputError(f"label_config does not parse as XML ({e})") from None
    choices = next((el for el in root.iter() if el.tag == "Choices"), None)
    if choices is None:
        raise InputError("label_config has no <Choices> tag; curate predicts one class per text")
    out["from_name"] = choices.get("name", "label")
    out["to_name"] = (choices.get("toName") or "text").split(",")[0]
    out["choices"] = [c.get("value") for c in choices.iter("Choice")]
    obj = next((el for el in root.iter() if el.get("name") == out["to_name"] and el.tag != "Choices"), None)
    if obj is not None and (obj.get("value") or "").startswith("$"):
        out["data_key"] = obj.get("value")[1:]
    return out


def record_id_of(task: dict) -> int | None:
    data = task.get("data") or {}
    for holder in (data, task.get("meta") or {}, data.get("meta") if isinstance(data.get("meta"), dict) else {}):
        rid = holder.get("record_id")
        if rid is not None:
            try:
                return int(rid)
            except (TypeError, ValueError):
                return None
    return None


@router.get("/health", response_model=S.MlHealthOut)
def health() -> dict:
    return {"status": "UP", "model_class": "curate", "v2": True}


@router.post("/setup", response_model=S.MlSetupOut)
def setup(body: S.MlSetupIn, store: StoreDep) -> dict:
    dataset = dataset_for(store, body.project)
    run = latest_run(store, dataset)
    return {"model_version": run[0] if run else UNTRAINED}


@router.get("/versions", response_model=S.MlVersionsOut)
def versions(store: StoreDep) -> dict:
    rows = store.query("SELECT run_id FROM store.runs WHERE status = 'succeeded' "
                       "ORDER BY finished_at DESC NULLS LAST, run_id")
    return {"versions": [r[0] for r in rows]}


@router.post("/predict", response_model=S.MlPredictOut)
def predict(body: S.MlPredictIn, store: StoreDep) -> dict:
    """One prediction per task, in order; stored predictions first, the cached model for the rest."""
    dataset = dataset_for(store, body.project)
    run = latest_run(store, dataset)
    if run is None:
        log.info("predict for %s: no succeeded run yet; returning no predictions", dataset)
        return {"results": [], "model_version": None}
    run_id, run_dir = run
    cfg = parse_label_config(body.label_config)
    labels = store.dataset(dataset)["labels"]

    probs: list[list[float] | None] = [None] * len(body.tasks)
    rids = [record_id_of(t) for t in body.tasks]
    known = [r for r in rids if r is not None]
    if known:
        stored = dict(store.query("SELECT record_id, probs FROM store.predictions WHERE run_id = ? AND record_id "
                                  "IN (SELECT unnest(?::BIGINT[]))", [run_id, known]))
        probs = [list(stored[r]) if r in stored else None for r in rids]
    todo = [i for i, p in enumerate(probs) if p is None]
    if todo:
        texts = []
        for i in todo:
            data = body.tasks[i].get("data") or {}
            text = data.get(cfg["data_key"])
            if not isinstance(text, str):
                raise InputError(f"task {body.tasks[i].get('id')}: data has no text field "
                                 f"{cfg['data_key']!r} (keys: {', '.join(sorted(data)) or 'none'})")
            texts.append(text)
        model = load_model(run_dir)
        computed = model.predict_proba(texts)
        model_labels = list(model.labels)
        if model_labels != labels:
            raise InputError(f"run {run_id} predicts {model_labels}; dataset {dataset} has labels {labels}")
        for i, row in zip(todo, computed):
            probs[i] = [float(x) for x in row]

    results = []
    for p in probs:
        assert p is not None
        best = max(range(len(p)), key=p.__getitem__)
        label = labels[best]
        results.append({
            "result": [{"from_name": cfg["from_name"], "to_name": cfg["to_name"], "type": "choices",
                        "value": {"choices": [label]}}],
            "score": float(p[best]), "model_version": run_id})
    return {"results": results, "model_version": run_id}


@router.post("/webhook", response_model=S.MlWebhookOut, response_model_exclude_unset=True)
async def webhook(request: Request, state: StateDep) -> dict:
    """START_TRAINING queues a round (answered at once); other events are queued for the recorder."""
    payload = await json_body(request)
    action = payload.get("action")
    if action == "START_TRAINING":
        dataset = dataset_for(state.store, payload.get("project"))
        out = await run_in_threadpool(request_round, state.store, state.runner, dataset, trigger="label_studio")
        return {"status": "ok", "action": action, "created": out["created"], "job_id": out["job_id"],
                "round_id": out["round"]["round_id"]}
    return {"status": "ok", "action": action, "queued": queue_event(state, payload)}


@router.post("/train", response_model=S.MlTrainOut)
async def train(request: Request, state: StateDep) -> dict:
    """The older protocol (before LS's START_TRAINING webhook): same as START_TRAINING."""
    payload = await json_body(request)
    dataset = dataset_for(state.store, payload.get("project"))
    out = await run_in_threadpool(request_round, state.store, state.runner, dataset, trigger="label_studio")
    return {"status": "ok", "job": out["job_id"], "round_id": out["round"]["round_id"]}
