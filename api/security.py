"""What every request passes before a route sees it: host and cross-site checks, the key and its role, the content
type, the body size and JSON depth; afterwards every mutating request is written to the audit trail.

One ASGI middleware (`SecurityMiddleware`) does it for the whole app, so a route cannot be added without it. What a
route needs is declared in ONE place, `ROUTE_ROLES` (method, path template) → permission; a route missing from the
table needs `admin` (fail closed), and `tests/test_security_api.py` fails for any route of the app that is not in
the table.

Permissions (who may; `api.keys` has the roles):

| permission | roles |
|---|---|
| `public` | anyone: `/health` (liveness only) and the OpenAPI docs |
| `annotator` | annotator, admin, or the webhook secret (`CURATE_WEBHOOK_SECRET`): Label Studio's webhook, the ML backend |
| `read` | engineer, trainer, admin |
| `engineer` | engineer, admin |
| `trainer` | trainer, admin |
| `admin` | admin (`CURATE_API_KEY` is an admin key) |

Modes. With any key configured (`CURATE_API_KEY` or an active key in `store.api_keys`) every route but the public
ones needs a key (`X-API-Key`; on annotator routes also as a token header, bearer token or basic-auth password, as
Label Studio sends them): missing → 401, unknown or revoked → 403, a role that may not → 403. With no key
(keyless loopback mode) every route is open to the machine, so the server also refuses what a web page could send
it: a Host not in `allowed_hosts` (DNS rebinding), an `Origin` of another site, `Sec-Fetch-Site: cross-site`
(403). A browser's `Sec-Fetch-Site: cross-site` is refused in every mode, and the Host/Origin check applies with
keys too when `allowed_hosts` is set.

Bodies: a mutating request with a body must be `application/json` (415 otherwise), or `multipart/form-data` on the
upload routes (`UPLOAD_ROUTES`); JSON bodies over `max_json_bytes` and uploads over `max_upload_bytes` get 413
(by Content-Length before reading, or while reading), JSON nested deeper than `max_json_depth` gets 400.
"""

import contextlib
import hmac
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.keys import ENV_ADMIN, WEBHOOK_SECRET, KeyIdentity, active_keys, audit_row, find_key
from curation.settings import Settings
from curation.store import Store

log = logging.getLogger(__name__)

PERMISSIONS: dict[str, frozenset[str]] = {
    "public": frozenset(),
    "annotator": frozenset({"annotator", "admin"}),
    "read": frozenset({"engineer", "trainer", "admin"}),
    "engineer": frozenset({"engineer", "admin"}),
    "trainer": frozenset({"trainer", "admin"}),
    "admin": frozenset({"admin"}),
}
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# (method, path template) -> permission. THE place a route's role is declared.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    # service
    ("GET", "/health"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
    ("GET", "/status"): "read",
    # datasets and records
    ("GET", "/datasets"): "read",
    ("GET", "/datasets/{name}"): "read",
    ("GET", "/datasets/{name}/records"): "read",
    ("GET", "/datasets/{name}/records/{record_id}/revisions"): "read",
    ("PATCH", "/datasets/{name}/settings"): "admin",
    ("POST", "/datasets/{name}/ingest"): "engineer",
    # SQL
    ("POST", "/sql"): "engineer",
    # weak supervision, splits, augmentation
    ("POST", "/datasets/{name}/lfs"): "engineer",
    ("POST", "/datasets/{name}/votes"): "engineer",
    ("GET", "/datasets/{name}/lfs/report"): "read",
    ("POST", "/datasets/{name}/label-model"): "engineer",
    ("POST", "/datasets/{name}/splits"): "engineer",
    ("GET", "/datasets/{name}/splits/check"): "read",
    ("POST", "/datasets/{name}/augment"): "engineer",
    ("POST", "/datasets/{name}/export"): "engineer",
    ("POST", "/datasets/{name}/contamination"): "engineer",
    ("GET", "/datasets/{name}/contamination"): "read",
    # label quality
    ("GET", "/datasets/{name}/agreement"): "read",
    ("POST", "/datasets/{name}/consensus"): "engineer",
    ("POST", "/datasets/{name}/label-issues"): "engineer",
    ("GET", "/datasets/{name}/label-issues"): "read",
    ("POST", "/datasets/{name}/annotations"): "engineer",
    # runs, predictions, selections, rounds
    ("GET", "/runs"): "read",
    ("POST", "/runs"): "trainer",
    ("GET", "/runs/{run_id}"): "read",
    ("POST", "/runs/{run_id}/score"): "trainer",
    ("GET", "/runs/{run_id}/predictions"): "read",
    ("GET", "/runs/{run_id}/scores"): "read",
    ("POST", "/selections"): "trainer",
    ("GET", "/selections"): "read",
    ("GET", "/selections/{selection_id}"): "read",
    ("POST", "/datasets/{name}/rounds"): "trainer",
    ("GET", "/datasets/{name}/rounds"): "read",
    ("GET", "/rounds/{round_id}"): "read",
    # jobs
    ("GET", "/jobs"): "read",
    ("GET", "/jobs/{job_id}"): "read",
    ("POST", "/jobs/{job_id}/retry"): "admin",
    # keys and the audit trail
    ("GET", "/keys"): "admin",
    ("POST", "/keys"): "admin",
    ("DELETE", "/keys/{key_ref}"): "admin",
    ("GET", "/audit"): "admin",
    # Label Studio: webhook and ML backend
    ("POST", "/webhooks/labelstudio"): "annotator",
    ("GET", "/ml/health"): "annotator",
    ("POST", "/ml/setup"): "annotator",
    ("GET", "/ml/versions"): "annotator",
    ("POST", "/ml/predict"): "annotator",
    ("POST", "/ml/webhook"): "annotator",
    ("POST", "/ml/train"): "annotator",
}
# routes that take multipart/form-data (uploads); every other body must be JSON
UPLOAD_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/datasets/{name}/ingest"), ("POST", "/datasets/{name}/lfs"), ("POST", "/datasets/{name}/votes"),
    ("POST", "/datasets/{name}/annotations"), ("POST", "/datasets/{name}/contamination"),
})
UNLISTED = "admin"   # a route missing from ROUTE_ROLES (and unknown paths): admins only


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


_MATCHERS = [(m, t, _template_regex(t)) for m, t in ROUTE_ROLES]


def route_rule(method: str, path: str) -> tuple[str | None, str]:
    """(the matched template or None, its permission). Exact templates win over ones with parameters."""
    best = None
    for m, template, rx in _MATCHERS:
        if m == method and rx.match(path):
            if "{" not in template:
                return template, ROUTE_ROLES[(m, template)]
            best = best or template
    if best is not None:
        return best, ROUTE_ROLES[(method, best)]
    return None, UNLISTED


# -- keys in memory ------------------------------------------------------------------------------------------
class KeyRing:
    """The active keys' hashes, loaded from the store at start and after each change through the API (the
    server holds the DuckDB file, so no other process changes the table while it runs)."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self._keys: list[tuple[str, KeyIdentity]] = []
        self.reload()

    def reload(self) -> None:
        self._keys = active_keys(self.store)

    @property
    def keyed(self) -> bool:
        """True when any key is configured: then every non-public route needs one."""
        return self.settings.api_key is not None or bool(self._keys)

    def identify(self, given: str | None) -> KeyIdentity | None:
        if not given:
            return None
        env = self.settings.api_key
        if env is not None and same_secret(given, env.get_secret_value()):
            return ENV_ADMIN
        return find_key(self._keys, given)

    def webhook_secret(self) -> str | None:
        s = self.settings.webhook_secret
        return s.get_secret_value() if s is not None else None


# -- the audit trail -----------------------------------------------------------------------------------------
class AuditWriter:
    """Audit rows go through a bounded queue to one writer thread (the request never waits on the store).
    Rows that do not fit are counted (`dropped`) and logged, never silently lost."""

    def __init__(self, store: Store, maxsize: int = 10_000):
        self.store = store
        self._q: queue.Queue = queue.Queue(maxsize)
        self.written = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="curate-audit", daemon=True)
        self._thread.start()

    def put(self, row: list) -> None:
        try:
            self._q.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            log.error("audit queue full: dropped the row for %s %s (%d dropped so far)", row[4], row[5],
                      self.dropped)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._q.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            rows = [r for r in batch if r is not None]
            try:
                if rows:
                    with self.store.transaction() as cur:
                        cur.executemany("INSERT INTO store.audit (happened_at, key_id, key_name, role, method, "
                                        "path, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    self.written += len(rows)
            except Exception:
                self.failed += len(rows)
                log.exception("could not write %d audit row(s)", len(rows))
            finally:
                for _ in batch:
                    self._q.task_done()
            if any(r is None for r in batch):
                return


# -- hosts and origins ---------------------------------------------------------------------------------------
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def split_host(value: str) -> tuple[str, int | None]:
    """`name[:port]` or `[v6][:port]` → (lower-case name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    return name, int(port) if port.isdigit() else None


class HostPolicy:
    """Which Host (and Origin) values the server answers: settings `allowed_hosts` (`name` = any port,
    `name:port` = that port, `*` = any host), else the bound host, localhost, 127.0.0.1 and ::1 on the bound
    port (any port when the port is unknown, e.g. in-process tests)."""

    def __init__(self, allowed: Iterable[str], bind: tuple[str, int] | None = None):
        allowed = list(allowed)
        self.any = "*" in allowed
        self.explicit = bool(allowed)
        self.entries: set[tuple[str, int | None]] = set()
        if allowed:
            self.entries = {split_host(a) for a in allowed if a != "*"}
        else:
            port = bind[1] if bind else None
            names = set(LOOPBACK_NAMES)
            if bind and bind[0] not in ("0.0.0.0", "::", ""):
                names.add(split_host(bind[0])[0])
            self.entries = {(n, port) for n in names}

    def allows(self, host: str, port: int | None) -> bool:
        if self.any:
            return True
        return (host, port) in self.entries or (host, None) in self.entries

    def host_ok(self, header: str | None) -> bool:
        if header is None:
            return False
        return self.allows(*split_host(header))

    def origin_ok(self, origin: str) -> bool:
        if origin == "null":
            return False
        try:
            parts = urlsplit(origin)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        return self.allows(parts.hostname.lower(), port)


# -- JSON depth --------------------------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (strings are skipped)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b'""', body).translate(None, _NOT_BRACKET)
    depth = 0
    for b in brackets:
        depth += 1 if b in (91, 123) else -1
        if depth > limit:
            return True
    return False


# -- temporary upload copies ---------------------------------------------------------------------------------
UPLOAD_PREFIX = "curate-upload-"


def upload_dir_prefix() -> str:
    """Upload copies live in `<tmp>/curate-upload-<pid>-*`, so a later start can tell a dead process's ones."""
    return f"{UPLOAD_PREFIX}{os.getpid()}-"


def clean_stale_uploads(tmp: str | Path | None = None) -> int:
    """Remove upload copies left by a process that is gone (a killed ingest). Returns how many."""
    removed = 0
    root = Path(tmp or tempfile.gettempdir())
    for d in root.glob(f"{UPLOAD_PREFIX}*"):
        pid = d.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(d) if d.is_dir() else d.unlink()
            removed += 1
    if removed:
        log.warning("removed %d upload cop%s left by a stopped server in %s", removed, "y" if removed == 1 else
                    "ies", root)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the middleware ----------------------------------------------------------------------------------------
class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _token_candidates(headers: Headers) -> list[str]:
    """An API key as X-API-Key, or (annotator routes, as Label Studio sends) a token header, bearer, basic auth."""
    import base64

    from labeling.studio import WEBHOOK_HEADER

    out = [v for v in (headers.get("x-api-key"), headers.get(WEBHOOK_HEADER)) if v]
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        out.append(value.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            out.append(base64.b64decode(value.strip()).decode().partition(":")[2])
    return out


def authorize(state: Any, method: str, permission: str, headers: Headers) -> KeyIdentity | None:
    """The caller's identity, or `Refused`."""
    ring: KeyRing = state.keyring
    if permission == "public":
        return None
    if permission == "annotator":
        candidates = _token_candidates(headers)
        secret = ring.webhook_secret()
        if secret is not None and any(same_secret(c, secret) for c in candidates):
            return WEBHOOK_SECRET
        for c in candidates:
            ident = ring.identify(c)
            if ident is not None and ident.role in PERMISSIONS["annotator"]:
                return ident
        if secret is None and not ring.keyed:
            return None
        raise Refused(401, "unauthorized", "webhook token missing or wrong: Label Studio must send the "
                                           "CURATE_WEBHOOK_SECRET or an annotator key (webhook header "
                                           "`X-Curate-Webhook-Token`, or the password of basic auth in the ML "
                                           "backend URL)", {"WWW-Authenticate": 'Basic realm="curate"'})
    if not ring.keyed:
        return None
    given = headers.get("x-api-key")
    if not given:
        raise Refused(401, "unauthorized", "this server needs a key: send it in the X-API-Key header (create one "
                                           "with `curate keys create --role ROLE --name NAME`, or use "
                                           "CURATE_API_KEY)", {"WWW-Authenticate": "APIKey"})
    ident = ring.identify(given)
    if ident is None:
        raise Refused(403, "forbidden", "the X-API-Key header matches no active key (unknown or revoked)")
    allowed = PERMISSIONS[permission]
    if ident.role not in allowed:
        raise Refused(403, "forbidden", f"key {ident.name!r} has role {ident.role!r}; {method} on this route "
                                        f"needs {' or '.join(sorted(allowed))}")
    return ident


def check_site(state: Any, headers: Headers) -> None:
    """Host and cross-site checks (keyless mode, or whenever `allowed_hosts` is set)."""
    if (headers.get("sec-fetch-site") or "").lower() == "cross-site":
        raise Refused(403, "forbidden", "cross-site request refused (Sec-Fetch-Site: cross-site): a web page of "
                                        "another site may not call this server")
    policy: HostPolicy = state.hosts
    if state.keyring.keyed and not policy.explicit:
        return
    if not policy.host_ok(headers.get("host")):
        raise Refused(403, "forbidden", f"Host {headers.get('host')!r} is not one this server answers (DNS "
                                        f"rebinding guard); add it to CURATE_ALLOWED_HOSTS if it is yours")
    origin = headers.get("origin")
    if origin is not None and not policy.origin_ok(origin):
        raise Refused(403, "forbidden", f"cross-site request refused: Origin {origin!r} is not this server")


def check_content_type(method: str, upload: bool, headers: Headers) -> None:
    if method not in MUTATING:
        return
    has_body = int(headers.get("content-length") or 0) > 0 or "transfer-encoding" in headers
    if not has_body:
        return
    media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if upload:
        if media != "multipart/form-data":
            raise Refused(415, "unsupported_media_type", f"this route takes an upload: send multipart/form-data, "
                                                         f"not {media or 'no content type'}")
    elif not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        raise Refused(415, "unsupported_media_type", f"send the body as application/json, not "
                                                     f"{media or 'no content type'}")


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class SecurityMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(scope["app"].state, "curate", None)
        method, path = scope["method"], scope["path"]
        template, permission = route_rule(method, path)
        if state is None:
            if permission == "public":
                await self.app(scope, receive, send)
            else:
                await _error(503, "starting", "the server is starting or stopping; retry in a moment")(
                    scope, receive, send)
            return
        headers = Headers(scope=scope)
        mutating = method in MUTATING
        upload = (method, template) in UPLOAD_ROUTES
        ident: KeyIdentity | None = None
        settings: Settings = state.settings
        status = {"code": 500}
        try:
            check_site(state, headers)
            ident = authorize(state, method, permission, headers)
            scope.setdefault("state", {})["curate_identity"] = ident
            check_content_type(method, upload, headers)
            limit = settings.max_upload_bytes if upload else settings.max_json_bytes
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise Refused(413, "too_large", _too_large(limit, upload))
            if mutating and not upload:
                body = await _read_body(receive, limit, upload)
                if body and json_depth_exceeds(body, settings.max_json_depth):
                    raise Refused(400, "bad_request", f"the JSON body nests deeper than {settings.max_json_depth} "
                                                      f"levels (CURATE_MAX_JSON_DEPTH)")
                receive = _replay(body, receive)
        except Refused as e:
            status["code"] = e.status
            await _error(e.status, e.code, e.message, e.headers)(scope, receive, send)
            if mutating:
                state.audit.put(audit_row(ident, method, path, e.status, e.code))
            return

        too_large = {"hit": False}
        if upload:
            receive = _counting(receive, limit, too_large)

        async def send_status(message: Message) -> None:
            if too_large["hit"]:
                return   # the app's answer to a cut body is replaced by the 413 below
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            if not too_large["hit"]:
                raise
        finally:
            if too_large["hit"]:
                status["code"] = 413
                await _error(413, "too_large", _too_large(limit, upload))(scope, receive, send)
            if mutating:
                state.audit.put(audit_row(ident, method, path, status["code"], None))


def _too_large(limit: int, upload: bool) -> str:
    what, setting = ("upload", "CURATE_MAX_UPLOAD_BYTES") if upload else ("JSON body", "CURATE_MAX_JSON_BYTES")
    return f"the {what} is larger than {limit:,} bytes ({setting})"


async def _read_body(receive: Receive, limit: int, upload: bool) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too_large", _too_large(limit, upload))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _counting(receive: Receive, limit: int, flag: dict) -> Receive:
    size = 0

    async def counting() -> Message:
        nonlocal size
        if flag["hit"]:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                flag["hit"] = True
                return {"type": "http.disconnect"}
        return message

    return counting
