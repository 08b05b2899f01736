"""`curate tune`: hyperparameter search for LoRA fine-tuning, on the local engine (plain Optuna) or on Ray
(Ray Tune with Optuna's sampler).

- The search space is declared (`SEARCH_SPACES`, per task) and can be narrowed or replaced (`space=`); every other
  TrainConfig field comes from `base` (e.g. max_length, the base model).
- Sampler: Optuna's TPE (seeded). Pruner: Optuna's median pruner locally (a trial whose val metric after epoch e
  is below the median of earlier trials at epoch e stops); on Ray, Tune's `MedianStoppingRule`, the same rule as a
  Tune scheduler (Optuna's pruners cannot drive Tune trials).
- Every trial is a recorded run in `store.runs` (a pruned trial: status `failed`, error `TrialPruned: ...`), all
  from ONE snapshot of the dataset, so the trials compare on the same data.
- The best configuration is stored as the dataset's `round_train` setting (rounds train with it) and a PNG of the
  trials is written.

On Ray the trials run in Ray workers (`training.train.run_training`, the same pure core, saving the adapter under
the runs folder); the writer (this process) records the runs afterwards, so DuckDB keeps one writer.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.errors import InputError

log = logging.getLogger(__name__)

METRICS = ("val.macro_f1", "val.accuracy", "val.loss")

# (kind, low, high[, log]) or ("categorical", [choices]); sensible ranges for a LoRA adapter on a small encoder
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "classification": {
        "lr": ("float", 5e-4, 2e-2, True),
        "batch_size": ("categorical", [8, 16, 32]),
        "epochs": ("int", 2, 6),
        "lora_r": ("categorical", [4, 8, 16]),
    },
}


class TrialPruned(Exception):
    """A trial stopped by the pruner (recorded as a failed run with this error)."""


def _metric_key(metric: str) -> tuple[str, str]:
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: unknown; valid: {', '.join(METRICS)}")
    name = metric.split(".", 1)[1]
    return f"val_{name}", ("minimize" if name == "loss" else "maximize")


def check_space(space: dict[str, tuple]) -> dict[str, tuple]:
    from training.config import TrainConfig

    fields = TrainConfig.model_fields
    for name, spec in space.items():
        if name not in fields:
            raise InputError(f"search space: {name!r} is not a training option; valid: {', '.join(fields)}")
        if not spec or spec[0] not in ("float", "int", "categorical"):
            raise InputError(f"search space {name!r}: {spec!r}; use ('float', lo, hi[, log]), ('int', lo, hi) "
                             "or ('categorical', [values])")
    return space


def suggest(trial, space: dict[str, tuple]) -> dict:
    """One configuration from an Optuna trial."""
    out = {}
    for name, spec in space.items():
        if spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=bool(spec[3]) if len(spec) > 3 else False)
        elif spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            out[name] = trial.suggest_categorical(name, list(spec[1]))
    return out


def _ray_space(space: dict[str, tuple]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        if spec[0] == "float":
            out[name] = FloatDistribution(spec[1], spec[2], log=bool(spec[3]) if len(spec) > 3 else False)
        elif spec[0] == "int":
            out[name] = IntDistribution(spec[1], spec[2])
        else:
            out[name] = CategoricalDistribution(list(spec[1]))
    return out


class _EpochHook:
    """A training progress callback that also sees each epoch's history row (`fit` calls `epoch_end`)."""

    def __init__(self, on_epoch: Callable[[dict], None], progress: Callable | None = None):
        self.on_epoch = on_epoch
        self.progress = progress

    def __call__(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total)

    def epoch_end(self, row: dict) -> None:
        self.on_epoch(row)


def _objective_value(run_or_history: list[dict], best_epoch: int, key: str) -> float:
    row = run_or_history[best_epoch - 1] if best_epoch >= 1 else run_or_history[-1]
    if key not in row:
        raise InputError(f"metric {key} is not in the run's history: the dataset needs a val split with labels "
                         "(`curate split`)")
    return float(row[key])


def tune(store, dataset: str, *, trials: int = 10, metric: str = "val.macro_f1", engine=None,
         base: dict | None = None, space: dict[str, tuple] | None = None, seed: int = 0,
         plot_path: str | Path | None = None, store_best: bool = True, timeout_s: float | None = None,
         progress: Callable[[int, int], None] | None = None) -> dict:
    """Search `trials` configurations on one snapshot of `dataset`; returns the trials (run ids, params,
    values, states), the best, and where the plot is. `engine`: None (local) or a Ray `Engine`."""
    from curation import versions
    from training.config import TrainConfig

    if trials < 1:
        raise InputError(f"--trials {trials}: use 1 or more")
    key, direction = _metric_key(metric)
    task = store.one("SELECT task FROM store.datasets WHERE name = ?", [dataset]) or "classification"
    if task not in SEARCH_SPACES and space is None:
        raise InputError(f"dataset {dataset!r} is a {task} dataset; `curate tune` searches classification runs "
                         f"(spaces: {', '.join(SEARCH_SPACES)})")
    space = check_space(dict(space or SEARCH_SPACES[task]))
    base = dict(base or {})
    base_cfg = TrainConfig(**base)   # validates the fixed options
    store.dataset(dataset)
    manifest = versions.snapshot(store, dataset)
    frame, manifest = versions.load_snapshot(manifest["path"])
    t0 = time.perf_counter()
    if engine is None:
        results = _tune_local(store, frame, manifest, base_cfg, space, trials, key, direction, seed, timeout_s,
                              progress)
    else:
        results = _tune_ray(store, frame, manifest, base_cfg, space, trials, key, direction, seed, engine,
                            progress)
    done = [t for t in results if t["state"] == "complete" and t["value"] is not None]
    if not done:
        raise InputError(f"no trial of {trials} completed; see `SELECT run_id, error FROM runs` "
                         f"({', '.join(sorted({t['state'] for t in results}))})")
    best = (max if direction == "maximize" else min)(done, key=lambda t: t["value"])
    best_config = base | best["params"]
    out = {"dataset": dataset, "engine": "ray" if engine is not None else "local", "metric": metric,
           "direction": direction, "trials": results, "best": best, "best_config": best_config,
           "snapshot_id": manifest.get("version_id"), "seconds": round(time.perf_counter() - t0, 2),
           "sampler": "optuna TPE", "pruner": "median (optuna)" if engine is None else "median stopping (ray tune)"}
    if store_best:
        store.set_dataset_settings(dataset, round_train=best_config)
        out["stored_as"] = "round_train"
    if plot_path is None:
        plot_path = Path(store.settings.runs_dir) / f"tune-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}.png"
    out["plot"] = str(plot_trials(results, plot_path, metric=metric, direction=direction,
                                  title=f"tune {dataset} ({out['engine']})"))
    log.info("tune %s: best %s = %.4f with %s (run %s)", dataset, metric, best["value"], best["params"],
             best["run_id"])
    return out


# -- local: plain Optuna ----------------------------------------------------------------------------------
def _tune_local(store, frame, manifest, base_cfg, space, trials, key, direction, seed, timeout_s, progress):
    import optuna

    from training.train import train_snapshot

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    metric_name = key.removeprefix("val_")
    records: list[dict] = []

    def objective(trial):
        params = suggest(trial, space)
        cfg = base_cfg.model_copy(update=params | {"early_stopping_metric": _stop_metric(metric_name)})
        cfg = type(base_cfg)(**cfg.model_dump())   # validate the sampled values

        def on_epoch(row: dict) -> None:
            if key in row:
                trial.report(float(row[key]), row["epoch"])
                if trial.should_prune():
                    raise TrialPruned(f"trial {trial.number} pruned after epoch {row['epoch']} "
                                      f"({key} {row[key]:.4f} below the median)")

        rec = {"trial": trial.number, "params": params, "run_id": None, "value": None, "state": "running",
               "epochs_run": 0}
        records.append(rec)
        before = {r[0] for r in store.query("SELECT run_id FROM store.runs WHERE dataset = ?",
                                            [manifest["dataset"]])}
        try:
            run = train_snapshot(store, frame, manifest, cfg, _EpochHook(on_epoch))
        except TrialPruned:
            rec["run_id"] = _new_run(store, manifest["dataset"], before)
            rec["state"] = "pruned"
            raise optuna.TrialPruned() from None
        except Exception as e:  # noqa: BLE001 - a failed trial is recorded (its run says why); the search goes on
            rec["run_id"] = _new_run(store, manifest["dataset"], before)
            rec["state"], rec["error"] = "failed", f"{type(e).__name__}: {e}"
            log.warning("trial %d failed: %s", trial.number, rec["error"])
            return float("nan")
        rec["run_id"] = run["run_id"]
        rec["value"] = _objective_value(run["history"], run["best_epoch"], key)
        rec["epochs_run"] = len(run["history"])
        rec["history"] = [r.get(key) for r in run["history"]]
        rec["state"] = "complete"
        trial.set_user_attr("run_id", run["run_id"])
        if progress:
            progress(len(records), trials)
        return rec["value"]

    study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=())
    return records


def _stop_metric(name: str) -> str:
    return {"macro_f1": "macro_f1", "accuracy": "accuracy", "loss": "loss"}[name]


def _new_run(store, dataset: str, before: set[str]) -> str | None:
    rows = [r[0] for r in store.query("SELECT run_id FROM store.runs WHERE dataset = ? ORDER BY started_at DESC",
                                      [dataset]) if r[0] not in before]
    return rows[0] if rows else None


# -- ray: Ray Tune with Optuna's sampler --------------------------------------------------------------------
def _ray_trial(config: dict, *, frame_path: str, labels: list[str], base: dict, key: str, runs_dir: str,
               threads: int) -> None:
    """One trial in a Ray worker: the pure training core, the adapter saved under the runs folder, one report
    per epoch (Tune's scheduler may stop it) and a final report with the run."""
    import polars as pl
    import torch
    from ray import tune as rtune

    from training.config import TrainConfig
    from training.train import new_run_id, run_training, save_run

    torch.set_num_threads(threads)
    params = {k: v for k, v in config.items()}
    cfg = TrainConfig(**(base | params))
    cfg = cfg.model_copy(update={"base_model": cfg.resolved_base_model()})
    frame = pl.read_parquet(frame_path)
    run_id = new_run_id()
    started = time.time()

    def on_epoch(row: dict) -> None:
        rtune.report({"epoch": row["epoch"], key: float(row.get(key, math.nan)), "run_id": run_id,
                      "done": False})

    try:
        result = run_training(frame, labels, cfg, _EpochHook(on_epoch))
    except Exception as e:  # noqa: BLE001 - reported to the driver, which records the failed run
        rtune.report({"run_id": run_id, "done": True, "error": f"{type(e).__name__}: {e}", "started": started,
                      "config_json": cfg.model_dump_json()})
        return
    run_dir = Path(runs_dir) / run_id
    meta = {"run_id": run_id, "base_model": cfg.base_model, "labels": labels, "config": cfg.model_dump(),
            "history": result.history, "best_epoch": result.best_epoch, "metrics": result.metrics,
            "data_counts": result.data_counts, "device": result.device}
    adapter = save_run(run_dir, result, cfg, meta)
    value = _objective_value(result.history, result.best_epoch, key)
    rtune.report({"epoch": len(result.history), key: value, "run_id": run_id, "done": True, "value": value,
                  "started": started, "adapter": str(adapter), "config_json": cfg.model_dump_json(),
                  "meta_json": json.dumps(meta, default=str)})


def _tune_ray(store, frame, manifest, base_cfg, space, trials, key, direction, seed, engine, progress):
    from ray import tune as rtune
    from ray.tune.schedulers import MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    from curation.engine import cleanup, cluster_cpus, ensure_ray, resolve_engine, stage_dir
    from training.train import check_leakage

    engine = resolve_engine(engine)
    ray = ensure_ray(engine)
    check_leakage(manifest, base_cfg)
    labels = list(manifest.get("labels") or store.dataset(manifest["dataset"])["labels"])
    mode = "max" if direction == "maximize" else "min"
    work = stage_dir(engine, "tune")
    frame_path = work / "snapshot.parquet"
    frame.write_parquet(frame_path)
    cpus = cluster_cpus(ray)
    concurrent = max(1, min(trials, int(cpus // 1)))
    per_trial = 0.5                       # never a whole CPU each on a 2-CPU cluster (see the Ray note)
    threads = max(1, int(cpus // concurrent))
    trainable = rtune.with_resources(
        rtune.with_parameters(_ray_trial, frame_path=str(frame_path), labels=labels,
                              base=base_cfg.model_dump(exclude={"early_stopping_metric"}) | {
                                  "early_stopping_metric": _stop_metric(key.removeprefix("val_"))},
                              key=key, runs_dir=str(Path(store.settings.runs_dir).resolve()), threads=threads),
        {"cpu": per_trial})
    searcher = OptunaSearch(space=_ray_space(space), metric=key, mode=mode, seed=seed)
    scheduler = MedianStoppingRule(time_attr="epoch", metric=key, mode=mode, grace_period=1,
                                   min_samples_required=2)
    tuner = rtune.Tuner(trainable, tune_config=rtune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=trials, max_concurrent_trials=concurrent),
        run_config=_run_config(work))
    try:
        grid = tuner.fit()
        records = []
        for i, res in enumerate(grid):
            last = res.metrics or {}
            params = {k: res.config[k] for k in space if k in (res.config or {})}
            rec = {"trial": i, "params": params, "run_id": last.get("run_id"), "value": None,
                   "epochs_run": int(last.get("epoch") or 0)}
            df = res.metrics_dataframe
            rec["history"] = [float(x) for x in df[key].tolist()] if df is not None and key in df else []
            if last.get("done") and "value" in last:
                rec["state"], rec["value"] = "complete", float(last["value"])
                rec["history"] = rec["history"][:-1]   # the final report repeats the best epoch's value
            elif last.get("error"):
                rec["state"], rec["error"] = "failed", last["error"]
            else:
                rec["state"] = "pruned"
            _record_ray_run(store, manifest, base_cfg, params, rec, last)
            records.append(rec)
            if progress:
                progress(len(records), trials)
    finally:
        cleanup(work)
    return records


def _run_config(work: Path):
    from ray.tune import RunConfig

    return RunConfig(storage_path=str(work / "ray_results"), name="tune", verbose=0)


def _record_ray_run(store, manifest: dict, base_cfg, params: dict, rec: dict, last: dict) -> None:
    """The writer records a trial that ran in a Ray worker as a run (succeeded, failed, or pruned = failed)."""
    import datetime as dt

    from curation.store import now
    from training.train import new_run_id

    run_id = rec["run_id"] or new_run_id()
    rec["run_id"] = run_id
    cfg_json = last.get("config_json") or base_cfg.model_copy(update=params).model_dump_json()
    started = dt.datetime.fromtimestamp(last["started"], dt.UTC).replace(tzinfo=None) if last.get("started") \
        else now()
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, snapshot_id, status, config, started_at) "
                    "VALUES (?, ?, ?, 'running', ?, ?)",
                    [run_id, manifest["dataset"], manifest.get("version_id"), cfg_json, started])
        if rec["state"] == "complete":
            meta = json.loads(last["meta_json"])
            cur.execute("UPDATE store.runs SET status = 'succeeded', data_counts = ?, history = ?, metrics = ?, "
                        "adapter_path = ?, finished_at = ? WHERE run_id = ?",
                        [json.dumps(meta["data_counts"]), json.dumps(meta["history"]),
                         json.dumps(meta["metrics"] | {"summary": {"best_epoch": meta["best_epoch"],
                                                                   "device": meta["device"], "engine": "ray"}}),
                         last["adapter"], now(), run_id])
        else:
            error = rec.get("error") or (f"TrialPruned: stopped by the median stopping rule after epoch "
                                         f"{rec['epochs_run']}")
            cur.execute("UPDATE store.runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                        [error, now(), run_id])


# -- the plot -----------------------------------------------------------------------------------------------
def plot_trials(trials: list[dict], path: str | Path, *, metric: str, direction: str, title: str) -> Path:
    """Left: each trial's value (pruned/failed marked) and the best so far. Right: the per-epoch curves."""
    from curation.plots import pyplot, save_figure

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    best, best_line = None, []
    colours = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red"}
    for t in trials:
        v = t["value"]
        if v is not None and not math.isnan(v):
            if best is None or (v > best if direction == "maximize" else v < best):
                best = v
            ax.scatter(t["trial"], v, color=colours["complete"], zorder=3)
        elif t["history"]:
            ax.scatter(t["trial"], t["history"][-1], color=colours.get(t["state"], "grey"), marker="x", zorder=3)
        best_line.append(best)
        h = [x for x in t.get("history") or [] if x is not None]
        if h:
            ax2.plot(range(1, len(h) + 1), h, marker="o", color=colours.get(t["state"], "grey"), alpha=0.7,
                     label=f"#{t['trial']} " + ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items()))
    ax.step(range(len(trials)), [b if b is not None else math.nan for b in best_line], where="post",
            color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(title + "  (x: pruned/failed)")
    ax.legend(loc="best", fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(metric)
    ax2.set_title("per-epoch val metric")
    if len(trials) <= 12:
        ax2.legend(loc="best", fontsize=6)
    return save_figure(fig, path)


def _fmt(v: Any) -> str:
    return f"{v:.2g}" if isinstance(v, float) else str(v)
