"""A small client of a running `curate serve`, for the CLI when the server holds the DuckDB file.

    from api.client import ServerClient, server_client
    client = server_client(server_option)        # --server, else CURATE_SERVER_URL; None when neither is set
    client.sql("SELECT count(*) FROM records")    # same shape as curation.sql.SqlResult.to_json()

Instruction data: `ingest(dataset, path, task="instruction", layout=...)`, `apply_lfs(dataset,
"builtin:instruction-quality")`, `split(dataset, template_aware=True)`, `contamination(dataset, eval_path)`,
`train` / `score` / `select` (an instruction dataset trains SFT), `export(dataset, name, "chat-jsonl")`,
`records` and `revisions`. Job routes return the job; `wait=True` (default) waits and returns its result.

Errors keep the server's status and code (`ServerError.status`, `.code`); a server that cannot be reached says so
and what to do.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

from curation.errors import CurateError
from curation.settings import Settings


class ServerError(CurateError):
    """The server answered with an error (status and code kept) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code
        self.exit_code = 2 if status is not None and 400 <= status < 500 else 1


class ServerClient:
    """One client for the service's REST resources. Sends `X-API-Key` when an API key is configured."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ServerError(f"cannot reach the curate server at {self.base_url} ({type(e).__name__}: {e}); "
                              f"is `curate serve` running there? Unset CURATE_SERVER_URL / drop --server to use "
                              f"the DB file directly") from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                code, message = err.get("code"), err.get("message")
            except (ValueError, KeyError, TypeError):
                code, message = None, r.text[:500]
            raise ServerError(f"server {self.base_url}: {message} (HTTP {r.status_code}"
                              f"{', ' + code if code else ''})", r.status_code, code)
        return r.json()

    # -- resources -----------------------------------------------------------------------------------------
    def health(self) -> dict:
        return self.request("GET", "/health")

    def sql(self, query: str, *, limit: int | None = None, timeout_s: float | None = None) -> dict:
        body = {"query": query, "limit": limit, "timeout_s": timeout_s}
        return self.request("POST", "/sql", json={k: v for k, v in body.items() if v is not None})

    def datasets(self) -> list[dict]:
        items, offset = [], 0
        while offset is not None:
            page = self.request("GET", "/datasets", params={"limit": 1000, "offset": offset})
            items += page["items"]
            offset = page["next_offset"]
        return items

    def dataset(self, name: str) -> dict:
        return self.request("GET", f"/datasets/{name}")

    def records(self, dataset: str, *, limit: int = 50, offset: int = 0, **filters: Any) -> dict:
        """A page of records; instruction datasets add prompt, response, messages, revision, turns, tokens."""
        params = {"limit": limit, "offset": offset, **{k: v for k, v in filters.items() if v is not None}}
        return self.request("GET", f"/datasets/{dataset}/records", params=params)

    def revisions(self, dataset: str, record_id: int) -> dict:
        return self.request("GET", f"/datasets/{dataset}/records/{record_id}/revisions")

    def ingest(self, dataset: str, path: str | Path, **options: Any) -> dict:
        """Upload a file to ingest. Options: the form fields of POST /datasets/{name}/ingest (text_field,
        label_field, id_field, group_field, labels, format; task, layout, prompt_field, response_field,
        system_field, max_tokens, tokenizer for instruction files)."""
        return self._upload("POST", f"/datasets/{dataset}/ingest", path, options)

    def apply_lfs(self, dataset: str, lfs: str | Path, *, force: bool = False) -> dict:
        """Apply a declarative LF file (uploaded) or a built-in set (`builtin:NAME`, applied by name)."""
        if str(lfs).startswith("builtin:"):
            return self.request("POST", f"/datasets/{dataset}/lfs",
                                files={"lfs": (None, str(lfs)), "force": (None, str(force).lower())})
        return self._upload("POST", f"/datasets/{dataset}/lfs", lfs, {"force": force})

    def label_model(self, dataset: str, kind: str = "snorkel") -> dict:
        return self.request("POST", f"/datasets/{dataset}/label-model", json={"kind": kind})

    def split(self, dataset: str, **options: Any) -> dict:
        """A new split (SplitIn fields: ratios, group_by, near_dup_threshold, seed, from_column, template_aware)."""
        return self.request("POST", f"/datasets/{dataset}/splits",
                            json={k: v for k, v in options.items() if v is not None})

    def contamination(self, dataset: str, path: str | Path, *, wait: bool = True, **options: Any) -> dict:
        """Check `dataset` against the evaluation file `path` (options: ngram, min_overlap, format, text_field).
        wait: the finished job's result (the first flagged records; all: `contamination_flags`); else the job."""
        job = self._upload("POST", f"/datasets/{dataset}/contamination", path, options)
        return self.result(job) if wait else job

    def contamination_flags(self, dataset: str, *, check_id: str | None = None, limit: int = 100,
                            offset: int = 0) -> dict:
        params = {"limit": limit, "offset": offset, **({"check_id": check_id} if check_id else {})}
        return self.request("GET", f"/datasets/{dataset}/contamination", params=params)

    def export(self, dataset: str, name: str, fmt: str = "chat-jsonl", **options: Any) -> dict:
        body = {"name": name, "format": fmt, **{k: v for k, v in options.items() if v is not None}}
        return self.request("POST", f"/datasets/{dataset}/export", json=body)

    def train(self, dataset: str, config: dict | None = None, *, wait: bool = True) -> dict:
        """A training job (an instruction dataset trains an SFT LoRA adapter); wait: its result (the run)."""
        job = self.request("POST", "/runs", json={"dataset": dataset, "config": config or {}})
        return self.result(job) if wait else job

    def score(self, run_id: str, dataset: str | None = None, *, include_labeled: bool = False,
              wait: bool = True) -> dict:
        job = self.request("POST", f"/runs/{run_id}/score", json={"dataset": dataset,
                                                                  "include_labeled": include_labeled})
        return self.result(job) if wait else job

    def response_scores(self, run_id: str, *, order: str = "highest_loss", limit: int = 50, offset: int = 0) -> dict:
        return self.request("GET", f"/runs/{run_id}/scores", params={"order": order, "limit": limit,
                                                                     "offset": offset})

    def select(self, run_id: str, strategy: str | None = None, n: int = 50, *, seed: int = 0,
               round: int | None = None) -> dict:
        body = {"run_id": run_id, "strategy": strategy, "n": n, "seed": seed, "round": round}
        return self.request("POST", "/selections", json={k: v for k, v in body.items() if v is not None})

    def request_round(self, dataset: str, trigger: str = "cli") -> dict:
        return self.request("POST", f"/datasets/{dataset}/rounds", json={"trigger": trigger})

    def set_round_settings(self, dataset: str, **values: Any) -> dict:
        return self.request("PATCH", f"/datasets/{dataset}/settings", json=values)

    def rounds(self, dataset: str, limit: int = 50) -> dict:
        return self.request("GET", f"/datasets/{dataset}/rounds", params={"limit": limit})

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{job_id}")

    def jobs(self, *, kind: str | None = None, status: str | None = None, limit: int = 50) -> dict:
        params = {"kind": kind, "status": status, "limit": limit}
        return self.request("GET", "/jobs", params={k: v for k, v in params.items() if v is not None})

    def retry(self, job_id: str) -> dict:
        return self.request("POST", f"/jobs/{job_id}/retry")

    def result(self, job: dict, **wait_options: Any) -> Any:
        """Wait for `job` and return its result; a failed job is a ServerError with the job's error."""
        done = self.wait(job["job_id"], **wait_options)
        if done["status"] != "succeeded":
            raise ServerError(f"job {done['job_id']} ({done['kind']}) failed: {done.get('error')}", None, "job_failed")
        return done["result"]

    def _upload(self, method: str, path: str, file: str | Path, form: dict) -> Any:
        fields = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in form.items() if v is not None}
        file = Path(file)
        with file.open("rb") as f:
            return self.request(method, path, files={"file": (file.name, f)}, data=fields)

    def wait(self, job_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        """Poll a job until it ends; `on_progress(job)` after each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["status"] in ("succeeded", "failed"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ServerError(f"job {job_id} still {job['status']} after {timeout_s:g} s; follow it with "
                                  f"`curate jobs {job_id}`")
            time.sleep(poll_s)


def server_client(server: str | None = None, settings: Settings | None = None) -> ServerClient | None:
    """A client for `--server URL`, else CURATE_SERVER_URL; None when neither is set (use the DB file)."""
    settings = settings or Settings()
    url = server or settings.server_url
    if not url:
        return None
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return ServerClient(url, key)
