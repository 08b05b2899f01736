"""Commands for the store: ingest, datasets, quarantine, sql, snapshot, export."""

import re
from pathlib import Path
from typing import Annotated

import typer

from cli.backend import open_backend
from cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    ServerOption,
    emit,
    frame_table,
    handle_errors,
    kv_table,
    open_store,
    out,
    progress_bar,
)
from curation.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("datasets")(datasets)
    app.command("quarantine")(quarantine)
    app.command("sql")(sql)
    app.command("snapshot")(snapshot)
    app.command("export")(export)
    labels_app = typer.Typer(help="Gold labels made elsewhere.", no_args_is_help=True)
    labels_app.command("import")(labels_import)
    app.add_typer(labels_app, name="labels")


@handle_errors
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL, Parquet file, or a HF datasets folder (save_to_disk)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset to add the rows to (created if new)")],
    text_field: Annotated[str, typer.Option(help="column with the text")] = "text",
    label_field: Annotated[str | None, typer.Option(help="column with gold labels (names or 0-based indexes)")] = None,
    id_field: Annotated[str | None, typer.Option(help="column with the source's id → source_id")] = None,
    group_field: Annotated[str | None, typer.Option(help="column tying records together (author, document)")] = None,
    labels: Annotated[str | None, typer.Option(help="the dataset's label set, comma-separated, e.g. ham,spam")] = None,
    exclude_fields: Annotated[str | None, typer.Option(help="columns not to store at all, comma-separated")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv|jsonl|parquet|hf (default: from the name), "
                                                          "or an instruction layout (see --layout)")] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed)")] = None,
    task: Annotated[str | None, typer.Option(help="classification|instruction (default: the dataset's, else "
                                                  "classification)")] = None,
    layout: Annotated[str | None, typer.Option(help="instruction layout: auto|chat|alpaca|sharegpt|"
                                                    "prompt-completion|dolly (also accepted as --format)")] = None,
    prompt_field: Annotated[str | None, typer.Option(help="instruction: column with the prompt")] = None,
    response_field: Annotated[str | None, typer.Option(help="instruction: column with the response")] = None,
    system_field: Annotated[str | None, typer.Option(help="instruction: column with a system prompt")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="instruction: quarantine longer conversations")] = None,
    base_model: Annotated[str | None, typer.Option(help="instruction: the LLM whose tokenizer counts tokens (a "
                                                        ".gguf file or a model folder; default: the SFT default, "
                                                        "SmolLM2-135M-Instruct)")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest a file into a dataset, enforcing the import contract (violating rows go to the quarantine).
    With --task instruction, rows are conversations (chat, Alpaca, ShareGPT, prompt/completion or Dolly)."""
    from curation.ingest import FieldMap
    from curation.ingest import ingest as run
    from curation.instructions import FORMATS, InstructionFields, dataset_task, ingest_instructions

    if fmt in FORMATS + ("auto",):  # the issue's `--format chat`: a layout, not a file format
        if layout not in (None, fmt):
            raise InputError(f"--format {fmt} and --layout {layout} disagree; give the layout once")
        fmt, layout, task = None, fmt, task or "instruction"
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    exclude = tuple(c.strip() for c in (exclude_fields or "").split(",") if c.strip())
    with open_store(db) as store, progress_bar(f"ingest {file.name}", enabled=not as_json) as bar:
        task = task or dataset_task(store, dataset) or ("instruction" if layout or prompt_field else "classification")
        if task == "instruction":
            if label_field or labels or text_field != "text":
                raise InputError("--text-field, --label-field and --labels are for classification; an instruction "
                                 "file names its columns with --prompt-field/--response-field/--system-field")
            from training.sft_runs import ingest_token_counter

            fields = InstructionFields(prompt_field, response_field, system_field, id_field, group_field, exclude)
            result = ingest_instructions(store, file, dataset, fmt=layout or "auto", fields=fields,
                                         max_tokens=max_tokens, file_format=fmt, delimiter=delimiter,
                                         progress=bar.update, count_tokens=ingest_token_counter(base_model))
        elif task != "classification":
            raise InputError(f"--task {task}: use classification or instruction")
        elif layout or prompt_field or response_field or system_field or max_tokens is not None or base_model:
            raise InputError("--layout, --prompt-field, --response-field, --system-field, --max-tokens and "
                             "--base-model are for instruction files; add --task instruction")
        else:
            result = run(store, file, dataset, fields=FieldMap(text_field, label_field, id_field, group_field, exclude),
                         labels=label_list, fmt=fmt, delimiter=delimiter, progress=bar.update)
    emit(result.to_dict(), as_json, _render_ingest)


def _render_ingest(r: dict) -> None:
    keys = ("dataset", "file", "rows_read", "accepted", "quarantined", "duplicates", "labeled", "labels")
    if r.get("task") == "instruction":
        keys = ("dataset", "file", "layout", "rows_read", "accepted", "quarantined", "duplicates", "tokens",
                "tokenizer", "labels")
    kv_table({k: r[k] for k in keys}, title="ingest")
    if r["quarantined"]:
        out.print("quarantined by rule: " + ", ".join(f"{k}={v}" for k, v in r["quarantined_by_rule"].items())
                  + f"  (see `curate quarantine --dataset {r['dataset']}`)")


@handle_errors
def datasets(db: DbOption = None, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """List datasets with their label sets and record counts."""
    with open_backend(server, db) as backend:
        df = backend.datasets()
    emit({"datasets": df.to_dicts()}, as_json, lambda _: frame_table(df, "datasets"))


@handle_errors
def quarantine(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show quarantined rows: file, row, field, rule and message."""
    with open_store(db) as store:
        where, params = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
        total = store.one(f"SELECT count(*) FROM main.quarantine {where}", params)
        by_rule = dict(store.query(f"SELECT rule, count(*) FROM main.quarantine {where} GROUP BY 1 ORDER BY 2 DESC",
                                   params))
        df = store.frame(f"SELECT dataset, file, row, field, rule, message FROM main.quarantine {where} "
                         f"ORDER BY ingest_id, row LIMIT {int(limit)}", params)
    emit({"total": total, "by_rule": by_rule, "rows": df.to_dicts()}, as_json,
         lambda _: (frame_table(df, f"quarantine ({total} rows)"), out.print(f"by rule: {by_rule}")))


@handle_errors
def sql(
    query: Annotated[str, typer.Argument(help="one read-only statement (SELECT/WITH/DESCRIBE/SHOW)")],
    fmt: Annotated[str, typer.Option("--format", help="table|csv|json")] = "table",
    output: Annotated[Path | None, typer.Option("--out", help="write the result to a .parquet (or .csv) file")] = None,
    limit: Annotated[int | None, typer.Option(help="row limit (default CURATE_SQL_ROW_LIMIT)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds (default CURATE_SQL_TIMEOUT_S)")] = None,
    db: DbOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Query the store read-only. Views: datasets, records, quarantine, versions, votes, weak_labels, splits,
    runs, predictions, selections, annotations, rounds, jobs."""
    if fmt not in ("table", "csv", "json"):
        raise InputError(f"--format {fmt}: use table, csv or json")
    with open_backend(server, db) as backend:
        res = backend.sql(query, limit=limit, timeout_s=timeout)
    if output is not None:
        frame = res.frame()
        frame.write_csv(output) if output.suffix.lower() == ".csv" else frame.write_parquet(output)
        emit({"path": str(output), "rows": frame.height, "truncated": res.truncated}, as_json)
        return
    if as_json or fmt == "json":
        emit(res.to_json(), True)
    elif fmt == "csv":
        typer.echo(res.frame().write_csv(), nl=False)
    else:
        frame_table(res.frame(), max_rows=res.row_limit)
    if res.truncated and not (as_json or fmt == "json"):
        typer.echo(f"(cut at {res.row_limit} rows; raise --limit)", err=True)


@handle_errors
def snapshot(
    dataset: DatasetOption,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write an immutable Parquet snapshot with a manifest (rows, sha256, contract version)."""
    from curation.versions import snapshot as run

    with open_store(db) as store:
        manifest = run(store, dataset)
    emit(manifest, as_json, lambda m: kv_table({k: v for k, v in m.items() if k != "labels"}, "snapshot"))


@handle_errors
def export(
    dataset: DatasetOption,
    output: Annotated[Path, typer.Option("--out", "-o", help="file.parquet, file.csv, or a folder (HF datasets, "
                                                              "chat-jsonl, alpaca)")],
    fmt: Annotated[str | None, typer.Option("--format", help="parquet|csv|hf|chat-jsonl|alpaca (default: from "
                                                          "--out)")] = None,
    min_quality: Annotated[float | None, typer.Option(help="instruction: weak P(keep) needed without a gold label "
                                                           "(default 0.5; 0 also keeps unlabeled records)")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="classification + --template: weak confidence "
                                                              "needed without a gold label (default 0.9)")] = None,
    template: Annotated[str | None, typer.Option(help="classification as instructions: the user turn, e.g. "
                                                      "'Classify this comment as {labels}.\\n\\n{text}' (\\n, \\t "
                                                      "are read as escapes; {{ }} are literal braces)")] = None,
    allow_contamination: Annotated[bool, typer.Option(help="also export records the latest contamination check "
                                                           "flagged")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export a dataset with its labels and splits to Parquet, CSV or a HF datasets folder; or for fine-tuning
    tools (chat-jsonl, alpaca, hf): train/val/test files of the kept records plus manifest.json."""
    from curation.versions import ExportOptions
    from curation.versions import export as run

    if template is not None:
        template = re.sub(r"\\([\\nt])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), template)
    options = ExportOptions(min_quality, min_confidence, template, allow_contamination)
    with open_store(db) as store:
        result = run(store, dataset, output, fmt, options)
    emit(result, as_json, _render_export)


def _render_export(r: dict) -> None:
    if r.get("kind") != "instruction-export":
        kv_table(r, "export")
        return
    kv_table({k: r[k] for k in ("dataset", "path", "format", "rows", "sha256", "version_id")}, "export")
    for split, c in r["counts"].items():
        dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
        out.print(f"{split}: kept {c['kept']}, dropped {dropped}")


@handle_errors
def labels_import(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL, Parquet or HF folder with an id and a label column")],
    dataset: DatasetOption,
    id_field: Annotated[str, typer.Option(help="column with the source id (matched to records.source_id)")],
    label_field: Annotated[str, typer.Option(help="column with the label (name or 0-based index)")],
    splits: Annotated[str | None, typer.Option(help="only records in these splits, e.g. val,test")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import gold labels for existing records by source id (provenance `imported`)."""
    from curation.labels import import_labels

    with open_store(db) as store:
        result = import_labels(store, file, dataset, id_field=id_field, label_field=label_field,
                               splits=[s.strip() for s in splits.split(",")] if splits else None)
    emit(result, as_json, lambda r: kv_table(r, "labels import"))
