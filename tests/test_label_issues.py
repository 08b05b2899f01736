"""Label-issue detection: planted flips are found, suspects are stored, selected, reviewed; CLI and API."""

import json

import numpy as np
import pytest

from labeling import label_issues as li
from tests.helpers import make_dataset


def blobs(n=300, k=2, seed=0, flip=0.1):
    """Separable clusters with `flip` of the labels flipped: (X, noisy y, flipped mask)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(0, 3, size=(k, 8))
    X = centers[y] + rng.normal(0, 1, size=(n, 8))
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, int(flip * n), replace=False)] = True
    noisy = np.where(flipped, (y + rng.integers(1, k, n)) % k, y)
    return X, noisy, flipped, y


def test_out_of_fold_probs_rows_sum_to_one_and_fold_guard():
    X, y, _, _ = blobs(60)
    p = li.out_of_fold_probs(X, y, 3, folds=5)
    assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1) and (p[:, 2] == 0).all()
    with pytest.raises(Exception, match="at least 2 per"):
        li.out_of_fold_probs(X[:5], np.array([0, 0, 0, 0, 1]), 2)


@pytest.mark.parametrize("k", [2, 3])
def test_planted_flips_are_found(k):
    X, y, flipped, truth = blobs(400, k=k, seed=k)
    probs = li.out_of_fold_probs(X, y, k)
    issues = li.find_issues(y, probs)
    pr = li.precision_recall(issues.mask, flipped)
    assert pr["recall"] >= 0.8 and pr["precision"] >= 0.8
    # suggestions put the found flips back to the true class; the most suspect come first
    found = issues.indices
    assert (issues.suggested[found] == truth[found]).mean() >= 0.9
    assert np.all(np.diff(issues.score[found]) >= 0)


def fake_embed(texts, **_):
    """Deterministic 'embeddings': the class word in the text decides the cluster."""
    rng = np.random.default_rng(0)
    return np.array([[3.0, 0.0] if "spam" in t else [0.0, 3.0] for t in texts]) + rng.normal(0, 0.5, (len(texts), 2))


@pytest.fixture
def noisy_store(store, monkeypatch):
    monkeypatch.setattr(li, "embed_texts", fake_embed)
    texts = [f"buy spam {i}" if i % 2 else f"nice video {i}" for i in range(60)]
    labels = ["spam" if i % 2 else "ham" for i in range(60)]
    flips = [3, 10, 17, 24]
    for i in flips:
        labels[i] = "ham" if labels[i] == "spam" else "spam"
    ids = make_dataset(store, "yt", texts, labels=labels)
    return store, ids, {ids[i] for i in flips}


def test_detect_store_select_and_review(noisy_store):
    from labeling.studio.sync import review_issue

    store, _ids, flipped = noisy_store
    r = li.detect_label_issues(store, "yt")
    found = {s["record_id"] for s in r["suspects"]}
    assert flipped <= found and r["stored"] == r["flagged"] and len(found) <= 6
    assert store.one("SELECT count(*) FROM store.label_issues WHERE outcome IS NULL") == r["flagged"]
    sel = li.select_run_issues(store, "yt", 2)
    assert sel["strategy"] == "label_issues" and len(sel["record_ids"]) == 2
    assert set(sel["record_ids"]) <= found
    rid = sel["record_ids"][0]
    _current, suggested = store.query("SELECT label, suggested FROM store.label_issues WHERE record_id = ?", [rid])[0]
    with store.transaction() as cur:
        assert review_issue(cur, rid, suggested) == "corrected"
        assert review_issue(cur, rid, suggested) is None                 # reviewed once
    other = sel["record_ids"][1]
    lab = store.one("SELECT label FROM store.label_issues WHERE record_id = ?", [other])
    with store.transaction() as cur:
        assert review_issue(cur, other, lab) == "confirmed"
    # a re-run does not flag again a label a person reviewed, and keeps the reviewed rows
    again = li.detect_label_issues(store, "yt")
    assert again["already_reviewed"] == 2
    assert store.one("SELECT outcome FROM store.label_issues WHERE record_id = ?", [rid]) == "corrected"
    assert [x["record_id"] for x in li.list_issues(store, "yt", outcome="corrected")] == [rid]


def test_detect_weak_labels(noisy_store):
    store, _ids, flipped = noisy_store
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.label_models (model_id, dataset, lf_set_id, kind, created_at) "
                    "VALUES ('lm1', 'yt', 'lf1', 'majority', now())")
        for rid, lab in store.query("SELECT record_id, label FROM store.gold_labels"):
            cur.execute("INSERT INTO store.weak_labels VALUES ('lm1', ?, [0.5, 0.5], ?, 0.5)", [rid, lab])
    r = li.detect_label_issues(store, "yt", labels="weak")
    assert r["label_source"] == "weak:lm1" and flipped <= {s["record_id"] for s in r["suspects"]}
    assert store.one("SELECT count(*) FROM store.label_issues WHERE label_source = 'weak:lm1'") == r["stored"]


def test_cli_and_api(noisy_store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    store, _ids, flipped = noisy_store
    db = store.settings.db
    store.close()
    runner = CliRunner()
    res = runner.invoke(app, ["label-issues", "--dataset", "yt", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert flipped <= {s["record_id"] for s in json.loads(res.stdout)["suspects"]}
    res = runner.invoke(app, ["select", "--run", "yt", "--strategy", "label_issues", "--n", "2", "--json",
                              "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["strategy"] == "label_issues"
    f = tmp_path / "a.csv"
    f.write_text("source_id,annotator,label\nnope,a,ham\n")
    res = runner.invoke(app, ["annotations", "import", str(f), "--dataset", "yt", "--json", "--db", str(db)])
    assert res.exit_code == 0 and json.loads(res.stdout)["unknown_record"] == 1
    res = runner.invoke(app, ["agreement", "--dataset", "yt", "--db", str(db)])
    assert res.exit_code != 0 and "no annotations" in res.output


def test_api_routes(noisy_store, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from curation.settings import Settings

    store, _ids, flipped = noisy_store
    db = store.settings.db
    store.close()
    with TestClient(create_app(Settings(db=db)), base_url="http://127.0.0.1:8000") as c:
        r = c.post("/datasets/yt/label-issues", json={"folds": 3})
        assert r.status_code == 202, r.text
        job = r.json()["job_id"]
        import time

        for _ in range(200):
            st = c.get(f"/jobs/{job}").json()
            if st["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert st["status"] == "succeeded", st
        issues = c.get("/datasets/yt/label-issues").json()["issues"]
        assert flipped <= {x["record_id"] for x in issues}
        assert c.get("/datasets/yt/agreement").status_code == 404
        r = c.post("/datasets/yt/annotations", files={"file": ("a.csv", b"source_id,annotator,label\nx,a,ham\n")})
        assert r.status_code == 200 and r.json()["unknown_record"] == 1
        r = c.post("/datasets/yt/consensus", json={"method": "nope"})
        assert r.status_code in (400, 422)
