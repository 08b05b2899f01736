"""`curate tune`: a few tiny trials on both engines — every trial a recorded run, the best config stored as the
dataset's round_train, a PNG written; the search space is validated."""

import json

import pytest

import tests.ray_cluster  # noqa: F401  (the loopback environment, before Ray is imported)
from curation.errors import InputError
from curation.settings import Settings
from curation.store import Store
from tests.test_training import build_store, wrench_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

BASE = {"max_length": 32, "patience": 0, "warmup_ratio": 0.0, "eval_batch_size": 64}
SPACE = {"lr": ("float", 3e-3, 2e-2, True), "epochs": ("int", 1, 2), "lora_r": ("categorical", [4, 8])}


@pytest.fixture
def tune_store(tmp_path):
    store = Store.open(Settings(db=tmp_path / "t.duckdb"))
    build_store(store, rows=wrench_rows(64, 24, 16), leak_test=0)
    yield store
    store.close()


def _check(store, r, trials):
    assert len(r["trials"]) == trials
    runs = store.frame("SELECT run_id, status, error, config FROM store.runs")
    ids = set(runs["run_id"].to_list())
    assert all(t["run_id"] in ids for t in r["trials"])                   # every trial is a recorded run
    assert r["best"]["state"] == "complete" and r["best"]["value"] is not None
    stored = store.dataset("yt")["settings"]["round_train"]
    assert stored == r["best_config"] and stored["max_length"] == 32 and set(SPACE) <= set(stored)
    best_run = runs.filter(runs["run_id"] == r["best"]["run_id"]).row(0, named=True)
    assert best_run["status"] == "succeeded"
    assert json.loads(best_run["config"])["lr"] == pytest.approx(r["best"]["params"]["lr"])
    with open(r["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tune_local(tune_store, tmp_path):
    from training.tune import tune

    r = tune(tune_store, "yt", trials=3, base=BASE, space=SPACE, plot_path=tmp_path / "t.png")
    _check(tune_store, r, 3)
    assert r["engine"] == "local" and r["metric"] == "val.macro_f1"


def test_tune_ray(tune_store, tmp_path):
    from tests.ray_cluster import ray_cluster
    from training.tune import tune

    engine = ray_cluster()[1]
    r = tune(tune_store, "yt", trials=2, base=BASE, space=SPACE, metric="val.loss", engine=engine,
             plot_path=tmp_path / "t.png")
    _check(tune_store, r, 2)
    assert r["engine"] == "ray" and r["direction"] == "minimize"


def test_tune_rejects_bad_input(tune_store):
    from training.tune import tune

    with pytest.raises(InputError, match="valid: val.macro_f1"):
        tune(tune_store, "yt", trials=1, metric="test.f1")
    with pytest.raises(InputError, match="not a training option"):
        tune(tune_store, "yt", trials=1, space={"learning_rate": ("float", 1e-4, 1e-2)})
