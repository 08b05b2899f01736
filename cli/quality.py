"""Label quality: `curate agreement`, `curate consensus`, `curate label-issues`, `curate annotations import`."""

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
)


def register(app: typer.Typer) -> None:
    app.command("agreement")(agreement)
    app.command("consensus")(consensus)
    app.command("label-issues")(label_issues)
    ann_app = typer.Typer(help="Annotations made elsewhere.", no_args_is_help=True)
    ann_app.command("import")(annotations_import)
    app.add_typer(ann_app, name="annotations")


MethodOption = Annotated[str, typer.Option("--method", help="consensus: majority | dawid_skene")]


@handle_errors
def agreement(
    dataset: DatasetOption,
    method: MethodOption = "majority",
    png: Annotated[Path | None, typer.Option("--png", help="write the annotator × annotator Cohen-kappa heatmap "
                                                           "to this PNG")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Inter-annotator agreement: Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa, per label and
    overall; per annotator: agreement with the consensus, tasks, median lead time (instruction datasets: keep/drop
    and the 1-5 ratings)."""
    from labeling.agreement import dataset_agreement

    with open_store(db) as store:
        result = dataset_agreement(store, dataset, method=method, png=png)
    emit(result, as_json, _render_agreement)


def _fmt(v):
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _render_agreement(r: dict) -> None:
    kv_table({"dataset": r["dataset"], "items": r["items"], "items with ≥2 answers": r["items_multi"],
              "annotators": r["annotators"], **{k: _fmt(v) for k, v in r["overall"].items()}}, title="agreement")
    frame_table(pl.DataFrame([{k: _fmt(v) for k, v in x.items()} for x in r["per_label"]]), title="per label")
    frame_table(pl.DataFrame([{k: _fmt(v) for k, v in x.items()} for x in r["per_annotator"]]),
                title=f"per annotator (agreement with the {r['consensus_method']} consensus)")
    if r["pairs"]:
        frame_table(pl.DataFrame([{k: _fmt(v) for k, v in x.items()} for x in r["pairs"]]), title="pairs")
    if r.get("ratings"):
        kv_table({k: _fmt(v) for k, v in r["ratings"].items()}, title="ratings")
    if r.get("png"):
        out.print(f"heatmap: {r['png']}")


@handle_errors
def consensus(
    dataset: DatasetOption,
    method: MethodOption = "majority",
    threshold: Annotated[float, typer.Option(help="a consensus below this confidence (or a tie) is low "
                                                  "agreement")] = 0.6,
    send_back: Annotated[bool, typer.Option("--send-back", help="hand ties and low-agreement tasks back to "
                                                                "Label Studio for one more annotator")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="compute, store nothing")] = False,
    ls_url: Annotated[str | None, typer.Option("--ls-url", envvar="CURATE_LS_URL")] = None,
    ls_token: Annotated[str | None, typer.Option("--ls-token", envvar="CURATE_LS_TOKEN", show_default=False)] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Gold labels from several annotations (majority | dawid_skene); method and confidence are stored with
    each gold label. Records with one annotator keep their latest annotation."""
    from labeling.consensus import apply_consensus
    from labeling.consensus import send_back as do_send_back

    with open_store(db) as store:
        result = apply_consensus(store, dataset, method, threshold=threshold, dry_run=dry_run)
        if send_back and result["low_record_ids"] and not dry_run:
            from cli.studio import studio_client

            with studio_client(ls_url, ls_token) as client:
                result["send_back"] = do_send_back(store, dataset, result["low_record_ids"], client)
    emit(result, as_json, _render_consensus)


def _render_consensus(r: dict) -> None:
    kv_table({k: v for k, v in r.items() if k not in ("annotators", "low_record_ids")}, title="consensus")
    frame_table(pl.DataFrame([{k: _fmt(v) for k, v in a.items()} for a in r["annotators"]]),
                title="annotators (estimated accuracy)")


@handle_errors
def label_issues(
    dataset: DatasetOption,
    labels: Annotated[str, typer.Option("--labels", help="gold | weak (the latest label model's)")] = "gold",
    method: Annotated[str, typer.Option("--method", help="embeddings (frozen base encoder + logistic regression) "
                                                         "| lora (a scored LoRA run's embeddings, --run)")]
    = "embeddings",
    run: Annotated[str | None, typer.Option("--run", help="--method lora: the run")] = None,
    folds: Annotated[int, typer.Option(min=2, help="cross-validation folds")] = 5,
    seed: Annotated[int, typer.Option(help="fold seed")] = 0,
    top: Annotated[int, typer.Option(help="suspects to show")] = 20,
    show: Annotated[str | None, typer.Option("--list", help="list stored suspects instead: open | confirmed | "
                                                            "corrected | all")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="compute, store nothing")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find labels that look wrong: out-of-fold probabilities fed to cleanlab's find_label_issues; suspects
    (score, suggested label) go to `label_issues`; review them with `curate select --strategy label_issues`."""
    from labeling.label_issues import detect_label_issues, list_issues
    from training.config import default_base_model

    with open_store(db) as store:
        if show is not None:
            items = list_issues(store, dataset, outcome=None if show == "all" else show, limit=top)
            emit({"dataset": dataset, "issues": items}, as_json,
                 lambda r: frame_table(pl.DataFrame([{k: _fmt(v) for k, v in x.items()} for x in r["issues"]]
                                                    or [{"issues": "none"}]), title="label issues"))
            return
        base_model = default_base_model() if method == "embeddings" else None
        result = detect_label_issues(store, dataset, labels=labels, method=method, run_id=run, folds=folds,
                                     seed=seed, base_model=base_model, top=top, dry_run=dry_run)
    emit(result, as_json, _render_issues)


def _render_issues(r: dict) -> None:
    kv_table({k: v for k, v in r.items() if k not in ("suspects", "per_label")}, title="label issues")
    if r["suspects"]:
        frame_table(pl.DataFrame([{k: _fmt(v) for k, v in s.items()} for s in r["suspects"]]),
                    title="most suspect (score = out-of-fold probability of the given label)")


@handle_errors
def annotations_import(
    file: Annotated[Path, typer.Argument(help="long table (CSV/Parquet/JSON lines): source_id, annotator, label "
                                             "[, lead_time, created_at, rating]")],
    dataset: DatasetOption,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import annotations made outside Label Studio (kept per annotator; gold labels follow)."""
    from labeling.studio.sync import import_annotations

    with open_store(db) as store:
        result = import_annotations(store, str(file), dataset)
    emit(result, as_json, lambda r: kv_table(r, title="annotations import"))
