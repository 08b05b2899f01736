"""Inter-annotator agreement: pure cores over an (items × annotators) matrix, and the store edge.

The matrix `M` has one row per item (a record annotated by at least one person), one column per annotator,
the class index 0..k-1 an annotator gave, or -1 where they gave none (not asked, skipped, cancelled).

- `krippendorff_alpha(M, k)`: Krippendorff's alpha for nominal data (the `krippendorff` package); handles any
  number of annotators per item and missing answers; items with fewer than 2 answers carry no information.
- `fleiss_kappa(M, k)`: Fleiss' kappa (1971), generalised to a varying number of raters per item: the
  observed agreement of item i is sum_c n_ic (n_ic - 1) / (n_i (n_i - 1)) over items with n_i >= 2; the chance
  agreement sum_c p_c^2 from the pooled category proportions. With the same n for every item this is Fleiss'
  formula exactly (tests check the worked example of Fleiss 1971 / Wikipedia, kappa = 0.210).
- `per_label`: per class, Fleiss' category kappa and the alpha of the one-vs-rest (class c or not) matrix.
- `pairwise_cohen(M)`: Cohen's kappa (scikit-learn) and raw agreement for every pair of annotators on the items
  both answered.
- `annotator_stats(M, consensus)`: per annotator: items answered and agreement with the consensus label.
- `agreement_report(M, k, labels, annotators)`: all of the above as one JSON-able dict.
- `ordinal_alpha(R)`: Krippendorff's alpha (ordinal) over a ratings matrix (NaN = missing), for the 1-5 ratings
  of instruction reviews.

Store edge: `annotation_matrix(store, dataset)` reads the live annotations (not deleted, not cancelled, with a
label of the dataset's label set; the latest per annotator and record) and `dataset_agreement(store, dataset)`
adds the per-annotator median lead time and the ratings of instruction datasets; `plot_agreement` writes the
annotator × annotator heatmap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import InputError, NotFound
from curation.store import verdict_labels

log = logging.getLogger(__name__)

MISSING = -1


# -- pure cores --------------------------------------------------------------------------------------------
def check_annotations(M: np.ndarray, k: int) -> np.ndarray:
    M = np.asarray(M)
    if M.ndim != 2:
        raise InputError(f"annotation matrix must be 2-D (items × annotators); got shape {M.shape}")
    if k < 2:
        raise InputError(f"agreement needs at least 2 classes; got {k}")
    if M.size and (M.min() < MISSING or M.max() >= k):
        bad = np.argwhere((M < MISSING) | (M >= k))[0]
        raise InputError(f"annotation matrix item {bad[0]}, annotator {bad[1]}: label {M[tuple(bad)]} is outside "
                         f"-1..{k - 1}")
    return M.astype(np.int64, copy=False)


def category_counts(M: np.ndarray, k: int) -> np.ndarray:
    """(items × k): how many annotators gave each class to each item."""
    M = check_annotations(M, k)
    return np.stack([(M == c).sum(axis=1) for c in range(k)], axis=1) if M.size else np.zeros((len(M), k), int)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def fleiss_kappa(M: np.ndarray, k: int) -> float | None:
    """Fleiss' kappa over the items with at least 2 answers (None when there are none or chance agreement is 1)."""
    n = category_counts(M, k)
    ni = n.sum(axis=1)
    n = n[ni >= 2]
    ni = ni[ni >= 2]
    if len(n) == 0:
        return None
    p_obs = ((n * (n - 1)).sum(axis=1) / (ni * (ni - 1))).mean()
    p = n.sum(axis=0) / n.sum()
    p_exp = float((p ** 2).sum())
    if p_exp >= 1.0:
        return None
    return float((p_obs - p_exp) / (1.0 - p_exp))


def fleiss_category_kappa(M: np.ndarray, k: int) -> list[float | None]:
    """Fleiss' kappa of each class (Fleiss 1971, eq. 13), generalised to varying raters per item."""
    n = category_counts(M, k)
    ni = n.sum(axis=1)
    n, ni = n[ni >= 2], ni[ni >= 2]
    if len(n) == 0:
        return [None] * k
    p = n.sum(axis=0) / n.sum()
    out: list[float | None] = []
    for c in range(k):
        denom = len(n) * p[c] * (1 - p[c])
        if denom <= 0:
            out.append(None)
            continue
        disagree = (n[:, c] * (ni - n[:, c]) / (ni * (ni - 1))).sum()
        out.append(float(1.0 - disagree / denom))
    return out


def _reliability(M: np.ndarray) -> np.ndarray:
    """The `krippendorff` package's layout: annotators × items, NaN = missing."""
    R = np.asarray(M, dtype=np.float64).T.copy()
    R[R == MISSING] = np.nan
    return R


def _pairable(M: np.ndarray) -> np.ndarray:
    return (np.asarray(M) != MISSING).sum(axis=1) >= 2


def krippendorff_alpha(M: np.ndarray, k: int, level: str = "nominal") -> float | None:
    """Krippendorff's alpha (the `krippendorff` package) over the items with at least 2 answers; None when
    there is nothing to compare or every answer is the same class (alpha is undefined: no variation)."""
    M = check_annotations(M, k)
    M = M[_pairable(M)]
    if len(M) == 0 or len(np.unique(M[M != MISSING])) < 2:
        return None
    return _alpha(_reliability(M), level)


def _alpha(R: np.ndarray, level: str) -> float | None:
    try:
        import krippendorff
    except ImportError as e:  # pragma: no cover - a dependency
        raise InputError("agreement needs `pip install krippendorff`") from e
    vals = R[~np.isnan(R)]
    if len(np.unique(vals)) < 2:
        return None
    return _nan_to_none(float(krippendorff.alpha(reliability_data=R, level_of_measurement=level)))


def ordinal_alpha(R: np.ndarray, level: str = "ordinal") -> float | None:
    """Krippendorff's alpha of ratings (items × annotators, NaN = missing), ordinal by default."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2:
        raise InputError(f"ratings matrix must be 2-D (items × annotators); got shape {R.shape}")
    R = R[(~np.isnan(R)).sum(axis=1) >= 2]
    if len(R) == 0:
        return None
    return _alpha(R.T.copy(), level)


def pairwise_cohen(M: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """For every annotator pair: Cohen's kappa (scikit-learn, NaN when undefined or no shared item), raw
    agreement and the number of shared items. Symmetric (a × a) matrices; the diagonal is 1 (kappa, agreement)
    and the annotator's own count."""
    from sklearn.metrics import cohen_kappa_score

    M = check_annotations(M, k)
    a = M.shape[1]
    kappa = np.full((a, a), np.nan)
    agree = np.full((a, a), np.nan)
    shared = np.zeros((a, a), dtype=np.int64)
    for i in range(a):
        mine = M[:, i] != MISSING
        shared[i, i] = int(mine.sum())
        if mine.any():
            kappa[i, i] = agree[i, i] = 1.0
        for j in range(i + 1, a):
            both = mine & (M[:, j] != MISSING)
            s = int(both.sum())
            shared[i, j] = shared[j, i] = s
            if s == 0:
                continue
            x, y = M[both, i], M[both, j]
            agree[i, j] = agree[j, i] = float((x == y).mean())
            if len(np.union1d(x, y)) < 2:
                continue                          # one class only: kappa is undefined (0/0)
            kappa[i, j] = kappa[j, i] = float(cohen_kappa_score(x, y, labels=list(range(k))))
    return {"kappa": kappa, "agreement": agree, "shared": shared}


def annotator_stats(M: np.ndarray, consensus: np.ndarray) -> list[dict]:
    """Per annotator: items answered, items shared with someone else, agreement with the consensus label on
    the items at least 2 people answered (None without such items)."""
    M = np.asarray(M)
    consensus = np.asarray(consensus)
    multi = _pairable(M)
    out = []
    for j in range(M.shape[1]):
        mine = M[:, j] != MISSING
        rows = mine & multi & (consensus != MISSING)
        out.append({"items": int(mine.sum()), "shared_items": int((mine & multi).sum()),
                    "consensus_agreement": float((M[rows, j] == consensus[rows]).mean()) if rows.any() else None})
    return out


def _round(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, nd)
    return x


def agreement_report(M: np.ndarray, k: int, labels: Sequence[str], annotators: Sequence[str], *,
                     consensus: np.ndarray | None = None) -> dict:
    """Every agreement figure for one matrix, JSON-able. `consensus` (items,) is the consensus label per item
    (-1 none); default: the majority vote (ties: none)."""
    from labeling.consensus import consensus_labels

    M = check_annotations(M, k)
    if len(labels) != k or len(annotators) != M.shape[1]:
        raise InputError(f"{len(labels)} labels for k={k}, {len(annotators)} annotator names for "
                         f"{M.shape[1]} columns")
    if consensus is None:
        consensus = consensus_labels(M, k, "majority").labels
    pairable = _pairable(M)
    pw = pairwise_cohen(M, k)
    per_label_alpha = []
    for c in range(k):
        B = np.where(M == MISSING, MISSING, (M == c).astype(np.int64))
        per_label_alpha.append(krippendorff_alpha(B, 2))
    fck = fleiss_category_kappa(M, k)
    counts = category_counts(M, k)
    pairs = []
    for i in range(len(annotators)):
        for j in range(i + 1, len(annotators)):
            if pw["shared"][i, j]:
                pairs.append({"a": annotators[i], "b": annotators[j], "shared": int(pw["shared"][i, j]),
                              "agreement": _round(float(pw["agreement"][i, j])),
                              "cohen_kappa": _round(float(pw["kappa"][i, j]))})
    kappas = [p["cohen_kappa"] for p in pairs if p["cohen_kappa"] is not None]
    stats = annotator_stats(M, consensus)
    return {
        "items": len(M), "items_multi": int(pairable.sum()), "annotators": len(annotators),
        "answers": int((M != MISSING).sum()),
        "overall": {"krippendorff_alpha": _round(krippendorff_alpha(M, k)), "fleiss_kappa": _round(fleiss_kappa(M, k)),
                    "mean_cohen_kappa": _round(float(np.mean(kappas))) if kappas else None,
                    "percent_agreement": _round(_percent_agreement(M))},
        "per_label": [{"label": labels[c], "answers": int(counts[:, c].sum()),
                       "krippendorff_alpha": _round(per_label_alpha[c]), "fleiss_kappa": _round(fck[c])}
                      for c in range(k)],
        "pairs": pairs,
        "per_annotator": [{"annotator": annotators[j], **{key: _round(v) for key, v in s.items()}}
                          for j, s in enumerate(stats)],
        "matrix": {"annotators": list(annotators),
                   "cohen_kappa": [[_round(float(x)) for x in row] for row in pw["kappa"]],
                   "agreement": [[_round(float(x)) for x in row] for row in pw["agreement"]]},
    }


def _percent_agreement(M: np.ndarray) -> float | None:
    """The share of agreeing answer pairs within items (items with >= 2 answers, each weighted equally)."""
    rows = M[_pairable(M)]
    if len(rows) == 0:
        return None
    vals = []
    for r in rows:
        r = r[r != MISSING]
        _, c = np.unique(r, return_counts=True)
        vals.append((c * (c - 1)).sum() / (len(r) * (len(r) - 1)))
    return float(np.mean(vals))


# -- store edge --------------------------------------------------------------------------------------------
@dataclass
class Annotations:
    """The live annotations of a dataset as a matrix: `M` (items × annotators), the record id of each row, the
    annotator of each column, the label set; `lead` (items × annotators, NaN) lead times; `ratings` (NaN)."""

    M: np.ndarray
    record_ids: np.ndarray
    annotators: list[str]
    labels: list[str]
    lead: np.ndarray
    ratings: np.ndarray
    task: str


def _live_sql() -> str:
    return ("SELECT a.record_id, coalesce(a.annotator, 'unknown') AS annotator, a.label, a.lead_time, a.rating, "
            "a.updated_at, a.annotation_id FROM store.annotations a JOIN store.records r USING (record_id) "
            "WHERE r.dataset = ? AND NOT a.deleted AND NOT coalesce(a.was_cancelled, false) "
            "QUALIFY row_number() OVER (PARTITION BY a.record_id, coalesce(a.annotator, 'unknown') "
            "ORDER BY a.updated_at DESC NULLS LAST, a.annotation_id DESC) = 1 ORDER BY a.record_id, annotator")


def annotation_matrix(store, dataset: str, *, labels: Sequence[str] | None = None) -> Annotations:
    """The dataset's live annotations (the latest per annotator and record) as an `Annotations` matrix.
    Instruction datasets use the keep/drop verdict as the label (`labels` = keep, drop)."""
    ds = store.dataset(dataset)
    task = ds["task"] or "classification"
    if labels is None:
        labels = verdict_labels(ds)
    if len(labels) < 2:
        raise InputError(f"dataset {dataset!r} has no label set (ingest it with --labels a,b,...)")
    index = {lab: i for i, lab in enumerate(labels)}
    rows = store.query(_live_sql(), [dataset])
    rows = [r for r in rows if r[2] in index or r[4] is not None]
    if not rows:
        raise NotFound(f"dataset {dataset!r} has no annotations yet; push a selection to Label Studio and pull, "
                       f"or `curate annotations import FILE --dataset {dataset}`")
    rec = sorted({r[0] for r in rows})
    ann = sorted({r[1] for r in rows})
    ri, ai = {x: i for i, x in enumerate(rec)}, {x: i for i, x in enumerate(ann)}
    M = np.full((len(rec), len(ann)), MISSING, dtype=np.int64)
    lead = np.full(M.shape, np.nan)
    ratings = np.full(M.shape, np.nan)
    for rid, who, label, lt, rating, *_ in rows:
        i, j = ri[rid], ai[who]
        if label in index:
            M[i, j] = index[label]
        if lt is not None:
            lead[i, j] = float(lt)
        if rating is not None:
            ratings[i, j] = float(rating)
    return Annotations(M, np.asarray(rec, dtype=np.int64), ann, list(labels), lead, ratings, task)


def dataset_agreement(store, dataset: str, *, method: str = "majority", png: str | Path | None = None) -> dict:
    """`agreement_report` for a dataset's annotations, plus per annotator the median lead time (seconds), and
    for instruction datasets the agreement on keep/drop and on the 1-5 ratings (ordinal alpha).
    `method` is the consensus the per-annotator agreement is measured against (majority | dawid_skene)."""
    from labeling.consensus import consensus_labels

    a = annotation_matrix(store, dataset)
    k = len(a.labels)
    cons = consensus_labels(a.M, k, method)
    report = agreement_report(a.M, k, a.labels, a.annotators, consensus=cons.labels)
    for j, row in enumerate(report["per_annotator"]):
        lt = a.lead[:, j][~np.isnan(a.lead[:, j])]
        row["median_lead_time"] = _round(float(np.median(lt))) if len(lt) else None
    report = {"dataset": dataset, "task": a.task, "labels": a.labels, "consensus_method": method, **report}
    if a.task == "instruction":
        report["ratings"] = {"rated_items": int(((~np.isnan(a.ratings)).sum(axis=1) >= 1).sum()),
                             "krippendorff_alpha_ordinal": _round(ordinal_alpha(a.ratings)),
                             "krippendorff_alpha_interval": _round(ordinal_alpha(a.ratings, "interval"))}
    if png is not None:
        report["png"] = str(plot_agreement(report, png))
    return report


def plot_agreement(report: dict, path: str | Path, value: str = "cohen_kappa") -> Path:
    """Annotator × annotator heatmap of pairwise Cohen's kappa (or raw `agreement`), annotated cells."""
    from curation.plots import pyplot, save_figure

    plt = pyplot()
    names = report["matrix"]["annotators"]
    mat = np.array([[np.nan if x is None else x for x in row] for row in report["matrix"][value]], dtype=float)
    size = max(3.5, 0.9 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(mat, vmin=-0.2 if value == "cohen_kappa" else 0.0, vmax=1.0, cmap="viridis")
    short = [n.split("@")[0][:14] for n in names]
    ax.set_xticks(range(len(names)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), short)
    for i in range(len(names)):
        for j in range(len(names)):
            if not np.isnan(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center",
                        color="black" if mat[i, j] > 0.5 else "white", fontsize=9)
    alpha = report.get("overall", {}).get("krippendorff_alpha")
    ax.set_title(f"{'Cohen kappa' if value == 'cohen_kappa' else 'agreement'} between annotators"
                 + (f" (alpha {alpha:.2f})" if alpha is not None else ""), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)
