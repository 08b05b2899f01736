"""Label-error detection: which gold (or weak) labels look wrong, and their review in Label Studio.

Pure cores:
- `out_of_fold_probs(X, y, k, folds, seed)`: cross-validated predicted probabilities — every row is predicted
  by a logistic regression fitted on the other folds, so its own (possibly wrong) label never vouches for it;
- `find_issues(y, probs)`: cleanlab's `filter.find_label_issues` (confident learning, prune by noise rate) on
  those probabilities; each suspect gets `score` = cleanlab's label-quality score (self-confidence: the
  out-of-fold probability of its given label; lower = more suspect) and `suggested` = the most likely class.

Features (`method`):
- `embeddings` (default, fast): frozen base-encoder sentence embeddings (mean-pooled, L2-normalised; the
  encoder `base_model`: the CLI and API pass the training base model `training.config.default_base_model()`)
  + logistic regression;
- `lora`: the embeddings a LoRA run's encoder wrote when it scored the dataset (`curate score --run R --all`
  stores them in `predictions.embedding`) + the same cross-validated head. The encoder itself saw the train
  labels, so only the head is out-of-fold: it finds fewer flips than a fully cross-validated fine-tune would.

Store edge: `detect_label_issues(store, dataset, labels="gold"|"weak")` writes `store.label_issues` (a label a
reviewer already reviewed is not flagged again); `select_issues` makes a selection with
strategy `label_issues` (most suspect first); `push_issues` sends it to Label Studio: the suggested label is the
pre-annotation, the current label is in the task data (`current_label`); a task that already exists is
reopened for one more annotator. `labeling.studio.sync.review_issue` records the outcome (confirmed /
corrected) when the review annotation arrives.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.errors import InputError, NotFound
from curation.store import now, verdict_labels

log = logging.getLogger(__name__)

METHODS = ("embeddings", "lora")
LABEL_KINDS = ("gold", "weak")
STRATEGY = "label_issues"


# -- pure cores --------------------------------------------------------------------------------------------
def out_of_fold_probs(X: np.ndarray, y: np.ndarray, k: int, *, folds: int = 5, seed: int = 0,
                      C: float = 2.0) -> np.ndarray:
    """(n, k) probabilities, each row predicted by a logistic regression fitted on the other folds
    (stratified; the fold count is lowered to the smallest class size, at least 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise InputError(f"{len(X)} feature rows for {len(y)} labels")
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        raise InputError(f"label-issue detection needs at least 2 classes among the labels; got {present.tolist()}")
    n_folds = int(min(folds, counts.min()))
    if n_folds < 2:
        small = present[counts.argmin()]
        raise InputError(f"class {small} has {counts.min()} labeled row(s); cross-validation needs at least 2 per "
                         f"class")
    out = np.zeros((len(y), k))
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, y):
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(X[train], y[train])
        out[np.ix_(test, model.classes_)] = model.predict_proba(X[test])
    return out


@dataclass
class Issues:
    """`mask` (n,) flagged rows; `score` (n,) label quality (lower = more suspect); `suggested` (n,) class."""

    mask: np.ndarray
    score: np.ndarray
    suggested: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        """Flagged rows, most suspect first."""
        idx = np.flatnonzero(self.mask)
        return idx[np.argsort(self.score[idx], kind="stable")]


def find_issues(y: np.ndarray, probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate") -> Issues:
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError as e:  # pragma: no cover - a dependency
        raise InputError("label-issue detection needs `pip install cleanlab`") from e
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = np.asarray(find_label_issues(y, probs, filter_by=filter_by), dtype=bool)
        score = np.asarray(get_label_quality_scores(y, probs, method="self_confidence"), dtype=np.float64)
    return Issues(mask, score, probs.argmax(axis=1))


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Precision and recall of a flagged mask against the truly wrong rows."""
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    tp = int((flagged & truth).sum())
    return {"flagged": int(flagged.sum()), "wrong": int(truth.sum()), "true_positives": tp,
            "precision": tp / flagged.sum() if flagged.any() else None,
            "recall": tp / truth.sum() if truth.any() else None}


# -- features ----------------------------------------------------------------------------------------------
def embed_texts(texts: Sequence[str], *, base_model: str | None, batch_size: int = 64,
                max_length: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings of the frozen base encoder (no fine-tuning); batches
    sorted by length (dynamic padding)."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:  # pragma: no cover - dependencies
        raise InputError("embeddings need torch and transformers (`pip install -e .`)") from e
    if not base_model:
        raise InputError("embeddings need base_model (a local path or hub name; the CLI and API pass "
                         "training.config.default_base_model())")
    tok, model = AutoTokenizer.from_pretrained(base_model), AutoModel.from_pretrained(base_model).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(vec, dim=-1).numpy()
    return out


# -- store edge --------------------------------------------------------------------------------------------
def _labeled_rows(store, dataset: str, labels: str, label_set: list[str]) -> tuple[list, str]:
    if labels == "gold":
        rows = store.query(
            "SELECT r.record_id, r.text, g.label, g.source FROM store.records r JOIN store.gold_labels g "
            "USING (record_id) WHERE r.dataset = ? AND r.origin = 'ingest' ORDER BY r.record_id", [dataset])
        return [r for r in rows if r[2] in label_set], "gold"
    model = store.one("SELECT model_id FROM store.label_models WHERE dataset = ? ORDER BY created_at DESC, "
                      "model_id DESC LIMIT 1", [dataset])
    if model is None:
        raise NotFound(f"dataset {dataset!r} has no weak labels; run `curate label --dataset {dataset}` first")
    rows = store.query(
        "SELECT r.record_id, r.text, w.label, ? FROM store.records r JOIN store.weak_labels w USING (record_id) "
        "WHERE r.dataset = ? AND r.origin = 'ingest' AND w.model_id = ? AND w.label IS NOT NULL "
        "ORDER BY r.record_id", [f"weak:{model}", dataset, model])
    return [r for r in rows if r[2] in label_set], f"weak:{model}"


def detect_label_issues(store, dataset: str, *, labels: str = "gold", method: str = "embeddings",
                        run_id: str | None = None, folds: int = 5, seed: int = 0, base_model: str | None = None,
                        top: int = 20, dry_run: bool = False) -> dict:
    """Find the labels of `dataset` that look wrong (see the module doc) and store them in `label_issues`.
    Returns counts, per-label counts, and the `top` suspects (record_id, label, suggested, score, text)."""
    if labels not in LABEL_KINDS:
        raise InputError(f"--labels {labels!r}; valid: {', '.join(LABEL_KINDS)}")
    if method not in METHODS:
        raise InputError(f"--method {method!r}; valid: {', '.join(METHODS)}")
    label_set = verdict_labels(store.dataset(dataset))
    if len(label_set) < 2:
        raise InputError(f"dataset {dataset!r} has no label set")
    rows, source = _labeled_rows(store, dataset, labels, label_set)
    if len(rows) < 10:
        raise InputError(f"dataset {dataset!r} has {len(rows)} {labels} labels; label-issue detection needs at "
                         f"least 10 (cross-validation)")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    index = {lab: i for i, lab in enumerate(label_set)}
    y = np.array([index[r[2]] for r in rows], dtype=np.int64)
    if method == "embeddings":
        X = embed_texts([r[1] for r in rows], base_model=base_model)
        feature = f"frozen {base_model or 'default base model'} embeddings + logistic regression"
    else:
        if run_id is None:
            raise InputError("--method lora needs --run RUN (a LoRA run that scored the dataset with --all)")
        emb = dict(store.query("SELECT record_id, embedding FROM store.predictions WHERE run_id = ? "
                               "AND embedding IS NOT NULL", [run_id]))
        missing = [int(i) for i in ids if int(i) not in emb]
        if missing:
            raise InputError(f"run {run_id} has no embedding for {len(missing)} labeled records (e.g. {missing[:3]}); "
                             f"run `curate score --run {run_id} --all` first")
        X = np.asarray([emb[int(i)] for i in ids], dtype=np.float32)
        feature = f"run {run_id} encoder embeddings + logistic regression (head cross-validated)"
    probs = out_of_fold_probs(X, y, len(label_set), folds=folds, seed=seed)
    found = find_issues(y, probs)
    order = found.indices
    ts = now()
    written = skipped = 0
    if not dry_run:
        with store.transaction() as cur:
            same_kind = ("label_source LIKE 'weak:%'" if labels == "weak"
                         else "(label_source IS NULL OR label_source NOT LIKE 'weak:%')")
            cur.execute(f"DELETE FROM store.label_issues WHERE dataset = ? AND outcome IS NULL AND {same_kind}",
                        [dataset])
            for i in order:
                rid, label = int(ids[i]), label_set[y[i]]
                prev = cur.execute("SELECT outcome, label FROM store.label_issues WHERE dataset = ? AND record_id = ?",
                                   [dataset, rid]).fetchall()
                if prev and prev[0][0] is not None and prev[0][1] == label:
                    skipped += 1                # a person already reviewed this very label
                    continue
                lsrc = source if labels == "weak" else str(rows[i][3])
                cur.execute("INSERT OR REPLACE INTO store.label_issues (dataset, record_id, label, label_source, "
                            "suggested, score, method, found_at, outcome, reviewed_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                            [dataset, rid, label, lsrc, label_set[found.suggested[i]], float(found.score[i]),
                             method if method == "embeddings" else f"lora:{run_id}", ts])
                written += 1
    per_label = {lab: {"rows": int((y == c).sum()), "flagged": int((found.mask & (y == c)).sum())}
                 for c, lab in enumerate(label_set)}
    text = {r[0]: r[1] for r in rows}
    return {"dataset": dataset, "labels": labels, "label_source": source, "method": method, "features": feature,
            "rows": len(y), "folds": int(min(folds, np.bincount(y)[np.bincount(y) > 0].min())), "flagged": int(found.mask.sum()),
            "flagged_fraction": round(float(found.mask.mean()), 4), "stored": written,
            "already_reviewed": skipped, "dry_run": dry_run,
            "out_of_fold_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 4), "per_label": per_label,
            "suspects": [{"record_id": int(ids[i]), "label": label_set[y[i]],
                          "suggested": label_set[found.suggested[i]], "score": round(float(found.score[i]), 4),
                          "text": text[int(ids[i])][:120]} for i in order[:top]]}


def list_issues(store, dataset: str, *, outcome: str | None = None, limit: int = 100) -> list[dict]:
    """Stored suspects of a dataset, most suspect first; `outcome` = open | confirmed | corrected filters."""
    where, params = "i.dataset = ?", [dataset]
    if outcome == "open":
        where += " AND i.outcome IS NULL"
    elif outcome is not None:
        where += " AND i.outcome = ?"
        params.append(outcome)
    rows = store.query(f"SELECT i.record_id, i.label, i.label_source, i.suggested, i.score, i.method, i.outcome, "
                       f"i.found_at, i.reviewed_at, r.text FROM store.label_issues i JOIN store.records r "
                       f"USING (record_id) WHERE {where} ORDER BY i.outcome NULLS FIRST, i.score, i.record_id "
                       f"LIMIT ?", [*params, int(limit)])
    keys = ("record_id", "label", "label_source", "suggested", "score", "method", "outcome", "found_at",
            "reviewed_at", "text")
    return [dict(zip(keys, r)) for r in rows]


def select_issues(store, dataset: str, n: int, *, run_id: str | None = None, round: int | None = None) -> dict:
    """A selection (strategy `label_issues`) of the `n` most suspect unreviewed labels, most suspect first
    (score = 1 - label quality). Suspects already in a task of the project wait for their annotation and are
    left out only while that task is open for them (an open review)."""
    from labeling.active.strategies import check_size

    rows = store.query("SELECT record_id, score FROM store.label_issues WHERE dataset = ? AND outcome IS NULL "
                       "AND record_id NOT IN (SELECT record_id FROM store.selections WHERE dataset = ? "
                       "AND strategy = ?) ORDER BY score, record_id", [dataset, dataset, STRATEGY])
    check_size(len(rows), n, f" (open label issues of {dataset!r} not selected yet; run `curate label-issues "
                             f"--dataset {dataset}`)")
    rows = rows[:n]
    if round is None:
        round = (store.one("SELECT max(round) FROM store.selections WHERE dataset = ?", [dataset]) or 0) + 1
    selection_id = f"sel-{dataset}-r{round}-issues-{secrets.token_hex(3)}"
    ts = now()
    with store.transaction() as cur:
        cur.executemany("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, "
                        "score, rank, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[selection_id, dataset, round, run_id, int(rid), STRATEGY, 1.0 - float(s), rank, ts]
                         for rank, (rid, s) in enumerate(rows, start=1)])
    return {"selection_id": selection_id, "dataset": dataset, "round": round, "run_id": run_id,
            "strategy": STRATEGY, "seed": 0, "n": len(rows),
            "pool": {"open_issues": len(rows)}, "record_ids": [int(r[0]) for r in rows],
            "scores": [1.0 - float(r[1]) for r in rows], "params": {}}


def push_issues(store, selection_id: str, *, client, batch_size: int = 1000) -> dict:
    """Send a `label_issues` selection to Label Studio for review: each suspect's task shows the current label
    in its data (`current_label`, `review` = 'label_issue') and the suggested label as the pre-annotation
    (model_version `<selection_id>:review`, score = label quality, so the most suspect is served first). A
    suspect that is already a task of the project gets the data, the prediction and one more annotator
    (reopened). Returns counts: created, reopened."""
    import pyarrow as pa

    from labeling.studio.tasks import choice_result, ensure_project

    meta = store.query("SELECT dataset, count(*) FROM store.selections WHERE selection_id = ? AND strategy = ? "
                       "GROUP BY dataset", [selection_id, STRATEGY])
    if not meta:
        raise NotFound(f"no label_issues selection {selection_id!r}")
    dataset = meta[0][0]
    info = ensure_project(store, dataset, client)
    pid = info["project_id"]
    version = f"{selection_id}:review"
    rows = store.query(
        "SELECT s.record_id, r.text, r.input_hash, i.label, i.suggested, i.score, t.task_id, g.label, g.source_ref, "
        "g.source FROM store.selections s JOIN store.records r USING (record_id) "
        "JOIN store.label_issues i ON i.dataset = s.dataset AND i.record_id = s.record_id "
        "LEFT JOIN store.gold_labels g ON g.record_id = s.record_id "
        "LEFT JOIN store.ls_tasks t ON t.project_id = ? AND t.input_hash = r.input_hash "
        "WHERE s.selection_id = ? ORDER BY s.rank", [pid, selection_id])

    def data(r) -> dict[str, Any]:
        return {"text": r[1], "record_id": int(r[0]), "input_hash": r[2], "current_label": r[3],
                "suggested_label": r[4], "review": "label_issue"}

    def prediction(r) -> dict:
        return {"model_version": version, "score": round(float(r[5]), 6), "result": choice_result(r[4])}

    new = [r for r in rows if r[6] is None]
    old = [r for r in rows if r[6] is not None]
    created = 0
    for start in range(0, len(new), batch_size):
        batch = new[start:start + batch_size]
        ids = client.projects.import_tasks(pid, [{"data": data(r), "predictions": [prediction(r)]} for r in batch])
        imported = [r[9] == "imported" for r in batch]
        frame = pa.table({"input_hash": [r[2] for r in batch], "task_id": pa.array(ids, pa.int64()),
                          "record_id": pa.array([r[0] for r in batch], pa.int64()),
                          "prior_label": pa.array([r[7] if imp else None for r, imp in zip(batch, imported)],
                                                  pa.string()),
                          "prior_source_ref": pa.array([r[8] if imp else None for r, imp in zip(batch, imported)],
                                                       pa.string())})
        with store.transaction() as cur:
            cur.register("review_tasks", frame)
            cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, selection_id, "
                        "pushed_at, rank_version, rank_score, prior_label, prior_source_ref) SELECT ?, input_hash, "
                        "task_id, record_id, ?, ?, ?, NULL, prior_label, prior_source_ref FROM review_tasks "
                        "ON CONFLICT DO NOTHING", [pid, selection_id, now(), version])
            cur.unregister("review_tasks")
        created += len(batch)
    reopened = 0
    if old:
        client.predictions.import_(pid, [{"task": int(r[6]), **prediction(r)} for r in old])
        for r in old:
            n = store.one("SELECT count(DISTINCT coalesce(annotator, '')) FROM store.annotations WHERE task_id = ? "
                          "AND NOT deleted AND NOT coalesce(was_cancelled, false)", [int(r[6])]) or 0
            client.tasks.update(int(r[6]), data=data(r), overlap=int(n) + 1, is_labeled=False)
            reopened += 1
    client.projects.update(pid, model_version=version, show_collab_predictions=True)
    return {"selection_id": selection_id, "dataset": dataset, "project_id": pid, "selected": len(rows),
            "created": created, "reopened": reopened, "skipped": 0, "duplicates": 0, "adopted": 0,
            "reranked": len(rows), "model_version": version, "run_id": None}


def select_run_issues(store, run_or_dataset: str, n: int, *, round: int | None = None) -> dict:
    """`curate select --strategy label_issues --run R`: the open suspects of R's dataset; `--run` may also
    name the dataset itself (no run is needed to review labels)."""
    ds = store.one("SELECT dataset FROM store.runs WHERE run_id = ?", [run_or_dataset])
    run_id: str | None = run_or_dataset
    if ds is None and store.one("SELECT count(*) FROM store.datasets WHERE name = ?", [run_or_dataset]):
        ds, run_id = run_or_dataset, None
    if ds is None:
        raise NotFound(f"no run or dataset {run_or_dataset!r}")
    return select_issues(store, ds, n, run_id=run_id, round=round)
