"""Consensus: one gold label from several annotations, with its provenance (method, confidence).

Pure core: `consensus_labels(M, k, method)` over an (items × annotators) matrix (-1 = no answer), the same
matrix `labeling.agreement` measures:
- `majority`: vote fractions; confidence = the winning fraction; a tie (two classes with the top count) is
  flagged and labelled -1 here (the store edge gives a tied record the latest annotation among the tied labels).
- `dawid_skene`: `labeling.label_model.DawidSkene` with annotators as sources and `abstain="missing"` (an
  annotator who was not asked says nothing); confidence = the posterior of the chosen class; the annotators'
  estimated accuracies come with it, which is how a careless annotator shows (and is down-weighted).

`record_gold(annotations)` is the per-record rule the annotation sync uses after every change: one annotator →
the latest annotation, exactly as before (method `latest`, no confidence); several → their majority (method
`majority`, confidence = the winning fraction; a tie goes to the latest annotation among the tied labels).

Store edge: `apply_consensus(store, dataset, method, threshold)` recomputes the gold label of every record with
annotations from at least 2 annotators (Dawid–Skene needs the whole dataset, so it runs here, not per webhook:
re-run it after a batch of annotations); `send_back(...)` hands ties and low-confidence tasks (confidence <
threshold) back to Label Studio for one more annotator (the task's overlap is raised by one and it is marked
unlabelled, so the label stream serves it to someone who has not annotated it — measured on LS 1.23.2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from curation.errors import InputError, NotFound
from curation.store import now

log = logging.getLogger(__name__)

METHODS = ("majority", "dawid_skene")
DEFAULT_THRESHOLD = 0.6


@dataclass
class Consensus:
    """Per item: `labels` (-1: none, or a majority tie), `confidence`, `probs` (items × k), `tie`; per
    annotator: `annotator_accuracy` (Dawid–Skene's estimate; for majority, agreement with the majority)."""

    labels: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray
    tie: np.ndarray
    method: str
    annotator_accuracy: list[float | None] = field(default_factory=list)


def consensus_labels(M: np.ndarray, k: int, method: str = "majority", *, smoothing: float = 1.0) -> Consensus:
    from labeling.agreement import MISSING, check_annotations
    from labeling.label_model import TIE_TOL, DawidSkene, majority_probs

    if method not in METHODS:
        raise InputError(f"consensus method {method!r} unknown; valid: {', '.join(METHODS)}")
    M = check_annotations(M, k)
    answered = (M != MISSING).any(axis=1) if M.size else np.zeros(len(M), bool)
    if method == "majority" or len(M) == 0:
        probs = majority_probs(M, k) if len(M) else np.zeros((0, k))
        acc: list[float | None] = []
    else:
        ds = DawidSkene(abstain="missing", smoothing=smoothing).fit(M, k)
        probs = ds.predict_proba(M)
        acc = [float(x) for x in ds.source_accuracies()]
    top = probs.max(axis=1) if len(probs) else np.zeros(0)
    tie = (np.abs(probs - top[:, None]) < TIE_TOL).sum(axis=1) > 1 if len(probs) else np.zeros(0, bool)
    labels = np.where(tie | ~answered, MISSING, probs.argmax(axis=1) if len(probs) else 0).astype(np.int64)
    conf = np.where(answered, top, 0.0)
    if method == "majority":
        acc = []
        for j in range(M.shape[1]):
            rows = (M[:, j] != MISSING) & (labels != MISSING) & ((M != MISSING).sum(axis=1) >= 2)
            acc.append(float((M[rows, j] == labels[rows]).mean()) if rows.any() else None)
    return Consensus(labels, conf, probs, tie & answered, method, acc)


@dataclass(frozen=True)
class RecordGold:
    label: str
    source_ref: str             # the annotation id the label is attributed to
    annotator: str | None
    method: str                 # latest | majority
    confidence: float | None
    tie: bool = False


def record_gold(annotations: Sequence[tuple[int, str, str | None]]) -> RecordGold | None:
    """The gold label of one record from its live annotations, latest first: (annotation_id, label, annotator).
    One annotator: the latest annotation (as before). Several: the majority over each annotator's latest
    annotation; a tie goes to the latest annotation among the tied labels."""
    if not annotations:
        return None
    latest_per: dict[str | None, tuple[int, str, str | None]] = {}
    for a in annotations:
        latest_per.setdefault(a[2], a)
    if len(latest_per) < 2:
        aid, label, who = annotations[0]
        return RecordGold(label, str(aid), who, "latest", None)
    counts: dict[str, int] = {}
    for _, label, _ in latest_per.values():
        counts[label] = counts.get(label, 0) + 1
    best = max(counts.values())
    tied = {lab for lab, c in counts.items() if c == best}
    aid, label, who = next(a for a in latest_per.values() if a[1] in tied)   # latest first
    return RecordGold(label, str(aid), who, "majority", best / len(latest_per), len(tied) > 1)


# -- store edge --------------------------------------------------------------------------------------------
def apply_consensus(store, dataset: str, method: str = "majority", *, threshold: float = DEFAULT_THRESHOLD,
                    dry_run: bool = False) -> dict:
    """Recompute the gold label of every record of `dataset` with annotations from >= 2 annotators by `method`;
    records with one annotator keep the latest annotation. Returns counts, the per-annotator accuracy estimate
    and `low` (record ids whose consensus is tied or below `threshold`, lowest first)."""
    from labeling.agreement import annotation_matrix

    a = annotation_matrix(store, dataset)
    k = len(a.labels)
    cons = consensus_labels(a.M, k, method)
    multi = (a.M != -1).sum(axis=1) >= 2
    live = _latest_live(store, dataset)
    changed = same = 0
    low: list[tuple[float, int]] = []
    rows = []
    for i in np.flatnonzero(multi):
        rid = int(a.record_ids[i])
        anns = live.get(rid, [])
        if cons.tie[i] or cons.confidence[i] < threshold:
            low.append((float(cons.confidence[i]), rid))
        if cons.labels[i] >= 0:
            label = a.labels[cons.labels[i]]
        else:       # a tie: the latest annotation among the tied labels
            tied = {a.labels[c] for c in np.flatnonzero(np.abs(cons.probs[i] - cons.probs[i].max()) < 1e-5)}
            label = next((x[1] for x in anns if x[1] in tied), None)
            if label is None:
                continue
        src = next((x for x in anns if x[1] == label), None)
        rows.append((rid, label, str(src[0]) if src else None, src[2] if src else None,
                     method, round(float(cons.confidence[i]), 6)))
    if not dry_run:
        with store.transaction() as cur:
            for rid, label, ref, who, meth, conf in rows:
                cur_gold = cur.execute("SELECT label, method, confidence, source FROM store.gold_labels "
                                       "WHERE record_id = ?", [rid]).fetchall()
                if cur_gold and cur_gold[0][:3] == (label, meth, conf) and cur_gold[0][3] == "annotation":
                    same += 1
                    continue
                cur.execute("INSERT OR REPLACE INTO store.gold_labels (record_id, label, source, source_ref, "
                            "annotator, updated_at, method, confidence) VALUES (?, ?, 'annotation', ?, ?, ?, ?, ?)",
                            [rid, label, ref, who, now(), meth, conf])
                changed += 1
    low.sort()
    return {"dataset": dataset, "method": method, "threshold": threshold, "items": len(a.M),
            "multi_annotated": int(multi.sum()), "gold_set": len(rows), "changed": changed, "unchanged": same,
            "dry_run": dry_run, "ties": int(cons.tie[multi].sum()), "low_agreement": len(low),
            "low_record_ids": [rid for _, rid in low],
            "annotators": [{"annotator": who, "accuracy": None if x is None else round(x, 4),
                            "items": int((a.M[:, j] != -1).sum())}
                           for j, (who, x) in enumerate(zip(a.annotators, cons.annotator_accuracy))]}


def _latest_live(store, dataset: str) -> dict[int, list[tuple[int, str, str | None]]]:
    out: dict[int, list[tuple[int, str, str | None]]] = {}
    for rid, aid, label, who in store.query(
            "SELECT a.record_id, a.annotation_id, a.label, a.annotator FROM store.annotations a "
            "JOIN store.records r USING (record_id) WHERE r.dataset = ? AND NOT a.deleted "
            "AND NOT coalesce(a.was_cancelled, false) AND a.label IS NOT NULL "
            "ORDER BY a.updated_at DESC NULLS LAST, a.annotation_id DESC", [dataset]):
        out.setdefault(int(rid), []).append((int(aid), label, who))
    return out


def send_back(store, dataset: str, record_ids: Sequence[int], client) -> dict:
    """Hand the tasks of `record_ids` back to Label Studio for one more annotator: overlap = live annotations
    + 1 and is_labeled = false (Label Studio does not recompute `is_labeled` when only the overlap changes).
    Records without a task of the dataset's project are counted as `no_task`."""
    pid = store.one("SELECT project_id FROM store.ls_projects WHERE dataset = ?", [dataset])
    if pid is None:
        raise NotFound(f"dataset {dataset!r} has no Label Studio project; `curate studio connect {dataset}`")
    counts = {"sent_back": 0, "no_task": 0}
    tasks = []
    for rid in record_ids:
        row = store.query("SELECT t.task_id, (SELECT count(DISTINCT coalesce(a.annotator, '')) FROM "
                          "store.annotations a WHERE a.task_id = t.task_id AND NOT a.deleted AND NOT "
                          "coalesce(a.was_cancelled, false)) FROM store.ls_tasks t WHERE t.project_id = ? AND "
                          "t.record_id = ? LIMIT 1", [pid, int(rid)])
        if not row:
            counts["no_task"] += 1
            continue
        client.tasks.reopen(int(row[0][0]), int(row[0][1]) + 1)
        tasks.append(int(row[0][0]))
        counts["sent_back"] += 1
    return {"dataset": dataset, "project_id": pid, **counts, "task_ids": tasks}
