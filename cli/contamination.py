"""`curate contamination`: records sharing a long n-gram with an evaluation set."""

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    NoProgressOption,
    emit,
    handle_errors,
    kv_table,
    open_store,
    out,
    progress_bar,
)


def register(app: typer.Typer) -> None:
    app.command("contamination")(contamination)


@handle_errors
def contamination(
    dataset: DatasetOption,
    against: Annotated[Path, typer.Option("--against", help="evaluation file: any ingest format (chat, alpaca, "
                                                           "sharegpt, prompt-completion, dolly, or a text column)")],
    ngram: Annotated[int, typer.Option("--ngram", help="n-gram length in normalised tokens (GPT-3: 13)")] = 13,
    min_overlap: Annotated[float, typer.Option("--min-overlap", help="flag only records whose share of tokens "
                                                                     "covered by shared n-grams reaches this "
                                                                     "(0: any shared n-gram flags)")] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="layout of the file: auto | text | chat | alpaca | "
                                                      "sharegpt | prompt-completion | dolly")] = "auto",
    text_field: Annotated[str, typer.Option("--text-field", help="the text column of a classification "
                                                                 "file")] = "text",
    show: Annotated[int, typer.Option(help="flagged records to show")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
    no_progress: NoProgressOption = False,
) -> None:
    """Flag records whose prompt or response (or text) shares an n-gram with an evaluation set; the flags are
    stored (table `contamination`) and `curate train` refuses a train split holding any of them."""
    from curation.contamination import check_contamination

    with open_store(db) as store, progress_bar("contamination", enabled=not (as_json or no_progress)) as bar:
        rep = check_contamination(store, dataset, against, ngram=ngram, min_overlap=min_overlap, fmt=fmt,
                                  text_field=text_field, progress=lambda done, total: bar.update(done, total))
    if as_json:
        emit(rep, True)
        return
    kv_table({k: rep[k] for k in ("check_id", "against", "ngram", "min_overlap", "checked", "contaminated",
                                  "eval_ngrams", "timings")}, title="contamination")
    if rep["records"]:
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=f"contaminated records: {rep['contaminated']}")
        for c in ("record_id", "source_id", "overlap", "field", "shared n-gram"):
            t.add_column(c, overflow="fold")
        for r in rep["records"][:show]:
            t.add_row(str(r["record_id"]), str(r["source_id"] or ""), f"{r['overlap']:.3f}", r["field"],
                      escape(r["matched"] or ""))
        out.print(t)
        if len(rep["records"]) > show:
            out.print(f"... {len(rep['records']) - show} more (use --show N or --json)")
