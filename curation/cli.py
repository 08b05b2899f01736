"""`curate`: the command line. Each stage's module registers its own commands (see COMMAND_MODULES)."""

import importlib

import typer

app = typer.Typer(
    name="curate",
    help="Curate datasets: ingest, query, weak-label, split, augment, train, select, and loop with Label Studio.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES = [
    "curation.cli_store",
    "curation.cli_splits",
    "labeling.cli",
    "labeling.cli_studio",
    "training.cli",
    "api.cli",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main() -> None:
    from curation.cli_common import quiet_third_party

    quiet_third_party()
    app()


if __name__ == "__main__":
    main()
