"""Label Studio sync without a server: pure cores, the store side of annotations (real DuckDB), and the HTTP
client against a fake Label Studio (httpx.MockTransport)."""

import datetime as dt
import json
import re

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.errors import InputError, NotFound
from curation.store import now
from labeling import studio as ls
from labeling.studio import server as ls_server
from tests.helpers import make_dataset
from tests.review_helpers import make_instruction_dataset, response_losses, select

TOKEN = "0123456789abcdef0123456789abcdef01234567"


# -- pure cores --------------------------------------------------------------------------------------------
def test_verify_webhook_token_constant_time_and_refuses_empty():
    assert ls.verify_webhook_token("s3cret-token", "s3cret-token")
    assert ls.verify_webhook_token(b"s3cret-token", "s3cret-token")
    assert not ls.verify_webhook_token("s3cret-tokeN", "s3cret-token")
    assert not ls.verify_webhook_token("s3cret", "s3cret-token")
    assert not ls.verify_webhook_token(None, "s3cret-token")
    assert not ls.verify_webhook_token("", "")          # no secret configured: nothing verifies
    assert not ls.verify_webhook_token("x", None)


def test_label_config_from_label_set_keeps_order_and_escapes():
    cfg = ls.label_config(["ham", "spam", 'a "b" <c>'])
    assert cfg.index('value="ham"') < cfg.index('value="spam"')
    assert "&lt;c&gt;" in cfg and "<c>" not in cfg
    assert '<Text name="text" value="$text"/>' in cfg
    with pytest.raises(InputError, match="--labels"):
        ls.label_config([])


def test_result_label_and_task_payload():
    assert ls.result_label(ls.choice_result("spam")) == "spam"
    assert ls.result_label([]) is None and ls.result_label(None) is None
    assert ls.result_label([{"type": "labels", "value": {"labels": ["x"]}}]) is None
    t = ls.task_payload("hi", 7, "abc", run_id="run1", label="ham", confidence=0.75)
    assert t["data"] == {"text": "hi", "record_id": 7, "input_hash": "abc"}
    assert t["predictions"] == [{"model_version": "run1", "score": 0.75, "result": ls.choice_result("ham")}]
    assert "predictions" not in ls.task_payload("hi", 7, "abc")


def test_uncertainty_kinds_and_registry_error():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]])
    for kind in ls.UNCERTAINTY:
        u = ls.uncertainty(p, kind)
        assert u[0] > u[2] > u[1] == pytest.approx(0.0)
    assert ls.uncertainty(p, "margin")[0] == pytest.approx(1.0) == ls.uncertainty(p, "entropy")[0]
    # least confidence: 1 - u is the confidence, so the pre-annotation's score orders the label stream
    assert 1 - ls.uncertainty(p, "least_confidence") == pytest.approx(p.max(axis=1))
    assert ls.rank_version("run1") == "run1" and ls.rank_version("run1", "margin") == "run1:margin"
    with pytest.raises(InputError, match="least_confidence, margin, entropy"):
        ls.uncertainty(p, "bald")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda r: sum(r) > 0),
                min_size=1, max_size=20))
def test_uncertainty_is_in_unit_interval(rows):
    p = np.array(rows) / np.array(rows).sum(axis=1, keepdims=True)
    for kind in ls.UNCERTAINTY:
        u = ls.uncertainty(p, kind)
        assert u.shape == (len(rows),) and np.all((u >= 0) & (u <= 1))


def test_parse_ts_naive_utc():
    assert ls.parse_ts("2026-11-21T06:39:08.556668Z") == dt.datetime(2026, 11, 21, 6, 39, 8, 556668)
    assert ls.parse_ts("2026-11-21T07:39:08+01:00") == dt.datetime(2026, 11, 21, 6, 39, 8)
    assert ls.parse_ts(None) is None
    with pytest.raises(ls.WebhookPayloadError, match="ISO 8601"):
        ls.parse_ts("yesterday")


# -- annotations in the store ------------------------------------------------------------------------------
PID = 5


@pytest.fixture
def pushed(store):
    """Three records pushed as tasks 101..103 of project 5; record 3 had an imported label."""
    ids = make_dataset(store, "yt", ["buy followers now", "nice song", "check my channel"],
                       labels=[None, None, "spam"])
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.ls_projects VALUES ('yt', ?, NULL, NULL, ?)", [PID, now()])
        for i, rid in enumerate(ids):
            h = store.one("SELECT input_hash FROM store.records WHERE record_id = ?", [rid])
            prior = store.query("SELECT label, source_ref FROM store.gold_labels WHERE record_id = ?", [rid])
            cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at, "
                        "prior_label, prior_source_ref) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [PID, h, 101 + i, rid, now(), *(prior[0] if prior else (None, None))])
    return ids


def _ann(aid, task, label, updated="2026-11-21T06:00:00Z", user=3, cancelled=False, **kw):
    return {"id": aid, "task": task, "project": PID, "completed_by": user, "was_cancelled": cancelled,
            "result": ls.choice_result(label) if label else [], "created_at": "2026-11-21T05:59:00Z",
            "updated_at": updated, "lead_time": 4.2, **kw}


def _gold(store, rid):
    rows = store.query("SELECT label, source, source_ref, annotator FROM store.gold_labels WHERE record_id = ?",
                       [rid])
    return rows[0] if rows else None


def test_record_annotation_idempotent_and_out_of_order(store, pushed):
    r1 = pushed[0]
    users = {3: "ann@example.org"}
    assert ls.record_annotation(store, _ann(1, 101, "ham"), users=users)["outcome"] == "created"
    assert ls.record_annotation(store, _ann(1, 101, "ham"), users=users)["outcome"] == "duplicate"
    assert _gold(store, r1) == ("ham", "annotation", "1", "ann@example.org")
    newer = _ann(1, 101, "spam", updated="2026-11-21T06:05:00Z")
    assert ls.record_annotation(store, newer, users=users)["outcome"] == "updated"
    assert ls.record_annotation(store, _ann(1, 101, "ham"), users=users)["outcome"] == "stale"
    assert _gold(store, r1)[0] == "spam"
    assert store.one("SELECT count(*) FROM store.annotations") == 1
    row = store.query("SELECT lead_time, created_at, updated_at, was_cancelled, via, annotator FROM "
                      "store.annotations WHERE annotation_id = 1")[0]
    assert row == (4.2, dt.datetime(2026, 11, 21, 5, 59), dt.datetime(2026, 11, 21, 6, 5), False, "webhook",
                   "ann@example.org")


def test_webhook_without_user_names_is_upgraded_by_the_pull(store, pushed):
    ls.record_annotation(store, _ann(1, 101, "ham"))
    assert _gold(store, pushed[0])[3] == "ls-user:3"
    out = ls.record_annotation(store, _ann(1, 101, "ham"), via="pull", users={3: "ann@example.org"})
    assert out["outcome"] == "updated" and _gold(store, pushed[0])[3] == "ann@example.org"


def test_latest_live_annotation_wins_and_deletion_restores(store, pushed):
    r1, r3 = pushed[0], pushed[2]
    ls.record_annotation(store, _ann(1, 101, "ham", user=3))
    ls.record_annotation(store, _ann(2, 101, "spam", updated="2026-11-21T06:01:00Z", user=4))
    assert _gold(store, r1)[:3] == ("spam", "annotation", "2")
    assert ls.mark_deleted(store, [2], project_id=PID) == {"deleted": 1, "already_deleted": 0, "tombstoned": 0}
    assert _gold(store, r1)[:3] == ("ham", "annotation", "1")      # the other annotator's label remains
    ls.mark_deleted(store, [1])
    assert _gold(store, r1) is None                                   # no annotation left: no gold label
    # record 3 had an imported label: an annotation overrides it, its deletion restores it
    assert _gold(store, r3)[:2] == ("spam", "imported")
    ls.record_annotation(store, _ann(3, 103, "ham"))
    assert _gold(store, r3)[:2] == ("ham", "annotation")
    ls.mark_deleted(store, [3])
    assert _gold(store, r3)[:3] == ("spam", "imported", "test")


def test_cancelled_and_invalid_annotations_set_no_gold(store, pushed):
    out = ls.record_annotation(store, _ann(1, 101, None, cancelled=True))
    assert out["outcome"] == "created" and _gold(store, pushed[0]) is None
    ls.record_annotation(store, _ann(2, 102, "eggs"))                 # not in the label set
    assert _gold(store, pushed[1]) is None
    assert store.one("SELECT label FROM store.annotations WHERE annotation_id = 2") == "eggs"
    # an annotation later cancelled (updated) removes the gold label it had set
    ls.record_annotation(store, _ann(3, 102, "ham"))
    assert _gold(store, pushed[1])[0] == "ham"
    ls.record_annotation(store, _ann(3, 102, None, cancelled=True, updated="2026-11-21T07:00:00Z"))
    assert _gold(store, pushed[1]) is None


def test_delete_before_create_is_a_tombstone(store, pushed):
    out = ls.handle_webhook(store, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 9}],
                                    "project": {"id": PID}})
    assert out["outcomes"] == {"tombstoned": 1}
    late = ls.handle_webhook(store, {"action": "ANNOTATION_CREATED", "annotation": _ann(9, 101, "ham"),
                                     "project": {"id": PID}})
    assert late["outcomes"] == {"deleted": 1}
    assert _gold(store, pushed[0]) is None


def test_handle_webhook_actions_and_bad_payloads(store, pushed):
    bulk = {"action": "ANNOTATIONS_CREATED", "project": {"id": PID},
            "annotation": [_ann(1, 101, "ham"), _ann(2, 102, "spam")], "task": [{"id": 101}, {"id": 102}]}
    out = ls.handle_webhook(store, bulk)
    assert out["outcomes"] == {"created": 2} and out["annotation_ids"] == [1, 2]
    assert ls.handle_webhook(store, {"action": "PROJECT_UPDATED", "project": {"id": PID}})["outcomes"] == \
        {"ignored": 1}
    with pytest.raises(ls.WebhookPayloadError, match="action"):
        ls.handle_webhook(store, {"annotation": {}})
    with pytest.raises(ls.WebhookPayloadError, match="annotation"):
        ls.handle_webhook(store, {"action": "ANNOTATION_CREATED"})
    with pytest.raises(ls.WebhookPayloadError, match="integer `id`"):
        ls.handle_webhook(store, {"action": "ANNOTATION_CREATED", "annotation": {"task": 101}})


def test_unknown_task_is_mapped_by_its_data(store, pushed):
    h = store.one("SELECT input_hash FROM store.records WHERE record_id = ?", [pushed[1]])
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": PID}, "annotation": _ann(1, 999, "ham"),
               "task": {"id": 999, "data": {"text": "nice song", "record_id": pushed[1], "input_hash": h}}}
    assert ls.handle_webhook(store, payload)["outcomes"] == {"created": 1}
    assert _gold(store, pushed[1])[0] == "ham"
    # the content is already task 102: the mapping stays one task per input_hash
    assert store.one("SELECT count(*) FROM store.ls_tasks WHERE input_hash = ?", [h]) == 1
    stranger = {"action": "ANNOTATION_CREATED", "annotation": _ann(2, 555, "ham"), "project": {"id": PID}}
    assert ls.handle_webhook(store, stranger)["outcomes"] == {"unknown_task": 1}


# -- HTTP client against a fake Label Studio ---------------------------------------------------------------
class FakeLS:
    """Just enough of Label Studio's API for the push: projects, import with task ids, predictions, tasks
    paged until 404, export, webhooks."""

    def __init__(self):
        self.projects, self.tasks, self.preds, self.hooks = {}, {}, [], {}
        self.calls: list[tuple[str, str]] = []
        self.deleted = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        m, path = request.method, request.url.path
        self.calls.append((m, path))
        if request.headers.get("authorization") != f"Token {TOKEN}":
            return httpx.Response(401, json={"detail": "Authentication credentials were not provided."})
        body = json.loads(request.content) if request.content else None
        if (m, path) == ("GET", "/api/projects"):
            return httpx.Response(200, json={"results": list(self.projects.values()), "next": None})
        if (m, path) == ("POST", "/api/projects/"):
            pid = max(self.projects, default=0) + 1 + self.deleted
            self.projects[pid] = {"id": pid, "task_number": 0, "model_version": "", **body}
            return httpx.Response(201, json=self.projects[pid])
        if mm := re.fullmatch(r"/api/projects/(\d+)/?", path):
            p = self.projects.get(int(mm[1]))
            if p is None:
                return httpx.Response(404, json={"detail": "Not found."})
            if m == "PATCH":
                p.update(body)
            p["task_number"] = sum(1 for t in self.tasks.values() if t["project"] == p["id"])
            return httpx.Response(200, json=p)
        if mm := re.fullmatch(r"/api/projects/(\d+)/import/?", path):
            ids = []
            for t in body:
                tid = len(self.tasks) + 1
                self.tasks[tid] = {"id": tid, "project": int(mm[1]), **t}
                ids.append(tid)
            return httpx.Response(201, json={"task_count": len(ids), "task_ids": ids})
        if mm := re.fullmatch(r"/api/projects/(\d+)/import/predictions", path):
            self.preds.extend(body)
            return httpx.Response(201, json={"created": len(body)})
        if (m, path) == ("GET", "/api/tasks"):
            q = request.url.params
            rows = [t for t in self.tasks.values() if t["project"] == int(q["project"])]
            page, size = int(q["page"]), int(q["page_size"])
            chunk = rows[(page - 1) * size: page * size]
            if not chunk:
                return httpx.Response(404, json={"detail": "Invalid page."})
            return httpx.Response(200, json={"tasks": chunk, "total": len(rows)})
        if (m, path) == ("GET", "/api/webhooks"):
            return httpx.Response(200, json=list(self.hooks.values()))
        if (m, path) == ("POST", "/api/webhooks"):
            wid = len(self.hooks) + 1
            self.hooks[wid] = {"id": wid, **body}
            return httpx.Response(201, json=self.hooks[wid])
        if mm := re.fullmatch(r"/api/webhooks/(\d+)", path):
            self.hooks[int(mm[1])].update(body)
            return httpx.Response(200, json=self.hooks[int(mm[1])])
        if path == "/boom":
            return httpx.Response(500, text="<html><body>Server Error (500)</body></html>")
        return httpx.Response(404, text="<html>not found</html>")


@pytest.fixture
def fake():
    return FakeLS()


@pytest.fixture
def client(fake):
    with ls.StudioClient("http://ls.test", TOKEN, transport=httpx.MockTransport(fake)) as c:
        yield c


def test_typed_http_errors_keep_status_and_hide_the_token(fake):
    bad = ls.StudioClient("http://ls.test", "wrong-token-value", transport=httpx.MockTransport(fake))
    with pytest.raises(ls.StudioAuthError) as e:
        bad.projects.get(1)
    assert e.value.status_code == 401 and "wrong-token-value" not in str(e.value)
    assert "LEGACY_API_TOKEN" in str(e.value) and "wrong-token-value" not in repr(bad)
    good = ls.StudioClient("http://ls.test", TOKEN, transport=httpx.MockTransport(fake))
    with pytest.raises(ls.StudioNotFound) as e:
        good.projects.get(42)
    assert e.value.status_code == 404 and e.value.path == "/api/projects/42"
    with pytest.raises(ls.StudioError) as e:
        good.request("GET", "/boom")
    assert e.value.status_code == 500 and "<html>" not in str(e.value) and "Server Error" in str(e.value)

    def down(request):
        raise httpx.ConnectError("refused")

    gone = ls.StudioClient("http://ls.test", TOKEN, transport=httpx.MockTransport(down))
    with pytest.raises(ls.StudioUnavailable) as e:
        gone.projects.list()
    assert e.value.status_code == 0 and TOKEN not in str(e.value)


def test_tasks_list_pages_until_404(client, fake):
    fake.projects[1] = {"id": 1}
    fake.tasks = {i: {"id": i, "project": 1} for i in range(1, 11)}
    assert [t["id"] for t in client.tasks.list(1, page_size=5)] == list(range(1, 11))
    assert fake.calls.count(("GET", "/api/tasks")) == 3       # page 3 answers 404


def _selection(store, name, n, run_id="run1", dup_of=None):
    texts = [f"comment number {i} with a link" for i in range(n)]
    if dup_of is not None:
        texts.append(texts[dup_of].upper() + "!!")          # same input_hash after normalisation
    ids = make_dataset(store, name, texts)
    with store.transaction() as cur:
        for rank, rid in enumerate(ids):
            p = 0.5 + rank / (2 * len(ids))
            cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, scored_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [run_id, rid, [1 - p, p], "spam", p, now()])
            cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, score, rank, created_at) VALUES ('s1', ?, 1, ?, ?, 'least_confidence', NULL, ?, ?)",
                        [name, run_id, rid, rank, now()])
    return ids


def test_push_is_batched_idempotent_and_ranks(store, client, fake):
    ids = _selection(store, "yt", 25, dup_of=3)
    out = ls.push_selection(store, "s1", client=client, batch_size=10)
    assert (out["selected"], out["created"], out["duplicates"], out["skipped"]) == (26, 25, 1, 0)
    assert sum(1 for c in fake.calls if c == ("POST", "/api/projects/1/import")) == 3
    assert out["reranked"] == 25 and out["model_version"] == "run1"
    project = fake.projects[1]
    assert (project["model_version"], project["show_collab_predictions"], project["sampling"]) == \
        ("run1", True, "Uncertainty sampling")
    first = fake.tasks[1]
    assert first["data"]["record_id"] == ids[0]
    assert first["predictions"] == [{"model_version": "run1", "score": 0.5, "result": ls.choice_result("spam")}]
    # the pre-annotation orders the stream: score = confidence = 1 - uncertainty, lowest served first
    scores = {t["id"]: t["predictions"][0]["score"] for t in fake.tasks.values()}
    assert len(scores) == 25 and fake.preds == []
    assert min(scores, key=scores.get) == 1

    # another uncertainty measure needs its own ordering predictions, sent with the tasks
    make_dataset(store, "yt2", ["x one", "x two"])
    with store.transaction() as cur:
        for rank, rid in enumerate(store.query("SELECT record_id FROM store.records WHERE dataset = 'yt2'")):
            cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, scored_at) "
                        "VALUES ('runm', ?, [0.3, 0.7], 'spam', 0.7, ?)", [rid[0], now()])
            cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, score, rank, created_at) VALUES ('s2', 'yt2', 1, 'runm', ?, 'margin', NULL, ?, ?)",
                        [rid[0], rank, now()])
    m = ls.push_selection(store, "s2", client=client, uncertainty_kind="margin")
    assert m["model_version"] == "runm:margin" and m["reranked"] == 2
    last = fake.tasks[max(fake.tasks)]
    assert [p["model_version"] for p in last["predictions"]] == ["runm", "runm:margin"]
    assert last["predictions"][1]["score"] == pytest.approx(0.4)

    again = ls.push_selection(store, "s1", client=client)
    assert (again["created"], again["skipped"], again["reranked"]) == (0, 25, 0)
    assert sum(1 for t in fake.tasks.values() if t["project"] == 1) == 25

    # round 2: a new run re-ranks the tasks already there with one predictions import, no new tasks
    with store.transaction() as cur:
        for rid in ids:
            cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, scored_at) "
                        "VALUES ('run2', ?, [0.9, 0.1], 'ham', 0.9, ?)", [rid, now()])
    r2 = ls.rerank(store, "yt", client, run_id="run2")
    assert r2 == {"project_id": 1, "model_version": "run2", "reranked": 25}
    assert len(fake.preds) == 25 and fake.projects[1]["model_version"] == "run2"
    assert fake.preds[0] == {"task": 1, "model_version": "run2", "score": 0.9, "result": ls.choice_result("ham")}
    assert ls.rerank(store, "yt", client, run_id="run2")["reranked"] == 0       # incremental


def test_push_unknown_selection_names_recent_ones(store, client):
    _selection(store, "yt", 3)
    with pytest.raises(NotFound, match="no selection 'nope'; recent: s1"):
        ls.push_selection(store, "nope", client=client)


def test_ensure_project_reuses_and_recreates(store, client, fake):
    make_dataset(store, "yt", ["a"])
    first = ls.ensure_project(store, "yt", client)
    assert first["created"] and first["project_id"] == 1
    assert ls.ensure_project(store, "yt", client) == first | {"created": False}
    del fake.projects[1]                                     # deleted in Label Studio
    fake.deleted += 1
    third = ls.ensure_project(store, "yt", client)
    assert third["created"] and third["project_id"] == 2


def test_register_webhook_is_idempotent_and_needs_a_secret(client, fake):
    a = ls.register_webhook(client, 1, "http://svc/hook", "tok")
    b = ls.register_webhook(client, 1, "http://svc/hook", "tok2")
    assert a == {"webhook_id": 1, "created": True} and b == {"webhook_id": 1, "created": False}
    assert fake.hooks[1]["headers"] == {ls.WEBHOOK_HEADER: "tok2"} and fake.hooks[1]["send_payload"] is True
    with pytest.raises(InputError, match="secret"):
        ls.register_webhook(client, 1, "http://svc/hook", "")


# -- the server harness, without starting one --------------------------------------------------------------
def test_installed_version_reads_metadata_not_the_cli(tmp_path):
    assert ls_server.installed_version(tmp_path) is None
    meta = tmp_path / "venv/lib/python3.11/site-packages/label_studio-1.23.2.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: label-studio\nVersion: 1.23.2\n\nbody")
    assert ls_server.installed_version(tmp_path) == "1.23.2"
    assert ls_server.install(tmp_path)["installed"] is False          # idempotent: nothing to do


def test_server_env_scrubs_fallbacks_and_keeps_files_inside(tmp_path, monkeypatch):
    for k in ("USERNAME", "PASSWORD", "DEBUG", "CI", "LABEL_STUDIO_HOST"):
        monkeypatch.setenv(k, "x")
    creds = ls_server.Credentials("u@localhost", "pw", TOKEN, "key")
    env = ls_server.server_env(tmp_path, tmp_path / "data", creds)
    assert not {"USERNAME", "PASSWORD", "DEBUG", "CI", "LABEL_STUDIO_HOST"} & set(env)
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true" and env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "data")
    assert env["XDG_DATA_HOME"].startswith(str(tmp_path)) and env["SENTRY_DSN"] == ""
    assert TOKEN not in repr(creds) and "pw" not in repr(creds)


# -- CLI ---------------------------------------------------------------------------------------------------
def test_cli_push_and_connect_print_one_json_object(tmp_path, fake, monkeypatch):
    from typer.testing import CliRunner

    from cli import app
    from cli import studio as cli_studio
    from curation.settings import Settings
    from curation.store import Store

    db = tmp_path / "c.duckdb"
    with Store.open(Settings(db=db)) as s:
        _selection(s, "yt", 4)
    monkeypatch.setattr(cli_studio, "_client", lambda url, token, root=None: ls.StudioClient(
        "http://ls.test", TOKEN, transport=httpx.MockTransport(fake)))
    runner = CliRunner()
    r = runner.invoke(app, ["studio", "push", "s1", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["created"], out["model_version"]) == (4, "run1")
    r = runner.invoke(app, ["studio", "connect", "yt", "--webhook-url", "http://svc/hook", "--db", str(db),
                            "--json"])
    assert r.exit_code == 2 and "CURATE_WEBHOOK_SECRET" in r.output
    monkeypatch.setenv("CURATE_WEBHOOK_SECRET", "tok")
    r = runner.invoke(app, ["studio", "connect", "yt", "--webhook-url", "http://svc/hook", "--db", str(db),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["webhook"] == {"webhook_id": 1, "created": True}
    assert "tok" not in r.stdout
    r = runner.invoke(app, ["studio", "server", "reboot", "--json"])
    assert r.exit_code == 2 and "install, start, stop, status" in r.output


FAKE_LS = r'''#!{python}
"""A stand-in `label-studio start`: answers whoami for the user and token it was started with."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
data = args[args.index("--data-dir") + 1]
os.makedirs(data, exist_ok=True)
open(os.path.join(data, "label_studio.sqlite3"), "a").close()
token, user = os.environ["LABEL_STUDIO_USER_TOKEN"], os.environ["LABEL_STUDIO_USERNAME"]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Token " + token
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(json.dumps({{"email": user}} if ok else {{}}).encode())
    def log_message(self, *a):
        pass
HTTPServer((args[args.index("--internal-host") + 1], port), H).serve_forever()
'''


@pytest.fixture
def fake_root(tmp_path):
    import sys

    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    exe = bin_ / "label-studio"
    exe.write_text(FAKE_LS.format(python=sys.executable))
    exe.chmod(0o755)
    meta = tmp_path / "venv/lib/python3.11/site-packages/label_studio-1.23.2.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Name: label-studio\nVersion: 1.23.2\n")
    return tmp_path


def test_server_start_stop_with_template_and_busy_port(fake_root, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    server = ls_server.start(fake_root, timeout=30)
    try:
        assert server.alive() and (fake_root / "template" / ".ready").exists()
        assert httpx.get(f"{server.url}/api/current-user/whoami",
                         headers={"Authorization": f"Token {server.token}"}).json() == {"email": server.username}
        assert server.data_dir.parent == fake_root / "instances"
    finally:
        server.stop()
    assert not server.alive() and not server.data_dir.exists()

    # another server holds the first port we pick and refuses our token: start again on another port
    class Other(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *a):
            pass

    other = HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    ports = iter([other.server_port])
    real = ls_server.free_port
    monkeypatch.setattr(ls_server, "free_port", lambda host="127.0.0.1": next(ports, None) or real())
    try:
        with ls_server.start(fake_root, timeout=30) as s2:
            assert s2.port != other.server_port and s2.alive()
    finally:
        other.shutdown()


def test_background_server_status_and_stop(fake_root):
    started = ls_server.start_background(fake_root)
    try:
        assert started["started"] and started["running"] and started["healthy"]
        assert ls_server.start_background(fake_root)["started"] is False        # already running
        assert ls_server.status(fake_root)["url"] == started["url"]
    finally:
        stopped = ls_server.stop_background(fake_root)
    assert stopped["stopped"] and not ls_server.status(fake_root)["running"]
    assert ls_server.stop_background(fake_root)["stopped"] is False


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_delivery_order_and_repeats_give_the_same_state(tmp_path_factory, data):
    """Webhooks arrive late, twice, out of order: the final annotations and gold labels do not depend on it."""
    from curation.settings import Settings
    from curation.store import Store

    # a history: annotations 1..4 on tasks 101/102, each created then maybe updated, maybe deleted
    events = []
    for aid in range(1, 5):
        task = data.draw(st.sampled_from([101, 102]))
        labels = data.draw(st.lists(st.sampled_from(["ham", "spam", None]), min_size=1, max_size=3))
        for v, label in enumerate(labels):
            ann = _ann(aid, task, label, cancelled=label is None, updated=f"2026-11-21T06:{aid:02d}:{v:02d}Z")
            events.append({"action": "ANNOTATION_CREATED" if v == 0 else "ANNOTATION_UPDATED",
                           "annotation": ann, "project": {"id": PID}})
        if data.draw(st.booleans()):
            events.append({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": aid}], "project": {"id": PID}})
    shuffled = data.draw(st.permutations(events))
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=4))

    def final_state(deliveries):
        with Store.open(Settings(db=tmp_path_factory.mktemp("s") / "p.duckdb")) as s:
            ids = make_dataset(s, "yt", ["a one", "b two"])
            with s.transaction() as cur:
                cur.execute("INSERT INTO store.ls_projects VALUES ('yt', ?, NULL, NULL, ?)", [PID, now()])
                for tid, rid in zip((101, 102), ids):
                    h = s.one("SELECT input_hash FROM store.records WHERE record_id = ?", [rid])
                    cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                                "VALUES (?, ?, ?, ?, ?)", [PID, h, tid, rid, now()])
            for e in deliveries:
                ls.handle_webhook(s, e)
            anns = s.query("SELECT annotation_id, label, updated_at, was_cancelled, deleted FROM store.annotations "
                           "WHERE NOT deleted ORDER BY 1")
            deleted = s.query("SELECT annotation_id FROM store.annotations WHERE deleted ORDER BY 1")
            gold = s.query("SELECT record_id, label, source, source_ref FROM store.gold_labels ORDER BY 1")
            return anns, deleted, gold

    assert final_state(events) == final_state(shuffled + repeats)


# -- instruction review ------------------------------------------------------------------------------------
CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
         {"role": "assistant", "content": "Paris."}]


def _review(text=None, verdict=None, rating=None):
    out = []
    if text is not None:
        out.append({"from_name": "response", "to_name": "dialogue", "type": "textarea", "value": {"text": [text]}})
    if verdict is not None:
        out.append({"from_name": "verdict", "to_name": "dialogue", "type": "choices",
                    "value": {"choices": [verdict]}})
    if rating is not None:
        out.append({"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": rating}})
    return out


def test_review_config_and_classification_config_unchanged():
    cfg = ls.review_config()
    assert '<Paragraphs name="dialogue" value="$dialogue" layout="dialogue" nameKey="author" textKey="text"/>' in cfg
    assert '<TextArea name="response" toName="dialogue" editable="true"' in cfg
    assert all(f'<Choice value="{v}"/>' in cfg for v in ("accept", "reject", "edited"))
    assert '<Rating name="rating" toName="dialogue" maxRating="5"/>' in cfg
    assert ls.project_config("instruction", ["keep", "drop"]) == cfg
    assert ls.project_config("classification", ["ham", "spam"]) == ls.label_config(["ham", "spam"])
    import xml.etree.ElementTree as ET

    names = {e.get("name") for e in ET.fromstring(cfg).iter() if e.get("name")}
    assert {"dialogue", "response", "verdict", "rating"} <= names


def test_review_task_payload_and_pre_annotation():
    turns, response = ls.dialogue_turns(json.dumps(CONVO))
    assert turns == [{"author": "system", "text": "Be brief."}, {"author": "user", "text": "Capital of France?"}]
    assert response == "Paris."
    t = ls.review_task(CONVO, 7, "h", model_version="sft1", score=0.25, suggestion="drop")
    assert t["data"] == {"dialogue": turns, "response": "Paris.", "record_id": 7, "input_hash": "h", "revision": 0}
    (pred,) = t["predictions"]
    assert (pred["model_version"], pred["score"]) == ("sft1", 0.25)
    assert pred["result"][0] == {"from_name": "response", "to_name": "dialogue", "type": "textarea",
                                 "value": {"text": ["Paris."]}}
    assert ls.result_label(pred["result"]) == "reject"
    # the latest accepted revision is what the annotator sees; no suggestion, no pre-selected choice
    t2 = ls.review_task(CONVO, 7, "h", response="Paris, France.", revision=2, model_version="v", score=None)
    assert t2["data"]["response"] == "Paris, France." and t2["data"]["revision"] == 2
    assert [r["type"] for r in t2["predictions"][0]["result"]] == ["textarea"]
    assert "predictions" not in ls.review_task(CONVO, 7, "h")
    assert ls.replace_response(CONVO, "Lyon?")[-1] == {"role": "assistant", "content": "Lyon?"}
    assert ls.replace_response(CONVO[:2], "Paris.")[-1] == {"role": "assistant", "content": "Paris."}
    assert CONVO[-1]["content"] == "Paris."                     # not modified in place


def test_loss_scores_serve_the_highest_loss_first():
    s = ls.loss_scores([0.1, 3.0, None, float("nan"), 1.0])
    assert s[2] is None and s[3] is None
    assert s[1] < s[4] < s[0] <= 1.0 and s[0] == pytest.approx(np.exp(-0.1))


@pytest.mark.parametrize(("result", "current", "expected"), [
    (_review("Paris.", "accept", 4), "Paris.", ("accept", "keep", None, 4)),
    (_review("Paris.", "reject", 1), "Paris.", ("reject", "drop", None, 1)),
    (_review("Paris, France.", "edited", 5), "Paris.", ("edited", "keep", "Paris, France.", 5)),
    # a changed text counts as an edit even when `accept` was chosen; whitespace alone is no change
    (_review("Paris is the capital.", "accept"), "Paris.", ("accept", "keep", "Paris is the capital.", None)),
    (_review("Paris.  \r\n", "edited"), "Paris.", ("edited", "keep", None, None)),
    # a rejected response is not revised; an edit without a verdict still keeps
    (_review("Lyon.", "reject"), "Paris.", ("reject", "drop", None, None)),
    (_review("Lyon."), "Paris.", (None, "keep", "Lyon.", None)),
    (_review(None, None, 3), "Paris.", (None, None, None, 3)),
    (_review("", "edited", 9), "Paris.", ("edited", "keep", None, None)),      # empty text, rating out of range
    ([], "Paris.", (None, None, None, None)),
])
def test_review_outcome(result, current, expected):
    o = ls.review_outcome(result, current)
    assert (o.verdict, o.label, o.revised, o.rating) == expected


@pytest.fixture
def reviewed(store):
    """Two instruction records pushed as tasks 201, 202 of project 6."""
    ids = make_instruction_dataset(store, "inst", [("Capital of France?", "Paris."), ("2+2?", "5")],
                                   system="Be brief.")
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.ls_projects VALUES ('inst', 6, NULL, NULL, ?)", [now()])
        for i, rid in enumerate(ids):
            h = store.one("SELECT input_hash FROM store.records WHERE record_id = ?", [rid])
            cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                        "VALUES (6, ?, ?, ?, ?)", [h, 201 + i, rid, now()])
    return ids


def _rann(aid, task, result, updated="2026-11-21T06:00:00Z", user=3, **kw):
    return {"id": aid, "task": task, "project": 6, "completed_by": user, "result": result,
            "created_at": "2026-11-21T05:59:00Z", "updated_at": updated, "lead_time": 3.0, **kw}


def _revisions(store):
    return store.query("SELECT record_id, revision, parent_revision, source, annotator, annotation_id, status, "
                       "response FROM store.revisions ORDER BY revision")


def test_review_accept_reject_and_rating(store, reviewed):
    users = {3: "rev@example.org"}
    a = ls.record_annotation(store, _rann(1, 201, _review("Paris.", "accept", 4)), users=users)
    b = ls.record_annotation(store, _rann(2, 202, _review("5", "reject", 1)), users=users)
    assert (a["gold"], b["gold"]) == ("set", "set") and "revision" not in a
    assert _gold(store, reviewed[0]) == ("keep", "annotation", "1", "rev@example.org")
    assert _gold(store, reviewed[1])[0] == "drop"
    assert store.query("SELECT label, rating, response FROM store.annotations ORDER BY annotation_id") == [
        ("keep", 4, "Paris."), ("drop", 1, "5")]
    assert _revisions(store) == []


def test_review_edit_is_a_revision_idempotent_superseded_and_withdrawn(store, reviewed):
    rid = reviewed[1]
    users = {3: "rev@example.org"}
    ev = _rann(5, 202, _review("4", "edited", 5))
    out = ls.record_annotation(store, ev, users=users)
    assert (out["outcome"], out["gold"], out["revision"]) == ("created", "set", "revised")
    assert ls.record_annotation(store, ev, users=users)["outcome"] == "duplicate"        # same event twice
    assert ls.record_annotation(store, ev, via="pull", users=users)["outcome"] == "duplicate"
    assert _revisions(store) == [(rid, 1, 0, "annotation", "rev@example.org", 5, "accepted", "4")]
    assert _gold(store, rid)[0] == "keep"
    view = store.query("SELECT response, revision, messages FROM main.instructions WHERE record_id = ?", [rid])[0]
    assert view[:2] == ("4", 1)
    assert json.loads(view[2]) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                                   {"role": "assistant", "content": "4"}]
    assert store.query("SELECT rating, response FROM store.annotations WHERE annotation_id = 5") == [(5, "4")]

    # an updated annotation with the same text: still one revision; with another text: its revision replaced
    later = _rann(5, 202, _review("4", "edited", 4), updated="2026-11-21T06:01:00Z")
    assert ls.record_annotation(store, later, users=users)["revision"] == "unchanged"
    newer = _rann(5, 202, _review("Four.", "edited", 4), updated="2026-11-21T06:02:00Z")
    assert ls.record_annotation(store, newer, users=users)["revision"] == "revised"
    assert [r[1:3] + r[6:] for r in _revisions(store)] == [(1, 0, "superseded", "4"), (2, 0, "accepted", "Four.")]
    # a second annotator edits on top of the accepted revision: parent is revision 2
    other = _rann(6, 202, _review("Four (4).", "edited", 5), user=4)
    ls.record_annotation(store, other, users={4: "other@example.org"})
    assert _revisions(store)[-1][1:3] == (3, 2)
    assert store.one("SELECT response FROM main.instructions WHERE record_id = ?", [rid]) == "Four (4)."
    # the first annotator changes its mind to a plain accept: its revision is withdrawn
    accept = _rann(5, 202, _review("Four (4).", "accept"), updated="2026-11-21T06:03:00Z")
    assert ls.record_annotation(store, accept, users=users)["revision"] == "withdrawn"
    # deleting the second annotation withdraws its revision; the ingested response is back, gold from #5 (keep)
    assert ls.mark_deleted(store, [6])["deleted"] == 1
    assert store.query("SELECT count(*) FROM store.revisions WHERE status = 'accepted'") == [(0,)]
    assert store.one("SELECT response FROM main.instructions WHERE record_id = ?", [rid]) == "5"
    assert _gold(store, rid)[:3] == ("keep", "annotation", "5")
    ls.mark_deleted(store, [5])
    assert _gold(store, rid) is None


def test_review_webhook_cancelled_and_tombstoned(store, reviewed):
    rid = reviewed[0]
    skipped = _rann(7, 201, _review("Lyon.", "edited"), was_cancelled=True)
    assert "revision" not in ls.record_annotation(store, skipped)            # skipped: no revision, no gold
    assert _revisions(store) == [] and _gold(store, rid) is None
    ls.mark_deleted(store, [8], project_id=6)                                   # deletion before creation
    out = ls.handle_webhook(store, {"action": "ANNOTATION_CREATED", "project": {"id": 6},
                                    "annotation": _rann(8, 201, _review("Lyon.", "edited")),
                                    "task": {"id": 201, "data": {}}})
    assert out["outcomes"] == {"deleted": 1} and _revisions(store) == []


def test_push_instruction_selection_orders_by_response_loss(store, client, fake):
    ids = make_instruction_dataset(store, "inst", [("a?", "A."), ("b?", "B."), ("c?", "C.")])
    response_losses(store, "sft1", "inst", {ids[0]: 0.2, ids[1]: 2.0, ids[2]: 1.0})
    select(store, "inst", "r1", ids, run_id="sft1")
    with store.transaction() as cur:        # an accepted edit of record 3: the task shows it
        cur.execute("INSERT INTO store.revisions VALUES (?, 1, 'C, edited.', '[]', 0, 'annotation', 'x', 9, "
                    "'accepted', ?)", [ids[2], now()])
    info = ls.ensure_project(store, "inst", client)
    assert info["label_config"] == ls.review_config()
    out = ls.push_selection(store, "r1", client=client)
    assert (out["created"], out["reranked"], out["model_version"]) == (3, 3, "sft1")
    assert fake.projects[1]["model_version"] == "sft1" and fake.preds == []
    by_record = {t["data"]["record_id"]: t for t in fake.tasks.values()}
    assert by_record[ids[2]]["data"]["response"] == "C, edited." and by_record[ids[2]]["data"]["revision"] == 1
    scores = {rid: t["predictions"][0]["score"] for rid, t in by_record.items()}
    assert min(scores, key=scores.get) == ids[1]                   # the highest loss is served first
    assert scores[ids[0]] == pytest.approx(np.exp(-0.2), abs=1e-6)
    assert all(len(t["predictions"]) == 1 for t in fake.tasks.values())
    # a later run re-ranks with the same pre-annotation (the text area), not a class choice
    response_losses(store, "sft2", "inst", {ids[0]: 3.0, ids[1]: 0.1, ids[2]: 0.5})
    r = ls.rerank(store, "inst", client, run_id="sft2")
    assert r["reranked"] == 3 and fake.projects[1]["model_version"] == "sft2"
    pred = {p["task"]: p for p in fake.preds}
    first = next(t for t in fake.tasks.values() if t["data"]["record_id"] == ids[0])
    assert pred[first["id"]]["result"][0]["value"] == {"text": ["A."]}
    assert pred[first["id"]]["score"] == pytest.approx(np.exp(-3.0), abs=1e-6)


def test_push_instruction_without_run_uses_the_quality_probability(store, client, fake):
    ids = make_instruction_dataset(store, "inst", [("a?", "A."), ("b?", "B.")])
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.label_models (model_id, dataset, lf_set_id, kind, created_at) "
                    "VALUES ('lm1', 'inst', 'lfs', 'majority', ?)", [now()])
        cur.execute("INSERT INTO store.weak_labels VALUES ('lm1', ?, [0.9, 0.1], 'keep', 0.9)", [ids[0]])
        cur.execute("INSERT INTO store.weak_labels VALUES ('lm1', ?, [0.4, 0.6], 'drop', 0.6)", [ids[1]])
    select(store, "inst", "r1", ids)
    out = ls.push_selection(store, "r1", client=client)
    assert out["model_version"] == "quality:lm1"
    by_record = {t["data"]["record_id"]: t["predictions"][0] for t in fake.tasks.values()}
    assert by_record[ids[1]]["score"] == pytest.approx(0.6) and ls.result_label(by_record[ids[1]]["result"]) == "reject"
    assert ls.result_label(by_record[ids[0]]["result"]) == "accept"
