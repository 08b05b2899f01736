"""`curate split`, `curate split check`, `curate augment`."""

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
from cli.engine import EngineOption, RayAddressOption
from curation.errors import InputError, LeakageError

_STAGES = 5  # normalise, shingle, lsh, verify, components


def _short(text: str | None, n: int = 70) -> str:
    if text is None:
        return ""
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _render_crossing(rep: dict, show: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"components crossing splits: {rep['crossing_components']}")
    for c in ("component", "records", "splits", "cross-split pairs (kind, similarity)", "examples"):
        t.add_column(c, overflow="fold")
    for e in rep["crossing"][:show]:
        pairs = "\n".join(f"{p['a']}({p['split_a']})–{p['b']}({p['split_b']}) {p['kind']}"
                          + (f" {p['similarity']:.2f}" if p["similarity"] is not None else "") for p in e["pairs"][:4])
        ex = "\n".join(escape(f"[{x['split']}] {_short(x['text'])}") for x in e["examples"])
        t.add_row(str(e["component"]), str(e["records"]), ", ".join(f"{k} {v}" for k, v in e["splits"].items()),
                  escape(pairs), ex, end_section=True)
    out.print(t)
    if len(rep["crossing"]) > show:
        out.print(f"... {len(rep['crossing']) - show} more (use --show N or --json)")


def _summary(rep: dict, keys: tuple[str, ...]) -> dict:
    return {k: rep[k] for k in keys if k in rep}


def register(app: typer.Typer) -> None:
    split_app = typer.Typer(help="Leakage-checked splits: whole duplicate components go to one split.")

    @split_app.callback(invoke_without_command=True)
    @handle_errors
    def split(
        ctx: typer.Context,
        dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="dataset name")] = None,
        ratios: Annotated[str, typer.Option(help="train,val,test shares (or train,test), summing to 1")] = "0.8,0.1,0.1",
        group_by: Annotated[str | None, typer.Option("--group-by", help="'group' or a metadata field that ties "
                                                     "records (author, document, conversation)")] = None,
        near_dup_threshold: Annotated[float, typer.Option(help="Jaccard similarity of shingle sets at which two "
                                                          "texts are near duplicates")] = 0.7,
        seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same split")] = 0,
        from_column: Annotated[str | None, typer.Option("--from-column", help="take the split given by this "
                                                        "metadata field (e.g. split) and only check it")] = None,
        shingle: Annotated[str, typer.Option(help="char | word")] = "char",
        k: Annotated[int | None, typer.Option("-k", help="shingle size (default char 5, word 1)")] = None,
        template_aware: Annotated[bool | None, typer.Option(
            "--template-aware/--no-template-aware", help="drop template text (word n-grams in many records) "
            "before comparing, and join a passage contained in a longer text (default: on for instruction "
            "datasets, off for classification)", show_default=False)] = None,
        engine: EngineOption = None,
        ray_address: RayAddressOption = None,
        db: DbOption = None,
        as_json: JsonOption = False,
        no_progress: NoProgressOption = False,
    ) -> None:
        """Split a dataset (or take the split it gives) so that no duplicate crosses splits.

        Subcommand: `curate split check --dataset NAME`."""
        if ctx.invoked_subcommand is not None:
            return
        if dataset is None:
            raise InputError("--dataset is required (e.g. `curate split --dataset youtube --ratios 0.8,0.1,0.1`)")
        from cli.engine import engine_for
        from curation.splits import make_split

        with open_store(db) as store, progress_bar("split", _STAGES, not (as_json or no_progress)) as bar:
            rep = make_split(store, dataset, ratios, group_by=group_by, near_dup_threshold=near_dup_threshold,
                             seed=seed, from_column=from_column, shingle=shingle, k=k,
                             template_aware=template_aware, progress=lambda stage: bar.advance(),
                             engine=engine_for(engine, ray_address, db))
        if as_json:
            emit(rep, True)
            return
        kv_table(_summary(rep, ("split_id", "method", "counts", "label_counts", "components",
                                "crossing_components", "leaking_records_by_split", "clean_counts_by_split",
                                "augmented_in_train", "augmented_left_out", "fingerprint")), title="split")
        d = rep["dedup"]
        out.print(f"duplicates: {d['exact_duplicate_rows']} exact, {d['near_pairs']} near pairs "
                  f"(of {d['candidates']} LSH candidates), largest component {d['largest_component']}")
        if rep["crossing_components"]:
            _render_crossing(rep, 10)
            out.print(f"[bold yellow]the given split leaks:[/] {rep['crossing_components']} components cross "
                      f"splits; {len(rep['test_ids_without_train_duplicate'])} test records have no duplicate in "
                      "train (`test_ids_without_train_duplicate` in --json; `leaks` in main.splits)")

    @split_app.command("check")
    @handle_errors
    def check(
        dataset: DatasetOption,
        split_id: Annotated[str | None, typer.Option("--split-id", help="a split set (default: current)")] = None,
        show: Annotated[int, typer.Option(help="crossing components to show")] = 20,
        db: DbOption = None,
        as_json: JsonOption = False,
        no_progress: NoProgressOption = False,
    ) -> None:
        """List every duplicate component that crosses splits; exit 4 when any does."""
        from curation.splits import check_split

        with open_store(db) as store, progress_bar("check", _STAGES, not (as_json or no_progress)) as bar:
            rep = check_split(store, dataset, split_id=split_id, progress=lambda stage: bar.advance())
        if as_json:
            emit(rep, True)
        else:
            kv_table(_summary(rep, ("split_id", "ok", "counts", "crossing_components", "leaking_records_by_split",
                                    "clean_counts_by_split", "unassigned_records")), title="split check")
            if rep["crossing_components"]:
                _render_crossing(rep, show)
            if rep["augmented_outside_train"]:
                out.print(f"[bold red]{len(rep['augmented_outside_train'])} augmented records outside train or "
                          "with a parent outside train[/]")
        if not rep["ok"]:
            raise typer.Exit(LeakageError.exit_code)

    app.add_typer(split_app, name="split")

    @app.command("augment")
    @handle_errors
    def augment_cmd(
        dataset: DatasetOption,
        per_record: Annotated[int, typer.Option("--per-record", help="copies per train record")] = 1,
        augmenters: Annotated[str, typer.Option(help="comma-separated: keyboard, ocr, random_char, word_swap, "
                                                "word_delete, word_split, spelling, synonym (optional); "
                                                "parameters as name:key=value")] = "keyboard,word_swap",
        seed: Annotated[int, typer.Option(help="random seed (each copy's own seed is stored)")] = 0,
        limit: Annotated[int | None, typer.Option(help="augment only the first N train records")] = None,
        db: DbOption = None,
        as_json: JsonOption = False,
        no_progress: NoProgressOption = False,
    ) -> None:
        """Augment the train rows of the current split; copies keep their lineage and never leave train."""
        from curation.augment import augment
        from curation.splits import current_split

        with open_store(db) as store:
            sid = current_split(store, dataset)
            total = store.one("SELECT count(*) FROM store.splits s JOIN store.records r USING (record_id) "
                              "WHERE s.split_id = ? AND s.split = 'train' AND NOT s.leaks "
                              "AND r.origin <> 'augment'", [sid])
            total = min(total, limit) if limit is not None else total
            with progress_bar("augment", total, not (as_json or no_progress)) as bar:
                res = augment(store, dataset, per_record, augmenters, seed, progress=bar.advance, limit=limit)
        emit(res, as_json)
