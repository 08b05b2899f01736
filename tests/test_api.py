"""The service: auth, paging, filters, error bodies, jobs (crash recovery, retry), rounds, webhook, ML backend.

Training and Label Studio are replaced by small fakes swapped in with `monkeypatch` where the round loop and the
routes look them up (`api.rounds`, `api.routes.*`; the real stages are exercised in their own tests and in
tests/integration); SQL, ingest and active-learning selection are the real ones.
"""

import base64
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import rounds
from api.app import create_app
from api.routes import ml_backend
from api.routes import sql as sql_routes
from curation.store import now
from tests.helpers import make_dataset

KEY = "test-key-123"
SECRET = "hook-secret-456"


# -- fakes -----------------------------------------------------------------------------------------------------
class FakePipeline:
    """train/score/push/webhook stand-ins that write the same tables the real stages write."""

    def __init__(self):
        self.gate: threading.Event | None = None    # when set, training waits on it (a slow training)
        self.train_started = threading.Event()
        self.trained = 0
        self.pushed: list[str] = []
        self.events: list[dict] = []
        self.fail_train = False

    def train(self, store, dataset, config=None, progress=None):
        self.train_started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail_train:
            raise RuntimeError("boom in training")
        self.trained += 1
        run_id = f"run-{dataset}-{self.trained}"
        if progress:
            progress(1, 2)
            progress(2, 2)
        with store.transaction() as cur:
            cur.execute("INSERT INTO store.runs (run_id, dataset, snapshot_id, status, metrics, adapter_path, "
                        "started_at, finished_at) VALUES (?, ?, 'snap-1', 'succeeded', ?, ?, ?, ?)",
                        [run_id, dataset, json.dumps({"macro_f1": 0.9}), f"/nowhere/{run_id}/adapter", now(),
                         now()])
        return {"run_id": run_id, "dataset": dataset, "status": "succeeded", "snapshot_id": "snap-1",
                "metrics": {"macro_f1": 0.9}}

    def score(self, store, run_id, dataset=None, include_labeled=False, progress=None):
        rows = store.query("SELECT r.record_id FROM store.records r LEFT JOIN store.gold_labels g USING (record_id) "
                           "WHERE r.dataset = ? AND g.record_id IS NULL ORDER BY 1", [dataset])
        with store.transaction() as cur:
            for (rid,) in rows:
                p = 0.5 + (rid % 10) / 20   # record ids ending in 0 are the most uncertain
                cur.execute("INSERT OR REPLACE INTO store.predictions VALUES (?, ?, ?, 'spam', ?, ?, ?, ?, NULL, ?)",
                            [run_id, rid, [1 - p, p], p, 1 - p, 2 * p - 1, 0.5, now()])
        return {"run_id": run_id, "scored": len(rows)}

    def push_selection(self, store, selection_id, *, run_id=None, client=None, **_):
        rows = store.query("SELECT record_id FROM store.selections WHERE selection_id = ? ORDER BY rank",
                           [selection_id])
        self.pushed.append(selection_id)
        return {"selection_id": selection_id, "created": len(rows)}

    def handle_webhook(self, store, payload):
        """The real handler (labeling.studio), counting the events it saw."""
        from labeling.studio import handle_webhook

        self.events.append(payload)
        return handle_webhook(store, payload)

    def install(self, monkeypatch):
        """Swap the stages the round loop calls (looked up on this object at call time, so a test may replace
        one of its methods later)."""
        monkeypatch.setattr(rounds, "train", lambda *a, **k: self.train(*a, **k))
        monkeypatch.setattr(rounds, "score", lambda *a, **k: self.score(*a, **k))
        monkeypatch.setattr(rounds, "push_selection", lambda *a, **k: self.push_selection(*a, **k))
        monkeypatch.setattr(rounds, "handle_webhook", lambda *a, **k: self.handle_webhook(*a, **k))
        monkeypatch.setattr(rounds, "pull_annotations", lambda store, dataset, client: {})

    def studio(self):
        return FakeStudioClient()   # the fakes ignore the client


class FakeStudioClient:
    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    pipeline = FakePipeline()
    pipeline.install(monkeypatch)
    return pipeline


def _client(store, fake, *, key=KEY, secret=SECRET):
    settings = store.settings.model_copy(update={
        "api_key": SecretStr(key) if key else None, "webhook_secret": SecretStr(secret) if secret else None})
    store.settings = settings
    app = create_app(settings, store, studio=fake.studio)
    if key is None:   # keyless loopback mode answers loopback Host names only
        return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000")
    return TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": key})


def _bare(client):
    """A client of the same running app that sends no key."""
    return TestClient(client.app, raise_server_exceptions=False)


@pytest.fixture
def client(store, fake):
    with _client(store, fake) as c:
        yield c


H = {"X-API-Key": KEY}


def _wait_job(client, job_id, statuses=("succeeded", "failed"), timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']}")


def _link_project(store, dataset, project_id=7):
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.ls_projects VALUES (?, ?, NULL, NULL, ?)", [dataset, project_id, now()])


# -- auth ------------------------------------------------------------------------------------------------------
def _mutating_routes(app):
    for path, ops in app.openapi()["paths"].items():
        if path.startswith(("/ml", "/webhooks")):
            continue
        for method in ops:
            if method in ("post", "put", "patch", "delete"):
                yield method.upper(), path


def test_every_mutating_route_needs_the_api_key(client):
    routes = list(_mutating_routes(client.app))
    assert len(routes) >= 12
    bare = _bare(client)
    for method, path in routes:
        url = path.replace("{name}", "ds").replace("{run_id}", "r1").replace("{job_id}", "j1")
        r = bare.request(method, url)
        assert r.status_code == 401, (method, path, r.text)
        body = r.json()
        assert body["error"]["code"] == "unauthorized" and "X-API-Key" in body["error"]["message"]
        r = bare.request(method, url, headers={"X-API-Key": "wrong"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path)
        assert KEY not in r.text


def test_reads_and_sql_need_the_key_and_right_key_passes(client, store):
    make_dataset(store, "ds", ["a", "b"])
    bare = _bare(client)
    assert bare.get("/datasets").status_code == 401
    assert bare.post("/sql", json={"query": "SELECT count(*) AS n FROM records"}).status_code == 401
    assert client.get("/datasets").status_code == 200
    assert client.post("/sql", json={"query": "SELECT count(*) AS n FROM records"}).json()["rows"] == [{"n": 2}]
    r = client.patch("/datasets/ds/settings", json={"round_every": 5}, headers=H)
    assert r.status_code == 200 and r.json()["round_every"] == 5


def test_open_server_without_key(store, fake):
    with _client(store, fake, key=None, secret=None) as c:
        make_dataset(store, "ds", ["a"])
        assert c.patch("/datasets/ds/settings", json={"round_size": 3}).status_code == 200
        assert c.get("/status").json()["auth"] == "open"


def test_webhook_needs_the_secret_as_header_or_basic_auth(client, store):
    client = _bare(client)
    r = client.post("/webhooks/labelstudio", json={"action": "PROJECT_UPDATED"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.post("/webhooks/labelstudio", json={"action": "X"}, headers={"X-Curate-Webhook-Token": "nope"})
    assert r.status_code == 401
    assert client.post("/webhooks/labelstudio", json={"action": "X"},
                       headers={"X-Curate-Webhook-Token": SECRET}).status_code == 200
    basic = base64.b64encode(f"curate:{SECRET}".encode()).decode()
    assert client.get("/ml/health", headers={"Authorization": f"Basic {basic}"}).json()["status"] == "UP"
    assert client.get("/ml/health").status_code == 401


# -- paging, filters, error bodies ----------------------------------------------------------------------------------
def test_records_paging_and_filters(client, store):
    texts = [f"comment {i}" + (" buy now" if i % 3 == 0 else "") for i in range(25)]
    labels = ["spam" if i % 3 == 0 else ("ham" if i < 10 else None) for i in range(25)]
    ids = make_dataset(store, "ds", texts, labels)
    seen = []
    offset = 0
    while offset is not None:
        page = client.get("/datasets/ds/records", params={"limit": 10, "offset": offset}).json()
        assert page["total"] == 25 and page["limit"] == 10
        seen += [x["record_id"] for x in page["items"]]
        offset = page["next_offset"]
    assert seen == ids
    spam = client.get("/datasets/ds/records", params={"label": "spam", "limit": 100}).json()
    assert spam["total"] == 9 and all(x["label"] == "spam" for x in spam["items"])
    unlabeled = client.get("/datasets/ds/records", params={"labeled": False}).json()
    assert unlabeled["total"] == sum(lab is None for lab in labels)
    assert client.get("/datasets/ds/records", params={"q": "BUY"}).json()["total"] == 9
    last = client.get("/datasets/ds/records", params={"limit": 10, "offset": 20}).json()
    assert len(last["items"]) == 5 and last["next_offset"] is None


def test_error_bodies_are_json_without_traceback(client, store):
    r = client.get("/datasets/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and "nope" in r.json()["error"]["message"]
    r = client.get("/datasets/nope/records", params={"limit": 0})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["details"][0]["loc"] == ["query", "limit"]
    r = client.post("/sql", json={"query": "DELETE FROM records"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "sql_refused"
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post("/runs", json={"dataset": "nope"}, headers=H)
    assert r.status_code == 404


def test_unexpected_error_is_a_500_without_traceback_or_secret(store, fake, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError(f"database password is {KEY}")

    with _client(store, fake) as c:
        monkeypatch.setattr(sql_routes, "run_sql", broken)
        r = c.post("/sql", json={"query": "SELECT 1"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "internal" and "incident" in body["error"]["message"]
    assert "Traceback" not in r.text and KEY not in r.text and "RuntimeError" not in r.text


def test_train_config_is_validated_before_the_job(client, store):
    make_dataset(store, "ds", ["a"])
    r = client.post("/runs", json={"dataset": "ds", "config": {"epochs": 0}}, headers=H)
    assert r.status_code == 400 and "epochs" in r.json()["error"]["message"]


# -- jobs --------------------------------------------------------------------------------------------------------
def test_training_job_reports_progress_and_result(client, store):
    make_dataset(store, "ds", ["a", "b"])
    r = client.post("/runs", json={"dataset": "ds", "config": {"epochs": 1}}, headers=H)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job = _wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["result"]["run_id"] == "run-ds-1"
    assert client.get("/runs/run-ds-1").json()["metrics"] == {"macro_f1": 0.9}
    assert client.get("/jobs", params={"kind": "train"}).json()["total"] == 1


def test_failed_job_keeps_the_error_and_can_be_retried(client, store, fake):
    make_dataset(store, "ds", ["a"])
    fake.fail_train = True
    job = _wait_job(client, client.post("/runs", json={"dataset": "ds"}, headers=H).json()["job_id"])
    assert job["status"] == "failed" and "boom in training" in job["error"]
    assert _bare(client).post(f"/jobs/{job['job_id']}/retry").status_code == 401
    fake.fail_train = False
    r = client.post(f"/jobs/{job['job_id']}/retry", headers=H)
    assert r.status_code == 202 and r.json()["retry_of"] == job["job_id"]
    assert _wait_job(client, r.json()["job_id"])["status"] == "succeeded"
    r = client.post(f"/jobs/{r.json()['job_id']}/retry", headers=H)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_jobs_cut_off_by_a_crash_are_failed_at_start_and_can_be_retried(store, fake):
    make_dataset(store, "ds", ["a"])
    with store.transaction() as cur:   # what a killed server leaves behind
        for job_id, status in (("job-dead1", "running"), ("job-dead2", "queued")):
            cur.execute("INSERT INTO store.jobs (job_id, kind, status, progress, params, created_at, started_at) "
                        "VALUES (?, 'train', ?, 0.4, ?, ?, ?)", [job_id, status, json.dumps({"dataset": "ds"}),
                                                                  now(), now()])
        cur.execute("INSERT INTO store.rounds (round_id, dataset, number, status, job_id) "
                    "VALUES ('ds.r1', 'ds', 1, 'running', 'job-x')")
    with _client(store, fake) as c:
        for job_id, status in (("job-dead1", "running"), ("job-dead2", "queued")):
            job = c.get(f"/jobs/{job_id}").json()
            assert job["status"] == "failed"
            assert f"interrupted: the job was {status}" in job["error"] and "retry" in job["error"]
        assert c.get("/rounds/ds.r1").json()["status"] == "failed"
        r = c.post("/jobs/job-dead1/retry", headers=H)
        assert r.status_code == 202
        assert _wait_job(c, r.json()["job_id"])["status"] == "succeeded"


# -- rounds and the webhook -----------------------------------------------------------------------------------------
def _pool(store, n=40):
    ids = make_dataset(store, "ds", [f"text number {i}" for i in range(n)],
                       ["spam" if i < 4 else ("ham" if i < 8 else None) for i in range(n)])
    _link_project(store, "ds")
    store.set_dataset_settings("ds", round_size=5, round_strategy="least_confidence")
    return ids


def test_round_runs_train_score_select_push_and_records_history(client, store, fake):
    _pool(store)
    r = client.post("/datasets/ds/rounds", headers=H)
    assert r.status_code == 202 and r.json()["created"]
    job = _wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    rnd = client.get("/datasets/ds/rounds").json()["items"][0]
    assert rnd["status"] == "succeeded" and rnd["number"] == 1 and rnd["run_id"] == "run-ds-1"
    assert rnd["tasks_pushed"] == 5 and rnd["metrics"] == {"macro_f1": 0.9} and rnd["trigger"] == "request"
    sel = client.get(f"/selections/{rnd['selection_id']}").json()
    assert sel["total"] == 5
    # most uncertain first: the fake gives record ids ending in 0 the lowest confidence
    assert sel["items"][0]["record_id"] % 10 == 0
    # SQL users see rounds and jobs
    q = client.post("/sql", json={"query": "SELECT number, status, tasks_pushed FROM rounds"}).json()
    assert q["rows"] == [{"number": 1, "status": "succeeded", "tasks_pushed": 5}]


def test_never_two_rounds_of_a_dataset_at_once(client, store, fake):
    _pool(store)
    fake.gate = threading.Event()
    first = client.post("/datasets/ds/rounds", headers=H).json()
    second = client.post("/datasets/ds/rounds", headers=H)
    assert second.status_code == 200 and not second.json()["created"]
    assert second.json()["job_id"] == first["job_id"]
    fake.gate.set()
    _wait_job(client, first["job_id"])
    third = client.post("/datasets/ds/rounds", headers=H).json()
    assert third["created"] and third["round"]["number"] == 2
    _wait_job(client, third["job_id"])


def _annotation_event(store, i, record_id, label="spam"):
    """What Label Studio 1.23 posts for a new annotation (the task is mapped to the record by its data)."""
    h = store.one("SELECT input_hash FROM store.records WHERE record_id = ?", [record_id])
    return {"action": "ANNOTATION_CREATED", "project": {"id": 7},
            "annotation": {"id": 1000 + i, "task": 500 + i, "completed_by": 1, "was_cancelled": False,
                           "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": [label]}}]},
            "task": {"id": 500 + i, "project": 7, "data": {"text": "t", "record_id": record_id, "input_hash": h}}}


def test_slow_round_does_not_delay_the_webhook_answer(client, store, fake):
    ids = _pool(store)
    fake.gate = threading.Event()   # training blocks until the test opens the gate
    job_id = client.post("/datasets/ds/rounds", headers=H).json()["job_id"]
    assert fake.train_started.wait(10)
    assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
    r = client.post("/webhooks/labelstudio", json=_annotation_event(store, 1, ids[10]), headers={"X-Curate-Webhook-Token": SECRET})
    # the webhook answered while the round is still training
    assert r.status_code == 200 and r.json()["accepted"]
    assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
    assert client.app.state.curate.recorder.drain(10)
    assert fake.events and fake.events[0]["action"] == "ANNOTATION_CREATED"   # stored while the round runs
    assert store.one("SELECT label FROM main.records WHERE record_id = ?", [ids[10]]) == "spam"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
    fake.gate.set()
    assert _wait_job(client, job_id)["status"] == "succeeded"


def test_every_n_annotations_start_a_round(client, store, fake):
    ids = _pool(store)
    store.set_dataset_settings("ds", round_every=3)
    hdr = {"X-Curate-Webhook-Token": SECRET}
    for i in range(2):
        client.post("/webhooks/labelstudio", json=_annotation_event(store, i, ids[20 + i]), headers=hdr)
    assert client.app.state.curate.recorder.drain(10)
    assert client.get("/datasets/ds/rounds").json()["total"] == 0
    client.post("/webhooks/labelstudio", json=_annotation_event(store, 2, ids[22]), headers=hdr)
    assert client.app.state.curate.recorder.drain(10)
    rounds = client.get("/datasets/ds/rounds").json()
    assert rounds["total"] == 1 and rounds["items"][0]["trigger"] == "annotations:3"
    job = _wait_job(client, rounds["items"][0]["job_id"])
    assert job["result"]["annotations_used"] == 3
    assert client.get("/status").json()["webhook_events"]["rounds_started"] == 1


def test_failed_webhook_events_are_counted(store, fake):
    def bad(store, payload):
        raise ValueError("no task 5 in store.ls_tasks")

    fake.handle_webhook = bad
    with _client(store, fake) as c:
        c.post("/webhooks/labelstudio", json={"action": "ANNOTATION_CREATED"}, headers={"X-Curate-Webhook-Token": SECRET})
        assert c.app.state.curate.recorder.drain(10)
        ev = c.get("/status").json()["webhook_events"]
    assert ev["failed"] == 1 and "no task 5" in ev["last_error"]


# -- ML backend --------------------------------------------------------------------------------------------------------
CONFIG = ('<View><Text name="comment" value="$text"/><Choices name="verdict" toName="comment">'
          '<Choice value="ham"/><Choice value="spam"/></Choices></View>')


class FakeModel:
    def __init__(self):
        self.labels = ["ham", "spam"]
        self.calls = []

    def predict_proba(self, texts):
        self.calls.append(list(texts))
        return np.array([[0.2, 0.8] if "buy" in t else [0.7, 0.3] for t in texts])


def test_ml_backend_setup_predict_versions_and_start_training(store, fake, monkeypatch):
    ids = _pool(store)
    model = FakeModel()
    monkeypatch.setattr(ml_backend, "load_model", lambda run_dir: model)
    store.settings = store.settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    auth = {"Authorization": "Basic " + base64.b64encode(f"x:{SECRET}".encode()).decode()}
    with TestClient(create_app(store.settings, store, studio=fake.studio), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as c:
        assert c.post("/ml/setup", json={"project": "7.1700000000"}, headers=auth).json() == {
            "model_version": "curate-untrained"}
        assert c.post("/ml/setup", json={"project": "99.1"}, headers=auth).status_code == 404
        fake.train(store, "ds")
        fake.score(store, "run-ds-1", "ds")
        assert c.post("/ml/setup", json={"project": "7.1700000000"}, headers=auth).json()["model_version"] == "run-ds-1"
        tasks = [{"id": 1, "data": {"text": "please buy my stuff"}},
                 {"id": 2, "data": {"text": "nice song", "record_id": ids[30]}},
                 {"id": 3, "data": {"text": "hello"}}]
        r = c.post("/ml/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "7.1700000000"},
                   headers=auth).json()
        assert [x["result"][0]["value"]["choices"][0] for x in r["results"]] == ["spam", "spam", "ham"]
        first = r["results"][0]
        assert first["result"][0]["from_name"] == "verdict" and first["result"][0]["to_name"] == "comment"
        assert first["score"] == pytest.approx(0.8) and first["model_version"] == "run-ds-1"
        # task 2 has a record scored by the run: its stored prediction is used, the model sees only the others
        assert model.calls == [["please buy my stuff", "hello"]]
        assert c.get("/ml/versions", headers=auth).json()["versions"] == ["run-ds-1"]
        r = c.post("/ml/webhook", json={"action": "START_TRAINING", "project": {"id": 7}}, headers=auth).json()
        assert r["created"] and r["round_id"] == "ds.r1"
        assert _wait_job(c, r["job_id"])["status"] == "succeeded"


# -- real stages through the API -------------------------------------------------------------------------------------
def test_ingest_upload_with_the_real_ingest(client, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("id,text,label\n1,hello world,ham\n2,buy cheap pills,spam\n3,,ham\n")
    with csv.open("rb") as f:
        r = client.post("/datasets/up/ingest", files={"file": ("c.csv", f, "text/csv")},
                        data={"label_field": "label", "id_field": "id", "labels": "ham,spam"}, headers=H)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["accepted"] == 2 and body["quarantined"] == 1
    assert client.get("/datasets/up").json()["records"] == 2


# -- CLI and the client the CLI uses when the server holds the file ----------------------------------------------------
def test_serve_refuses_a_public_address_without_a_key(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from cli.service import is_loopback

    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.duckdb")])
    assert r.exit_code == 2 and "CURATE_API_KEY" in r.stderr and "Traceback" not in r.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def _server_client(test_client, key=KEY):
    from api.client import ServerClient

    c = ServerClient("http://testserver", key)
    c._http = test_client
    test_client.headers.update({"X-API-Key": key} if key else {})
    return c


def test_server_client_requests_a_round_and_follows_the_job(client, store, fake):
    _pool(store)
    sc = _server_client(client)
    assert [d["name"] for d in sc.datasets()] == ["ds"]
    assert sc.sql("SELECT count(*) AS n FROM records")["rows"] == [{"n": 40}]
    started = sc.request_round("ds")
    assert started["created"]
    job = sc.wait(started["job_id"], poll_s=0.05, timeout_s=30)
    assert job["status"] == "succeeded" and job["result"]["tasks_pushed"] == 5
    assert sc.jobs(kind="round")["total"] == 1
    from api.client import ServerError

    with pytest.raises(ServerError) as e:
        sc.job("job-nope")
    assert e.value.status == 404 and e.value.code == "not_found" and "job-nope" in str(e.value)
    client.headers["X-API-Key"] = "wrong"
    with pytest.raises(ServerError) as e:
        sc.request_round("ds")
    assert e.value.status == 403


def test_cli_jobs_and_round_config_on_the_file(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from curation.settings import Settings
    from curation.store import Store

    db = tmp_path / "c.duckdb"
    with Store.open(Settings(db=db)) as s:
        make_dataset(s, "ds", ["a", "b"])
    runner = CliRunner()
    r = runner.invoke(app, ["round-config", "--dataset", "ds", "--every", "7", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["round_every"] == 7
    r = runner.invoke(app, ["round-config", "--dataset", "ds", "--size", "0", "--db", str(db)])
    assert r.exit_code == 2 and "round_size" in r.stderr
    r = runner.invoke(app, ["jobs", "--db", str(db), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["total"] == 0
    r = runner.invoke(app, ["jobs", "job-1", "--retry", "--db", str(db)])
    assert r.exit_code == 2 and "curate serve" in r.stderr


def test_weak_supervision_split_and_augment_routes_with_the_real_stages(client, tmp_path):
    """Upload → split from the given column → check → import WRENCH votes → label model → LF report → augment."""
    from tests.conftest import DATA

    rows = [json.loads(line) for line in (DATA / "wrench" / "youtube.jsonl").open()][:150]
    src = tmp_path / "yt.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with src.open("rb") as f:
        r = client.post("/datasets/yt/ingest", files={"file": ("yt.jsonl", f)},
                        data={"label_field": "label", "id_field": "id", "labels": "ham,spam"}, headers=H)
    assert r.status_code == 201 and r.json()["accepted"] == 150, r.text
    r = client.post("/datasets/yt/splits", json={"from_column": "split"}, headers=H)
    assert r.status_code == 200, r.text
    assert "leak" in json.dumps(client.get("/datasets/yt/splits/check").json())
    assert client.get("/datasets/yt/records", params={"split": "train", "limit": 1}).json()["total"] > 0
    with src.open("rb") as f:
        r = client.post("/datasets/yt/votes", files={"file": ("votes.jsonl", f)}, headers=H)
    assert r.status_code == 200, r.text
    r = client.post("/datasets/yt/label-model", json={"kind": "majority"}, headers=H)
    assert r.status_code == 200, r.text
    r = client.post("/datasets/yt/label-model", json={"kind": "nope"}, headers=H)
    assert r.status_code == 400 and "snorkel" in r.json()["error"]["message"]   # names the valid kinds
    r = client.post("/datasets/yt/lfs", files={"file": ("lfs.py", b"import os; os.system('touch pwned')")}, headers=H)
    assert r.status_code == 400 and "declarative" in r.json()["error"]["message"]
    yaml_lfs = b"lfs:\n  - {name: subscribe, kind: keyword, label: spam, keywords: [subscribe]}\n"
    r = client.post("/datasets/yt/lfs", files={"file": ("lfs.yaml", yaml_lfs)}, headers=H)
    assert r.status_code == 200, r.text
    assert client.get("/datasets/yt/lfs/report").status_code == 200
    r = client.post("/datasets/yt/augment", json={"per_record": 1, "augmenters": ["keyboard"], "limit": 5},
                    headers=H)
    assert r.status_code == 200, r.text
    assert client.get("/datasets/yt/records", params={"origin": "augment"}).json()["total"] >= 1
    r = client.post("/datasets/yt/augment", json={"augmenters": ["nope"]}, headers=H)
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
