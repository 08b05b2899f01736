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

Instruction datasets get the review config (`review_config`) and review tasks (`review_task`): one prediction
per task that is both the pre-annotation (the editable text area pre-filled with the current response) and the
ordering prediction, scored by exp(-response loss) of an SFT run, or by the quality probability
(`_ordering_source`); `review_outcome` parses what the annotator did (docs/label-studio.md, "Reviewing
instruction data").
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa

from curation.errors import InputError, NotFound
from curation.store import Store, dataset_task, now
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


# -- instruction review: pure cores -----------------------------------------------------------------------
DIALOGUE, RESPONSE, VERDICT, RATING = "dialogue", "response", "verdict", "rating"
VERDICTS = {"accept": "keep", "reject": "drop", "edited": "keep"}   # the choice -> the gold label it implies
SUGGESTION = {"keep": "accept", "drop": "reject"}                  # a quality label -> the pre-selected choice


def review_config() -> str:
    """The review config of an instruction dataset: the conversation turn by turn (`Paragraphs` in dialogue
    layout over `$dialogue`, a list of {author, text}), the current response read-only, an editable text area
    (pre-filled by the pre-annotation) for the response, accept / reject / edited, and a 1-5 rating."""
    choices = "\n".join(f'    <Choice value="{v}"/>' for v in VERDICTS)
    return (f'<View>\n  <Header value="Conversation"/>\n'
            f'  <Paragraphs name="{DIALOGUE}" value="${DIALOGUE}" layout="dialogue" nameKey="author" '
            f'textKey="text"/>\n'
            f'  <Header value="Current response"/>\n  <Text name="current" value="${RESPONSE}"/>\n'
            f'  <Header value="Response (edit it if it needs fixing, then choose edited)"/>\n'
            f'  <TextArea name="{RESPONSE}" toName="{DIALOGUE}" editable="true" rows="8" maxSubmissions="1"/>\n'
            f'  <Choices name="{VERDICT}" toName="{DIALOGUE}" choice="single-radio" showInline="true" '
            f'required="true">\n{choices}\n  </Choices>\n'
            f'  <Header value="Quality of the final response"/>\n'
            f'  <Rating name="{RATING}" toName="{DIALOGUE}" maxRating="5"/>\n</View>')


def project_config(task: str, labels: Sequence[str]) -> str:
    """The label config of a dataset: the review config for `instruction`, else the classification config."""
    return review_config() if task == "instruction" else label_config(labels)


def dialogue_turns(messages: Any) -> tuple[list[dict], str]:
    """The conversation before the last assistant turn as Paragraphs items ({author, text}), and that turn's
    text (the response; '' when the conversation does not end with one)."""
    msgs = json.loads(messages) if isinstance(messages, str) else list(messages or [])
    response = ""
    if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        response = str(msgs[-1].get("content") or "")
        msgs = msgs[:-1]
    return [{"author": str(m.get("role", "")), "text": str(m.get("content") or "")} for m in msgs], response


def replace_response(messages: Any, response: str) -> list[dict]:
    """The conversation with its last assistant turn replaced by `response` (appended when there is none)."""
    msgs = [dict(m) for m in (json.loads(messages) if isinstance(messages, str) else list(messages or []))]
    if msgs and msgs[-1].get("role") == "assistant":
        msgs[-1]["content"] = response
    else:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def review_result(response: str, suggestion: str | None = None) -> list[dict]:
    """A review pre-annotation: the text area pre-filled with the current response, plus the choice the
    quality label suggests (keep -> accept, drop -> reject; none for other labels)."""
    out = [{"from_name": RESPONSE, "to_name": DIALOGUE, "type": "textarea", "value": {"text": [response]}}]
    verdict = SUGGESTION.get(suggestion or "")
    if verdict:
        out.append({"from_name": VERDICT, "to_name": DIALOGUE, "type": "choices",
                    "value": {"choices": [verdict]}})
    return out


def review_task(messages: Any, record_id: int, input_hash: str, *, response: str | None = None,
                revision: int = 0, model_version: str | None = None, score: float | None = None,
                suggestion: str | None = None) -> dict:
    """One review task: the dialogue, the current response (the latest accepted revision) and our ids in
    `data`; one prediction (the pre-annotation, which is also the ordering prediction: model_version = the
    round's version, score = lowest first)."""
    turns, last = dialogue_turns(messages)
    response = last if response is None else response
    task: dict[str, Any] = {"data": {DIALOGUE: turns, RESPONSE: response, "record_id": int(record_id),
                                     "input_hash": input_hash, "revision": int(revision or 0)}}
    if model_version is not None:
        task["predictions"] = [{"model_version": model_version, "result": review_result(response, suggestion),
                                "score": None if score is None else round(float(score), 6)}]
    return task


@dataclass(frozen=True)
class ReviewOutcome:
    """What one review annotation says: the verdict chosen, the gold label it implies (None: no verdict and
    no edit), the response text the annotator left, the edited text when it is a new revision, the rating."""
    verdict: str | None
    label: str | None
    response: str | None
    revised: str | None
    rating: int | None


def _same_text(a: str | None, b: str | None) -> bool:
    def norm(x: str | None) -> str:
        return re.sub(r"[ \t]+\n", "\n", (x or "").replace("\r\n", "\n")).strip()
    return norm(a) == norm(b)


def review_outcome(result: Any, current: str | None) -> ReviewOutcome:
    """Parse a review annotation against the response it was shown (`current`).

    accept -> keep; reject -> drop; edited, or a text area that differs from `current` (after trimming
    whitespace) -> keep and a new revision with that text. A rejected response is not revised (the edit is
    kept in the annotation only); `edited` with an unchanged or empty text is a plain keep. Without a verdict
    an edit still counts (keep); a rating alone implies no label."""
    regions = [r for r in (result or []) if isinstance(r, dict)]
    choices = [r for r in regions if r.get("type") == "choices"]
    choices.sort(key=lambda r: r.get("from_name") != VERDICT)      # ours first, any other choices after
    picked = ((choices[0].get("value") or {}).get("choices") or []) if choices else []
    verdict = str(picked[0]) if picked else None
    text = rating = None
    for r in regions:
        value = r.get("value") or {}
        if r.get("type") == "textarea" and text is None:
            t = value.get("text")
            text = "\n".join(str(x) for x in t) if isinstance(t, list) else (None if t is None else str(t))
        elif r.get("type") == "rating" and rating is None:
            try:
                rating = int(value.get("rating"))
            except (TypeError, ValueError):
                rating = None
            if rating is not None and not 1 <= rating <= 5:
                rating = None
    changed = text is not None and text.strip() != "" and not _same_text(text, current)
    revised = text.strip() if changed and verdict != "reject" else None
    label = VERDICTS.get(verdict or "") or ("keep" if revised else None)
    return ReviewOutcome(verdict, label, text, revised, rating)


# -- projects ----------------------------------------------------------------------------------------------
def project_title(dataset: str) -> str:
    return f"curate: {dataset}"


def ensure_project(store: Store, dataset: str, client: StudioClient, *,
                   annotators_per_task: int | None = None) -> dict:
    """The Label Studio project of a dataset: the stored one if Label Studio still has it, else one with our
    title, else a new one. The label config is built from the dataset's label set and kept in sync.
    `annotators_per_task` K sets the project's "annotations per task" (`maximum_annotations`): the label stream
    hands each task to K different annotators (None: leave it; a new project gets 1).
    Returns {"project_id", "created", "label_config", "url", "annotators_per_task"}."""
    return _ensure_project(store, dataset, client, annotators_per_task)[0]


def _ensure_project(store: Store, dataset: str, client: StudioClient,
                    annotators_per_task: int | None = None) -> tuple[dict, dict]:
    if annotators_per_task is not None and annotators_per_task < 1:
        raise InputError(f"--annotators-per-task {annotators_per_task}: use 1 or more")
    ds = store.dataset(dataset)
    config = project_config(dataset_task(store, dataset), ds["labels"])
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
            maximum_annotations=annotators_per_task or 1, show_skip_button=True,
            description=f"Records of the curate dataset {dataset!r}, most uncertain first.")
    elif _norm_xml(project.get("label_config", "")) != _norm_xml(config):
        project = client.projects.update(project["id"], label_config=config)
    if annotators_per_task is not None and project.get("maximum_annotations") != annotators_per_task:
        project = client.projects.update(project["id"], maximum_annotations=annotators_per_task)
    pid = int(project["id"])
    url = f"{client.url}/projects/{pid}/data"
    with store.transaction() as cur:
        cur.execute("DELETE FROM store.ls_projects WHERE dataset = ?", [dataset])
        cur.execute("INSERT INTO store.ls_projects VALUES (?, ?, ?, ?, ?)", [dataset, pid, url, config, now()])
    return {"project_id": pid, "created": created, "label_config": config, "url": url,
            "annotators_per_task": project.get("maximum_annotations")}, project


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
    if store.one("SELECT count(*) FROM store.selections WHERE selection_id = ? AND strategy = 'label_issues'",
                 [selection_id]):
        from labeling.label_issues import push_issues  # a review of suspect labels, not a labeling round

        return push_issues(store, selection_id, client=client, batch_size=batch_size)
    run_id = run_id or sel_run
    info, project = _ensure_project(store, dataset, client)
    pid = info["project_id"]
    adopted = _adopt_unknown_tasks(store, client, pid, dataset, project.get("task_number") or 0)

    instruction = dataset_task(store, dataset) == "instruction"
    source_version, source_sql, source_params = _ordering_source(store, dataset, run_id, uncertainty_kind,
                                                                  instruction)
    review_cols, review_join = ("i.messages, i.response, i.revision",
                                "LEFT JOIN main.instructions i ON i.record_id = sel.record_id") if instruction \
        else ("NULL, NULL, NULL", "")
    rows = store.query(
        f"""
        WITH sel AS (
            SELECT s.record_id, s.rank, r.text, r.input_hash,
                   row_number() OVER (PARTITION BY r.input_hash ORDER BY s.rank, s.record_id) AS dup
            FROM store.selections s JOIN store.records r USING (record_id)
            WHERE s.selection_id = ?),
        src AS ({source_sql})
        SELECT sel.record_id, sel.text, sel.input_hash, src.label, src.confidence, g.label, g.source_ref, sel.dup,
               t.task_id IS NOT NULL AS known, src.probs, sel.rank, src.loss, {review_cols}
        FROM sel
        LEFT JOIN src ON src.record_id = sel.record_id
        LEFT JOIN store.gold_labels g ON g.record_id = sel.record_id AND g.source = 'imported'
        LEFT JOIN store.ls_tasks t ON t.project_id = ? AND t.input_hash = sel.input_hash
        {review_join}
        ORDER BY sel.rank, sel.record_id
        """, [selection_id, *source_params, pid])
    duplicates = sum(1 for r in rows if r[7] > 1)
    todo = [r for r in rows if r[7] == 1 and not r[8]]
    skipped = sum(1 for r in rows if r[7] == 1 and r[8])
    # New tasks carry their ordering prediction from the start (for least confidence it IS the pre-annotation:
    # its score, the confidence, is 1 - uncertainty); only tasks pushed earlier are re-ranked afterwards.
    version, scores = _order_scores(todo, source_version, selection_id, int(n_selected), uncertainty_kind)
    created = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        tasks = []
        for i, r in enumerate(batch, start):
            if instruction:
                # one prediction: the pre-annotation (text area, suggested choice) that also orders the task
                tasks.append(review_task(r[12], r[0], r[2], response=r[13], revision=r[14], model_version=version,
                                         score=scores[i], suggestion=r[3]))
                continue
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


_NO_SOURCE = ("SELECT NULL::BIGINT AS record_id, NULL::DOUBLE[] AS probs, NULL::DOUBLE AS loss, "
              "NULL::TEXT AS label, NULL::DOUBLE AS confidence WHERE false")


def _ordering_source(store: Store, dataset: str, run_id: str | None, kind: str, instruction: bool
                     ) -> tuple[str | None, str, list]:
    """Where a round's order comes from: (model_version, SQL of (record_id, probs, loss, label, confidence),
    params); version None: no model scores (the selection's rank orders).

    - an SFT run (it has `response_scores`): the response loss; score = exp(-loss), the mean token probability
      of the response, so the highest loss comes first; the label (the pre-selected choice) is the latest
      quality label model's;
    - any other run: its class probabilities (`predictions`), score = 1 - uncertainty under `kind`;
    - no run, instruction dataset with a quality label model: the quality probability (`weak_labels` of the
      latest label model), score = 1 - uncertainty."""
    weak = None
    if instruction:
        weak = store.one("SELECT model_id FROM store.label_models WHERE dataset = ? "
                         "ORDER BY created_at DESC, model_id DESC LIMIT 1", [dataset])
    if run_id is not None:
        if store.one("SELECT count(*) FROM store.response_scores WHERE run_id = ?", [run_id]):
            sql = ("SELECT s.record_id, NULL::DOUBLE[] AS probs, s.loss, w.label, exp(-s.loss) AS confidence "
                   "FROM store.response_scores s LEFT JOIN store.weak_labels w ON w.model_id = ? "
                   "AND w.record_id = s.record_id WHERE s.run_id = ?")
            return run_id, sql, [weak, run_id]
        sql = "SELECT record_id, probs, NULL::DOUBLE AS loss, label, confidence FROM store.predictions WHERE run_id = ?"
        return rank_version(run_id, kind), sql, [run_id]
    if weak is not None:
        sql = ("SELECT record_id, probs, NULL::DOUBLE AS loss, label, confidence FROM store.weak_labels "
               "WHERE model_id = ?")
        return rank_version(f"quality:{weak}", kind), sql, [weak]
    return None, _NO_SOURCE, []


def loss_scores(losses: Sequence[float | None]) -> list[float | None]:
    """The label stream's score of a response loss (mean token NLL): exp(-loss), the geometric-mean token
    probability in (0, 1]; the highest loss gets the lowest score and is served first."""
    return [None if x is None or not math.isfinite(float(x)) else math.exp(-max(float(x), 0.0)) for x in losses]


def _scores(probs: list, losses: list, kind: str) -> list[float | None]:
    by_probs = ordering_scores(probs, kind)
    by_loss = loss_scores(losses)
    return [lo if lo is not None else p for p, lo in zip(by_probs, by_loss)]


def _order_scores(rows: list, version: str | None, selection_id: str, n: int, kind: str
                  ) -> tuple[str, list[float | None]]:
    """The ordering version and score (lowest first) of each new task: 1 - uncertainty under the run (or
    exp(-loss) for an SFT run), or the selection's rank / n without model scores. None where the source has
    no score for the record."""
    if version is None:
        return f"{selection_id}{RANK_SUFFIX}", [r[10] / max(n, 1) for r in rows]
    return version, _scores([r[9] for r in rows], [r[11] for r in rows], kind)


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
    `sampling`), skipped when the project is already so. Without a run, the selection's rank orders its tasks
    (instruction datasets: the latest quality label model's probability first). For an SFT run (it has
    `response_scores`) the score is exp(-loss) and the version the run id; instruction tasks get the review
    pre-annotation (text area with the current response) with it.
    Incremental: tasks that already carry this version are not sent again. One request per `batch_size`
    predictions: Label Studio's predictions import has a large fixed cost per request that grows with the
    project (measured ~13 s per request on a 10k-task project, whether it carries 500 or 4000 predictions)."""
    pid = store.one("SELECT project_id FROM store.ls_projects WHERE dataset = ?", [dataset])
    if pid is None:
        raise NotFound(f"dataset {dataset!r} has no Label Studio project yet; push a selection first")
    annotated = ("SELECT task_id FROM store.annotations WHERE project_id = ? AND task_id IS NOT NULL "
                 "AND NOT deleted AND NOT coalesce(was_cancelled, false)")
    instruction = dataset_task(store, dataset) == "instruction"
    # instruction tasks: the ordering prediction is also the pre-annotation (the text area with the current
    # response), because Label Studio pre-fills only from predictions of the project's model_version
    review_cols, review_join = (", i.response", "LEFT JOIN main.instructions i ON i.record_id = t.record_id") \
        if instruction else (", NULL", "")
    version, source_sql, source_params = _ordering_source(store, dataset, run_id, kind, instruction)
    if version is not None:
        rows = store.query(
            f"WITH src AS ({source_sql}) SELECT t.task_id, src.probs, src.label, src.loss{review_cols} "
            f"FROM store.ls_tasks t JOIN src ON src.record_id = t.record_id {review_join} "
            f"WHERE t.project_id = ? AND t.rank_version IS DISTINCT FROM ? AND t.task_id NOT IN ({annotated}) "
            f"ORDER BY t.task_id", [*source_params, pid, version, pid])
        scores = _scores([r[1] for r in rows], [r[3] for r in rows], kind)
        keep = [i for i, x in enumerate(scores) if x is not None]
        rows, scores = [rows[i] for i in keep], [scores[i] for i in keep]
    else:
        if selection_id is None:
            raise InputError("rerank needs a run_id (model scores) or a selection_id (its rank)")
        version = f"{selection_id}{RANK_SUFFIX}"
        rows = store.query(
            f"SELECT t.task_id, NULL, NULL, s.rank{review_cols} FROM store.ls_tasks t JOIN store.selections s "
            f"ON s.selection_id = ? AND s.record_id = t.record_id {review_join} WHERE t.project_id = ? "
            f"AND t.rank_version IS DISTINCT FROM ? AND t.task_id NOT IN ({annotated}) ORDER BY s.rank",
            [selection_id, pid, version, pid])
        n = max(len(rows), 1)
        scores = [r[3] / n for r in rows]

    def result(r) -> list[dict]:
        if instruction:
            return review_result(r[4] or "", r[2])
        return choice_result(r[2]) if r[2] is not None else []

    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        client.predictions.import_(pid, [
            {"task": int(rows[i][0]), "model_version": version, "score": round(float(scores[i]), 6),
             "result": result(rows[i])} for i in chunk])
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
