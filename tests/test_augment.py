"""Augmentation: the offline nlpaug registry, reproducible copies, lineage, and copies that cannot leak."""

import json

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from curation.augment import (
    AUGMENTERS,
    AugmenterUnavailable,
    augment,
    augment_texts,
    augmented_copies,
    get_augmenter,
    parse_augmenters,
    wordnet_missing,
)
from curation.errors import InputError, NotFound
from curation.normalize import input_hash
from curation.splits import check_split, make_split
from tests.conftest import DATA
from tests.helpers import make_dataset

TEXT = "Check out my new channel for the best music videos and please subscribe to it today"
OFFLINE = [n for n in AUGMENTERS if n != "synonym"]


def test_registry_names_the_bad_key_and_the_valid_ones():
    with pytest.raises(InputError, match=r"'thesaurus': unknown; valid: keyboard, ocr, random_char"):
        get_augmenter("thesaurus")
    assert parse_augmenters("keyboard, word_swap:aug_p=0.2:aug_max=2") == [
        ("keyboard", {}), ("word_swap", {"aug_p": 0.2, "aug_max": 2})]
    with pytest.raises(InputError, match="not key=value"):
        parse_augmenters("keyboard:oops")
    with pytest.raises(InputError, match="bad parameter"):
        get_augmenter("ocr").build({"no_such_option": 1})


@pytest.mark.parametrize("name", OFFLINE)
def test_each_offline_augmenter_changes_text_reproducibly(name):
    a, counts = augment_texts([TEXT, TEXT], 2, [name], seed=3, keys=[10, 11])
    assert counts["failed"] == 0
    assert a.height >= 3 and (a["text"] != TEXT).all() and (a["augmenter"] == name).all()
    b, _ = augment_texts([TEXT, TEXT], 2, [name], seed=3, keys=[10, 11])
    assert a.equals(b)                                   # same seed, same copies
    c, _ = augment_texts([TEXT], 2, [name], seed=4, keys=[10])
    assert set(c["text"]) != set(a.filter(pl.col("parent") == 0)["text"])


def test_copy_seed_does_not_depend_on_order():
    texts = [TEXT, "Another long enough comment about this song and the singer"]
    a, _ = augment_texts(texts, 1, ["keyboard"], seed=1, keys=[5, 6])
    b, _ = augment_texts(texts[::-1], 1, ["keyboard"], seed=1, keys=[6, 5])
    assert sorted(a["text"]) == sorted(b["text"])


def test_round_robin_uses_every_augmenter():
    texts = [f"{TEXT} number {i}" for i in range(30)]
    a, _ = augment_texts(texts, 1, ["keyboard", "ocr", "random_char"], seed=0)
    assert set(a["augmenter"]) == {"keyboard", "ocr", "random_char"}
    assert json.loads(a["params"][0])["aug_char_max"] == 2


def test_synonym_is_optional_and_never_downloads():
    if wordnet_missing() is None:
        pytest.skip("WordNet data is installed here")
    with pytest.raises(AugmenterUnavailable, match="synonym.*not available.*nltk.downloader"):
        augment_texts([TEXT], 1, ["synonym"])


@pytest.fixture
def split_store(store):
    df = pl.read_ndjson(DATA / "wrench" / "youtube.jsonl").head(400)
    make_dataset(store, "yt", df["text"].to_list(), labels=[["ham", "spam"][x] for x in df["label"]],
                 groups=[f"g{i % 50}" for i in range(df.height)])
    make_split(store, "yt", "0.8,0.1,0.1", seed=1)
    return store


def test_augment_only_train_with_lineage_and_no_copied_labels(split_store):
    store = split_store
    res = augment(store, "yt", 2, "keyboard,ocr,random_char", seed=7)
    assert res["inserted"] > 0 and res["failed"] == 0
    assert res["inserted"] + res["dropped_duplicate_existing"] + res["dropped_duplicate_in_run"] == res["made"]
    rows = store.frame(
        "SELECT r.record_id, r.parent_id, r.origin, r.\"group\", r.input_hash, r.text, s.split, s.component, "
        "s.reason, p.\"group\" AS parent_group, ps.split AS parent_split, ps.component AS parent_component, "
        "g.label FROM store.records r JOIN store.records p ON p.record_id = r.parent_id "
        "JOIN main.splits s ON s.record_id = r.record_id AND s.is_current "
        "JOIN main.splits ps ON ps.record_id = r.parent_id AND ps.is_current "
        "LEFT JOIN store.gold_labels g ON g.record_id = r.record_id WHERE r.origin = 'augment'")
    assert rows.height == res["inserted"]
    assert (rows["split"] == "train").all() and (rows["parent_split"] == "train").all()
    assert (rows["component"] == rows["parent_component"]).all()
    assert (rows["group"] == rows["parent_group"]).all()
    assert rows["label"].is_null().all()                  # labels resolve through parent_id, never copied
    assert all(h == input_hash(t) for h, t in zip(rows["input_hash"], rows["text"]))
    assert all(r == f"augmented from {p}" for r, p in zip(rows["reason"], rows["parent_id"]))
    lineage = augmented_copies(store, "yt")
    assert lineage.height == res["inserted"]
    p = json.loads(lineage["params"][0])
    assert p["run_seed"] == 7 and "copy" in p and lineage["seed"].is_not_null().all()
    assert check_split(store, "yt")["ok"]
    # no copy duplicates another text of the dataset
    assert store.one("SELECT count(*) - count(DISTINCT input_hash) FROM store.records WHERE dataset = 'yt' "
                     "AND origin = 'augment'") == 0
    # a second run with the same seed makes the same copies: all dropped as duplicates
    again = augment(store, "yt", 2, "keyboard,ocr,random_char", seed=7)
    assert again["inserted"] == 0 and again["dropped_duplicate_existing"] == again["made"]


def test_augmented_rows_follow_their_parent_in_a_new_split(split_store):
    store = split_store
    augment(store, "yt", 1, "keyboard", seed=1)
    n_aug = store.one("SELECT count(*) FROM store.records WHERE origin = 'augment'")
    for seed in (2, 3, 4):
        rep = make_split(store, "yt", "0.6,0.2,0.2", seed=seed)
        bad = store.one(
            "SELECT count(*) FROM main.splits s JOIN store.records r USING (record_id) "
            "LEFT JOIN main.splits ps ON ps.record_id = r.parent_id AND ps.split_id = s.split_id "
            "WHERE s.split_id = ? AND r.origin = 'augment' AND (s.split <> 'train' OR ps.split IS DISTINCT FROM "
            "'train' OR ps.component <> s.component)", [rep["split_id"]])
        assert bad == 0
        placed = rep["augmented_in_train"]
        assert placed + rep["augmented_left_out"]["parent_not_in_train"] == n_aug
        assert 0 < placed < n_aug
        assert rep["crossing_components"] == 0


def test_leaking_parents_are_not_augmented(store):
    df = pl.read_ndjson(DATA / "wrench" / "youtube.jsonl")
    make_dataset(store, "yt", df["text"].to_list(), meta=[{"split": s} for s in df["split"]])
    rep = make_split(store, "yt", from_column="split")
    res = augment(store, "yt", 1, "ocr", seed=0, limit=5000)
    assert res["skipped_leaking_parents"] == rep["leaking_records_by_split"]["train"] > 0
    assert res["parents"] == 1586 - res["skipped_leaking_parents"]
    leaky_parents = store.one(
        "SELECT count(*) FROM store.records r JOIN main.splits s ON s.record_id = r.parent_id AND s.is_current "
        "WHERE r.origin = 'augment' AND s.leaks")
    assert leaky_parents == 0


def test_augment_needs_a_split(store):
    make_dataset(store, "n", ["some text here"])
    with pytest.raises(NotFound, match="curate split --dataset n"):
        augment(store, "n", 1, "keyboard")
    with pytest.raises(InputError, match="per-record"):
        augment_texts(["x"], 0, ["keyboard"])


def test_cli_augment(split_store):
    from cli import splits as cli_splits

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    cli_splits.register(app)
    db = str(split_store.path)
    split_store.close()
    r = CliRunner().invoke(app, ["augment", "--dataset", "yt", "--per-record", "1", "--augmenters",
                                 "keyboard,word_swap", "--seed", "2", "--limit", "40", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["parents"] == 40 and res["inserted"] > 0
    assert set(res["by_augmenter"]) <= {"keyboard", "word_swap"}
    r = CliRunner().invoke(app, ["augment", "--dataset", "yt", "--augmenters", "nope", "--db", db])
    assert r.exit_code == InputError.exit_code and "valid: keyboard" in r.output


def test_augment_keeps_missing_groups_missing(store):
    # a dataset where only some records have a group: the copies' groups were an object array before
    df = pl.read_ndjson(DATA / "wrench" / "youtube.jsonl").head(200)
    make_dataset(store, "mixed", df["text"].to_list(), labels=[["ham", "spam"][x] for x in df["label"]],
                 groups=[f"g{i % 20}" if i % 3 else None for i in range(df.height)])
    make_split(store, "mixed", "0.8,0.1,0.1", seed=1)
    res = augment(store, "mixed", 1, "keyboard", seed=3)
    assert res["inserted"] > 0
    rows = store.frame("SELECT r.\"group\", p.\"group\" AS parent_group FROM store.records r "
                       "JOIN store.records p ON p.record_id = r.parent_id WHERE r.dataset = 'mixed'")
    assert rows.filter(pl.col("parent_group").is_null())["group"].is_null().all()
    assert rows.drop_nulls()["group"].equals(rows.drop_nulls()["parent_group"])
