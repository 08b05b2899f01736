"""Read-only SQL for data engineers.

Defence in depth: (1) the store's connection has no file/network access, no extension loading, and a locked
configuration (curation.store); (2) a statement is parsed by DuckDB itself and only one SELECT (WITH, FROM-first,
DESCRIBE, SHOW, SUMMARIZE parse as SELECT) is run; (3) it runs in a transaction that is always rolled back (the
schema has no sequences, whose nextval no rollback would undo); (4) rows and time are limited.
"""

import threading
from dataclasses import dataclass

import duckdb
import polars as pl

from curation.errors import SqlLimit, SqlRefused
from curation.store import Store

_REFUSALS = {
    "COPY": "COPY reads or writes files; use `curate export` or `--out FILE.parquet`",
    "ATTACH": "ATTACH opens other databases; only the store's views are available",
    "DETACH": "DETACH is not allowed",
    "LOAD": "extensions cannot be installed or loaded",
    "SET": "settings are locked",
    "VARIABLE_SET": "settings are locked",
    "PRAGMA": "PRAGMA changes settings; use SELECT * FROM duckdb_settings() to read them",
    "CALL": "CALL is not allowed; use SELECT * FROM fn()",
    "EXPORT": "EXPORT writes files; use `curate export`",
    "TRANSACTION": "transactions are managed by the sandbox",
}


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool
    row_limit: int

    def to_json(self) -> dict:
        """`{"columns": [...], "rows": [{column: value}, ...]}` (plus whether the row limit cut it)."""
        return {"columns": self.columns, "rows": [dict(zip(self.columns, r)) for r in self.rows],
                "truncated": self.truncated, "row_limit": self.row_limit}

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=self.columns, orient="row", infer_schema_length=None)


def check_statement(query: str) -> None:
    """Refuse anything but one read-only statement, with a message that says why and what to do instead."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.ParserException as e:
        raise SqlRefused(f"SQL does not parse: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise SqlRefused(f"one statement at a time ({len(statements)} given); split them into separate queries")
    kind = statements[0].type.name
    if kind == "SELECT":
        return
    if kind == "EXPLAIN":
        return
    reason = _REFUSALS.get(kind, f"{kind} statements change data or schema; the SQL sandbox is read-only")
    raise SqlRefused(f"refused: {reason}.")


def run_sql(store: Store, query: str, *, limit: int | None = None, timeout_s: float | None = None) -> SqlResult:
    """Run one read-only statement. Rows beyond `limit` are cut (`truncated`); past `timeout_s` it is stopped."""
    check_statement(query)
    limit = limit or store.settings.sql_row_limit
    timeout_s = timeout_s or store.settings.sql_timeout_s
    cur = store.cursor()
    timer = threading.Timer(timeout_s, cur.interrupt)
    try:
        cur.execute("BEGIN TRANSACTION")
        timer.start()
        try:
            res = cur.execute(query)
            columns = [d[0] for d in res.description or []]
            rows = res.fetchmany(limit + 1)
        except duckdb.InterruptException:
            raise SqlLimit(f"query stopped after {timeout_s:g} s (time limit); add a WHERE or LIMIT, or raise "
                           f"CURATE_SQL_TIMEOUT_S") from None
        except duckdb.PermissionException as e:
            raise SqlRefused(f"refused: {_first_line(e)} (the SQL sandbox has no file or network access)") from None
        except duckdb.Error as e:
            raise SqlRefused(_first_line(e)) from None
    finally:
        timer.cancel()
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        cur.close()
    truncated = len(rows) > limit
    return SqlResult(columns, rows[:limit], truncated, limit)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]

