"""Leakage-checked splits: the pure assignment (property tests), the store edges, the gate and the CLI."""

import json
import re

import numpy as np
import polars as pl
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from curation.errors import InputError, LeakageError, NotFound
from curation.normalize import input_hash
from curation.splits import (
    assign_splits,
    check_split,
    current_split,
    fingerprint,
    leakage_report,
    make_split,
    parse_ratios,
    require_clean,
)
from curation.store import now
from tests.conftest import DATA
from tests.helpers import make_dataset

WRENCH = DATA / "wrench" / "youtube.jsonl"


# -- pure core ------------------------------------------------------------------------------------------
def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert parse_ratios("0.7,0.3") == {"train": 0.7, "test": 0.3}
    assert parse_ratios("train=0.9,test=0.1") == {"train": 0.9, "test": 0.1}
    with pytest.raises(InputError, match="sum to 0.9"):
        parse_ratios("0.8,0.05,0.05")
    with pytest.raises(InputError, match="unknown split 'dev'"):
        parse_ratios("train=0.5,dev=0.5")
    with pytest.raises(InputError, match="2 .* or 3"):
        parse_ratios("1")


@st.composite
def components_and_labels(draw):
    n = draw(st.integers(1, 300))
    n_comp = draw(st.integers(1, n))
    comp = np.array(draw(st.lists(st.integers(0, n_comp - 1), min_size=n, max_size=n)))
    labels = draw(st.lists(st.sampled_from(["ham", "spam", None]), min_size=n, max_size=n))
    return comp, labels


RATIOS = st.sampled_from([(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.3), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])


@given(components_and_labels(), RATIOS, st.integers(0, 2**31))
@settings(max_examples=150, deadline=None)
def test_no_component_in_two_splits_and_ratios_hold(data, ratios, seed):
    comp, labels = data
    r = parse_ratios(list(ratios))
    out = assign_splits(comp, labels, r, seed)
    assert (out >= 0).all()
    # no component in two splits
    f = pl.DataFrame({"c": comp, "s": out})
    assert f.group_by("c").agg(pl.col("s").n_unique()).filter(pl.col("s") > 1).height == 0
    # ratios within tolerance: the largest component, plus one row per stratum for rounding
    n = len(comp)
    biggest = int(np.bincount(comp).max())
    for i, share in enumerate(r.values()):
        assert abs((out == i).sum() - share * n) <= biggest + 3
        if share == 0:
            assert (out == i).sum() == 0
    # same seed, same split
    assert (assign_splits(comp, labels, r, seed) == out).all()


def test_singletons_hit_ratios_exactly_per_stratum():
    n = 1000
    labels = ["spam"] * 300 + ["ham"] * 600 + [None] * 100
    out = assign_splits(np.arange(n), labels, parse_ratios("0.8,0.1,0.1"), 3)
    lab = np.array([x or "-" for x in labels])
    for name, total in (("spam", 300), ("ham", 600), ("-", 100)):
        counts = np.bincount(out[lab == name], minlength=3)
        assert counts.tolist() == [round(total * 0.8), round(total * 0.1), round(total * 0.1)]


def test_different_seeds_give_different_splits():
    comp = np.arange(200)
    r = parse_ratios("0.8,0.1,0.1")
    assert (assign_splits(comp, [None] * 200, r, 1) != assign_splits(comp, [None] * 200, r, 2)).any()


def test_leakage_report_pure():
    split = ["train", "train", "test", "test", "val"]
    comp = [0, 0, 0, 3, 4]
    pairs = pl.DataFrame({"a": [0, 1], "b": [1, 2], "kind": ["exact", "near"], "similarity": [1.0, 0.8]})
    rep = leakage_report(split, comp, pairs=pairs, texts=list("abcde"))
    assert rep["crossing_components"] == 1
    assert rep["leaking_records_by_split"] == {"train": 2, "val": 0, "test": 1}
    assert rep["clean_ids_by_split"] == {"val": [4], "test": [3]}
    assert rep["crossing"][0]["pairs"] == [{"a": 1, "b": 2, "split_a": "train", "split_b": "test", "kind": "near",
                                            "similarity": 0.8}]


def test_fingerprint_ignores_order():
    assert fingerprint([2, 1], ["test", "train"]) == fingerprint([1, 2], ["train", "test"])
    assert fingerprint([1, 2], ["train", "train"]) != fingerprint([1, 2], ["train", "test"])


# -- store edges ----------------------------------------------------------------------------------------
@pytest.fixture
def wrench(store):
    df = pl.read_ndjson(WRENCH)
    ids = make_dataset(store, "yt", df["text"].to_list(), labels=[["ham", "spam"][x] for x in df["label"]],
                       meta=[{"split": s, "id": i} for s, i in zip(df["split"], df["id"])])
    return store, df.with_columns(pl.Series("record_id", ids))


def test_wrench_split_leaks_and_the_check_finds_every_duplicate(wrench):
    store, df = wrench
    rep = make_split(store, "yt", from_column="split")
    assert rep["method"] == "column" and rep["counts"] == {"train": 1586, "val": 120, "test": 250}
    # the README's rule: lower-case, drop what is not a word character or space, collapse spaces
    readme_norm = [" ".join(re.sub(r"[^\w\s]", "", t.lower()).split()) for t in df["text"]]
    df = df.with_columns(pl.Series("h", [input_hash(t) for t in df["text"]]), pl.Series("r", readme_norm))
    train, test = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
    verbatim = test.filter(pl.col("text").is_in(train["text"].implode()))
    readme = test.filter(pl.col("r").is_in(train["r"].implode()))
    ours = test.filter(pl.col("h").is_in(train["h"].implode()))   # same input_hash (keeps symbols like <, ♥)
    assert verbatim.height == 8 and readme.height == 32 and ours.height == 29
    leaks = dict(store.query("SELECT record_id, leaks FROM main.splits WHERE split_id = ?", [rep["split_id"]]))
    found = set(verbatim["record_id"]) | set(readme["record_id"]) | set(ours["record_id"])
    assert all(leaks[r] for r in found)          # every one of them is flagged (the rest through near duplicates)
    clean = set(rep["test_ids_without_train_duplicate"])
    assert not clean & found
    assert rep["crossing_components"] > 0 and rep["leaking_records_by_split"]["test"] >= 32
    # near duplicates add to the exact ones: the leakage-free test subset is smaller than 250 - 32
    assert len(clean) < 250 - 32
    assert rep["clean_counts_by_split"]["test"] == len(clean)
    chk = check_split(store, "yt")
    assert not chk["ok"] and chk["crossing_components"] == rep["crossing_components"]
    assert chk["leaking_records_by_split"] == rep["leaking_records_by_split"]
    e = chk["crossing"][0]
    assert e["pairs"] and e["examples"] and len(e["splits"]) >= 2


def test_gate_refuses_a_leaky_split_unless_allowed(wrench):
    store, _ = wrench
    make_split(store, "yt", from_column="split")
    with pytest.raises(LeakageError, match=r"components cross splits.*curate split --dataset yt"):
        require_clean(store, "yt")
    res = require_clean(store, "yt", allow_leakage=True)
    assert res["leakage_allowed"] is True and res["crossing_components"] > 0


def test_computed_split_is_clean_stratified_and_reproducible(wrench):
    store, df = wrench
    a = make_split(store, "yt", "0.8,0.1,0.1", seed=5)
    assert a["crossing_components"] == 0 and a["method"] == "computed"
    assert require_clean(store, "yt") == {**require_clean(store, "yt"), "ok": True, "leakage_allowed": False}
    n = df.height
    for s, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(a["counts"][s] - share * n) <= 0.02 * n
        spam = a["label_counts"][s]["spam"] / a["counts"][s]
        assert abs(spam - 1005 / 1956) < 0.04
    b = make_split(store, "yt", "0.8,0.1,0.1", seed=5)
    assert a["fingerprint"] == b["fingerprint"] and a["split_id"] != b["split_id"]
    c = make_split(store, "yt", "0.8,0.1,0.1", seed=6)
    assert c["fingerprint"] != a["fingerprint"]
    # the newest split set is current; older ones are kept
    assert current_split(store, "yt") == c["split_id"]
    rows = store.query("SELECT split_id, is_current FROM store.split_sets ORDER BY created_at")
    assert [r[1] for r in rows] == [False, False, True]
    # SQL users see one row per record, and no component in two splits
    q = ("SELECT count(*) FROM (SELECT component FROM main.splits WHERE is_current GROUP BY component "
         "HAVING count(DISTINCT split) > 1)")
    assert store.one(q) == 0
    assert store.one("SELECT count(*) FROM main.splits WHERE is_current") == n


def test_weak_labels_stratify_when_there_is_no_gold(store):
    texts = [f"comment number {i} about topic {i * 7919 % 1000}" for i in range(400)]
    ids = make_dataset(store, "w", texts)
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.label_models VALUES ('m1', 'w', 'lf1', 'majority', NULL, NULL, ?)", [now()])
        for i, rid in enumerate(ids):
            lab = "spam" if i < 100 else "ham"
            cur.execute("INSERT INTO store.weak_labels VALUES ('m1', ?, [0.1, 0.9], ?, 0.9)", [rid, lab])
    rep = make_split(store, "w", "0.5,0.5", seed=1)
    assert rep["params"]["weak_model_id"] == "m1"
    assert rep["label_counts"]["train"] == {"spam": 50, "ham": 150}
    assert rep["label_counts"]["test"] == {"spam": 50, "ham": 150}


def test_group_by_keeps_a_group_together(store):
    texts = [f"distinct comment {i} with its own words {i * 31}" for i in range(300)]
    groups = [f"author{i % 20}" for i in range(300)]
    make_dataset(store, "g", texts, groups=groups, meta=[{"author": g} for g in groups])
    for col in ("group", "author"):
        rep = make_split(store, "g", "0.6,0.2,0.2", group_by=col, seed=2)
        s = store.frame("SELECT r.\"group\" AS g, count(DISTINCT s.split) AS n FROM main.splits s "
                        "JOIN store.records r USING (record_id) WHERE s.split_id = ? GROUP BY 1", [rep["split_id"]])
        assert s["n"].max() == 1 and s.height == 20
    with pytest.raises(InputError, match="no record"):
        make_split(store, "g", group_by="nope")


def test_from_column_errors_name_counts_and_fix(store):
    make_dataset(store, "c", ["a b c d e", "f g h i j", "k l m n o"],
                 meta=[{"split": "train"}, {"split": "holdout"}, {}])
    with pytest.raises(InputError, match=r"1 of 3 records have no value"):
        make_split(store, "c", from_column="split")
    make_dataset(store, "c2", ["a b c d e", "f g h i j"], meta=[{"split": "train"}, {"split": "holdout"}])
    with pytest.raises(InputError, match=r"unknown split value: 'holdout' \(1\)"):
        make_split(store, "c2", from_column="split")


def test_aliases_map_to_val(store):
    make_dataset(store, "al", ["one two three four", "five six seven eight", "nine ten eleven twelve"],
                 meta=[{"split": "train"}, {"split": "validation"}, {"split": "Dev"}])
    rep = make_split(store, "al", from_column="split")
    assert rep["counts"] == {"train": 1, "val": 2}


def test_check_sees_records_added_after_the_split(wrench):
    store, _ = wrench
    make_split(store, "yt", "0.8,0.1,0.1", seed=1)
    test_text = store.one("SELECT r.text FROM main.splits s JOIN store.records r USING (record_id) "
                          "WHERE s.is_current AND s.split = 'test' LIMIT 1")
    make_dataset(store, "yt", [test_text + "!!"])          # a new exact duplicate (after normalisation)
    chk = check_split(store, "yt")
    assert chk["ok"] and chk["unassigned_records"] == 1


def test_no_split_yet(store):
    make_dataset(store, "e", ["x y z"])
    with pytest.raises(NotFound, match="curate split --dataset e"):
        current_split(store, "e")
    with pytest.raises(NotFound, match="no dataset"):
        make_split(store, "missing")


# -- CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def cli():
    from cli import splits as cli_splits

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    cli_splits.register(app)
    return app


def test_cli_split_and_check(wrench, cli):
    store, _ = wrench
    db = str(store.path)
    store.close()
    r = CliRunner().invoke(cli, ["split", "--dataset", "yt", "--from-column", "split", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["method"] == "column"
    r = CliRunner().invoke(cli, ["split", "check", "--dataset", "yt", "--db", db, "--json"])
    assert r.exit_code == LeakageError.exit_code
    rep = json.loads(r.stdout)
    assert rep["crossing_components"] > 0 and set(rep["leaking_records_by_split"]) == {"train", "val", "test"}
    r = CliRunner().invoke(cli, ["split", "--dataset", "yt", "--ratios", "0.8,0.1,0.1", "--seed", "3", "--db", db,
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["split", "check", "--dataset", "yt", "--db", db, "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["split", "--dataset", "yt", "--ratios", "0.5,0.1", "--db", db])
    assert r.exit_code == InputError.exit_code and "sum to 0.6" in r.output
