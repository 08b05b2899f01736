"""The execution engine of the heavy stages: `local` (in-process, the default) or `ray` (a Ray cluster).

- `resolve_engine(engine, settings)`: `--engine local|ray|auto` and `CURATE_ENGINE` / `CURATE_RAY_ADDRESS`; auto is
  local unless an address is set.
- `ensure_ray(engine)`: joins the cluster at `address`, or starts a local Ray on loopback only (the environment
  switches from `../shared/notes/ray-on-these-machines.md`: without `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` Ray
  binds every interface). Never `ray stop` (it is machine-wide).
- Stage snapshots: the store stays the single writer. A stage writes its input once as an immutable Parquet
  snapshot split into enough files for every worker (`write_partitions`: one file is one block is one busy
  worker), Ray workers read it and write Parquet results, and the caller merges the results into the store in one
  transaction (the stage's own DuckDB edge: `apply_lfs`, `score`, `make_split`).
- The stages run the SAME pure core as the local engine, per block; each stage's Ray code lives next to it:
  `labeling.lfs.distributed.ray_label_matrix`, `training.distributed.ray_score` / `ray_run_training`,
  `training.tune` (Ray Tune), and here the curation stage:
  - `ray_near_pairs`: `curation.dedup` signatures → band_keys (per block) → a shuffle by band key →
    `run_pairs` per key group → `verify` per chunk of candidates; components stay on the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import CurateError, InputError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray", "auto")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class EngineError(CurateError):
    """Ray is missing, cannot be reached, or a stage failed on it."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Engine:
    """Where heavy stages run. `kind` is 'local' or 'ray' (auto is resolved). With ray: `address` None starts a
    local Ray on loopback with `num_cpus` (None: all cores); `scratch` holds the stage snapshots (a shared
    filesystem / object-store mount on a real cluster; default: a temporary folder)."""

    kind: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    object_store_bytes: int = 256 * 2**20
    scratch: Path | None = None
    parallelism: int | None = None   # Parquet files per stage snapshot; None: 4 x the cluster's CPUs

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"


def resolve_engine(engine: str | Engine | None = None, settings: Any = None) -> Engine:
    """The engine to use: an explicit `engine` wins, then `settings.engine` (CURATE_ENGINE); `auto` (the default)
    is ray when an address is configured (`--ray-address` / CURATE_RAY_ADDRESS), else local."""
    if isinstance(engine, Engine):
        return engine
    address = getattr(settings, "ray_address", None) if settings is not None else None
    kind = engine or (getattr(settings, "engine", None) if settings is not None else None) or "auto"
    if kind not in ENGINES:
        raise InputError(f"engine {kind!r}: unknown; valid: {', '.join(ENGINES)}")
    if kind == "auto":
        kind = "ray" if address else "local"
    scratch = None
    if settings is not None and kind == "ray":
        scratch = Path(settings.home) / "engine"
    return Engine(kind=kind, address=address or None, scratch=scratch)


def is_ray(engine: str | Engine | None) -> bool:
    """True when `engine` (an Engine or a name) asks for Ray; None / 'local' / 'auto' without address: False."""
    if engine is None:
        return False
    return resolve_engine(engine).is_ray


def _host(address: str) -> str:
    a = address.removeprefix("ray://")
    return a.rsplit(":", 1)[0].strip("[]") if ":" in a else a


def loopback_env(address: str | None = None) -> None:
    """The environment a loopback-only Ray needs (set before Ray starts; values already set are kept)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None or _host(address) in LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # node IP 127.0.0.1: loopback listeners
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")   # loopback only: no token file in the home directory


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise EngineError(f"--engine ray needs Ray: pip install 'ray[data,train,tune]==2.60.*' ({e})") from None
    return ray


def ensure_ray(engine: Engine | None = None):
    """Connect this process to Ray (once): join `engine.address`, or start a local loopback-only instance."""
    engine = engine or Engine(kind="ray")
    loopback_env(engine.address)
    ray = _import_ray()
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        # Ray reads this switch once, at import: if Ray was imported before `loopback_env`, set it here too
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    if not ray.is_initialized():
        t0 = time.perf_counter()
        try:
            if engine.address:
                ray.init(address=engine.address, log_to_driver=False, logging_level="WARNING")
            else:
                tmp = os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), "ray")
                ray.init(address="local", num_cpus=engine.num_cpus, include_dashboard=False,
                         object_store_memory=engine.object_store_bytes, _temp_dir=tmp,
                         log_to_driver=False, logging_level="WARNING")
        except Exception as e:  # noqa: BLE001 - any start/join failure becomes one clear error
            where = engine.address or "a local instance on 127.0.0.1"
            raise EngineError(f"cannot start/join Ray ({where}): {type(e).__name__}: {e}. Check "
                              "CURATE_RAY_ADDRESS (host:port of the head's GCS), or use --engine local") from None
        log.info("ray: connected to %s in %.1fs", engine.address or "a local instance", time.perf_counter() - t0)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray


def cluster_cpus(ray) -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus(ray) -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def status(engine: Engine, *, connect: bool = True) -> dict:
    """The configured engine and, for ray, the cluster: nodes (address, CPUs, GPUs, memory, object store)."""
    out: dict = {"engine": engine.kind, "address": engine.address}
    if not engine.is_ray:
        out["cpus"] = os.cpu_count()
        return out
    if not connect:
        return out
    ray = ensure_ray(engine)
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        r = n.get("Resources", {})
        nodes.append({"node_id": n["NodeID"][:12], "address": n.get("NodeManagerAddress"),
                      "cpus": r.get("CPU", 0.0), "gpus": r.get("GPU", 0.0),
                      "memory_gb": round(r.get("memory", 0.0) / 2**30, 2),
                      "object_store_gb": round(r.get("object_store_memory", 0.0) / 2**30, 3)})
    total = ray.cluster_resources()
    out |= {"started_here": engine.address is None, "nodes": nodes,
            "cpus": total.get("CPU", 0.0), "gpus": total.get("GPU", 0.0),
            "object_store_gb": round(total.get("object_store_memory", 0.0) / 2**30, 3)}
    return out


# -- stage snapshots ------------------------------------------------------------------------------------
def stage_dir(engine: Engine, stage: str) -> Path:
    """A fresh folder for one stage run's snapshot and results (removed by `cleanup`)."""
    root = engine.scratch or Path(tempfile.gettempdir()) / "curate-engine"
    path = Path(root) / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


MIN_ROWS_PER_PART = 25_000   # below this a block's task overhead (~0.1-1 s) outweighs its work


def n_partitions(engine: Engine, rows: int, ray=None, min_rows: int = MIN_ROWS_PER_PART) -> int:
    """Files per stage snapshot: enough for every worker (up to 4 per CPU, so a slow block does not leave the
    others idle), but no file under `min_rows` rows; `engine.parallelism` overrides."""
    if engine.parallelism:
        return max(1, min(engine.parallelism, rows))
    want = 4 * max(1, math.ceil(cluster_cpus(ray))) if ray is not None else 8
    return max(1, min(want, rows // max(1, min_rows)))


def write_partitions(table, folder: Path, parts: int) -> list[Path]:
    """An Arrow table (already in record order) as `parts` Parquet files of contiguous rows, part-00000 ..."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    n = table.num_rows
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    paths = []
    for i in range(parts):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if hi <= lo and n:
            continue
        p = folder / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(lo, hi - lo), p)
        paths.append(p)
    return paths


# read/write tasks take a quarter CPU: with an actor (0.5 CPU) on each 1-CPU node, a 1-CPU read task would fit
# nowhere and the pipeline would hang silently (the 2-CPU deadlock of the Ray note, per node)
IO_TASK = {"num_cpus": 0.25}


def read_snapshot(ray, folder: Path):
    """A stage snapshot as a Ray dataset of one block per file (Ray would merge small files into one read task,
    and one block is one busy worker)."""
    files = len(list(folder.glob("*.parquet")))
    return ray.data.read_parquet(str(folder), override_num_blocks=files, ray_remote_args=IO_TASK)


def read_results(folder: Path):
    """The Parquet files a stage's workers wrote, as one Arrow table (any order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files])


@contextlib.contextmanager
def ray_stage(engine: Engine, name: str) -> Iterator[Path]:
    """A stage's Ray work in its own folder (`stage_dir`), removed afterwards; a product error raised inside a Ray
    task surfaces as itself, not wrapped in Ray's error."""
    work = stage_dir(engine, name)
    try:
        yield work
    except Exception as e:
        cause = unwrap_error(e)
        if isinstance(cause, CurateError):
            raise cause from None
        raise
    finally:
        cleanup(work)


def unwrap_error(e: BaseException) -> BaseException:
    """The product's own error inside a Ray task error (`.cause` / `__cause__` chains), else `e`."""
    todo, seen = [e], 0
    while todo and seen < 20:
        x = todo.pop()
        seen += 1
        if isinstance(x, CurateError):
            return x
        todo += [c for c in (getattr(x, "cause", None), x.__cause__) if isinstance(c, BaseException)]
    return e


# -- near-duplicates --------------------------------------------------------------------------------------
def _sig_block(batch, *, config):
    """Signatures and band keys of one block of (row, normalised text): the core's shingle_hashes →
    minhash_signatures → band_keys."""
    import polars as pl
    import pyarrow as pa

    from curation.dedup import band_keys, minhash_signatures, shingle_hashes

    texts = pl.Series("t", batch.column("text").to_pylist(), dtype=pl.String)
    bands, rows = config.banding()
    tok, off = shingle_hashes(texts, config.shingle, config.shingle_size)
    sig = minhash_signatures(tok, off, bands * rows, config.seed)
    keys = band_keys(sig, bands, rows)                     # (bands, n)
    n = len(texts)
    return pa.table({
        "row": batch.column("row"),
        "sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), bands * rows),
        "keys": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(keys.T).ravel()), bands),
        "tok": pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(tok)),
        "valid": pa.array(np.diff(off) > 0) if n else pa.array([], pa.bool_()),
    })


def _band_entries(block, bands: int, mask: int, parts: int):
    """The map side of the band-key shuffle: (band, key high bits, row) of every valid row and band of one
    signature block, split into `parts` partitions by a hash of (band, key); one output per partition."""
    valid = block.column("valid").to_numpy(zero_copy_only=False)
    rows = block.column("row").to_numpy()[valid]
    k = np.asarray(block.column("keys").combine_chunks().flatten().to_numpy()).reshape(-1, bands)[valid]
    hi = (k & ~np.uint64(mask)).T.ravel()                  # band-major
    band = np.repeat(np.arange(bands, dtype=np.int32), len(rows))
    row = np.tile(rows, bands)
    with np.errstate(over="ignore"):
        h = (hi ^ (band.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
    part = ((h >> np.uint64(40)) % np.uint64(parts)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    cuts = np.searchsorted(part[order], np.arange(parts + 1))
    outs = [{"band": band[order[cuts[p]:cuts[p + 1]]], "hi": hi[order[cuts[p]:cuts[p + 1]]],
             "row": row[order[cuts[p]:cuts[p + 1]]]} for p in range(parts)]
    return outs if parts > 1 else outs[0]


def _reduce_pairs(max_bucket: int, *pieces):
    """The reduce side: one partition's entries from every block → its candidate pairs (`_bucket_pairs`)."""
    batch = {k: np.concatenate([p[k] for p in pieces]) for k in ("band", "hi", "row")}
    out = _bucket_pairs(batch, max_bucket=max_bucket)
    return out["a"], out["b"]


def _bucket_pairs(batch, *, max_bucket):
    """Candidate pairs of one shuffle partition: rows that share (band, key) form a bucket, and the core's
    `run_pairs` pairs them (all pairs, or a sliding window of `max_bucket` in row order for a large bucket)."""
    from curation.dedup import run_pairs

    band = np.asarray(batch["band"])
    hi = np.asarray(batch["hi"], dtype=np.uint64)
    row = np.asarray(batch["row"], dtype=np.int64)
    n = len(row)
    if n < 2:
        return {"a": np.zeros(0, np.int64), "b": np.zeros(0, np.int64)}
    order = np.lexsort((row, hi, band))
    band, hi, row = band[order], hi[order], row[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = (band[1:] != band[:-1]) | (hi[1:] != hi[:-1])
    gid = (np.cumsum(new) - 1).astype(np.uint64)
    nbits = max(1, (n - 1).bit_length())
    mask = np.uint64((1 << nbits) - 1)
    packed = (gid << np.uint64(nbits)) | np.arange(n, dtype=np.uint64)
    pos = run_pairs(packed, mask, max_bucket)
    return {"a": row[pos[:, 0]], "b": row[pos[:, 1]]}


def _verify_chunk(pairs, sig, tok, offsets, threshold, need):
    """The core's prefilter (signature agreement) and exact verification of one chunk of candidate pairs."""
    from curation.dedup import signature_agreement, verify

    cand = pairs[signature_agreement(sig, pairs) >= need] if need > 0 and len(pairs) else pairs
    near, sim, _ = verify(tok, offsets, cand, threshold)
    return cand, near, sim


def ray_near_pairs(norm_texts, config, engine: Engine | str | None = "ray"):
    """The near-duplicate edges of `find_duplicates` on Ray, for already normalised (and template-stripped)
    unique texts: (tok, offsets, near pairs (m, 2), similarity (m,), stats). Same seed, same banding, same
    buckets (the local engine's key high bits for the same number of texts), so the same pairs as local."""
    import polars as pl
    import pyarrow as pa

    from curation.dedup import n_docs, prefilter_estimate

    engine = resolve_engine(engine)
    ray = ensure_ray(engine)
    timings: dict[str, float] = {}
    s = norm_texts if isinstance(norm_texts, pl.Series) else pl.Series("t", list(norm_texts), dtype=pl.String)
    n = len(s)
    bands, rows = config.banding()
    P = bands * rows
    nbits = max(1, (n - 1).bit_length())
    mask = (1 << nbits) - 1
    with ray_stage(engine, "dedup") as work:
        t0 = time.perf_counter()
        tbl = pa.table({"row": pa.array(np.arange(n, dtype=np.int64)), "text": s.to_arrow()})
        parts = n_partitions(engine, n, ray)
        write_partitions(tbl, work / "in", parts)
        timings["snapshot_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sigs = read_snapshot(ray, work / "in").map_batches(
            _sig_block, batch_size=None, batch_format="pyarrow", num_cpus=0.5,
            fn_kwargs={"config": config}).materialize()
        timings["signatures_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the shuffle by band key: each signature block is split by hash(band, key) into `parts` pieces (map
        # tasks), each reduce task takes its piece of every block: every bucket lands whole in one reduce task
        blocks = sigs.to_arrow_refs()   # materialized: the blocks' refs, no second execution
        mapper = ray.remote(num_cpus=0.5, num_returns=parts)(_band_entries)
        pieces = [mapper.remote(b, bands, mask, parts) for b in blocks]
        if parts == 1:
            pieces = [[p] for p in pieces]
        reducer = ray.remote(num_cpus=0.5, num_returns=2)(_reduce_pairs)
        reduced = [reducer.remote(config.max_bucket, *[pc[p] for pc in pieces]) for p in range(parts)]
        got = ray.get([r for pair in reduced for r in pair])
        del pieces, reduced
        a_all = np.concatenate(got[0::2]) if got else np.zeros(0, np.int64)
        b_all = np.concatenate(got[1::2]) if got else np.zeros(0, np.int64)
        timings["lsh_shuffle_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = pa.concat_tables([t.select(["row", "sig", "tok"]) for t in ray.get(blocks)])
        del blocks, sigs
        order = np.argsort(out.column("row").to_numpy())
        out = out.take(pa.array(order))
        sig = np.asarray(out.column("sig").combine_chunks().flatten().to_numpy()).reshape(n, P).astype(np.uint32)
        tok_col = out.column("tok").combine_chunks()
        lens = np.diff(tok_col.offsets.to_numpy())
        tok = np.asarray(tok_col.flatten().to_numpy(), dtype=np.uint64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        valid = lens > 0
        flat = np.unique(a_all.astype(np.int64) * n + b_all.astype(np.int64))
        lsh_pairs = len(flat)
        cand_all = np.stack([flat // n, flat % n], axis=1)
        est = prefilter_estimate(config.threshold, P)
        need = math.ceil(est * P - 1e-9)
        timings["gather_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_remote = ray.remote(num_cpus=0.5)(_verify_chunk)
        refs = [ray.put(x) for x in (sig, tok, offsets)]
        chunks = np.array_split(cand_all, max(1, min(parts, len(cand_all) // 10_000 + 1)))
        res = ray.get([verify_remote.remote(c, *refs, config.threshold, need) for c in chunks])
        del refs
        cand = np.concatenate([r[0] for r in res]) if res else np.zeros((0, 2), np.int64)
        near = np.concatenate([r[1] for r in res]) if res else np.zeros((0, 2), np.int64)
        sim = np.concatenate([r[2] for r in res]) if res else np.zeros(0)
        timings["verify_s"] = time.perf_counter() - t0
    stats = {"lsh_docs": int(valid.sum()), "lsh_pairs": lsh_pairs, "prefilter_estimate": round(est, 4),
             "lsh_flagged": n_docs(cand), "candidates": len(cand), "near_pairs": len(near),
             "candidates_rejected": len(cand) - len(near), "engine": "ray", "ray_timings": timings,
             "partitions": parts}
    return tok, offsets, near.reshape(-1, 2).astype(np.int64), sim, stats
