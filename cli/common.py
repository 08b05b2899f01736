"""What every CLI command shares: the common options, JSON/table output, the progress bar, error handling.

Command modules expose `register(app: typer.Typer)`; `cli` lists them. Commands that may ask a running server
instead of the DB file get their data through `cli.backend`.
"""

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from curation.errors import CurateError
from curation.settings import Settings
from curation.store import Store

console = Console(stderr=True)
out = Console()

DbOption = Annotated[Path | None, typer.Option("--db", help="DuckDB file (env CURATE_DB, default ./curate.duckdb)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]
NoProgressOption = Annotated[bool, typer.Option("--no-progress", help="no progress bar")]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="dataset name")]
ServerOption = Annotated[str | None, typer.Option("--server", envvar="CURATE_SERVER_URL",
                                                  help="a running `curate serve` to ask instead of the DB file")]


def quiet_third_party() -> None:
    """Entry points (CLI, server, demo) call this: transformers' load reports and peft's deprecation warnings
    are noise to users; our own logging is untouched."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers configures its logger
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-load weight bars; ours show the real work
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def settings(db: Path | None = None) -> Settings:
    s = Settings()
    return s.model_copy(update={"db": db}) if db else s


def open_store(db: Path | None) -> Store:
    return Store.open(settings(db))


def handle_errors(fn: Callable) -> Callable:
    """Own errors become one clear line on stderr and the error's exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CurateError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def emit(result: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """`--json`: exactly one JSON object on stdout. Otherwise a human rendering (default: key/value table)."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    (render or kv_table)(result)


def kv_table(result: dict, title: str | None = None) -> None:
    t = Table(title=title, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in result.items():
        t.add_row(str(k), json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    out.print(t)


def frame_table(df: Any, title: str | None = None, max_rows: int = 50) -> None:
    """Render a polars DataFrame as a rich table."""
    t = Table(title=title)
    for c in df.columns:
        t.add_column(c, overflow="fold")
    for row in df.head(max_rows).iter_rows():
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)
    if df.height > max_rows:
        out.print(f"... {df.height - max_rows} more rows")


class Bar:
    """What a command hands to a library's `progress=` callback: `advance(n)` for callbacks that report
    increments, `update(done, total)` for callbacks that report how far they are."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, done: float, total: float | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, **({} if total is None else {"total": total}))


@contextlib.contextmanager
def progress_bar(description: str, total: float | None = None, enabled: bool = True) -> Iterator[Bar]:
    """The one progress bar of the CLI (on stderr). Quiet when disabled (e.g. with --json or --no-progress)."""
    if not enabled:
        yield Bar()
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as p:
        yield Bar(p, p.add_task(description, total=total))
