"""Label models over a label matrix L (n × m, -1 = abstain, classes 0..k-1). Pure: arrays in, arrays out.

- `majority`: each row's probabilities are its vote fractions (WRENCH's MajorityVoting); a row where every LF
  abstains gets the uniform distribution.
- `snorkel`: Snorkel's `LabelModel` (matrix-completion over LF agreements), fitted with a fixed seed.
- `dawid_skene`: Dawid & Skene's EM (1979), written here in numpy (~50 lines; no crowd-kit dependency: our
  matrices are small and dense, and owning it lets an abstain be an *outcome* — what makes it work for
  one-sided LFs, which only ever vote one class — or a missing answer, as for human annotators).

Choosing among them (`select_label_model`): fit every candidate (`default_candidates`: majority vote,
Dawid–Skene, Snorkel over seeds and class-balance priors) on the fit rows, score each on gold rows (accuracy and
macro-F1), keep the best by the stated metric (ties: the other metric, then the simpler model — majority,
Dawid–Skene, Snorkel), and say whether the kept model is worse than the majority vote on those rows.

Turning probabilities into labels (`probs_to_labels`) needs a tie-break rule; the policies (`TIE_BREAKS`):
- `hash` (default): Snorkel's and WRENCH's rule: among the classes within `tol` (1e-5) of the maximum, take
  `tied[int(sha1(str(key)).hexdigest(), 16) % len(tied)]`, where key is the row's position in the matrix
  (`keys` may override it). This is `snorkel.utils.probs_to_preds(..., tie_break_policy="random")`, and the
  rule behind the published figures (majority vote 84.0 on the WRENCH YouTube test split).
- `first`: the lowest class index (plain `argmax`; 77.6 on the same split).
- `abstain`: no label (-1) for a tied row.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curation.errors import InputError

log = logging.getLogger(__name__)

ABSTAIN = -1
TIE_TOL = 1e-5


def _hash(key: Any) -> int:
    return int(hashlib.sha1(str(key).encode("utf-8")).hexdigest(), 16)


def _tie_hash(tied: np.ndarray, key: Any) -> int:
    return int(tied[_hash(key) % len(tied)])


def _tie_first(tied: np.ndarray, key: Any) -> int:
    return int(tied[0])


def _tie_abstain(tied: np.ndarray, key: Any) -> int:
    return ABSTAIN


TIE_BREAKS: dict[str, Callable[[np.ndarray, Any], int]] = {
    "hash": _tie_hash, "first": _tie_first, "abstain": _tie_abstain,
}


def check_matrix(L: np.ndarray, k: int) -> np.ndarray:
    L = np.asarray(L)
    if L.ndim != 2:
        raise InputError(f"label matrix must be 2-D (rows × LFs); got shape {L.shape}")
    if k < 2:
        raise InputError(f"a label model needs at least 2 classes; got {k}")
    if L.size and (L.min() < -1 or L.max() >= k):
        bad = np.argwhere((L < -1) | (L >= k))[0]
        raise InputError(f"label matrix row {bad[0]}, LF {bad[1]}: vote {L[tuple(bad)]} is outside -1..{k - 1}")
    return L.astype(np.int64, copy=False)


def vote_counts(L: np.ndarray, k: int) -> np.ndarray:
    """(n × k) number of votes per class."""
    L = check_matrix(L, k)
    counts = np.zeros((L.shape[0], k), dtype=np.int64)
    for c in range(k):
        counts[:, c] = (L == c).sum(axis=1)
    return counts


def majority_probs(L: np.ndarray, k: int) -> np.ndarray:
    counts = vote_counts(L, k).astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    return np.where(total > 0, counts / np.maximum(total, 1), 1.0 / k)


def probs_to_labels(probs: np.ndarray, tie_break: str = "hash", keys: Sequence[Any] | None = None,
                    tol: float = TIE_TOL) -> np.ndarray:
    """Labels from probabilities; ties (classes within `tol` of the row's maximum) go to the tie-break policy."""
    if tie_break not in TIE_BREAKS:
        raise InputError(f"tie-break {tie_break!r} unknown; valid: {', '.join(TIE_BREAKS)}")
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if keys is not None and len(keys) != n:
        raise InputError(f"{len(keys)} tie-break keys for {n} rows")
    out = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    near = np.abs(probs - probs.max(axis=1, keepdims=True)) < tol if n else np.zeros((0, 0), bool)
    rule = TIE_BREAKS[tie_break]
    for i in np.flatnonzero(near.sum(axis=1) > 1):
        out[i] = rule(np.flatnonzero(near[i]), i if keys is None else keys[i])
    return out


# -- models ---------------------------------------------------------------------------------------------
class LabelModel:
    """Interface: `fit(L, k, seed)` then `predict_proba(L)`; `params()` is what gets stored."""

    name = "base"

    def fit(self, L: np.ndarray, k: int, *, seed: int = 0) -> LabelModel:
        raise NotImplementedError

    def predict_proba(self, L: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        return {}


class MajorityVote(LabelModel):
    name = "majority"

    def fit(self, L: np.ndarray, k: int, *, seed: int = 0) -> MajorityVote:
        check_matrix(L, k)
        self.k = k
        return self

    def predict_proba(self, L: np.ndarray) -> np.ndarray:
        return majority_probs(L, self.k)


class SnorkelLabelModel(LabelModel):
    """Snorkel's LabelModel (snorkel>=0.10), seeded; defaults are Snorkel's tutorial settings."""

    name = "snorkel"

    def __init__(self, n_epochs: int = 500, lr: float = 0.01, l2: float = 0.0, optimizer: str = "sgd",
                 class_balance: Sequence[float] | None = None):
        self.n_epochs, self.lr, self.l2, self.optimizer = n_epochs, lr, l2, optimizer
        self.class_balance = list(class_balance) if class_balance is not None else None

    def fit(self, L: np.ndarray, k: int, *, seed: int = 0) -> SnorkelLabelModel:
        try:
            from snorkel.labeling.model import LabelModel as _SnorkelLM
        except ImportError as e:  # pragma: no cover
            raise InputError("the snorkel label model needs `pip install snorkel>=0.10`") from e
        L = check_matrix(L, k)
        if L.shape[0] == 0:
            raise InputError("no rows to fit the label model on (no records in the fit split)")
        self.k = k
        import torch

        self.model = _SnorkelLM(cardinality=k, verbose=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # k×m-sized tensors: threads only add contention (5× slower on a busy box)
        try:
            self.model.fit(L, n_epochs=self.n_epochs, lr=self.lr, l2=self.l2, optimizer=self.optimizer,
                           class_balance=self.class_balance, seed=seed, log_freq=max(self.n_epochs, 1),
                           progress_bar=False)
        finally:
            torch.set_num_threads(threads)
        self.seed = seed
        return self

    def predict_proba(self, L: np.ndarray) -> np.ndarray:
        L = check_matrix(L, self.k)
        if L.shape[0] == 0:
            return np.zeros((0, self.k))
        return np.asarray(self.model.predict_proba(L), dtype=np.float64)

    def params(self) -> dict:
        out = {"n_epochs": self.n_epochs, "lr": self.lr, "l2": self.l2, "optimizer": self.optimizer,
               "class_balance": self.class_balance}
        try:
            out["lf_weights"] = [float(w) for w in self.model.get_weights()]
        except Exception:
            log.debug("no LF weights from the Snorkel model", exc_info=True)
        return out


class DawidSkene(LabelModel):
    """Dawid–Skene EM: per source j a confusion matrix P(output | true class), a class prior, conditional
    independence. Initialised from the majority vote (so class indexes keep their meaning), deterministic.

    `abstain="outcome"` (default, for LFs): an abstain is one more output, so a one-sided LF's firing rate per
    class is what it learns. `abstain="missing"` (for annotators who were not asked): abstains are ignored.
    `smoothing` is a Dirichlet pseudo-count on every confusion cell.
    """

    name = "dawid_skene"

    def __init__(self, n_iter: int = 200, tol: float = 1e-6, smoothing: float = 1.0, abstain: str = "outcome",
                 class_balance: Sequence[float] | None = None):
        if abstain not in ("outcome", "missing"):
            raise InputError(f"dawid_skene abstain={abstain!r} unknown; valid: outcome, missing")
        self.n_iter, self.tol, self.smoothing, self.abstain = n_iter, tol, smoothing, abstain
        self.class_balance = list(class_balance) if class_balance is not None else None

    def _outputs(self, L: np.ndarray) -> np.ndarray:
        return np.where(L == ABSTAIN, self.k, L)  # abstain → output index k

    def _m_step(self, out: np.ndarray, T: np.ndarray) -> None:
        k, m = self.k, out.shape[1]
        counts = np.empty((m, k, k + 1))
        for o in range(k + 1):
            counts[:, :, o] = (out == o).T.astype(np.float64) @ T  # (m × n) @ (n × k)
        if self.abstain == "missing":
            counts[:, :, k] = 0.0
            counts[:, :, :k] += self.smoothing
        else:
            counts += self.smoothing
        self.confusion = counts / counts.sum(axis=2, keepdims=True)
        self.prior = (np.asarray(self.class_balance, dtype=np.float64) if self.class_balance is not None
                      else (T.sum(axis=0) + 1.0) / (T.shape[0] + self.k))

    def _e_step(self, out: np.ndarray) -> np.ndarray:
        logp = np.tile(np.log(self.prior), (out.shape[0], 1))
        logc = np.log(np.maximum(self.confusion, 1e-300))
        for j in range(out.shape[1]):
            term = logc[j][:, out[:, j]].T  # n × k: log P(output of j | class)
            if self.abstain == "missing":
                term = np.where((out[:, j] == self.k)[:, None], 0.0, term)
            logp += term
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def fit(self, L: np.ndarray, k: int, *, seed: int = 0) -> DawidSkene:
        L = check_matrix(L, k)
        if L.shape[0] == 0:
            raise InputError("no rows to fit the label model on (no records in the fit split)")
        self.k = k
        out = self._outputs(L)
        T = majority_probs(L, k)
        self.n_iter_run = 0
        for it in range(self.n_iter):
            self._m_step(out, T)
            new = self._e_step(out)
            self.n_iter_run = it + 1
            delta = float(np.abs(new - T).max())
            T = new
            if delta < self.tol:
                break
        self._m_step(out, T)
        return self

    def predict_proba(self, L: np.ndarray) -> np.ndarray:
        L = check_matrix(L, self.k)
        return self._e_step(self._outputs(L)) if L.shape[0] else np.zeros((0, self.k))

    def source_accuracies(self) -> np.ndarray:
        """Per source: P(true class = its vote | it voted), under the fitted prior."""
        k = self.k
        diag = np.einsum("jcc->jc", self.confusion[:, :, :k])  # P(votes c | class c)
        voted = 1.0 - self.confusion[:, :, k]
        return (diag @ self.prior) / np.maximum(voted @ self.prior, 1e-300)

    def params(self) -> dict:
        out = {"n_iter": self.n_iter, "tol": self.tol, "smoothing": self.smoothing, "abstain": self.abstain,
               "class_balance": self.class_balance}
        if hasattr(self, "confusion"):
            out |= {"iterations": self.n_iter_run, "prior": [float(x) for x in self.prior],
                    "lf_accuracies": [float(x) for x in self.source_accuracies()]}
        return out


LABEL_MODELS: dict[str, type[LabelModel]] = {"majority": MajorityVote, "dawid_skene": DawidSkene,
                                             "snorkel": SnorkelLabelModel}
# simpler first: the order ties are broken in when choosing a model
SIMPLICITY = {"majority": 0, "dawid_skene": 1, "snorkel": 2}


def get_label_model(name: str, **params: Any) -> LabelModel:
    if name not in LABEL_MODELS:
        raise InputError(f"label model {name!r} unknown; valid: {', '.join(LABEL_MODELS)}")
    return LABEL_MODELS[name](**params)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Share of rows where pred == gold (pred -1 counts as wrong); None for no rows."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else None


def macro_f1(pred: np.ndarray, gold: np.ndarray, k: int) -> float | None:
    """Unweighted mean over the k classes of F1 (a class absent from both pred and gold scores 0, as in
    scikit-learn with labels=range(k) and zero_division=0); pred -1 is wrong for every class."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if not len(gold):
        return None
    f1 = []
    for c in range(k):
        tp = float(((pred == c) & (gold == c)).sum())
        denom = float((pred == c).sum() + (gold == c).sum())
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def scores(pred: np.ndarray, gold: np.ndarray, k: int) -> dict:
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, k)}


# -- choosing a label model -----------------------------------------------------------------------------
SELECT_METRICS = ("accuracy", "macro_f1")


def default_candidates(seeds: Sequence[int] = (0, 1, 2), gold_balance: Sequence[float] | None = None
                       ) -> list[dict]:
    """Majority vote, Dawid–Skene (its own estimated prior and, when given, the gold-estimated class balance),
    and Snorkel for every seed × class-balance prior (uniform — Snorkel's own default — and, when given, the
    gold-estimated balance). Each candidate: name, kind, params, seed."""
    out = [{"name": "majority", "kind": "majority", "params": {}, "seed": 0},
           {"name": "dawid_skene", "kind": "dawid_skene", "params": {}, "seed": 0}]
    priors: list[tuple[str, list[float] | None]] = [("uniform", None)]
    if gold_balance is not None:
        priors.append(("gold", [float(x) for x in gold_balance]))
        out.append({"name": "dawid_skene/gold", "kind": "dawid_skene",
                    "params": {"class_balance": priors[-1][1]}, "seed": 0})
    for prior, balance in priors:
        for s in seeds:
            out.append({"name": f"snorkel/{prior}/seed{s}", "kind": "snorkel",
                        "params": {"class_balance": balance} if balance is not None else {}, "seed": int(s)})
    return out


def gold_balance(gold: np.ndarray, k: int, smoothing: float = 1.0) -> list[float]:
    """Class shares among gold labels (add-one smoothed, so no class gets prior 0)."""
    g = np.asarray(gold)
    g = g[g != ABSTAIN]
    counts = np.bincount(g, minlength=k).astype(np.float64) + smoothing
    return (counts / counts.sum()).tolist()


def select_label_model(L_fit: np.ndarray, k: int, candidates: Sequence[dict], *, L_eval: np.ndarray,
                       gold_eval: np.ndarray, keys_eval: Sequence[Any] | None = None, tie_break: str = "hash",
                       metric: str = "accuracy") -> tuple[LabelModel, dict, list[dict]]:
    """Fit each candidate on L_fit, score it on (L_eval, gold_eval), return (best model, its candidate, the
    report of every candidate). Rank: `metric` (accuracy | macro_f1), then the other one, then the simpler model,
    then the candidate order. A candidate that fails to fit is reported with its error and skipped (never
    silently); the majority vote cannot fail, so there is always a model."""
    if metric not in SELECT_METRICS:
        raise InputError(f"selection metric {metric!r} unknown; valid: {', '.join(SELECT_METRICS)}")
    if len(L_eval) != len(gold_eval):
        raise InputError(f"{len(L_eval)} evaluation rows for {len(gold_eval)} gold labels")
    other = next(m for m in SELECT_METRICS if m != metric)
    covered = (np.asarray(L_eval) != ABSTAIN).any(axis=1)
    report, fitted = [], {}
    for i, cand in enumerate(candidates):
        row = {"name": cand["name"], "kind": cand["kind"], "seed": cand["seed"],
               "class_balance": cand["params"].get("class_balance")}
        t0 = time.perf_counter()
        try:
            model = get_label_model(cand["kind"], **cand["params"]).fit(L_fit, k, seed=cand["seed"])
            pred = probs_to_labels(model.predict_proba(L_eval), tie_break, keys=keys_eval)
        except Exception as e:  # noqa: BLE001 — reported per candidate and counted; the vote always remains
            log.warning("label-model candidate %s failed: %s", cand["name"], e)
            report.append(row | {"status": "failed", "error": f"{type(e).__name__}: {e}"})
            continue
        row |= {"status": "ok", **scores(pred, gold_eval, k),
                "accuracy_covered": accuracy(pred[covered], np.asarray(gold_eval)[covered]),
                "seconds": round(time.perf_counter() - t0, 3)}
        report.append(row)
        fitted[i] = model
    ok = [(i, r) for i, r in enumerate(report) if r["status"] == "ok"]
    if not ok:
        raise InputError("every label-model candidate failed: " + "; ".join(r["error"] for r in report))

    def rank(item: tuple[int, dict]) -> tuple:
        i, r = item
        return (-round(r[metric] or 0.0, 9), -round(r[other] or 0.0, 9), SIMPLICITY.get(r["kind"], 9), i)

    best_i, best = min(ok, key=rank)
    for r in report:
        r["chosen"] = r is best
    return fitted[best_i], candidates[best_i], report
