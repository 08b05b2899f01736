"""Weak supervision through the store: apply (idempotent), import votes, label model, report, views, CLI."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curation.errors import InputError, NotFound
from curation.ingest import FieldMap, ingest
from curation.store import now
from labeling import keyword_lf, labeling_function, sql_lf
from labeling.lfs import LFRuntimeError
from labeling.weak import apply_lfs, fit_label_model, import_votes, lf_report, load_matrix
from tests.conftest import DATA, ROOT
from tests.helpers import make_dataset

WRENCH = DATA / "wrench" / "youtube.jsonl"
TEXTS = ["check out my channel", "great song", "subscribe please", "nice", "http://spam.example", "lol"]
GOLD = ["spam", "ham", "spam", "ham", "spam", None]
LFS = [keyword_lf("my", ["my"], "spam"), keyword_lf("song", ["song"], "ham"),
       sql_lf("short", "length(text) < 5", "ham"), keyword_lf("http", ["http"], "spam", whole_word=False)]


def test_apply_stores_sparse_votes_and_is_idempotent(store):
    ids = make_dataset(store, "d", TEXTS, GOLD)
    r = apply_lfs(store, "d", LFS)
    assert r["status"] == "applied" and r["records"] == 6
    assert [x["fired"] for x in r["lfs"]] == [1, 1, 2, 1]
    assert store.one("SELECT count(*) FROM store.votes WHERE lf_set_id = ?", [r["lf_set_id"]]) == 5  # no abstains
    assert apply_lfs(store, "d", LFS)["status"] == "unchanged"
    # the `votes` view names LF and label
    v = store.frame("SELECT record_id, lf, label FROM main.votes ORDER BY record_id, lf")
    assert v.row(0) == (ids[0], "my", "spam")
    # new records: the same set applies again
    make_dataset(store, "d", ["my my"], ["spam"])
    r2 = apply_lfs(store, "d", LFS)
    assert r2["status"] == "applied" and r2["records"] == 7 and r2["lf_set_id"] == r["lf_set_id"]
    lfs = store.frame("SELECT name, kind, engine, fired, declared_at FROM main.lfs WHERE lf_set_id = ? "
                      "ORDER BY lf_index", [r["lf_set_id"]])
    assert lfs["kind"].to_list() == ["keyword", "keyword", "sql", "keyword"]
    assert lfs["fired"].to_list() == [2, 1, 2, 1]
    assert lfs["declared_at"][0].endswith("test_weak_store.py:21")


def test_apply_faults_recorded(store):
    make_dataset(store, "d", TEXTS)

    @labeling_function(label="ham")
    def crashy(x):
        return 1 / (len(x.text) - 4)

    with pytest.raises(LFRuntimeError, match="crashy"):
        apply_lfs(store, "d", [crashy])
    assert store.one("SELECT count(*) FROM store.lf_sets") == 0
    r = apply_lfs(store, "d", [crashy], fault_tolerant=True)
    assert r["faults"] == 1 and r["lfs"][0]["faults"] == 1 and "ZeroDivisionError" in r["fault_examples"]["crashy"]
    assert store.one("SELECT faults FROM store.lfs") == 1


def _wrench_store(store):
    ingest(store, WRENCH, "yt", fields=FieldMap(id="id", label="label"), labels=["ham", "spam"])


def _split_from_meta(store, dataset):
    """Write a current split from the WRENCH `split` column (the splits stage's tables, written directly)."""
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.split_sets VALUES ('s1', ?, 'column', NULL, NULL, true, ?)", [dataset, now()])
        cur.execute("INSERT INTO store.splits SELECT 's1', record_id, json_extract_string(meta, '$.split'), 0, "
                    "NULL, false FROM store.records WHERE dataset = ?", [dataset])


def test_wrench_votes_through_the_store_reproduce_84(store):
    _wrench_store(store)
    r = import_votes(store, WRENCH, "yt")
    assert r["unmatched"] == 0 and r["votes"] == 3260 and len(r["lfs"]) == 10
    assert import_votes(store, WRENCH, "yt")["status"] == "unchanged"
    _split_from_meta(store, "yt")
    m = fit_label_model(store, "yt", "majority")
    assert m["fit_on"] == "train" and m["fit_rows"] == 1586
    assert m["metrics"]["test"]["accuracy"] == pytest.approx(0.840)
    assert fit_label_model(store, "yt", "majority", tie_break="first")["metrics"]["test"]["accuracy"] == \
        pytest.approx(0.776)
    w = store.frame("SELECT * FROM main.weak_labels WHERE model_id = ?", [m["model_id"]])
    assert w.height == 1956 and w["model_kind"][0] == "majority"
    assert w.filter(pl.col("label").is_null()).height == m["unlabeled_all_abstain"] > 0
    assert all(len(p) == 2 for p in w["probs"].to_list())
    inc = fit_label_model(store, "yt", "majority", include_abstains=True)
    assert inc["labeled"] == 1956 and inc["model_id"] != m["model_id"]
    rep = lf_report(store, "yt", split="test")
    assert rep["total"]["rows"] == 250 and rep["total"]["coverage"] == pytest.approx(0.928)


@pytest.mark.slow
def test_snorkel_label_model_through_the_store(store):
    _wrench_store(store)
    import_votes(store, WRENCH, "yt")
    _split_from_meta(store, "yt")
    m = fit_label_model(store, "yt", "snorkel", seed=0)
    assert m["metrics"]["test"]["accuracy"] >= 0.86
    params = json.loads(store.one("SELECT params FROM store.label_models WHERE model_id = ?", [m["model_id"]]))
    assert params["fit_on"] == "train" and len(params["lf_weights"]) == 10


def test_import_long_csv_and_parquet(store, tmp_path):
    ids = make_dataset(store, "d", TEXTS, GOLD)
    f = tmp_path / "votes.csv"
    f.write_text(f"record_id,lf,vote\n{ids[0]},llm,spam\n{ids[1]},llm,0\n{ids[2]},llm,-1\n{ids[0]},other,1\n"
                 "999999,llm,spam\n")
    r = import_votes(store, f, "d")
    assert r["format"] == "long" and r["votes"] == 3 and r["unmatched"] == 1 and r["lfs"] == ["llm", "other"]
    mat = load_matrix(store, "d", r["lf_set_id"])
    assert mat["L"][0].tolist() == [1, 1] and mat["L"][1].tolist() == [0, -1] and mat["L"][2].tolist() == [-1, -1]
    p = tmp_path / "votes.parquet"
    pl.DataFrame({"record_id": [ids[3]], "lf": ["x"], "vote": [1]}).write_parquet(p)
    assert import_votes(store, p, "d")["votes"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(f"record_id,lf,vote\n{ids[0]},llm,eggs\n")
    with pytest.raises(InputError, match="row 1, field `vote`: 'eggs' is not a label"):
        import_votes(store, bad, "d")
    none = tmp_path / "none.csv"
    none.write_text("source_id,lf,vote\nnope,llm,1\n")
    with pytest.raises(InputError, match="none of the 1 rows matches"):
        import_votes(store, none, "d")


def test_import_by_source_id_and_wrench_prefix(store, tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("id,text\na1,hello\na2,world\n")
    ingest(store, src, "d", fields=FieldMap(id="id"), labels=["ham", "spam"])
    f = tmp_path / "v.csv"
    f.write_text("source_id,lf,vote\na2,llm,spam\n")
    mat = load_matrix(store, "d", import_votes(store, f, "d")["lf_set_id"])
    assert mat["L"][:, 0].tolist() == [-1, 1]
    w = tmp_path / "train.json"  # WRENCH's own layout: keys without our split prefix
    w.write_text(json.dumps({"1": {"data": {"text": "x"}, "label": 0, "weak_labels": [0, -1]}}))
    r = import_votes(store, w, "d", id_prefix="a", lf_names=["p", "q"])
    assert r["unmatched"] == 0 and r["lfs"] == ["p", "q"] and r["votes"] == 1


def test_label_without_votes_and_report(store, tmp_path):
    make_dataset(store, "d", TEXTS, GOLD)
    with pytest.raises(NotFound, match="has no votes yet: run `curate lf apply"):
        fit_label_model(store, "d", "majority")
    apply_lfs(store, "d", LFS)
    m = fit_label_model(store, "d", "majority")
    assert m["fit_on"] == "all" and m["metrics"]["all"]["gold_rows"] == 5
    rep = lf_report(store, "d", png=tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    my = rep["lfs"][0]
    assert my["lf"] == "my" and my["polarity"] == ["spam"] and my["emp_accuracy"] == 1.0
    assert rep["total"]["coverage"] == pytest.approx(5 / 6)
    with pytest.raises(InputError, match="unknown; valid: auto, majority, dawid_skene, snorkel"):
        fit_label_model(store, "d", "dawid")
    # too little gold to choose on (5 rows): the default picks the majority vote by rule and says why
    auto = fit_label_model(store, "d")
    assert auto["kind"] == "majority" and auto["selection"]["mode"] == "rule"
    assert "no gold to choose on (5 gold rows (fewer than 30)" in auto["selection"]["reason"]


def test_cli_json(tmp_path):
    from cli import app

    db = tmp_path / "c.duckdb"
    run = CliRunner().invoke
    r = run(app, ["ingest", str(WRENCH), "-d", "yt", "--id-field", "id", "--label-field", "label",
                  "--labels", "ham,spam", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    lfs = tmp_path / "lfs.py"
    lfs.write_text("from labeling import keyword_lf\nk = keyword_lf('k', ['check'], 'spam')\n")
    r = run(app, ["lf", "apply", "-d", "yt", "--lfs", str(lfs), "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lfs"][0]["fired"] > 0
    r = run(app, ["votes", "import", str(WRENCH), "-d", "yt", "--db", str(db), "--json"])
    assert json.loads(r.stdout)["votes"] == 3260
    r = run(app, ["label", "-d", "yt", "--model", "majority", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kind"] == "majority"
    r = run(app, ["lf", "report", "-d", "yt", "--db", str(db), "--json", "--png", str(tmp_path / "x.png")])
    assert len(json.loads(r.stdout)["lfs"]) == 10
    r = run(app, ["label", "-d", "yt", "--model", "nope", "--db", str(db)])
    assert r.exit_code == 2 and "valid: auto, majority, dawid_skene, snorkel" in r.output


def test_example_lfs_load():
    from labeling.lfs import load_lfs

    lfs = load_lfs(ROOT / "examples" / "youtube_lfs.py")
    assert len(lfs) == 10 and [lf.kind for lf in lfs].count("python") == 3


def _psy_katy(store):
    """The measured fault of issue 13: Psy (gold labels) + KatyPerry (none), the 10 tutorial LFs."""
    raw = DATA / "raw"
    ingest(store, raw / "Youtube01-Psy.csv", "yt", fields=FieldMap(id="COMMENT_ID", text="CONTENT", label="CLASS"),
           labels=["ham", "spam"])
    ingest(store, raw / "Youtube02-KatyPerry.csv", "yt",
           fields=FieldMap(id="COMMENT_ID", text="CONTENT", exclude=("CLASS",)), labels=["ham", "spam"])
    apply_lfs(store, "yt", ROOT / "examples" / "youtube_lfs.py")


@pytest.mark.slow
def test_psy_katyperry_label_never_loses_to_the_majority_vote(store):
    _psy_katy(store)
    mv = fit_label_model(store, "yt", "majority")
    assert mv["metrics"]["all"]["gold_rows"] == 350
    auto = fit_label_model(store, "yt")  # the default: --model auto
    sel = auto["selection"]
    assert sel["mode"] == "gold" and sel["gold_source"] == "all" and sel["gold_rows"] == 350
    assert auto["metrics"]["all"]["accuracy"] >= mv["metrics"]["all"]["accuracy"]
    assert auto["worse_than_majority"] is False
    names = [c["name"] for c in sel["candidates"]]
    assert names[:3] == ["majority", "dawid_skene", "dawid_skene/gold"] and len(names) == 9
    assert all(c["status"] == "ok" and c["accuracy"] is not None and c["macro_f1"] is not None
               for c in sel["candidates"])
    assert sum(c["chosen"] for c in sel["candidates"]) == 1
    assert "optimistic" in sel["leakage"]  # no split: the choosing rows are the judging rows, and it says so
    stored = json.loads(store.one("SELECT metrics FROM store.label_models WHERE model_id = ?", [auto["model_id"]]))
    assert len(stored["selection"]["candidates"]) == 9
    # Snorkel forced: stored as asked, but flagged and warned when it loses to the vote
    sn = fit_label_model(store, "yt", "snorkel", seed=1)
    if sn["metrics"]["all"]["accuracy"] < mv["metrics"]["all"]["accuracy"]:
        assert sn["worse_than_majority"] is True and "WORSE than the majority vote" in sn["warnings"][0]


def test_cli_label_auto_reports_candidates_and_the_no_gold_rule(tmp_path):
    from cli import app

    db = tmp_path / "c.duckdb"
    run = CliRunner().invoke
    src = tmp_path / "d.csv"
    texts = [f"check out my channel {i}" if i % 2 else f"great song {i}" for i in range(60)]
    pl.DataFrame({"id": [str(i) for i in range(60)], "text": texts,
                  "label": ["spam" if i % 2 else "ham" for i in range(60)]}).write_csv(src)
    assert run(app, ["ingest", str(src), "-d", "g", "--id-field", "id", "--label-field", "label",
                     "--labels", "ham,spam", "--db", str(db), "--json"]).exit_code == 0
    assert run(app, ["ingest", str(src), "-d", "n", "--id-field", "id", "--labels", "ham,spam",
                     "--exclude-fields", "label", "--db", str(db), "--json"]).exit_code == 0
    lfs = tmp_path / "lfs.py"
    lfs.write_text("from labeling import keyword_lf\nk = keyword_lf('k', ['check'], 'spam')\n"
                   "s = keyword_lf('s', ['song'], 'ham')\nm = keyword_lf('m', ['my', 'great'], 'spam')\n")
    for d in ("g", "n"):
        assert run(app, ["lf", "apply", "-d", d, "--lfs", str(lfs), "--db", str(db), "--json"]).exit_code == 0
    r = run(app, ["label", "-d", "g", "--seeds", "0", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    sel = json.loads(r.stdout)["selection"]
    assert sel["mode"] == "gold" and [c["name"] for c in sel["candidates"]] == [
        "majority", "dawid_skene", "dawid_skene/gold", "snorkel/uniform/seed0", "snorkel/gold/seed0"]
    r = run(app, ["label", "-d", "n", "--db", str(db)])  # no gold at all: says which model and why
    assert r.exit_code == 0, r.output
    assert "model: majority" in r.output and "no gold to choose on" in r.output
    r = run(app, ["label", "-d", "n", "--abstains", "prior", "--db", str(db), "--json"])
    assert json.loads(r.stdout)["abstain_policy"] == "prior"


def test_all_abstain_policies(store):
    make_dataset(store, "d", TEXTS, GOLD)
    apply_lfs(store, "d", LFS)  # "subscribe please" gets no vote
    out = {p: fit_label_model(store, "d", "majority", abstain_policy=p) for p in
           ("leave_out", "model", "tie_break", "prior")}
    assert out["leave_out"]["labeled"] == 5 and out["leave_out"]["unlabeled_all_abstain"] == 1
    assert all(out[p]["labeled"] == 6 and out[p]["unlabeled_all_abstain"] == 0 for p in ("model", "tie_break", "prior"))
    assert out["leave_out"]["model_id"] == fit_label_model(store, "d", "majority")["model_id"]
    assert out["model"]["model_id"] == fit_label_model(store, "d", "majority", include_abstains=True)["model_id"]
    probs = store.frame("SELECT w.probs FROM store.weak_labels w JOIN store.records r USING (record_id) "
                        "WHERE model_id = ? AND r.text = 'subscribe please'", [out["prior"]["model_id"]])["probs"][0].to_list()
    assert probs == pytest.approx([3 / 5, 2 / 5])  # the vote's class balance (ham, spam) over the 5 covered rows
    with pytest.raises(InputError, match="all-abstain policy 'drop' unknown; valid: leave_out, model"):
        fit_label_model(store, "d", "majority", abstain_policy="drop")
