"""Scoring: save → load round trip, uncertainty, the `score` edge writing `predictions`, the CLI contract."""

import json

import numpy as np
import pytest

from curation.errors import NotFound
from curation.settings import Settings
from curation.store import Store
from tests.test_training import FAST, LABELS, build_store, wrench_rows
from training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A small run (train gold hidden so the pool is large), scored once."""
    from training.score import score
    from training.train import train

    path = tmp_path_factory.mktemp("score")
    store = Store.open(Settings(db=path / "t.duckdb"))
    ids = build_store(store, rows=wrench_rows(160, 40, 40), gold_train=False, leak_test=0)
    run = train(store, "yt", TrainConfig(**FAST))
    result = score(store, run["run_id"])
    yield store, run, result, ids
    store.close()


def test_round_trip_reproduces_probabilities(tmp_path):
    """An adapter with non-trivial LoRA and head weights, saved and loaded back (merged for inference), gives the
    same probabilities as the in-memory model."""
    import torch

    from training.score import forward_batches, load_model
    from training.train import TrainResult, build_model, save_run

    config = TrainConfig(**FAST).model_copy(update={"base_model": TrainConfig().resolved_base_model()})
    model, tok = build_model(config, LABELS, "cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)       # lora_B starts at 0: make the adapter matter
    texts = [r["text"] for r in wrench_rows(40, 0, 0)]
    enc = tok(texts, truncation=True, max_length=64)["input_ids"]
    before, _ = forward_batches(model, enc, pad_id=0, batch_size=16, device="cpu")
    res = TrainResult(model, tok, LABELS, [], 1, {}, {}, "cpu", ["query", "value"], 0, 0.0, 0.0)
    save_run(tmp_path / "r1", res, config, {"run_id": "r1", "base_model": config.base_model, "labels": LABELS,
                                           "config": config.model_dump()})
    loaded = load_model(tmp_path / "r1")
    after = loaded.predict_proba(texts)
    assert np.abs(before - after).max() < 1e-4
    assert np.abs(before - 0.5).max() > 0.01                  # not a trivially uniform model
    assert load_model(tmp_path / "r1") is loaded               # cached: loaded once per process
    # batch size and order do not change the answer (dynamic padding is masked)
    assert np.abs(loaded.predict_proba(texts[::-1], batch_size=3)[::-1] - after).max() < 1e-4


def test_score_writes_predictions_for_the_pool(scored):
    store, run, result, _ = scored
    assert result["scored"] == 160 and result["include_labeled"] is False   # train had no gold labels
    assert sum(result["predicted"].values()) == 160
    df = store.frame("SELECT * FROM store.predictions WHERE run_id = ?", [run["run_id"]])
    assert df.height == 160
    probs = np.asarray(df["probs"].to_list())
    assert np.allclose(probs.sum(1), 1, atol=1e-6)
    assert np.allclose(df["least_confidence"].to_numpy(), 1 - probs.max(1))
    assert np.allclose(df["margin"].to_numpy(), np.abs(probs[:, 0] - probs[:, 1]))
    assert (df["entropy"].to_numpy() >= 0).all() and (df["entropy"].to_numpy() <= np.log(2) + 1e-9).all()
    assert df["label"].to_list() == [LABELS[i] for i in probs.argmax(1)]
    emb = np.asarray(df["embedding"].to_list())
    assert emb.shape == (160, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    view = store.frame("SELECT * FROM main.predictions LIMIT 1")
    assert "embedding" not in view.columns and "margin" in view.columns


def test_score_all_and_rescore_replaces(scored):
    from training.score import score

    store, run, _, _ = scored
    r = score(store, run["run_id"], include_labeled=True)
    assert r["scored"] == 240
    assert store.one("SELECT count(*) FROM store.predictions WHERE run_id = ?", [run["run_id"]]) == 240


def test_score_unknown_and_failed_runs(scored):
    from training.score import RunNotUsable, score

    store, _, _, _ = scored
    with pytest.raises(NotFound, match="no run 'nope'"):
        score(store, "nope")
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, error) VALUES ('bad', 'yt', 'failed', 'boom')")
    with pytest.raises(RunNotUsable, match="failed.*boom"):
        score(store, "bad")


def test_score_skips_augmented_copies(scored):
    from training.score import score

    store, run, _, ids = scored
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, origin, parent_id, ingest_id, source_row, ingested_at) SELECT 100000, dataset, NULL, text || ' !', \"group\", NULL, "
                    "input_hash, 'augment', record_id, NULL, NULL, ingested_at FROM store.records WHERE record_id = ?",
                    [ids[0]])
    r = score(store, run["run_id"])
    assert r["scored"] == 160


def test_cli_train_score_select_json(tmp_path):
    """The CLI contract: each command prints exactly one JSON object with the documented keys."""
    from typer.testing import CliRunner

    from cli import app

    db = tmp_path / "c.duckdb"
    with Store.open(Settings(db=db)) as store:
        build_store(store, rows=wrench_rows(80, 30, 30), gold_train=False, leak_test=2)
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--dataset", "yt", "--db", str(db), "--epochs", "1", "--max-length", "48",
                            "--lr", "0.01", "--json"])
    assert r.exit_code == 4 and "--allow-leakage" in r.output          # leaky split refused, clear message
    r = runner.invoke(app, ["train", "--dataset", "yt", "--db", str(db), "--epochs", "1", "--max-length", "48",
                            "--lr", "0.01", "--allow-leakage", "--json"])
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)
    assert run["status"] == "succeeded"
    for name in ("val", "test", "test_leakage_free"):
        assert {"accuracy", "macro_f1", "ece"} <= set(run["metrics"][name])
    r = runner.invoke(app, ["score", "--run", run["run_id"], "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["scored"] == 80
    r = runner.invoke(app, ["select", "--run", run["run_id"], "--strategy", "margin", "--n", "10", "--db", str(db),
                            "--json"])
    assert r.exit_code == 0, r.output
    sel = json.loads(r.stdout)
    assert sel["n"] == 10 and len(set(sel["record_ids"])) == 10 and sel["round"] == 1
    r = runner.invoke(app, ["select", "--run", run["run_id"], "--strategy", "margin", "--n", "100", "--db", str(db)])
    assert r.exit_code == 2 and "Pool exhausted: 70 available / 100 requested" in r.output
    r = runner.invoke(app, ["select", "--run", run["run_id"], "--strategy", "nope", "--db", str(db)])
    assert r.exit_code == 2 and "unknown strategy 'nope'" in r.output and "diverse_margin" in r.output


@pytest.mark.gpu
def test_gpu_scoring_uses_cuda(tmp_path):
    from training.score import forward_batches
    from training.train import build_model

    model, tok = build_model(TrainConfig(), LABELS, "cuda")
    enc = tok(["hello", "check out my channel please"], truncation=True)["input_ids"]
    probs, emb = forward_batches(model, enc, pad_id=0, batch_size=2, device="cuda", embeddings=True)
    assert probs.shape == (2, 2) and emb.shape == (2, 384)


def test_score_an_empty_pool(tmp_path, scored):
    from tests.helpers import make_dataset
    from training.score import score

    store, run, _, _ = scored
    make_dataset(store, "all_gold", ["a labeled comment"], ["ham"])
    r = score(store, run["run_id"], dataset="all_gold")
    assert r["scored"] == 0
