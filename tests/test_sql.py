import pytest

from curation.errors import SqlLimit, SqlRefused
from curation.schema import VIEWS
from curation.sql import run_sql
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
    with pytest.raises(SqlRefused, match="does not exist"):
        run_sql(store, "SELECT nextval('s')")
