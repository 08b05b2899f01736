"""Label Studio over HTTP: one client class per remote resource, typed errors that keep the status code.

label-studio-sdk 2.x where it has the endpoint, httpx where it does not; neither is given the chance to read the
environment (`url` and `token` are passed explicitly) or to retry (an import retried after a timeout would
duplicate tasks).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, Self

import httpx

from curation.errors import CurateError


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

    def update(self, task_id: int, **fields: Any) -> dict:
        """PATCH a task (`data` is replaced whole: send the full dict)."""
        return self.c.request("PATCH", f"/api/tasks/{task_id}", json=fields).json()

    def reopen(self, task_id: int, overlap: int) -> dict:
        """Ask for more annotators on a task: its overlap (annotations wanted) and is_labeled=false. Label
        Studio 1.23 does not recompute `is_labeled` when only the overlap changes, so both go in one PATCH;
        the label stream then serves the task to a user who has not annotated it yet."""
        return self.update(task_id, overlap=int(overlap), is_labeled=False)


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
