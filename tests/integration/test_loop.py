"""The loop against the real Label Studio 1.23 (the `labelstudio` fixture) and our service under real uvicorn.

1. Our service connected as the project's ML backend (`/ml`) serves predictions Label Studio stores.
2. The full loop: a first round pushes 20 tasks → 10 annotations made through Label Studio's API as an annotator
   would (the label stream's next task, then an annotation) → Label Studio's webhooks reach our service → after the
   10th (`round_every=10`) a round runs (pull, snapshot+train, score, select, push) → the next batch is in Label
   Studio and its label stream serves the most uncertain task first.

Real parts throughout: ingest, split, LoRA training of MiniLM on CPU (small: 1 epoch, 64 tokens), scoring,
selection, push, webhooks. Slow (two trainings).
"""

import json
import time

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.server import ServerThread
from curation.settings import Settings
from curation.store import Store
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

SECRET = "loop-webhook-secret"
KEY = "loop-api-key"
TRAIN = {"epochs": 1, "max_length": 64, "patience": 0, "allow_leakage": True, "batch_size": 16}


def _small_youtube(path, n_train=120, n_gold=30, n_val=30, n_test=30):
    """WRENCH YouTube rows: val/test labelled, the first `n_gold` train rows labelled, the rest the pool."""
    rows = [json.loads(line) for line in (ROOT / "data/youtube-spam/wrench/youtube.jsonl").open()]
    train = [r for r in rows if r["split"] == "train"][:n_train]
    val = [r for r in rows if r["split"] in ("val", "valid")][:n_val]
    test = [r for r in rows if r["split"] == "test"][:n_test]
    with path.open("w") as f:
        for i, r in enumerate(train + val + test):
            label = r["label"] if (r["split"] != "train" or i < n_gold) else None
            f.write(json.dumps({"id": r["id"], "text": r["text"], "label": label, "split": r["split"]}) + "\n")
    return {r["id"]: r["label"] for r in train}


@pytest.fixture
def service(tmp_path, labelstudio):
    """Our app on a real port, its own Store, a dataset with a split, and a Label Studio client for rounds."""
    from curation.ingest import FieldMap, ingest
    from curation.splits import make_split
    from labeling.studio import StudioClient

    settings = Settings(db=tmp_path / "loop.duckdb", api_key=SecretStr(KEY), webhook_secret=SecretStr(SECRET))
    store = Store.open(settings)
    truth = _small_youtube(tmp_path / "yt.jsonl")
    ingest(store, tmp_path / "yt.jsonl", "yt", fields=FieldMap(text="text", label="label", id="id"),
           labels=["ham", "spam"])
    make_split(store, "yt", from_column="split")
    store.set_dataset_settings("yt", round_size=20, round_every=10, round_train=TRAIN,
                               round_strategy="least_confidence")
    app = create_app(settings, store, studio=lambda: StudioClient(labelstudio.url, labelstudio.token))
    with ServerThread(app) as server:
        server.store, server.truth = store, truth
        server.api = httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60)
        yield server
        server.api.close()
    store.close()


def _wait_round(api, dataset, number, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = api.get(f"/datasets/{dataset}/rounds").json()["items"]
        rnd = next((r for r in items if r["number"] == number), None)
        if rnd and rnd["status"] in ("succeeded", "failed"):
            if rnd["status"] == "failed":
                job = api.get(f"/jobs/{rnd['job_id']}").json()
                raise AssertionError(f"round {number} failed: {rnd['error']} / {job.get('error')}")
            return rnd
        time.sleep(1)
    raise AssertionError(f"round {number} of {dataset} did not finish in {timeout} s")


def test_full_loop_push_annotate_webhook_round_next_batch(service, studio):
    from labeling.studio import choice_result, register_webhook

    api, store = service.api, service.store
    # round 1 on request: train on the 30 gold rows, score the pool, push the 20 most uncertain
    r = api.post("/datasets/yt/rounds", json={"trigger": "test"})
    assert r.status_code == 202, r.text
    first = _wait_round(api, "yt", 1)
    assert first["tasks_pushed"] == 20 and first["run_id"]
    pid = store.one("SELECT project_id FROM store.ls_projects WHERE dataset = 'yt'")
    assert studio.projects.get(pid)["task_number"] == 20
    hook = register_webhook(studio, pid, f"{service.url}/webhooks/labelstudio", SECRET)
    assert hook["webhook_id"]

    # annotate 10 through Label Studio's API, in the order its label stream serves them
    source = dict(store.query("SELECT record_id, source_id FROM store.records WHERE dataset = 'yt'"))
    done = []
    for _ in range(10):
        task = studio.projects.next_task(pid)
        assert task is not None
        label = "spam" if service.truth[source[task["data"]["record_id"]]] else "ham"
        studio.annotations.create(task["id"], choice_result(label), lead_time=1.5, project_id=pid)
        done.append(task["data"]["record_id"])
    # the webhooks arrived (the recorder stores them) and the 10th started round 2 by itself
    rnd2 = _wait_round(api, "yt", 2)
    assert rnd2["trigger"].startswith("annotations:") and rnd2["annotations_used"] >= 10
    assert rnd2["tasks_pushed"] == 20 and rnd2["run_id"] != first["run_id"]
    got = store.query("SELECT record_id, via FROM store.annotations WHERE project_id = ? AND NOT deleted", [pid])
    assert sorted(r[0] for r in got) == sorted(done)
    assert any(via == "webhook" for _, via in got)
    assert store.one(f"SELECT count(*) FROM main.records WHERE record_id IN ({','.join(map(str, done))}) "
                     "AND label_source = 'annotation'") == 10

    # the next batch is in Label Studio, and the label stream serves the most uncertain task first
    assert studio.projects.get(pid)["task_number"] == 40
    nxt = studio.projects.next_task(pid)
    pending = store.query(
        "SELECT t.record_id, p.confidence FROM store.ls_tasks t JOIN store.predictions p "
        "ON p.record_id = t.record_id AND p.run_id = ? WHERE t.project_id = ? AND t.record_id NOT IN "
        "(SELECT record_id FROM store.annotations WHERE NOT deleted AND record_id IS NOT NULL) ORDER BY 2, 1",
        [rnd2["run_id"], pid])
    assert len(pending) == 30
    assert nxt["data"]["record_id"] == pending[0][0]

    # history visible to SQL users
    rows = api.post("/sql", json={"query": "SELECT number, status, annotations_used, tasks_pushed FROM rounds "
                                           "ORDER BY number"}).json()["rows"]
    assert [r["number"] for r in rows] == [1, 2] and all(r["status"] == "succeeded" for r in rows)


def test_connect_as_ml_backend_and_get_predictions(service, studio):
    """Label Studio calls /ml/health, /ml/setup and /ml/predict (basic auth with the secret in the URL)."""
    from curation.store import now
    from labeling.studio import ensure_project, task_payload

    api, store = service.api, service.store
    job = api.post("/runs", json={"dataset": "yt", "config": TRAIN}).json()
    deadline = time.monotonic() + 900
    while (job := api.get(f"/jobs/{job['job_id']}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert job["status"] == "succeeded", job["error"]
    run_id = job["result"]["run_id"]

    project = ensure_project(store, "yt", studio)
    pid = project["project_id"]
    recs = store.query("SELECT record_id, text, input_hash FROM store.records WHERE dataset = 'yt' "
                       "ORDER BY record_id LIMIT 5")
    ids = studio.projects.import_tasks(pid, [task_payload(t, rid, h) for rid, t, h in recs])
    with store.transaction() as cur:
        cur.executemany("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                        "VALUES (?, ?, ?, ?, ?)", [[pid, h, tid, rid, now()] for (rid, _, h), tid in zip(recs, ids)])

    url = f"http://curate:{SECRET}@127.0.0.1:{service.port}/ml"
    backend = studio.request("POST", "/api/ml", json={"url": url, "project": pid, "title": "curate",
                                                       "is_interactive": False}).json()
    assert backend.get("state") in ("CO", "CONNECTED"), backend
    # ask Label Studio to fetch predictions for every task of the project (the Data Manager action)
    r = studio.request("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
                       json={"selectedItems": {"all": True, "excluded": []}, "project": pid})
    assert r.status_code == 200, r.text
    # (the session's Label Studio may hold this project from another test already: look at our 5 tasks)
    tasks = [t for t in studio.tasks.list(pid, fields="all") if t["id"] in set(ids)]
    preds = [p for t in tasks for p in t.get("predictions") or [] if p.get("model_version") == run_id]
    assert len(tasks) == 5 and len(preds) == 5
    labels = {p["result"][0]["value"]["choices"][0] for p in preds}
    assert labels <= {"ham", "spam"} and all(0.5 <= p["score"] <= 1 for p in preds)
