"""Label models over a label matrix L (n × m, -1 = abstain, classes 0..k-1). Pure: arrays in, arrays out.

- `majority`: each row's probabilities are its vote fractions (WRENCH's MajorityVoting); a row where every LF
  abstains gets the uniform distribution.
- `snorkel`: Snorkel's `LabelModel` (matrix-completion over LF agreements), fitted with a fixed seed.

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


LABEL_MODELS: dict[str, type[LabelModel]] = {"majority": MajorityVote, "snorkel": SnorkelLabelModel}


def get_label_model(name: str, **params: Any) -> LabelModel:
    if name not in LABEL_MODELS:
        raise InputError(f"label model {name!r} unknown; valid: {', '.join(LABEL_MODELS)}")
    return LABEL_MODELS[name](**params)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Share of rows where pred == gold (pred -1 counts as wrong); None for no rows."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else None
