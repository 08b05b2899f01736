"""API keys with roles, stored hashed in `store.api_keys`; the audit trail in `store.audit`. No FastAPI here: the
CLI (`curate keys ...`) and the routes (`/keys`, `/audit`) share these functions.

A key is shown once, when it is created (`curate_` + 43 URL-safe characters, 256 random bits); the store keeps
its sha256 only. A request's key is hashed and compared with every active hash by `hmac.compare_digest`.
`CURATE_API_KEY` (settings) is an admin key that lives outside the table.

Roles (what each may call is declared in `api.security.ROUTE_ROLES`):

| role | may |
|---|---|
| `annotator` | the Label Studio webhook and ML backend (`/webhooks/*`, `/ml/*`) only |
| `engineer` | every read; SQL; ingest, LFs, votes, label model, splits, augmentation |
| `trainer` | every read; training runs, scoring, selections, rounds |
| `admin` | everything: the above, dataset settings, job retry, keys, the audit trail |
"""

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from curation.errors import InputError, NotFound
from curation.store import Store, now

ROLES = ("annotator", "engineer", "trainer", "admin")
KEY_PREFIX = "curate_"


@dataclass(frozen=True)
class KeyIdentity:
    """Who a request is: never the key itself."""

    key_id: str
    name: str
    role: str


ENV_ADMIN = KeyIdentity("env:CURATE_API_KEY", "CURATE_API_KEY", "admin")
WEBHOOK_SECRET = KeyIdentity("env:CURATE_WEBHOOK_SECRET", "CURATE_WEBHOOK_SECRET", "annotator")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return role


def create_key(store: Store, name: str, role: str) -> dict:
    """A new key. The returned `key` is the only time it is seen; the store keeps its sha256."""
    check_role(role)
    name = name.strip()
    if not name or len(name) > 100:
        raise InputError("key name: use 1-100 characters (a person or a service, e.g. `ls-webhook`)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key-" + uuid.uuid4().hex[:12]
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM store.api_keys WHERE name = ? AND revoked_at IS NULL", [name]).fetchall():
            raise InputError(f"an active key named {name!r} exists; revoke it first (`curate keys revoke {name}`) "
                             f"or choose another name")
        cur.execute("INSERT INTO store.api_keys (key_id, name, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                    [key_id, name, role, hash_key(key), now()])
    return {"key_id": key_id, "name": name, "role": role, "key": key}


def list_keys(store: Store, *, include_revoked: bool = True) -> list[dict]:
    """Keys without their hashes, newest first."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = store.query(f"SELECT key_id, name, role, created_at, revoked_at FROM store.api_keys{where} "
                       f"ORDER BY created_at DESC, key_id")
    return [{"key_id": r[0], "name": r[1], "role": r[2], "created_at": r[3], "revoked_at": r[4],
             "active": r[4] is None} for r in rows]


def revoke_key(store: Store, ref: str) -> dict:
    """Revoke the active key with this id or name. Returns it (without hash)."""
    with store.transaction() as cur:
        rows = cur.execute("SELECT key_id, name, role FROM store.api_keys WHERE (key_id = ? OR name = ?) "
                           "AND revoked_at IS NULL", [ref, ref]).fetchall()
        if not rows:
            raise NotFound(f"no active key with id or name {ref!r}; see `curate keys list`")
        if len(rows) > 1:   # pragma: no cover - names of active keys are unique
            raise InputError(f"{ref!r} names {len(rows)} keys; revoke by key id")
        key_id, name, role = rows[0]
        at = now()
        cur.execute("UPDATE store.api_keys SET revoked_at = ? WHERE key_id = ?", [at, key_id])
    return {"key_id": key_id, "name": name, "role": role, "revoked_at": at, "active": False}


def active_keys(store: Store) -> list[tuple[str, KeyIdentity]]:
    """(sha256, identity) of every active key."""
    rows = store.query("SELECT key_hash, key_id, name, role FROM store.api_keys WHERE revoked_at IS NULL")
    return [(h, KeyIdentity(k, n, r)) for h, k, n, r in rows]


def find_key(candidates: list[tuple[str, KeyIdentity]], given: str) -> KeyIdentity | None:
    """The identity whose hash matches; every candidate is compared (constant time per compare)."""
    digest = hash_key(given).encode()
    found = None
    for h, ident in candidates:
        if hmac.compare_digest(digest, h.encode()):
            found = ident
    return found


def audit_rows(store: Store, *, limit: int = 100, offset: int = 0, key_name: str | None = None
               ) -> tuple[list[dict], int]:
    where, args = ("", []) if key_name is None else (" WHERE key_name = ?", [key_name])
    total = store.one(f"SELECT count(*) FROM store.audit{where}", args)
    cols = ["happened_at", "key_id", "key_name", "role", "method", "path", "status", "detail"]
    rows = store.query(f"SELECT {', '.join(cols)} FROM store.audit{where} ORDER BY happened_at DESC "
                       f"LIMIT ? OFFSET ?", [*args, limit, offset])
    return [dict(zip(cols, r)) for r in rows], total


def audit_row(ident: KeyIdentity | None, method: str, path: str, status: int, detail: str | None = None,
              at: dt.datetime | None = None) -> list:
    return [at or now(), ident.key_id if ident else None, ident.name if ident else None,
            ident.role if ident else None, method, path, status, detail]
