"""Active learning: which records should annotators label next.

Pure core: strategies in a registry behind one small interface. A strategy sees the pool (candidate record ids,
their predicted probabilities and embeddings, all aligned) and `n`, and returns `n` distinct ids from the pool,
most informative first. The one abstract method is `score` (higher = more informative); the default `query`
takes the top `n` by score, ties broken by record id, so results are deterministic for a seed. A strategy that
picks a batch jointly (diversity) overrides `query`.

    @register("margin")
    class Margin(Strategy):
        def score(self, pool, rng): return 1 - margin(pool.probs)

Exclusion happens before a strategy runs (the edge hands it only selectable ids), and `query` also takes an
`exclude` set so a pure caller gets the same guarantee.

DuckDB edge: `select(store, run_id, strategy, n, *, seed, round)` reads the run's predictions and writes one
selection (round, record, strategy, score, rank) to `store.selections`. Never selected:
- labeled: records with a gold label (imported or annotation);
- pending: records already pushed to Label Studio (`store.ls_tasks`) or chosen by an earlier selection of the
  dataset, and not labeled yet — a selection reserves its records until they are labeled, so two rounds never
  hand annotators the same record (`reselect=True` releases earlier selections that were never pushed);
- augmented copies (origin `augment`), and rows quarantined at ingest (they never become records).
"""

import json
import logging
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import polars as pl

from curation.errors import CurateError, InputError, NotFound
from training.metrics import entropy, least_confidence, margin

log = logging.getLogger(__name__)


class PoolExhausted(CurateError):
    """Fewer selectable records than requested."""

    exit_code = 2


class UnknownStrategy(InputError):
    pass


@dataclass
class Pool:
    """Candidates, aligned: `ids` (n,), `probs` (n, k), `embeddings` (n, d) or None."""

    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        if self.probs.ndim != 2 or len(self.probs) != len(self.ids):
            raise InputError(f"pool: probs has shape {self.probs.shape}; expected ({len(self.ids)}, k)")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.ids):
                raise InputError(f"pool: embeddings has shape {self.embeddings.shape}; "
                                 f"expected ({len(self.ids)}, d)")
        if len(np.unique(self.ids)) != len(self.ids):
            raise InputError("pool ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, exclude) -> "Pool":
        if exclude is None or len(exclude) == 0:
            return self
        keep = ~np.isin(self.ids, np.fromiter(exclude, dtype=np.int64) if not isinstance(exclude, np.ndarray)
                        else exclude.astype(np.int64))
        return Pool(self.ids[keep], self.probs[keep], None if self.embeddings is None else self.embeddings[keep])


def top_n(scores: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` highest scores, ties broken by smaller id (deterministic)."""
    order = np.lexsort((ids, -scores))
    return order[:n]


class Strategy(ABC):
    """One abstract method: `score(pool, rng)` → informativeness per pool row (higher first)."""

    name: str = ""

    @abstractmethod
    def score(self, pool: Pool, rng: np.random.Generator) -> np.ndarray: ...

    def query(self, pool: Pool, n: int, *, exclude=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """→ (ids, scores): `n` distinct ids from `pool` not in `exclude`, most informative first.
        Raises PoolExhausted when fewer than `n` are available."""
        pool = pool.without(exclude)
        check_size(len(pool), n)
        rng = np.random.default_rng(seed)
        s = np.asarray(self.score(pool, rng), dtype=np.float64)
        pick = self.pick(pool, s, n, rng)
        return pool.ids[pick], s[pick]

    def pick(self, pool: Pool, scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        return top_n(scores, pool.ids, n)


def check_size(available: int, n: int, detail: str = "") -> None:
    if n < 1:
        raise InputError(f"--n {n}: ask for at least 1 record")
    if available < n:
        raise PoolExhausted(f"Pool exhausted: {available} available / {n} requested{detail}")


STRATEGIES: dict[str, type[Strategy]] = {}


def register(name: str):
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


def get_strategy(name: str, **params) -> Strategy:
    if name not in STRATEGIES:
        raise UnknownStrategy(f"unknown strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](**params)


@register("random")
class RandomStrategy(Strategy):
    """Uniform sample (seeded): the baseline every strategy must beat."""

    def score(self, pool, rng):
        return rng.random(len(pool))


@register("least_confidence")
class LeastConfidence(Strategy):
    """1 − max p."""

    def score(self, pool, rng):
        return least_confidence(pool.probs)


@register("margin")
class Margin(Strategy):
    """1 − (p1 − p2): smallest margin between the two most likely labels first."""

    def score(self, pool, rng):
        return 1.0 - margin(pool.probs)


@register("entropy")
class Entropy(Strategy):
    """Predictive entropy (nats)."""

    def score(self, pool, rng):
        return entropy(pool.probs)


def k_center_greedy(emb: np.ndarray, n: int, first: int = 0) -> np.ndarray:
    """Greedy k-center (Sener & Savarese 2018): start at `first`, then repeatedly add the point farthest (cosine
    distance on L2-normalised rows) from everything chosen. Returns `n` distinct positions in pick order."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    chosen = [first]
    dist = 1.0 - e @ e[first]
    dist[first] = -np.inf
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - e @ e[nxt])
        dist[chosen] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


@register("diverse_margin")
class DiverseMargin(Strategy):
    """Uncertain and diverse: take the `candidates` × n smallest-margin records, then k-center greedy over their
    embeddings (starting from the most uncertain), so a batch is not 50 near copies. Without embeddings it is
    plain margin."""

    def __init__(self, candidates: int = 10):
        if candidates < 1:
            raise InputError(f"diverse_margin: candidates={candidates}; use ≥ 1")
        self.candidates = candidates

    def score(self, pool, rng):
        return 1.0 - margin(pool.probs)

    def pick(self, pool, scores, n, rng):
        top = top_n(scores, pool.ids, min(len(pool), self.candidates * n))
        if pool.embeddings is None or len(top) <= n:
            return top[:n]
        return top[k_center_greedy(pool.embeddings[top], n, first=0)]


# -- the DuckDB edge ------------------------------------------------------------------------------------
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


def select(store, run_id: str, strategy: str, n: int, *, seed: int = 0, round: int | None = None,
           reselect: bool = False, params: dict | None = None) -> dict:
    """Choose `n` records of the run's dataset with `strategy` over the run's predictions; store the selection.
    Returns {selection_id, round, strategy, n, ids, scores, pool counts}."""
    from curation.store import now

    strat = get_strategy(strategy, **(params or {}))
    rows = store.query("SELECT dataset, status FROM store.runs WHERE run_id = ?", [run_id])
    if not rows:
        raise NotFound(f"no run {run_id!r}; see `SELECT run_id, status FROM runs`")
    dataset = rows[0][0]
    preds = store.frame(
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
    pool = Pool(sub["record_id"].to_numpy(), np.asarray(sub["probs"].to_list(), dtype=np.float64), embeddings)
    chosen, scores = strat.query(pool, n, seed=seed)
    if round is None:
        round = (store.one("SELECT max(round) FROM store.selections WHERE dataset = ?", [dataset]) or 0) + 1
    selection_id = f"sel-{dataset}-r{round}-{secrets.token_hex(3)}"
    created = now()
    with store.transaction() as cur:
        cur.executemany("INSERT INTO store.selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[selection_id, dataset, round, run_id, int(rid), strategy, float(s), rank, created]
                         for rank, (rid, s) in enumerate(zip(chosen, scores), start=1)])
    log.info("selection %s: %d records of %s by %s", selection_id, len(chosen), dataset, strategy)
    return {"selection_id": selection_id, "dataset": dataset, "round": round, "run_id": run_id,
            "strategy": strategy, "seed": seed, "n": len(chosen), "pool": counts,
            "record_ids": [int(x) for x in chosen], "scores": [float(s) for s in scores],
            "params": json.loads(json.dumps(params or {}))}

