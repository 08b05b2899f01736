"""Scoring and training on Ray (`score(..., engine="ray")`, `train(..., engine="ray")`): the same local-engine code
per worker, the store stays the single writer.

- `ray_score`: an actor pool, each actor loads the run once (`training.score.load_model`) and calls
  `LoadedModel.predict`; one GPU per actor when the cluster has GPUs, half a CPU otherwise (1 CPU per actor
  deadlocks a 2-CPU cluster: the read tasks never get scheduled).
- `ray_run_training`: `training.train.run_training` per Ray Train `TorchTrainer` worker (DDP, equal train shards,
  rank 0 saves the adapter and reports the local metrics schema).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from curation.engine import (
    IO_TASK,
    Engine,
    cleanup,
    cluster_cpus,
    cluster_gpus,
    ensure_ray,
    n_partitions,
    ray_stage,
    read_results,
    read_snapshot,
    resolve_engine,
    stage_dir,
    write_partitions,
)
from curation.errors import InputError
from training.config import TrainConfig
from training.score import load_model
from training.train import TrainResult

log = logging.getLogger(__name__)


# -- pool scoring -----------------------------------------------------------------------------------------
class _Scorer:
    """A Ray actor: loads the run once, scores batches with the local engine's `LoadedModel.predict`."""

    def __init__(self, run_dir: str, device: str, batch_size: int | None, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(run_dir, device)
        self.batch_size = batch_size

    def __call__(self, batch):
        import pyarrow as pa

        texts = batch.column("text").to_pylist()
        probs, embs = self.model.predict(texts, embeddings=True, batch_size=self.batch_size)
        k = probs.shape[1]
        d = embs.shape[1] if embs is not None else 0
        cols = {"record_id": batch.column("record_id"),
                "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.astype(np.float32).ravel()), k)}
        if embs is not None:
            cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embs.astype(np.float32).ravel()), d)
        return pa.table(cols)


def ray_score(run_dir: str, pool, *, batch_size: int | None = None, device: str = "auto",
              engine: Engine | str | None = "ray", actors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embeddings of `pool` (a frame with record_id, text; any order) from an actor pool: one
    actor per GPU when the cluster has GPUs, else one per CPU at half a CPU each. Returned in `pool`'s order."""

    engine = resolve_engine(engine)
    ray = ensure_ray(engine)
    gpus = cluster_gpus(ray)
    cpus = cluster_cpus(ray)
    if device == "cuda" and not gpus:
        raise InputError("--device cuda: the Ray cluster has no GPU; use --device auto or cpu")
    use_gpu = gpus > 0 and device != "cpu"
    size = actors or (int(gpus) if use_gpu else max(1, int(cpus // 1)))
    res = {"num_gpus": 1} if use_gpu else {"num_cpus": 0.5}
    threads = None if use_gpu else max(1, int(cpus // size))
    tbl = pool.select(["record_id", "text"]).to_arrow() if hasattr(pool, "to_arrow") else pool
    n = tbl.num_rows
    work = stage_dir(engine, "score")
    try:
        write_partitions(tbl, work / "in", n_partitions(engine, n, ray, min_rows=256))
        read_snapshot(ray, work / "in").map_batches(
            _Scorer, batch_size=max(256, (batch_size or 128) * 4), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size),
            fn_constructor_kwargs={"run_dir": str(run_dir), "device": "cuda" if use_gpu else "cpu",
                                   "batch_size": batch_size, "threads": threads},
            **res).write_parquet(str(work / "out"), ray_remote_args=IO_TASK)
        out = read_results(work / "out")
    finally:
        cleanup(work)
    pos = {int(r): i for i, r in enumerate(tbl.column("record_id").to_pylist())}
    ids = out.column("record_id").to_pylist()
    order = np.empty(n, dtype=np.int64)
    for i, r in enumerate(ids):
        order[pos[int(r)]] = i
    k = out.schema.field("probs").type.list_size
    probs = np.asarray(out.column("probs").combine_chunks().flatten().to_numpy()).reshape(-1, k)[order]
    d = out.schema.field("embedding").type.list_size
    embs = np.asarray(out.column("embedding").combine_chunks().flatten().to_numpy()).reshape(-1, d)[order]
    return probs.astype(np.float32), embs.astype(np.float32)


# -- training: Ray Train TorchTrainer (DDP) -------------------------------------------------------------------
class _SavedDir:
    """A trained adapter / tokenizer already saved by the rank-0 worker: `save_pretrained` copies the folder
    (what `training.train.save_run` calls), so the driver never loads the model."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def save_pretrained(self, dest: str) -> None:
        shutil.copytree(self.path, dest, dirs_exist_ok=True)


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: the local engine's `run_training`, whose `fit` gets the model wrapped in DDP
    (`ray.train.torch.prepare_model`) and this rank's equal shard of the train split. Rank 0 saves the adapter
    and reports the run's history and metrics (the same schema as the local engine)."""
    import polars as pl
    import ray.train
    import torch
    from ray.train.torch import prepare_model

    import training.train as T

    torch.set_num_threads(cfg["threads"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    local_fit = T.fit

    def ddp_fit(model, train_ds, val_ds, config, **kw):
        n = (len(train_ds) // world) * world        # equal shards: every rank takes the same number of steps
        shard = train_ds.select(range(n)).shard(num_shards=world, index=rank, contiguous=False)
        history, best, stopped, seconds, seen = local_fit(prepare_model(model), shard, val_ds, config, **kw)
        return history, best, stopped, seconds, seen * world

    T.fit = ddp_fit                                  # this worker process only
    try:
        config = TrainConfig(**cfg["config"])
        frame = pl.read_parquet(cfg["frame"])
        result = T.run_training(frame, cfg["labels"], config)
    finally:
        T.fit = local_fit
    if rank != 0:
        ray.train.report({"rank": rank})
        return
    out = Path(tempfile.mkdtemp(prefix="rank0-"))
    result.model.save_pretrained(str(out / "adapter"))
    result.tokenizer.save_pretrained(str(out / "tokenizer"))
    meta = {"history": result.history, "best_epoch": result.best_epoch, "metrics": result.metrics,
            "data_counts": result.data_counts, "device": result.device, "target_modules": result.target_modules,
            "trainable_params": result.trainable_params, "train_seconds": result.train_seconds,
            "train_examples_per_s": result.train_examples_per_s, "stopped_early": result.stopped_early,
            "world_size": world}
    (out / "result.json").write_text(json.dumps(meta, default=str))
    ray.train.report({"rank": 0}, checkpoint=ray.train.Checkpoint.from_directory(str(out)))


def ray_run_training(frame, labels: list[str], config, *, engine: Engine | str | None = "ray",
                     num_workers: int | None = None, progress=None):
    """`training.train.run_training` as a Ray Train `TorchTrainer` (DDP, gloo on CPU / NCCL on GPU): one worker
    per GPU when the cluster has GPUs, else `num_workers` (default 2) at half a CPU each. Returns a
    `TrainResult` whose model/tokenizer are the saved folders (`save_run` copies them)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    engine = resolve_engine(engine)
    ray = ensure_ray(engine)
    gpus = int(cluster_gpus(ray))
    use_gpu = gpus > 0 and config.device != "cpu"
    workers = num_workers or (gpus if use_gpu else 2)
    cpus = cluster_cpus(ray)
    scaling = ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                            resources_per_worker={"GPU": 1} if use_gpu else {"CPU": 0.5})
    with ray_stage(engine, "train") as work:
        frame.write_parquet(work / "snapshot.parquet")
        cfg = {"config": config.model_dump() | {"device": "cuda" if use_gpu else "cpu"},
               "labels": list(labels), "frame": str(work / "snapshot.parquet"),
               "threads": max(1, int(cpus // workers))}
        trainer = TorchTrainer(_train_loop, train_loop_config=cfg, scaling_config=scaling,
                               run_config=RunConfig(storage_path=str(work / "ray_train"), name="train"))
        t0 = time.perf_counter()
        res = trainer.fit()
        log.info("ray train: %d workers in %.1fs", workers, time.perf_counter() - t0)
        if res.error:
            raise res.error
        ckpt = Path(tempfile.mkdtemp(prefix="curate-train-"))
        res.checkpoint.to_directory(str(ckpt))
    meta = json.loads((ckpt / "result.json").read_text())
    if progress:
        progress(1, 1)
    return TrainResult(_SavedDir(ckpt / "adapter"), _SavedDir(ckpt / "tokenizer"), list(labels), meta["history"],
                       meta["best_epoch"], meta["metrics"], meta["data_counts"], meta["device"],
                       meta["target_modules"], meta["trainable_params"], meta["train_seconds"],
                       meta["train_examples_per_s"], meta["stopped_early"],
                       extra={"engine": "ray", "world_size": meta["world_size"]})
