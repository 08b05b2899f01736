"""Active learning: contract tests for every registered strategy, Hypothesis property tests, and the `select`
edge on a real store (exclusion of labeled, pending and augmented records; pool exhaustion)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.errors import InputError, NotFound
from curation.store import now
from labeling.active import (
    STRATEGIES,
    Pool,
    PoolExhausted,
    UnknownStrategy,
    get_strategy,
    k_center_greedy,
    select,
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
    with pytest.raises(UnknownStrategy, match="'nope'.*diverse_margin, entropy, least_confidence, margin, random"):
        get_strategy("nope")


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
