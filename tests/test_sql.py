import pytest

from curation.errors import SqlLimit, SqlRefused
from curation.schema import VIEWS
from curation.sql import SqlBusy, SqlGate, check_expression, check_statement, run_sql
from tests.helpers import make_dataset

REFUSED = [
    ("SELECT * FROM read_csv('/etc/passwd')", "file"),
    ("SELECT * FROM read_text('/etc/hostname')", "file"),
    ("SELECT * FROM glob('/*')", "file"),
    ("SELECT * FROM read_parquet('https://example.com/x.parquet')", "file"),
    ("COPY store.records TO 'out.csv'", "COPY"),
    ("COPY (SELECT 1) TO 'out.parquet'", "COPY"),
    ("ATTACH 'other.duckdb' AS o", "ATTACH"),
    ("DETACH o", "DETACH"),
    ("INSTALL httpfs", "extensions"),
    ("LOAD httpfs", "extensions"),
    ("SET threads = 1", "locked"),
    ("RESET threads", "locked"),
    ("PRAGMA threads = 1", "locked"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("CREATE TABLE t (a INT)", "read-only"),
    ("CREATE VIEW v AS SELECT 1", "read-only"),
    ("DROP VIEW records", "read-only"),
    ("ALTER TABLE store.records ADD COLUMN x INT", "read-only"),
    ("INSERT INTO store.records SELECT * FROM store.records", "read-only"),
    ("UPDATE store.records SET text = 'x'", "read-only"),
    ("DELETE FROM store.records", "read-only"),
    ("TRUNCATE store.records", "read-only"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT 1; DROP TABLE store.records", "one statement"),
    ("BEGIN TRANSACTION", "transactions"),
    ("CHECKPOINT", "CALL"),
    ("CALL pragma_version()", "CALL"),
    ("EXPORT DATABASE 'dump'", "EXPORT"),
    ("SELEC 1", "parse"),
]


@pytest.mark.parametrize("query, needle", REFUSED)
def test_refused(store, query, needle):
    make_dataset(store, "d", ["a", "b"], ["ham", "spam"])
    with pytest.raises(SqlRefused) as e:
        run_sql(store, query)
    assert needle.lower() in str(e.value).lower()
    assert store.one("SELECT count(*) FROM store.records") == 2
    assert store.one("SELECT current_setting('threads')") > 0


def test_select_with_describe_show(store):
    make_dataset(store, "d", ["hello", "world"], ["ham", None])
    r = run_sql(store, "WITH x AS (SELECT text, label FROM records) SELECT * FROM x ORDER BY text")
    assert r.columns == ["text", "label"] and r.rows == [("hello", "ham"), ("world", None)]
    assert r.to_json() == {"columns": ["text", "label"], "rows": [{"text": "hello", "label": "ham"},
                                                                  {"text": "world", "label": None}],
                           "truncated": False, "row_limit": 10000}
    assert "record_id" in [row[0] for row in run_sql(store, "DESCRIBE records").rows]
    assert {v for (v,) in run_sql(store, "SHOW TABLES").rows} >= set(VIEWS)


def test_every_view_is_queryable(store):
    for view in VIEWS:
        run_sql(store, f"SELECT * FROM {view} LIMIT 1")


def test_row_limit_truncates(store):
    r = run_sql(store, "SELECT * FROM range(100)", limit=10)
    assert len(r.rows) == 10 and r.truncated


def test_time_limit(store):
    with pytest.raises(SqlLimit, match="time limit"):
        run_sql(store, "SELECT count(*) FROM range(1000000000) a, range(1000) b", timeout_s=0.5)


def test_no_sequence_to_advance(store):
    # sequences are not transactional in DuckDB; the schema has none, so a SELECT cannot change state
    assert store.one("SELECT count(*) FROM duckdb_sequences()") == 0
    with pytest.raises(SqlRefused, match="nextval"):
        run_sql(store, "SELECT nextval('s')")


# -- issue 12, finding 3: bypasses of the sandbox (each ran, or gave a 500, before) ------------------------
BYPASSES = [
    "EXPLAIN ANALYZE DELETE FROM store.records",
    "EXPLAIN ANALYZE INSERT INTO store.records SELECT * FROM store.records",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN ANALYZE COPY (SELECT * FROM records) TO 'x.parquet'",
    "EXPLAIN ANALYZE CHECKPOINT",
    "EXPLAIN SELECT * FROM records",
    "WITH d AS (DELETE FROM store.records RETURNING *) SELECT count(*) FROM d",
    "WITH i AS (INSERT INTO store.gold_labels SELECT * FROM store.gold_labels RETURNING *) SELECT 1",
    "WITH u AS (UPDATE store.records SET text = 'x' RETURNING *) SELECT 1",
    "UPDATE EXTENSIONS",
    "SELECT * FROM store.records",
    "SELECT * FROM store.gold_labels",
    "FROM store.annotations",
    "SELECT * FROM records WHERE exists (FROM store.gold_labels)",
    "SELECT (SELECT count(*) FROM store.records)",
    "SELECT * FROM records r JOIN store.records s USING (record_id)",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_tables",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM read_blob('t.duckdb')",
    "SELECT * FROM read_text('t.duckdb')",
    "SELECT * FROM 't.duckdb'",
    "SELECT * FROM 'x.parquet'",
    "SELECT * FROM query('SELECT * FROM store.records')",
    "SELECT * FROM query_table('store.records')",
    "SELECT * FROM pragma_table_info('store.records')",
    "SELECT * FROM pragma_database_size()",
    "SELECT current_setting('temp_directory')",
    "SELECT getenv('HOME')",
    "SELECT getvariable('x')",
    "SELECT pg_get_viewdef(1)",
    "SELECT format_type(1, 1)",
    "SELECT current_query()",
    "SELECT system.main.lower('A')",
    "SELECT json_serialize_plan('SELECT * FROM store.records')",
    "SELECT * FROM records AT (VERSION => 1)",
    "SHOW ALL TABLES",
    "DESCRIBE store.records",
    "SUMMARIZE store.gold_labels",
    # a CTE name does not open a table from outside its scope
    "SELECT * FROM (WITH duckdb_tables AS (SELECT 1) SELECT 1), duckdb_tables",
    "WITH a AS (SELECT * FROM duckdb_tables), duckdb_tables AS (SELECT 1) SELECT * FROM a",
]


@pytest.mark.parametrize("query", BYPASSES)
def test_bypass_refused_before_it_runs(store, query):
    make_dataset(store, "d", ["a", "b"], ["ham", "spam"])
    with pytest.raises(SqlRefused, match="refused|parse"):
        run_sql(store, query)
    assert store.one("SELECT count(*) FROM store.records") == 2
    assert store.one("SELECT count(*) FROM store.gold_labels") == 2
    assert not list(store.path.parent.glob("*.parquet")) and not (store.path.parent / "x.parquet").exists()


ALLOWED = [
    "SELECT label, count(*) FROM records WHERE dataset = 'd' GROUP BY 1 ORDER BY 1",
    "FROM records SELECT text ORDER BY 1",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT sum(n) FROM t",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT * FROM b",
    "SELECT text FROM records UNION SELECT 'x' EXCEPT SELECT 'y'",
    "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(n, s)",
    "SELECT r.text, row_number() OVER (PARTITION BY r.label ORDER BY r.record_id) FROM records r",
    "SELECT list_filter([1, 2, 3], lambda x: x > 1), [1, 2][1], {'a': 1}.a, 'a' || 'b', 'ab' LIKE 'a%'",
    "SELECT CAST(1 AS VARCHAR), 1::INT, CASE WHEN true THEN 1 END, 2 BETWEEN 1 AND 3, coalesce(NULL, 1)",
    "SELECT * FROM range(3) JOIN generate_series(1, 2) g(i) ON true, unnest([1, 2]) u(x)",
    "SELECT text FROM records WHERE record_id IN (SELECT record_id FROM gold_labels)",
    "SELECT split_part('a,b', ',', 1), if(true, 1, 2), nullif(1, 1), json_extract('{\"a\": 1}', '$.a')",
    "SELECT count(*) FILTER (WHERE label = 'ham'), string_agg(text, ',' ORDER BY text) FROM records",
    "SELECT * FROM main.records LIMIT 1 OFFSET 1",
    "SELECT DISTINCT ON (label) label, text FROM records ORDER BY label, text",
    "SELECT regexp_matches(text, '^h'), lower(text), length(text), now() IS NOT NULL FROM records",
    "DESCRIBE records",
    "SUMMARIZE records",
    "SHOW TABLES",
]


@pytest.mark.parametrize("query", ALLOWED)
def test_plain_queries_still_run(store, query):
    make_dataset(store, "d", ["hello", "world"], ["ham", "spam"])
    run_sql(store, query)


def test_sql_lf_expression_rule():
    cols = ["text", "meta", "group"]
    check_expression("length(text) < 20 AND \"group\" IS NULL AND meta->>'$.k' = 'v'", cols)
    check_expression("list_any_value(list_filter(string_split(text, ' '), lambda w: length(w) > 3)) IS NOT NULL", cols)
    check_expression("row_number() OVER (PARTITION BY lower(text) ORDER BY meta) > 1", cols)  # over the records
    for bad in ["exists(FROM store.gold_labels)", "text IN (SELECT text FROM records)", "label = 'spam'",
                "count(*) > 1", "row_number() OVER (PARTITION BY label) = 1", "true) AS x FROM store.gold_labels --",
                "true) AS x, (SELECT 1", "current_setting('threads') IS NULL", "r.text = 'x'"]:
        with pytest.raises(SqlRefused):
            check_expression(bad, cols)


def test_update_extensions_is_a_clean_refusal():
    with pytest.raises(SqlRefused, match="not a plain query"):
        check_statement("UPDATE EXTENSIONS")


# -- issue 12, finding 4: bounded resources ----------------------------------------------------------------
def test_caps_lower_what_a_client_asks(tmp_path):
    from curation.settings import Settings
    from curation.store import Store

    with Store.open(Settings(db=tmp_path / "c.duckdb", sql_max_rows=50, sql_max_timeout_s=0.5)) as s:
        r = run_sql(s, "SELECT * FROM range(1000)", limit=1_000_000)
        assert len(r.rows) == 50 and r.truncated and r.row_limit == 50
        with pytest.raises(SqlLimit, match="time limit"):
            run_sql(s, "SELECT count(*) FROM range(1000000000) a, range(1000) b", timeout_s=3600)


def test_result_bytes_cap(tmp_path):
    from curation.settings import Settings
    from curation.store import Store

    with Store.open(Settings(db=tmp_path / "c.duckdb", sql_max_result_bytes=100_000)) as s:
        with pytest.raises(SqlLimit, match="over 100,000 bytes"):
            run_sql(s, "SELECT repeat('x', 1000) AS t FROM range(5000)")
        assert len(run_sql(s, "SELECT repeat('x', 10) FROM range(100)").rows) == 100


def test_memory_and_temp_limits_of_the_store(tmp_path):
    from curation.settings import Settings
    from curation.store import Store

    with Store.open(Settings(db=tmp_path / "c.duckdb", db_memory_limit="64MB", db_max_temp_size="8MB")) as s:
        assert s.one("SELECT current_setting('memory_limit')").startswith("61.0 MiB")
        with pytest.raises(SqlLimit, match="memory or temp"):
            run_sql(s, "SELECT i, repeat('x', 50) FROM range(3000000) t(i) ORDER BY random()")
        assert run_sql(s, "SELECT 1").rows == [(1,)]  # the store works on


def test_sql_gate_bounds_concurrent_queries():
    gate = SqlGate(2)
    with gate.slot(), gate.slot():
        assert gate.running == 2
        with pytest.raises(SqlBusy) as e, gate.slot():
            pass
        assert e.value.retry_after_s >= 1 and isinstance(e.value, SqlLimit)
    assert gate.running == 0
    with gate.slot():
        assert gate.try_acquire() and not gate.try_acquire()
        gate.release()


def test_the_store_file_itself_cannot_be_read(store):
    for fn in ("read_blob", "read_text", "read_duckdb"):
        with pytest.raises(SqlRefused, match="refused"):
            run_sql(store, f"SELECT * FROM {fn}('{store.path.resolve()}')")
    with pytest.raises(SqlRefused, match="refused"):
        run_sql(store, f"SELECT * FROM '{store.path.resolve()}'")
