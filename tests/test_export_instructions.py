"""Export for fine-tuning tools: chat JSONL, Alpaca, HF DatasetDict; the keep rules; classification as instructions.

Datasets are built with SQL inserts following curation/schema.py (records, revisions, gold and weak labels, splits,
contamination), so these tests do not depend on the ingest, review or contamination stages.
"""

import hashlib
import json

import datasets
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from curation.errors import InputError
from curation.normalize import input_hash
from curation.store import now
from curation.versions import (
    ExportOptions,
    TemplateError,
    alpaca_row,
    export,
    export_instructions,
    join_labels,
    render_template,
    template_fields,
)
from tests.helpers import make_dataset

SYS = {"role": "system", "content": "You are terse."}


def conv(prompt, response, system=False):
    return [*([SYS] if system else []), {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def add_instructions(store, name, convs, labels=None, origin="ingest", parents=None) -> list[int]:
    parents = parents or [None] * len(convs)
    with store.transaction() as cur:
        store.ensure_dataset(cur, name, list(labels) if labels else None, "test", task="instruction")
        start = store.next_id(cur, "store.records", "record_id")
        for i, (m, parent) in enumerate(zip(convs, parents)):
            prompt = "\n\n".join(t["content"] for t in m[:-1])
            cur.execute("INSERT INTO store.records (record_id, dataset, text, input_hash, origin, parent_id, "
                        "ingested_at, messages, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [start + i, name, prompt, input_hash(prompt), origin, parent, now(), json.dumps(m),
                         m[-1]["content"]])
    return list(range(start, start + len(convs)))


def set_gold(store, labels: dict):
    with store.transaction() as cur:
        for rid, lab in labels.items():
            cur.execute("INSERT OR REPLACE INTO store.gold_labels (record_id, label, source, updated_at) "
                        "VALUES (?, ?, 'annotation', ?)", [rid, lab, now()])


def set_weak(store, dataset, probs: dict):
    model_id = f"lm-{dataset}"
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.label_models VALUES (?, ?, 'lfs-1', 'snorkel', NULL, NULL, ?)",
                    [model_id, dataset, now()])
        for rid, p in probs.items():
            cur.execute("INSERT INTO store.weak_labels VALUES (?, ?, ?, NULL, ?)", [model_id, rid, p, max(p)])


def set_split(store, dataset, splits: dict):
    split_id = f"split-{dataset}"
    with store.transaction() as cur:
        cur.execute("UPDATE store.split_sets SET is_current = false WHERE dataset = ?", [dataset])
        cur.execute("INSERT INTO store.split_sets VALUES (?, ?, 'computed', NULL, NULL, true, ?)",
                    [split_id, dataset, now()])
        for i, (rid, s) in enumerate(splits.items()):
            cur.execute("INSERT INTO store.splits VALUES (?, ?, ?, ?, NULL, false)", [split_id, rid, s, i])


def flag(store, dataset, check_id, ids, created):
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.contamination_checks VALUES (?, ?, 'eval.jsonl', 13, 10, ?, NULL, ?)",
                    [check_id, dataset, len(ids), created])
        for rid in ids:
            cur.execute("INSERT INTO store.contamination VALUES (?, ?, 0.5, 'prompt', 'x')", [check_id, rid])


def revise(store, rid, n, response, status, prompt="prompt revised"):
    m = conv(prompt, response)
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.revisions VALUES (?, ?, ?, ?, ?, 'annotation', 'ann', NULL, ?, ?)",
                    [rid, n, response, json.dumps(m), n - 1, status, now()])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def inst(store):
    """An instruction dataset whose label order is (drop, keep): the export must read it, not assume keep = 0."""
    import datetime as dt

    names = ["gold_keep", "gold_drop", "weak_high", "weak_low", "unlabeled", "contaminated", "revised",
             "system_val", "test_parent", "no_split", "multi_turn"]
    convs = [conv(f"prompt {n}", f"answer {n}") for n in names]
    convs[7] = conv("prompt system_val", "answer system_val", system=True)
    convs[10] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "prompt multi_turn"}, {"role": "assistant", "content": "answer multi"}]
    ids = dict(zip(names, add_instructions(store, "inst", convs, labels=("drop", "keep"))))
    (aug_test,) = add_instructions(store, "inst", [conv("prompt test parnet", "answer test")], origin="augment",
                                   parents=[ids["test_parent"]])
    (aug_train,) = add_instructions(store, "inst", [conv("prompt gold kep", "answer gold keep")], origin="augment",
                                    parents=[ids["gold_keep"]])
    ids |= {"aug_test": aug_test, "aug_train": aug_train}
    set_gold(store, {ids[n]: "keep" for n in ("gold_keep", "contaminated", "revised", "system_val", "test_parent",
                                              "no_split", "multi_turn")} | {ids["gold_drop"]: "drop"})
    # a weak label disagreeing with gold: gold wins
    set_weak(store, "inst", {ids["weak_high"]: [0.2, 0.8], ids["weak_low"]: [0.7, 0.3], ids["gold_drop"]: [0.0, 1.0]})
    splits = {ids[n]: "train" for n in names if n not in ("system_val", "test_parent", "no_split")}
    set_split(store, "inst", splits | {ids["system_val"]: "val", ids["test_parent"]: "test", ids["aug_test"]: "test",
                                       ids["aug_train"]: "train"})
    t0 = dt.datetime(2024, 1, 1)
    flag(store, "inst", "old", [ids["gold_keep"]], t0)              # superseded by the later check
    flag(store, "inst", "new", [ids["contaminated"]], t0 + dt.timedelta(days=1))
    revise(store, ids["revised"], 1, "first edit", "accepted")
    revise(store, ids["revised"], 2, "second edit", "accepted")
    revise(store, ids["revised"], 3, "withdrawn edit", "superseded")
    return ids


def test_chat_jsonl_keeps_only_fit_records_and_reads_back_with_datasets(store, inst, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = export(store, "inst", tmp_path / "out", "chat-jsonl")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    train = read_jsonl(out / "train.jsonl")
    assert train == [
        {"messages": conv("prompt gold_keep", "answer gold_keep")},
        {"messages": conv("prompt weak_high", "answer weak_high")},
        {"messages": conv("prompt revised", "second edit")},       # latest accepted revision
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "prompt multi_turn"},
                      {"role": "assistant", "content": "answer multi"}]},
        {"messages": conv("prompt gold kep", "answer gold keep")},  # augmented from a train record, parent's gold
    ]
    assert read_jsonl(out / "val.jsonl") == [{"messages": conv("prompt system_val", "answer system_val", True)}]
    assert read_jsonl(out / "test.jsonl") == [{"messages": conv("prompt test_parent", "answer test_parent")}]
    # line by line through `datasets` (offline, a local cache)
    ds = datasets.load_dataset("json", data_files={s: str(out / f"{s}.jsonl") for s in ("train", "val", "test")},
                               cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == {"train": 5, "val": 1, "test": 1}
    for split in ("train", "val", "test"):
        for row, line in zip(ds[split], read_jsonl(out / f"{split}.jsonl")):
            assert row == line and row["messages"][-1]["role"] == "assistant"
    # manifest: counts per split by reason, sha256 per file, recorded in versions
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["train"] == {"kept": 5, "dropped": {"contaminated": 1, "gold_drop": 1, "low_quality": 1,
                                                           "unlabeled": 1}}
    assert m["counts"]["test"] == {"kept": 1, "dropped": {"augmented_from_eval": 1}}
    assert m["counts"]["none"] == {"kept": 0, "dropped": {"unsplit": 1}}
    assert m["rows"] == r["rows"] == 7 and m["contamination_check_id"] == "new"
    for name, digest in m["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    row = store.query("SELECT kind, rows, sha256, path FROM versions WHERE version_id = ?", [m["version_id"]])
    assert row == [("export", 7, m["sha256"], str(out))]


def test_thresholds_and_allowed_contamination(store, inst, tmp_path):
    def train_prompts(**kw):
        export_instructions(store, "inst", tmp_path / "o", "chat-jsonl", ExportOptions(**kw))
        return {line["messages"][-2]["content"] for line in read_jsonl(tmp_path / "o" / "train.jsonl")}

    assert "prompt contaminated" not in train_prompts()
    assert "prompt contaminated" in train_prompts(allow_contamination=True)
    assert "prompt weak_high" not in train_prompts(min_quality=0.9)
    everything = train_prompts(min_quality=0.0)   # 0 also keeps records with neither gold nor weak label
    assert {"prompt unlabeled", "prompt weak_low", "prompt weak_high"} <= everything
    assert "prompt gold_drop" not in everything


def test_alpaca_format(store, inst, tmp_path):
    r = export(store, "inst", tmp_path / "a", "alpaca")
    train = read_jsonl(tmp_path / "a" / "train.jsonl")
    assert train[0] == {"instruction": "prompt gold_keep", "input": "", "output": "answer gold_keep"}
    assert {"instruction": "prompt revised", "input": "", "output": "second edit"} in train
    assert read_jsonl(tmp_path / "a" / "val.jsonl") == [
        {"instruction": "You are terse.\n\nprompt system_val", "input": "", "output": "answer system_val"}]
    assert r["counts"]["train"]["dropped"]["not_single_turn"] == 1   # Alpaca cannot hold several user turns
    assert alpaca_row([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == {
        "instruction": "q", "input": "", "output": "a"}


def test_hf_dataset_dict(store, inst, tmp_path):
    chat = export(store, "inst", tmp_path / "c", "chat-jsonl")
    hf = export(store, "inst", tmp_path / "h")           # a folder and an instruction dataset: hf, messages column
    assert hf["format"] == "hf" and hf["counts"] == chat["counts"]
    dd = datasets.load_from_disk(str(tmp_path / "h"))
    assert set(dd) == {"train", "val", "test"} and "messages" in dd["train"].column_names
    for split in dd:
        assert dd[split]["messages"] == [x["messages"] for x in read_jsonl(tmp_path / "c" / f"{split}.jsonl")]
    assert dd["test"]["record_id"] == [inst["test_parent"]]


# -- classification as instructions -----------------------------------------------------------------------
@pytest.fixture
def clf(store):
    ids = make_dataset(store, "yt", ["gold spam", "gold ham weak spam", "weak sure", "weak unsure", "nothing",
                                     "val {braces}"],
                       ["spam", "ham", None, None, None, "ham"], label_set=("ham", "spam"),
                       meta=[{"author": f"a{i}"} for i in range(6)])
    set_weak(store, "yt", {ids[1]: [0.01, 0.99], ids[2]: [0.95, 0.05], ids[3]: [0.2, 0.8]})
    set_split(store, "yt", {i: "train" for i in ids[:5]} | {ids[5]: "val"})
    return ids


def test_classification_exports_as_instructions(store, clf, tmp_path):
    tpl = "Classify this comment as {labels}.\n\n{text}\n({author}) {{json}}"
    r = export(store, "yt", tmp_path / "c", "chat-jsonl", ExportOptions(template=tpl))
    train = read_jsonl(tmp_path / "c" / "train.jsonl")
    assert [(x["messages"][0]["content"], x["messages"][1]["content"]) for x in train] == [
        ("Classify this comment as ham or spam.\n\ngold spam\n(a0) {json}", "spam"),
        ("Classify this comment as ham or spam.\n\ngold ham weak spam\n(a1) {json}", "ham"),   # gold first
        ("Classify this comment as ham or spam.\n\nweak sure\n(a2) {json}", "ham"),            # weak ≥ 0.9
    ]
    assert [x["messages"][0]["role"] for x in train] == ["user"] * 3
    val = read_jsonl(tmp_path / "c" / "val.jsonl")
    assert val[0]["messages"][0]["content"].endswith("val {braces}\n(a5) {json}")  # a text's braces stay
    assert r["counts"]["train"]["dropped"] == {"low_confidence": 1, "unlabeled": 1}
    lowered = export(store, "yt", tmp_path / "c", "chat-jsonl", ExportOptions(template=tpl, min_confidence=0.75))
    assert lowered["counts"]["train"] == {"kept": 4, "dropped": {"unlabeled": 1}}
    assert read_jsonl(tmp_path / "c" / "train.jsonl")[3]["messages"][1]["content"] == "spam"
    alp = export(store, "yt", tmp_path / "a", "alpaca", ExportOptions(template="{text}"))
    assert read_jsonl(tmp_path / "a" / "train.jsonl")[0] == {"instruction": "gold spam", "input": "", "output": "spam"}
    assert alp["rows"] == 4


def test_bad_templates_name_the_valid_fields(store, clf, tmp_path):
    with pytest.raises(TemplateError, match=r"unknown field \{txt\}; the valid fields are \{labels\}, \{text\}, "
                                            r"\{author\}"):
        export(store, "yt", tmp_path / "x", "chat-jsonl", ExportOptions(template="Classify: {txt}"))
    for bad, msg in (("{}{text}", "not a plain name"), ("{text.upper}", "not a plain name"),
                     ("{text!r}", "conversion"), ("no text {labels}", "must contain {text}"),
                     ("{text", "literal brace")):
        with pytest.raises(TemplateError, match=msg):
            template_fields(bad, ["labels", "text"])
    assert not (tmp_path / "x").exists()
    assert join_labels(["a", "b", "c"]) == "a, b or c" and join_labels(["x"]) == "x"
    assert render_template("{{{text}}}", {"text": "{a}"}) == "{{a}}"


def test_refusals(store, clf, inst, tmp_path):
    with pytest.raises(InputError, match="--template"):
        export(store, "yt", tmp_path / "x", "chat-jsonl")
    with pytest.raises(InputError, match="for classification"):
        export(store, "inst", tmp_path / "x", "chat-jsonl", ExportOptions(template="{text}"))
    make_dataset(store, "nosplit", ["a"], ["ham"])
    with pytest.raises(InputError, match="curate split --dataset nosplit"):
        export(store, "nosplit", tmp_path / "x", "chat-jsonl", ExportOptions(template="{text}"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        export(store, "inst", tmp_path / "busy", "chat-jsonl")
    assert (tmp_path / "busy" / "mine.txt").exists()


def test_cli_export_chat_jsonl(store, clf, tmp_path):
    from cli import app

    db = store.settings.db
    store.close()
    r = CliRunner().invoke(app, ["export", "-d", "yt", "--format", "chat-jsonl", "--out", str(tmp_path / "o"),
                                 "--template", r"Classify this comment as {labels}.\n\n{text}", "--db", str(db),
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["train"]["kept"] == 3
    first = read_jsonl(tmp_path / "o" / "train.jsonl")[0]["messages"][0]["content"]
    assert first == "Classify this comment as ham or spam.\n\ngold spam"
    bad = CliRunner().invoke(app, ["export", "-d", "yt", "--format", "chat-jsonl", "--out", str(tmp_path / "p"),
                                   "--template", "{nope}", "--db", str(db)])
    assert bad.exit_code == 2 and "valid fields" in bad.output


def test_api_export_route(store, inst):
    from api.app import create_app

    with TestClient(create_app(store.settings, store), base_url="http://localhost",
                    raise_server_exceptions=False) as client:
        r = client.post("/datasets/inst/export", json={"format": "chat-jsonl", "name": "ft"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["counts"]["train"]["kept"] == 5 and body["format"] == "chat-jsonl"
        assert body["path"] == str(store.settings.home / "exports" / "inst" / "ft")
        assert client.post("/datasets/inst/export", json={"name": "../x"}).status_code == 422
        assert client.post("/datasets/nope/export", json={"name": "x"}).status_code == 404
        r = client.post("/datasets/inst/export", json={"name": "y", "template": "{text}"})
        assert r.status_code == 400 and "classification" in r.text
        from api.security import ROUTE_ROLES

        assert ROUTE_ROLES[("POST", "/datasets/{name}/export")] == "engineer"   # writes files on the server
