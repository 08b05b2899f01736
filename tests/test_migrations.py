"""Schema migrations: a store written by the release before (tests/data/store_v1.duckdb.gz, schema 1, made by
commit 12da2ac: two ingests with a quarantine, LF votes, a label model, a split, augmentation, snapshots, and rows
in every later table) opens with every row of every table still there."""

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from curation import migrations, schema
from curation.migrations import SchemaError
from curation.settings import Settings
from curation.store import Store

OLD = Path(__file__).parent / "data" / "store_v1.duckdb.gz"


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "old.duckdb"
    with gzip.open(OLD) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _counts(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'store'")
                  .fetchall()]
        return {t: con.execute(f"SELECT count(*) FROM store.{t}").fetchall()[0][0] for t in tables}
    finally:
        con.close()


def _columns(con) -> dict[str, list[str]]:
    rows = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE schema_name = 'store' "
                       "ORDER BY table_name, column_index").fetchall()
    out: dict[str, list[str]] = {}
    for t, c, d in rows:
        out.setdefault(t, []).append(f"{c} {d}")
    return out


def test_old_store_opens_migrated_with_every_row(old_store, tmp_path):
    before = _counts(old_store)
    assert before["records"] > 1000 and all(before[t] > 0 for t in ("votes", "splits", "annotations", "jobs"))
    store = Store.open(Settings(db=old_store))
    try:
        assert store.migrated["from"] == 1 and store.migrated["to"] == schema.SCHEMA_VERSION
        assert Path(store.migrated["backup"]).exists()
        assert store.one("SELECT value FROM store.meta WHERE key = 'schema_version'") == str(schema.SCHEMA_VERSION)
        assert store.one("SELECT DISTINCT task FROM store.datasets") == "classification"
        assert store.one("SELECT count(*) FROM main.records") == before["records"]
        migrated_columns = _columns(store.con)
    finally:
        store.close()
    after = _counts(old_store)
    assert {t: after[t] for t in before} == before
    # the backup is the old file as it was
    assert _counts(Path(store.migrated["backup"])) == before
    # a migrated store has the same tables and columns as a new one
    fresh = Store.open(Settings(db=tmp_path / "fresh.duckdb"))
    try:
        assert migrated_columns == _columns(fresh.con)
    finally:
        fresh.close()
    # opening again is a no-op
    again = Store.open(Settings(db=old_store))
    assert again.migrated is None
    again.close()


def test_refuses_without_auto_migrate_and_names_the_command(old_store):
    before = _counts(old_store)
    with pytest.raises(SchemaError, match="curate migrate"):
        Store.open(Settings(db=old_store, auto_migrate=False))
    assert _counts(old_store) == before


def test_a_failed_migration_leaves_the_store_as_it_was(old_store, monkeypatch):
    before = _counts(old_store)
    steps = dict(migrations.MIGRATIONS)
    steps[2] = [*steps[2], "ALTER TABLE store.no_such_table ADD COLUMN x INT"]
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    with pytest.raises(duckdb.Error):
        Store.open(Settings(db=old_store))
    con = duckdb.connect(str(old_store), read_only=True)
    try:
        assert con.execute("SELECT value FROM store.meta").fetchall() == [("1",)]
        assert "task" not in [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'datasets'").fetchall()]
    finally:
        con.close()
    assert _counts(old_store) == before


def test_refuses_a_newer_store(tmp_path):
    path = tmp_path / "new.duckdb"
    Store.open(Settings(db=path)).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE store.meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaError, match="newer"):
        Store.open(Settings(db=path))
