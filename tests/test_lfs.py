"""Labeling functions: contract tests shared by every LF kind (compiled == Python), the RE2-vs-Python check,
property tests of the label matrix, faults, loading."""

import re
import textwrap

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeling.lfs import (
    ABSTAIN,
    RECORD_COLUMNS,
    LFDefinitionError,
    LFRuntimeError,
    Untranslatable,
    check_regex,
    keyword_lf,
    label_matrix,
    labeling_function,
    lf_set_version,
    load_lfs,
    regex_lf,
    regex_sql,
    sql_lf,
)
from tests.conftest import DATA

LABELS = ["ham", "spam"]

TRICKY = [
    "Check out my channel!", "CHECK OUT http://x.y", "check\nout", "my", "My", "mY,", "myself", "amy", "_my",
    "my_", "é my é", "émy", "myé", "my\u0301", "٣my", "my٣", "song", "SONG!!", "songs", "sub\u017fcribe",
    "\u212aelvin kelvin", "i am 2,126,492,636 viewer :D\ufeff", "", " ", "a\n", "a", "line1\nline2\n",
    "plz subscribe", "PLEASE", "p l e a s e", "tab\there", "nbsp\u00a0here", "one two three four five",
    "one two three four", "  one two three four  ", "one\u2003two\u2003three\u2003four\u2003five", "x" * 300,
    "Ünïcödé wörds ünd ümläüts", "日本語のコメント my", "emoji 😀 my 😀", "\x1c\x1d sep", "İstanbul", "ıi",
]


def youtube_texts(n=400):
    df = pl.concat([pl.read_csv(p) for p in sorted((DATA / "raw").glob("*.csv"))])
    return df["CONTENT"].to_list()[:n]


def make_con(texts, extra=None):
    con = duckdb.connect()
    n = len(texts)
    df = pl.DataFrame({"record_id": list(range(1, n + 1)), "source_id": [f"s{i}" for i in range(n)],
                       "text": texts, "group": [None] * n, "meta": [None] * n, "input_hash": [""] * n,
                       "origin": ["ingest"] * n, "parent_id": [None] * n},
                      schema_overrides={"group": pl.Utf8, "meta": pl.Utf8, "parent_id": pl.Int64})
    con.register("df", df)
    con.execute("CREATE TABLE recs AS SELECT * FROM df")
    return con


REL = "SELECT * FROM recs"
CORPUS = TRICKY + youtube_texts()


@pytest.fixture(scope="module")
def con():
    c = make_con(CORPUS)
    yield c
    c.close()


# -- contract: every compilable LF kind gives the same matrix in SQL and in Python -----------------------
COMPILABLE = [
    lambda e: keyword_lf("kw", ["my"], "spam", engine=e),
    lambda e: keyword_lf("kw_sub", ["my", "subscribe"], "spam", whole_word=False, engine=e),
    lambda e: keyword_lf("kw_case", ["My", "SONG"], "ham", case_sensitive=True, engine=e),
    lambda e: keyword_lf("kw_punct", ["c++", "a.b", "(x)"], 1, engine=e),
    lambda e: keyword_lf("kw_unicode", ["ümläüts", "kelvin", "subscribe"], "ham", engine=e),
    lambda e: regex_lf("check_out", r"check.*out", "spam", flags=re.IGNORECASE, engine=e),
    lambda e: regex_lf("check_out_s", r"check.*out", "spam", flags=re.IGNORECASE | re.DOTALL, engine=e),
    lambda e: regex_lf("short", r"(?:\S+\s+){4}\S", "ham", negate=True, engine=e),
    lambda e: regex_lf("digits", r"\d{3,}", "spam", engine=e),
    lambda e: regex_lf("digits_ascii", r"\d", "spam", flags=re.ASCII, engine=e),
    lambda e: regex_lf("word_edges", r"\b(my|song)\b", "spam", flags=re.IGNORECASE, engine=e),
    lambda e: regex_lf("word_ascii", r"\bmy\b", "spam", flags=re.ASCII | re.IGNORECASE, engine=e),
    lambda e: regex_lf("anchors", r"^a$", "ham", engine=e),
    lambda e: regex_lf("anchors_m", r"^line\d$", "ham", flags=re.MULTILINE, engine=e),
    lambda e: regex_lf("abs_anchors", r"\Aone.*five\Z", "ham", engine=e),
    lambda e: regex_lf("look", r"(?<![a-z])my(?=[ !,])", "spam", flags=re.IGNORECASE, engine=e),
    lambda e: regex_lf("classes", r"[^\W\d_]{12,}", "ham", engine=e),
    lambda e: regex_lf("inline_flags", r"(?i:CHECK)\s+(?-i:out)", "spam", engine=e),
    lambda e: regex_lf("lazy", r"h.+?p", "spam", engine=e),
    lambda e: regex_lf("alt_groups", r"(ht|f)tps?://(www\.)?\w+", "spam", engine=e),
    lambda e: regex_lf("nothing", r"[^\s\S]", "spam", engine=e),
    lambda e: regex_lf("empty_text", r"a*\B", "spam", flags=re.ASCII, engine=e),  # RE2's \B matches '', Python's not
    lambda e: regex_lf("matches_empty", r"^$", "ham", engine=e),
]


@pytest.mark.parametrize("make", COMPILABLE, ids=lambda m: m("auto").name)
def test_compiled_equals_python(con, make):
    auto, py = make("auto"), make("python")
    res_sql = label_matrix(con, REL, [auto], LABELS)
    assert res_sql.engines == ["sql"], res_sql.reasons
    res_py = label_matrix(con, REL, [py], LABELS)
    assert res_py.engines == ["python"]
    np.testing.assert_array_equal(res_sql.L, res_py.L)
    # and both equal re.search itself
    expect = np.asarray([(auto.compiled.search(t) is None) == auto.negate for t in CORPUS])
    np.testing.assert_array_equal(res_sql.L[:, 0] != ABSTAIN, expect)


def test_sql_lf_equals_python_lf(con):
    sql = sql_lf("short_sql", "length(text) < 12 AND text LIKE '%my%'", "ham")
    py = labeling_function("short_py", label="ham")(lambda x: len(x.text) < 12 and "my" in x.text)
    res = label_matrix(con, REL, [sql, py], LABELS)
    assert res.engines == ["sql", "python"]
    np.testing.assert_array_equal(res.L[:, 0], res.L[:, 1])
    assert res.fired[0] > 0


def test_keyword_semantics_documented():
    lf = keyword_lf("k", ["my"], "spam")
    fires = [t for t in ["my", "My!", "(my)", "my_", "amy", "myé", "é my"] if lf.fires(t)]
    assert fires == ["my", "My!", "(my)", "é my"]
    assert keyword_lf("k2", ["kelvin"], 1).fires("\u212aELVIN")  # Unicode case folding
    assert keyword_lf("k3", ["my"], 1, whole_word=False).fires("amyself")


# -- the RE2-vs-Python check ----------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,flags,why", [
    (r"(a)\1", 0, "backreference"),
    (r"a\bb", 0, "\\b"),
    (r"(?<=\w{2})x", 0, "lookaround"),
    (r"x(?!y)z", 0, "lookaround"),
    (r"a$b", 0, "$"),
    (r"a{1001}", 0, "1000"),
    (r"(?>ab)", 0, "atomic"),
    (r"a++", 0, "possessive"),
])
def test_untranslatable_is_detected(con, pattern, flags, why):
    re2, reason = check_regex(pattern, flags)
    assert re2 is None and why in reason
    lf = regex_lf("r", pattern, "spam", flags=flags)
    res = label_matrix(con, REL, [lf], LABELS)
    assert res.engines == ["python"] and why in res.reasons[0]
    expect = np.asarray([lf.compiled.search(t) is not None for t in CORPUS])
    np.testing.assert_array_equal(res.L[:, 0] != ABSTAIN, expect)
    with pytest.raises(LFDefinitionError, match="cannot run in DuckDB"):
        label_matrix(con, REL, [regex_lf("r", pattern, "spam", flags=flags, engine="sql")], LABELS)


ATOMS = ["a", "K", "k", "s", "\u017f", "é", "1", "٣", " ", "_", ".", r"\d", r"\w", r"\s", r"\W", r"\S",
         "[a-z]", "[^a ]", r"[\d_]", "\\n", "(?:ab|c)", "(a|K)"]
QUANTS = ["", "", "*", "+", "?", "{2}", "{1,3}", "*?"]
ALPHABET = "aAkK\u212as\u017fSé1٣ _\n.b c"


@st.composite
def regexes(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([r"\b", "^", r"\A", r"(?<!\w)", r"(?<=a)", ""])))
    for _ in range(draw(st.integers(1, 4))):
        parts.append(draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(QUANTS)))
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([r"\b", r"\B", "$", r"\Z", r"(?!\w)", r"(?=b)", ""])))
    flags = draw(st.sampled_from([0, re.IGNORECASE, re.ASCII, re.IGNORECASE | re.ASCII, re.DOTALL, re.MULTILINE, re.IGNORECASE | re.DOTALL]))
    return "".join(parts), flags


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes(), st.lists(st.text(alphabet=ALPHABET, max_size=8), min_size=1, max_size=15))
def test_property_translation_agrees_with_python(rx, texts):
    pattern, flags = rx
    try:
        cond = regex_sql(pattern, flags, column="t")
    except Untranslatable:
        return  # routed to Python: nothing to compare
    py = [re.search(pattern, t, flags) is not None for t in texts]
    c = duckdb.connect()
    got = [r[0] for r in c.execute(f"SELECT {cond} FROM unnest(?::VARCHAR[]) WITH ORDINALITY "
                                   "AS u(t, i) ORDER BY i", [texts]).fetchall()]
    c.close()
    assert got == py, (pattern, flags, cond)


# -- properties of the matrix ---------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=30), st.integers(2, 4))
def test_property_matrix_shape_and_values(texts, k):
    labels = [f"c{i}" for i in range(k)]
    lfs = [keyword_lf("a", ["a"], 0), regex_lf("b", r"\d", k - 1), sql_lf("c", "length(text) > 5", 1),
           labeling_function(name="d")(lambda x: (len(x.text) % (k + 1)) - 1)]
    con = make_con(texts)
    res = label_matrix(con, REL, lfs, labels)
    con.close()
    assert res.L.shape == (len(texts), len(lfs))
    assert res.L.min() >= -1 and res.L.max() <= k - 1
    assert list(res.record_ids) == list(range(1, len(texts) + 1))


# -- Python LFs: rows, faults, batches --------------------------------------------------------------------
def test_python_lf_faults_counted_or_raised():
    texts = ["ok", "boom", "fine", "boom again"]
    con = make_con(texts)

    @labeling_function()
    def fragile(x):
        if "boom" in x.text:
            raise ValueError("kaboom")
        return "ham"

    res = label_matrix(con, REL, [fragile], LABELS, fault_tolerant=True, batch_size=2)
    assert res.faults == [2] and res.fired == [2]
    assert "record 2" in res.fault_examples["fragile"] and "kaboom" in res.fault_examples["fragile"]
    with pytest.raises(LFRuntimeError, match=r"LF 'fragile' failed on record 2 .*ValueError: kaboom"):
        label_matrix(con, REL, [fragile], LABELS)


def test_python_lf_returns_names_indexes_or_abstain(con):
    @labeling_function()
    def multi(x):
        return "spam" if "http" in x.text else (0 if "song" in x.text else None)

    res = label_matrix(con, REL, [multi], LABELS, batch_size=7)
    col = res.L[:, 0]
    assert set(np.unique(col)) <= {-1, 0, 1} and (col == 1).any() and (col == 0).any()

    @labeling_function()
    def bad(x):
        return "eggs"

    with pytest.raises(LFRuntimeError, match="'eggs' is not in the dataset's label set"):
        label_matrix(con, REL, [bad], LABELS)


def test_row_fields_and_meta():
    con = make_con(["hello"])
    con.execute("""UPDATE recs SET meta = '{"author": "Ann"}', "group" = 'g1'""")
    seen = {}

    @labeling_function(label="ham")
    def look(x):
        seen.update(author=x.author, meta=x.meta, group=x.group, item=x["author"])
        return True

    label_matrix(con, REL, [look], LABELS)
    assert seen == {"author": "Ann", "meta": {"author": "Ann"}, "group": "g1", "item": "Ann"}


def test_bad_label_and_names(con):
    with pytest.raises(LFDefinitionError, match=r"label 'eggs' is not in the dataset's label set \['ham', 'spam'\]"):
        label_matrix(con, REL, [keyword_lf("k", ["x"], "eggs")], LABELS)
    with pytest.raises(LFDefinitionError, match="used twice"):
        label_matrix(con, REL, [keyword_lf("k", ["x"], 0), keyword_lf("k", ["y"], 0)], LABELS)
    with pytest.raises(LFDefinitionError, match="does not run over the records"):
        label_matrix(con, REL, [sql_lf("s", "no_such_column > 1", 0)], LABELS)
    with pytest.raises(LFDefinitionError, match="one boolean expression"):
        label_matrix(con, REL, [sql_lf("s", "true); DROP TABLE recs; VALUES (1", 0)], LABELS)
    with pytest.raises(LFDefinitionError, match="has a subquery"):
        label_matrix(con, REL, [sql_lf("s", "(SELECT count(*) FROM recs) > 0", 0)], LABELS)
    label_matrix(con, REL, [sql_lf("s", "text = 'select me'", 0)], LABELS)  # inside a string is fine
    with pytest.raises(LFDefinitionError, match="does not compile"):
        regex_lf("r", "(", 0)


# -- loading and versions -------------------------------------------------------------------------------
def test_load_lfs_file_and_version(tmp_path):
    f = tmp_path / "my_lfs.py"
    f.write_text(textwrap.dedent("""
        from labeling import keyword_lf, regex_lf, sql_lf, labeling_function
        a = keyword_lf("a", ["x"], "spam")
        b = sql_lf("b", "length(text) < 3", "ham")
        @labeling_function(label="ham")
        def c(x):
            return x.text == ""
    """))
    lfs = load_lfs(f)
    assert [lf.name for lf in lfs] == ["a", "b", "c"]
    assert [lf.kind for lf in lfs] == ["keyword", "sql", "python"]
    assert lfs[0].declared_at.endswith("my_lfs.py:3")
    v1 = lf_set_version(lfs)
    assert v1 == lf_set_version(load_lfs(f))
    f.write_text(f.read_text().replace('["x"]', '["y"]'))
    assert lf_set_version(load_lfs(f)) != v1
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(LFDefinitionError, match="declares no labeling functions"):
        load_lfs(tmp_path / "empty.py")
    (tmp_path / "broken.py").write_text("raise RuntimeError('nope')\n")
    with pytest.raises(LFDefinitionError, match="RuntimeError: nope"):
        load_lfs(tmp_path / "broken.py")


def test_record_columns_visible_to_sql_lfs(con):
    for col in RECORD_COLUMNS:
        label_matrix(con, REL, [sql_lf("c", f'"{col}" IS NOT NULL', 0)], LABELS)


def test_declarative_yaml_lfs_match_python_helpers(tmp_path, con):
    f = tmp_path / "lfs.yaml"
    f.write_text(textwrap.dedent("""
        lfs:
          - {name: my, kind: keyword, label: spam, keywords: [my, plz], whole_word: false}
          - {name: check, kind: regex, label: spam, pattern: "check.*out", flags: [IGNORECASE]}
          - {name: short, kind: sql, label: ham, expr: "length(text) < 10"}
    """))
    lfs = load_lfs(f)
    assert [lf.kind for lf in lfs] == ["keyword", "regex", "sql"] and lfs[1].declared_at.endswith("#lfs[1]")
    same = [keyword_lf("my", ["my", "plz"], "spam", whole_word=False),
            regex_lf("check", r"check.*out", "spam", flags=re.IGNORECASE), sql_lf("short", "length(text) < 10", "ham")]
    assert lf_set_version(lfs) == lf_set_version(same)
    np.testing.assert_array_equal(label_matrix(con, REL, lfs, LABELS).L, label_matrix(con, REL, same, LABELS).L)
    f.write_text("lfs:\n  - {name: p, kind: python, label: ham}\n")
    with pytest.raises(LFDefinitionError, match="kind 'python' unknown; valid: keyword, regex, sql"):
        load_lfs(f)
    f.write_text("lfs:\n  - {name: r, kind: regex, label: ham, pattern: x, flags: [NOPE]}\n")
    with pytest.raises(LFDefinitionError, match="unknown regex flags"):
        load_lfs(f)
