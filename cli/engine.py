"""`curate engine status`, and the `--engine` / `--ray-address` options the heavy commands share."""

from pathlib import Path
from typing import Annotated

import typer

from cli.common import DbOption, JsonOption, emit, frame_table, handle_errors, kv_table, out, settings

EngineOption = Annotated[str | None, typer.Option(
    "--engine", help="local | ray | auto: where the heavy stage runs (default: CURATE_ENGINE, auto = ray when "
    "CURATE_RAY_ADDRESS is set, else local)", show_default=False)]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="join this Ray cluster (host:port of its head; default CURATE_RAY_ADDRESS); "
    "--engine ray without one starts a local Ray on 127.0.0.1", show_default=False)]


def register(app: typer.Typer) -> None:
    engine_app = typer.Typer(help="The execution engine of the heavy stages (local or a Ray cluster).",
                             no_args_is_help=True)
    engine_app.command("status")(engine_status)
    app.add_typer(engine_app, name="engine")


def engine_for(engine: str | None, ray_address: str | None = None, db: Path | None = None):
    """The `curation.engine.Engine` a command runs on, or None for the local engine (the default)."""
    from curation.engine import resolve_engine

    s = settings(db)
    if ray_address:
        s = s.model_copy(update={"ray_address": ray_address})
    e = resolve_engine(engine, s)
    return e if e.is_ray else None


@handle_errors
def engine_status(
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The configured engine; with ray: the cluster's nodes, CPUs, GPUs and object store (starts a local
    loopback Ray when no address is set)."""
    import polars as pl

    from curation.engine import Engine, status

    e = engine_for(engine, ray_address, db) or Engine()
    st = status(e)
    if as_json:
        emit(st, True)
        return
    kv_table({k: v for k, v in st.items() if k != "nodes"}, title="engine")
    if st.get("nodes"):
        frame_table(pl.DataFrame(st["nodes"]), title="nodes")
    elif e.is_ray:
        out.print("no live nodes")
