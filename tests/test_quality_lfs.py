"""Quality LFs on instruction datasets: the `response`/`prompt` fields through both engines, the `builtin:` registry,
each built-in instruction-quality LF on planted defects, and apply + label end to end."""

import json

import numpy as np
import pytest

from curation.errors import InputError
from curation.store import now
from experiments.instruction_quality import insert_instructions, plant, seed_pairs
from labeling.builtin import BUILTIN_SETS, builtin_lfs
from labeling.builtin.instruction_quality import luhn_ok
from labeling.lfs import LFDefinitionError, keyword_lf, labeling_function, load_lfs, regex_lf, sql_lf
from labeling.weak import apply_lfs, fit_label_model, load_matrix
from tests.helpers import make_dataset

CLEAN = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Classify the sentiment of this review.\n\nI loved every minute of it.", "Positive"),
    ("Write a short poem about the sea.",
     ("The sea rolls in with silver light,\nit hums the harbour through the night.\nAt dawn it leaves a salted kiss,\n"
      "and nothing else is quite like this.")),
    ("Explain why the sky is blue.",
     ("Sunlight is scattered by the molecules of the air. Blue light is scattered more than red light because it "
      "has a shorter wavelength, so the sky looks blue from every direction.")),
    ("Write a Python function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
    ("Is 7 a prime number?", "Yes"),
    ("Write an HTML paragraph that says hello.", "<p>Hello!</p>"),
    ("How many legs does a spider have?", "A spider has eight legs."),
]
# name of the LF that must fire → (prompt, response)
DEFECTS = {
    "response_empty": ("What is the capital of France?", " ... "),
    "response_too_short": ("Write an essay about climate change and its effects on agriculture.", "Climate."),
    "response_repeats_prompt": ("Describe the water cycle in three sentences for a child.",
                                "Describe the water cycle in three sentences for a child."),
    "refusal": ("Tell me a joke about cats.", "As an AI language model, I cannot tell jokes."),
    "ngram_repetition": ("Describe a sunny day.", "It is sunny and warm. " * 6),
    "truncated": ("Explain photosynthesis.",
                  "Plants turn light into chemical energy. They take in carbon dioxide and water and"),
    "template_garbage": ("Name a fruit.", "<|im_start|>assistant\nAn apple is a fruit.<|im_end|>"),
    "prompt_template_garbage": ("### Instruction: {input}\n### Response:", "I do not know what to say here."),
    "pii_email": ("How do I reach support?", "Write to jane.doe@example.com and they will answer."),
    "pii_phone": ("How do I reach support?", "Call (415) 555-2671 during office hours."),
    "pii_card_number": ("Give me an example payment.", "Pay with card 4539 1488 0343 6467 today."),
}


def _dataset(store, pairs, name="iq"):
    return insert_instructions(store, name, [{"prompt": p, "response": r} for p, r in pairs])


def _votes(store, name, lfs):
    r = apply_lfs(store, name, lfs)
    mat = load_matrix(store, name, r["lf_set_id"])
    return r, mat["L"], mat["names"]


def test_registry_names_bad_key_and_valid_ones():
    lfs = load_lfs("builtin:instruction-quality")
    assert [lf.name for lf in lfs] == [lf.name for lf in builtin_lfs("instruction-quality")]
    assert "instruction-quality" in BUILTIN_SETS
    with pytest.raises(LFDefinitionError, match=r"'nope' unknown; valid: builtin:instruction-quality"):
        load_lfs("builtin:nope")


def test_builtin_sql_lfs_compile_to_duckdb(store):
    _dataset(store, CLEAN)
    r = apply_lfs(store, "iq", "builtin:instruction-quality")
    engines = {x["lf"]: x["engine"] for x in r["lfs"]}
    assert {n for n, e in engines.items() if e == "python"} == {"response_repeats_prompt", "ngram_repetition",
                                                                   "pii_card_number"}
    assert r["labels"] == ["keep", "drop"] and r["task"] == "instruction" and r["source"] == "builtin:instruction-quality"


def test_each_builtin_lf_fires_on_its_defect_not_on_clean(store):
    names = list(DEFECTS)
    ids = _dataset(store, CLEAN + [DEFECTS[n] for n in names])
    _, L, lf_names = _votes(store, "iq", "builtin:instruction-quality")
    col = {n: j for j, n in enumerate(lf_names)}
    drop_lfs = [n for n in lf_names if n not in ("complete_answer", "short_direct_answer")]
    clean = L[:len(CLEAN)]
    for n in drop_lfs:
        assert (clean[:, col[n]] == -1).all(), f"{n} fired on a clean example: {np.nonzero(clean[:, col[n]] != -1)}"
    for i, n in enumerate(names):
        row = L[len(CLEAN) + i]
        assert row[col[n]] == 1, f"{n} did not vote drop on its planted defect {DEFECTS[n]!r}"
        assert row[col["complete_answer"]] == -1 and row[col["short_direct_answer"]] == -1, n
    # the keep LFs cover the clean examples (so the label model sees both classes)
    keep = (clean[:, col["complete_answer"]] == 0) | (clean[:, col["short_direct_answer"]] == 0)
    assert keep.sum() >= len(CLEAN) - 1
    assert len(ids) == len(CLEAN) + len(names)


def test_duplicate_response_flags_the_later_copy_only(store):
    long = "Exercise improves the heart, the lungs and the mood, and it helps people sleep better at night."
    _dataset(store, [("Why exercise?", long), ("Give one reason to sleep well.", long)])
    _, L, names = _votes(store, "iq", "builtin:instruction-quality")
    j = names.index("response_duplicate")
    assert L[:, j].tolist() == [-1, 1]


def test_luhn():
    assert luhn_ok("4539148803436467") and not luhn_ok("4539148803436468")
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")


def test_card_number_needs_luhn(store):
    _dataset(store, [("Give an order number.", "Your order number is 4539 1488 0343 6468.")])
    _, L, names = _votes(store, "iq", "builtin:instruction-quality")
    assert L[0, names.index("pii_card_number")] == -1


@pytest.mark.parametrize("engine", ["sql", "python"])
def test_response_field_engines_agree(store, engine):
    pairs = [(p, r) for p, r in CLEAN] + list(DEFECTS.values()) + [("sorry about that", "All good.")]
    _dataset(store, pairs)
    kw = [keyword_lf("kw_resp", ["sorry", "apple"], "drop", field="response", engine=engine),
          regex_lf("re_resp", r"\d{3}\)? ?\d{3}-\d{4}|@\w+\.", "drop", field="response", engine=engine),
          regex_lf("re_neg", r"[.!?]\s*$", "drop", field="response", negate=True, engine=engine),
          keyword_lf("kw_prompt", ["sorry"], "keep", field="prompt", engine=engine),
          keyword_lf("kw_text", ["sorry"], "keep", engine=engine)]
    r, L, _ = _votes(store, "iq", kw)
    assert all(x["engine"] == engine for x in r["lfs"])

    @labeling_function(label="drop")
    def py_resp(x):
        return any(w in x.response.lower() for w in ("sorry", "apple"))

    _, L2, _ = _votes(store, "iq", [py_resp])
    np.testing.assert_array_equal(L[:, 0], L2[:, 0])
    assert (L[:, 0] == 1).sum() == 1  # "An apple is a fruit." (the prompt "sorry about that" is not the response)
    assert (L[:, 3] == 0).sum() == 1 and np.array_equal(L[:, 3], L[:, 4])  # prompt == text


def test_sql_and_python_lfs_see_prompt_and_response(store):
    _dataset(store, [("Say hi.", "Hi there!"), ("Say bye.", "")])

    @labeling_function()
    def both(x):
        assert x.text == x.prompt
        return "drop" if not x.response else "keep"

    _, L, _ = _votes(store, "iq", [both, sql_lf("s", "length(response) = 0 AND prompt = text", "drop")])
    assert L.tolist() == [[0, -1], [1, 1]]


def test_declarative_field(tmp_path, store):
    _dataset(store, [("sorry?", "fine."), ("ok?", "Sorry, no.")])
    f = tmp_path / "lfs.yaml"
    f.write_text("lfs:\n  - {name: k, kind: keyword, label: drop, keywords: [sorry], field: response}\n"
                 "  - {name: r, kind: regex, label: keep, pattern: '^fine', field: response}\n")
    lfs = load_lfs(f)
    assert [lf.field for lf in lfs] == ["response", "response"]
    _, L, _ = _votes(store, "iq", f)
    assert L.tolist() == [[-1, 0], [1, -1]]
    f.write_text("lfs:\n  - {name: k, kind: keyword, label: drop, keywords: [x], field: answer}\n")
    with pytest.raises(LFDefinitionError, match="field 'answer' unknown; valid: text, prompt, response"):
        load_lfs(f)


def test_response_field_on_classification_dataset_is_refused(store):
    make_dataset(store, "c", ["hello", "spam spam"])
    with pytest.raises(InputError, match="read field `response`.*classification dataset"):
        apply_lfs(store, "c", [keyword_lf("k", ["spam"], "spam", field="response")])
    # a text LF still works, and SQL LFs see prompt = text
    r = apply_lfs(store, "c", [sql_lf("p", "prompt = text AND response IS NULL", "ham")])
    assert r["lfs"][0]["fired"] == 2


def test_latest_accepted_revision_is_what_lfs_see(store):
    [rid] = _dataset(store, [("Tell me a joke.", "As an AI language model, I cannot.")])
    lfs = [keyword_lf("refuses", ["as an ai language model"], "drop", field="response")]
    r1 = apply_lfs(store, "iq", lfs)
    assert r1["lfs"][0]["fired"] == 1
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.revisions (record_id, revision, response, messages, parent_revision, source, "
                    "annotator, annotation_id, status, created_at) VALUES (?, 1, ?, ?, 0, 'annotation', 'ann', 1, "
                    "'accepted', ?)", [rid, "Why did the chicken cross the road? To get to the other side.",
                                       json.dumps([]), now()])
    r2 = apply_lfs(store, "iq", lfs)
    assert r2["status"] == "applied" and r2["lfs"][0]["fired"] == 0
    assert apply_lfs(store, "iq", lfs)["status"] == "unchanged"


def test_apply_and_label_end_to_end(store):
    pairs = seed_pairs()[:40]
    clean = [p | {"gold": "keep"} for p in pairs]
    bad = plant(pairs, 3, seed=1)
    ids = insert_instructions(store, "iq", clean + bad)
    r = apply_lfs(store, "iq", "builtin:instruction-quality")
    assert r["records"] == len(ids) and r["faults"] == 0
    for kind in ("majority", "snorkel"):
        m = fit_label_model(store, "iq", kind)
        w = store.frame("SELECT record_id, probs, label FROM main.weak_labels WHERE model_id = ? ORDER BY record_id",
                        [m["model_id"]])
        probs = np.asarray(w["probs"].to_list())
        assert probs.shape == (len(ids), 2) and np.allclose(probs.sum(axis=1), 1)
        p_keep = probs[:, 0]  # labels keep,drop: probs[0] is the quality probability
        assert p_keep[len(clean):].mean() < p_keep[:len(clean)].mean()
        assert m["metrics"]["all"]["gold_rows"] == len(ids)
    # with majority vote, every planted empty or refusal is dropped
    planted = w["label"].to_list()[len(clean):]
    kinds = [b["meta"]["defect"] for b in bad]
    assert all(lab == "drop" for lab, k in zip(planted, kinds) if k in ("empty", "refusal"))
