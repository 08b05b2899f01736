"""Read-only SQL for data engineers.

Defence in depth:
1. The statement is parsed by DuckDB itself (`extract_statements`, then `json_serialize_sql`, DuckDB's parse tree
   as JSON), and run only when that tree is ONE plain query built from a positive list of parts (`check_statement`):
   query nodes SELECT / set operations / CTEs (whose bodies pass the same rule); table references to the
   documented views (`curation.schema.VIEWS`), to CTEs in scope, subqueries, joins, VALUES, and the table
   functions `range`, `generate_series`, `unnest`; expressions of the kinds a query needs, calling DuckDB's built-in
   scalar, aggregate and window functions (and macros that run no query) except those that read state outside the
   query (`current_setting`, `getvariable`, sequences, ...). Anything else — EXPLAIN (ANALYZE runs its statement),
   DML inside WITH, `store.*`, catalog functions (`duckdb_*()`, `pragma_*`), file readers (`read_blob`,
   `read_csv`, `glob`, ...), replacement scans of file names, time travel — is refused before it runs.
2. The store's connection has no file/network access, no extension loading, a locked configuration, a memory
   limit and a temp-size limit (curation.store).
3. It runs in a transaction that is always rolled back.
4. Rows, time and result bytes are capped server-side (`sql_max_rows`, `sql_max_timeout_s`,
   `sql_max_result_bytes`: a caller may ask for less, never more); `SqlGate` bounds concurrent queries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import duckdb
import polars as pl

from curation.errors import SqlLimit, SqlRefused
from curation.schema import VIEWS
from curation.store import Store

_REFUSALS = {
    "COPY": "COPY reads or writes files; use `curate export` or `--out FILE.parquet`",
    "ATTACH": "ATTACH opens other databases; only the store's views are available",
    "DETACH": "DETACH is not allowed",
    "LOAD": "extensions cannot be installed or loaded",
    "SET": "settings are locked",
    "VARIABLE_SET": "settings are locked",
    "PRAGMA": "PRAGMA changes settings; the sandbox shows the views only",
    "CALL": "CALL is not allowed; use SELECT * FROM fn()",
    "EXPORT": "EXPORT writes files; use `curate export`",
    "TRANSACTION": "transactions are managed by the sandbox",
    "EXPLAIN": "EXPLAIN is not available in the sandbox (EXPLAIN ANALYZE runs its statement)",
}

# -- the positive lists ---------------------------------------------------------------------------------
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "TABLE_FUNCTION", "SHOW_REF"}
_TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}
_EXPRESSIONS = {"CONSTANT", "COLUMN_REF", "FUNCTION", "WINDOW", "CAST", "CASE", "COMPARISON", "CONJUNCTION",
                "OPERATOR", "BETWEEN", "SUBQUERY", "STAR", "LAMBDA", "COLLATE", "POSITIONAL_REFERENCE", "TYPE"}
_MODIFIERS = {"ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER"}
# built-in functions that read state outside the query, change it, or stall: refused although built in
_STATEFUL = {"current_setting", "getvariable", "getenv", "nextval", "currval", "setval", "setseed", "current_query",
             "current_query_id", "current_database", "current_catalog", "current_schema", "current_schemas",
             "current_connection_id", "current_transaction_id", "in_search_path", "json_serialize_plan",
             "write_log", "sleep_ms", "pg_sleep", "get_block_size", "version", "parse_duckdb_log_message"}
_NO_SUBQUERY = "a subquery"


@functools.cache
def _builtin_functions() -> tuple[frozenset[str], frozenset[str]]:
    """(allowed function names, aggregate names): DuckDB's built-in scalar, aggregate and window functions and the
    built-in macros whose body runs no query, less `_STATEFUL` and internal ones. Read from a fresh in-memory
    database, so nothing a store defines is among them."""
    con = duckdb.connect(config={"enable_external_access": False, "autoload_known_extensions": False,
                                 "autoinstall_known_extensions": False})
    try:
        rows = con.execute("SELECT DISTINCT function_name, function_type, coalesce(macro_definition, '') "
                           "FROM duckdb_functions() WHERE internal AND function_type IN "
                           "('scalar', 'aggregate', 'window', 'macro')").fetchall()
    finally:
        con.close()
    allowed, aggregates = set(), set()
    for name, kind, body in rows:
        if kind == "macro" and "select" in body.lower():  # format_type, pg_get_viewdef: they query the catalog
            continue
        allowed.add(name.lower())
        if kind == "aggregate":
            aggregates.add(name.lower())
    bad = {n for n in allowed if n.startswith("__internal") or n in _STATEFUL}
    bad |= {n for n, kind, body in rows if kind == "macro" and any(s in body.lower() for s in _STATEFUL)}
    return frozenset(allowed - bad), frozenset(aggregates)


_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _parse_tree(sql: str) -> dict:
    """DuckDB's parse of a SELECT statement as JSON (`json_serialize_sql`), on a private in-memory database."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(config={"enable_external_access": False})
        cur = _parser.cursor()
    try:
        text = cur.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()[0][0]
    finally:
        cur.close()
    try:
        tree = json.loads(text)
    except (RecursionError, ValueError):
        raise SqlRefused("refused: the statement is nested too deeply") from None
    if tree.get("error"):
        raise SqlRefused(f"refused: {tree.get('error_message', 'not a plain query')}")
    return tree


def _names(cte_map: dict) -> list[str]:
    return [e["key"].lower() for e in (cte_map or {}).get("map", [])]


def _walk(tree: object, *, views: Iterable[str], columns: Iterable[str] | None = None) -> None:
    """Refuse any part of the parse tree outside the positive lists. `columns` set: the expression-only rule of
    SQL LFs (no table references, subqueries or plain aggregates; column references only to `columns`; window
    functions are allowed: they see the records the LF set is applied to, nothing else)."""
    allowed, aggregates = _builtin_functions()
    views = {v.lower() for v in views}
    cols = None if columns is None else {c.lower() for c in columns}
    stack: list[tuple[object, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, scope = stack.pop()
        if isinstance(node, list):
            stack.extend((x, scope) for x in node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if "cte_map" in node:  # a query node
            if kind not in _QUERY_NODES:
                raise SqlRefused(f"refused: {str(kind).replace('_QUERY_NODE', '').replace('_', ' ')} inside a "
                                 "query; the SQL sandbox is read-only and runs plain queries only")
            ctes = (node.get("cte_map") or {}).get("map", [])
            if ctes and cols is not None:
                raise SqlRefused(f"refused: {_NO_SUBQUERY} (WITH); an expression sees one record's columns only")
            names = _names(node.get("cte_map"))
            for i, entry in enumerate(ctes):  # a CTE sees the ones before it and itself (WITH RECURSIVE)
                stack.append((entry.get("value"), scope | frozenset(names[:i + 1])))
            inner = scope | frozenset(names)
            if kind == "RECURSIVE_CTE_NODE" and node.get("cte_name"):
                inner |= {node["cte_name"].lower()}
            stack.extend((v, inner) for k, v in node.items() if k != "cte_map")
        elif "class" in node:  # an expression
            cls = node["class"]
            if cls not in _EXPRESSIONS:
                raise SqlRefused(f"refused: expression {cls} is not available in the sandbox")
            if cols is not None:
                _check_record_expression(node, cls, cols, aggregates)
            if cls in ("FUNCTION", "WINDOW"):
                name = str(node.get("function_name", "")).lower()
                if node.get("catalog") or node.get("schema") not in (None, "", "main"):
                    raise SqlRefused(f"refused: {node.get('schema')}.{name}(): only built-in functions, unqualified")
                if name not in allowed:
                    why = ("it reads or changes state outside the query" if name in _STATEFUL
                           else "not a built-in scalar, aggregate or window function")
                    raise SqlRefused(f"refused: function {name}() is not available in the sandbox ({why})")
            if cls == "LAMBDA" and cols is not None:  # lambda parameters are columns inside the lambda
                params = node.get("lhs")
                extra = {n.lower() for d in _dicts(params) for n in d.get("column_names", [])[-1:]}
                _walk(node.get("expr"), views=views, columns=cols | extra)
                continue
            stack.extend((v, scope) for v in node.values())
        elif "sample" in node or kind in _TABLE_REFS:  # a table reference
            _check_table_ref(node, kind, scope, views, cols)
            stack.extend((v, scope) for k, v in node.items() if k != "function")
            if kind == "TABLE_FUNCTION":  # its arguments are expressions; the name was checked above
                stack.extend((v, scope) for v in (node.get("function") or {}).values())
        elif kind is not None and isinstance(kind, str) and kind.endswith("_MODIFIER"):
            if kind not in _MODIFIERS:
                raise SqlRefused(f"refused: {kind} is not available in the sandbox")
            stack.extend((v, scope) for v in node.values())
        else:
            stack.extend((v, scope) for v in node.values())


def _dicts(o: object) -> Iterator[dict]:
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from _dicts(v)
    elif isinstance(o, list):
        for v in o:
            yield from _dicts(v)


def _check_table_ref(node: dict, kind: str | None, scope: frozenset[str], views: set[str],
                     cols: set[str] | None) -> None:
    if cols is not None and kind != "EMPTY":
        raise SqlRefused(f"refused: {_NO_SUBQUERY} or table reference ({kind}); an expression sees one record's "
                         "columns only, never other tables")
    if kind not in _TABLE_REFS:
        raise SqlRefused(f"refused: {kind} is not available in the sandbox")
    if kind == "BASE_TABLE":
        name = str(node.get("table_name", "")).lower()
        schema, catalog = node.get("schema_name") or "", node.get("catalog_name") or ""
        where = ".".join(p for p in (catalog, schema, name) if p)
        if node.get("at_clause"):
            raise SqlRefused(f"refused: {where} AT (...): time travel is not available")
        if catalog or schema.lower() not in ("", "main") or (name not in views and
                                                              (schema or name not in scope)):
            raise SqlRefused(f"refused: {where} is not one of the documented views ({', '.join(sorted(views))}); "
                             "user SQL reads those views only (no store.* tables, catalog views or files)")
    elif kind == "TABLE_FUNCTION":
        fn = node.get("function") or {}
        name = str(fn.get("function_name", "")).lower()
        if name not in _TABLE_FUNCTIONS or fn.get("schema") or fn.get("catalog"):
            raise SqlRefused(f"refused: table function {name}() is not available: the sandbox reads no files and "
                             f"no catalog (only {', '.join(sorted(_TABLE_FUNCTIONS))}); query the views "
                             f"({', '.join(sorted(views))})")
    elif (kind == "SHOW_REF" and node.get("query") is None
          and str(node.get("table_name", "")).strip('"').lower() != "tables"):
        raise SqlRefused("refused: only SHOW TABLES, DESCRIBE and SUMMARIZE of the views are available")


def _check_record_expression(node: dict, cls: str, cols: set[str], aggregates: frozenset[str]) -> None:
    if cls == "SUBQUERY":
        raise SqlRefused(f"refused: {_NO_SUBQUERY}; an expression sees one record's columns only, never other "
                         "tables")
    if cls in ("STAR", "POSITIONAL_REFERENCE"):
        raise SqlRefused(f"refused: {cls.lower()}; an expression is computed from one record's columns only")
    if cls == "FUNCTION" and str(node.get("function_name", "")).lower() in aggregates:
        raise SqlRefused(f"refused: aggregate {node['function_name']}(); an expression sees one record only")
    if cls == "COLUMN_REF":
        names = node.get("column_names", [])
        if len(names) != 1 or names[0].lower() not in cols:
            raise SqlRefused(f"refused: column {'.'.join(names)!s} is not a record column; valid: "
                             f"{', '.join(sorted(cols))}")


def _statement_kind(sql: str) -> str:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as e:
        raise SqlRefused(f"SQL does not parse: {str(e).splitlines()[0]}") from None
    except (duckdb.Error, ValueError) as e:  # e.g. UPDATE EXTENSIONS: a statement type the client cannot name
        raise SqlRefused(f"refused: not a plain query ({str(e).splitlines()[0]}); the SQL sandbox is "
                         "read-only") from None
    if len(statements) != 1:
        raise SqlRefused(f"one statement at a time ({len(statements)} given); split them into separate queries")
    try:
        return statements[0].type.name
    except ValueError as e:
        raise SqlRefused(f"refused: not a plain query ({e})") from None


def check_statement(query: str, *, views: Iterable[str] = VIEWS) -> None:
    """Refuse anything but one plain query over `views`, with a message that says why and what to do instead."""
    kind = _statement_kind(query)
    if kind != "SELECT":
        reason = _REFUSALS.get(kind, f"{kind} statements change data or schema; the SQL sandbox is read-only")
        raise SqlRefused(f"refused: {reason}.")
    tree = _parse_tree(query)
    if len(tree.get("statements", [])) != 1:
        raise SqlRefused("one statement at a time; split them into separate queries")
    _walk(tree["statements"][0], views=views)


def check_expression(expr: str, columns: Iterable[str]) -> None:
    """Refuse anything but one per-record expression over `columns` (SQL LFs): the same parser-based rule as user
    SQL, plus no table references, subqueries or plain aggregates (a window over the applied records is fine)."""
    sql = f"SELECT ({expr}) AS x"
    if _statement_kind(sql) != "SELECT":
        raise SqlRefused("refused: not one expression")
    tree = _parse_tree(sql)
    stmts = tree.get("statements", [])
    node = stmts[0].get("node", {}) if len(stmts) == 1 else {}
    if (node.get("type") != "SELECT_NODE" or len(node.get("select_list", [])) != 1
            or (node.get("from_table") or {}).get("type") != "EMPTY"
            or any(node.get(k) for k in ("where_clause", "having", "qualify", "sample", "modifiers"))
            or node.get("group_expressions")):
        raise SqlRefused("refused: not one expression (it closes the parenthesis or adds clauses)")
    _walk(node["select_list"], views=(), columns=columns)


# -- running --------------------------------------------------------------------------------------------
class SqlBusy(SqlLimit):
    """All `sql_max_concurrent` query slots are taken; try again shortly (the API answers 429 + Retry-After)."""

    def __init__(self, capacity: int, retry_after_s: int = 1):
        super().__init__(f"{capacity} SQL queries are already running (CURATE_SQL_MAX_CONCURRENT); retry in "
                         f"{retry_after_s} s")
        self.capacity, self.retry_after_s = capacity, retry_after_s


class SqlGate:
    """Bounds concurrent user queries. `with gate.slot(): run_sql(...)` — raises `SqlBusy` at once when full
    (never queues: a queue of heavy queries would hold request threads). Thread-safe; one per server."""

    def __init__(self, max_concurrent: int):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent {max_concurrent}: give 1 or more")
        self.capacity = max_concurrent
        self._sem = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._running = 0

    @classmethod
    def from_settings(cls, settings) -> SqlGate:
        return cls(settings.sql_max_concurrent)

    @property
    def running(self) -> int:
        return self._running

    def try_acquire(self, timeout_s: float = 0.0) -> bool:
        """Take a slot (waiting up to `timeout_s`); False when none is free. Pair with `release()`."""
        ok = self._sem.acquire(timeout=timeout_s) if timeout_s > 0 else self._sem.acquire(blocking=False)
        if ok:
            with self._lock:
                self._running += 1
        return ok

    def release(self) -> None:
        with self._lock:
            self._running -= 1
        self._sem.release()

    @contextlib.contextmanager
    def slot(self, timeout_s: float = 0.0) -> Iterator[None]:
        if not self.try_acquire(timeout_s):
            raise SqlBusy(self.capacity)
        try:
            yield
        finally:
            self.release()


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


def _size(v: object) -> int:
    """Approximate bytes of a fetched value (strings and blobs by length, containers by their items)."""
    if isinstance(v, (str, bytes, bytearray)):
        return len(v) + 8
    if isinstance(v, (list, tuple)):
        return 8 + sum(_size(x) for x in v)
    if isinstance(v, dict):
        return 8 + sum(_size(k) + _size(x) for k, x in v.items())
    return 8


def effective_limits(settings, limit: int | None, timeout_s: float | None) -> tuple[int, float]:
    """(rows, seconds) a query runs under: the caller's values or the defaults, never above the server's caps."""
    rows = min(limit or settings.sql_row_limit, settings.sql_max_rows)
    secs = min(timeout_s or settings.sql_timeout_s, settings.sql_max_timeout_s)
    return max(rows, 1), secs


_FETCH = 1024


def run_sql(store: Store, query: str, *, limit: int | None = None, timeout_s: float | None = None) -> SqlResult:
    """Run one read-only query over the views. Rows beyond `limit` are cut (`truncated`); past `timeout_s` it is
    stopped; a result over `sql_max_result_bytes` stops with SqlLimit. Limits above the server's caps are lowered
    to the caps. Concurrency is bounded by the caller (`SqlGate`)."""
    check_statement(query)
    limit, timeout_s = effective_limits(store.settings, limit, timeout_s)
    max_bytes = store.settings.sql_max_result_bytes
    cur = store.cursor()
    timer = threading.Timer(timeout_s, cur.interrupt)
    rows: list[tuple] = []
    try:
        cur.execute("BEGIN TRANSACTION")
        timer.start()
        try:
            res = cur.execute(query)
            columns = [d[0] for d in res.description or []]
            size = 0
            while len(rows) <= limit:
                chunk = res.fetchmany(min(_FETCH, limit + 1 - len(rows)))
                if not chunk:
                    break
                size += sum(_size(r) for r in chunk)
                if size > max_bytes:
                    raise SqlLimit(f"the result is over {max_bytes:,} bytes (CURATE_SQL_MAX_RESULT_BYTES) after "
                                   f"{len(rows) + len(chunk):,} rows; select fewer columns or rows, or use "
                                   "`curate export` for bulk data")
                rows.extend(chunk)
        except duckdb.InterruptException:
            raise SqlLimit(f"query stopped after {timeout_s:g} s (time limit); add a WHERE or LIMIT, or raise "
                           f"CURATE_SQL_TIMEOUT_S (at most CURATE_SQL_MAX_TIMEOUT_S)") from None
        except duckdb.OutOfMemoryException as e:
            raise SqlLimit(f"query ran out of memory or temp space ({_first_line(e)}); the store's limits are "
                           "CURATE_DB_MEMORY_LIMIT and CURATE_DB_MAX_TEMP_SIZE — add a WHERE or LIMIT") from None
        except duckdb.PermissionException as e:
            raise SqlRefused(f"refused: {_first_line(e)} (the SQL sandbox has no file or network access)") from None
        except duckdb.Error as e:
            raise SqlRefused(_first_line(e)) from None
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()
    truncated = len(rows) > limit
    return SqlResult(columns, rows[:limit], truncated, limit)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]
