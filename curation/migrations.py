"""Ordered, transactional schema migrations: a store written by an older release opens with nothing lost.

`MIGRATIONS[v]` takes a store from version v-1 to v. New tables need no step (the schema creates what is missing);
new columns do. `Store.open` migrates automatically after copying the file to `<db>.v<old>.bak` (settings
`auto_migrate`), or refuses with the command to run (`curate migrate`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from curation.errors import CurateError

MIGRATIONS: dict[int, list[str]] = {
    2: [
        "ALTER TABLE store.datasets ADD COLUMN task TEXT DEFAULT 'classification'",
        "ALTER TABLE store.records ADD COLUMN messages JSON",
        "ALTER TABLE store.records ADD COLUMN response TEXT",
        "ALTER TABLE store.records ADD COLUMN tokens INTEGER",
        "ALTER TABLE store.gold_labels ADD COLUMN method TEXT",
        "ALTER TABLE store.gold_labels ADD COLUMN confidence DOUBLE",
        "ALTER TABLE store.runs ADD COLUMN task TEXT DEFAULT 'classification'",
        "ALTER TABLE store.runs ADD COLUMN contamination_allowed BOOLEAN",
        "ALTER TABLE store.selections ADD COLUMN details JSON",
        "ALTER TABLE store.annotations ADD COLUMN rating INTEGER",
        "ALTER TABLE store.annotations ADD COLUMN response TEXT",
    ],
}


class SchemaError(CurateError):
    """The store's schema version is not one this release can use as it is."""

    exit_code = 2


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The store's schema version; None for a new (empty) file."""
    has_meta = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'store' "
                           "AND table_name = 'meta'").fetchall()[0][0]
    if not has_meta:
        return None
    row = con.execute("SELECT value FROM store.meta WHERE key = 'schema_version'").fetchall()
    return int(row[0][0]) if row else None


def pending(version: int, target: int) -> list[int]:
    missing = [v for v in range(version + 1, target + 1) if v not in MIGRATIONS]
    if missing:
        raise SchemaError(f"no migration to schema version {missing[0]}; this release cannot open the store")
    return list(range(version + 1, target + 1))


def backup(path: Path, version: int) -> Path:
    """Copy the (closed, checkpointed) store file beside itself before migrating it."""
    dest = path.with_name(f"{path.name}.v{version}.bak")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.v{version}.bak{n}")
        n += 1
    shutil.copy2(path, dest)
    return dest


def migrate(con: duckdb.DuckDBPyConnection, version: int, target: int, ddl: list[str]) -> list[int]:
    """Run the steps from `version` to `target`, then the current DDL (new tables, views), in ONE transaction."""
    steps = pending(version, target)
    con.execute("BEGIN TRANSACTION")
    try:
        for v in steps:
            for stmt in MIGRATIONS[v]:
                con.execute(stmt)
        for stmt in ddl:
            con.execute(stmt)
        con.execute("INSERT OR REPLACE INTO store.meta VALUES ('schema_version', ?)", [str(target)])
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return steps
