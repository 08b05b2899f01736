"""`curate studio ...`: connect a dataset to Label Studio, push a selection, pull annotations, run a local server.

Label Studio is found from `--ls-url/--ls-token` (env CURATE_LS_URL, CURATE_LS_TOKEN), else from the local server
`curate studio server start` left running (`.labelstudio/server.json` and its credentials).
"""

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    DbOption,
    JsonOption,
    NoProgressOption,
    emit,
    handle_errors,
    open_store,
    progress_bar,
    settings,
)
from curation.errors import InputError

UrlOption = Annotated[str | None, typer.Option("--ls-url", envvar="CURATE_LS_URL",
                                               help="Label Studio URL (env CURATE_LS_URL)")]
TokenOption = Annotated[str | None, typer.Option("--ls-token", envvar="CURATE_LS_TOKEN", show_default=False,
                                                 help="Label Studio API token (env CURATE_LS_TOKEN)")]
RootOption = Annotated[Path, typer.Option("--root", help="folder of the local Label Studio (venv, data)")]


def register(app: typer.Typer) -> None:
    studio_app = typer.Typer(help="Label Studio: projects, pushes, annotations, a local server.",
                             no_args_is_help=True)
    studio_app.command("connect")(connect)
    studio_app.command("push")(push)
    studio_app.command("pull")(pull)
    studio_app.command("server")(server)
    app.add_typer(studio_app, name="studio")


def studio_client(url: str | None, token: str | None, root: Path = Path(".labelstudio")):
    """The Label Studio client of a command: --ls-url/--ls-token, else the local server's (`curate studio server`)."""
    from labeling.studio import StudioClient
    from labeling.studio import server as ls_server

    if not url or not token:
        state = ls_server.status(root)
        if not state.get("running"):
            raise InputError("no Label Studio given: pass --ls-url and --ls-token (or CURATE_LS_URL, "
                             "CURATE_LS_TOKEN), or start a local one with `curate studio server start`")
        url = url or state["url"]
        token = token or ls_server.credentials(root).token
    return StudioClient(url, token)


_client = studio_client   # what this module's commands call (tests swap in a fake Label Studio)


@handle_errors
def connect(
    dataset: Annotated[str, typer.Argument(help="the dataset whose Label Studio project to create or reuse")],
    webhook_url: Annotated[str | None, typer.Option(help="our webhook receiver, e.g. "
                                                         "http://127.0.0.1:8000/webhooks/labelstudio")] = None,
    annotators_per_task: Annotated[int | None, typer.Option("--annotators-per-task", min=1, help="Label Studio's "
                                   "annotations per task: each task goes to K different annotators")] = None,
    ls_url: UrlOption = None,
    ls_token: TokenOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create (or reuse) the dataset's project; with --webhook-url, register the annotation webhooks carrying
    the secret CURATE_WEBHOOK_SECRET in the X-Curate-Webhook-Token header."""
    from labeling.studio import ensure_project, register_webhook

    secret = settings(db).webhook_secret
    with open_store(db) as store, _client(ls_url, ls_token) as client:
        result = ensure_project(store, dataset, client, annotators_per_task=annotators_per_task)
        result.pop("label_config")
        if webhook_url:
            if secret is None:
                raise InputError("set CURATE_WEBHOOK_SECRET first: Label Studio webhooks are unsigned, the secret "
                                 "header is what protects the receiver")
            result["webhook"] = register_webhook(client, result["project_id"], webhook_url,
                                                 secret.get_secret_value())
    emit(result, as_json)


@handle_errors
def push(
    selection_id: Annotated[str, typer.Argument(help="the selection to push (`curate select` prints its id)")],
    run_id: Annotated[str | None, typer.Option(help="run whose predictions pre-annotate (default: the "
                                                    "selection's)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="tasks per import request")] = 1000,
    uncertainty: Annotated[str, typer.Option(help="order annotators see: least_confidence|margin|entropy")]
    = "least_confidence",
    ls_url: UrlOption = None,
    ls_token: TokenOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    no_progress: NoProgressOption = False,
) -> None:
    """Push a selection as tasks with pre-annotations (idempotent by input_hash), most uncertain first."""
    from labeling.studio import push_selection

    with open_store(db) as store, _client(ls_url, ls_token) as client, \
            progress_bar("push", enabled=not (as_json or no_progress)) as bar:
        result = push_selection(store, selection_id, run_id=run_id, client=client, batch_size=batch_size,
                                uncertainty_kind=uncertainty, progress=bar.update)
    emit(result, as_json)


@handle_errors
def pull(
    dataset: Annotated[str, typer.Argument(help="the dataset whose project to reconcile")],
    ls_url: UrlOption = None,
    ls_token: TokenOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reconcile annotations with Label Studio: record what webhooks missed, tombstone deleted ones."""
    from labeling.studio import pull_annotations

    with open_store(db) as store, _client(ls_url, ls_token) as client:
        result = pull_annotations(store, dataset, client)
    emit(result, as_json)


@handle_errors
def server(
    action: Annotated[str, typer.Argument(help="install | start | stop | status")],
    root: RootOption = Path(".labelstudio"),
    port: Annotated[int | None, typer.Option(help="port on 127.0.0.1 (default: a free one)")] = None,
    as_json: JsonOption = False,
) -> None:
    """A local Label Studio 1.23.2 in its own venv under --root; `start` leaves it running in the background."""
    from labeling.studio import server as ls_server

    actions = {"install": lambda: ls_server.install(root), "start": lambda: ls_server.start_background(root, port),
               "stop": lambda: ls_server.stop_background(root), "status": lambda: ls_server.status(root)}
    if action not in actions:
        raise InputError(f"unknown action {action!r}; valid: {', '.join(actions)}")
    emit(actions[action](), as_json)
