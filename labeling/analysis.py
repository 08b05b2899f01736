"""LF analysis over a label matrix (pure), with the definitions of Snorkel's `LFAnalysis`:

- polarity: the labels an LF emitted;
- coverage: share of rows it voted on;
- overlaps: share of rows it voted on where at least one other LF voted too;
- conflicts: share of rows it voted on where another LF voted a different label;
- correct / incorrect / emp_accuracy: on the rows with a gold label that it voted on (None without gold).
Totals: the set's coverage (rows with any vote), overlap and conflict shares, and rows with gold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ABSTAIN = -1


def lf_stats(L: np.ndarray, names: Sequence[str], labels: Sequence[str], gold: np.ndarray | None = None) -> dict:
    """Per-LF and total statistics. `gold`: class index per row, -1 where unknown (or None)."""
    L = np.asarray(L)
    n, m = L.shape
    voted = L != ABSTAIN
    n_votes = voted.sum(axis=1)
    k = len(labels)
    # rows where some LF voted class c
    has_class = np.stack([(L == c).any(axis=1) for c in range(k)], axis=1) if n else np.zeros((0, k), bool)
    n_classes = has_class.sum(axis=1)
    gold_known = np.zeros(n, bool) if gold is None else (np.asarray(gold) != ABSTAIN)
    rows = []
    for j in range(m):
        v = voted[:, j]
        cnt = int(v.sum())
        # another LF voted on the row
        overlap = v & (n_votes > 1)
        # another LF voted a different label: more than one class present on the row
        conflict = v & (n_classes > 1)
        row = {
            "lf": names[j], "j": j,
            "polarity": [labels[c] for c in sorted(set(L[v, j].tolist()))],
            "votes": cnt,
            "coverage": cnt / n if n else 0.0,
            "overlaps": float(overlap.sum()) / n if n else 0.0,
            "conflicts": float(conflict.sum()) / n if n else 0.0,
        }
        if gold is not None:
            g = v & gold_known
            correct = int((L[g, j] == np.asarray(gold)[g]).sum())
            row |= {"gold_votes": int(g.sum()), "correct": correct, "incorrect": int(g.sum()) - correct,
                    "emp_accuracy": correct / int(g.sum()) if g.any() else None}
        rows.append(row)
    total = {
        "rows": n, "lfs": m,
        "coverage": float((n_votes > 0).mean()) if n else 0.0,
        "overlap": float((n_votes > 1).mean()) if n else 0.0,
        "conflict": float((n_classes > 1).mean()) if n else 0.0,
        "rows_with_gold": int(gold_known.sum()),
    }
    return {"lfs": rows, "total": total}


def plot_report(stats: dict, path: str | Path, title: str = "LF analysis") -> Path:
    """A PNG: coverage / overlaps / conflicts per LF, and empirical accuracy where gold exists."""
    import matplotlib

    from curation.plots import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = stats["lfs"]
    names = [r["lf"] for r in rows]
    y = np.arange(len(rows))
    has_acc = any(r.get("emp_accuracy") is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 7, 1.2 + 0.35 * len(rows)),
                             squeeze=False, sharey=True)
    ax = axes[0][0]
    h = 0.27
    ax.barh(y - h, [r["coverage"] for r in rows], h, label="coverage")
    ax.barh(y, [r["overlaps"] for r in rows], h, label="overlaps")
    ax.barh(y + h, [r["conflicts"] for r in rows], h, label="conflicts")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of rows")
    ax.set_title(f"{title} — set coverage {stats['total']['coverage']:.1%}")
    ax.legend(loc="lower right", fontsize=8)
    if has_acc:
        ax2 = axes[0][1]
        acc = [r.get("emp_accuracy") or 0.0 for r in rows]
        ax2.barh(y, acc, 0.6, color="tab:green")
        for yi, r in zip(y, rows):
            if r.get("emp_accuracy") is not None:
                ax2.text(r["emp_accuracy"] + 0.01, yi, f"{r['emp_accuracy']:.2f} (n={r['gold_votes']})",
                         va="center", fontsize=7)
        ax2.set_xlim(0, 1.25)
        ax2.set_xlabel("empirical accuracy on gold rows")
    return save_figure(fig, path, dpi=110)
