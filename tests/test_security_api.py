"""Security of the service (issue 12): keys on every route, roles from one table, keys hashed and never echoed,
the audit trail, keyless loopback mode (Host, Origin, Sec-Fetch-Site, content types), body limits and JSON depth,
the bounded webhook queue, the SQL concurrency bound, capped jobs, bounded parameters, stale uploads, dataset
names of dots, and training runs left `running` by a killed process.
"""

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import keys as K
from api.app import create_app
from api.security import ROUTE_ROLES, UPLOAD_ROUTES, json_depth_exceeds
from curation.errors import InputError
from curation.store import now
from tests.helpers import make_dataset

ADMIN = "admin-env-key-123"
SECRET = "hook-secret-456"


def _app(store, **settings):
    store.settings = store.settings.model_copy(update=settings)
    return create_app(store.settings, store)


@pytest.fixture
def keyed(store):
    """The app with CURATE_API_KEY (admin) and one key per role; yields (client without key, {role: key})."""
    keys = {role: K.create_key(store, f"{role}-1", role)["key"] for role in K.ROLES}
    keys["admin-env"] = ADMIN
    with TestClient(_app(store, api_key=SecretStr(ADMIN), webhook_secret=SecretStr(SECRET)),
                    raise_server_exceptions=False) as c:
        yield c, keys


def _h(key):
    return {"X-API-Key": key}


def _url(path):
    return (path.replace("{name}", "ds").replace("{run_id}", "r1").replace("{job_id}", "j1")
            .replace("{selection_id}", "s1").replace("{round_id}", "x").replace("{key_ref}", "nokey"))


def _app_routes(app):
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


# -- 1. every route but /health and the docs needs a key --------------------------------------------------------------
def test_every_route_has_exactly_one_declared_role(store):
    """Fails when a route (e.g. a new one in api/routes) has no entry in api.security.ROUTE_ROLES."""
    app = _app(store)
    routes = {(m, p) for m, p, _ in _app_routes(app)}
    missing = routes - set(ROUTE_ROLES)
    assert not missing, f"routes without a role in api.security.ROUTE_ROLES: {sorted(missing)}"
    docs = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
    assert set(ROUTE_ROLES) - routes <= docs, "stale entries in ROUTE_ROLES"
    uploads = {(m, p) for m, p, op in _app_routes(app)
               if "multipart/form-data" in (op.get("requestBody") or {}).get("content", {})}
    assert uploads == set(UPLOAD_ROUTES)
    assert {r for r, perm in ROUTE_ROLES.items() if perm == "public"} == docs | {("GET", "/health")}


def test_with_a_key_every_route_but_health_and_docs_needs_one(keyed, store):
    c, keys = keyed
    make_dataset(store, "ds", ["a", "b"])
    checked = 0
    for method, path, _ in _app_routes(c.app):
        if ROUTE_ROLES[(method, path)] == "public":
            continue
        r = c.request(method, _url(path))
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        r = c.request(method, _url(path), headers=_h("wrong"))
        assert r.status_code in (401, 403), (method, path)
        checked += 1
    assert checked >= 40
    # the reads of the finding: records, SQL over store tables, read_blob of the DB file
    assert c.get("/datasets/ds/records").status_code == 401
    assert c.post("/sql", json={"query": "SELECT * FROM read_blob('t.duckdb')"}).status_code == 401
    # /health is liveness only: no version, path, URL, stage or auth information
    r = c.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
    # an unknown path is not a way around the table
    assert c.get("/no/such/thing").status_code == 401
    assert c.get("/no/such/thing", headers=_h(keys["admin"])).status_code == 404


# -- 2. roles -----------------------------------------------------------------------------------------------------------
def test_roles_allow_what_the_table_says(keyed, store, monkeypatch):
    import api.rounds

    monkeypatch.setattr(api.rounds, "train", lambda *a, **k: {"run_id": "r", "status": "succeeded"})
    c, keys = keyed
    make_dataset(store, "ds", ["a", "b"])
    sql = {"query": "SELECT count(*) AS n FROM records"}

    def status(role, method, url, **kw):
        return c.request(method, url, headers=_h(keys[role]), **kw).status_code

    for role in ("engineer", "trainer", "admin", "admin-env"):
        assert status(role, "GET", "/datasets") == 200, role
        assert status(role, "GET", "/jobs") == 200, role
    assert status("annotator", "GET", "/datasets") == 403
    assert status("engineer", "POST", "/sql", json=sql) == 200
    assert status("trainer", "POST", "/sql", json=sql) == 403
    assert status("annotator", "POST", "/sql", json=sql) == 403
    assert status("engineer", "POST", "/datasets/ds/splits", json={}) == 200
    assert status("trainer", "POST", "/datasets/ds/splits", json={}) == 403
    assert status("trainer", "POST", "/runs", json={"dataset": "ds"}) == 202
    assert status("engineer", "POST", "/runs", json={"dataset": "ds"}) == 403
    for role in ("engineer", "trainer"):   # admin only: settings, job retry, keys, audit
        assert status(role, "PATCH", "/datasets/ds/settings", json={"round_size": 3}) == 403
        assert status(role, "POST", "/jobs/j1/retry") == 403
        assert status(role, "GET", "/keys") == 403
        assert status(role, "GET", "/audit") == 403
    assert status("admin", "PATCH", "/datasets/ds/settings", json={"round_size": 3}) == 200
    hook = {"action": "PROJECT_UPDATED"}
    assert status("annotator", "POST", "/webhooks/labelstudio", json=hook) == 200
    assert c.post("/webhooks/labelstudio", json=hook, headers={"X-Curate-Webhook-Token": SECRET}).status_code == 200
    assert status("engineer", "POST", "/webhooks/labelstudio", json=hook) == 401
    r = c.request("GET", "/datasets", headers=_h(keys["annotator"]))
    assert "annotator" in r.json()["error"]["message"] and keys["annotator"] not in r.text


def test_keys_are_hashed_revocable_and_never_echoed(keyed, store, caplog):
    c, keys = keyed
    caplog.set_level(logging.DEBUG)
    r = c.post("/keys", json={"name": "bob", "role": "engineer"}, headers=_h(ADMIN))
    assert r.status_code == 201
    bob = r.json()["key"]
    assert c.get("/datasets", headers=_h(bob)).status_code == 200
    listed = c.get("/keys", headers=_h(ADMIN)).json()
    assert {k["name"] for k in listed} >= {"bob", "engineer-1"} and bob not in json.dumps(listed)
    assert all("key_hash" not in k and "key" not in k for k in listed)
    stored = store.query("SELECT key_hash FROM store.api_keys WHERE name = 'bob'")[0][0]
    assert stored == K.hash_key(bob) and bob not in json.dumps(store.query("SELECT * FROM store.api_keys"),
                                                               default=str)
    assert c.delete("/keys/bob", headers=_h(ADMIN)).status_code == 200
    r = c.get("/datasets", headers=_h(bob))
    assert r.status_code == 403 and bob not in r.text
    assert c.delete("/keys/bob", headers=_h(ADMIN)).status_code == 404
    for k in (bob, ADMIN, *keys.values()):
        assert k not in caplog.text


def test_mutating_requests_are_audited_for_admins(keyed, store):
    c, keys = keyed
    make_dataset(store, "ds", ["a"])
    c.patch("/datasets/ds/settings", json={"round_size": 4}, headers=_h(keys["admin"]))
    c.post("/sql", json={"query": "SELECT 1"}, headers=_h(keys["engineer"]))
    c.post("/sql", json={"query": "SELECT 1"}, headers=_h("nope"))
    c.get("/datasets", headers=_h(keys["engineer"]))   # reads are not audited
    page = c.get("/audit", headers=_h(ADMIN)).json()
    rows = [(x["key_name"], x["role"], x["method"], x["path"], x["status"]) for x in page["items"]]
    assert ("admin-1", "admin", "PATCH", "/datasets/ds/settings", 200) in rows
    assert ("engineer-1", "engineer", "POST", "/sql", 200) in rows
    assert (None, None, "POST", "/sql", 403) in rows
    assert not any(r[2] == "GET" for r in rows)
    assert all(x["happened_at"] for x in page["items"])
    assert c.get("/audit", headers=_h(keys["engineer"])).status_code == 403


def test_cli_keys_create_list_revoke(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from curation.settings import Settings
    from curation.store import Store

    db = str(tmp_path / "k.duckdb")
    runner = CliRunner()
    r = runner.invoke(app, ["keys", "create", "--role", "trainer", "--name", "ci", "--db", db])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("curate_") and len(key) > 40
    r = runner.invoke(app, ["keys", "list", "--db", db, "--json"])
    listed = json.loads(r.stdout)["keys"]
    assert [(k["name"], k["role"], k["active"]) for k in listed] == [("ci", "trainer", True)] and key not in r.stdout
    r = runner.invoke(app, ["keys", "create", "--role", "root", "--name", "x", "--db", db])
    assert r.exit_code == 2 and "annotator, engineer, trainer, admin" in r.stderr
    with Store.open(Settings(db=Path(db))) as s:
        assert key not in json.dumps(s.query("SELECT * FROM store.api_keys"), default=str)
        assert K.find_key(K.active_keys(s), key).name == "ci"
    r = runner.invoke(app, ["keys", "revoke", "ci", "--db", db])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["keys", "list", "--db", db, "--json"])
    assert json.loads(r.stdout)["keys"][0]["active"] is False


# -- 5. keyless loopback mode ------------------------------------------------------------------------------------------
@pytest.fixture
def keyless(store):
    with TestClient(_app(store), raise_server_exceptions=False, base_url="http://127.0.0.1:8000") as c:
        yield c


def test_keyless_mode_refuses_other_hosts_and_cross_site_requests(keyless, store):
    make_dataset(store, "ds", ["a"])
    assert keyless.get("/datasets").status_code == 200
    assert keyless.get("/datasets", headers={"Host": "localhost:8000"}).status_code == 200
    r = keyless.get("/datasets", headers={"Host": "evil.example:8000"})   # DNS rebinding
    assert r.status_code == 403 and "Host" in r.json()["error"]["message"]
    r = keyless.post("/sql", json={"query": "SELECT 1"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = keyless.post("/sql", json={"query": "SELECT 1"}, headers={"Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200
    r = keyless.post("/sql", json={"query": "SELECT 1"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403


def test_bound_port_is_part_of_the_allowed_hosts(store):
    app = create_app(store.settings, store, bind=("127.0.0.1", 8123))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8123") as c:
        assert c.get("/datasets").status_code == 200
        assert c.get("/datasets", headers={"Host": "localhost:8123"}).status_code == 200
        assert c.get("/datasets", headers={"Host": "127.0.0.1:9999"}).status_code == 403
        r = c.post("/sql", json={"query": "SELECT 1"}, headers={"Origin": "http://localhost:3000"})
        assert r.status_code == 403


def test_form_posts_and_text_plain_bodies_are_refused(keyless, store, tmp_path):
    # what a cross-site HTML form can send without a preflight: urlencoded or text/plain
    r = keyless.post("/datasets/x/ingest", content=b"text=hello&label=spam",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = keyless.post("/webhooks/labelstudio", content=b'{"action": "X"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = keyless.post("/sql", content=b'{"query": "SELECT 1"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = keyless.post("/datasets/x/splits", files={"file": ("a.csv", b"x")})   # multipart where JSON is expected
    assert r.status_code == 415
    assert store.one("SELECT count(*) FROM store.records") == 0


# -- 6. bodies, nesting, the webhook queue, stale uploads ------------------------------------------------------------------
def test_bodies_over_the_limit_are_413_and_deep_json_is_400(store):
    app = _app(store, webhook_secret=SecretStr(SECRET), max_json_bytes=10_000, max_upload_bytes=20_000)
    hdr = {"X-Curate-Webhook-Token": SECRET}
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000") as c:
        big = {"action": "ANNOTATION_CREATED", "pad": "x" * 20_000}
        r = c.post("/webhooks/labelstudio", json=big, headers=hdr)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        def chunks():   # no Content-Length: the limit holds while reading
            yield b'{"action": "X", "pad": "'
            for _ in range(30):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/webhooks/labelstudio", content=chunks(), headers=hdr | {"Content-Type": "application/json"})
        assert r.status_code == 413
        deep = b'{"action": "X", "a": ' + b"[" * 2000 + b"]" * 2000 + b"}"
        r = c.post("/webhooks/labelstudio", content=deep, headers=hdr | {"Content-Type": "application/json"})
        assert r.status_code == 400 and "nests deeper" in r.json()["error"]["message"]
        r = c.post("/sql", content=b'{"query": ' + b"[" * 100 + b"]" * 100 + b"}",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = c.post("/datasets/u/ingest", files={"file": ("a.csv", b"text\n" + b"z" * 30_000 + b"\n")})
        assert r.status_code == 413
        assert c.app.state.curate.recorder.stats.received == 0
    assert store.one("SELECT count(*) FROM store.records") == 0
    assert not json_depth_exceeds(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 4)
    assert json_depth_exceeds(b'[[[[[1]]]]]', 4)


def test_full_webhook_queue_is_503_with_retry_after(store):
    app = _app(store, webhook_secret=SecretStr(SECRET), webhook_queue_max=2)
    hdr = {"X-Curate-Webhook-Token": SECRET}
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000") as c:
        recorder = c.app.state.curate.recorder
        gate = threading.Event()
        original = recorder._handle
        recorder._handle = lambda payload: (gate.wait(10), original(payload))
        codes = [c.post("/webhooks/labelstudio", json={"action": "PROJECT_UPDATED", "i": i}, headers=hdr).status_code
                 for i in range(6)]
        assert codes[:2] == [200, 200] and 503 in codes
        r = c.post("/webhooks/labelstudio", json={"action": "PROJECT_UPDATED"}, headers=hdr)
        assert r.status_code == 503 and r.headers["Retry-After"] and "pull" in r.json()["error"]["message"]
        assert recorder.stats.refused >= 1
        gate.set()
        assert recorder.drain(10)


def test_upload_copies_of_a_killed_process_are_removed_at_start(store):
    tmp = Path(tempfile.gettempdir())
    dead = tmp / "curate-upload-999999999-abc"       # no such pid
    dead.mkdir(exist_ok=True)
    (dead / "upload.csv").write_text("text\nsecret row\n")
    mine = tmp / f"curate-upload-{os.getpid()}-live"
    mine.mkdir(exist_ok=True)
    try:
        with TestClient(_app(store), base_url="http://127.0.0.1:8000"):
            assert not dead.exists()
            assert mine.exists()   # a live process's upload stays
    finally:
        mine.rmdir()


def test_upload_copies_are_removed_after_the_request(keyless, tmp_path):
    before = set(Path(tempfile.gettempdir()).glob(f"curate-upload-{os.getpid()}-*"))
    r = keyless.post("/datasets/u/votes", files={"file": ("v.csv", b"")})
    assert r.status_code in (400, 404)
    assert set(Path(tempfile.gettempdir()).glob(f"curate-upload-{os.getpid()}-*")) == before


# -- 4 (route side). SQL concurrency bound ---------------------------------------------------------------------------------
def test_sql_beyond_the_concurrency_bound_is_429(store):
    with TestClient(_app(store, sql_max_concurrent=1), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as c:
        slots = c.app.state.curate.sql_slots
        assert slots.acquire(blocking=False)   # one query "running"
        try:
            r = c.post("/sql", json={"query": "SELECT 1"})
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        finally:
            slots.release()
        assert c.post("/sql", json={"query": "SELECT 1"}).status_code == 200


# -- 8. fuzzing findings: bounded parameters, capped jobs ---------------------------------------------------------------
def test_offsets_seeds_and_augment_are_bounded(keyed, store):
    c, _ = keyed
    make_dataset(store, "ds", ["a", "b"])
    h = _h(ADMIN)
    for url in ("/jobs", "/datasets", "/runs", "/datasets/ds/rounds", "/selections", "/datasets/ds/records"):
        r = c.get(url, params={"offset": 2**63}, headers=h)
        assert r.status_code == 422, (url, r.text)
        assert c.get(url, params={"offset": 2**31 - 1}, headers=h).status_code == 200, url
    assert c.post("/datasets/ds/splits", json={"seed": -1}, headers=h).status_code == 422
    assert c.post("/datasets/ds/augment", json={"seed": -1}, headers=h).status_code == 422
    assert c.post("/datasets/ds/augment", json={"per_record": 100}, headers=h).status_code == 422
    assert c.post("/datasets/ds/augment", json={"limit": 10**9}, headers=h).status_code == 422
    assert c.post("/selections", json={"run_id": "r", "seed": -5}, headers=h).status_code == 422
    r = c.post("/datasets/ds/augment", json={"per_record": 5, "limit": 300}, headers=h)
    assert r.status_code == 400 and "at most 1000" in r.json()["error"]["message"]


def test_jobs_per_kind_are_capped(store, monkeypatch):
    import api.rounds

    gate = threading.Event()
    monkeypatch.setattr(api.rounds, "train", lambda *a, **k: (gate.wait(20), {"run_id": "r"})[1])
    make_dataset(store, "ds", ["a"])
    with TestClient(_app(store, api_key=SecretStr(ADMIN), max_active_jobs=3), raise_server_exceptions=False,
                    headers=_h(ADMIN)) as c:
        codes = [c.post("/runs", json={"dataset": "ds"}).status_code for _ in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        r = c.post("/runs", json={"dataset": "ds"})
        assert r.json()["error"]["code"] == "too_many_requests" and "CURATE_MAX_ACTIVE_JOBS" in r.text
        gate.set()
        c.app.state.curate.runner.wait(c.get("/jobs").json()["items"][0]["job_id"], timeout=20)


# -- 9. dataset names of dots; runs left running by a killed process ----------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "..."])
def test_dataset_names_of_dots_are_refused(store, name):
    with pytest.raises(InputError, match="not only dots"), store.transaction() as cur:
        store.ensure_dataset(cur, name, ["a"], "1")


def test_dot_dataset_names_are_refused_through_the_api(keyless):
    for name in ("%2E", "%2E%2E"):
        r = keyless.post(f"/datasets/{name}/ingest", files={"file": ("a.csv", b"text\nhello\n")})
        assert r.status_code == 400 and "not only dots" in r.json()["error"]["message"], r.text


def test_runs_left_running_by_a_killed_process_are_failed_at_start(store):
    make_dataset(store, "ds", ["a"])
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, started_at) VALUES ('run-dead', 'ds', "
                    "'running', ?)", [now()])
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, started_at, finished_at) VALUES "
                    "('run-ok', 'ds', 'succeeded', ?, ?)", [now(), now()])
    with TestClient(_app(store), base_url="http://127.0.0.1:8000") as c:
        dead = c.get("/runs/run-dead").json()
        assert dead["status"] == "failed" and "interrupted" in dead["error"] and dead["finished_at"]
        assert c.get("/runs/run-ok").json()["status"] == "succeeded"
