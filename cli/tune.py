"""`curate tune`: hyperparameter search for fine-tuning (Optuna locally, Ray Tune + Optuna on --engine ray)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    NoProgressOption,
    emit,
    frame_table,
    handle_errors,
    kv_table,
    open_store,
    progress_bar,
)
from cli.engine import EngineOption, RayAddressOption
from curation.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)


def _json_option(value: str | None, name: str) -> dict | None:
    if value is None:
        return None
    try:
        out = json.loads(value)
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: not JSON ({e}); e.g. '{{\"max_length\": 64}}'") from None
    if not isinstance(out, dict):
        raise InputError(f"{name}: use a JSON object")
    return out


@handle_errors
def tune(
    dataset: DatasetOption,
    trials: Annotated[int, typer.Option("--trials", help="configurations to try")] = 10,
    metric: Annotated[str, typer.Option("--metric", help="val.macro_f1 | val.accuracy | val.loss")] = "val.macro_f1",
    base: Annotated[str | None, typer.Option("--base", help="fixed training options (JSON of TrainConfig "
                                             "fields), e.g. '{\"max_length\": 64}'")] = None,
    space: Annotated[str | None, typer.Option("--space", help="search space (JSON): {\"lr\": [\"float\", 1e-4, "
                                              "1e-2, true], \"lora_r\": [\"categorical\", [4, 8]]}; default: "
                                              "lr, batch_size, epochs, lora_r")] = None,
    seed: Annotated[int, typer.Option(help="sampler seed")] = 0,
    png: Annotated[Path | None, typer.Option("--png", help="plot of the trials (default: runs/tune-*.png)")] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="do not store the best config as round_train")] = False,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    no_progress: NoProgressOption = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search learning rate, batch size, epochs and LoRA rank (TPE sampler, median pruning); every trial is a
    recorded run; the best config becomes the dataset's round_train setting; a PNG of the trials is written."""
    from cli.engine import engine_for
    from training.tune import tune as run_tune

    space_d = _json_option(space, "--space")
    if space_d is not None:
        space_d = {k: tuple(v) for k, v in space_d.items()}
    with open_store(db) as store, progress_bar("tune", trials, enabled=not (as_json or no_progress)) as bar:
        result = run_tune(store, dataset, trials=trials, metric=metric, base=_json_option(base, "--base"),
                          space=space_d, seed=seed, plot_path=png, store_best=not no_store,
                          engine=engine_for(engine, ray_address, db), progress=bar.update)
    emit(result, as_json, _render)


def _render(r: dict) -> None:
    import polars as pl

    kv_table({k: r[k] for k in ("dataset", "engine", "metric", "best_config", "snapshot_id", "seconds", "plot")
              if k in r} | {"best_run": r["best"]["run_id"], "best_value": r["best"]["value"]}, title="tune")
    frame_table(pl.DataFrame([{"trial": t["trial"], "state": t["state"], "value": t["value"],
                               "run_id": t["run_id"], **{k: str(v) for k, v in t["params"].items()}}
                              for t in r["trials"]]), title="trials")
