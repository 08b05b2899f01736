"""Label Studio tasks: the project of a dataset, pushing a selection as tasks, ordering them for annotators.

The cores are pure: the label config from a label set, task payloads from rows, ordering scores from class
probabilities, the label inside an annotation result.

Ordering (Label Studio Community 1.23, measured, see docs/readme/label_studio.md): the project's `sampling` is
"Uncertainty sampling"; the label stream (`/api/projects/{id}/next`, "Label All Tasks") serves the task whose
prediction of the project's `model_version` has the lowest `score`, a different task to each annotator. Every
unannotated task gets one prediction of the round's version with score = 1 - uncertainty under the round's run
and the run's predicted choice as result (so annotators see the current model's suggestion). For least
confidence, 1 - uncertainty is the confidence, so the pre-annotation itself (version = run id, score =
confidence) is that prediction and a push sends nothing extra; margin and entropy use `<run_id>:<kind>`. Tasks
pushed in earlier rounds get the new run's prediction through `POST /api/projects/{id}/import/predictions`, so the
most uncertain task of the whole project comes first, across rounds. Then ONE PATCH sets the project's
`model_version` with `show_collab_predictions` (sending `show_collab_predictions` alone clears `model_version`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa

from curation.errors import InputError, NotFound
from curation.store import Store, now
from labeling.studio.client import StudioClient, StudioNotFound
from labeling.uncertainty import UNCERTAINTY, uncertainty

log = logging.getLogger(__name__)

SAMPLING = "Uncertainty sampling"
FROM_NAME, TO_NAME = "label", "text"
RANK_SUFFIX = ":rank"


# -- pure cores --------------------------------------------------------------------------------------------
def label_config(labels: Sequence[str]) -> str:
    """A single-choice text classification config for the dataset's label set (label order kept)."""
    if not labels:
        raise InputError("the dataset has no label set; ingest it with --labels a,b,... to push it to Label Studio")
    choices = "\n".join(f"    <Choice value={quoteattr(str(lab))}/>" for lab in labels)
    return (f'<View>\n  <Text name="{TO_NAME}" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>")


def choice_result(label: str) -> list[dict]:
    return [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [label]}}]


def result_label(result: Any) -> str | None:
    """The chosen label in an annotation result (the first `choices` region), None when there is none."""
    for region in result or []:
        if isinstance(region, dict) and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def task_payload(text: str, record_id: int, input_hash: str, *, run_id: str | None = None,
                 label: str | None = None, confidence: float | None = None) -> dict:
    """One task: the text plus our ids in `data`, and the run's pre-annotation (model_version = run id,
    score = confidence, result = the predicted choice)."""
    task: dict[str, Any] = {"data": {"text": text, "record_id": int(record_id), "input_hash": input_hash}}
    if run_id is not None and label is not None:
        task["predictions"] = [{"model_version": run_id, "result": choice_result(label),
                                "score": None if confidence is None else float(confidence)}]
    return task


def rank_version(run_id: str, kind: str = "least_confidence") -> str:
    """The model_version that orders a round. For least confidence, 1 - uncertainty is the confidence, so the
    run's own pre-annotations (version = run id, score = confidence) order the stream; other kinds need their
    own predictions."""
    return run_id if kind == "least_confidence" else f"{run_id}:{kind}"


# -- projects ----------------------------------------------------------------------------------------------
def project_title(dataset: str) -> str:
    return f"curate: {dataset}"


def ensure_project(store: Store, dataset: str, client: StudioClient) -> dict:
    """The Label Studio project of a dataset: the stored one if Label Studio still has it, else one with our
    title, else a new one. The label config is built from the dataset's label set and kept in sync.
    Returns {"project_id", "created", "label_config", "url"}."""
    return _ensure_project(store, dataset, client)[0]


def _ensure_project(store: Store, dataset: str, client: StudioClient) -> tuple[dict, dict]:
    ds = store.dataset(dataset)
    config = label_config(ds["labels"])
    row = store.query("SELECT project_id, label_config FROM store.ls_projects WHERE dataset = ?", [dataset])
    project: dict | None = None
    if row:
        try:
            project = client.projects.get(row[0][0])
        except StudioNotFound:
            log.warning("Label Studio project %s of dataset %r is gone; creating a new one", row[0][0], dataset)
    if project is None:
        title = project_title(dataset)
        project = next((p for p in client.projects.list() if p.get("title") == title), None)
    created = project is None
    if project is None:
        project = client.projects.create(
            project_title(dataset), config, sampling=SAMPLING, show_collab_predictions=True,
            maximum_annotations=1, show_skip_button=True,
            description=f"Records of the curate dataset {dataset!r}, most uncertain first.")
    elif _norm_xml(project.get("label_config", "")) != _norm_xml(config):
        project = client.projects.update(project["id"], label_config=config)
    pid = int(project["id"])
    url = f"{client.url}/projects/{pid}/data"
    with store.transaction() as cur:
        cur.execute("DELETE FROM store.ls_projects WHERE dataset = ?", [dataset])
        cur.execute("INSERT INTO store.ls_projects VALUES (?, ?, ?, ?, ?)", [dataset, pid, url, config, now()])
    return {"project_id": pid, "created": created, "label_config": config, "url": url}, project


def _norm_xml(s: str) -> str:
    return re.sub(r"\s+", "", s or "")


# -- push --------------------------------------------------------------------------------------------------
def push_selection(store: Store, selection_id: str, *, run_id: str | None = None, client: StudioClient,
                   batch_size: int = 1000, uncertainty_kind: str = "least_confidence",
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Push a selection as Label Studio tasks with pre-annotations, then order the project for annotators.

    Idempotent by `input_hash`: records whose content is already a task of the project are skipped (pushing
    twice creates nothing), and tasks Label Studio has but the store does not know (a push interrupted after
    the import) are adopted by the `input_hash` in their data. Tasks are imported in batches of `batch_size`;
    each batch is committed to `ls_tasks` as soon as Label Studio has it.

    Returns counts: selected, created, skipped (already tasks), duplicates (same content twice in the
    selection), adopted, reranked (ordering predictions written), plus project_id, model_version.
    """
    if uncertainty_kind not in UNCERTAINTY:
        raise InputError(f"unknown uncertainty {uncertainty_kind!r}; valid: {', '.join(UNCERTAINTY)}")
    meta = store.query("SELECT dataset, any_value(run_id), count(*) FROM store.selections "
                       "WHERE selection_id = ? GROUP BY dataset", [selection_id])
    if not meta:
        known = [r[0] for r in store.query("SELECT DISTINCT selection_id FROM store.selections "
                                           "ORDER BY 1 DESC LIMIT 10")]
        raise NotFound(f"no selection {selection_id!r}; recent: {', '.join(known) or 'none (run `curate select`)'}")
    if len(meta) > 1:
        raise InputError(f"selection {selection_id!r} spans datasets {[m[0] for m in meta]}; push one dataset")
    dataset, sel_run, n_selected = meta[0]
    run_id = run_id or sel_run
    info, project = _ensure_project(store, dataset, client)
    pid = info["project_id"]
    adopted = _adopt_unknown_tasks(store, client, pid, dataset, project.get("task_number") or 0)

    rows = store.query(
        """
        WITH sel AS (
            SELECT s.record_id, s.rank, r.text, r.input_hash,
                   row_number() OVER (PARTITION BY r.input_hash ORDER BY s.rank, s.record_id) AS dup
            FROM store.selections s JOIN store.records r USING (record_id)
            WHERE s.selection_id = ?)
        SELECT sel.record_id, sel.text, sel.input_hash, p.label, p.confidence, g.label, g.source_ref, sel.dup,
               t.task_id IS NOT NULL AS known, p.probs, sel.rank
        FROM sel
        LEFT JOIN store.predictions p ON p.run_id = ? AND p.record_id = sel.record_id
        LEFT JOIN store.gold_labels g ON g.record_id = sel.record_id AND g.source = 'imported'
        LEFT JOIN store.ls_tasks t ON t.project_id = ? AND t.input_hash = sel.input_hash
        ORDER BY sel.rank, sel.record_id
        """, [selection_id, run_id, pid])
    duplicates = sum(1 for r in rows if r[7] > 1)
    todo = [r for r in rows if r[7] == 1 and not r[8]]
    skipped = sum(1 for r in rows if r[7] == 1 and r[8])
    # New tasks carry their ordering prediction from the start (for least confidence it IS the pre-annotation:
    # its score, the confidence, is 1 - uncertainty); only tasks pushed earlier are re-ranked afterwards.
    version, scores = _order_scores(todo, run_id, selection_id, int(n_selected), uncertainty_kind)
    created = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        tasks = []
        for i, r in enumerate(batch, start):
            task = task_payload(r[1], r[0], r[2], run_id=run_id, label=r[3], confidence=r[4])
            if scores[i] is not None and version != run_id:
                task.setdefault("predictions", []).append(
                    {"model_version": version, "score": round(scores[i], 6),
                     "result": choice_result(r[3]) if r[3] is not None else []})
            tasks.append(task)
        ids = client.projects.import_tasks(pid, tasks)
        ts = now()
        frame = pa.table({
            "input_hash": [r[2] for r in batch], "task_id": pa.array(ids, pa.int64()),
            "record_id": pa.array([r[0] for r in batch], pa.int64()),
            "rank_version": [version if scores[i] is not None else None for i in range(start, start + len(batch))],
            "rank_score": pa.array(scores[start:start + len(batch)], pa.float64()),
            "prior_label": pa.array([r[5] for r in batch], pa.string()),
            "prior_source_ref": pa.array([r[6] for r in batch], pa.string())})
        with store.transaction() as cur:
            cur.register("pushed_tasks", frame)
            cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, selection_id, "
                        "pushed_at, rank_version, rank_score, prior_label, prior_source_ref) "
                        "SELECT ?, input_hash, task_id, record_id, ?, ?, rank_version, rank_score, prior_label, "
                        "prior_source_ref FROM pushed_tasks ON CONFLICT DO NOTHING", [pid, selection_id, ts])
            cur.unregister("pushed_tasks")
        created += len(batch)
        if progress:
            progress(created, len(todo))
    rank = rerank(store, dataset, client, run_id=run_id, selection_id=selection_id, kind=uncertainty_kind,
                  project=project)
    ranked_inline = sum(1 for x in scores if x is not None)
    result = {"selection_id": selection_id, "dataset": dataset, "project_id": pid, "run_id": run_id,
              "selected": int(n_selected), "created": created, "skipped": skipped, "duplicates": duplicates,
              "adopted": adopted, "reranked": ranked_inline + rank["reranked"], "model_version": rank["model_version"]}
    log.info("pushed selection %s to project %d: %s", selection_id, pid, result)
    return result


def _order_scores(rows: list, run_id: str | None, selection_id: str, n: int, kind: str
                  ) -> tuple[str, list[float | None]]:
    """The ordering version and score (lowest first) of each new task: 1 - uncertainty under the run, or the
    selection's rank / n without a run. None where the run has no prediction for the record."""
    if run_id is None:
        return f"{selection_id}{RANK_SUFFIX}", [r[10] / max(n, 1) for r in rows]
    return rank_version(run_id, kind), ordering_scores([r[9] for r in rows], kind)


def ordering_scores(probs: list, kind: str) -> list[float | None]:
    """The label stream's score of each row (lowest is served first): 1 - uncertainty of its class
    probabilities under `kind`, None where a row has none. Rows of different lengths are padded with zeros."""
    with_p = [i for i, p in enumerate(probs) if p is not None]
    out: list[float | None] = [None] * len(probs)
    if with_p:
        k = max(len(probs[i]) for i in with_p)
        arr = np.array([list(probs[i]) + [0.0] * (k - len(probs[i])) for i in with_p], dtype=float)
        for i, sc in zip(with_p, 1.0 - uncertainty(arr, kind)):
            out[i] = float(sc)
    return out


def _adopt_unknown_tasks(store: Store, client: StudioClient, pid: int, dataset: str, remote: int) -> int:
    """Tasks Label Studio has that `ls_tasks` lacks (an interrupted push, a rebuilt store): map them back by
    the `input_hash` in their data. Listing is slow (~16 s per 10k tasks), so only when the counts differ."""
    known = store.one("SELECT count(*) FROM store.ls_tasks WHERE project_id = ?", [pid])
    if remote <= known:
        return 0
    found = []
    for t in client.tasks.list(pid):
        d = t.get("data") or {}
        if d.get("input_hash"):
            found.append((int(t["id"]), str(d["input_hash"]), d.get("record_id")))
    if not found:
        return 0
    adopted = 0
    ts = now()
    with store.transaction() as cur:
        for tid, h, rid in found:
            rec = cur.execute("SELECT record_id FROM store.records WHERE dataset = ? AND input_hash = ? "
                              "ORDER BY (record_id = ?) DESC, record_id LIMIT 1", [dataset, h, rid]).fetchall()
            if not rec:
                continue
            n = cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING task_id",
                            [pid, h, tid, rec[0][0], ts]).fetchall()
            adopted += len(n)
    if adopted:
        log.warning("adopted %d Label Studio tasks of project %d the store did not know", adopted, pid)
    return adopted


def rerank(store: Store, dataset: str, client: StudioClient, *, run_id: str | None,
           selection_id: str | None = None, kind: str = "least_confidence", batch_size: int = 100_000,
           project: dict | None = None) -> dict:
    """Order the project's unannotated tasks for the label stream, most uncertain first under `run_id`.

    Each task gets one prediction of the round's version with score = 1 - uncertainty and the run's predicted
    choice as result (annotators see the current model's suggestion). For least confidence (the default) that
    prediction is the run's pre-annotation itself: version = run id, score = confidence. Other kinds use the
    version `<run_id>:<kind>`. Then ONE PATCH of `model_version` with `show_collab_predictions` (and
    `sampling`), skipped when the project is already so. Without a run, the selection's rank orders its tasks.
    Incremental: tasks that already carry this version are not sent again. One request per `batch_size`
    predictions: Label Studio's predictions import has a large fixed cost per request that grows with the
    project (measured ~13 s per request on a 10k-task project, whether it carries 500 or 4000 predictions)."""
    pid = store.one("SELECT project_id FROM store.ls_projects WHERE dataset = ?", [dataset])
    if pid is None:
        raise NotFound(f"dataset {dataset!r} has no Label Studio project yet; push a selection first")
    annotated = ("SELECT task_id FROM store.annotations WHERE project_id = ? AND task_id IS NOT NULL "
                 "AND NOT deleted AND NOT coalesce(was_cancelled, false)")
    if run_id is not None:
        version = rank_version(run_id, kind)
        rows = store.query(
            f"SELECT t.task_id, p.probs, p.label FROM store.ls_tasks t JOIN store.predictions p "
            f"ON p.run_id = ? AND p.record_id = t.record_id WHERE t.project_id = ? "
            f"AND t.rank_version IS DISTINCT FROM ? AND t.task_id NOT IN ({annotated}) ORDER BY t.task_id",
            [run_id, pid, version, pid])
        scores = ordering_scores([r[1] for r in rows], kind)
        labels = [r[2] for r in rows]
    else:
        if selection_id is None:
            raise InputError("rerank needs a run_id (model scores) or a selection_id (its rank)")
        version = f"{selection_id}{RANK_SUFFIX}"
        rows = store.query(
            f"SELECT t.task_id, s.rank FROM store.ls_tasks t JOIN store.selections s "
            f"ON s.selection_id = ? AND s.record_id = t.record_id WHERE t.project_id = ? "
            f"AND t.rank_version IS DISTINCT FROM ? AND t.task_id NOT IN ({annotated}) ORDER BY s.rank",
            [selection_id, pid, version, pid])
        n = max(len(rows), 1)
        scores = [r[1] / n for r in rows]
        labels = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        client.predictions.import_(pid, [
            {"task": int(rows[i][0]), "model_version": version, "score": round(float(scores[i]), 6),
             "result": choice_result(labels[i]) if labels[i] is not None else []} for i in chunk])
        frame = pa.table({"task_id": pa.array([int(rows[i][0]) for i in chunk], pa.int64()),
                          "rank_score": pa.array([float(scores[i]) for i in chunk], pa.float64())})
        with store.transaction() as cur:
            cur.register("ranked_tasks", frame)
            cur.execute("UPDATE store.ls_tasks t SET rank_version = ?, rank_score = r.rank_score "
                        "FROM ranked_tasks r WHERE t.project_id = ? AND t.task_id = r.task_id", [version, pid])
            cur.unregister("ranked_tasks")
    state = project if project is not None and int(project.get("id", -1)) == pid else None
    if state is None or (state.get("model_version"), state.get("show_collab_predictions"),
                         state.get("sampling")) != (version, True, SAMPLING):
        # one PATCH with both: `show_collab_predictions` alone clears `model_version` (the order turns random)
        client.projects.update(pid, model_version=version, show_collab_predictions=True, sampling=SAMPLING)
    return {"project_id": pid, "model_version": version, "reranked": len(rows)}
