"""Hostile declarative LF files (issue 12, finding 7): what an upload to the API may carry."""

import threading
import time

import pytest

from labeling.lfs import LFDefinitionError, LFRuntimeError, load_declarative, regex_lf
from labeling.lfs.guard import search_in_worker
from labeling.weak import apply_lfs
from tests.helpers import make_dataset

ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
lfs: *i
"""


def _file(tmp_path, text, name="lfs.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_alias_bomb_refused_at_once(tmp_path):
    t0 = time.process_time()
    with pytest.raises(LFDefinitionError, match="alias"):
        load_declarative(_file(tmp_path, ALIAS_BOMB))
    assert time.process_time() - t0 < 1


def test_size_and_nesting_limits(tmp_path):
    big = "lfs:\n" + "".join(f"  - {{name: k{i}, kind: keyword, label: spam, keywords: [w{i}]}}\n" for i in range(50))
    with pytest.raises(LFDefinitionError, match="over the limit"):
        load_declarative(_file(tmp_path, big), max_bytes=1000)
    assert len(load_declarative(_file(tmp_path, big))) == 50
    with pytest.raises(LFDefinitionError, match="nested deeper"):
        load_declarative(_file(tmp_path, "lfs: " + "[" * 500 + "]" * 500))
    with pytest.raises(LFDefinitionError, match="nested deeper"):
        load_declarative(_file(tmp_path, "[" * 100_000, name="x.json"))


@pytest.mark.parametrize("body", [
    "lfs: [{name: a, kind: [regex], label: spam, pattern: x}]",
    "lfs: [{name: a, kind: regex, label: spam, pattern: [x]}]",
    "lfs: [{name: a, kind: regex, label: spam, pattern: x, flags: 3}]",
    "lfs: [{name: a, kind: regex, label: spam, pattern: x, flags: {a: 1}}]",
    "lfs: [{name: a, kind: sql, label: spam, expr: [1]}]",
    "lfs: [{name: !!python/object:os.system x, kind: sql, label: spam, expr: x}]",
    "lfs: [{name: a, kind: regex, label: spam, pattern: '" + "a" * 20_000 + "'}]",
])
def test_malformed_items_are_definition_errors(tmp_path, body):
    with pytest.raises(LFDefinitionError):
        load_declarative(_file(tmp_path, body))


SQL_ESCAPES = [
    "exists(FROM store.gold_labels g WHERE g.record_id = record_id AND g.label = 'spam')",
    "record_id IN (SELECT record_id FROM store.gold_labels WHERE label = 'spam')",
    "(FROM main.records r SELECT r.label WHERE r.record_id = record_id) = 'spam'",
    "label = 'spam'",
    "current_setting('threads') > 0",
    "count(*) > 0",
    "true) AS x FROM store.gold_labels, (SELECT (true",
]


@pytest.mark.parametrize("expr", SQL_ESCAPES)
def test_sql_lf_sees_one_record_only(store, tmp_path, expr):
    make_dataset(store, "d", ["hello", "world"], ["ham", "spam"])
    path = _file(tmp_path, f"lfs: [{{name: s, kind: sql, label: spam, expr: {expr!r}}}]".replace("\\'", "''"))
    with pytest.raises(LFDefinitionError, match="boolean expression|other tables|does not run over"):
        apply_lfs(store, "d", load_declarative(path))
    assert store.one("SELECT count(*) FROM store.votes") == 0


def test_sql_lf_over_record_columns_runs(store, tmp_path):
    make_dataset(store, "d", ["hello", "a much longer text"], ["ham", "spam"])
    path = _file(tmp_path, "lfs: [{name: s, kind: sql, label: spam, expr: 'length(text) > 10 AND meta IS NULL'}]")
    res = apply_lfs(store, "d", load_declarative(path))
    assert res["lfs"][0]["fired"] == 1


def test_lookaround_regex_from_a_file_runs_guarded_and_agrees_with_python(store, tmp_path):
    texts = ["buy now", "nowhere", "buy it now!", "now", "", "snow now"]
    make_dataset(store, "d", texts, ["ham"] * len(texts))
    path = _file(tmp_path, "lfs: [{name: r, kind: regex, label: spam, pattern: '(?<!s)now(?=\\b)'}, "
                           "{name: n, kind: regex, label: ham, pattern: '(?<=buy )\\w+', negate: true}]")
    lfs = load_declarative(path)
    assert all(lf.timeout_s == 30.0 for lf in lfs)
    res = apply_lfs(store, "d", lfs)
    assert [x["engine"] for x in res["lfs"]] == ["python", "python"]
    ref = [regex_lf("r", r"(?<!s)now(?=\b)", "spam"), regex_lf("n", r"(?<=buy )\w+", "ham", negate=True)]
    assert res["lfs"][0]["fired"] == sum(ref[0].fires(t) for t in texts)
    assert res["lfs"][1]["fired"] == sum(ref[1].fires(t) for t in texts)


def test_backtracking_regex_is_stopped_and_the_process_stays_responsive(store, tmp_path):
    make_dataset(store, "d", ["a" * 30 + "b", "fine"], ["ham", "spam"])
    path = _file(tmp_path, "lfs: [{name: evil, kind: regex, label: spam, pattern: '(?=a)(a+)+$'}]")
    lfs = load_declarative(path, regex_timeout_s=1.0)
    outcome: dict = {}

    def run() -> None:
        try:
            apply_lfs(store, "d", lfs)
        except Exception as e:  # noqa: BLE001
            outcome["error"] = e

    worker = threading.Thread(target=run)
    t0 = time.perf_counter()
    worker.start()
    ticks = 0
    while worker.is_alive() and time.perf_counter() - t0 < 30:
        time.sleep(0.05)  # the GIL is free: this thread keeps ticking while the regex runs elsewhere
        ticks += 1
    worker.join(60)
    elapsed = time.perf_counter() - t0
    assert isinstance(outcome.get("error"), LFRuntimeError) and "ran past 1 s" in str(outcome["error"])
    assert elapsed < 10 and ticks >= 10
    assert store.one("SELECT count(*) FROM store.votes") == 0


def test_worker_answers_none_and_surrogates():
    assert search_in_worker("b", 0, ["ab", None, "x\udc00", ""], 10).tolist() == [1, -1, 0, 0]


def test_translation_budget_for_many_distinct_classes(tmp_path):
    items = "".join(f"  - {{name: r{i}, kind: regex, label: spam, pattern: '[\\u{0x400 + i:04x}-\\u{0x4ff + i:04x}]{{2}}x', "
                    "flags: [IGNORECASE]}\n" for i in range(200))
    lfs = load_declarative(_file(tmp_path, "lfs:\n" + items), regex_timeout_s=0.05)
    from labeling.lfs.apply import plan

    with pytest.raises(LFDefinitionError, match="translating"):
        plan(lfs, ["ham", "spam"])
