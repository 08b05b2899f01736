"""Uncertainty of class-probability rows: the one definition that scoring, selection and Label Studio ordering share.

The raw measures keep their textbook meaning (`margin` is p(top-1) − p(top-2), LOWER = more uncertain);
`uncertainty(probs, kind)` puts every kind on one scale: 0 for a one-hot row, higher = more uncertain, at most 1,
so that 1 − uncertainty is a confidence (the pre-annotation score that orders Label Studio's stream).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from curation.errors import InputError


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 − max p: 0 when certain, (k−1)/k at the uniform distribution. Higher = more uncertain."""
    return 1.0 - np.asarray(probs, dtype=float).max(1)


def margin(probs: np.ndarray) -> np.ndarray:
    """p(top-1) − p(top-2): 1 when certain, 0 at a tie. LOWER = more uncertain."""
    p = np.asarray(probs, dtype=float)
    if p.shape[1] < 2:
        return np.ones(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(probs: np.ndarray) -> np.ndarray:
    """−Σ p log p in nats: 0 when certain, log k at the uniform distribution. Higher = more uncertain."""
    p = np.asarray(probs, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(1)


def _scaled_entropy(p: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    return entropy(p) / math.log(k) if k > 1 else np.zeros(len(p))


UNCERTAINTY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": lambda p: 1.0 - margin(p) if p.shape[1] >= 2 else np.zeros(len(p)),
    "entropy": _scaled_entropy,
}


def uncertainty(probs: np.ndarray, kind: str = "least_confidence") -> np.ndarray:
    """Uncertainty per row on one scale: 0 for one-hot rows; margin and entropy are 1 for uniform rows, least
    confidence is 1 − max p (at most 1 − 1/k)."""
    if kind not in UNCERTAINTY:
        raise InputError(f"unknown uncertainty {kind!r}; valid: {', '.join(UNCERTAINTY)}")
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or len(p) == 0:
        return np.zeros(len(p))
    return np.clip(UNCERTAINTY[kind](p), 0.0, 1.0)


def measures(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The raw measures a scored pool stores, by name."""
    return {"least_confidence": least_confidence(probs), "margin": margin(probs), "entropy": entropy(probs)}
