"""Several annotators per task against a real Label Studio 1.23.2 (see conftest.py).

A project with annotations per task = 2: the label stream hands every task to both annotator accounts; the pull
keeps every annotation; gold labels are their majority (ties flagged, confidence 0.5); agreement is measured;
`send_back` reopens the tied tasks and a third annotator gets exactly those; a label-issue review task shows the
current label in its data with the suggested label pre-annotated, and the reviewer's answer records the outcome.
"""

import secrets
import uuid

import pytest

from curation.store import now
from labeling.agreement import dataset_agreement
from labeling.consensus import apply_consensus, send_back
from labeling.label_issues import select_issues
from labeling.studio import StudioClient, choice_result, ensure_project, pull_annotations, push_selection
from tests.helpers import make_dataset


def _annotator(labelstudio, tag):
    with StudioClient(labelstudio.url, labelstudio.token) as admin:
        person = admin.users.signup_annotator(f"{tag}-{uuid.uuid4().hex[:6]}@example.org",
                                              secrets.token_urlsafe(12))
    return person, StudioClient(labelstudio.url, person.token)


def _label_all(client, pid, answer) -> list[int]:
    """Annotate every task the label stream serves this user; `answer(task)` gives the label."""
    seen = []
    for _ in range(20):
        task = client.projects.next_task(pid)
        if not task:
            break
        client.annotations.create(task["id"], choice_result(answer(task)), project_id=pid, lead_time=2.5)
        seen.append(int(task["id"]))
    return seen


@pytest.fixture
def team(store, studio, labelstudio):
    name = f"team_{uuid.uuid4().hex[:8]}"
    ids = make_dataset(store, name, [f"comment number {i} {uuid.uuid4().hex[:4]}" for i in range(4)])
    with store.transaction() as cur:
        for rank, rid in enumerate(ids, start=1):
            cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, "
                        "score, rank, created_at) VALUES ('tsel', ?, 1, NULL, ?, 'random', 0, ?, ?)",
                        [name, rid, rank, now()])
    a, ca = _annotator(labelstudio, "ann-a")
    b, cb = _annotator(labelstudio, "ann-b")
    yield {"dataset": name, "ids": ids, "a": (a, ca), "b": (b, cb)}
    ca.close()
    cb.close()


def test_two_annotators_per_task_consensus_and_send_back(store, studio, labelstudio, team):
    name, ids = team["dataset"], team["ids"]
    info = ensure_project(store, name, studio, annotators_per_task=2)
    assert info["annotators_per_task"] == 2
    assert studio.projects.get(info["project_id"])["maximum_annotations"] == 2
    pushed = push_selection(store, "tsel", client=studio)
    pid = pushed["project_id"]
    assert pushed["created"] == 4
    (a, ca), (b, cb) = team["a"], team["b"]
    # a says ham everywhere; b says spam on the last two records
    spam_for_b = set(ids[2:])
    got_a = _label_all(ca, pid, lambda t: "ham")
    got_b = _label_all(cb, pid, lambda t: "spam" if t["data"]["record_id"] in spam_for_b else "ham")
    assert len(got_a) == 4 and sorted(got_a) == sorted(got_b)          # every task went to both
    pulled = pull_annotations(store, name, studio)
    assert pulled["seen"] == 8
    assert store.one("SELECT count(DISTINCT annotator) FROM store.annotations WHERE project_id = ?", [pid]) == 2
    gold = {r[0]: r[1:] for r in store.query("SELECT record_id, label, method, confidence FROM store.gold_labels "
                                             "WHERE record_id IN (SELECT unnest(?))", [ids])}
    assert gold[ids[0]] == ("ham", "majority", 1.0)
    assert gold[ids[2]][1:] == ("majority", 0.5)                       # a tie: the latest annotation's label
    rep = dataset_agreement(store, name)
    assert rep["items_multi"] == 4 and rep["annotators"] == 2
    assert rep["pairs"][0]["agreement"] == 0.5
    assert {p["annotator"] for p in rep["per_annotator"]} == {a.email, b.email}
    assert all(p["median_lead_time"] == 2.5 for p in rep["per_annotator"])

    cons = apply_consensus(store, name, "majority", threshold=0.6)
    assert set(cons["low_record_ids"]) == spam_for_b and cons["ties"] == 2
    sent = send_back(store, name, cons["low_record_ids"], studio)
    assert sent["sent_back"] == 2
    _, cc = _annotator(labelstudio, "ann-c")
    try:
        got_c = _label_all(cc, pid, lambda t: "spam")
        assert len(got_c) == 2                                           # only the reopened tasks
        assert _label_all(ca, pid, lambda t: "ham") == []               # not served to someone who answered
    finally:
        cc.close()
    pull_annotations(store, name, studio)
    for rid in spam_for_b:
        assert store.query("SELECT label, method, round(confidence, 3) FROM store.gold_labels WHERE record_id = ?",
                           [rid])[0] == ("spam", "majority", 0.667)


def test_label_issue_review_round_trip(store, studio, labelstudio, team):
    name = team["dataset"]
    ensure_project(store, name, studio, annotators_per_task=1)
    suspect = make_dataset(store, name, [f"subscribe to my channel {uuid.uuid4().hex[:6]}"], labels=["ham"])[0]
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.label_issues (dataset, record_id, label, label_source, suggested, score, "
                    "method, found_at) VALUES (?, ?, 'ham', 'imported', 'spam', 0.04, 'embeddings', ?)",
                    [name, suspect, now()])
    sel = select_issues(store, name, 1)
    pushed = push_selection(store, sel["selection_id"], client=studio)
    assert pushed["created"] == 1
    pid = pushed["project_id"]
    (_, ca), _ = team["a"], team["b"]
    task = ca.projects.next_task(pid)
    assert task["data"]["current_label"] == "ham" and task["data"]["review"] == "label_issue"
    full = studio.tasks.get(task["id"])
    preds = [p for p in full.get("predictions", []) if p.get("model_version") == pushed["model_version"]]
    assert preds and preds[0]["result"][0]["value"]["choices"] == ["spam"]
    ca.annotations.create(task["id"], choice_result("spam"), project_id=pid)
    pull_annotations(store, name, studio)
    assert store.query("SELECT outcome FROM store.label_issues WHERE record_id = ?", [suspect])[0][0] == "corrected"
    assert store.one("SELECT label FROM store.gold_labels WHERE record_id = ?", [suspect]) == "spam"
