"""Label Studio annotations back into the store: webhooks, the annotation upsert, the reconciliation pull.

Annotations come back through webhooks (`handle_webhook`) and a reconciliation pull (`pull_annotations`),
because Label Studio drops a webhook whose receiver is slow or down. Both go through `record_annotation`:
idempotent by Label Studio's annotation id, out-of-order safe (an older `updated_at` never overwrites a newer
one; a deletion is a tombstone that a late "created" cannot revive). The gold label of a record is recomputed
from its annotations after every change, from the live (not deleted, not cancelled, labelled) ones: one annotator
-> the latest annotation wins; several -> their majority (`labeling.consensus.record_gold`; method and confidence
on the gold row; `curate consensus` recomputes a dataset by majority or Dawid-Skene);
when none is left, the gold label an annotation had set is removed, or the imported label the record had when it
was pushed is restored (`ls_tasks.prior_label`).

Webhooks are unsigned in Label Studio: `register_webhook` puts a secret into a custom header and the receiver
checks it with `verify_webhook_token`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from curation.errors import InputError, NotFound
from curation.store import Store, now, verdict_labels
from labeling.consensus import record_gold
from labeling.studio.client import StudioClient
from labeling.studio.tasks import (
    ReviewOutcome,
    dialogue_turns,
    replace_response,
    result_label,
    review_outcome,
)

WEBHOOK_HEADER = "X-Curate-Webhook-Token"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


class WebhookPayloadError(InputError):
    """A webhook payload that is not what Label Studio sends."""


def verify_webhook_token(given: str | bytes | None, expected: str | bytes | None) -> bool:
    """Constant-time comparison of the token a webhook presents with the configured secret. An empty or
    missing secret never verifies."""
    if not given or not expected:
        return False
    g = given.encode() if isinstance(given, str) else given
    e = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(g, e)


def parse_ts(value: Any) -> dt.datetime | None:
    """Label Studio's ISO timestamps ('...Z' or '+00:00') as naive UTC, like the store's."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        d = value
    else:
        try:
            d = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise WebhookPayloadError(f"timestamp {value!r} is not ISO 8601") from None
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    return d


# -- annotations -------------------------------------------------------------------------------------------
_UPSERT = """
INSERT INTO store.annotations (annotation_id, project_id, task_id, record_id, label, annotator, created_at,
    updated_at, lead_time, was_cancelled, deleted, result, via, received_at, rating, response)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, ?, ?, ?, ?, ?)
ON CONFLICT (annotation_id) DO UPDATE SET project_id = excluded.project_id, task_id = excluded.task_id,
    record_id = excluded.record_id, label = excluded.label, annotator = excluded.annotator,
    created_at = excluded.created_at, updated_at = excluded.updated_at, lead_time = excluded.lead_time,
    was_cancelled = excluded.was_cancelled, result = excluded.result, via = excluded.via,
    received_at = excluded.received_at, rating = excluded.rating, response = excluded.response
"""


def _annotator(value: Any, users: Mapping[int, str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("email") or value.get("username") or _annotator(value.get("id"), users)
    try:
        uid = int(value)
    except (TypeError, ValueError):
        return str(value)
    return (users or {}).get(uid) or f"ls-user:{uid}"


def record_annotation(store: Store, annotation: Mapping[str, Any], via: str = "webhook", *,
                      task: Mapping[str, Any] | None = None, users: Mapping[int, str] | None = None) -> dict:
    """Store one Label Studio annotation (a webhook's `annotation` or an exported one) and update the gold
    label of its record. Idempotent by annotation id and safe out of order. `task` (the webhook's nested
    task) maps an unknown task to its record by the `record_id`/`input_hash` in its data.
    Returns {"annotation_id", "outcome", "record_id", "gold"}; outcome is one of created, updated,
    duplicate, stale (older than what is stored), deleted (tombstoned earlier), unknown_task."""
    with store.transaction() as cur:
        return _record(cur, annotation, via, task, users)


def _record(cur, ann: Mapping[str, Any], via: str, task: Mapping[str, Any] | None,
            users: Mapping[int, str] | None) -> dict:
    if via not in ("webhook", "pull"):
        raise InputError(f"via={via!r}; valid: webhook, pull")
    try:
        aid = int(ann["id"])
    except (KeyError, TypeError, ValueError):
        raise WebhookPayloadError(f"annotation without an integer `id`: keys {sorted(ann)[:12]}") from None
    task_id = ann.get("task")
    if isinstance(task_id, dict):
        task = task or task_id
        task_id = task_id.get("id")
    task_id = int(task_id) if task_id is not None else None
    project_id = ann.get("project")
    project_id = int(project_id["id"] if isinstance(project_id, dict) else project_id) if project_id else None
    updated = parse_ts(ann.get("updated_at")) or parse_ts(ann.get("created_at"))
    prev = cur.execute("SELECT updated_at, deleted, label, was_cancelled, annotator, record_id "
                       "FROM store.annotations WHERE annotation_id = ?", [aid]).fetchall()
    if prev and prev[0][1]:
        return {"annotation_id": aid, "outcome": "deleted", "record_id": prev[0][5], "gold": "unchanged"}
    record_id = _task_record(cur, project_id, task_id, task)
    annotator = _annotator(ann.get("completed_by"), users)
    if prev:
        p_upd, _, _p_label, _p_cancel, p_annotator, _ = prev[0]
        if p_upd is not None and updated is not None and updated < p_upd:
            return {"annotation_id": aid, "outcome": "stale", "record_id": prev[0][5], "gold": "unchanged"}
        if p_upd == updated:
            # same version again; only fill in a better annotator name (webhooks carry only the user id)
            if annotator and p_annotator != annotator and (p_annotator or "").startswith("ls-user:"):
                cur.execute("UPDATE store.annotations SET annotator = ? WHERE annotation_id = ?", [annotator, aid])
                cur.execute("UPDATE store.revisions SET annotator = ? WHERE annotation_id = ?", [annotator, aid])
                gold = _refresh_gold(cur, prev[0][5])
                return {"annotation_id": aid, "outcome": "updated", "record_id": prev[0][5], "gold": gold}
            return {"annotation_id": aid, "outcome": "duplicate", "record_id": prev[0][5], "gold": "unchanged"}
        if annotator and annotator.startswith("ls-user:") and p_annotator and not p_annotator.startswith("ls-user:"):
            annotator = p_annotator
    result = ann.get("result") or []
    cancelled = bool(ann.get("was_cancelled"))
    review: ReviewOutcome | None = None
    if _is_instruction(cur, record_id, project_id):
        # the response the annotator was shown: the latest accepted revision not made by this annotation
        review = review_outcome(result, _current(cur, record_id, aid)[1] if record_id is not None else None)
        label, rating, response = review.label, review.rating, review.response
    else:
        label, rating, response = result_label(result), None, None
    cur.execute(_UPSERT, [aid, project_id, task_id, record_id, label, annotator,
                          parse_ts(ann.get("created_at")), updated, _float(ann.get("lead_time")),
                          cancelled, json.dumps(result), via, now(), rating, response])
    revision = None
    if review is not None and record_id is not None:
        revision = _sync_revision(cur, record_id, aid, annotator, None if cancelled else review.revised)
    gold = _refresh_gold(cur, record_id) if record_id is not None else "unchanged"
    outcome = "unknown_task" if record_id is None else ("updated" if prev else "created")
    out = {"annotation_id": aid, "outcome": outcome, "record_id": record_id, "gold": gold}
    if record_id is not None and label is not None and not cancelled:
        reviewed = review_issue(cur, record_id, label)
        if reviewed:
            out["label_issue"] = reviewed
    if revision is not None:
        out["revision"] = revision
    return out


# -- instruction review: revisions ----------------------------------------------------------------------------
def _is_instruction(cur, record_id: int | None, project_id: int | None) -> bool:
    if record_id is not None:
        row = cur.execute("SELECT d.task FROM store.records r JOIN store.datasets d ON d.name = r.dataset "
                          "WHERE r.record_id = ?", [record_id]).fetchall()
    elif project_id is not None:
        row = cur.execute("SELECT d.task FROM store.ls_projects p JOIN store.datasets d ON d.name = p.dataset "
                          "WHERE p.project_id = ?", [project_id]).fetchall()
    else:
        return False
    return bool(row) and row[0][0] == "instruction"


def _current(cur, record_id: int, aid: int | None) -> tuple[int, str | None, Any]:
    """(revision, response, messages) of the latest accepted revision not made by annotation `aid`; revision
    0, the record as ingested, when there is none."""
    row = cur.execute("SELECT revision, response, messages FROM store.revisions WHERE record_id = ? "
                      "AND status = 'accepted' AND annotation_id IS DISTINCT FROM ? ORDER BY revision DESC LIMIT 1",
                      [record_id, aid]).fetchall()
    if row:
        return int(row[0][0]), row[0][1], row[0][2]
    rec = cur.execute("SELECT response, messages FROM store.records WHERE record_id = ?", [record_id]).fetchall()
    if not rec:
        return 0, None, None
    response = rec[0][0] if rec[0][0] is not None else dialogue_turns(rec[0][1])[1]
    return 0, response, rec[0][1]


def _sync_revision(cur, record_id: int, aid: int, annotator: str | None, text: str | None) -> str | None:
    """Keep annotation `aid`'s revision of the record in step with it: a new revision (max + 1, parent = the
    revision the annotator edited, status accepted) when it edits the response, nothing when its revision
    already has that text, the old one superseded when the edit changed, withdrawn when it no longer edits.
    Returns 'revised' | 'unchanged' | 'withdrawn' | None (no revision involved)."""
    own = cur.execute("SELECT revision, response, parent_revision FROM store.revisions WHERE record_id = ? "
                      "AND annotation_id = ? AND status = 'accepted' ORDER BY revision DESC",
                      [record_id, aid]).fetchall()
    if text is None:
        if not own:
            return None
        _withdraw(cur, aid)
        return "withdrawn"
    if own and own[0][1] == text:
        return "unchanged"
    if own:
        parent = own[0][2]
        base = cur.execute("SELECT messages FROM store.revisions WHERE record_id = ? AND revision = ?",
                           [record_id, parent]).fetchall()
        messages = base[0][0] if base else _current(cur, record_id, aid)[2]
        _withdraw(cur, aid)
    else:
        parent, _, messages = _current(cur, record_id, aid)
    rev = cur.execute("SELECT coalesce(max(revision), 0) + 1 FROM store.revisions WHERE record_id = ?",
                      [record_id]).fetchall()[0][0]
    cur.execute("INSERT INTO store.revisions (record_id, revision, response, messages, parent_revision, source, "
                "annotator, annotation_id, status, created_at) VALUES (?, ?, ?, ?, ?, 'annotation', ?, ?, "
                "'accepted', ?)", [record_id, rev, text, json.dumps(replace_response(messages, text)), parent,
                                   annotator, aid, now()])
    return "revised"


def _withdraw(cur, aid: int) -> None:
    cur.execute("UPDATE store.revisions SET status = 'superseded' WHERE annotation_id = ? AND status = 'accepted'",
                [aid])


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _task_record(cur, project_id: int | None, task_id: int | None, task: Mapping[str, Any] | None) -> int | None:
    if task_id is not None:
        row = cur.execute("SELECT record_id FROM store.ls_tasks WHERE task_id = ? "
                          "AND (? IS NULL OR project_id = ?)", [task_id, project_id, project_id]).fetchall()
        if row:
            return int(row[0][0])
    data = (task or {}).get("data") or {}
    h, rid = data.get("input_hash"), data.get("record_id")
    if h is None or project_id is None:
        return None
    ds = cur.execute("SELECT dataset FROM store.ls_projects WHERE project_id = ?", [project_id]).fetchall()
    if not ds:
        return None
    rec = cur.execute("SELECT record_id FROM store.records WHERE dataset = ? AND input_hash = ? "
                      "ORDER BY (record_id = ?) DESC, record_id LIMIT 1", [ds[0][0], str(h), rid]).fetchall()
    if not rec:
        return None
    if task_id is not None:
        cur.execute("INSERT INTO store.ls_tasks (project_id, input_hash, task_id, record_id, pushed_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", [project_id, str(h), task_id, rec[0][0], now()])
    return int(rec[0][0])


def _refresh_gold(cur, record_id: int | None) -> str:
    """Recompute a record's gold label from its annotations. Returns set / removed / restored / unchanged."""
    if record_id is None:
        return "unchanged"
    labels = cur.execute("SELECT d.labels FROM store.records r JOIN store.datasets d ON d.name = r.dataset "
                         "WHERE r.record_id = ?", [record_id]).fetchall()
    valid = set(labels[0][0]) if labels else set()
    live = cur.execute(
        "SELECT annotation_id, label, annotator FROM store.annotations WHERE record_id = ? AND NOT deleted "
        "AND NOT coalesce(was_cancelled, false) AND label IS NOT NULL "
        "ORDER BY updated_at DESC NULLS LAST, annotation_id DESC", [record_id]).fetchall()
    live = [r for r in live if r[1] in valid]
    cur_gold = cur.execute("SELECT label, source, source_ref, annotator, method, confidence FROM store.gold_labels "
                           "WHERE record_id = ?", [record_id]).fetchall()
    if live:
        # one annotator: the latest annotation (method NULL, as before); several: their majority
        g = record_gold([(int(a), lab, who) for a, lab, who in live])
        method, conf = (None, None) if g.method == "latest" else (g.method, round(g.confidence, 6))
        if cur_gold and cur_gold[0] == (g.label, "annotation", g.source_ref, g.annotator, method, conf):
            return "unchanged"
        cur.execute("INSERT OR REPLACE INTO store.gold_labels (record_id, label, source, source_ref, annotator, "
                    "updated_at, method, confidence) VALUES (?, ?, 'annotation', ?, ?, ?, ?, ?)",
                    [record_id, g.label, g.source_ref, g.annotator, now(), method, conf])
        return "set"
    if not cur_gold or cur_gold[0][1] != "annotation":
        return "unchanged"
    prior = cur.execute("SELECT prior_label, prior_source_ref FROM store.ls_tasks WHERE record_id = ? "
                        "AND prior_label IS NOT NULL LIMIT 1", [record_id]).fetchall()
    if prior:
        cur.execute("INSERT OR REPLACE INTO store.gold_labels (record_id, label, source, source_ref, annotator, updated_at) VALUES (?, ?, 'imported', ?, NULL, ?)",
                    [record_id, prior[0][0], prior[0][1], now()])
        return "restored"
    cur.execute("DELETE FROM store.gold_labels WHERE record_id = ?", [record_id])
    return "removed"


def review_issue(cur, record_id: int, label: str) -> str | None:
    """An annotation of a record flagged in `store.label_issues` (not reviewed yet) is its review: the label
    it had is `confirmed`, or `corrected` to the annotation's. Returns the outcome, None when not a suspect."""
    row = cur.execute("SELECT dataset, label FROM store.label_issues WHERE record_id = ? AND outcome IS NULL",
                      [record_id]).fetchall()
    if not row:
        return None
    outcome = "confirmed" if row[0][1] == label else "corrected"
    cur.execute("UPDATE store.label_issues SET outcome = ?, reviewed_at = ? WHERE dataset = ? AND record_id = ?",
                [outcome, now(), row[0][0], record_id])
    return outcome


# -- annotations made elsewhere ------------------------------------------------------------------------------
IMPORT_ID_BASE = -(2 ** 40)       # imported annotations get ids below this: Label Studio's ids are positive


def import_annotations(store: Store, file: str, dataset: str, *, source_col: str = "source_id",
                       annotator_col: str = "annotator", label_col: str = "label") -> dict:
    """Annotations made outside Label Studio, as a long table (CSV/Parquet/JSON lines: source_id, annotator,
    label; optional lead_time, created_at, rating): stored in `store.annotations` with via='import' and
    negative ids that cannot clash with Label Studio's; gold labels follow from them (one annotator: that
    annotation; several: their majority). Idempotent: the same (record, annotator, label) again is a duplicate;
    a new label from the same annotator replaces the old one (updated). Rows whose source_id is not a record of
    the dataset, or whose label is not in its label set, are counted and named (the first 5), never stored."""
    import hashlib

    import polars as pl

    path = str(file)
    if path.endswith(".parquet"):
        df = pl.read_parquet(path)
    elif path.endswith((".jsonl", ".ndjson")):
        df = pl.read_ndjson(path)
    else:
        df = pl.read_csv(path, infer_schema_length=0)
    missing = [c for c in (source_col, annotator_col, label_col) if c not in df.columns]
    if missing:
        raise InputError(f"{path}: column(s) {missing} missing; a long table needs {source_col}, {annotator_col}, "
                         f"{label_col} (has {df.columns})")
    valid = set(verdict_labels(store.dataset(dataset)))
    ids = dict(store.query("SELECT source_id, record_id FROM store.records WHERE dataset = ? AND source_id IS NOT "
                           "NULL", [dataset]))
    counts = {"rows": df.height, "created": 0, "updated": 0, "duplicate": 0, "unknown_record": 0, "bad_label": 0}
    bad: list[str] = []
    ts = now()
    touched: set[int] = set()
    with store.transaction() as cur:
        for n, r in enumerate(df.iter_rows(named=True), start=1):
            sid, who, label = str(r[source_col]), str(r[annotator_col]), r[label_col]
            label = None if label is None else str(label)
            rid = ids.get(sid)
            if rid is None:
                counts["unknown_record"] += 1
                len(bad) < 5 and bad.append(f"row {n}: source_id {sid!r} is not a record of {dataset!r}")
                continue
            if label not in valid:
                counts["bad_label"] += 1
                len(bad) < 5 and bad.append(f"row {n}: label {label!r} not in {sorted(valid)}")
                continue
            key = hashlib.sha1(f"{dataset}\x00{rid}\x00{who}".encode()).hexdigest()
            aid = IMPORT_ID_BASE - int(key[:12], 16)         # one id per (record, annotator)
            prev = cur.execute("SELECT label FROM store.annotations WHERE annotation_id = ?", [aid]).fetchall()
            if prev and prev[0][0] == label:
                counts["duplicate"] += 1
                continue
            created = parse_ts(r.get("created_at")) or ts
            cur.execute(_UPSERT, [aid, None, None, rid, label, who, created, ts if prev else created,
                                  _float(r.get("lead_time")), False, json.dumps([]), "import", ts,
                                  None if r.get("rating") in (None, "") else int(r["rating"]), None])
            counts["updated" if prev else "created"] += 1
            touched.add(rid)
        gold = {"set": 0, "unchanged": 0}
        for rid in touched:
            g = _refresh_gold(cur, rid)
            gold[g] = gold.get(g, 0) + 1
    return {"dataset": dataset, "file": path, **counts, "gold": gold, "problems": bad}


def mark_deleted(store: Store, annotation_ids: Iterable[int], *, project_id: int | None = None,
                 via: str = "webhook") -> dict:
    """Tombstone annotations (a deletion may arrive before its creation: the tombstone wins)."""
    counts = {"deleted": 0, "already_deleted": 0, "tombstoned": 0}
    with store.transaction() as cur:
        for aid in annotation_ids:
            counts[_delete(cur, int(aid), project_id, via)] += 1
    return counts


def _delete(cur, aid: int, project_id: int | None, via: str) -> str:
    row = cur.execute("SELECT deleted, record_id FROM store.annotations WHERE annotation_id = ?", [aid]).fetchall()
    if row and row[0][0]:
        return "already_deleted"
    if not row:
        cur.execute("INSERT INTO store.annotations (annotation_id, project_id, deleted, via, received_at) "
                    "VALUES (?, ?, true, ?, ?)", [aid, project_id, via, now()])
        return "tombstoned"
    cur.execute("UPDATE store.annotations SET deleted = true, via = ?, received_at = ? WHERE annotation_id = ?",
                [via, now(), aid])
    _withdraw(cur, aid)               # an instruction edit's revision goes with its annotation
    _refresh_gold(cur, row[0][1])
    return "deleted"


def handle_webhook(store: Store, payload: Mapping[str, Any], *, users: Mapping[int, str] | None = None) -> dict:
    """Apply one Label Studio webhook. Annotation actions are recorded; other actions are acknowledged and
    ignored. Fast (one small transaction): Label Studio waits at most 1 s for the answer.
    Returns {"action", "project_id", "outcomes": {outcome: count}, "annotation_ids": [...]}."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("action"), str):
        raise WebhookPayloadError("webhook payload without an `action` string; is this a Label Studio webhook "
                                  "with 'send payload' on?")
    action = payload["action"]
    proj = payload.get("project")
    project_id = int(proj["id"]) if isinstance(proj, Mapping) and proj.get("id") is not None else None
    outcomes: dict[str, int] = {}
    ids: list[int] = []
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
        anns = payload.get("annotation")
        tasks = payload.get("task")
        if isinstance(anns, Mapping):
            anns, tasks = [anns], [tasks] if isinstance(tasks, Mapping) else [None]
        if not isinstance(anns, list):
            raise WebhookPayloadError(f"{action}: field `annotation` missing or not an object/list")
        tasks = tasks if isinstance(tasks, list) else []
        by_id = {int(t["id"]): t for t in tasks if isinstance(t, Mapping) and t.get("id") is not None}
        with store.transaction() as cur:
            for a in anns:
                if not isinstance(a, Mapping):
                    raise WebhookPayloadError(f"{action}: an `annotation` item is not an object")
                if project_id is not None and not a.get("project"):
                    a = {**a, "project": project_id}
                t = a.get("task")
                r = _record(cur, a, "webhook", by_id.get(int(t)) if isinstance(t, int) else None, users)
                outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
                ids.append(r["annotation_id"])
    elif action == "ANNOTATIONS_DELETED":
        items = payload.get("annotations")
        if not isinstance(items, list):
            raise WebhookPayloadError("ANNOTATIONS_DELETED: field `annotations` missing or not a list")
        ids = [int(a["id"]) for a in items if isinstance(a, Mapping) and a.get("id") is not None]
        outcomes = {k: v for k, v in mark_deleted(store, ids, project_id=project_id).items() if v}
    else:
        outcomes = {"ignored": 1}
    return {"action": action, "project_id": project_id, "outcomes": outcomes, "annotation_ids": ids}


def pull_annotations(store: Store, dataset: str, client: StudioClient) -> dict:
    """Reconcile with Label Studio: record every annotation of the dataset's project that is missing or newer
    here, and tombstone the ones Label Studio no longer has (deleted while no webhook got through).
    Returns counts per outcome plus `seen` and `deleted`."""
    pid = store.one("SELECT project_id FROM store.ls_projects WHERE dataset = ?", [dataset])
    if pid is None:
        raise NotFound(f"dataset {dataset!r} has no Label Studio project; push a selection first")
    started = now()
    users = client.users.emails()
    exported = client.projects.export(pid)
    outcomes: dict[str, int] = {}
    seen: set[int] = set()
    with store.transaction() as cur:
        for task in exported:
            for a in task.get("annotations") or []:
                a = {**a, "task": task["id"], "project": a.get("project") or pid}
                r = _record(cur, a, "pull", task, users)
                seen.add(r["annotation_id"])
                outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        # Gone from Label Studio: deleted. Only rows received before this pull began (a webhook that lands
        # during the export is newer than the export and must not be tombstoned).
        gone = [r[0] for r in cur.execute(
            "SELECT annotation_id FROM store.annotations WHERE project_id = ? AND NOT deleted "
            "AND received_at < ?", [pid, started]).fetchall() if r[0] not in seen]
        for aid in gone:
            _delete(cur, aid, pid, "pull")
    return {"dataset": dataset, "project_id": pid, "seen": len(seen), "deleted": len(gone),
            "outcomes": outcomes}


# -- webhooks ----------------------------------------------------------------------------------------------
def register_webhook(client: StudioClient, project_id: int, url: str, secret: str, *,
                     header: str = WEBHOOK_HEADER) -> dict:
    """Point the project's annotation webhooks at `url`, with the secret in a custom header (Label Studio
    cannot sign webhooks). Idempotent: a webhook of this project with the same URL is updated, not doubled.
    Returns {"webhook_id", "created"} (never the secret)."""
    if not secret:
        raise InputError("a webhook secret is required (set CURATE_WEBHOOK_SECRET); Label Studio webhooks are "
                         "unsigned, the token header is the receiver's only protection")
    fields = {"project": project_id, "url": url, "send_payload": True, "send_for_all_actions": False,
              "actions": list(WEBHOOK_ACTIONS), "headers": {header: secret}, "is_active": True}
    existing = [w for w in client.webhooks.list(project_id) if w.get("url") == url
                and w.get("project") == project_id]
    if existing:
        client.webhooks.update(existing[0]["id"], **fields)
        return {"webhook_id": existing[0]["id"], "created": False}
    w = client.webhooks.create(**fields)
    return {"webhook_id": w["id"], "created": True}
