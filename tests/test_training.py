"""Training: pure pieces (config, data, metrics, batching) and the edge on a real store with the real MiniLM
weights on a few hundred real YouTube comments (1 epoch, max_length 64)."""

import json

import numpy as np
import polars as pl
import pytest

from curation.errors import InputError, LeakageError
from curation.settings import Settings
from curation.store import Store, now
from tests.helpers import make_dataset
from training import metrics
from training.config import TrainConfig
from training.data import build_splits, length_grouped_batches, pad

WRENCH_JSONL = __import__("pathlib").Path(__file__).resolve().parent.parent / "data/youtube-spam/wrench/youtube.jsonl"
LABELS = ["ham", "spam"]


def wrench_rows(n_train=240, n_val=60, n_test=60):
    rows = [json.loads(line) for line in WRENCH_JSONL.read_text().splitlines()]
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    return by["train"][:n_train] + by["val"][:n_val] + by["test"][:n_test]


def majority_probs(votes, k=2):
    c = np.bincount([v for v in votes if v >= 0], minlength=k).astype(float)
    return (c / c.sum()).tolist() if c.sum() else None


def build_store(store, name="yt", rows=None, *, gold_train=True, weak=True, leak_test=3):
    """A dataset from real WRENCH rows: gold labels (train gold optional), the column split with `leak_test`
    test records marked leaking (their component also holds a train record), majority-vote weak labels."""
    rows = rows or wrench_rows()
    gold = [LABELS[r["label"]] if (gold_train or r["split"] != "train") else None for r in rows]
    ids = make_dataset(store, name, [r["text"] for r in rows], gold)
    split_id = f"{name}-split"
    test_ids = [i for i, r in zip(ids, rows) if r["split"] == "test"][:leak_test]
    train_first = next(i for i, r in zip(ids, rows) if r["split"] == "train")
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.split_sets VALUES (?, ?, 'column', NULL, NULL, true, ?)", [split_id, name, now()])
        for i, r in zip(ids, rows):
            leaks = i in test_ids or (i == train_first and bool(test_ids))
            component = train_first if leaks else i
            cur.execute("INSERT INTO store.splits VALUES (?, ?, ?, ?, NULL, ?)", [split_id, i, r["split"], component, leaks])
        if weak:
            cur.execute("INSERT INTO store.label_models VALUES (?, ?, 'lfs', 'majority', NULL, NULL, ?)",
                        [f"{name}-mv", name, now()])
            for i, r in zip(ids, rows):
                p = majority_probs(r["weak_labels"])
                if p is not None:
                    cur.execute("INSERT INTO store.weak_labels VALUES (?, ?, ?, ?, ?)",
                                [f"{name}-mv", i, p, LABELS[int(np.argmax(p))], max(p)])
    return ids


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = {"epochs": 1, "max_length": 64, "lr": 1e-2, "batch_size": 32, "warmup_ratio": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run shared by the edge tests (leaky split, allowed)."""
    from training.train import train

    path = tmp_path_factory.mktemp("train")
    store = Store.open(Settings(db=path / "t.duckdb"))
    build_store(store)
    run = train(store, "yt", TrainConfig(**FAST, allow_leakage=True))
    yield store, run
    store.close()


# -- config ---------------------------------------------------------------------------------------------
def test_config_defaults_resolve_lazily():
    c = TrainConfig()
    assert c.base_model is None
    assert c.resolved_base_model().endswith("model")
    assert c.resolved_target_modules("bert") == ["query", "value"]
    assert c.resolved_target_modules("distilbert") == ["q_lin", "v_lin"]
    assert c.resolved_target_modules("deberta-v2") == ["query_proj", "value_proj"]
    assert TrainConfig(target_modules=["key"]).resolved_target_modules("bert") == ["key"]


def test_config_unknown_architecture_names_the_fix():
    with pytest.raises(InputError, match="--target-modules"):
        TrainConfig().resolved_target_modules("no-such-arch")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(nonsense=1)


def test_resolve_device_on_cpu():
    import torch

    from training.config import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(InputError, match="CUDA"):
            resolve_device("cuda")


# -- metrics --------------------------------------------------------------------------------------------
def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=200)
    y = rng.integers(0, 3, 200)
    pred = probs.argmax(1)
    rep = metrics.evaluate(y, probs, ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert rep["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    p = precision_score(y, pred, average=None)
    r = recall_score(y, pred, average=None)
    for i, lab in enumerate("abc"):
        assert rep["per_class"][lab]["precision"] == pytest.approx(p[i])
        assert rep["per_class"][lab]["recall"] == pytest.approx(r[i])
    assert sum(b["count"] for b in rep["reliability"]) == 200


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    y = np.array([0, 1, 0, 1])
    assert metrics.ece(y, np.eye(2)[y]) == pytest.approx(0.0)
    wrong = np.eye(2)[1 - y] * 0.98 + 0.01
    assert metrics.ece(y, wrong) == pytest.approx(0.99)


def test_uncertainty_measures():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]])
    assert np.allclose(metrics.least_confidence(p), [0, 0.5, 0.2])
    assert np.allclose(metrics.margin(p), [1, 0, 0.6])
    assert np.allclose(metrics.entropy(p), [0, np.log(2), -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))])


# -- data -----------------------------------------------------------------------------------------------
def _frame(**cols):
    n = len(cols["record_id"])
    base = {"text": [f"t{i}" for i in range(n)], "origin": ["ingest"] * n, "leaks": [False] * n}
    return pl.DataFrame(base | cols, schema_overrides={"weak_probs": pl.List(pl.Float64)})


def test_build_splits_gold_hard_weak_soft_and_weights():
    f = _frame(record_id=[1, 2, 3, 4, 5, 6], label=["spam", None, None, "ham", "ham", None],
               weak_probs=[[0.9, 0.1], [0.3, 0.7], None, None, [0.5, 0.5], [0.2, 0.8]],
               split=["train", "train", "train", "val", "test", "test"],
               origin=["ingest", "ingest", "ingest", "ingest", "ingest", "ingest"])
    s = build_splits(f, LABELS, TrainConfig(gold_weight=3.0, weak_targets="soft", weak_confidence_weighting=False))
    tr = s["train"]
    assert tr.record_ids.tolist() == [1, 2]                   # 3 has no label at all
    assert tr.targets.tolist() == [[0, 1], pytest.approx([0.3, 0.7])]   # gold wins over weak for record 1
    assert tr.weights.tolist() == [3.0, 1.0]
    assert tr.counts["unlabeled"] == 1 and tr.counts["used_gold"] == 1 and tr.counts["used_weak"] == 1
    assert s["val"].y.tolist() == [0] and s["test"].record_ids.tolist() == [5]   # test evaluates gold only


def test_build_splits_label_sources_and_augmented_rows():
    f = _frame(record_id=[1, 2, 3, 4], label=["spam", "spam", None, "spam"], weak_probs=[[1, 0], [1, 0], None, None],
               split=["train", "train", "test", "test"], origin=["ingest", "augment", "ingest", "augment"])
    weak_only = build_splits(f, LABELS, TrainConfig(label_sources="weak"))
    assert weak_only["train"].source.tolist() == ["weak", "weak"]
    assert weak_only["train"].counts["augmented"] == 1
    assert len(weak_only["test"]) == 0                       # augmented copies never evaluate
    with pytest.raises(InputError, match="no training examples"):
        build_splits(f.with_columns(pl.lit(None, pl.List(pl.Float64)).alias("weak_probs")), LABELS,
                     TrainConfig(label_sources="weak"))


def test_build_splits_names_the_bad_record():
    f = _frame(record_id=[7], label=["eggs"], weak_probs=[None], split=["train"])
    with pytest.raises(InputError, match="record 7.*'eggs'"):
        build_splits(f, LABELS, TrainConfig())


def test_build_splits_without_split():
    f = _frame(record_id=[1], label=["ham"], weak_probs=[None], split=[None])
    with pytest.raises(InputError, match="curate split"):
        build_splits(f, LABELS, TrainConfig())


def test_length_grouped_batches_partition_and_group():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 100, 1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert lengths[batches[0]].max() == lengths.max()         # longest first: an OOM shows at once
    pad_grouped = sum(len(b) * lengths[b].max() for b in batches)
    perm = rng.permutation(1000)
    pad_random = sum(16 * lengths[perm[i:i + 16]].max() for i in range(0, 1000, 16))
    assert pad_grouped < 0.7 * pad_random
    again = length_grouped_batches(lengths, 16, np.random.default_rng(0))
    assert all((a == b).all() for a, b in zip(batches, again))   # seeded


def test_pad():
    ids, mask = pad([[1, 2, 3], [4]], 0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


# -- the edge, real model ----------------------------------------------------------------------------------
def test_train_records_a_succeeded_run(trained):
    store, run = trained
    assert run["status"] == "succeeded" and run["run_id"].startswith("run-")
    for name in ("val", "test", "test_leakage_free"):
        m = run["metrics"][name]
        assert {"accuracy", "macro_f1", "ece"} <= set(m)
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["ece"] <= 1
    assert run["metrics"]["test"]["n"] == 60 and run["metrics"]["test_leakage_free"]["n"] == 57
    assert run["leakage_allowed"] is True and run["split_leaks"] == 1
    assert run["data_counts"]["train"]["used_gold"] == 240
    assert len(run["history"]) == 1 and "val_accuracy" in run["history"][0]
    assert run["target_modules"] == ["query", "value"] and 0 < run["trainable_params"] < 200_000
    row = store.query("SELECT status, snapshot_id, leakage_allowed, metrics, adapter_path, history FROM main.runs "
                      "WHERE run_id = ?", [run["run_id"]])[0]
    assert row[0] == "succeeded" and row[1] == run["snapshot_id"] and row[2] is True
    assert json.loads(row[3])["test"]["accuracy"] == run["metrics"]["test"]["accuracy"]
    from pathlib import Path

    d = Path(row[4]).parent
    assert (d / "adapter" / "adapter_config.json").exists() and (d / "labels.json").exists()
    assert json.loads((d / "labels.json").read_text()) == LABELS
    assert TrainConfig.model_validate_json((d / "config.json").read_text()).allow_leakage is True
    json.dumps(run, default=str)


def test_train_learns_something(trained):
    _, run = trained
    assert run["metrics"]["val"]["accuracy"] > 0.6      # YouTube spam is ~50/50; one epoch of LoRA beats chance


def test_leaky_split_is_refused_without_allow(trained):
    from training.train import train

    store, _ = trained
    before = store.one("SELECT count(*) FROM store.runs")
    with pytest.raises(LeakageError, match="1 duplicate component.*--allow-leakage"):
        train(store, "yt", TrainConfig(**FAST))
    assert store.one("SELECT count(*) FROM store.runs") == before   # refused before a run starts


def test_failed_run_is_recorded_with_its_error(trained):
    from training.train import train

    store, _ = trained
    with pytest.raises(InputError, match="--target-modules"):
        train(store, "yt", TrainConfig(**FAST, allow_leakage=True, target_modules=["no_such_module"]))
    status, error = store.query("SELECT status, error FROM main.runs ORDER BY started_at DESC LIMIT 1")[0]
    assert status == "failed" and "no_such_module" in error


def test_unknown_dataset(store):
    from curation.errors import NotFound
    from training.train import train

    with pytest.raises(NotFound, match="no dataset"):
        train(store, "nope", TrainConfig(**FAST))


@pytest.mark.gpu
def test_gpu_training_step_uses_bf16_autocast():
    import torch

    from training.score import autocast
    from training.train import build_model, soft_cross_entropy

    model, tok = build_model(TrainConfig(), LABELS, "cuda")
    enc = tok(["hello world", "check out my channel"], return_tensors="pt", padding=True).to("cuda")
    with autocast("cuda"):
        logits = model(**enc).logits
    assert logits.dtype == torch.bfloat16
    loss = soft_cross_entropy(logits, torch.tensor([[1.0, 0], [0, 1.0]], device="cuda"), torch.ones(2, device="cuda"))
    loss.backward()


def test_train_leaks_marks_rows_whose_component_reaches_train():
    from training.data import train_leaks

    f = pl.DataFrame({"component": [1, 1, 2, 2, 3, None], "split": ["train", "test", "val", "test", "test", "test"],
                      "leaks": [True, True, True, True, False, False]})
    # component 2 crosses val/test only: not leakage from train, so row 4 stays in the leakage-free test subset
    assert train_leaks(f).tolist() == [True, True, False, False, False, False]
    assert train_leaks(f.drop("component")).tolist() == [True, True, True, True, False, False]
