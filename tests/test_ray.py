"""The ray engine against the local engine on a real two-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py):
label matrix element for element, duplicate components, scores within 1e-6; plus engine choice and status."""

import numpy as np
import pytest

import tests.ray_cluster  # noqa: F401  (the loopback environment, before Ray is imported)

pytest.importorskip("ray")

from curation.engine import Engine, resolve_engine, status
from curation.errors import InputError
from curation.settings import Settings
from tests.helpers import make_dataset


@pytest.fixture(scope="session")
def ray_engine():
    from tests.ray_cluster import ray_cluster

    return ray_cluster()[1]


# -- engine choice (no Ray needed) ------------------------------------------------------------------------
def test_engine_choice_from_flags_and_settings():
    assert resolve_engine(None, Settings()).kind == "local"                  # auto without address: local
    assert resolve_engine("auto", Settings(ray_address="127.0.0.1:6379")).kind == "ray"
    s = Settings(engine="ray", ray_address="127.0.0.1:1")
    e = resolve_engine(None, s)
    assert (e.kind, e.address) == ("ray", "127.0.0.1:1")
    assert resolve_engine("local", s).kind == "local"                        # the flag wins
    with pytest.raises(InputError, match="valid: local, ray, auto"):
        resolve_engine("spark")
    assert status(Engine()) ["engine"] == "local"


def test_cli_engine_status_and_options(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["engine", "status", "--json", "--db", str(tmp_path / "t.duckdb")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["engine"] == "local"
    monkeypatch.setenv("CURATE_ENGINE", "spark")
    r = CliRunner().invoke(app, ["engine", "status", "--json"])
    assert r.exit_code != 0
    for cmd in (["lf", "apply"], ["split"], ["score"], ["tune"]):
        help_text = CliRunner().invoke(app, [*cmd, "--help"]).output
        assert "--engine" in help_text and "--ray-address" in help_text, cmd


@pytest.mark.slow   # a real Ray cluster (started once per session)
def test_cluster_status_lists_two_loopback_nodes(ray_engine):
    st = status(ray_engine)
    assert st["engine"] == "ray" and len(st["nodes"]) == 2
    assert {n["address"] for n in st["nodes"]} == {"127.0.0.1"}
    assert st["cpus"] == 3.0 and st["object_store_gb"] > 0


# -- LF application -------------------------------------------------------------------------------------
def _texts(n=600):
    from tests.test_training import wrench_rows

    rows = wrench_rows(1586, 120, 250)
    t = [r["text"] for r in rows]
    return (t * (n // len(t) + 1))[:n]


@pytest.mark.slow   # a real Ray cluster (started once per session)
def test_label_matrix_equal_to_local(ray_engine, store):
    from labeling import keyword_lf, labeling_function, regex_lf, sql_lf
    from labeling.lfs.apply import label_matrix
    from labeling.weak import apply_lfs, load_matrix, records_relation

    texts = _texts(900)
    make_dataset(store, "yt", texts)

    @labeling_function(label="spam")
    def long_caps(x):
        return sum(c.isupper() for c in x.text) > 10

    @labeling_function()
    def picky(x):
        if x.record_id % 97 == 0:
            raise ValueError("boom")          # a fault: counted the same way on both engines
        return "ham" if len(x.text) < 20 else None

    lfs = [keyword_lf("kw", ["subscribe", "check"], "spam"), regex_lf("url", r"https?://", "spam"),
           regex_lf("lookbehind", r"(?<=my )channel", "spam"),       # runs in Python (RE2 cannot)
           sql_lf("short", "length(text) < 15", "ham"), long_caps, picky]
    rel = records_relation("yt")
    local = label_matrix(store.con, rel, lfs, ["ham", "spam"], fault_tolerant=True)
    ray = label_matrix(store.con, rel, lfs, ["ham", "spam"], fault_tolerant=True, engine=ray_engine)
    assert np.array_equal(local.record_ids, ray.record_ids)
    assert ray.L.dtype == local.L.dtype and np.array_equal(local.L, ray.L)
    assert (ray.fired, ray.faults, ray.engines) == (local.fired, local.faults, local.engines)
    assert ray.fault_examples == local.fault_examples and sum(ray.faults) > 0
    # the store edge: the same votes stored
    a = apply_lfs(store, "yt", lfs, fault_tolerant=True, engine=ray_engine)
    m = load_matrix(store, "yt", a["lf_set_id"])
    assert np.array_equal(m["record_ids"], local.record_ids) and np.array_equal(m["L"], local.L)


@pytest.mark.slow   # a real Ray cluster (started once per session)
def test_label_matrix_ray_stops_on_a_fault_like_local(ray_engine, store):
    from labeling import labeling_function
    from labeling.lfs.apply import LFRuntimeError, label_matrix
    from labeling.weak import records_relation

    make_dataset(store, "yt", _texts(50))

    @labeling_function(label="spam")
    def bad(x):
        raise KeyError("nope")

    with pytest.raises(LFRuntimeError, match="LF 'bad' failed on record"):
        label_matrix(store.con, records_relation("yt"), [bad], ["ham", "spam"], engine=ray_engine)


# -- near-duplicates ------------------------------------------------------------------------------------
def _dup_texts(n=3000, seed=3):
    rng = np.random.default_rng(seed)
    base = _texts(1956)
    out = []
    for i in range(n):
        t = base[rng.integers(len(base))]
        r = rng.random()
        if r < 0.3:      # an edited near copy
            k = rng.integers(len(t)) if t else 0
            t = t[:k] + "x" + t[k + 1:]
        elif r < 0.4:
            t = t + f" {i}"
        out.append(t)
    return out


@pytest.mark.slow   # a real Ray cluster (started once per session)
@pytest.mark.parametrize("template_aware", [False, True])
def test_duplicate_components_equal_to_local(ray_engine, template_aware):
    from curation.dedup import DedupConfig, find_duplicates

    texts = _dup_texts(3000)
    cfg = DedupConfig(seed=7, template_aware=template_aware, template_min_df=20, max_bucket=8)
    local = find_duplicates(texts, config=cfg)
    ray = find_duplicates(texts, config=cfg, engine=ray_engine)
    assert np.array_equal(local.component, ray.component)
    key = ["a", "b", "kind"]
    lp, rp = local.pairs.sort(key), ray.pairs.sort(key)
    assert lp.select(key).equals(rp.select(key))
    assert np.allclose(lp["similarity"].fill_null(-1).to_numpy(), rp["similarity"].fill_null(-1).to_numpy())
    for k in ("lsh_pairs", "candidates", "near_pairs", "lsh_flagged", "lsh_docs", "components"):
        assert local.stats[k] == ray.stats[k], k
    assert local.stats["near_pairs"] > 50 and ray.stats["engine"] == "ray"


# -- pool scoring ---------------------------------------------------------------------------------------
@pytest.mark.slow   # a real Ray cluster (started once per session)
def test_scores_equal_to_local(ray_engine, tmp_path, one_torch_thread):
    from curation.store import Store
    from tests.test_training import FAST, build_store, wrench_rows
    from training.config import TrainConfig
    from training.score import score
    from training.train import train

    store = Store.open(Settings(db=tmp_path / "t.duckdb"))
    try:
        build_store(store, rows=wrench_rows(120, 30, 30), gold_train=False, leak_test=0)
        run = train(store, "yt", TrainConfig(**FAST))
        local = score(store, run["run_id"])
        q = ("SELECT record_id, probs, embedding FROM store.predictions WHERE run_id = ? ORDER BY record_id")
        a = store.frame(q, [run["run_id"]])
        ray = score(store, run["run_id"], engine=ray_engine)
        b = store.frame(q, [run["run_id"]])
    finally:
        store.close()
    assert local["scored"] == ray["scored"] > 100
    assert a["record_id"].equals(b["record_id"])
    pa_, pb = np.array(a["probs"].to_list()), np.array(b["probs"].to_list())
    assert np.abs(pa_ - pb).max() <= 1e-6
    ea, eb = np.array(a["embedding"].to_list()), np.array(b["embedding"].to_list())
    assert np.abs(ea - eb).max() <= 1e-5
    assert local["predicted"] == ray["predicted"]


# -- training: Ray Train TorchTrainer (DDP), 2 workers x 0.5 CPU ------------------------------------------
@pytest.mark.slow   # a real Ray cluster (started once per session)
def test_train_on_ray_ddp_records_the_same_schema(ray_engine, tmp_path, one_torch_thread):
    from curation.store import Store
    from tests.test_training import build_store, wrench_rows
    from training.config import TrainConfig
    from training.score import load_model
    from training.train import train

    store = Store.open(Settings(db=tmp_path / "t.duckdb"))
    try:
        build_store(store, rows=wrench_rows(64, 24, 16), leak_test=0)
        cfg = TrainConfig(epochs=1, max_length=32, batch_size=16, warmup_ratio=0.0, patience=0)
        local = train(store, "yt", cfg)
        ray = train(store, "yt", cfg, engine=ray_engine)
        rows = store.frame("SELECT run_id, status FROM store.runs ORDER BY started_at")
    finally:
        store.close()
    assert rows["status"].to_list() == ["succeeded", "succeeded"]
    assert set(ray["metrics"]) == set(local["metrics"]) and set(ray["metrics"]["val"]) == set(local["metrics"]["val"])
    assert [set(h) for h in ray["history"]] == [set(h) for h in local["history"]]
    assert ray["data_counts"] == local["data_counts"]
    m = load_model(ray["run_dir"], "cpu")                    # the saved adapter loads and predicts
    assert m.predict_proba(["check out my channel"]).shape == (1, 2)
