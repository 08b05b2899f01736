"""Active-learning strategies: the pure core, arrays in and record ids out.

Strategies live in a registry behind one small interface. A strategy sees the pool (candidate record ids,
their predicted probabilities and embeddings, all aligned) and `n`, and returns `n` distinct ids from the pool,
most informative first. The one abstract method is `score` (higher = more informative); the default `query`
takes the top `n` by score, ties broken by record id, so results are deterministic for a seed. A strategy that
picks a batch jointly (diversity) overrides `query`.

    @register("margin")
    class Margin(Strategy):
        def score(self, pool, rng): return 1 - margin(pool.probs)

Exclusion happens before a strategy runs (the edge, `labeling.active.selection`, hands it only selectable ids),
and `query` also takes an `exclude` set so a pure caller gets the same guarantee.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from curation.errors import CurateError, InputError
from labeling.uncertainty import entropy, least_confidence, margin


class PoolExhausted(CurateError):
    """Fewer selectable records than requested: `available` of `requested`, named in the message."""

    exit_code = 2

    def __init__(self, available: int, requested: int, detail: str = ""):
        self.available = available
        self.requested = requested
        self.detail = detail
        super().__init__(f"Pool exhausted: {available} available / {requested} requested{detail}")

    def __reduce__(self):
        return type(self), (self.available, self.requested, self.detail)


class UnknownStrategy(InputError):
    pass


@dataclass
class Pool:
    """Candidates, aligned: `ids` (n,), `probs` (n, k), `embeddings` (n, d) or None."""

    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None = None
    losses: np.ndarray | None = None   # SFT runs: mean token NLL of each response (higher = less confident)

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
        if self.losses is not None:
            self.losses = np.asarray(self.losses, dtype=np.float64)
            if self.losses.shape != (len(self.ids),):
                raise InputError(f"pool: losses has shape {self.losses.shape}; expected ({len(self.ids)},)")
        if len(np.unique(self.ids)) != len(self.ids):
            raise InputError("pool ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, exclude) -> "Pool":
        if exclude is None or len(exclude) == 0:
            return self
        keep = ~np.isin(self.ids, np.fromiter(exclude, dtype=np.int64) if not isinstance(exclude, np.ndarray)
                        else exclude.astype(np.int64))
        return Pool(self.ids[keep], self.probs[keep], None if self.embeddings is None else self.embeddings[keep],
                    None if self.losses is None else self.losses[keep])


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
        raise PoolExhausted(available, n, detail)


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


def _unit(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def knn_density(emb: np.ndarray, rows: np.ndarray, k: int = 10, chunk: int = 1024) -> np.ndarray:
    """Mean cosine similarity of each of `rows` to its `k` nearest neighbours among all rows of `emb` (itself
    excluded): high in dense regions, low for isolated points. O(len(rows) · len(emb)) in chunks."""
    e = _unit(np.asarray(emb, dtype=np.float32))
    k = max(1, min(k, len(e) - 1))
    if len(e) < 2:
        return np.ones(len(rows))
    out = np.empty(len(rows), dtype=np.float64)
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        sim = e[r] @ e.T
        sim[np.arange(len(r)), r] = -np.inf                  # not its own neighbour
        out[i:i + chunk] = np.sort(np.partition(sim, -k, axis=1)[:, -k:], axis=1).mean(axis=1)
    return out


@register("density_margin")
class DensityMargin(Strategy):
    """Information density (Settles & Craven 2008) on the margin shortlist: among the `candidates` × n smallest
    margins, rank by (1 − margin) × density^beta, density = mean cosine similarity to the k nearest pool
    neighbours, so isolated outliers sink. Without embeddings it is plain margin."""

    def __init__(self, candidates: int = 10, k: int = 10, beta: float = 1.0):
        if candidates < 1 or k < 1:
            raise InputError(f"density_margin: candidates={candidates}, k={k}; use ≥ 1")
        self.candidates, self.k, self.beta = candidates, k, beta

    def score(self, pool, rng):
        return 1.0 - margin(pool.probs)

    def pick(self, pool, scores, n, rng):
        top = top_n(scores, pool.ids, min(len(pool), self.candidates * n))
        if pool.embeddings is None or len(top) <= n:
            return top[:n]
        w = scores[top] * np.clip(knn_density(pool.embeddings, top, self.k), 0.0, None) ** self.beta
        return top[top_n(w, pool.ids[top], n)]


@register("cluster_margin")
class ClusterMargin(Strategy):
    """Uncertain, diverse, and not outliers (after Citovsky et al. 2021, Cluster-Margin): take the `candidates` × n
    smallest margins, k-means them into n clusters (seeded), and take from each cluster its best member by
    (1 − margin) × kNN density. Clusters are visited largest first, one pick per cluster per pass; singleton
    clusters (an isolated point alone in its cluster) come last, so outliers are picked only when nothing else
    is left. Without embeddings it is plain margin."""

    def __init__(self, candidates: int = 10, k: int = 10, beta: float = 1.0, min_cluster: int = 2):
        if candidates < 1 or k < 1 or min_cluster < 1:
            raise InputError(f"cluster_margin: candidates={candidates}, k={k}, min_cluster={min_cluster}; "
                             "use ≥ 1")
        self.candidates, self.k, self.beta, self.min_cluster = candidates, k, beta, min_cluster

    def score(self, pool, rng):
        return 1.0 - margin(pool.probs)

    def pick(self, pool, scores, n, rng):
        top = top_n(scores, pool.ids, min(len(pool), self.candidates * n))
        if pool.embeddings is None or len(top) <= n:
            return top[:n]
        try:
            from sklearn.cluster import KMeans
        except ImportError as e:          # pragma: no cover - scikit-learn is a dependency
            raise ImportError("cluster_margin needs scikit-learn: pip install scikit-learn") from e
        e = _unit(pool.embeddings[top].astype(np.float64))
        w = scores[top] * np.clip(knn_density(pool.embeddings, top, self.k), 0.0, None) ** self.beta
        cluster = KMeans(n_clusters=n, n_init=3, random_state=int(rng.integers(2**31 - 1))).fit_predict(e)
        size = np.bincount(cluster, minlength=n)[cluster]
        order = np.lexsort((pool.ids[top], -w, cluster))          # by cluster, best first within it
        rank_in_cluster = np.empty(len(top), dtype=np.int64)
        for c in np.unique(cluster):
            members = order[cluster[order] == c]
            rank_in_cluster[members] = np.arange(len(members))
        # passes: rank 0 of every non-singleton cluster (largest first), then rank 1, ...; singletons last
        key = np.lexsort((pool.ids[top], -w, -size, rank_in_cluster, size < self.min_cluster))
        return top[key[:n]]


def _losses(pool: Pool, name: str) -> np.ndarray:
    """The pool's response losses; a pool without them (a classification run) gets −log max p, the loss of the
    predicted label (the same order as least confidence), so every strategy works on every pool."""
    if pool.losses is not None:
        return pool.losses
    return -np.log(np.clip(pool.probs.max(axis=1), 1e-300, None)) if pool.probs.shape[1] else np.zeros(len(pool))


@register("highest_loss")
class HighestLoss(Strategy):
    """SFT runs: the highest mean token NLL of the response under the fine-tuned model first (the responses the
    model finds least likely: mistakes, odd formats, or hard cases worth a reviewer's look)."""

    def score(self, pool, rng):
        return _losses(pool, self.name)


@register("cluster_loss")
class ClusterLoss(ClusterMargin):
    """SFT runs, diverse: take the `candidates` × n highest losses, k-means their prompt embeddings into n clusters
    and take the highest loss of each cluster (ClusterMargin's pick with loss as the score; `beta`=0: no density
    weighting, `min_cluster`=1: an isolated prompt is not demoted, a lone odd response is what review is for).
    Without embeddings it is plain highest_loss."""

    def __init__(self, candidates: int = 10, k: int = 10, beta: float = 0.0, min_cluster: int = 1):
        super().__init__(candidates=candidates, k=k, beta=beta, min_cluster=min_cluster)

    def score(self, pool, rng):
        return _losses(pool, self.name)


SFT_STRATEGIES = ("highest_loss", "cluster_loss", "random")   # the strategies an SFT run's pool supports


def choose_auto(history: list[dict], candidates=("margin", "cluster_margin"), default: str = "margin",
                tolerance: float = 0.01) -> tuple[str, str]:
    """`--strategy auto`: pick from what the rounds so far show. `history`: one dict per earlier round, oldest
    first, {"round", "strategy", "val_before", "val_after"} (validation metric of the model that chose the round
    and of the model trained after its labels came in). Each tried candidate's most recent gain
    (val_after − val_before) is the evidence; changes within `tolerance` count as noise (a plateau is not a
    reason to switch). Rule:
    1. no usable history → `default`;
    2. every recent gain below −tolerance and a candidate never tried → try it (the default first);
    3. else the candidate with the largest recent gain, but the default whenever its own recent gain is within
       `tolerance` of that best.
    Returns (strategy, reason)."""
    gains: dict[str, float] = {}
    for h in history:
        if h.get("strategy") in candidates and h.get("val_before") is not None and h.get("val_after") is not None:
            gains[h["strategy"]] = float(h["val_after"]) - float(h["val_before"])
    if not gains:
        return default, "no earlier round with a validation score before and after: the default"
    best = max(gains, key=lambda s: (gains[s], s == default, s))
    untried = [c for c in candidates if c not in gains]
    shown = ", ".join(f"{s} {gains[s]:+.4f}" for s in sorted(gains))
    if gains[best] < -tolerance and untried:
        pick = default if default in untried else untried[0]
        return pick, f"last gains ({shown}) below -{tolerance}; trying {pick}"
    if default in gains and gains[default] >= gains[best] - tolerance:
        return default, f"the default's last gain is within {tolerance} of the best ({shown})"
    return best, f"largest gain in validation in its last round ({shown})"


DEFAULT_STRATEGY = "margin"                      # chosen on the evidence of docs/results/active_learning.json
AUTO_CANDIDATES = ("margin", "cluster_margin")   # what `--strategy auto` chooses between
