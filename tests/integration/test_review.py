"""Human review of instruction data against a real Label Studio 1.23.2 server (see conftest.py).

Connect an instruction dataset (the review config), push a selection scored by an SFT run (highest response
loss first, the text area pre-filled with the current response), annotate as an annotator does (accept one,
reject one, edit one with a rating) → webhooks → gold keep/drop, a revision with lineage, `main.instructions`
showing the edited response; the same events again change nothing; an updated edit supersedes its revision, a
deleted one withdraws it; the pull reconciles.
"""

import json
import math
import secrets
import uuid

import pytest

from curation.store import now
from labeling import studio as ls
from labeling.studio import StudioClient, ensure_project, handle_webhook, pull_annotations, push_selection
from tests.integration.test_studio import Receiver
from tests.review_helpers import make_instruction_dataset, response_losses, seed_pairs, select

EDITED = "A corrected answer, written by the reviewer.\nWith a second line."


@pytest.fixture(scope="module")
def reviewer(labelstudio):
    with StudioClient(labelstudio.url, labelstudio.token) as admin:
        person = admin.users.signup_annotator(f"rev-{uuid.uuid4().hex[:6]}@example.org", secrets.token_urlsafe(12))
    with StudioClient(labelstudio.url, person.token) as client:
        yield person, client


@pytest.fixture
def review(store, studio, reviewer):
    name = f"inst_{uuid.uuid4().hex[:8]}"
    pairs = seed_pairs(4)
    ids = make_instruction_dataset(store, name, pairs, system="You are a helpful assistant.")
    losses = dict(zip(ids, [0.4, 2.5, 1.2, 3.1]))          # served: ids[3], ids[1], ids[2], ids[0]
    response_losses(store, "sft1", name, losses)
    with store.transaction() as cur:                        # a quality label model: ids[0] drop, others keep
        cur.execute("INSERT INTO store.label_models (model_id, dataset, lf_set_id, kind, created_at) "
                    "VALUES ('lm1', ?, 'lfs', 'majority', ?)", [name, now()])
        for i, rid in enumerate(ids):
            label = "drop" if i == 0 else "keep"
            cur.execute("INSERT INTO store.weak_labels VALUES ('lm1', ?, ?, ?, 0.8)",
                        [rid, [0.2, 0.8] if i == 0 else [0.8, 0.2], label])
    select(store, name, "rsel1", ids, run_id="sft1")
    connected = ensure_project(store, name, studio)
    pushed = push_selection(store, "rsel1", client=studio)
    users = studio.users.emails()
    secret = secrets.token_urlsafe(24)
    receiver = Receiver(store, secret, users)
    ls.register_webhook(studio, pushed["project_id"], receiver.url, secret)
    yield {"dataset": name, "ids": ids, "pairs": dict(zip(ids, pairs)), "losses": losses, "pushed": pushed,
           "connected": connected, "pid": pushed["project_id"], "receiver": receiver}
    receiver.stop()


def _result(text: str, verdict: str, rating: int | None = None) -> list[dict]:
    out = [{"from_name": "response", "to_name": "dialogue", "type": "textarea", "value": {"text": [text]}},
           {"from_name": "verdict", "to_name": "dialogue", "type": "choices", "value": {"choices": [verdict]}}]
    if rating is not None:
        out.append({"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": rating}})
    return out


def test_review_round_accept_reject_edit(store, studio, reviewer, review):
    person, client = reviewer
    pid, ids, pairs = review["pid"], review["ids"], review["pairs"]

    # connect: the review config, accepted by Label Studio
    project = studio.projects.get(pid)
    config = project["label_config"]
    assert '<Paragraphs name="dialogue" value="$dialogue"' in config and 'editable="true"' in config
    assert '<Rating name="rating"' in config and '<Choice value="edited"/>' in config
    assert review["connected"]["created"] is True
    assert (project["model_version"], project["sampling"]) == ("sft1", "Uncertainty sampling")

    # push: dialogue turn by turn, current response, the pre-annotation (text area + suggested choice)
    assert (review["pushed"]["created"], review["pushed"]["reranked"]) == (4, 4)
    tasks = {t["data"]["record_id"]: t for t in studio.tasks.list(pid, fields="all")}
    assert set(tasks) == set(ids)
    for rid, t in tasks.items():
        prompt, response = pairs[rid]
        assert t["data"]["dialogue"] == [{"author": "system", "text": "You are a helpful assistant."},
                                         {"author": "user", "text": prompt}]
        assert t["data"]["response"] == response and t["data"]["revision"] == 0
        (pred,) = [p for p in t["predictions"] if p["model_version"] == "sft1"]
        assert pred["score"] == pytest.approx(math.exp(-review["losses"][rid]), abs=1e-5)
        area = [r for r in pred["result"] if r["type"] == "textarea"]
        assert area[0]["value"]["text"] == [response]
        assert ls.result_label(pred["result"]) == ("reject" if rid == ids[0] else "accept")

    # the label stream serves the highest response loss first; the reviewer accepts, rejects, edits
    served, anns = [], {}
    plan = {ids[3]: ("accept", 4), ids[1]: ("reject", 1), ids[2]: ("edited", 5)}
    for _ in range(3):
        task = client.projects.next_task(pid)
        rid = task["data"]["record_id"]
        served.append(rid)
        verdict, rating = plan[rid]
        text = EDITED if verdict == "edited" else task["data"]["response"]
        anns[rid] = client.annotations.create(task["id"], _result(text, verdict, rating), lead_time=4.0,
                                              project_id=pid)
    assert served == [ids[3], ids[1], ids[2]]

    # webhooks arrived: gold keep / drop / keep, ratings and responses stored, one revision with lineage
    gold = dict(store.query("SELECT record_id, label FROM store.gold_labels WHERE source = 'annotation'"))
    assert (gold[ids[3]], gold[ids[1]], gold[ids[2]]) == ("keep", "drop", "keep") and ids[0] not in gold
    stored = {r[0]: r[1:] for r in store.query(
        "SELECT record_id, rating, response, annotator, via FROM store.annotations WHERE project_id = ?", [pid])}
    assert stored[ids[2]] == (5, EDITED, person.email, "webhook")
    assert stored[ids[1]][:2] == (1, pairs[ids[1]][1]) and stored[ids[3]][0] == 4
    revs = store.query("SELECT record_id, revision, parent_revision, source, annotator, annotation_id, status, "
                       "response, messages FROM store.revisions")
    assert len(revs) == 1
    rid, rev, parent, source, annotator, aid, status, response, messages = revs[0]
    assert (rid, rev, parent, source, annotator, aid, status, response) == (
        ids[2], 1, 0, "annotation", person.email, anns[ids[2]]["id"], "accepted", EDITED)
    msgs = json.loads(messages)
    assert msgs[-1] == {"role": "assistant", "content": EDITED} and msgs[1]["content"] == pairs[ids[2]][0]
    view = {r[0]: r[1:] for r in store.query(
        "SELECT record_id, response, revision, label, messages FROM main.instructions WHERE dataset = ?",
        [review["dataset"]])}
    assert view[ids[2]][:3] == (EDITED, 1, "keep")
    assert json.loads(view[ids[2]][3])[-1]["content"] == EDITED
    assert view[ids[1]][:3] == (pairs[ids[1]][1], 0, "drop")

    # the same events again (a retried webhook) and the pull: no second revision, nothing changes
    for payload in list(review["receiver"].payloads):
        handle_webhook(store, payload)
    pulled = pull_annotations(store, review["dataset"], studio)
    assert pulled["seen"] == 3 and pulled["deleted"] == 0
    assert set(pulled["outcomes"]) <= {"duplicate", "updated"}
    assert store.one("SELECT count(*) FROM store.revisions") == 1

    # the reviewer changes the edit: its revision is superseded by a new one with the same parent
    client.annotations.update(anns[ids[2]]["id"], result=_result(EDITED + " Better.", "edited", 5))
    revs = store.query("SELECT revision, parent_revision, status, response FROM store.revisions ORDER BY revision")
    assert revs == [(1, 0, "superseded", EDITED), (2, 0, "accepted", EDITED + " Better.")]
    assert store.one("SELECT response FROM main.instructions WHERE record_id = ?", [ids[2]]) == EDITED + " Better."

    # the reviewer deletes it: the revision is withdrawn, the record shows its ingested response again
    client.annotations.delete(anns[ids[2]]["id"])
    assert store.one("SELECT count(*) FROM store.revisions WHERE status = 'accepted'") == 0
    assert store.one("SELECT response FROM main.instructions WHERE record_id = ?", [ids[2]]) == pairs[ids[2]][1]
    assert store.one("SELECT count(*) FROM store.gold_labels WHERE record_id = ?", [ids[2]]) == 0
    again = pull_annotations(store, review["dataset"], studio)
    assert again["seen"] == 2 and store.one("SELECT count(*) FROM store.revisions") == 2
