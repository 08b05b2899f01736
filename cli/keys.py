"""Commands: `curate keys create --role R --name N`, `curate keys revoke NAME|ID`, `curate keys list`.

Keys are stored hashed (sha256) in the store's `api_keys` table; `create` prints the key once. With `--server URL`
(or CURATE_SERVER_URL) the command asks the running server (which holds the DuckDB file) with an admin key
(CURATE_API_KEY); otherwise it opens the file.
"""

from typing import Annotated, Any

import typer

from api import keys as K
from cli.common import DbOption, JsonOption, ServerOption, console, emit, handle_errors, open_store, out

keys_app = typer.Typer(help="API keys with roles (annotator, engineer, trainer, admin): create, revoke, list.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _remote(server: str | None) -> Any:
    from api.client import server_client

    return server_client(server)


@keys_app.command("create")
@handle_errors
def create(
    role: Annotated[str, typer.Option("--role", help=f"one of {', '.join(K.ROLES)}")],
    name: Annotated[str, typer.Option("--name", help="who or what uses the key (unique among active keys)")],
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it ONCE (the store keeps only its sha256)."""
    K.check_role(role)
    client = _remote(server)
    if client is not None:
        with client:
            created = client.request("POST", "/keys", json={"name": name, "role": role})
    else:
        with open_store(db) as store:
            created = K.create_key(store, name, role)
    if as_json:
        emit(created, True)
        return
    console.print(f"created key {created['key_id']} ({created['name']}, role {created['role']}); it is shown "
                  f"this once - store it now:")
    out.print(created["key"], highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@handle_errors
def revoke(
    ref: Annotated[str, typer.Argument(help="key name or key id")],
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key (by name or id); requests with it are refused from then on."""
    client = _remote(server)
    if client is not None:
        with client:
            revoked = client.request("DELETE", f"/keys/{ref}")
    else:
        with open_store(db) as store:
            revoked = K.revoke_key(store, ref)
    emit({k: str(v) if v is not None and k.endswith("_at") else v for k, v in revoked.items()}, as_json)


@keys_app.command("list")
@handle_errors
def list_(
    server: ServerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keys (id, name, role, created, revoked); never the keys themselves."""
    client = _remote(server)
    if client is not None:
        with client:
            rows = client.request("GET", "/keys")
    else:
        with open_store(db) as store:
            rows = K.list_keys(store)
    rows = [{k: str(v) if v is not None and k.endswith("_at") else v for k, v in r.items()} for r in rows]
    if as_json:
        emit({"keys": rows}, True)
        return
    from rich.table import Table

    table = Table("key_id", "name", "role", "created_at", "revoked_at")
    for r in rows:
        table.add_row(r["key_id"], r["name"], r["role"], r["created_at"] or "", r["revoked_at"] or "")
    out.print(table)
