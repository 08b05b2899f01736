"""The DuckDB store: one file, one writer process.

The connection is opened locked down: no file or network access from SQL (`enable_external_access=false`), no
extension auto-install/load, configuration locked. All file IO (ingest, snapshots, exports) goes through Python
(pyarrow/polars), so the same connection can safely run data engineers' read-only SQL (see `curation.sql`).
"""

import contextlib
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import duckdb
import polars as pl
import pyarrow as pa

from curation import migrations, schema
from curation.errors import InputError, NotFound, StoreLocked
from curation.settings import Settings

log = logging.getLogger(__name__)

_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


TASKS = ("classification", "instruction")
# the default quality labels of an instruction dataset (class index = position: probs[0] is P(keep)); the one
# definition (labeling.lfs.INSTRUCTION_LABELS re-exports it)
INSTRUCTION_LABELS = ("keep", "drop")


def dataset_task(store: "Store", name: str) -> str:
    """'classification' or 'instruction'; NotFound (naming the known datasets) when there is no such dataset."""
    return store.dataset(name)["task"] or "classification"


def verdict_labels(ds: dict) -> list[str]:
    """The labels people give a dataset's records (annotations, gold labels, their review): the keep/drop verdict
    for an instruction dataset, else its label set. `ds`: a `Store.dataset(name)` row."""
    return list(INSTRUCTION_LABELS) if ds["task"] == "instruction" else list(ds["labels"] or [])


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Store:
    """Owns the DuckDB connection. Thread-safe: each call takes a cursor; writes go through `transaction()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: Settings):
        self.con = con
        self.settings = settings
        self.path = settings.db
        self._write_lock = threading.RLock()
        self.migrated: dict | None = None   # {from, to, steps, backup} when opening migrated the file

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings | None = None, *, db: str | Path | None = None) -> "Store":
        settings = settings or Settings()
        if db is not None:
            settings = settings.model_copy(update={"db": Path(db)})
        path = Path(settings.db)
        path.parent.mkdir(parents=True, exist_ok=True)
        limits = {"memory_limit": settings.db_memory_limit, "max_temp_directory_size": settings.db_max_temp_size}
        con = _connect(path, limits)
        try:
            con, migrated = _bring_up_to_date(con, path, settings.auto_migrate, limits)
        except BaseException:
            con.close()
            raise
        con.execute("SET lock_configuration = true")
        store = cls(con, settings)
        store.migrated = migrated
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        cur = self.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    def one(self, sql: str, params: list | None = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def frame(self, sql: str, params: list | None = None) -> pl.DataFrame:
        cur = self.cursor()
        try:
            return cur.sql(sql, params=params or None).pl()
        finally:
            cur.close()

    def arrow(self, sql: str, params: list | None = None) -> pa.Table:
        cur = self.cursor()
        try:
            return cur.sql(sql, params=params or None).to_arrow_table()
        finally:
            cur.close()

    # -- writing ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: a failure (or a killed process) leaves the store as it was."""
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                cur.close()
                raise
            cur.execute("COMMIT")
            cur.close()

    def next_id(self, cur: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
        return cur.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchall()[0][0]

    # -- datasets --------------------------------------------------------------------------------------
    def dataset(self, name: str) -> dict:
        rows = self.query("SELECT name, labels, contract_version, settings, created_at, task FROM store.datasets "
                          "WHERE name = ?", [name])
        if not rows:
            known = [r[0] for r in self.query("SELECT name FROM store.datasets ORDER BY name")]
            raise NotFound(f"no dataset {name!r}; known: {', '.join(known) or 'none (run `curate ingest`)'}")
        name, labels, contract, settings, created, task = rows[0]
        return {"name": name, "labels": list(labels), "contract_version": contract, "task": task,
                "settings": json.loads(settings) if settings else {}, "created_at": created}

    def datasets(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM main.datasets ORDER BY name")

    def ensure_dataset(self, cur: duckdb.DuckDBPyConnection, name: str, labels: list[str] | None,
                       contract_version: str, task: str = "classification") -> list[str]:
        """Create the dataset, or check the declared label set and the task against the stored ones. Returns the
        labels. An instruction dataset declared without labels gets the quality labels `keep`, `drop`."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or set(name) == {"."}:
            raise InputError(f"dataset name {name!r}: use 1-64 letters, digits, '_', '.', '-' (not only dots)")
        if task not in TASKS:
            raise InputError(f"task {task!r}: use one of {', '.join(TASKS)}")
        row = cur.execute("SELECT labels, task FROM store.datasets WHERE name = ?", [name]).fetchall()
        if row:
            stored, stored_task = list(row[0][0]), row[0][1]
            if task != stored_task:
                raise InputError(f"dataset {name!r} has task {stored_task!r}; it cannot take {task} records. "
                                 f"Ingest with --task {stored_task}, or use a new dataset name.")
            if labels and labels != stored:
                raise InputError(f"dataset {name!r} has labels {stored}; --labels {','.join(labels)} differs. "
                                 "Use the same labels in the same order, or a new dataset name.")
            return stored
        if labels is not None and len(set(labels)) != len(labels):
            raise InputError(f"--labels {','.join(labels)}: labels must be distinct")
        if not labels and task == "instruction":
            labels = list(INSTRUCTION_LABELS)
        cur.execute("INSERT INTO store.datasets (name, labels, contract_version, settings, created_at, task) "
                    "VALUES (?, ?, ?, NULL, ?, ?)",
                    [name, labels or [], contract_version, now(), task])
        return labels or []

    def set_dataset_settings(self, name: str, **values: Any) -> dict:
        current = self.dataset(name)["settings"] | values
        with self.transaction() as cur:
            cur.execute("UPDATE store.datasets SET settings = ? WHERE name = ?", [json.dumps(current), name])
        return current

    def records(self, dataset: str, columns: str = "*", where: str = "") -> pl.DataFrame:
        self.dataset(dataset)
        return self.frame(f"SELECT {columns} FROM main.records WHERE dataset = ? {where} ORDER BY record_id",
                       [dataset])


def _connect(path: Path, limits: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open locked down (`_CONFIG`) with the resource `limits` (memory_limit, max_temp_directory_size): DuckDB's
    limits are per database, so they bound user SQL and the writer alike; the configuration is locked after."""
    try:
        return duckdb.connect(str(path), config=_CONFIG | (limits or {}))
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise StoreLocked(_locked_message(path, str(e))) from None
        raise InputError(f"{path}: cannot open the store ({e}). Is it a DuckDB file?") from None


def _bring_up_to_date(con: duckdb.DuckDBPyConnection, path: Path, auto_migrate: bool, limits: dict | None = None
                      ) -> tuple[duckdb.DuckDBPyConnection, dict | None]:
    """Create a new store, or migrate an older one (after a backup copy), or refuse one newer than this code."""
    version, target = migrations.stored_version(con), schema.SCHEMA_VERSION
    if version is not None and version > target:
        raise migrations.SchemaError(f"{path} has schema version {version}, newer than this release's {target}; "
                                     "upgrade curate to open it")
    if version is None or version == target:
        for stmt in schema.ddl():
            con.execute(stmt)
        con.execute("INSERT OR REPLACE INTO store.meta VALUES ('schema_version', ?)", [str(target)])
        return con, None
    if not auto_migrate:
        raise migrations.SchemaError(f"{path} has schema version {version}; this release needs {target}. "
                                     f"Run `curate migrate --db {path}` (it keeps a backup copy first)")
    con.execute("CHECKPOINT")
    con.close()
    copy = migrations.backup(path, version)
    con = _connect(path, limits)
    steps = migrations.migrate(con, version, target, schema.ddl())
    log.warning("migrated %s from schema %d to %d (backup: %s)", path, version, target, copy)
    return con, {"from": version, "to": target, "steps": steps, "backup": str(copy)}


def equals_where(**filters: Any) -> tuple[str, list]:
    """` WHERE a = ? AND b = ?` for the filters that are not None (and their values); '' when none are."""
    given = {k: v for k, v in filters.items() if v is not None}
    clause = " WHERE " + " AND ".join(f"{k} = ?" for k in given) if given else ""
    return clause, list(given.values())


def _locked_message(path: Path, detail: str) -> str:
    pid = re.search(r"PID (\d+)", detail)
    who = f"process {pid.group(1)}" if pid else "another process"
    return (f"{path} is held for writing by {who} (DuckDB allows one writer). If it is `curate serve`, ask it "
            f"instead (`--server URL` or CURATE_SERVER_URL works for sql, datasets, round and jobs; the REST API "
            f"does the rest) or stop it; otherwise wait for that process to finish.")
