"""Active learning: contract tests for every registered strategy, Hypothesis property tests, and the `select`
edge on a real store (exclusion of labeled, pending and augmented records; pool exhaustion)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.errors import InputError, NotFound
from curation.store import now
from labeling.active import (
    AUTO_CANDIDATES,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Pool,
    PoolExhausted,
    UnknownStrategy,
    choose_auto,
    get_strategy,
    k_center_greedy,
    knn_density,
    select,
    strategy_history,
)
from tests.helpers import make_dataset


def make_pool(n, k=2, d=8, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=n)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    return Pool(np.arange(1000, 1000 + n) if ids is None else ids, probs, emb)


# -- contract: every strategy ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_contract_returns_n_distinct_pool_ids_not_excluded(name):
    pool = make_pool(200)
    exclude = set(range(1000, 1050))
    ids, scores = get_strategy(name).query(pool, 30, exclude=exclude, seed=3)
    assert len(ids) == 30 == len(set(ids.tolist())) == len(scores)
    assert set(ids.tolist()) <= set(pool.ids.tolist()) and not set(ids.tolist()) & exclude
    again, _ = get_strategy(name).query(pool, 30, exclude=exclude, seed=3)
    assert again.tolist() == ids.tolist()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_contract_exhausted_pool_says_so(name):
    with pytest.raises(PoolExhausted, match="Pool exhausted: 3 available / 50 requested"):
        get_strategy(name).query(make_pool(5), 50, exclude={1000, 1001})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_contract_whole_pool_and_bad_n(name):
    pool = make_pool(7)
    ids, _ = get_strategy(name).query(pool, 7)
    assert sorted(ids.tolist()) == pool.ids.tolist()
    with pytest.raises(InputError, match="at least 1"):
        get_strategy(name).query(pool, 0)


def test_registry_names_the_bad_key_and_the_valid_ones():
    with pytest.raises(UnknownStrategy, match="'nope'") as e:
        get_strategy("nope")
    listed = str(e.value).split("valid: ")[1].split(", ")
    assert listed == sorted(STRATEGIES)
    assert {"random", "least_confidence", "margin", "entropy", "diverse_margin", "density_margin",
            "cluster_margin"} <= set(listed)


def test_registry_defaults_are_registered():
    assert DEFAULT_STRATEGY in STRATEGIES and set(AUTO_CANDIDATES) <= set(STRATEGIES)
    assert DEFAULT_STRATEGY in AUTO_CANDIDATES


def test_uncertainty_strategies_rank_most_uncertain_first():
    pool = Pool([1, 2, 3, 4], [[0.99, 0.01], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]])
    for name in ("least_confidence", "margin", "entropy"):
        ids, scores = get_strategy(name).query(pool, 4)
        assert ids.tolist() == [2, 3, 4, 1], name
        assert (np.diff(scores) <= 0).all()


def test_ties_break_by_id():
    pool = Pool([9, 3, 5], [[0.5, 0.5]] * 3)
    assert get_strategy("margin").query(pool, 3)[0].tolist() == [3, 5, 9]


def test_diverse_margin_avoids_near_copies():
    """50 near copies of one uncertain comment and 10 distinct, slightly less uncertain ones: margin takes the
    copies, diverse_margin spreads over the distinct ones."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    copies = base + rng.normal(scale=1e-3, size=(50, 16))
    distinct = rng.normal(size=(10, 16))
    probs = np.vstack([np.tile([0.5, 0.5], (50, 1)), np.tile([0.55, 0.45], (10, 1))])
    pool = Pool(np.arange(60), probs, np.vstack([copies, distinct]))
    plain, _ = get_strategy("margin").query(pool, 10)
    diverse, _ = get_strategy("diverse_margin").query(pool, 10)
    assert (plain < 50).all()
    assert (diverse < 50).sum() == 1 and (diverse >= 50).sum() == 9


def test_diverse_margin_without_embeddings_is_margin():
    pool = make_pool(40)
    pool.embeddings = None
    assert get_strategy("diverse_margin").query(pool, 5)[0].tolist() == get_strategy("margin").query(pool, 5)[0].tolist()


def test_k_center_greedy_picks_spread_points():
    pts = np.array([[1, 0], [0.999, 0.01], [0, 1], [-1, 0], [0.998, 0.02]], dtype=float)
    assert sorted(k_center_greedy(pts, 3).tolist()) == [0, 2, 3]


# -- the diversity methods that should not chase outliers -------------------------------------------------
def planted_outliers(seed=0, n_outliers=5):
    """200 points in 4 tight clusters with moderate uncertainty, plus isolated far-away outliers with the highest
    uncertainty of all (ids 200..)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 16)) * 3
    emb = np.vstack([c + rng.normal(scale=0.3, size=(50, 16)) for c in centers]
                    + [rng.normal(size=(n_outliers, 16)) * 30])
    p = np.r_[rng.uniform(0.55, 0.8, 200), np.full(n_outliers, 0.5)]
    return Pool(np.arange(200 + n_outliers), np.c_[p, 1 - p], emb), centers


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["cluster_margin", "density_margin"])
def test_does_not_pick_isolated_outliers(name, seed):
    pool, _ = planted_outliers(seed)
    ids, _ = get_strategy(name).query(pool, 10, seed=seed)
    assert len(set(ids.tolist())) == 10 and (ids < 200).all()
    plain, _ = get_strategy("margin").query(pool, 10, seed=seed)
    greedy, _ = get_strategy("diverse_margin").query(pool, 10, seed=seed)
    assert (plain >= 200).sum() == 5 and (greedy >= 200).sum() == 5      # the planted trap is real


def test_cluster_margin_spreads_over_clusters():
    pool, _ = planted_outliers(0)
    ids, _ = get_strategy("cluster_margin").query(pool, 8, seed=0)
    assert len({int(i) // 50 for i in ids}) == 4                      # every dense cluster is represented


def test_cluster_margin_deterministic_per_seed_and_ids_from_pool():
    pool = make_pool(300, k=3, d=8, seed=4)
    a = get_strategy("cluster_margin").query(pool, 20, seed=7)[0]
    b = get_strategy("cluster_margin").query(pool, 20, seed=7)[0]
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 20
    assert set(a.tolist()) <= set(pool.ids.tolist())


def test_cluster_margin_uses_the_uncertain_shortlist_and_falls_back_to_margin():
    pool = make_pool(500, seed=5)
    short = set(get_strategy("margin").query(pool, 100)[0].tolist())      # 10 × n smallest margins
    assert set(get_strategy("cluster_margin").query(pool, 10, seed=0)[0].tolist()) <= short
    pool.embeddings = None
    for name in ("cluster_margin", "density_margin"):
        assert get_strategy(name).query(pool, 5)[0].tolist() == get_strategy("margin").query(pool, 5)[0].tolist()


def test_cluster_margin_takes_singletons_only_when_nothing_else_is_left():
    pool, _ = planted_outliers(0, n_outliers=5)
    ids, _ = get_strategy("cluster_margin", candidates=1).query(pool.without(set(range(20, 200))), 25, seed=0)
    assert sorted(ids.tolist())[-5:] == [200, 201, 202, 203, 204] and len(ids) == 25


def test_knn_density_is_low_for_isolated_points():
    pool, _ = planted_outliers(0)
    dens = knn_density(pool.embeddings, np.arange(205), k=5)
    assert dens[200:].max() < dens[:200].min()


# -- auto ---------------------------------------------------------------------------------------------------
def test_auto_without_history_is_the_default():
    assert choose_auto([])[0] == DEFAULT_STRATEGY
    assert choose_auto([], ("margin", "cluster_margin"), "cluster_margin")[0] == "cluster_margin"
    unfinished = [{"round": 1, "strategy": "margin", "val_before": 0.8, "val_after": None}]
    name, reason = choose_auto(unfinished, ("margin", "cluster_margin"), "margin")
    assert name == "margin" and "default" in reason


def test_auto_with_history():
    c = ("margin", "cluster_margin")
    up = [{"round": 1, "strategy": "margin", "val_before": 0.80, "val_after": 0.85}]
    assert choose_auto(up, c, "margin")[0] == "margin"
    down = [{"round": 1, "strategy": "margin", "val_before": 0.80, "val_after": 0.78}]
    name, reason = choose_auto(down, c, "margin")
    assert name == "cluster_margin" and "trying" in reason
    both = down + [{"round": 2, "strategy": "cluster_margin", "val_before": 0.78, "val_after": 0.79}]
    assert choose_auto(both, c, "margin")[0] == "cluster_margin"
    # the most recent gain of each counts: margin's later round moved validation more
    later = both + [{"round": 3, "strategy": "margin", "val_before": 0.79, "val_after": 0.84}]
    assert choose_auto(later, c, "margin")[0] == "margin"
    # a plateau (a change within the tolerance) is noise, not a reason to switch
    flat = [{"round": 1, "strategy": "margin", "val_before": 0.80, "val_after": 0.795}]
    assert choose_auto(flat, c, "margin")[0] == "margin"
    close = flat + [{"round": 2, "strategy": "cluster_margin", "val_before": 0.795, "val_after": 0.799}]
    assert choose_auto(close, c, "margin")[0] == "margin"
    # ties go to the default; unknown strategies in the history are ignored
    tie = [{"round": 1, "strategy": "cluster_margin", "val_before": 0.8, "val_after": 0.82},
           {"round": 2, "strategy": "margin", "val_before": 0.82, "val_after": 0.84},
           {"round": 3, "strategy": "random", "val_before": 0.84, "val_after": 0.99}]
    assert choose_auto(tie, c, "margin")[0] == "margin"


# -- properties -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(1, 120), data=st.data(), name=st.sampled_from(sorted(STRATEGIES)),
       seed=st.integers(0, 2**16), k=st.integers(2, 5))
def test_property_distinct_unexcluded_deterministic(n_pool, data, name, seed, k):
    ids = np.asarray(data.draw(st.lists(st.integers(0, 10**6), min_size=n_pool, max_size=n_pool, unique=True)))
    pool = make_pool(n_pool, k=k, seed=seed, ids=ids)
    exclude = set(data.draw(st.lists(st.sampled_from(ids.tolist()), max_size=n_pool)))
    available = n_pool - len(exclude)
    n = data.draw(st.integers(1, n_pool))
    strat = get_strategy(name)
    if n > available:
        with pytest.raises(PoolExhausted, match=f"{available} available / {n} requested"):
            strat.query(pool, n, exclude=exclude, seed=seed)
        return
    got, _ = strat.query(pool, n, exclude=exclude, seed=seed)
    assert len(set(got.tolist())) == n and not set(got.tolist()) & exclude
    assert set(got.tolist()) <= set(ids.tolist())
    assert strat.query(pool, n, exclude=exclude, seed=seed)[0].tolist() == got.tolist()


# -- the edge ---------------------------------------------------------------------------------------------
def _fake_run(store, texts=40, labeled=5):
    """A dataset and a 'run' with predictions written directly (selection reads only predictions)."""
    ids = make_dataset(store, "d", [f"comment number {i}" for i in range(texts)],
                       ["ham"] * labeled + [None] * (texts - labeled))
    rng = np.random.default_rng(0)
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status) VALUES ('r1', 'd', 'succeeded')")
        for rid in ids:
            p = rng.dirichlet([1, 1]).tolist()
            cur.execute("INSERT INTO store.predictions VALUES ('r1', ?, ?, 'ham', ?, 0, 0, 0, ?, ?)",
                        [rid, p, max(p), rng.normal(size=4).tolist(), now()])
    return ids


def test_select_stores_a_ranked_selection(store):
    ids = _fake_run(store)
    r = select(store, "r1", "margin", 10)
    assert r["round"] == 1 and r["n"] == 10 and r["pool"] == {"scored": 40, "labeled": 5, "pending": 0, "duplicate_text": 0,
                                                             "available": 35}
    rows = store.query("SELECT record_id, rank, strategy, score, round FROM main.selections ORDER BY rank")
    assert [x[1] for x in rows] == list(range(1, 11)) and {x[2] for x in rows} == {"margin"}
    assert [x[0] for x in rows] == r["record_ids"] and not set(r["record_ids"]) & set(ids[:5])
    assert all(rows[i][3] >= rows[i + 1][3] for i in range(9))


def test_select_excludes_pending_and_numbers_rounds(store):
    ids = _fake_run(store)
    first = select(store, "r1", "diverse_margin", 10)
    with store.transaction() as cur:        # two records pushed to Label Studio by hand, one of them labeled since
        cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                    "VALUES (1, 'h1', 1, ?, ?), (1, 'h2', 2, ?, ?)",
                    [ids[-1], now(), ids[-2], now()])
        cur.execute("INSERT INTO store.gold_labels (record_id, label, source, source_ref, annotator, updated_at) VALUES (?, 'spam', 'annotation', '7', 'ann', ?)", [ids[-2], now()])
    second = select(store, "r1", "entropy", 5)
    assert second["round"] == 2
    pending = set(first["record_ids"]) | {ids[-1]}
    assert not set(second["record_ids"]) & (pending | set(ids[:5]) | {ids[-2]})
    assert second["pool"]["labeled"] == 6
    assert second["pool"]["pending"] == len(pending - {ids[-2]})
    third = select(store, "r1", "entropy", 5, reselect=True, round=7)   # unpushed selections released
    assert third["round"] == 7 and ids[-1] not in third["record_ids"]


def test_select_pool_exhausted_names_the_counts(store):
    _fake_run(store, texts=8, labeled=5)
    with pytest.raises(PoolExhausted, match=r"Pool exhausted: 3 available / 50 requested .*5 labeled, 0 pending"):
        select(store, "r1", "random", 50)


def test_select_errors(store):
    _fake_run(store)
    with pytest.raises(NotFound, match="no run 'x'"):
        select(store, "x", "margin", 3)
    with pytest.raises(UnknownStrategy, match="valid:"):
        select(store, "r1", "best", 3)
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status) VALUES ('r2', 'd', 'succeeded')")
    with pytest.raises(NotFound, match="curate score --run r2"):
        select(store, "r2", "margin", 3)


def test_pool_validates_shapes_and_ids():
    with pytest.raises(InputError, match="distinct"):
        Pool([1, 1], [[0.5, 0.5]] * 2)
    with pytest.raises(InputError, match=r"probs has shape \(3,\)"):
        Pool([1, 2, 3], [0.1, 0.2, 0.3])
    empty = make_pool(3).without({1000, 1001, 1002})
    assert len(empty) == 0 and empty.probs.shape == (0, 2)


def test_select_skips_texts_already_labeled_or_pending(store):
    ids = make_dataset(store, "d", ["Same text!", "same text", "other one", "another", "Other One"],
                       labels=["spam", None, None, None, None])
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status) VALUES ('run-x', 'd', 'succeeded')")
        for i, rid in enumerate(ids):
            cur.execute("INSERT INTO store.predictions VALUES ('run-x', ?, [0.5, 0.5], 'ham', 0.5, 0.5, 0.0, 0.69, "
                        "NULL, now())", [rid])
    out = select(store, "run-x", "margin", 2)
    # "same text" duplicates a labeled text; "Other One" duplicates "other one" (kept: the first)
    assert sorted(out["record_ids"]) == [ids[2], ids[3]]
    assert out["pool"]["duplicate_text"] == 2


def _run_with_val(store, run_id, val_acc, ids):
    rng = np.random.default_rng(len(run_id))
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, metrics) VALUES (?, 'd', 'succeeded', ?)",
                    [run_id, json.dumps({"val": {"accuracy": val_acc}})])
        for rid in ids:
            p = rng.dirichlet([1, 1]).tolist()
            cur.execute("INSERT INTO store.predictions VALUES (?, ?, ?, 'ham', ?, 0, 0, 0, ?, ?)",
                        [run_id, rid, p, max(p), rng.normal(size=4).tolist(), now()])


def test_select_auto_without_history_records_the_default(store):
    _fake_run(store)
    r = select(store, "r1", "auto", 5)
    assert r["strategy"] == DEFAULT_STRATEGY and r["details"]["requested"] == "auto"
    assert r["details"]["chose"] == DEFAULT_STRATEGY and r["details"]["history"] == []
    stored = store.query("SELECT DISTINCT strategy, details FROM main.selections")
    assert len(stored) == 1 and stored[0][0] == DEFAULT_STRATEGY
    assert json.loads(stored[0][1])["chose"] == DEFAULT_STRATEGY


def test_select_auto_follows_the_validation_history(store):
    ids = make_dataset(store, "d", [f"comment number {i}" for i in range(80)], [None] * 80)
    _run_with_val(store, "r1", 0.80, ids)
    select(store, "r1", "margin", 5)                              # round 1 by margin, chosen by r1 (val 0.80)
    _run_with_val(store, "r2", 0.78, ids)                         # after its labels: val went down
    hist = strategy_history(store, "d", "r2")
    assert hist == [{"round": 1, "strategy": "margin", "run_id": "r1", "val_before": 0.80, "val_after": 0.78}]
    r = select(store, "r2", "auto", 5)
    assert r["strategy"] == "cluster_margin" and r["details"]["chose"] == "cluster_margin"
    assert "trying cluster_margin" in r["details"]["reason"] and len(r["details"]["history"]) == 1
    _run_with_val(store, "r3", 0.83, ids)                         # cluster_margin's round moved val +0.05
    r3 = select(store, "r3", "auto", 5)
    assert r3["round"] == 3 and r3["strategy"] == "cluster_margin"
    rows = store.query("SELECT round, any_value(strategy), any_value(details) FROM main.selections "
                       "GROUP BY round ORDER BY round")
    assert [x[1] for x in rows] == ["margin", "cluster_margin", "cluster_margin"]
    assert json.loads(rows[0][2]) == {"requested": "margin", "chose": "margin"}
    assert json.loads(rows[2][2])["requested"] == "auto"
