"""Pure evaluation measures over arrays (numpy in, numbers/arrays out).

`y` are class indexes (int, shape (n,)), `probs` are predicted probabilities (float, shape (n, k)).
"""

import numpy as np

# the uncertainty measures have one definition, in labeling.uncertainty; re-exported for `metrics.margin(...)`
from labeling.uncertainty import entropy, least_confidence, margin  # noqa: F401


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y), np.asarray(pred)
    return float((y == pred).mean()) if len(y) else float("nan")


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted class."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


def per_class(y: np.ndarray, pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """precision, recall, f1 and support per class; 0 where undefined (no predictions / no support)."""
    m = confusion(y, pred, k)
    tp = np.diag(m).astype(float)
    predicted, support = m.sum(0), m.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean F1 over the classes present in `y` or in `pred` (as scikit-learn's `f1_score(average='macro')`)."""
    pc = per_class(y, pred, k)
    present = (pc["support"] > 0) | (confusion(y, pred, k).sum(0) > 0)
    return float(pc["f1"][present].mean()) if present.any() else float("nan")


def reliability(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> list[dict]:
    """Reliability-diagram data: per equal-width confidence bin, its count, mean confidence and accuracy."""
    probs = np.asarray(probs, dtype=float)
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                    "confidence": float(conf[sel].mean()) if n else None,
                    "accuracy": float(correct[sel].mean()) if n else None})
    return out


def ece(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: Σ_bins |bin| / n · |accuracy − confidence| (equal-width bins)."""
    n = len(y)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(y, probs, bins) if b["count"]))


def evaluate(y: np.ndarray, probs: np.ndarray, labels: list[str], bins: int = 15) -> dict:
    """Everything a run reports for one split, JSON-ready."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    k = len(labels)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    pc = per_class(y, pred, k)
    return {
        "n": len(y),
        "accuracy": accuracy(y, pred),
        "macro_f1": macro_f1(y, pred, k),
        "ece": ece(y, probs, bins),
        "per_class": {lab: {"precision": float(pc["precision"][i]), "recall": float(pc["recall"][i]),
                            "f1": float(pc["f1"][i]), "support": int(pc["support"][i])}
                      for i, lab in enumerate(labels)},
        "confusion": confusion(y, pred, k).tolist(),
        "reliability": reliability(y, probs, bins),
    }
