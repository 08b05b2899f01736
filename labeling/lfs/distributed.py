"""LF application on Ray (`apply_lfs(..., engine="ray")`): the records are written once as a partitioned Parquet
snapshot (`curation.engine.write_partitions`), each block runs the local engine's `label_matrix` on a private
in-memory DuckDB, and the blocks are merged by record_id; the caller writes the matrix into the store."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np

from curation.engine import (
    IO_TASK,
    Engine,
    ensure_ray,
    n_partitions,
    ray_stage,
    read_results,
    read_snapshot,
    resolve_engine,
    write_partitions,
)
from curation.errors import CurateError
from labeling.lfs.apply import MatrixResult, check_sql_exprs, label_matrix, plan, with_text_fields
from labeling.lfs.kinds import ABSTAIN, RECORD_COLUMNS


def _label_block(batch, *, lfs, labels, fault_tolerant):
    """One block through the local engine's `label_matrix` on a private in-memory DuckDB."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    try:
        con.register("blk_arrow", batch)   # a registered view is private to this connection; label_matrix
        con.execute("CREATE TABLE blk AS SELECT * FROM blk_arrow")   # reads through a cursor
        res = label_matrix(con, "SELECT * FROM blk", lfs, labels, fault_tolerant=fault_tolerant)
    except CurateError as e:   # Ray keeps only the text of a task's exception: hand it back as data
        first = int(batch.column("record_id")[0].as_py())
        err = {"module": type(e).__module__, "name": type(e).__qualname__, "message": str(e)}
        return pa.table({"record_id": pa.array([first], pa.int64()),
                         **{f"c{j}": pa.array([-1], pa.int16()) for j in range(len(lfs))},
                         "_meta": pa.array([json.dumps({"error": err, "first": first})], pa.string())})
    finally:
        con.close()
    cols = {"record_id": pa.array(res.record_ids, pa.int64())}
    for j in range(res.L.shape[1]):
        cols[f"c{j}"] = pa.array(res.L[:, j], pa.int16())
    meta = [None] * len(res.record_ids)
    if meta:
        meta[0] = json.dumps({"faults": res.faults, "examples": res.fault_examples,
                              "first": int(res.record_ids[0]), "seconds": res.seconds})
    cols["_meta"] = pa.array(meta, pa.string())
    return pa.table(cols)


def ray_label_matrix(con, relation: str, lfs: Sequence, labels: Sequence[str], *, fault_tolerant: bool = False,
                     batch_size: int = 20_000, engine: Engine | str | None = "ray", progress=None):
    """`label_matrix` on Ray: the records are written once as a partitioned Parquet snapshot, each block runs
    `label_matrix` (the same code as the local engine) and the blocks are merged by record_id. Equal to the
    local engine element for element; fault counts add up, the first fault example by record id is kept."""
    engine = resolve_engine(engine)
    ray = ensure_ray(engine)
    p = plan(lfs, labels)
    m = len(lfs)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    cur = con.cursor()
    try:
        relation = with_text_fields(cur, relation)
        check_sql_exprs(cur, p, relation)    # a bad LF fails here, before any worker starts
        cols = ", ".join(f'"{c}"' for c in RECORD_COLUMNS)
        tbl = cur.sql(f"SELECT {cols} FROM ({relation}) ORDER BY record_id").to_arrow_table()
    finally:
        cur.close()
    with ray_stage(engine, "lfs") as work:
        write_partitions(tbl, work / "in", n_partitions(engine, tbl.num_rows, ray))
        n = tbl.num_rows
        del tbl
        times["snapshot"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if n:
            ds = read_snapshot(ray, work / "in")
            ds.map_batches(_label_block, batch_size=batch_size, batch_format="pyarrow", num_cpus=0.5,
                           fn_kwargs={"lfs": list(lfs), "labels": list(labels), "fault_tolerant": fault_tolerant}
                           ).write_parquet(str(work / "out"), ray_remote_args=IO_TASK)
        out = read_results(work / "out") if n else None
        times["ray"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if out is None or out.num_rows == 0:
        ids = np.zeros(0, dtype=np.int64)
        L = np.full((0, m), ABSTAIN, dtype=np.int16)
        metas = []
    else:
        order = np.argsort(out.column("record_id").to_numpy(), kind="stable")
        ids = out.column("record_id").to_numpy()[order]
        L = np.full((len(ids), m), ABSTAIN, dtype=np.int16)
        for j in range(m):
            L[:, j] = out.column(f"c{j}").to_numpy()[order]
        metas = sorted((json.loads(s) for s in out.column("_meta").to_pylist() if s), key=lambda d: d["first"])
        errors = [d["error"] for d in metas if "error" in d]
        if errors:   # the first failing block in record order, as its own exception type
            import importlib

            err = errors[0]
            cls = getattr(importlib.import_module(err["module"]), err["name"], CurateError)
            raise cls(err["message"])
    faults = [0] * m
    examples: dict[str, str] = {}
    for d in metas:
        faults = [a + b for a, b in zip(faults, d["faults"])]
        for k, v in d["examples"].items():
            examples.setdefault(k, v)
    times["merge"] = time.perf_counter() - t0
    if progress:
        progress(len(ids))
    fired = [int(np.count_nonzero(L[:, j] != ABSTAIN)) for j in range(m)]
    return MatrixResult(ids, L, [lf.name for lf in lfs], p.engines, p.reasons, fired, faults, examples, times)
