"""SFT through the store, the CLI and the round: `curate ingest --task instruction` (token counts with the real
SmolLM2 tokenizer), `curate split`, `curate train` (an SFT run through the real GGUF model, a few steps on CPU),
`curate score` (response losses under the fine-tuned and the base model → response_scores), `curate select
--strategy highest_loss | cluster_loss`, the contamination gate, the CPU --quantize error, and the strategies'
pure cores.

The model is the converted GGUF cache that tests/test_sft.py uses (`.pytest_cache/curate-models/`)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curation.errors import InputError

pytest.importorskip("gguf", reason="the SFT tests need `pip install gguf`")

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".pytest_cache" / "curate-models"
SEED = ROOT / "data" / "self-instruct-seed" / "seed_tasks.chat.jsonl"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args: str):
    from cli import app

    r = CliRunner().invoke(app, list(args))
    return r


def cli_json(*args: str) -> dict:
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def short_seed_tasks(path: Path, n: int = 16) -> Path:
    """The `n` shortest seed conversations (tiny CPU runs), in file order."""
    rows = [json.loads(line) for line in SEED.read_text().splitlines() if line.strip()]
    size = [len(json.dumps(r["messages"])) for r in rows]
    keep = sorted(sorted(range(len(rows)), key=size.__getitem__)[:n])
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in keep))
    return path


@pytest.fixture(scope="module")
def llm_folder() -> str:
    from training.llm import default_llm, resolve_base

    try:
        default_llm()
    except InputError as e:
        pytest.skip(str(e))
    return resolve_base(None, MODEL_CACHE)


@pytest.fixture(scope="module")
def env(llm_folder):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_MODEL_CACHE", str(MODEL_CACHE))
        yield


@pytest.fixture(scope="module")
def seeded(env, tmp_path_factory):
    """An instruction dataset `seed` (16 short seed tasks) ingested and split through the CLI → its db path."""
    tmp = tmp_path_factory.mktemp("sft-store")
    db = str(tmp / "t.duckdb")
    ingest = cli_json("ingest", str(short_seed_tasks(tmp / "seed.jsonl")), "--dataset", "seed", "--task",
                      "instruction", "--db", db)
    split = cli_json("split", "--dataset", "seed", "--ratios", "0.5,0.25,0.25", "--db", db, "--no-progress")
    return {"db": db, "ingest": ingest, "split": split, "tmp": tmp}


def open_store(db: str):
    from curation.settings import Settings
    from curation.store import Store

    return Store.open(Settings(db=db))


TRAIN_ARGS = ("--min-quality", "0", "--max-steps", "2", "--batch-size", "4", "--max-length", "128", "--lr", "1e-3",
              "--num-generations", "1", "--max-new-tokens", "4", "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def sft_run(seeded):
    run = cli_json("train", "--dataset", "seed", *TRAIN_ARGS, "--db", seeded["db"])
    return run


# -- ingest ---------------------------------------------------------------------------------------------------
def test_ingest_counts_tokens_with_the_llm_tokenizer(seeded, llm_folder):
    from transformers import AutoTokenizer

    r = seeded["ingest"]
    assert r["accepted"] == 16 and r["tokenizer"].startswith("tokenizer:")
    tok = AutoTokenizer.from_pretrained(llm_folder)
    with open_store(seeded["db"]) as store:
        rows = store.query("SELECT messages, tokens FROM main.instructions ORDER BY record_id")
    for messages, tokens in rows:
        ids = tok.apply_chat_template(json.loads(messages), tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert tokens == len(ids)
    assert r["tokens"] == sum(t for _, t in rows)


def test_tokenizer_only_load_is_cached_for_a_gguf(tmp_path):
    from training.llm import cache_key, default_llm
    from training.sft_runs import llm_tokenizer

    tok = llm_tokenizer(None, tmp_path)              # an empty cache: read from the GGUF, saved beside
    key = cache_key(Path(default_llm()))
    assert (tmp_path / f"{key}.tokenizer" / "tokenizer_config.json").is_file()
    assert not (tmp_path / key).exists()             # no weights were converted
    again = llm_tokenizer(None, tmp_path)
    assert again("Hello there")["input_ids"] == tok("Hello there")["input_ids"]


# -- train ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sft_run_records_metrics_base_loss_and_files(sft_run, seeded):
    r = sft_run
    m = r["metrics"]
    assert r["task"] == "sft" and r["status"] == "succeeded" and r["train_steps"] == 2
    for split in ("val", "test"):
        assert np.isfinite(m[split]["loss"]) and m[split]["perplexity"] == pytest.approx(np.exp(m[split]["loss"]))
        assert np.isfinite(m["base"][split]["loss"]) and m["base"][split]["examples"] == m[split]["examples"]
    kept = r["data_counts"]["export"]
    assert kept["train"]["kept"] == r["data_counts"]["encoded"]["train"]["examples"] > 0
    run_dir = Path(r["run_dir"])
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "data" / "train.jsonl").is_file() and (run_dir / "data" / "manifest.json").is_file()
    gens = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 1 and isinstance(gens[0]["generated"], str)
    with open_store(seeded["db"]) as store:
        task, status, metrics, snapshot = store.query(
            "SELECT task, status, metrics, snapshot_id FROM main.runs WHERE run_id = ?", [r["run_id"]])[0]
    stored = json.loads(metrics)
    assert (task, status) == ("sft", "succeeded") and snapshot == r["snapshot_id"]
    assert stored["val"]["loss"] == m["val"]["loss"] and stored["base"]["val"]["loss"] == m["base"]["val"]["loss"]
    print(f"\nSFT run: val loss {m['val']['loss']:.4f} (base {m['base']['val']['loss']:.4f}), "
          f"load {r['load_seconds']} s, train {r['train_seconds']} s, {r['train_tokens_per_s']} tok/s")


def test_without_quality_labels_the_run_says_how_to_get_them(seeded):
    r = cli("train", "--dataset", "seed", "--max-steps", "1", "--device", "cpu", "--no-progress", "--db",
            seeded["db"])
    assert r.exit_code != 0
    assert "no train conversation is fit to train on" in r.output and "--min-quality 0" in r.output
    with open_store(seeded["db"]) as store:
        assert store.one("SELECT count(*) FROM store.runs WHERE status = 'running'") == 0


def test_quantize_on_cpu_is_a_clear_error_before_anything_runs(seeded):
    with open_store(seeded["db"]) as store:
        before = store.one("SELECT count(*) FROM store.versions")
        runs = store.one("SELECT count(*) FROM store.runs")
    r = cli("train", "--dataset", "seed", "--quantize", "4bit", "--device", "cpu", "--db", seeded["db"])
    assert r.exit_code != 0 and "needs a CUDA device" in r.output and "Drop --quantize" in r.output
    with open_store(seeded["db"]) as store:
        assert store.one("SELECT count(*) FROM store.versions") == before
        assert store.one("SELECT count(*) FROM store.runs") == runs


def test_options_are_checked_against_the_task(seeded):
    r = cli("train", "--dataset", "seed", "--gold-weight", "3", "--db", seeded["db"])
    assert r.exit_code != 0 and "gold_weight" in r.output and "classification runs" in r.output
    r = cli("train", "--dataset", "seed", "--task", "classification", "--db", seeded["db"])
    assert r.exit_code != 0 and "holds instructions" in r.output


def test_contamination_gate_refuses_and_allows(seeded, monkeypatch):
    import polars as pl

    from curation import versions
    from curation.contamination import ContaminationError, check_contamination
    from training import sft as sft_mod
    from training.sft_runs import SftRunConfig, train_sft_run

    with open_store(seeded["db"]) as store:
        frame, _ = versions.load_snapshot(versions.snapshot(store, "seed")["path"])
        train_ids = frame.filter(pl.col("split") == "train")["record_id"].to_list()
        msgs = json.loads(store.one("SELECT messages FROM main.instructions WHERE record_id = ?", [train_ids[0]]))
        ev = seeded["tmp"] / "eval.jsonl"
        ev.write_text(json.dumps({"messages": msgs}) + "\n")
        check_contamination(store, "seed", ev, ngram=3)
        runs = store.one("SELECT count(*) FROM store.runs")
        config = SftRunConfig(min_quality=0, max_steps=1, device="cpu")
        with pytest.raises(ContaminationError, match="train records share an n-gram"):
            train_sft_run(store, "seed", config)
        assert store.one("SELECT count(*) FROM store.runs") == runs

        class Stop(Exception):
            pass

        def stop(*a, **k):
            raise Stop

        monkeypatch.setattr(sft_mod, "train_sft", stop)
        with pytest.raises(Stop):
            train_sft_run(store, "seed", config, allow_contamination=True)
        row = store.query("SELECT task, status, contamination_allowed, config FROM store.runs "
                          "ORDER BY started_at DESC LIMIT 1")[0]
        assert row[:3] == ("sft", "failed", True) and json.loads(row[3])["allow_contamination"] is True
        # the check is the newest: clear it for the other tests of this module
        with store.transaction() as cur:
            cur.execute("DELETE FROM store.contamination")
            cur.execute("DELETE FROM store.contamination_checks")


# -- score and select -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(sft_run, seeded):
    return cli_json("score", "--run", sft_run["run_id"], "--device", "cpu", "--no-progress", "--db", seeded["db"])


@pytest.mark.slow
def test_score_writes_response_losses_base_losses_and_embeddings(scored, sft_run, seeded):
    assert scored["task"] == "sft" and scored["scored"] == 16 and scored["skipped_no_response_tokens"] == 0
    with open_store(seeded["db"]) as store:
        rows = store.query("SELECT record_id, loss, base_loss, tokens, embedding FROM store.response_scores "
                           "WHERE run_id = ? ORDER BY record_id", [sft_run["run_id"]])
        n_records = store.one("SELECT count(*) FROM store.records WHERE dataset = 'seed'")
    assert len(rows) == n_records == 16
    loss = np.array([r[1] for r in rows])
    base = np.array([r[2] for r in rows])
    assert np.isfinite(loss).all() and np.isfinite(base).all() and (loss > 0).all()
    assert all(r[3] > 0 for r in rows)
    emb = np.array([r[4] for r in rows], dtype=np.float32)
    assert emb.shape == (16, 576) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert scored["mean_loss"] == pytest.approx(loss.mean()) and scored["mean_base_loss"] == pytest.approx(base.mean())


@pytest.mark.slow
def test_select_highest_loss_takes_the_highest_unlabeled(scored, sft_run, seeded):
    from curation.store import now

    with open_store(seeded["db"]) as store:
        ranked = store.query("SELECT record_id, loss FROM store.response_scores WHERE run_id = ? "
                             "ORDER BY loss DESC, record_id", [sft_run["run_id"]])
        top = ranked[0][0]        # labeled now: it must not be selected
        with store.transaction() as cur:
            cur.execute("INSERT INTO store.gold_labels (record_id, label, source, updated_at) VALUES "
                        "(?, 'keep', 'annotation', ?)", [top, now()])
    sel = cli_json("select", "--run", sft_run["run_id"], "--strategy", "highest_loss", "--n", "3", "--db",
                   seeded["db"])
    assert sel["record_ids"] == [r[0] for r in ranked[1:4]]
    assert sel["scores"] == pytest.approx([r[1] for r in ranked[1:4]])
    assert sel["pool"]["labeled"] == 1
    div = cli_json("select", "--run", sft_run["run_id"], "--strategy", "cluster_loss", "--n", "3", "--db",
                   seeded["db"])
    assert len(set(div["record_ids"])) == 3 and not set(div["record_ids"]) & (set(sel["record_ids"]) | {top})
    r = cli("select", "--run", sft_run["run_id"], "--strategy", "margin", "--n", "3", "--db", seeded["db"])
    assert r.exit_code != 0 and "highest_loss" in r.output


# -- pure cores -----------------------------------------------------------------------------------------------
def test_loss_strategies_on_a_pool():
    from labeling.active import Pool, get_strategy

    rng = np.random.default_rng(0)
    centres = np.eye(4, 8, dtype=np.float32)
    emb = np.repeat(centres, 10, axis=0) + 0.01 * rng.standard_normal((40, 8)).astype(np.float32)
    losses = np.linspace(0.1, 4.0, 40)      # the cluster of the last centre holds the highest losses
    pool = Pool(np.arange(100, 140), np.exp(-losses)[:, None], emb, losses)
    ids, scores = get_strategy("highest_loss").query(pool, 4)
    assert list(ids) == [139, 138, 137, 136] and np.allclose(scores, losses[[39, 38, 37, 36]])
    ids, scores = get_strategy("cluster_loss", candidates=10).query(pool, 4)
    clusters = {(i - 100) // 10 for i in ids}
    assert clusters == {0, 1, 2, 3}          # one per prompt cluster, the highest loss of each
    assert set(ids) == {109, 119, 129, 139}
    assert ids[0] == 139                     # ... best first
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])      # no losses: −log max p (least-confident first)
    ids, scores = get_strategy("highest_loss").query(Pool(np.arange(3), probs), 3)
    assert list(ids) == [1, 2, 0] and np.allclose(scores, -np.log([0.5, 0.7, 0.9]))
    assert list(pool.without([139]).losses[-1:]) == [losses[38]]


def test_rounds_and_api_take_sft_options_for_instruction_datasets(seeded):
    from api.rounds import check_train_config, round_config
    from training.config import TrainConfig
    from training.sft_runs import SftRunConfig

    with open_store(seeded["db"]) as store:
        assert round_config(store, "seed")["round_strategy"] == "highest_loss"
        store.set_dataset_settings("seed", round_strategy="cluster_loss")
        assert round_config(store, "seed")["round_strategy"] == "cluster_loss"
    cfg = check_train_config({"max_steps": 2, "min_quality": 0, "allow_contamination": True}, True)
    assert isinstance(cfg, SftRunConfig) and cfg.max_steps == 2 and cfg.allow_contamination
    with pytest.raises(InputError, match="max_steps"):
        check_train_config({"max_steps": 2})
    assert check_train_config({"allow_contamination": True}).allow_contamination is True
    assert TrainConfig(allow_contamination=True).allow_contamination
