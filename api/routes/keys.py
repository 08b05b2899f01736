"""Keys (create, list, revoke) and the audit trail of mutating requests: admins only."""

from typing import Annotated

from fastapi import APIRouter, Query

from api import keys as K
from api import schemas as S
from api.deps import Limit, Offset, StateDep, page
from api.jobs import plain

router = APIRouter(tags=["keys and audit"])


@router.get("/keys", response_model=list[S.KeyOut])
def list_keys(state: StateDep) -> list:
    return plain(K.list_keys(state.store))


@router.post("/keys", response_model=S.KeyCreatedOut, status_code=201)
def create_key(body: S.KeyIn, state: StateDep) -> dict:
    """A new key; the response is the only time the key is shown (the store keeps its sha256)."""
    created = K.create_key(state.store, body.name, body.role)
    state.keyring.reload()
    return created


@router.delete("/keys/{key_ref}", response_model=S.KeyOut)
def revoke_key(key_ref: str, state: StateDep) -> dict:
    """Revoke by key id or name. Takes effect for the next request."""
    revoked = K.revoke_key(state.store, key_ref)
    state.keyring.reload()
    return plain(revoked)


@router.get("/audit", response_model=S.Page[S.AuditOut])
def audit(state: StateDep, limit: Limit = 100, offset: Offset = 0,
          key_name: Annotated[str | None, Query(max_length=100)] = None) -> dict:
    """Mutating requests, newest first: when, which key (id, name, role), method, path, status."""
    state.audit.flush(2.0)
    items, total = K.audit_rows(state.store, limit=limit, offset=offset, key_name=key_name)
    return page(plain(items), total, limit, offset)
