"""Commands: `curate serve`, `curate round`, `curate round-config`, `curate jobs`.

`round`, `round-config` and `jobs` talk to a running server when `--server URL` or CURATE_SERVER_URL is set
(the server holds the DuckDB file then); otherwise they open the file themselves.
"""

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Annotated

import typer

from cli.backend import open_backend
from cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    ServerOption,
    console,
    emit,
    frame_table,
    handle_errors,
    kv_table,
    out,
    progress_bar,
    settings,
)
from curation.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("round")(round_)
    app.command("round-config")(round_config)
    app.command("jobs")(jobs)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to loopback addresses (e.g. localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(host: str, api_key_set: bool) -> None:
    if not api_key_set and not is_loopback(host):
        raise InputError(f"--host {host} is not a loopback address and CURATE_API_KEY is not set: anyone who can "
                         f"reach the port could change data. Set CURATE_API_KEY (and CURATE_WEBHOOK_SECRET for "
                         f"Label Studio), or bind 127.0.0.1.")


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="bind address; non-loopback needs CURATE_API_KEY")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
    db: DbOption = None,
) -> None:
    """Run the service (REST API, jobs, Label Studio webhook and ML backend under /ml). Docs at /docs."""
    import uvicorn

    from api.app import create_app, warm_imports
    from curation.store import Store

    s = settings(db)
    if s.api_key is None and not is_loopback(host):   # keys made with `curate keys` count too
        from api.keys import active_keys

        with Store.open(s) as st:
            check_bind(host, bool(active_keys(st)))
    else:
        check_bind(host, s.api_key is not None)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if s.api_key is None:
        console.print("[yellow]no CURATE_API_KEY: unless `curate keys` made keys, the API is open to local "
                      "processes (keyless loopback mode)[/]")
    # open the store here, so a held file is one clear error line (not a startup traceback from uvicorn)
    with Store.open(s) as store:
        console.print(f"curate serve: http://{host}:{port}  (docs /docs, ML backend /ml, DB {s.db})")
        warm_imports()
        uvicorn.run(create_app(s, store, bind=(host, port)), host=host, port=port, log_level=log_level,
                    access_log=log_level == "debug")


def _follow(job_id: str, get_job: Callable[[str], dict], enabled: bool) -> dict:
    """Poll a job with a progress bar (0-100) until it ends."""
    import time

    with progress_bar(f"job {job_id}", 100, enabled=enabled) as bar:
        while True:
            job = get_job(job_id)
            bar.update(100 * (job.get("progress") or 0))
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(0.5)


@handle_errors
def round_(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset to run a round of")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the round job until it ends")] = True,
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Request a round: pull annotations → snapshot+train → score → select → push to Label Studio."""
    with open_backend(server, db) as backend:
        if not (wait or backend.remote):
            raise InputError("--no-wait needs a server (--server or CURATE_SERVER_URL): without one the round runs "
                             "in this command")
        started = backend.request_round(dataset)
        job = _follow(started["job_id"], backend.job, not as_json) if wait else None
    result = {"created": started["created"], "round": started["round"], "job_id": started["job_id"]}
    if job is not None:
        result["job"] = job
    emit(result, as_json, _render_round)
    if job is not None and job["status"] == "failed":
        raise typer.Exit(1)


def _render_round(r: dict) -> None:
    rnd = r["round"]
    head = "queued" if r["created"] else "already running"
    out.print(f"round {rnd['round_id']} ({head}; job {r['job_id']})")
    job = r.get("job")
    if job:
        res = job.get("result") or {}
        kv_table({"status": job["status"], "error": job.get("error"), "run_id": res.get("run_id"),
                  "annotations_used": res.get("annotations_used"), "metrics": res.get("metrics"),
                  "selected": res.get("selected"), "tasks_pushed": res.get("tasks_pushed")}, title="round")


@handle_errors
def round_config(
    dataset: DatasetOption,
    every: Annotated[int | None, typer.Option("--every", help="new annotations that start a round (0: off)")] = None,
    size: Annotated[int | None, typer.Option("--size", help="tasks selected and pushed per round")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="active-learning strategy")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="base seed (a round adds its number)")] = None,
    train: Annotated[str | None, typer.Option("--train", help='training options as JSON, e.g. '
                                                              '\'{"epochs": 3, "allow_leakage": true}\'')] = None,
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show or set a dataset's round settings (round_every, round_size, round_strategy, round_seed, round_train)."""
    import json

    from api.rounds import check_train_config, validate_round_settings

    train_options = None
    if train is not None:
        try:
            train_options = json.loads(train)
        except ValueError as e:
            raise InputError(f"--train {train!r}: not JSON ({e}); e.g. '{{\"epochs\": 3}}'") from None
        check_train_config(train_options if isinstance(train_options, dict) else {})
    values = {k: v for k, v in {"round_every": every, "round_size": size, "round_strategy": strategy,
                                "round_seed": seed, "round_train": train_options}.items() if v is not None}
    validate_round_settings(values)
    with open_backend(server, db) as backend:
        if values:
            backend.set_round_settings(dataset, **values)
        cfg = backend.round_config(dataset)
    emit(cfg, as_json, lambda c: kv_table(c, title=f"round settings of {dataset}"))


@handle_errors
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="show this job (else list recent jobs)")] = None,
    retry: Annotated[bool, typer.Option("--retry", help="run the (failed) job again as a new job")] = False,
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed")] = None,
    kind: Annotated[str | None, typer.Option(help="train|score|round")] = None,
    limit: Annotated[int, typer.Option(help="jobs to list")] = 20,
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, show one, or retry a failed one (retry needs the server, which runs jobs)."""
    if retry and job_id is None:
        raise InputError("--retry needs a JOB_ID")
    with open_backend(server, db) as backend:
        if retry:
            result = backend.retry(job_id)
        elif job_id:
            result = backend.job(job_id)
        else:
            result = backend.jobs(kind=kind, status=status, limit=limit)
    if job_id:
        emit(result, as_json, lambda j: kv_table(j, title=f"job {j['job_id']}"))
    else:
        emit(result, as_json, _render_jobs)


def _render_jobs(page: dict) -> None:
    import polars as pl

    rows = [{k: j.get(k) for k in ("job_id", "kind", "status", "progress", "message", "error", "created_at")}
            for j in page["items"]]
    frame_table(pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(), f"jobs ({page['total']})")
