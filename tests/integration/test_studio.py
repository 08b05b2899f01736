"""The Label Studio loop against a real Label Studio 1.23.2 server (see conftest.py).

Push 20 with pre-annotations → the label stream serves the most uncertain first (two annotators, two rounds) →
annotate 10 through the API as annotators do → webhooks arrive at a local receiver → the same webhooks again
and out of order → a webhook missed while the receiver was down is recovered by the pull.
"""

import json
import secrets
import socket
import threading
import time
import uuid

import numpy as np
import pytest

from curation.store import now
from labeling import studio as ls
from labeling.studio import StudioClient, choice_result, handle_webhook, pull_annotations, push_selection
from tests.conftest import WRENCH
from tests.helpers import make_dataset

DATA = WRENCH / "youtube.jsonl" if (WRENCH / "youtube.jsonl").exists() else None


def _texts(n: int, offset: int = 0) -> list[str]:
    from tests.conftest import DATA as RAW

    path = DATA or RAW / "wrench" / "youtube.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[offset:offset + n]]
    return [r["text"] for r in rows]


def _dataset(store, n: int = 30) -> tuple[str, list[int]]:
    name = f"yt_{uuid.uuid4().hex[:8]}"
    return name, make_dataset(store, name, _texts(n))


def _predict(store, run_id: str, record_ids, p_spam) -> None:
    """Rows a scoring run would write: probabilities over (ham, spam)."""
    with store.transaction() as cur:
        for rid, p in zip(record_ids, p_spam):
            probs = [1.0 - p, p]
            cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, scored_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [run_id, rid, probs, "spam" if p >= 0.5 else "ham", max(probs), now()])


def _select(store, dataset: str, selection_id: str, run_id: str | None, record_ids, round_: int = 1) -> None:
    with store.transaction() as cur:
        for rank, rid in enumerate(record_ids):
            cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, score, rank, created_at) VALUES (?, ?, ?, ?, ?, 'least_confidence', ?, ?, ?)",
                        [selection_id, dataset, round_, run_id, rid, None, rank, now()])


def _task_ids_by_record(store, pid: int) -> dict[int, int]:
    return dict(store.query("SELECT record_id, task_id FROM store.ls_tasks WHERE project_id = ?", [pid]))


@pytest.fixture(scope="module")
def annotators(labelstudio):
    """Two annotators who signed up through the organisation's invite link, each with its own token."""
    with StudioClient(labelstudio.url, labelstudio.token) as admin:
        people = [admin.users.signup_annotator(f"ann{i}-{uuid.uuid4().hex[:6]}@example.org",
                                               secrets.token_urlsafe(12)) for i in range(2)]
    clients = [StudioClient(labelstudio.url, p.token) for p in people]
    yield list(zip(people, clients))
    for c in clients:
        c.close()


class Receiver:
    """Our webhook receiver, as `api/` serves it: checks the secret token in constant time, then
    `handle_webhook`. Records every payload it accepted so tests can replay them."""

    def __init__(self, store, secret: str, users: dict[int, str]):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.payloads: list[dict] = []
        self.rejected = 0

        async def hook(request: Request):
            if not ls.verify_webhook_token(request.headers.get(ls.WEBHOOK_HEADER), secret):
                self.rejected += 1
                return JSONResponse({"detail": "bad webhook token"}, status_code=401)
            payload = await request.json()
            self.payloads.append(payload)
            return JSONResponse(handle_webhook(store, payload, users=users))

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/webhooks/label-studio"
        app = Starlette(routes=[Route("/webhooks/label-studio", hook, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def loop(store, studio, annotators):
    """A dataset of 30 real YouTube comments, a run's predictions, a round-1 selection of 20 pushed to Label
    Studio, and a webhook receiver registered with a secret."""
    name, ids = _dataset(store, 30)
    # distinct uncertainty: p_spam spread over (0.02, 0.98); |p - 0.5| small = uncertain
    rng = np.random.default_rng(7)
    p = rng.permutation(np.linspace(0.02, 0.98, len(ids)))
    _predict(store, "run1", ids, p)
    chosen = ids[:20]
    _select(store, name, "sel1", "run1", chosen)
    pushed = push_selection(store, "sel1", client=studio, batch_size=7)
    users = studio.users.emails()
    secret = secrets.token_urlsafe(24)
    receiver = Receiver(store, secret, users)
    reg = ls.register_webhook(studio, pushed["project_id"], receiver.url, secret)
    yield {"dataset": name, "ids": ids, "p": dict(zip(ids, p)), "pushed": pushed, "receiver": receiver,
           "pid": pushed["project_id"], "secret": secret, "webhook": reg}
    receiver.stop()


def _uncertainty(p: float) -> float:
    return 1.0 - max(p, 1.0 - p)


def test_push_creates_project_tasks_and_pre_annotations(store, studio, loop):
    pid, pushed = loop["pid"], loop["pushed"]
    assert pushed["created"] == 20 and pushed["skipped"] == 0 and pushed["reranked"] == 20
    project = studio.projects.get(pid)
    assert project["task_number"] == 20
    assert project["sampling"] == "Uncertainty sampling"
    assert project["model_version"] == "run1"
    assert '<Choice value="ham"/>' in project["label_config"] and '<Choice value="spam"/>' in project["label_config"]
    tasks = list(studio.tasks.list(pid, fields="all", page_size=8))     # pages until Label Studio's 404
    assert len(tasks) == 20
    by_record = _task_ids_by_record(store, pid)
    for t in tasks:
        rid = t["data"]["record_id"]
        assert by_record[rid] == t["id"]
        assert t["data"]["input_hash"] == store.one("SELECT input_hash FROM store.records WHERE record_id = ?", [rid])
        assert t["data"]["text"] == store.one("SELECT text FROM store.records WHERE record_id = ?", [rid])
        pre = [p for p in t["predictions"] if p["model_version"] == "run1"]
        assert len(pre) == 1
        p = loop["p"][rid]
        assert pre[0]["score"] == pytest.approx(max(p, 1 - p))
        assert ls.result_label(pre[0]["result"]) == ("spam" if p >= 0.5 else "ham")


def test_push_twice_creates_no_duplicates_and_adopts_lost_mapping(store, studio, loop):
    pid = loop["pid"]
    again = push_selection(store, "sel1", client=studio)
    assert (again["created"], again["skipped"], again["reranked"]) == (0, 20, 0)
    # the store loses its task mapping (a push interrupted after the import): the next push adopts the tasks
    with store.transaction() as cur:
        cur.execute("DELETE FROM store.ls_tasks WHERE project_id = ?", [pid])
    third = push_selection(store, "sel1", client=studio)
    assert (third["adopted"], third["created"]) == (20, 0)
    assert studio.projects.get(pid)["task_number"] == 20


def _annotate_next(client: StudioClient, pid: int, label_of) -> dict | None:
    task = client.projects.next_task(pid)
    if task is None:
        return None
    ann = client.annotations.create(task["id"], choice_result(label_of(task)), lead_time=2.5, project_id=pid)
    return {"task": task, "annotation": ann}


def test_label_stream_most_uncertain_first_two_annotators_two_rounds_and_webhooks(store, studio, annotators,
                                                                                  loop):
    pid, name, ids, p = loop["pid"], loop["dataset"], loop["ids"], loop["p"]
    task_of = _task_ids_by_record(store, pid)
    record_of = {t: r for r, t in task_of.items()}
    expected = sorted(ids[:20], key=lambda r: -_uncertainty(p[r]))
    truth = {r: ("spam" if i % 3 == 0 else "ham") for i, r in enumerate(ids)}

    served = []
    for i in range(10):       # two annotators take turns, as at the same time in the label stream
        _, client = annotators[i % 2]
        done = _annotate_next(client, pid, lambda t: truth[t["data"]["record_id"]])
        served.append(record_of[done["task"]["id"]])
    assert served == expected[:10]            # most uncertain first, no task twice, across both annotators

    # webhooks arrived while they annotated: 10 annotations stored with provenance and gold labels
    rows = store.query("SELECT record_id, label, annotator, via, lead_time, created_at, updated_at, was_cancelled "
                       "FROM store.annotations WHERE project_id = ? ORDER BY annotation_id", [pid])
    assert [r[0] for r in rows] == served
    emails = {a[0].email for a in annotators}
    assert all(r[3] == "webhook" and r[2] in emails and r[4] == 2.5 and r[5] and r[6] and r[7] is False
               for r in rows)
    assert {r[2] for r in rows} == emails
    gold = dict(store.query("SELECT record_id, label FROM store.gold_labels WHERE source = 'annotation'"))
    assert gold == {r: truth[r] for r in served}
    refs = store.query("SELECT g.source_ref, a.annotation_id FROM store.gold_labels g JOIN store.annotations a "
                       "ON a.record_id = g.record_id")
    assert all(ref == str(aid) for ref, aid in refs)
    assert loop["receiver"].rejected == 0

    # round 2: a new run rescored the whole unlabeled pool; 5 new records are selected. One round-1 task
    # left over becomes the most uncertain of all and must come first, then the order follows run 2.
    rest = [r for r in ids if r not in served]
    old_left = [r for r in rest if r in task_of]
    new = [r for r in rest if r not in task_of][:5]
    p2 = {r: 0.95 - 0.01 * i for i, r in enumerate(old_left + new)}   # confident: 0.95 .. 0.8
    p2[old_left[-1]] = 0.5                    # a leftover from round 1: now the most uncertain
    p2[new[0]] = 0.52                         # then a new one
    _predict(store, "run2", list(p2), list(p2.values()))
    _select(store, name, "sel2", "run2", new, round_=2)
    pushed2 = push_selection(store, "sel2", client=studio)
    assert (pushed2["created"], pushed2["reranked"]) == (5, len(old_left) + 5)
    assert studio.projects.get(pid)["model_version"] == "run2"
    task_of = _task_ids_by_record(store, pid)
    record_of = {t: r for r, t in task_of.items()}
    expected2 = sorted(p2, key=lambda r: (-_uncertainty(p2[r]), task_of[r]))
    served2 = []
    for i in range(4):
        _person, client = annotators[i % 2]
        done = _annotate_next(client, pid, lambda t: truth[t["data"]["record_id"]])
        served2.append(record_of[done["task"]["id"]])
    assert served2 == expected2[:4]
    assert served2[0] == old_left[-1] and served2[1] == new[0]
    # the annotator sees the current model's suggestion as the pre-annotation
    nxt = annotators[0][1].projects.next_task(pid)
    shown = [q for q in nxt["predictions"] if q["model_version"] == "run2"]
    assert ls.result_label(shown[0]["result"]) == ("spam" if p2[record_of[nxt["id"]]] >= 0.5 else "ham")


def test_webhooks_twice_and_out_of_order_then_update_and_delete(store, studio, annotators, loop):
    pid, receiver = loop["pid"], loop["receiver"]
    _person, client = annotators[0]
    done = _annotate_next(client, pid, lambda t: "ham")
    aid = done["annotation"]["id"]
    rid = done["task"]["data"]["record_id"]
    time.sleep(0.01)
    client.annotations.update(aid, result=choice_result("spam"))
    assert store.one("SELECT label FROM store.gold_labels WHERE record_id = ?", [rid]) == "spam"
    assert store.one("SELECT source_ref FROM store.gold_labels WHERE record_id = ?", [rid]) == str(aid)
    created, updated = receiver.payloads[-2], receiver.payloads[-1]
    assert (created["action"], updated["action"]) == ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")

    # the same deliveries again, and the older one last: nothing changes
    assert handle_webhook(store, updated)["outcomes"] == {"duplicate": 1}
    assert handle_webhook(store, created)["outcomes"] == {"stale": 1}
    assert store.one("SELECT label FROM store.gold_labels WHERE record_id = ?", [rid]) == "spam"
    assert store.one("SELECT count(*) FROM store.annotations WHERE annotation_id = ?", [aid]) == 1

    # delete in Label Studio: the webhook removes the gold label it set; a late "created" cannot revive it
    studio.annotations.delete(aid)
    assert receiver.payloads[-1]["action"] == "ANNOTATIONS_DELETED"
    assert store.one("SELECT deleted FROM store.annotations WHERE annotation_id = ?", [aid]) is True
    assert store.one("SELECT count(*) FROM store.gold_labels WHERE record_id = ?", [rid]) == 0
    assert handle_webhook(store, created)["outcomes"] == {"deleted": 1}
    assert handle_webhook(store, receiver.payloads[-1])["outcomes"] == {"already_deleted": 1}
    assert store.one("SELECT count(*) FROM store.gold_labels WHERE record_id = ?", [rid]) == 0

    # a skipped task arrives as a cancelled annotation: stored, no gold label
    task = client.projects.next_task(pid)
    skip = client.annotations.create(task["id"], [], was_cancelled=True, project_id=pid)
    row = store.query("SELECT was_cancelled, label FROM store.annotations WHERE annotation_id = ?", [skip["id"]])
    assert row == [(True, None)]
    assert store.one("SELECT count(*) FROM store.gold_labels WHERE record_id = ?",
                     [task["data"]["record_id"]]) == 0


def test_missed_webhooks_are_recovered_by_the_pull(store, studio, annotators, loop):
    pid, receiver, name = loop["pid"], loop["receiver"], loop["dataset"]
    person, client = annotators[1]
    kept = _annotate_next(client, pid, lambda t: "ham")          # delivered
    gone = _annotate_next(client, pid, lambda t: "ham")          # delivered, deleted while we are down
    before = store.one("SELECT count(*) FROM store.annotations WHERE project_id = ?", [pid])
    assert before == 2

    receiver.stop()                                              # our service goes down
    missed = [_annotate_next(client, pid, lambda t: "spam") for _ in range(3)]
    time.sleep(0.01)
    client.annotations.update(kept["annotation"]["id"], result=choice_result("spam"))
    studio.annotations.delete(gone["annotation"]["id"])
    # Label Studio accepted all of it; the webhooks were dropped
    assert store.one("SELECT count(*) FROM store.annotations WHERE project_id = ?", [pid]) == 2

    result = pull_annotations(store, name, studio)
    assert result["outcomes"].get("created") == 3
    assert result["outcomes"].get("updated") == 1
    assert result["deleted"] == 1
    for m in missed:
        rid = m["task"]["data"]["record_id"]
        assert store.query("SELECT label, source, annotator FROM store.gold_labels WHERE record_id = ?", [rid]) == \
            [("spam", "annotation", person.email)]
        assert store.one("SELECT via FROM store.annotations WHERE annotation_id = ?", [m["annotation"]["id"]]) == "pull"
    assert store.one("SELECT label FROM store.gold_labels WHERE record_id = ?",
                     [kept["task"]["data"]["record_id"]]) == "spam"
    assert store.one("SELECT count(*) FROM store.gold_labels WHERE record_id = ?",
                     [gone["task"]["data"]["record_id"]]) == 0
    # a second pull finds nothing new
    again = pull_annotations(store, name, studio)
    assert set(again["outcomes"]) == {"duplicate"} and again["deleted"] == 0


def test_webhook_registration_is_idempotent_and_token_is_required(studio, loop):
    import httpx

    pid = loop["pid"]
    again = ls.register_webhook(studio, pid, loop["receiver"].url, loop["secret"])
    assert again == {"webhook_id": loop["webhook"]["webhook_id"], "created": False}
    hooks = [w for w in studio.webhooks.list(pid) if w["url"] == loop["receiver"].url]
    assert len(hooks) == 1 and set(hooks[0]["actions"]) == set(ls.WEBHOOK_ACTIONS)
    assert hooks[0]["headers"] == {ls.WEBHOOK_HEADER: loop["secret"]}
    r = httpx.post(loop["receiver"].url, json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}]},
                   headers={ls.WEBHOOK_HEADER: "wrong"})
    assert r.status_code == 401
