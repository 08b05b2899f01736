"""The ray engine against the local engine, stage by stage, in ONE run (ratios), on this machine.

    .venv/bin/python -m benchmarks.bench_ray [--quick] [--lf-rows 200000] [--dedup-rows 200000]
                                             [--score-rows 4000] [--two-nodes] [--only lfs,dedup,score]

Stages (the same inputs on both engines; each result is checked equal to the local one):
- lfs: `label_matrix` with the Snorkel tutorial's keyword/regex LFs (one compiled DuckDB query) plus two Python
  LFs (a Python-path regex and a plain function), over `--lf-rows` sampled YouTube comments;
- dedup: `find_duplicates` (exact + MinHash LSH near-duplicates + components) over `--dedup-rows` comments;
- score: pool scoring with a tiny trained MiniLM LoRA run over `--score-rows` comments.

Each stage runs twice per engine; the figures are the second (warm) runs — the first pays Ray worker start-up and
module imports (numba kernels, DuckDB, the model per actor), printed as "cold".
Ray: a local loopback-only instance started by the product (`--two-nodes`: a head and a second node on 127.0.0.1
via `ray.cluster_utils.Cluster`, the simulated multi-node run of docs/SCALING.md). Start-up is timed apart from
the stages (a long-lived cluster pays it once). Per-worker throughput = rows / (stage seconds × workers), the
figure docs/SCALING.md extrapolates from. Goal: ray ≤ 1.5 × the local time on this 2-core box.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, figure, sample_comments

GOAL = 1.5


def _cpu_others() -> float:
    """CPU seconds used by every process on the machine (for the noise note)."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    return (parts[0] + parts[1] + parts[2]) / os.sysconf("SC_CLK_TCK")


def _start_ray(two_nodes: bool, num_cpus: int):
    os.environ.setdefault("RAY_TMPDIR", os.path.join(tempfile.gettempdir(), f"crb{os.getuid()}"))
    os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)
    from curation.engine import Engine, ensure_ray, loopback_env

    t0 = time.perf_counter()
    cluster = None
    if two_nodes:
        loopback_env(None)
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": num_cpus, "object_store_memory": 200 * 2**20, "include_dashboard": False})
        cluster.add_node(num_cpus=num_cpus, object_store_memory=200 * 2**20)
        engine = Engine(kind="ray", address=cluster.address)
    else:
        engine = Engine(kind="ray", num_cpus=num_cpus, object_store_bytes=300 * 2**20)
    ray = ensure_ray(engine)
    return engine, cluster, time.perf_counter() - t0, ray


def _twice(fn):
    """(result, cold seconds, warm seconds): the first call pays worker start-up and imports (numba kernels,
    DuckDB, the model), the second is what a long-lived cluster costs per run."""
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = fn()
    return out, cold, time.perf_counter() - t0


def _lfs():
    import re

    from labeling import keyword_lf, labeling_function, regex_lf

    @labeling_function(label="ham")
    def few_words(x):
        return len(x.text.split()) < 4

    return [keyword_lf("keyword_my", ["my"], "spam", whole_word=False),
            keyword_lf("keyword_subscribe", ["subscribe"], "spam", whole_word=False),
            keyword_lf("keyword_link", ["http"], "spam", whole_word=False),
            keyword_lf("keyword_please", ["please", "plz"], "spam", whole_word=False),
            keyword_lf("keyword_song", ["song"], "ham", whole_word=False),
            regex_lf("regex_check_out", r"check.*out", "spam", flags=re.IGNORECASE),
            regex_lf("python_lookbehind", r"(?<=my )channel", "spam"),     # RE2 cannot: the Python path
            few_words]


def bench_lfs(rows: int, engine, workers: float) -> dict:
    import duckdb
    import polars as pl

    from labeling.lfs.apply import label_matrix

    texts = sample_comments(rows, seed=1)["CONTENT"].to_list()
    texts = [f"{t} #{i}" for i, t in enumerate(texts)]              # unique texts: no cache helps either engine
    con = duckdb.connect()
    con.register("src", pl.DataFrame({"record_id": np.arange(rows, dtype=np.int64), "text": texts}))
    con.execute("CREATE TABLE r AS SELECT record_id, text, text AS prompt, NULL::VARCHAR AS response, "
                "NULL::BIGINT AS source_id, NULL::VARCHAR AS \"group\", NULL::VARCHAR AS meta, "
                "NULL::VARCHAR AS input_hash, 'ingest' AS origin, NULL::BIGINT AS parent_id FROM src")
    lfs = _lfs()
    local, _, local_s = _twice(lambda: label_matrix(con, "SELECT * FROM r", lfs, ["ham", "spam"]))
    ray, cold, ray_s = _twice(lambda: label_matrix(con, "SELECT * FROM r", lfs, ["ham", "spam"], engine=engine))
    equal = bool(np.array_equal(local.L, ray.L) and np.array_equal(local.record_ids, ray.record_ids))
    return {"rows": rows, "local_s": local_s, "ray_s": ray_s, "ray_cold_s": cold, "equal": equal,
            "ray_parts": ray.seconds,
            "local_parts": local.seconds, "workers": workers}


def bench_dedup(rows: int, engine, workers: float) -> dict:
    from curation.dedup import DedupConfig, find_duplicates

    df = sample_comments(rows, seed=2)
    rng = np.random.default_rng(0)
    texts = [t if rng.random() < 0.5 else f"{t} {rng.integers(1000)}" for t in df["CONTENT"].to_list()]
    cfg = DedupConfig()
    local, _, local_s = _twice(lambda: find_duplicates(texts, config=cfg))
    ray, cold, ray_s = _twice(lambda: find_duplicates(texts, config=cfg, engine=engine))
    return {"rows": rows, "unique_texts": local.stats["unique_texts"], "local_s": local_s, "ray_s": ray_s,
            "ray_cold_s": cold,
            "equal": bool(np.array_equal(local.component, ray.component)),
            "near_pairs": local.stats["near_pairs"], "ray_parts": ray.stats.get("ray_timings"),
            "local_parts": local.stats["timings"], "workers": workers}


def bench_score(rows: int, engine, workers: float, work: Path) -> dict:
    import polars as pl
    import torch

    from curation.settings import Settings
    from curation.store import Store
    from tests.test_training import build_store, wrench_rows
    from training.config import TrainConfig
    from training.distributed import ray_score
    from training.score import load_model
    from training.train import train

    store = Store.open(Settings(db=work / "score.duckdb"))
    try:
        build_store(store, rows=wrench_rows(96, 24, 24), leak_test=0)
        run = train(store, "yt", TrainConfig(epochs=1, max_length=64, batch_size=32, warmup_ratio=0.0))
    finally:
        store.close()
    run_dir = str(Path(run["adapter_path"]).parent)
    texts = sample_comments(rows, seed=3)["CONTENT"].to_list()
    pool = pl.DataFrame({"record_id": np.arange(rows, dtype=np.int64), "text": texts})
    torch.set_num_threads(int(workers))
    model = load_model(run_dir, "cpu")
    (p_local, _), _, local_s = _twice(lambda: model.predict(texts, embeddings=True))
    (p_ray, _), cold, ray_s = _twice(lambda: ray_score(run_dir, pool, engine=engine, device="cpu"))
    return {"rows": rows, "local_s": local_s, "ray_s": ray_s, "ray_cold_s": cold, "max_abs_diff": float(np.abs(p_local - p_ray).max()),
            "equal": bool(np.abs(p_local - p_ray).max() <= 1e-6), "workers": workers,
            "local_threads": int(workers)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lf-rows", type=int, default=200_000)
    ap.add_argument("--dedup-rows", type=int, default=200_000)
    ap.add_argument("--score-rows", type=int, default=4_000)
    ap.add_argument("--two-nodes", action="store_true", help="a head and a second node on 127.0.0.1")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs Ray offers (per node)")
    ap.add_argument("--only", default="lfs,dedup,score")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.lf_rows, a.dedup_rows, a.score_rows = 20_000, 20_000, 800
    logging.basicConfig(level=logging.WARNING)
    only = set(a.only.split(","))
    c0, w0 = _cpu_others(), time.perf_counter()
    engine, cluster, start_s, ray = _start_ray(a.two_nodes, a.cpus)
    workers = float(ray.cluster_resources().get("CPU", 1))
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    res: dict = {"ray_start_s": round(start_s, 2), "nodes": nodes, "ray_cpus": workers, "two_nodes": a.two_nodes}
    work = Path(tempfile.mkdtemp(prefix="bench_ray_", dir=WORK if WORK.exists() else None))
    try:
        if "lfs" in only:
            res["lfs"] = bench_lfs(a.lf_rows, engine, workers)
        if "dedup" in only:
            res["dedup"] = bench_dedup(a.dedup_rows, engine, workers)
        if "score" in only:
            res["score"] = bench_score(a.score_rows, engine, workers, work)
    finally:
        import ray as _ray

        _ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    wall = time.perf_counter() - w0
    res["machine_busy_cores"] = round((_cpu_others() - c0) / wall, 2)   # all processes, ours included
    figures = []
    for stage in ("lfs", "dedup", "score"):
        r = res.get(stage)
        if not r:
            continue
        ratio = r["ray_s"] / r["local_s"]
        r["ratio"] = round(ratio, 2)
        r["local_rows_per_s"] = round(r["rows"] / r["local_s"], 1)
        r["ray_rows_per_s"] = round(r["rows"] / r["ray_s"], 1)
        r["ray_rows_per_s_per_worker"] = round(r["rows"] / r["ray_s"] / r["workers"], 1)
        figures.append(figure(f"ray {stage}: time vs local", r["ray_s"], "s", baseline=r["local_s"],
                              baseline_name="local engine", ratio=ratio, goal=("ratio", "<=", GOAL),
                              note=f"{r['rows']:,} rows, {nodes} node(s), equal={r['equal']}"))
        print(f"{stage:<6} rows {r['rows']:>9,}  local {r['local_s']:7.2f} s  ray {r['ray_s']:7.2f} s "
              f"(cold {r['ray_cold_s']:6.2f} s)  "
              f"×{ratio:.2f}  ray {r['ray_rows_per_s_per_worker']:,.0f} rows/s/worker  equal={r['equal']}")
    print(f"ray start {start_s:.1f} s, {nodes} node(s), {workers:g} CPUs; machine busy "
          f"{res['machine_busy_cores']} cores on average")
    res["figures"] = figures
    if a.out:
        a.out.write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
