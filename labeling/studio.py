"""Label Studio sync: projects, pushing selections as tasks, ordering for annotators, annotations back.

Edges: `StudioClient` (HTTP, one class per remote resource) and the `Store`. The cores are pure: the label
config from a label set, task payloads from rows, uncertainty from probabilities, the label inside an annotation
result, the gold label a record's annotations imply.

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

Annotations come back through webhooks (`handle_webhook`) and a reconciliation pull (`pull_annotations`),
because Label Studio drops a webhook whose receiver is slow or down. Both go through `record_annotation`:
idempotent by Label Studio's annotation id, out-of-order safe (an older `updated_at` never overwrites a newer
one; a deletion is a tombstone that a late "created" cannot revive). The gold label of a record is recomputed
from its annotations after every change: the latest live (not deleted, not cancelled, labelled) annotation wins;
when none is left, the gold label an annotation had set is removed, or the imported label the record had when it
was pushed is restored (`ls_tasks.prior_label`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self
from xml.sax.saxutils import quoteattr

import httpx
import numpy as np
import pyarrow as pa

from curation.errors import CurateError, InputError, NotFound
from curation.store import Store, now
from labeling.uncertainty import UNCERTAINTY, uncertainty

log = logging.getLogger(__name__)

WEBHOOK_HEADER = "X-Curate-Webhook-Token"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
SAMPLING = "Uncertainty sampling"
FROM_NAME, TO_NAME = "label", "text"
RANK_SUFFIX = ":rank"


# -- errors ------------------------------------------------------------------------------------------------
class StudioError(CurateError):
    """Label Studio answered with an error or could not be reached. Keeps the HTTP status (0: no answer)."""

    def __init__(self, message: str, status_code: int = 0, method: str = "", path: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.path = path


class StudioAuthError(StudioError):
    """401/403: the API token is wrong, or a legacy token is used while legacy tokens are disabled."""


class StudioNotFound(StudioError, LookupError):
    """404: the project, task or annotation does not exist (any more)."""


class StudioUnavailable(StudioError):
    """No answer: the server is down or the URL is wrong."""


class WebhookPayloadError(InputError):
    """A webhook payload that is not what Label Studio sends."""


def _raise_for(method: str, path: str, status: int, body: Any) -> None:
    detail = body if isinstance(body, str) else json.dumps(body, default=str) if body is not None else ""
    detail = re.sub(r"<[^>]+>", " ", detail)          # HTML error pages
    detail = re.sub(r"\s+", " ", detail).strip()[:300]
    msg = f"Label Studio {method} {path} -> {status}: {detail or 'no detail'}"
    if status in (401, 403):
        raise StudioAuthError(msg + " (check the API token, and that the server runs with "
                              "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true for `Token` auth)", status, method, path)
    if status == 404:
        raise StudioNotFound(msg, status, method, path)
    raise StudioError(msg, status, method, path)


@contextlib.contextmanager
def _sdk_errors(method: str, path: str) -> Iterator[None]:
    """Turn the SDK's ApiError and httpx transport errors into typed StudioErrors (no headers, no token)."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as e:
        _raise_for(method, path, e.status_code or 0, e.body)
    except httpx.TransportError as e:
        raise StudioUnavailable(f"Label Studio {method} {path}: no answer ({type(e).__name__}); is the server "
                                f"running at that URL?", 0, method, path) from None


# -- client: one class per remote resource -----------------------------------------------------------------
class _Resource:
    def __init__(self, client: StudioClient):
        self.c = client


class Projects(_Resource):
    def create(self, title: str, label_config: str, **settings: Any) -> dict:
        with _sdk_errors("POST", "/api/projects"):
            p = self.c.sdk.projects.create(title=title, label_config=label_config, **settings)
        return _dump(p)

    def get(self, project_id: int) -> dict:
        return self.c.request("GET", f"/api/projects/{project_id}").json()

    def list(self) -> list[dict]:
        out, page = [], 1
        while True:
            r = self.c.request("GET", "/api/projects", params={"page": page, "page_size": 100}, ok404=True)
            if r.status_code == 404:
                break
            body = r.json()
            items = body.get("results", body) if isinstance(body, dict) else body
            out.extend(items)
            if not isinstance(body, dict) or not body.get("next"):
                break
            page += 1
        return out

    def update(self, project_id: int, **fields: Any) -> dict:
        return self.c.request("PATCH", f"/api/projects/{project_id}", json=fields).json()

    def import_tasks(self, project_id: int, tasks: Sequence[dict]) -> list[int]:
        """Create tasks (with their predictions); returns the new task ids in the order given."""
        with _sdk_errors("POST", f"/api/projects/{project_id}/import"):
            r = self.c.sdk.projects.import_tasks(project_id, request=list(tasks), return_task_ids=True,
                                                 commit_to_project=True)
        ids = list(getattr(r, "task_ids", None) or [])
        if len(ids) != len(tasks):
            raise StudioError(f"Label Studio import into project {project_id} returned {len(ids)} task ids for "
                              f"{len(tasks)} tasks", 0, "POST", f"/api/projects/{project_id}/import")
        return ids

    def delete(self, project_id: int) -> None:
        self.c.request("DELETE", f"/api/projects/{project_id}/")

    def next_task(self, project_id: int) -> dict | None:
        """The task the label stream serves this client's user next (None when nothing is left)."""
        r = self.c.request("GET", f"/api/projects/{project_id}/next", ok404=True)
        if r.status_code == 404:
            return None
        return r.json()

    def export(self, project_id: int, *, all_tasks: bool = False) -> list[dict]:
        """Tasks with their annotations (cancelled ones included), synchronously, as Label Studio JSON."""
        r = self.c.request("GET", f"/api/projects/{project_id}/export",
                           params={"exportType": "JSON", "download_all_tasks": str(all_tasks).lower()},
                           timeout=max(self.c.timeout, 300.0))
        return r.json()


class Tasks(_Resource):
    def list(self, project_id: int, *, page_size: int = 1000, fields: str = "task_only") -> Iterator[dict]:
        """Page through a project's tasks. Label Studio answers 404 past the last page."""
        page = 1
        while True:
            r = self.c.request("GET", "/api/tasks", ok404=True,
                               params={"project": project_id, "page": page, "page_size": page_size,
                                       "fields": fields})
            if r.status_code == 404:
                return
            body = r.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            if len(tasks) < page_size:
                return
            page += 1

    def get(self, task_id: int) -> dict:
        return self.c.request("GET", f"/api/tasks/{task_id}").json()


class Predictions(_Resource):
    def import_(self, project_id: int, predictions: Sequence[dict]) -> int:
        """Add predictions to existing tasks: [{task, model_version, score, result}]. Returns the count."""
        r = self.c.request("POST", f"/api/projects/{project_id}/import/predictions", json=list(predictions),
                           timeout=max(self.c.timeout, 300.0))
        return int(r.json().get("created", len(predictions)))


class Annotations(_Resource):
    def create(self, task_id: int, result: list[dict], *, lead_time: float | None = None,
               was_cancelled: bool = False, project_id: int | None = None) -> dict:
        body: dict[str, Any] = {"result": result, "was_cancelled": was_cancelled}
        if lead_time is not None:
            body["lead_time"] = lead_time
        if project_id is not None:
            body["project"] = project_id
        return self.c.request("POST", f"/api/tasks/{task_id}/annotations", json=body).json()

    def update(self, annotation_id: int, **fields: Any) -> dict:
        return self.c.request("PATCH", f"/api/annotations/{annotation_id}", json=fields).json()

    def delete(self, annotation_id: int) -> None:
        self.c.request("DELETE", f"/api/annotations/{annotation_id}")

    def get(self, annotation_id: int) -> dict:
        return self.c.request("GET", f"/api/annotations/{annotation_id}").json()


class Webhooks(_Resource):
    def list(self, project_id: int | None = None) -> list[dict]:
        params = {"project": project_id} if project_id is not None else None
        return self.c.request("GET", "/api/webhooks", params=params).json()

    def create(self, **fields: Any) -> dict:
        return self.c.request("POST", "/api/webhooks", json=fields).json()

    def update(self, webhook_id: int, **fields: Any) -> dict:
        return self.c.request("PATCH", f"/api/webhooks/{webhook_id}", json=fields).json()

    def delete(self, webhook_id: int) -> None:
        self.c.request("DELETE", f"/api/webhooks/{webhook_id}")


class Annotator:
    """A Label Studio user that annotates; `token` is its API token (kept out of repr)."""

    def __init__(self, id: int, email: str, token: str):
        self.id, self.email, self.token = id, email, token

    def __repr__(self) -> str:
        return f"Annotator(id={self.id}, email={self.email!r}, token=***)"


class Users(_Resource):
    def list(self) -> list[dict]:
        return self.c.request("GET", "/api/users").json()

    def emails(self) -> dict[int, str]:
        """user id -> email (the annotator stored with each annotation)."""
        return {int(u["id"]): u.get("email") or u.get("username") or f"ls-user:{u['id']}" for u in self.list()}

    def whoami(self) -> dict:
        return self.c.request("GET", "/api/current-user/whoami").json()

    def signup_annotator(self, email: str, password: str) -> Annotator:
        """Create an annotator the way a person does in Label Studio Community: through the organisation's
        invite link (sign-up form), then read the new user's API token from its session."""
        invite = self.c.request("GET", "/api/invite").json()
        token = invite.get("token") or re.search(r"token=([^&\"]+)", invite.get("invite_url", "")).group(1)
        with httpx.Client(base_url=self.c.url, timeout=self.c.timeout, transport=self.c._transport,
                          follow_redirects=False) as s:
            r = s.get("/user/signup/", params={"token": token})
            csrf = s.cookies.get("csrftoken")
            if r.status_code != 200 or not csrf:
                _raise_for("GET", "/user/signup/", r.status_code, "no sign-up form (is sign-up disabled?)")
            r = s.post(f"/user/signup/?token={token}", headers={"Referer": f"{self.c.url}/user/signup/"},
                       data={"email": email, "password": password, "csrfmiddlewaretoken": csrf,
                             "allow_newsletters": "false"})
            if r.status_code != 302:
                _raise_for("POST", "/user/signup/", r.status_code,
                           f"sign-up of {email} refused (user exists, or the password is too weak)")
            me = s.get("/api/current-user/whoami").json()
            tok = s.get("/api/current-user/token").json()["token"]
        return Annotator(int(me["id"]), me.get("email", email), tok)


class StudioClient:
    """Label Studio over HTTP: label-studio-sdk 2.x where it has the endpoint, httpx where it does not.

    `url` and `token` are passed explicitly (the SDK would read LABEL_STUDIO_API_KEY and default to
    localhost:8000). The SDK's automatic retries are off: an import retried after a timeout would duplicate
    tasks; pushes are idempotent by `input_hash` instead. `transport` lets tests plug in `httpx.MockTransport`.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._token = token
        self.http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Token {token}"})
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout, max_retries=0,
                               httpx_client=httpx.Client(timeout=timeout, transport=transport))
        self.projects = Projects(self)
        self.tasks = Tasks(self)
        self.predictions = Predictions(self)
        self.annotations = Annotations(self)
        self.webhooks = Webhooks(self)
        self.users = Users(self)

    def __repr__(self) -> str:
        return f"StudioClient(url={self.url!r}, token=***)"

    def as_user(self, token: str) -> StudioClient:
        """The same server seen by another user (an annotator's token)."""
        return StudioClient(self.url, token, timeout=self.timeout, transport=self._transport)

    def request(self, method: str, path: str, *, ok404: bool = False, timeout: float | None = None,
                **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, timeout=timeout or self.timeout, **kw)
        except httpx.TransportError as e:
            raise StudioUnavailable(f"Label Studio {method} {path}: no answer ({type(e).__name__}); is the "
                                    f"server running at {self.url}?", 0, method, path) from None
        if r.status_code == 404 and ok404:
            return r
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            _raise_for(method, path, r.status_code, body)
        return r

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dump(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    for m in ("model_dump", "dict"):
        if hasattr(obj, m):
            return getattr(obj, m)()
    return dict(obj)


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
    return rank_version(run_id, kind), _scores([r[9] for r in rows], kind)


def _scores(probs: list, kind: str) -> list[float | None]:
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
        scores = _scores([r[1] for r in rows], kind)
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


# -- annotations -------------------------------------------------------------------------------------------
_UPSERT = """
INSERT INTO store.annotations (annotation_id, project_id, task_id, record_id, label, annotator, created_at,
    updated_at, lead_time, was_cancelled, deleted, result, via, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, ?, ?, ?)
ON CONFLICT (annotation_id) DO UPDATE SET project_id = excluded.project_id, task_id = excluded.task_id,
    record_id = excluded.record_id, label = excluded.label, annotator = excluded.annotator,
    created_at = excluded.created_at, updated_at = excluded.updated_at, lead_time = excluded.lead_time,
    was_cancelled = excluded.was_cancelled, result = excluded.result, via = excluded.via,
    received_at = excluded.received_at
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
                gold = _refresh_gold(cur, prev[0][5])
                return {"annotation_id": aid, "outcome": "updated", "record_id": prev[0][5], "gold": gold}
            return {"annotation_id": aid, "outcome": "duplicate", "record_id": prev[0][5], "gold": "unchanged"}
        if annotator and annotator.startswith("ls-user:") and p_annotator and not p_annotator.startswith("ls-user:"):
            annotator = p_annotator
    result = ann.get("result") or []
    cur.execute(_UPSERT, [aid, project_id, task_id, record_id, result_label(result), annotator,
                          parse_ts(ann.get("created_at")), updated, _float(ann.get("lead_time")),
                          bool(ann.get("was_cancelled")), json.dumps(result), via, now()])
    gold = _refresh_gold(cur, record_id) if record_id is not None else "unchanged"
    outcome = "unknown_task" if record_id is None else ("updated" if prev else "created")
    return {"annotation_id": aid, "outcome": outcome, "record_id": record_id, "gold": gold}


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
    cur_gold = cur.execute("SELECT label, source, source_ref, annotator FROM store.gold_labels WHERE record_id = ?",
                           [record_id]).fetchall()
    if live:
        aid, label, annotator = live[0]
        if cur_gold and cur_gold[0] == (label, "annotation", str(aid), annotator):
            return "unchanged"
        cur.execute("INSERT OR REPLACE INTO store.gold_labels VALUES (?, ?, 'annotation', ?, ?, ?)",
                    [record_id, label, str(aid), annotator, now()])
        return "set"
    if not cur_gold or cur_gold[0][1] != "annotation":
        return "unchanged"
    prior = cur.execute("SELECT prior_label, prior_source_ref FROM store.ls_tasks WHERE record_id = ? "
                        "AND prior_label IS NOT NULL LIMIT 1", [record_id]).fetchall()
    if prior:
        cur.execute("INSERT OR REPLACE INTO store.gold_labels VALUES (?, ?, 'imported', ?, NULL, ?)",
                    [record_id, prior[0][0], prior[0][1], now()])
        return "restored"
    cur.execute("DELETE FROM store.gold_labels WHERE record_id = ?", [record_id])
    return "removed"


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
