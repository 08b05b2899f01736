"""Active learning at the DuckDB edge: read a run's predictions, choose with a strategy, store the selection.

`select(store, run_id, strategy, n, *, seed, round)` reads the run's predictions and writes one selection
(round, record, strategy, score, rank) to `store.selections`. Never selected:
- labeled: records with a gold label (imported or annotation);
- pending: records already pushed to Label Studio (`store.ls_tasks`) or chosen by an earlier selection of the
  dataset, and not labeled yet — a selection reserves its records until they are labeled, so two rounds never
  hand annotators the same record (`reselect=True` releases earlier selections that were never pushed);
- augmented copies (origin `augment`), and rows quarantined at ingest (they never become records).

`strategy="auto"` picks the strategy from the dataset's rounds so far (`strategy_history` → `choose_auto`): the
`strategy` column of the stored rows names the strategy that chose them, and `details` (JSON) records the request,
the choice, the reason and the history it was made on.
"""

import json
import logging
import secrets

import numpy as np
import polars as pl

from curation.errors import InputError, NotFound
from labeling.active.strategies import (
    AUTO_CANDIDATES,
    DEFAULT_STRATEGY,
    SFT_STRATEGIES,
    Pool,
    check_size,
    choose_auto,
    get_strategy,
)

log = logging.getLogger(__name__)


def exclusions(store, dataset: str, *, reselect: bool = False) -> dict[str, set[int]]:
    """Record ids of `dataset` that must not be selected, by reason (a record counts under the first)."""
    labeled = {r[0] for r in store.query(
        "SELECT g.record_id FROM store.gold_labels g JOIN store.records r USING (record_id) WHERE r.dataset = ?",
        [dataset])}
    pushed = {r[0] for r in store.query(
        "SELECT t.record_id FROM store.ls_tasks t JOIN store.records r USING (record_id) WHERE r.dataset = ?",
        [dataset])}
    selected = set() if reselect else {r[0] for r in store.query(
        "SELECT DISTINCT record_id FROM store.selections WHERE dataset = ?", [dataset])}
    pending = (pushed | selected) - labeled
    return {"labeled": labeled, "pending": pending}


def _val_metric(metrics, metric: str = "accuracy") -> float | None:
    m = json.loads(metrics) if isinstance(metrics, str) else metrics
    val = (m or {}).get("val") or {}
    return None if val.get(metric) is None else float(val[metric])


def strategy_history(store, dataset: str, run_id: str | None = None, metric: str = "accuracy") -> list[dict]:
    """The dataset's earlier rounds, oldest first: {round, strategy, run_id, val_before, val_after}. A round's
    `val_before` is the validation `metric` of the run that chose it; `val_after` that of the run that chose the
    next round (for the last round: `run_id`, the run now choosing), None when unknown."""
    rows = store.query(
        "SELECT s.round, any_value(s.strategy), any_value(s.run_id), any_value(r.metrics), min(s.created_at) "
        "FROM store.selections s LEFT JOIN store.runs r USING (run_id) WHERE s.dataset = ? "
        "GROUP BY s.selection_id, s.round ORDER BY min(s.created_at), s.round", [dataset])
    current = None
    if run_id is not None:
        found = store.query("SELECT metrics FROM store.runs WHERE run_id = ?", [run_id])
        current = _val_metric(found[0][0], metric) if found else None
    out = []
    for i, (rnd, strat, rid, metrics, _) in enumerate(rows):
        if i + 1 < len(rows):
            after = _val_metric(rows[i + 1][3], metric) if rows[i + 1][2] != rid else None
        else:
            after = current if run_id is not None and run_id != rid else None
        out.append({"round": rnd, "strategy": strat, "run_id": rid, "val_before": _val_metric(metrics, metric),
                    "val_after": after})
    return out


def select(store, run_id: str, strategy: str, n: int, *, seed: int = 0, round: int | None = None,
           reselect: bool = False, params: dict | None = None) -> dict:
    """Choose `n` records of the run's dataset with `strategy` (a registry name, or "auto") over the run's
    predictions; store the selection. Returns {selection_id, round, strategy, n, ids, scores, pool counts,
    details}."""
    from curation.store import now

    if strategy == "label_issues":    # suspect labels for review (labeling.label_issues), not a model's pool
        from labeling.label_issues import select_run_issues

        return select_run_issues(store, run_id, n, round=round)
    rows = store.query("SELECT dataset, status, task FROM store.runs WHERE run_id = ?", [run_id])
    if not rows:
        raise NotFound(f"no run {run_id!r}; see `SELECT run_id, status FROM runs`")
    dataset = rows[0][0]
    details: dict = {"requested": strategy}
    sft = rows[0][2] == "sft"     # an SFT run: its pool is response losses (store.response_scores)
    if sft and strategy == "auto":
        strategy = "highest_loss"
        details["reason"] = "SFT run: the response loss ranks the pool"
    if sft and strategy not in SFT_STRATEGIES:
        raise InputError(f"strategy {strategy!r} needs class probabilities; SFT run {run_id} has response losses: "
                         f"use one of {', '.join(SFT_STRATEGIES)}")
    if strategy == "auto":
        history = strategy_history(store, dataset, run_id)
        strategy, reason = choose_auto(history, AUTO_CANDIDATES, DEFAULT_STRATEGY)
        details |= {"reason": reason, "candidates": list(AUTO_CANDIDATES), "default": DEFAULT_STRATEGY,
                    "history": [{k: h[k] for k in ("round", "strategy", "val_before", "val_after")}
                                for h in history]}
        log.info("auto strategy for %s: %s (%s)", dataset, strategy, reason)
    details["chose"] = strategy
    strat = get_strategy(strategy, **(params or {}))
    preds = store.frame(
        "SELECT s.record_id, r.input_hash, [exp(-s.loss)] AS probs, s.embedding, s.loss FROM store.response_scores s "
        "JOIN store.records r USING (record_id) "
        "WHERE s.run_id = ? AND r.dataset = ? AND r.origin = 'ingest' ORDER BY s.record_id", [run_id, dataset]) \
        if sft else store.frame(
        "SELECT p.record_id, r.input_hash, p.probs, p.embedding FROM store.predictions p "
        "JOIN store.records r USING (record_id) "
        "WHERE p.run_id = ? AND r.dataset = ? AND r.origin = 'ingest' ORDER BY p.record_id", [run_id, dataset])
    if preds.height == 0:
        raise NotFound(f"run {run_id} has no predictions for {dataset!r}; run `curate score --run {run_id}` first")
    ex = exclusions(store, dataset, reselect=reselect)
    ids = preds["record_id"].to_numpy()
    excluded_labeled = np.isin(ids, list(ex["labeled"]))
    excluded_pending = np.isin(ids, list(ex["pending"])) & ~excluded_labeled
    # one task per normalised text: skip texts already labeled or pending, and keep one record per text
    cur = store.cursor()
    try:
        cur.register("_taken", pl.DataFrame({"record_id": sorted(ex["labeled"] | ex["pending"])},
                                            schema={"record_id": pl.Int64}))
        taken = {h for (h,) in cur.execute("SELECT DISTINCT r.input_hash FROM store.records r JOIN _taken "
                                           "USING (record_id) WHERE r.dataset = ?", [dataset]).fetchall()}
    finally:
        cur.close()
    hashes = preds["input_hash"]
    excluded_duplicate = (hashes.is_in(list(taken)).to_numpy() | ~hashes.is_first_distinct().to_numpy()) \
        & ~(excluded_labeled | excluded_pending)
    keep = ~(excluded_labeled | excluded_pending | excluded_duplicate)
    counts = {"scored": preds.height, "labeled": int(excluded_labeled.sum()),
              "pending": int(excluded_pending.sum()), "duplicate_text": int(excluded_duplicate.sum()),
              "available": int(keep.sum())}
    check_size(counts["available"], n, f" (run {run_id} scored {counts['scored']} records of {dataset!r}: "
               f"{counts['labeled']} labeled, {counts['pending']} pending; score more records, label the "
               f"pending ones, or ask for fewer)")
    sub = preds.filter(pl.Series(keep))
    emb = sub["embedding"].to_list()
    embeddings = np.asarray(emb, dtype=np.float32) if emb and all(e is not None for e in emb) else None
    probs = np.asarray(sub["probs"].to_list(), dtype=np.float64).reshape(sub.height, -1)
    pool = Pool(sub["record_id"].to_numpy(), probs, embeddings, sub["loss"].to_numpy() if sft else None)
    chosen, scores = strat.query(pool, n, seed=seed)
    if round is None:
        round = (store.one("SELECT max(round) FROM store.selections WHERE dataset = ?", [dataset]) or 0) + 1
    selection_id = f"sel-{dataset}-r{round}-{secrets.token_hex(3)}"
    created = now()
    with store.transaction() as cur:
        cur.executemany("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, "
                        "score, rank, created_at, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[selection_id, dataset, round, run_id, int(rid), strategy, float(s), rank, created,
                          json.dumps(details)]
                         for rank, (rid, s) in enumerate(zip(chosen, scores), start=1)])
    log.info("selection %s: %d records of %s by %s", selection_id, len(chosen), dataset, strategy)
    return {"selection_id": selection_id, "dataset": dataset, "round": round, "run_id": run_id,
            "strategy": strategy, "seed": seed, "n": len(chosen), "pool": counts,
            "record_ids": [int(x) for x in chosen], "scores": [float(s) for s in scores],
            "params": json.loads(json.dumps(params or {})), "details": details}

