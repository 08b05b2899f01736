"""Where a command's data lives: a running `curate serve` that holds the DuckDB file, or the file itself.

`open_backend(server, db)` decides once: `--server URL` (or CURATE_SERVER_URL) gives the HTTP client, else the
file is opened here (lazily, on the first call that needs it). Both answer the same few methods, so a command
has no fork of its own.
"""

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from cli.common import open_store, settings
from curation.errors import InputError
from curation.sql import SqlResult
from curation.store import Store

if TYPE_CHECKING:
    from api.client import ServerClient


class Backend(Protocol):
    remote: bool   # True: a server holds the file (and runs the jobs)

    def datasets(self) -> pl.DataFrame: ...
    def sql(self, query: str, *, limit: int | None, timeout_s: float | None) -> SqlResult: ...
    def round_config(self, dataset: str) -> dict: ...
    def set_round_settings(self, dataset: str, **values: Any) -> None: ...
    def request_round(self, dataset: str) -> dict: ...
    def job(self, job_id: str) -> dict: ...
    def jobs(self, *, kind: str | None, status: str | None, limit: int) -> dict: ...
    def retry(self, job_id: str) -> dict: ...


class ServerBackend:
    """The server's REST API through `api.client.ServerClient`."""

    remote = True

    def __init__(self, client: "ServerClient"):
        self.client = client

    def datasets(self) -> pl.DataFrame:
        return pl.DataFrame(self.client.datasets())

    def sql(self, query: str, *, limit: int | None, timeout_s: float | None) -> SqlResult:
        body = self.client.sql(query, limit=limit, timeout_s=timeout_s)
        return SqlResult(body["columns"], [tuple(r[c] for c in body["columns"]) for r in body["rows"]],
                         body.get("truncated", False), body.get("row_limit", limit or 0))

    def round_config(self, dataset: str) -> dict:
        stored = self.client.request("GET", f"/datasets/{dataset}")["settings"]
        return {k: v for k, v in stored.items() if k.startswith("round_")}

    def set_round_settings(self, dataset: str, **values: Any) -> None:
        self.client.set_round_settings(dataset, **values)

    def request_round(self, dataset: str) -> dict:
        return self.client.request_round(dataset)

    def job(self, job_id: str) -> dict:
        return self.client.job(job_id)

    def jobs(self, *, kind: str | None, status: str | None, limit: int) -> dict:
        return self.client.jobs(kind=kind, status=status, limit=limit)

    def retry(self, job_id: str) -> dict:
        return self.client.retry(job_id)


class LocalBackend:
    """The DuckDB file, opened in this process; a round runs here with the same job code the server uses."""

    remote = False

    def __init__(self, db: Path | None):
        self._db = db
        self._runner: Any = None

    @functools.cached_property
    def store(self) -> Store:
        return open_store(self._db)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.shutdown()
        if "store" in self.__dict__:
            self.store.close()

    def datasets(self) -> pl.DataFrame:
        return self.store.datasets()

    def sql(self, query: str, *, limit: int | None, timeout_s: float | None) -> SqlResult:
        from curation.sql import run_sql

        return run_sql(self.store, query, limit=limit, timeout_s=timeout_s)

    def round_config(self, dataset: str) -> dict:
        from api.rounds import round_config

        return round_config(self.store, dataset)

    def set_round_settings(self, dataset: str, **values: Any) -> None:
        self.store.set_dataset_settings(dataset, **values)

    def request_round(self, dataset: str) -> dict:
        from api import jobs as jobs_mod
        from api import rounds as rounds_mod

        if self._runner is None:
            jobs_mod.recover_interrupted(self.store)
            self._runner = jobs_mod.JobRunner(self.store, studio=rounds_mod.studio_factory(self.store.settings))
        return rounds_mod.request_round(self.store, self._runner, dataset, trigger="cli")

    def job(self, job_id: str) -> dict:
        from api.jobs import get_job

        return get_job(self.store, job_id)

    def jobs(self, *, kind: str | None, status: str | None, limit: int) -> dict:
        from api.jobs import list_jobs

        items, total = list_jobs(self.store, kind=kind, status=status, limit=limit)
        return {"items": items, "total": total}

    def retry(self, job_id: str) -> dict:
        raise InputError("--retry runs the job on the server: start `curate serve` and pass --server (or set "
                         "CURATE_SERVER_URL); for a round, `curate round --dataset NAME` runs one here")


@contextlib.contextmanager
def open_backend(server: str | None, db: Path | None) -> Iterator[Backend]:
    """The server when `--server`/CURATE_SERVER_URL names one, else the DB file."""
    from api.client import server_client

    client = server_client(server, settings(db))
    if client is not None:
        with client:
            yield ServerBackend(client)
        return
    local = LocalBackend(db)
    try:
        yield local
    finally:
        local.close()
