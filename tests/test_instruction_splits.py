"""Template-aware duplicates on instruction prompts: one source example rendered through several templates lands
in one component (and one split); unrelated records that share the templates do not merge; a long shared passage
inside a longer prompt does."""

import json
import random

import numpy as np
import polars as pl
import pytest

from curation.dedup import DedupConfig, find_duplicates, prompt_config, strip_templates
from curation.instructions import ingest_instructions
from curation.normalize import normalise_series
from curation.splits import check_split, make_split
from tests.conftest import DATA, ROOT

SEED = ROOT / "data" / "self-instruct-seed" / "seed_tasks.chat.jsonl"

YT_TEMPLATES = [   # prefix, suffix and both
    "Is this YouTube comment spam or not spam? {x}",
    "{x}\n\nWould you classify the comment above as spam?",
    "Comment: {x}\nLabel the comment as ham or spam.",
    'Here is a comment left under a music video: "{x}" Does it advertise something?',
    "Decide whether the following comment is spam.\n\n{x}\n\nAnswer with spam or ham.",
    "{x} -- what best describes this comment, spam or a genuine reaction?",
]
SEED_TEMPLATES = [
    "{x}",
    "Instruction: {x}\nResponse:",
    "Please complete the following task carefully.\n\n{x}",
    "{x}\n\nThink step by step before you answer.",
    "You are a helpful assistant. {x} Keep your answer short and clear.",
    ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{x}\n\n### Response:"),
]


def _sources() -> tuple[list[str], list[str]]:
    yt = list(dict.fromkeys(json.loads(line)["text"] for line in (DATA / "wrench" / "youtube.jsonl").open()))
    seed = []
    for line in SEED.open():
        m = json.loads(line)["messages"]
        seed.append("\n\n".join(x["content"] for x in m[:-1]))
    return yt, seed


def template_set(seed: int = 0, per_source: int = 3) -> tuple[list[str], list[str], dict[str, int]]:
    """Every unique YouTube comment and seed task rendered through `per_source` of its 6 templates (so every
    template is shared by many unrelated sources). Returns (texts, source key per text, source group per key:
    sources that are near duplicates of each other already — plain dedup of the raw sources — share a group)."""
    rng = random.Random(seed)
    yt, tasks = _sources()
    texts, src = [], []
    for prefix, items, templates in (("yt", yt, YT_TEMPLATES), ("seed", tasks, SEED_TEMPLATES)):
        for i, x in enumerate(items):
            for t in rng.sample(templates, per_source):
                texts.append(t.format(x=x))
                src.append(f"{prefix}{i}")
    keys = [f"yt{i}" for i in range(len(yt))] + [f"seed{i}" for i in range(len(tasks))]
    groups = find_duplicates(yt + tasks, config=DedupConfig()).component
    return texts, src, dict(zip(keys, groups.tolist()))


def recall_precision(component: np.ndarray, src: list[str], group: dict[str, int]) -> dict:
    """recall: share of same-source record pairs in one component; precision: share of records whose
    component holds no record of another source group."""
    f = pl.DataFrame({"c": np.asarray(component), "s": src, "g": [group[s] for s in src]})
    per = f.group_by("s").len()
    total = int((per["len"] * (per["len"] - 1) // 2).sum())
    same = f.group_by("s", "c").len()
    together = int((same["len"] * (same["len"] - 1) // 2).sum())
    mixed = f.group_by("c").agg(pl.col("g").n_unique().alias("ng"))
    f = f.join(mixed, on="c")
    return {"records": f.height, "recall": together / total, "precision": float((f["ng"] == 1).mean()),
            "sources_whole": float((f.group_by("s").agg(pl.col("c").n_unique())["c"] == 1).mean())}


@pytest.fixture(scope="module")
def rendered():
    return template_set()


def test_template_rendered_duplicates_share_a_component(rendered):
    texts, src, group = rendered
    aware = find_duplicates(texts, config=prompt_config())
    plain = find_duplicates(texts, config=DedupConfig())
    got, base = recall_precision(aware.component, src, group), recall_precision(plain.component, src, group)
    print("template-aware", got, "plain", base, {k: aware.stats[k] for k in (
        "template_threshold", "template_ngrams", "texts_without_content", "near_pairs", "contained_pairs")})
    assert got["recall"] >= 0.95 and got["precision"] >= 0.95
    assert base["recall"] < 0.5 and base["precision"] < got["precision"]   # what templates do to plain dedup


def _records(n_templates: int = 2, per_template: int = 60) -> list[str]:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(5000)]
    contents = [" ".join(rng.sample(words, 12)) for _ in range(per_template * n_templates)]
    return contents


def test_short_template_text_does_not_merge_unrelated_records():
    """Many different contents under one long template: plain dedup merges them (the template dominates the
    shingles); template-aware dedup keeps each apart."""
    contents = _records()
    tmpl = "Read the following customer message carefully and tell me which department should handle it: {x}"
    texts = [tmpl.format(x=c[:20]) for c in contents]
    plain = find_duplicates(texts, config=DedupConfig())
    aware = find_duplicates(texts, config=prompt_config())
    assert plain.stats["components"] < len(texts)          # the template merges unrelated records
    assert aware.stats["components"] == len(texts)
    assert aware.stats["template_ngrams"] > 0


def test_same_content_in_two_templates_merges_and_a_long_passage_inside_a_longer_prompt_merges():
    contents = _records()
    t1 = "What label best describes this news article? {x}"
    t2 = "{x} Which section of a newspaper would this article likely appear in?"
    texts = [t1.format(x=c) for c in contents] + [t2.format(x=c) for c in contents]
    passage = ("the committee met on tuesday to review the budget for the new bridge over the river and agreed "
               "that construction would begin in the spring once the engineers had finished their survey of both "
               "banks and the city council had approved the final plans")
    texts += [passage, (f"Summarise this in one sentence for a busy reader who has no time: {passage} Then list "
              "three questions a journalist could ask the mayor about the cost and the schedule of the project.")]
    d = find_duplicates(texts, config=prompt_config())
    n = len(contents)
    assert all(d.component[i] == d.component[n + i] for i in range(n))
    assert len(set(d.component[:n].tolist())) == n                  # unrelated contents stay apart
    assert d.component[-1] == d.component[-2]
    kinds = d.pairs.filter(pl.col("b") == len(texts) - 1)["kind"].to_list()
    assert "contained" in kinds or "near" in kinds


def test_strip_templates_keeps_content_in_order():
    texts = [f"Comment: c{i} d{i} e{i}\nLabel the comment as ham or spam." for i in range(60)]
    content, stats = strip_templates(normalise_series(pl.Series(texts)), prompt_config())
    assert content.to_list() == [f"c{i} d{i} e{i}" for i in range(60)]
    assert stats["template_threshold"] == 50


def test_classification_config_is_unchanged():
    assert "template_aware" not in DedupConfig().as_dict()
    assert prompt_config().as_dict()["template_aware"] is True


def test_instruction_split_keeps_template_renderings_in_one_split(store, tmp_path, rendered):
    texts, src, _ = rendered
    keep = [i for i, s in enumerate(src) if s.startswith("seed") or int(s[2:]) < 300]
    path = tmp_path / "rendered.jsonl"
    with path.open("w") as f:
        for i in keep:
            f.write(json.dumps({"messages": [{"role": "user", "content": texts[i]},
                                             {"role": "assistant", "content": f"answer {i}"}],
                                "id": f"r{i}", "source": src[i]}) + "\n")
    ingest_instructions(store, path, "rendered", fmt="chat")
    rep = make_split(store, "rendered", "0.8,0.1,0.1", seed=1)
    assert rep["params"]["template_aware"] is True
    assert rep["crossing_components"] == 0
    sp = store.frame("SELECT r.meta, s.split FROM store.splits s JOIN store.records r USING (record_id) "
                     "WHERE s.split_id = ?", [rep["split_id"]])
    sp = sp.with_columns(pl.col("meta").str.json_path_match("$.source").alias("source"))
    per = sp.group_by("source").agg(pl.col("split").n_unique().alias("n"))
    whole = float((per["n"] == 1).mean())
    assert whole >= 0.95, whole
    check = check_split(store, "rendered")
    assert check["ok"] and check["crossing_components"] == 0
    # the same dataset split without the template-aware setting scatters renderings over splits
    rep2 = make_split(store, "rendered", "0.8,0.1,0.1", seed=1, template_aware=False)
    sp2 = store.frame("SELECT r.meta, s.split FROM store.splits s JOIN store.records r USING (record_id) "
                      "WHERE s.split_id = ?", [rep2["split_id"]])
    sp2 = sp2.with_columns(pl.col("meta").str.json_path_match("$.source").alias("source"))
    whole2 = float((sp2.group_by("source").agg(pl.col("split").n_unique().alias("n"))["n"] == 1).mean())
    assert whole2 < whole
