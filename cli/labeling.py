"""Weak-supervision commands: `curate lf apply|report`, `curate votes import`, `curate label`."""

from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    emit,
    frame_table,
    handle_errors,
    kv_table,
    open_store,
    out,
    progress_bar,
)
from cli.engine import EngineOption, RayAddressOption


def register(app: typer.Typer) -> None:
    lf_app = typer.Typer(help="Labeling functions: apply them, report on them.", no_args_is_help=True)
    lf_app.command("apply")(lf_apply)
    lf_app.command("report")(lf_report)
    app.add_typer(lf_app, name="lf")
    votes_app = typer.Typer(help="Votes made elsewhere (other LF systems, LLM labelers).", no_args_is_help=True)
    votes_app.command("import")(votes_import)
    app.add_typer(votes_app, name="votes")
    app.command("label")(label)


LfSetOption = Annotated[str | None, typer.Option("--lf-set", help="LF set id (default: the latest applied)")]


@handle_errors
def lf_apply(
    dataset: DatasetOption,
    lfs: Annotated[Path, typer.Option("--lfs", help="Python file declaring the LFs")],
    fault_tolerant: Annotated[bool, typer.Option("--fault-tolerant", help="count LF exceptions as abstains "
                                                 "(per LF) instead of stopping")] = False,
    force: Annotated[bool, typer.Option("--force", help="apply even when the set and records are unchanged")] = False,
    batch_size: Annotated[int, typer.Option(help="records per batch for Python LFs")] = 20_000,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply the LFs in a Python file to every record; store the votes with the LF set's version."""
    from cli.engine import engine_for
    from labeling.weak import apply_lfs

    with open_store(db) as store:
        total = store.one("SELECT count(*) FROM store.records WHERE dataset = ?", [dataset])
        with progress_bar(f"lf apply {lfs.name}", total, enabled=not as_json) as bar:
            result = apply_lfs(store, dataset, lfs, fault_tolerant=fault_tolerant, force=force,
                               batch_size=batch_size, progress=bar.advance,
                               engine=engine_for(engine, ray_address, db))
    emit(result, as_json, _render_apply)


def _render_apply(r: dict) -> None:
    kv_table({k: r.get(k) for k in ("dataset", "lf_set_id", "status", "records", "votes", "coverage", "faults",
                                    "seconds")}, title="lf apply")
    frame_table(pl.DataFrame(r["lfs"]) if isinstance(r["lfs"][0], dict) else pl.DataFrame({"lf": r["lfs"]}))
    for name, ex in (r.get("fault_examples") or {}).items():
        out.print(f"[yellow]{name}[/]: first fault {ex}")


@handle_errors
def lf_report(
    dataset: DatasetOption,
    lf_set: LfSetOption = None,
    split: Annotated[str | None, typer.Option(help="only the rows of this split (train/val/test)")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="also write a chart to this PNG file")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per LF: polarity, coverage, overlaps, conflicts, empirical accuracy on gold rows; the set's coverage."""
    from labeling.weak import lf_report as run

    with open_store(db) as store:
        result = run(store, dataset, lf_set_id=lf_set, split=split, png=png)
    emit(result, as_json, _render_report)


def _render_report(r: dict) -> None:
    cols = ["lf", "kind", "engine", "polarity", "coverage", "overlaps", "conflicts", "emp_accuracy", "faults"]
    rows = [{c: (", ".join(v) if isinstance(v := row.get(c), list) else
                 f"{v:.3f}" if isinstance(v, float) else v) for c in cols} for row in r["lfs"]]
    frame_table(pl.DataFrame(rows, schema={c: pl.Utf8 for c in cols}, strict=False),
                title=f"LF report {r['lf_set_id']} ({r['split']})")
    t = r["total"]
    out.print(f"rows {t['rows']}, LFs {t['lfs']}, coverage {t['coverage']:.1%}, overlap {t['overlap']:.1%}, "
              f"conflict {t['conflict']:.1%}, rows with gold {t['rows_with_gold']}")
    if r.get("png"):
        out.print(f"chart: {r['png']}")


@handle_errors
def votes_import(
    file: Annotated[Path, typer.Argument(help="long table (CSV/Parquet: record_id|source_id, lf, vote) or WRENCH "
                                             "JSON / JSON lines with weak_labels")],
    dataset: DatasetOption,
    fmt: Annotated[str | None, typer.Option("--format", help="long|wrench (default: .json/.jsonl → wrench)")] = None,
    id_prefix: Annotated[str, typer.Option(help="WRENCH: source_id = prefix + key (e.g. 'train:' for WRENCH's "
                                                "train.json)")] = "",
    lf_names: Annotated[str | None, typer.Option(help="WRENCH: comma-separated names of the weak-label "
                                                      "columns")] = None,
    force: Annotated[bool, typer.Option("--force", help="import again even if unchanged")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import votes produced elsewhere as an LF set; they join the same label-model pipeline."""
    from labeling.weak import import_votes

    names = [x.strip() for x in lf_names.split(",")] if lf_names else None
    with open_store(db) as store:
        result = import_votes(store, file, dataset, fmt=fmt, id_prefix=id_prefix, lf_names=names, force=force)
    emit(result, as_json, lambda r: kv_table(r, title="votes import"))


@handle_errors
def label(
    dataset: DatasetOption,
    model: Annotated[str, typer.Option("--model", help="auto (default: the best of majority, dawid_skene and "
                                                       "Snorkel over seeds and priors on the val gold rows; "
                                                       "majority without gold) | majority | dawid_skene | "
                                                       "snorkel")] = "auto",
    lf_set: LfSetOption = None,
    tie_break: Annotated[str, typer.Option("--tie-break", help="hash (Snorkel/WRENCH: sha1 of the row's position "
                                                               "in its split) | first | abstain")] = "hash",
    include_abstains: Annotated[bool, typer.Option("--include-abstains", help="also label rows where every LF "
                                                                             "abstained (= --abstains model)")] = False,
    abstains: Annotated[str | None, typer.Option("--abstains", help="rows where every LF abstained: leave_out "
                                                 "(default) | model | tie_break | prior")] = None,
    seed: Annotated[int, typer.Option(help="seed for a named label model")] = 0,
    seeds: Annotated[str, typer.Option(help="auto: Snorkel seeds to try, comma-separated")] = "0,1,2",
    metric: Annotated[str, typer.Option("--metric", help="auto: accuracy | macro_f1 on the gold rows")] = "accuracy",
    epochs: Annotated[int | None, typer.Option(help="snorkel: training epochs (default 500)")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the label model on the train rows (all rows without a split) and store weak labels."""
    from labeling.weak import fit_label_model

    params = {"n_epochs": epochs} if epochs is not None and model == "snorkel" else None
    with open_store(db) as store:
        result = fit_label_model(store, dataset, model, lf_set_id=lf_set, tie_break=tie_break,
                                 include_abstains=include_abstains, abstain_policy=abstains, seed=seed,
                                 params=params, seeds=[int(x) for x in seeds.split(",") if x.strip()],
                                 select_metric=metric)
    emit(result, as_json, _render_label)
    if as_json and result.get("worse_than_majority"):  # loud on stderr too: JSON consumers may not look
        typer.echo(f"WARNING: {result['warnings'][0]}", err=True)


def _render_label(r: dict) -> None:
    skip = ("metrics", "selection", "warnings", "worse_than_majority")
    kv_table({k: v for k, v in r.items() if k not in skip}, title="label")
    rows = [{"split": s, **{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in m.items()}}
            for s, m in r["metrics"].items()]
    frame_table(pl.DataFrame(rows, strict=False), title="metrics (accuracy: every gold row, ties by the "
                                                       "tie-break; accuracy_labeled: rows given a label)")
    sel = r["selection"]
    if sel.get("candidates"):
        cols = ("name", "status", "accuracy", "macro_f1", "accuracy_covered", "chosen")
        cand = [{c: (f"{v:.3f}" if isinstance(v := x.get(c), float) else str(v)) for c in cols}
                for x in sel["candidates"]]
        frame_table(pl.DataFrame(cand, strict=False),
                    title=f"label-model candidates on {sel['gold_rows']} gold rows ({sel['gold_source']})")
    out.print(f"model: [bold]{sel['chosen']}[/] — {sel['reason']}")
    for w in r.get("warnings", []):
        style = "bold red" if "WORSE" in w else "yellow"
        out.print(f"[{style}]WARNING[/]: {w}")
