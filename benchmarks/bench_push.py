"""Pushing a selection to a real Label Studio 1.23.2: ours beside a raw `import_tasks` of the same tasks.

Setup: a fresh Label Studio (its own venv under .labelstudio/, started here on a free port, stopped at the end),
a store with N distinct YouTube comments, a run's predictions for all of them and a selection of all N.

Figures, each beside its baseline measured in the same run:
- push: `push_selection` (project, batched import of tasks whose data carries text/record_id/input_hash with the
  pre-annotation {model_version = run id, score = confidence, result = choice} plus the ordering prediction,
  the store's task map, one PATCH of the project) beside ONE raw `projects.import_tasks` of the same tasks with
  their pre-annotations into a fresh project (what a script would do with the SDK, with no ordering, no
  idempotency, no bookkeeping). Goal: ≤ 1.2×.
- re-push: the same selection again (idempotent: creates nothing) — no baseline (a raw import would duplicate).
- re-rank: a new run re-orders the N tasks already there (`rerank`: predictions import in batches + one PATCH)
  beside a raw `POST /api/projects/{id}/import/predictions` of the same predictions into the same project.
Each side is measured `--reps` times (3) in alternating order (raw, ours, ours, raw, ...); the best time is kept.
The machine is shared, so the ratios move by ±20% between runs; the push's own overhead (time outside Label
Studio's import requests) is printed as well, and does not depend on the load of the Label Studio process.
"""

import argparse
import logging
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, youtube
from curation.normalize import input_hash
from curation.settings import Settings
from curation.store import Store, now
from labeling import studio as ls
from labeling.studio import server as ls_server


def _store_with_selection(store: Store, n: int, seed: int) -> tuple[str, str, str]:
    import polars as pl

    comments = youtube()["CONTENT"].to_list()
    rng = np.random.default_rng(seed)
    tag = uuid.uuid4().hex[:8]
    texts = [f"{comments[i]} #{tag}-{k}" for k, i in enumerate(rng.integers(0, len(comments), n))]
    name, run, sel = f"bench_{tag}", f"run_{tag}", f"sel_{tag}"
    p = rng.uniform(0.02, 0.98, n)
    with store.transaction() as cur:
        store.ensure_dataset(cur, name, ["ham", "spam"], "bench")
        start = store.next_id(cur, "store.records", "record_id")
        ids = list(range(start, start + n))
        frame = pl.DataFrame({"record_id": ids, "text": texts, "input_hash": [input_hash(t) for t in texts],
                              "p": p, "rank": np.argsort(np.argsort(-np.abs(p - 0.5)))[::-1].tolist()})
        cur.register("bench_rows", frame)
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, origin, parent_id, ingest_id, source_row, ingested_at) SELECT record_id, ?, NULL, text, NULL, NULL, input_hash, 'ingest', "
                    "NULL, NULL, NULL, ? FROM bench_rows", [name, now()])
        cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, scored_at) "
                    "SELECT ?, record_id, [1 - p, p], CASE WHEN p >= 0.5 THEN 'spam' ELSE 'ham' END, "
                    "greatest(p, 1 - p), ? FROM bench_rows", [run, now()])
        cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, score, rank, created_at) SELECT ?, ?, 1, ?, record_id, 'least_confidence', NULL, rank, ? "
                    "FROM bench_rows", [sel, name, run, now()])
        cur.unregister("bench_rows")
    return name, run, sel


def _raw_tasks(store: Store, sel: str, run: str) -> list[dict]:
    rows = store.query("SELECT r.text, r.record_id, r.input_hash, p.label, p.confidence FROM store.selections s "
                       "JOIN store.records r USING (record_id) JOIN store.predictions p ON p.run_id = ? "
                       "AND p.record_id = s.record_id WHERE s.selection_id = ? ORDER BY s.rank", [run, sel])
    return [ls.task_payload(t, rid, h, run_id=run, label=lab, confidence=c) for t, rid, h, lab, c in rows]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 tasks, one repetition")
    ap.add_argument("-n", type=int, default=10_000, help="tasks to push (default 10,000)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--root", default=str(ROOT / ".labelstudio"))
    args = ap.parse_args(argv)
    n, reps = (500, 1) if args.quick else (args.n, args.reps)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    ls_server.install(args.root)
    server = ls_server.start(args.root)
    figures: dict = {"tasks": n, "reps": reps, "batch_size": args.batch_size}
    try:
        with tempfile.TemporaryDirectory() as tmp, Store.open(Settings(db=Path(tmp) / "bench.duckdb")) as store, \
                ls.StudioClient(server.url, server.token, timeout=600) as client:
            ours, raw, repush, rerank, rerank_raw, overhead = [], [], [], [], [], []
            cfg = ls.label_config(["ham", "spam"])
            for rep in range(reps):
                for side in (("raw", "ours") if rep % 2 == 0 else ("ours", "raw")):
                    name, run, sel = _store_with_selection(store, n, seed=rep)
                    if side == "raw":
                        tasks = _raw_tasks(store, sel, run)
                        pid = client.projects.create(f"raw {name}", cfg)["id"]
                        t0 = time.perf_counter()
                        client.sdk.projects.import_tasks(pid, request=tasks)
                        raw.append(time.perf_counter() - t0)
                        continue
                    in_import = [0.0]
                    real_import = client.projects.import_tasks

                    def timed_import(pid, tasks, _real=real_import, _acc=in_import):
                        t = time.perf_counter()
                        try:
                            return _real(pid, tasks)
                        finally:
                            _acc[0] += time.perf_counter() - t

                    client.projects.import_tasks = timed_import
                    t0 = time.perf_counter()
                    out = ls.push_selection(store, sel, client=client, batch_size=args.batch_size)
                    ours.append(time.perf_counter() - t0)
                    client.projects.import_tasks = real_import
                    overhead.append(ours[-1] - in_import[0])
                    assert out["created"] == n, out
                    t0 = time.perf_counter()
                    again = ls.push_selection(store, sel, client=client)
                    repush.append(time.perf_counter() - t0)
                    assert again["created"] == 0, again
                    # round 2: a new run scored the same records; re-rank the N tasks already there, beside a raw
                    # import of the same predictions (other version) into the same project, in alternating order
                    run2 = f"{run}-2"
                    with store.transaction() as cur:
                        cur.execute("INSERT INTO store.predictions (run_id, record_id, probs, label, confidence, "
                                    "scored_at) SELECT ?, record_id, list_reverse(probs), label, confidence, "
                                    "scored_at FROM store.predictions WHERE run_id = ?", [run2, run])
                    rows = store.query("SELECT t.task_id, p.probs, p.label FROM store.ls_tasks t JOIN "
                                       "store.predictions p ON p.run_id = ? AND p.record_id = t.record_id "
                                       "WHERE t.project_id = ?", [run2, out["project_id"]])
                    scores = ls.ordering_scores([r[1] for r in rows], "least_confidence")
                    same = [{"task": r[0], "model_version": f"{run2}-raw", "score": round(sc, 6),
                             "result": ls.choice_result(r[2])} for r, sc in zip(rows, scores)]
                    for step in (("ours", "raw") if rep % 2 == 0 else ("raw", "ours")):
                        t0 = time.perf_counter()
                        if step == "ours":
                            rr = ls.rerank(store, name, client, run_id=run2)
                            rerank.append(time.perf_counter() - t0)
                            assert rr["reranked"] == n, rr
                        else:
                            client.predictions.import_(out["project_id"], same)
                            rerank_raw.append(time.perf_counter() - t0)
            best = {k: min(v) for k, v in
                    {"push_s": ours, "raw_import_s": raw, "repush_s": repush, "rerank_s": rerank,
                     "raw_predictions_import_s": rerank_raw, "push_overhead_s": overhead}.items()}
            figures.update({k: round(v, 2) for k, v in best.items()})
            figures["push_ratio"] = round(best["push_s"] / best["raw_import_s"], 2)
            figures["rerank_ratio"] = round(best["rerank_s"] / best["raw_predictions_import_s"], 2)
            figures["push_tasks_per_s"] = round(n / best["push_s"])
            figures["raw_tasks_per_s"] = round(n / best["raw_import_s"])
    finally:
        server.stop()
    print(f"push {n:,} tasks with predictions   ours {figures['push_s']:7.2f} s ({figures['push_tasks_per_s']:,}/s)"
          f"   raw import_tasks {figures['raw_import_s']:7.2f} s ({figures['raw_tasks_per_s']:,}/s)"
          f"   ×{figures['push_ratio']:.2f} (goal ≤ 1.2)")
    print(f"  of which outside Label Studio's task import (project, store, ordering PATCH): "
          f"{figures['push_overhead_s']:.2f} s = {100 * figures['push_overhead_s'] / figures['push_s']:.1f}%")
    print(f"re-rank {n:,} tasks (round 2)      ours {figures['rerank_s']:7.2f} s"
          f"   raw import/predictions {figures['raw_predictions_import_s']:7.2f} s   ×{figures['rerank_ratio']:.2f}")
    print(f"re-push the same selection        ours {figures['repush_s']:7.2f} s   (creates 0 tasks; a raw "
          f"import would duplicate all {n:,})")
    return figures


if __name__ == "__main__":
    main()
