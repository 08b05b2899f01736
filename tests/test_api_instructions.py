"""Instruction data through the API: ingest uploads (layouts, field options, contract, token counts), the records
and revisions of the `instructions` view, the built-in quality LFs through the LF route, the label model, a
template-aware split, the contamination check (a job) and its paged flags, SFT train/score/select through the run
routes, the chat-JSONL export, the roles of the new routes, and `api.client.ServerClient` for the CLI's --server.

No model runs: the SFT trainer and scorer (`training.sft.train_sft`, `training.sft_runs.score_sft`) are fakes that
return and write what the real ones do; the dispatch, snapshot, gates, export and run records are the real ones.
"""

import io
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from curation.store import INSTRUCTION_LABELS, now
from tests.helpers import make_dataset

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "self-instruct-seed" / "seed_tasks.chat.jsonl"
ADMIN = "admin-key-instr"


def seed_rows(n: int = 40) -> list[dict]:
    rows = [json.loads(line) for line in SEED.read_text().splitlines() if line.strip()]
    return rows[:n]


def alpaca_jsonl(rows: list[dict]) -> bytes:
    """The seed conversations as Alpaca rows, plus two that break the contract (empty output, missing output)."""
    out = []
    for r in rows:
        user = next(m["content"] for m in r["messages"] if m["role"] == "user")
        out.append({"instruction": user, "input": "", "output": r["messages"][-1]["content"], "id": r["id"]})
    out.append({"instruction": "Say nothing.", "input": "", "output": "", "id": "bad-empty"})
    out.append({"instruction": "No answer here.", "input": "", "id": "bad-missing"})
    return "".join(json.dumps(x) + "\n" for x in out).encode()


def upload(data: bytes, name: str = "data.jsonl") -> dict:
    return {"file": (name, io.BytesIO(data), "application/octet-stream")}


def wait_job(c: TestClient, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']}")


@pytest.fixture
def client(store):
    store.settings = store.settings.model_copy(update={"api_key": SecretStr(ADMIN)})
    with TestClient(create_app(store.settings, store), raise_server_exceptions=False,
                    headers={"X-API-Key": ADMIN}) as c:
        yield c


@pytest.fixture
def seeded(client):
    """Instruction dataset `it`: 40 seed tasks uploaded as Alpaca JSONL (whitespace token counts)."""
    r = client.post("/datasets/it/ingest", files=upload(alpaca_jsonl(seed_rows())),
                    data={"task": "instruction", "tokenizer": "whitespace", "id_field": "id"})
    assert r.status_code == 201, r.text
    return r.json()


# -- ingest and reads ----------------------------------------------------------------------------------------------
def test_ingest_instruction_upload_reports_layout_tokens_and_quarantine(client, seeded):
    assert seeded["task"] == "instruction" and seeded["layout"] == "alpaca"
    assert seeded["rows_read"] == 42 and seeded["accepted"] == 40 and seeded["quarantined"] == 2
    assert seeded["rows_read"] == seeded["accepted"] + seeded["quarantined"]
    assert seeded["tokens"] > 0 and seeded["tokenizer"] == "whitespace"
    assert seeded["labels"] == list(INSTRUCTION_LABELS)
    ds = client.get("/datasets/it").json()
    assert ds["task"] == "instruction" and ds["records"] == 40
    assert {d["name"]: d["task"] for d in client.get("/datasets").json()["items"]} == {"it": "instruction"}


def test_ingest_layout_and_field_options(client):
    # CSV with own column names, a system column and a token limit; the layout given as `format` (as the CLI)
    csv = b"q,a,sys\nWhat is 2+2?,4,You are terse.\n" + b"Write a long poem.," + b"word " * 50 + b",Be nice.\n"
    r = client.post("/datasets/qa/ingest", files=upload(csv, "qa.csv"),
                    data={"task": "instruction", "layout": "prompt-completion", "prompt_field": "q",
                          "response_field": "a", "system_field": "sys", "max_tokens": "20",
                          "tokenizer": "whitespace"})
    assert r.status_code == 201, r.text
    assert (r.json()["accepted"], r.json()["quarantined"]) == (1, 1)
    assert list(r.json()["quarantined_by_rule"]) == ["max_tokens"]
    rec = client.get("/datasets/qa/records").json()["items"][0]
    assert rec["messages"] == [{"role": "system", "content": "You are terse."},
                               {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    assert rec["response"] == "4" and "What is 2+2?" in rec["prompt"] and rec["revision"] == 0
    chat = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})
    chat = chat[:-1] + ', "secret": "pii", "topic": "greeting"}'
    r = client.post("/datasets/chat/ingest", files=upload(chat.encode() + b"\n"),
                    data={"format": "chat", "tokenizer": "whitespace", "exclude_fields": "secret"})
    assert r.status_code == 201 and r.json()["layout"] == "chat", r.text
    assert client.get("/datasets/chat/records").json()["items"][0]["meta"] == {"topic": "greeting"}
    # instruction options on a classification ingest, classification options on an instruction one: 400
    r = client.post("/datasets/cls/ingest", files=upload(b"text\nhello\n", "x.csv"), data={"max_tokens": "5"})
    assert r.status_code == 400 and "task=instruction" in r.json()["error"]["message"]
    r = client.post("/datasets/qa/ingest", files=upload(csv, "qa.csv"), data={"labels": "a,b"})
    assert r.status_code == 400 and "classification" in r.json()["error"]["message"]
    r = client.post("/datasets/qa/ingest", files=upload(csv, "qa.csv"), data={"layout": "nope"})
    assert r.status_code == 422


def test_records_of_an_instruction_dataset_show_the_conversation(client, seeded):
    page = client.get("/datasets/it/records", params={"limit": 5}).json()
    assert page["total"] == 40 and len(page["items"]) == 5
    first = page["items"][0]
    assert first["source_id"] == "seed_task_0" and first["text"] == first["prompt"]
    assert first["messages"][-1] == {"role": "assistant", "content": first["response"]}
    assert first["turns"] == 2 and first["tokens"] > 0
    hits = client.get("/datasets/it/records", params={"q": "oatmeal banana"}).json()   # found in the response
    assert hits["total"] >= 1 and "oatmeal banana" in hits["items"][0]["response"].lower()


def test_revisions_list_the_edits_and_records_show_the_current_one(client, store, seeded):
    rid = client.get("/datasets/it/records", params={"limit": 1}).json()["items"][0]["record_id"]
    revs = client.get(f"/datasets/it/records/{rid}/revisions").json()
    assert revs["current"] == 0 and [r["revision"] for r in revs["revisions"]] == [0]
    assert revs["revisions"][0]["source"] == "ingest" and revs["revisions"][0]["current"] is True
    messages = revs["revisions"][0]["messages"]
    edited = [*messages[:-1], {"role": "assistant", "content": "A shorter answer."}]
    with store.transaction() as cur:   # what a review edit in Label Studio writes (labeling.studio.sync)
        cur.execute("INSERT INTO store.revisions (record_id, revision, response, messages, parent_revision, source, "
                    "annotator, annotation_id, status, created_at) VALUES (?, 1, 'A shorter answer.', ?, 0, "
                    "'annotation', 'ann@example.com', 7, 'accepted', ?)", [rid, json.dumps(edited), now()])
    revs = client.get(f"/datasets/it/records/{rid}/revisions").json()
    assert revs["current"] == 1 and [r["current"] for r in revs["revisions"]] == [False, True]
    assert revs["revisions"][1] | {"created_at": None} == {
        "revision": 1, "response": "A shorter answer.", "messages": edited, "parent_revision": 0,
        "source": "annotation", "annotator": "ann@example.com", "annotation_id": 7, "status": "accepted",
        "current": True, "created_at": None}
    rec = client.get("/datasets/it/records", params={"limit": 1}).json()["items"][0]
    assert rec["response"] == "A shorter answer." and rec["revision"] == 1
    assert client.get("/datasets/it/records/999999/revisions").status_code == 404
    assert client.get("/datasets/nope/records/1/revisions").status_code == 404
    make_dataset(store, "cls", ["a text"])
    cls_id = store.one("SELECT max(record_id) FROM store.records")
    r = client.get(f"/datasets/cls/records/{cls_id}/revisions")
    assert r.status_code == 400 and "classification" in r.json()["error"]["message"]


# -- quality LFs, label model, split ---------------------------------------------------------------------------------
def test_builtin_quality_lfs_through_the_lf_route(client, seeded):
    r = client.post("/datasets/it/lfs", files={"lfs": (None, "builtin:instruction-quality")})
    assert r.status_code == 200, r.text
    applied = r.json()
    assert applied["status"] == "applied" and applied["lf_set_id"].startswith("it/")
    again = client.post("/datasets/it/lfs", files={"lfs": (None, "builtin:instruction-quality")}).json()
    assert again["status"] == "unchanged"
    forced = client.post("/datasets/it/lfs", files={"lfs": (None, "instruction-quality"), "force": (None, "true")})
    assert forced.json()["status"] == "applied"
    report = client.get("/datasets/it/lfs/report").json()
    assert len(report["lfs"]) >= 5
    model = client.post("/datasets/it/label-model", json={"kind": "majority"})
    assert model.status_code == 200, model.text
    # only registered built-in names: never a path or code
    for bad in ("builtin:../../etc/passwd", "/etc/passwd", "builtin:nope", "labeling/builtin/instruction_quality.py"):
        r = client.post("/datasets/it/lfs", files={"lfs": (None, bad)})
        assert r.status_code == 400 and "builtin:instruction-quality" in r.json()["error"]["message"], bad
    r = client.post("/datasets/it/lfs", files=upload(b"from x import y\n", "lfs.py"))
    assert r.status_code == 400 and "declarative" in r.json()["error"]["message"]
    both = {**upload(b"lfs: []\n", "lfs.yaml"), "lfs": (None, "builtin:instruction-quality")}
    assert client.post("/datasets/it/lfs", files=both).status_code == 400
    assert client.post("/datasets/it/lfs", files={"force": (None, "true")}).status_code == 400


def test_split_template_aware_option(client, seeded):
    on = client.post("/datasets/it/splits", json={"ratios": [0.5, 0.25, 0.25], "seed": 1})
    assert on.status_code == 200, on.text
    assert sum(on.json()["counts"].values()) == 40 and on.json()["crossing_components"] == 0
    off = client.post("/datasets/it/splits", json={"ratios": [0.5, 0.25, 0.25], "seed": 1, "template_aware": False})
    assert off.status_code == 200 and sum(off.json()["counts"].values()) == 40
    check = client.get("/datasets/it/splits/check").json()
    assert check["ok"] is True
    assert client.post("/datasets/it/splits", json={"template_aware": "maybe"}).status_code == 422


# -- contamination ------------------------------------------------------------------------------------------------
def test_contamination_check_is_a_job_and_its_flags_are_paged(client, store, seeded):
    empty = client.get("/datasets/it/contamination").json()
    assert empty["check"] is None and empty["items"] == [] and empty["total"] == 0
    rows = seed_rows(3)
    ev = "".join(json.dumps({"messages": r["messages"]}) + "\n" for r in rows).encode()
    r = client.post("/datasets/it/contamination", files=upload(ev, "eval set.jsonl"), data={"ngram": "8"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    res = job["result"]
    assert res["checked"] == 40 and res["contaminated"] >= 3 and res["ngram"] == 8
    assert res["against"] == "eval set.jsonl"
    assert not list((store.settings.home / "uploads" / "contamination").iterdir())   # the copy is removed
    page = client.get("/datasets/it/contamination", params={"limit": 2}).json()
    assert page["total"] == res["contaminated"] and len(page["items"]) == 2 and page["next_offset"] == 2
    assert page["check"]["check_id"] == res["check_id"] and page["check"]["against"] == "eval set.jsonl"
    assert page["items"][0]["overlap"] >= page["items"][1]["overlap"] > 0
    ids = {x["source_id"] for x in client.get("/datasets/it/contamination", params={"limit": 100}).json()["items"]}
    assert {r["id"] for r in rows} <= ids
    assert client.get("/datasets/it/contamination", params={"check_id": "nope"}).status_code == 404
    assert client.post("/datasets/it/contamination", files=upload(ev), data={"ngram": "0"}).status_code == 422
    assert client.post("/datasets/nope/contamination", files=upload(ev)).status_code == 404
    bad = wait_job(client, client.post("/datasets/it/contamination", files=upload(b"", "e.jsonl")).json()["job_id"])
    assert bad["status"] == "failed" and "empty" in bad["error"]


# -- SFT through the run routes -----------------------------------------------------------------------------------
@pytest.fixture
def fake_sft(monkeypatch):
    """`train_sft` and `score_sft` stand-ins: the dispatch, snapshot, gates, export and run rows stay real."""
    from training import sft as sft_mod
    from training import sft_runs

    calls: dict = {}

    def train_sft(messages_train, messages_val, config, out_dir, progress=None, *, messages_test=None,
                  cache_dir=None):
        calls["train"] = {"train": len(messages_train), "val": len(messages_val or []),
                          "test": len(messages_test or []), "config": config}
        out = Path(out_dir)
        (out / "adapter").mkdir(parents=True, exist_ok=True)
        if progress:
            progress(1, 1)
        metrics = {"val": {"loss": 1.5, "perplexity": 4.48}, "test": {"loss": 1.6, "perplexity": 4.95},
                   "base": {"val": {"loss": 2.0, "perplexity": 7.39}}}
        return {"data_counts": {"train": len(messages_train)}, "best_epoch": 1, "stopped_early": False,
                "device": "cpu", "target_modules": ["q_proj"], "trainable_params": 1, "load_seconds": 0.0,
                "train_seconds": 0.0, "train_steps": 1, "train_tokens_per_s": 0.0, "history": [{"epoch": 1}],
                "metrics": metrics, "adapter_path": str(out / "adapter"),
                "generations_path": str(out / "generations.jsonl"), "base_model": "fake-base"}

    def score_sft(store, run_id, dataset=None, include_labeled=False, progress=None, **_):
        rows = store.query("SELECT record_id FROM main.instructions WHERE dataset = ? AND label IS NULL "
                           "ORDER BY record_id", [dataset or "it"])
        with store.transaction() as cur:
            for (rid,) in rows:
                cur.execute("INSERT OR REPLACE INTO store.response_scores (run_id, record_id, loss, base_loss, tokens, "
                            "embedding, scored_at) VALUES (?, ?, ?, ?, 10, NULL, ?)",
                            [run_id, rid, float(rid % 7), 3.0, now()])
        calls["score"] = len(rows)
        return {"run_id": run_id, "scored": len(rows)}

    monkeypatch.setattr(sft_mod, "train_sft", train_sft)
    monkeypatch.setattr(sft_runs, "score_sft", score_sft)
    return calls


def test_sft_train_score_select_and_export_through_the_api(client, seeded, fake_sft):
    assert client.post("/datasets/it/splits", json={"ratios": [0.5, 0.25, 0.25], "seed": 0}).status_code == 200
    # a classification option on an instruction dataset is refused before a job is queued
    r = client.post("/runs", json={"dataset": "it", "config": {"model_name": "x"}})
    assert r.status_code == 400 and "SFT run takes" in r.json()["error"]["message"]
    r = client.post("/runs", json={"dataset": "it", "config": {"base_model": "fake-base", "min_quality": 0,
                                                               "max_steps": 1, "device": "cpu"}})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    run_id = job["result"]["run_id"]
    assert job["result"]["task"] == "sft" and fake_sft["train"]["train"] > 0 and fake_sft["train"]["val"] > 0
    run = client.get(f"/runs/{run_id}").json()
    assert run["task"] == "sft" and run["status"] == "succeeded"
    assert run["metrics"]["val"]["perplexity"] == 4.48 and run["metrics"]["base"]["val"]["loss"] == 2.0
    # score → response losses → the highest first for review
    job = wait_job(client, client.post(f"/runs/{run_id}/score", json={}).json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    scores = client.get(f"/runs/{run_id}/scores", params={"order": "highest_loss", "limit": 3}).json()
    assert scores["total"] == fake_sft["score"] == 40
    assert [s["loss"] for s in scores["items"]] == [6.0, 6.0, 6.0] and scores["items"][0]["response"]
    sel = client.post("/selections", json={"run_id": run_id, "strategy": "highest_loss", "n": 5})
    assert sel.status_code == 201, sel.text
    assert sel.json()["strategy"] == "highest_loss" and sel.json()["scores"][0] == 6.0
    r = client.post("/selections", json={"run_id": run_id, "strategy": "least_confidence", "n": 5})
    assert r.status_code == 400 and "highest_loss" in r.json()["error"]["message"]
    # the chat JSONL export for fine-tuning tools
    exp = client.post("/datasets/it/export", json={"format": "chat-jsonl", "name": "ft", "min_quality": 0})
    assert exp.status_code == 201, exp.text
    out = Path(exp.json()["path"])
    line = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in line["messages"]][-1] == "assistant"


def test_contaminated_train_split_refuses_the_run_unless_allowed(client, seeded, fake_sft):
    assert client.post("/datasets/it/splits", json={"ratios": [0.5, 0.25, 0.25], "seed": 0}).status_code == 200
    ev = "".join(json.dumps({"messages": r["messages"]}) + "\n" for r in seed_rows(40)).encode()
    job = wait_job(client, client.post("/datasets/it/contamination", files=upload(ev)).json()["job_id"])
    assert job["result"]["contaminated"] >= 20   # records shorter than 13 tokens cannot share a 13-gram
    config = {"base_model": "fake-base", "min_quality": 0, "device": "cpu"}
    refused = wait_job(client, client.post("/runs", json={"dataset": "it", "config": config}).json()["job_id"])
    assert refused["status"] == "failed" and "share an n-gram with the evaluation set" in refused["error"]
    allowed = wait_job(client, client.post("/runs", json={"dataset": "it", "config": config | {
        "allow_contamination": True}}).json()["job_id"])
    assert allowed["status"] == "succeeded", allowed["error"]
    assert allowed["result"]["contamination_allowed"] is True


# -- roles -----------------------------------------------------------------------------------------------------------
def test_roles_of_the_instruction_routes(client, seeded):
    keys = {role: client.post("/keys", json={"name": role, "role": role}).json()["key"]
            for role in ("engineer", "trainer", "annotator")}

    def status(role: str, method: str, path: str, **kw) -> int:
        return client.request(method, path, headers={"X-API-Key": keys[role]}, **kw).status_code

    ev = json.dumps({"messages": seed_rows(1)[0]["messages"]}).encode()
    assert status("trainer", "POST", "/datasets/it/contamination", files=upload(ev)) == 403
    assert status("engineer", "POST", "/datasets/it/contamination", files=upload(ev)) == 202
    builtin = {"lfs": (None, "builtin:instruction-quality")}
    assert status("trainer", "POST", "/datasets/it/lfs", files=builtin) == 403
    assert status("engineer", "POST", "/datasets/it/lfs", files=builtin) == 200
    for role, code in (("trainer", 200), ("engineer", 200), ("annotator", 403)):
        assert status(role, "GET", "/datasets/it/contamination") == code
        rid = client.get("/datasets/it/records", params={"limit": 1}).json()["items"][0]["record_id"]
        assert status(role, "GET", f"/datasets/it/records/{rid}/revisions") == code
        assert status(role, "GET", "/runs/none/scores") == (404 if code == 200 else 403)
    assert status("annotator", "POST", "/datasets/x/ingest", files=upload(b"text\nhi\n", "x.csv")) == 403


# -- the client the CLI uses with --server ---------------------------------------------------------------------------
def test_server_client_instruction_methods(client, tmp_path, fake_sft):
    from api.client import ServerClient, ServerError

    sc = ServerClient("http://testserver", ADMIN)
    sc._http = client
    src = tmp_path / "seed.jsonl"
    src.write_bytes(alpaca_jsonl(seed_rows()))
    got = sc.ingest("it", src, task="instruction", tokenizer="whitespace", id_field="id")
    assert got["accepted"] == 40 and sc.dataset("it")["task"] == "instruction"
    assert sc.apply_lfs("it", "builtin:instruction-quality")["status"] == "applied"
    assert sc.apply_lfs("it", "builtin:instruction-quality", force=True)["status"] == "applied"
    assert sc.label_model("it", "majority")["dataset"] == "it"
    assert sum(sc.split("it", ratios=[0.5, 0.25, 0.25], template_aware=True)["counts"].values()) == 40
    ev = tmp_path / "eval.jsonl"
    ev.write_text(json.dumps({"messages": seed_rows(40)[-1]["messages"]}) + "\n")
    res = sc.contamination("it", ev, ngram=8)
    assert res["contaminated"] >= 1 and sc.contamination_flags("it")["total"] == res["contaminated"]
    rec = sc.records("it", limit=1)["items"][0]
    assert rec["messages"] and sc.revisions("it", rec["record_id"])["current"] == 0
    run = sc.train("it", {"base_model": "fake-base", "min_quality": 0, "device": "cpu", "allow_contamination": True})
    assert run["task"] == "sft"
    assert sc.score(run["run_id"])["scored"] == 40
    assert sc.response_scores(run["run_id"], limit=2)["total"] == 40
    assert sc.select(run["run_id"], "highest_loss", 3)["n"] == 3
    assert sc.export("it", "ft", min_quality=0)["format"] == "chat-jsonl"
    with pytest.raises(ServerError) as e:
        sc.apply_lfs("it", "builtin:nope")
    assert e.value.status == 400
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(ServerError, match="failed: .*empty"):
        sc.contamination("it", tmp_path / "empty.jsonl")
