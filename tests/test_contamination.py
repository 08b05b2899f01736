"""Contamination check: n-gram overlap with an evaluation set (planted overlaps found, unrelated records not
flagged, the overlap share on a hand case), the stored check, the CLI, and the training gate."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from curation.contamination import (
    ContaminationError,
    check_contamination,
    eval_ngram_set,
    eval_texts,
    find_contamination,
    ngram_hashes,
    normalise_tokens,
    require_uncontaminated,
    tokenize,
)
from curation.instructions import InstructionFields, ingest_instructions
from tests.conftest import DATA, ROOT
from tests.helpers import make_dataset

SEED = ROOT / "data" / "self-instruct-seed" / "seed_tasks.chat.jsonl"


def test_tokens_are_lowercase_without_punctuation():
    assert normalise_tokens("Hello, World!  It's  A-OK.") == ["hello", "world", "its", "aok"]
    tok, lens = tokenize(["Hello, World!", None, "hello world"])
    assert lens.tolist() == [2, 0, 2]
    assert tok[:2].tolist() == tok[2:].tolist()


def test_texts_shorter_than_n_have_no_ngrams():
    tok, lens = tokenize(["a b c d e", "a b", "", "a b c"])
    h, off = ngram_hashes(tok, lens, 3)
    assert np.diff(off).tolist() == [3, 0, 0, 1]
    assert h[off[3]] == h[0]    # "a b c" hashes alike wherever it stands


def test_overlap_share_on_a_hand_case():
    ev = eval_ngram_set(["zz the lazy dog sleeps zz", "e f g"], 3)
    res = find_contamination({"prompt": ["The quick brown fox, jumps over the LAZY dog!", "a b c d e f g h"],
                              "response": ["nothing here at all", "e f g"]}, ev, 3)
    # record 0: 'the lazy dog' covers 3 of 9 + 4 tokens; record 1: 'e f g' in the prompt and the response
    assert res.matches.tolist() == [1, 2]
    assert res.overlap.tolist() == pytest.approx([3 / 13, 6 / 11])
    assert res.fields.tolist() == [1, 3]
    # overlapping matches count each token once
    ev2 = eval_ngram_set(["a b c d e"], 3)
    assert find_contamination({"t": ["a b c d e x"]}, ev2, 3).overlap.tolist() == pytest.approx([5 / 6])


def _seed_rows():
    return [json.loads(line) for line in SEED.open()]


@pytest.fixture
def seeded(store):
    ingest_instructions(store, SEED, "seed", fmt="chat", fields=InstructionFields(id="id"))
    return store


def _planted_eval(tmp_path, rows, picks, layout="alpaca"):
    """An eval file holding, for each picked seed task, a 20-token window of its response inside other words,
    plus unrelated YouTube comments."""
    out = []
    for i in picks:
        toks = normalise_tokens(rows[i]["messages"][-1]["content"])
        window = " ".join(toks[:20])
        out.append({"instruction": "Answer the question below.", "input": "", "output": f"Sure. {window} Done."})
    yt = [json.loads(line)["text"] for line in (DATA / "wrench" / "youtube.jsonl").open()][:40]
    out += [{"instruction": t, "input": "", "output": "spam"} for t in yt]
    path = tmp_path / f"eval.{layout}.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in out))
    return path


def test_planted_overlaps_are_found_and_unrelated_records_are_not(seeded, tmp_path):
    rows = _seed_rows()
    picks = [i for i, r in enumerate(rows) if len(normalise_tokens(r["messages"][-1]["content"])) >= 20][:12]
    path = _planted_eval(tmp_path, rows, picks)
    rep = check_contamination(seeded, "seed", path)
    flagged = {r["source_id"] for r in rep["records"]}
    assert {rows[i]["id"] for i in picks} <= flagged
    assert rep["checked"] == 175
    assert rep["contaminated"] == len(flagged)
    assert len(flagged - {rows[i]["id"] for i in picks}) <= 1   # a seed task may share a stock phrase
    assert all(r["field"] == "response" and 0 < r["overlap"] <= 1 for r in rep["records"]
               if r["source_id"] in {rows[i]["id"] for i in picks})
    stored = seeded.frame("SELECT * FROM main.contamination WHERE check_id = ?", [rep["check_id"]])
    assert stored.height == rep["contaminated"] and set(stored["ngram"].to_list()) == {13}
    assert all(len(m.split()) == 13 for m in stored["matched"].to_list())
    check = seeded.query("SELECT checked, contaminated FROM store.contamination_checks WHERE check_id = ?",
                         [rep["check_id"]])[0]
    assert check == (175, rep["contaminated"])
    # a stricter threshold flags fewer; the newest check is the one that counts
    rep2 = check_contamination(seeded, "seed", path, min_overlap=0.99)
    assert rep2["contaminated"] < rep["contaminated"] and rep2["check_id"] != rep["check_id"]


def test_the_eval_set_itself_is_fully_contaminated_and_formats_are_read(seeded, tmp_path):
    rep = check_contamination(seeded, "seed", SEED)
    long_enough = sum(1 for r in _seed_rows() if max(len(normalise_tokens(m["content"])) for m in r["messages"]) >= 13)
    assert rep["contaminated"] == long_enough
    _texts, counts = eval_texts(SEED)
    assert counts["layout"] == "chat" and counts["texts"] == 350
    csv = tmp_path / "eval.csv"
    pl.DataFrame({"text": ["a b c"], "label": ["x"]}).write_csv(csv)
    assert eval_texts(csv)[1]["layout"] == "text"


def test_classification_dataset_text_is_checked(store, tmp_path):
    yt = [json.loads(line)["text"] for line in (DATA / "wrench" / "youtube.jsonl").open()][:200]
    make_dataset(store, "yt", yt)
    long = [t for t in yt if len(normalise_tokens(t)) >= 15][:5]
    ev = tmp_path / "ev.jsonl"
    ev.write_text("".join(json.dumps({"text": "prefix words " + t, "label": 1}) + "\n" for t in long))
    rep = check_contamination(store, "yt", ev)
    got = {r["record_id"] for r in rep["records"]}
    ids = store.frame("SELECT record_id, text FROM store.records WHERE dataset = 'yt'")
    want = set(ids.filter(pl.col("text").is_in(long))["record_id"].to_list())
    assert want <= got and all(r["field"] == "text" for r in rep["records"])


def test_cli_json(seeded, tmp_path):
    from cli import app

    rows = _seed_rows()
    path = _planted_eval(tmp_path, rows, [0, 1, 2])
    seeded.close()   # the CLI opens the file itself
    r = CliRunner().invoke(app, ["contamination", "--dataset", "seed", "--against", str(path), "--json",
                                 "--db", str(seeded.settings.db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {"checked", "contaminated", "records"} <= set(out)
    assert {"record_id", "source_id", "overlap"} <= set(out["records"][0])


def test_gate_refuses_and_allows_and_records(store, tmp_path, monkeypatch):
    from curation import versions
    from curation.splits import make_split
    from training import train as train_mod
    from training.config import TrainConfig

    yt = [json.loads(line)["text"] for line in (DATA / "wrench" / "youtube.jsonl").open()][:300]
    labels = ["spam" if i % 2 else "ham" for i in range(len(yt))]
    make_dataset(store, "yt", yt, labels)
    make_split(store, "yt", "0.8,0.1,0.1", seed=0)
    manifest = versions.snapshot(store, "yt")
    frame, manifest = versions.load_snapshot(manifest["path"])
    train_rows = frame.filter(pl.col("split") == "train")
    planted = [t for t in train_rows["text"].to_list() if len(normalise_tokens(t)) >= 15][:3]
    ev = tmp_path / "ev.jsonl"
    ev.write_text("".join(json.dumps({"text": t}) + "\n" for t in planted))
    check_contamination(store, "yt", ev)
    with pytest.raises(ContaminationError, match="train records share an n-gram"):
        train_mod.train_snapshot(store, frame, manifest, TrainConfig())
    assert store.one("SELECT count(*) FROM store.runs") == 0

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(train_mod, "run_training", stop)
    with pytest.raises(Stop):
        train_mod.train_snapshot(store, frame, manifest, TrainConfig(), allow_contamination=True)
    assert store.query("SELECT contamination_allowed FROM store.runs")[0][0] is True
    # only train records count: a check flagging only test records passes the gate
    test_text = frame.filter(pl.col("split") == "test")["text"].to_list()
    ev.write_text("".join(json.dumps({"text": t}) + "\n" for t in test_text))
    check_contamination(store, "yt", ev)
    res = require_uncontaminated(store, "yt", train_rows["record_id"].to_list())
    assert res["ok"] and res["contaminated_in_train"] == 0
