"""`curate`: the command line. One package at the end of the data flow; each module registers one command group."""

import typer

from cli import contamination, engine, keys, labeling, quality, service, splits, store, studio, training, tune

app = typer.Typer(
    name="curate",
    help="Curate datasets: ingest, query, weak-label, split, augment, train, select, and loop with Label Studio.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_GROUPS = (store, splits, contamination, labeling, quality, studio, training, service, keys, engine, tune)
for _group in COMMAND_GROUPS:
    _group.register(app)


def main() -> None:
    from cli.common import quiet_third_party

    quiet_third_party()
    app()
