"""Immutable snapshots (what training reads) and exports (Parquet, CSV, HF `datasets`).

A snapshot is one Parquet file plus `manifest.json` in `<home>/snapshots/<dataset>/<version_id>/`. Its id is
derived from the content hash, so taking a snapshot of unchanged data returns the existing one. Files are written
to a temporary name and renamed, so a crash never leaves a half snapshot; `load_snapshot` re-checks the sha256.
Augmented rows take their parent's gold and weak labels here, so a later change of the parent's label follows.
"""

import datetime as dt
import hashlib
import json
import os
import shutil
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation.contracts import export_contract
from curation.errors import InputError, NotFound
from curation.splits import current_split_id
from curation.store import Store, dataset_task, now

EXPORT_FORMATS = ("parquet", "csv", "hf", "chat-jsonl", "alpaca")

# one row per record of the dataset; see docs/ARCHITECTURE.md for the columns
_SNAPSHOT_SQL = """
WITH lm AS (
    SELECT model_id FROM store.label_models WHERE dataset = $dataset ORDER BY created_at DESC, model_id DESC LIMIT 1
), ss AS (
    SELECT split_id FROM store.split_sets WHERE dataset = $dataset AND is_current LIMIT 1
)
SELECT r.record_id, r.text, r.input_hash, r.origin, r.parent_id, r."group",
       g.label, g.source AS label_source,
       w.label AS weak_label, w.probs AS weak_probs, w.model_id AS weak_model_id,
       s.split, s.component, coalesce(s.leaks, false) AS leaks
FROM store.records r
LEFT JOIN store.gold_labels g ON g.record_id = coalesce(r.parent_id, r.record_id)
LEFT JOIN store.weak_labels w ON w.record_id = coalesce(r.parent_id, r.record_id)
     AND w.model_id = (SELECT model_id FROM lm)
LEFT JOIN store.splits s ON s.record_id = r.record_id AND s.split_id = (SELECT split_id FROM ss)
WHERE r.dataset = $dataset
ORDER BY r.record_id
"""


def dataset_arrow(store: Store, dataset: str) -> pa.Table:
    """The dataset as the snapshot sees it (records, gold/weak labels, split), as an Arrow table."""
    store.dataset(dataset)
    cur = store.cursor()
    try:
        return cur.sql(_SNAPSHOT_SQL, params={"dataset": dataset}).to_arrow_table()
    finally:
        cur.close()


def dataset_frame(store: Store, dataset: str) -> pl.DataFrame:
    return pl.from_arrow(dataset_arrow(store, dataset))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(store: Store, dataset: str) -> dict:
    """Write (or reuse) an immutable snapshot of `dataset`; returns its manifest with `path`."""
    info = store.dataset(dataset)
    table = dataset_arrow(store, dataset)
    base = store.settings.snapshots_dir / dataset
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{dt.datetime.now().timestamp():.0f}.parquet"
    pq.write_table(table, tmp, compression="zstd")
    digest = _sha256(tmp)
    version_id = f"{dataset}-{digest[:12]}"
    folder = base / version_id
    existing = store.query("SELECT manifest FROM store.versions WHERE version_id = ?", [version_id])
    if existing and (folder / "records.parquet").exists():
        tmp.unlink()
        return json.loads(existing[0][0]) | {"path": str(folder), "reused": True}
    split = store.query("SELECT split_id FROM store.split_sets WHERE dataset = ? AND is_current", [dataset])
    frame = pl.from_arrow(table)
    counts = {
        "rows": frame.height,
        "gold": int(frame["label"].is_not_null().sum()),
        "weak": int(frame["weak_label"].is_not_null().sum()),
        "augmented": int((frame["origin"] == "augment").sum()),
        "by_split": {str(k): v for k, v in frame.group_by("split").len().iter_rows()},
    }
    leaks = frame.filter(pl.col("leaks"))["component"].n_unique() if frame["leaks"].any() else 0
    manifest = {
        "version_id": version_id, "dataset": dataset, "labels": info["labels"], "rows": frame.height,
        "sha256": digest, "contract_version": export_contract().tag, "created_at": now().isoformat(),
        "split_id": split[0][0] if split else None, "split_leaks": leaks,
        "label_model_id": frame["weak_model_id"].drop_nulls().first() if counts["weak"] else None,
        "counts": counts,
    }
    staging = base / f".tmp-{version_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tmp.rename(staging / "records.parquet")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    with store.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO store.versions VALUES (?, ?, 'snapshot', ?, ?, ?, ?, ?, ?)",
                    [version_id, dataset, str(folder), frame.height, digest, manifest["contract_version"],
                     json.dumps(manifest), now()])
    return manifest | {"path": str(folder), "reused": False}


def load_snapshot(ref: str | Path, store: Store | None = None) -> tuple[pl.DataFrame, dict]:
    """A snapshot by folder, manifest path or version id (with a store). Checks the file's sha256."""
    path = Path(ref)
    if not path.exists() and store is not None:
        row = store.query("SELECT path FROM store.versions WHERE version_id = ?", [str(ref)])
        if not row:
            raise NotFound(f"no snapshot {ref!r}; list them with `curate sql \"SELECT * FROM versions\"`")
        path = Path(row[0][0])
    if path.name == "manifest.json":
        path = path.parent
    if not (path / "manifest.json").exists():
        raise NotFound(f"{path}: not a snapshot folder (no manifest.json)")
    manifest = json.loads((path / "manifest.json").read_text())
    data = path / "records.parquet"
    if _sha256(data) != manifest["sha256"]:
        raise InputError(f"{data}: sha256 differs from its manifest; the snapshot was modified. Take a new one "
                         f"with `curate snapshot --dataset {manifest['dataset']}`")
    return pl.read_parquet(data), manifest | {"path": str(path)}


def export(store: Store, dataset: str, out: str | Path, fmt: str | None = None,
           options: "ExportOptions | None" = None) -> dict:
    """Export the dataset (snapshot columns) to Parquet, CSV or a HF `datasets` folder; or, with `chat-jsonl`,
    `alpaca`, `hf` of an instruction dataset, or a template, for fine-tuning tools (`export_instructions`)."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(out.suffix.lower(), "hf")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    tuned = options is not None and options != ExportOptions()
    if fmt in ("chat-jsonl", "alpaca") or (fmt == "hf" and (tuned or dataset_task(store, dataset) == "instruction")):
        return export_instructions(store, dataset, out, fmt, options or ExportOptions())
    if tuned:
        raise InputError(f"--format {fmt} exports every record with its labels; --template, --min-quality, "
                         "--min-confidence and --allow-contamination apply to chat-jsonl, alpaca and hf")
    table = dataset_arrow(store, dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd")
    elif fmt == "csv":
        frame = pl.from_arrow(table).with_columns(
            pl.col("weak_probs").map_elements(lambda v: json.dumps(list(v)), return_dtype=pl.String, skip_nulls=True))
        frame.write_csv(tmp)
    else:
        import datasets

        shutil.rmtree(tmp, ignore_errors=True)
        datasets.Dataset(table).save_to_disk(str(tmp))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    digest = _sha256(out) if out.is_file() else _sha256(next(out.glob("*.arrow")))
    result = {"dataset": dataset, "path": str(out), "format": fmt, "rows": table.num_rows, "sha256": digest,
              "contract_version": export_contract().tag}
    with store.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO store.versions VALUES (?, ?, 'export', ?, ?, ?, ?, ?, ?)",
                    [f"{dataset}-export-{digest[:12]}-{fmt}", dataset, str(out), table.num_rows, digest,
                     result["contract_version"], json.dumps(result), now()])
    return result


# -- export for fine-tuning tools ---------------------------------------------------------------------------
# Instruction datasets (and classification datasets rendered through a template) become chat JSONL, Alpaca JSONL
# or a HF DatasetDict, one file (or split) per split of the current split set, keeping only the records fit to
# train on. The decision per record is a pure function over columns (`decide`); DuckDB is only read at the edge.

INSTRUCTION_FORMATS = ("chat-jsonl", "alpaca", "hf")
SPLITS = ("train", "val", "test")
# why a record is left out; a record left out for several reasons counts under the first of these
DROP_REASONS = ("unsplit", "augmented_from_eval", "contaminated", "gold_drop", "low_quality", "low_confidence",
                "unlabeled", "not_single_turn")
DEFAULT_MIN_QUALITY = 0.5
DEFAULT_MIN_CONFIDENCE = 0.9
TEMPLATE_FIELDS = ("labels", "text")

_EXPORT_ROWS_SQL = """
WITH lm AS (
    SELECT model_id FROM store.label_models WHERE dataset = $dataset ORDER BY created_at DESC, model_id DESC LIMIT 1
), ss AS (
    SELECT split_id FROM store.split_sets WHERE dataset = $dataset AND is_current ORDER BY created_at DESC LIMIT 1
), ck AS (
    SELECT check_id FROM store.contamination_checks WHERE dataset = $dataset
    ORDER BY created_at DESC, check_id DESC LIMIT 1
), flag AS (
    SELECT record_id FROM store.contamination WHERE check_id = (SELECT check_id FROM ck)
), cur_split AS (
    SELECT record_id, split FROM store.splits WHERE split_id = (SELECT split_id FROM ss)
), weak AS (
    SELECT record_id, probs FROM store.weak_labels WHERE model_id = (SELECT model_id FROM lm)
)
SELECT r.record_id, r.text, r.meta, r.origin, r.parent_id,
       i.messages, coalesce(i.revision, 0) AS revision,
       coalesce(g.label, pg.label) AS gold,
       coalesce(w.probs, pw.probs) AS weak_probs,
       s.split, ps.split AS parent_split,
       (f.record_id IS NOT NULL OR pf.record_id IS NOT NULL) AS contaminated
FROM store.records r
LEFT JOIN main.instructions i ON i.record_id = r.record_id
LEFT JOIN store.gold_labels g ON g.record_id = r.record_id
LEFT JOIN store.gold_labels pg ON pg.record_id = r.parent_id
LEFT JOIN weak w ON w.record_id = r.record_id
LEFT JOIN weak pw ON pw.record_id = r.parent_id
LEFT JOIN cur_split s ON s.record_id = r.record_id
LEFT JOIN cur_split ps ON ps.record_id = r.parent_id
LEFT JOIN flag f ON f.record_id = r.record_id
LEFT JOIN flag pf ON pf.record_id = r.parent_id
WHERE r.dataset = $dataset
ORDER BY r.record_id
"""


class TemplateError(InputError):
    """A classification-to-instruction template that cannot be rendered (unknown or malformed field)."""


@dataclass(frozen=True)
class ExportOptions:
    """What an instruction export keeps. `None` thresholds take the defaults of the dataset's task."""

    min_quality: float | None = None          # instruction datasets: weak P(keep) needed without a gold label
    min_confidence: float | None = None       # classification + template: weak confidence needed without gold
    template: str | None = None               # classification datasets: the user turn, e.g. "... {labels}\n\n{text}"
    allow_contamination: bool = False


def join_labels(labels: Sequence[str]) -> str:
    """`["a"]` → "a"; `["ham", "spam"]` → "ham or spam"; `["a", "b", "c"]` → "a, b or c"."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def template_fields(template: str, valid: Iterable[str]) -> list[str]:
    """The fields `template` uses, checked: plain names only (no `{}`, `{0}`, `{a.b}`, `{a[0]}`), each one of
    `valid`. Literal braces are written `{{` and `}}`. Raises TemplateError naming the bad field and the valid ones."""
    valid = list(dict.fromkeys(valid))
    names = "{" + "}, {".join(valid) + "}"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"--template {template!r}: {e}; write a literal brace as '{{{{' or '}}}}'") from None
    used = []
    for _, field, spec, conv in parsed:
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise TemplateError(f"--template: field {{{field}}} is not a plain name; the valid fields are {names} "
                                f"(write a literal brace as '{{{{' or '}}}}')")
        if spec or conv:
            raise TemplateError(f"--template: field {{{field}}} has a conversion or format spec; use {{{field}}}")
        if field not in valid:
            raise TemplateError(f"--template: unknown field {{{field}}}; the valid fields are {names}")
        used.append(field)
    if "text" not in used:
        raise TemplateError("--template must contain {text} (the record's text)")
    return list(dict.fromkeys(used))


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """`template` with its fields replaced (values are not re-parsed: braces inside a text stay as they are)."""
    return template.format_map({k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                                for k, v in values.items()})


def decide(rows: pl.DataFrame, *, task: str, labels: Sequence[str], min_quality: float, min_confidence: float,
           allow_contamination: bool) -> pl.DataFrame:
    """Pure: adds `reason` (null when the record is exported; else one of DROP_REASONS) and `target` (classification:
    the label name for the assistant turn). Needs the columns split, parent_split, origin, contaminated, gold,
    weak_probs."""
    labels = list(labels)
    probs = pl.col("weak_probs")
    augmented = pl.col("origin") == "augment"
    aug_bad = augmented & ((pl.col("split") != "train") | pl.col("parent_split").is_null()
                           | (pl.col("parent_split") != "train"))
    head = (pl.when(pl.col("split").is_null() | ~pl.col("split").is_in(SPLITS)).then(pl.lit("unsplit"))
            .when(aug_bad).then(pl.lit("augmented_from_eval"))
            .when(pl.col("contaminated") & (not allow_contamination)).then(pl.lit("contaminated")))
    if task == "instruction":
        keep = labels.index("keep")
        quality = probs.list.get(keep, null_on_oob=True)
        reason = (head.when(pl.col("gold") == "keep").then(pl.lit(None, pl.String))
                  .when(pl.col("gold").is_not_null()).then(pl.lit("gold_drop"))
                  .when(quality.is_not_null() & (quality >= min_quality)).then(pl.lit(None, pl.String))
                  .when(quality.is_not_null()).then(pl.lit("low_quality"))
                  .when(pl.lit(min_quality <= 0)).then(pl.lit(None, pl.String))
                  .otherwise(pl.lit("unlabeled")))
        return rows.with_columns(reason=reason, target=pl.lit(None, pl.String), quality=quality)
    weak_label = probs.list.arg_max().replace_strict(dict(enumerate(labels)), default=None, return_dtype=pl.String)
    confidence = probs.list.max()
    target = (pl.when(pl.col("gold").is_not_null()).then(pl.col("gold"))
              .when(confidence >= min_confidence).then(weak_label))
    reason = (head.when(pl.col("gold").is_not_null()).then(pl.lit(None, pl.String))
              .when(confidence.is_not_null() & (confidence >= min_confidence)).then(pl.lit(None, pl.String))
              .when(confidence.is_not_null()).then(pl.lit("low_confidence"))
              .otherwise(pl.lit("unlabeled")))
    return rows.with_columns(reason=reason, target=target, quality=confidence)


def clean_messages(messages: Any) -> list[dict]:
    """A stored conversation as `[{role, content}]` only (other keys dropped)."""
    turns = json.loads(messages) if isinstance(messages, str) else messages
    return [{"role": str(t["role"]), "content": str(t["content"])} for t in turns]


def alpaca_row(messages: list[dict]) -> dict | None:
    """`{instruction, input, output}` for a single-turn conversation (system turns become a prefix of the
    instruction, separated by a blank line); None when it has more than one user turn (Alpaca cannot hold it)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    user = [m["content"] for m in messages if m["role"] == "user"]
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    if len(user) != 1 or len(assistant) != 1 or messages[-1]["role"] != "assistant":
        return None
    return {"instruction": "\n\n".join([*system, user[0]]), "input": "", "output": assistant[0]}


def _check_out_dir(out: Path) -> None:
    if out.is_file():
        raise InputError(f"--out {out}: a file exists there; the export writes a folder (train.jsonl, val.jsonl, ...)")
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / "manifest.json").read_text()).get("kind") == "instruction-export"
        except (OSError, ValueError):
            previous = False
        if not previous:
            raise InputError(f"--out {out}: the folder is not empty and holds no earlier export; give a new or empty "
                             "folder (an earlier export's folder is replaced)")


def export_instructions(store: Store, dataset: str, out: str | Path, fmt: str = "chat-jsonl",
                        options: ExportOptions = ExportOptions()) -> dict:
    """Write the records fit to fine-tune on, per split of the current split set, to folder `out`:
    `chat-jsonl` → train/val/test.jsonl with `{"messages": [...]}` per line; `alpaca` → the same files with
    `{instruction, input, output}`; `hf` → a `datasets.DatasetDict` folder (columns messages, record_id). A
    `manifest.json` beside them holds the counts kept / dropped by reason per split and the sha256 of each file;
    the export is recorded in store.versions. Classification datasets need `options.template`."""
    if fmt not in INSTRUCTION_FORMATS:
        raise InputError(f"unknown instruction export format {fmt!r}; use one of {', '.join(INSTRUCTION_FORMATS)}")
    out = Path(out)
    task = dataset_task(store, dataset)
    labels = store.dataset(dataset)["labels"]
    if current_split_id(store, dataset) is None:
        raise InputError(f"dataset {dataset!r} has no split; the export writes one file per split. Run `curate split "
                         f"--dataset {dataset}` first (or `--from-column split` to use given splits)")
    if task == "instruction":
        if options.template is not None:
            raise InputError(f"--template is for classification datasets; {dataset!r} holds instructions already")
        if options.min_confidence is not None:
            raise InputError("--min-confidence is for classification datasets; instruction datasets use --min-quality")
        if "keep" not in labels:
            raise InputError(f"dataset {dataset!r} has labels {labels}; the quality filter needs a `keep` label")
    else:
        if options.template is None:
            raise InputError(f"dataset {dataset!r} is a classification dataset: give --template, e.g. "
                             "\"Classify this comment as {labels}.\\n\\n{text}\", to export it as instructions")
        if options.min_quality is not None:
            raise InputError("--min-quality is for instruction datasets; classification uses --min-confidence")
    min_quality = DEFAULT_MIN_QUALITY if options.min_quality is None else options.min_quality
    min_confidence = DEFAULT_MIN_CONFIDENCE if options.min_confidence is None else options.min_confidence
    cur = store.cursor()
    try:
        rows = pl.from_arrow(cur.sql(_EXPORT_ROWS_SQL, params={"dataset": dataset}).to_arrow_table())
    finally:
        cur.close()
    if rows.height == 0:
        rows = rows.with_columns(pl.col("weak_probs").cast(pl.List(pl.Float64)))
    rows = decide(rows, task=task, labels=labels, min_quality=min_quality, min_confidence=min_confidence,
                  allow_contamination=options.allow_contamination)
    used: list[str] = []
    if task != "instruction":
        metas = [json.loads(m) for m in rows["meta"].drop_nulls().to_list()]
        meta_keys = sorted({k for m in metas if isinstance(m, dict) for k in m} - set(TEMPLATE_FIELDS))
        used = template_fields(options.template, [*TEMPLATE_FIELDS, *meta_keys])

    per_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    record_ids: dict[str, list[int]] = {s: [] for s in SPLITS}
    dropped = {s: dict.fromkeys(DROP_REASONS, 0) for s in (*SPLITS, "none")}
    label_text = join_labels(labels)
    for r in rows.iter_rows(named=True):
        split = r["split"] if r["split"] in SPLITS else "none"
        if r["reason"] is not None:
            dropped[split][r["reason"]] += 1
            continue
        if task == "instruction":
            if r["messages"] is None:
                raise InputError(f"record {r['record_id']} of instruction dataset {dataset!r} has no messages; "
                                 "re-ingest it with `curate ingest --task instruction`")
            messages = clean_messages(r["messages"])
        else:
            meta = json.loads(r["meta"]) if r["meta"] else {}
            values = {"labels": label_text, "text": r["text"]}
            for f in used:
                if f not in values:
                    if not isinstance(meta, dict) or f not in meta:
                        raise TemplateError(f"record {r['record_id']}: field `{f}` is missing from its meta; "
                                            f"the template can only use fields every record has")
                    values[f] = meta[f]
            messages = [{"role": "user", "content": render_template(options.template, values)},
                        {"role": "assistant", "content": r["target"]}]
        if fmt == "alpaca":
            row = alpaca_row(messages)
            if row is None:
                dropped[split]["not_single_turn"] += 1
                continue
        else:
            row = {"messages": messages}
        per_split[split].append(row)
        record_ids[split].append(r["record_id"])

    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if fmt == "hf":
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a dependency
            raise InputError("--format hf needs the `datasets` package: pip install datasets") from e
        features = datasets.Features({
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "record_id": datasets.Value("int64")})
        datasets.DatasetDict({
            s: datasets.Dataset.from_dict({"messages": [x["messages"] for x in per_split[s]],
                                           "record_id": record_ids[s]}, features=features)
            for s in SPLITS}).save_to_disk(str(tmp))
    else:
        for s in SPLITS:
            with (tmp / f"{s}.jsonl").open("w", encoding="utf-8") as f:
                for row in per_split[s]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    kept = {s: len(per_split[s]) for s in SPLITS}
    counts = {s: {"kept": kept[s], "dropped": {k: v for k, v in dropped[s].items() if v}} for s in SPLITS}
    if any(dropped["none"].values()):
        counts["none"] = {"kept": 0, "dropped": {k: v for k, v in dropped["none"].items() if v}}
    version_id = f"{dataset}-export-{digest[:12]}-{fmt}"
    manifest = {
        "kind": "instruction-export", "version_id": version_id, "dataset": dataset, "task": task, "format": fmt,
        "rows": sum(kept.values()), "sha256": digest, "files": files, "counts": counts,
        "options": {"min_quality": min_quality if task == "instruction" else None,
                    "min_confidence": min_confidence if task != "instruction" else None,
                    "template": options.template, "allow_contamination": options.allow_contamination},
        "labels": labels, "split_id": current_split_id(store, dataset),
        "label_model_id": store.one("SELECT model_id FROM store.label_models WHERE dataset = ? "
                                    "ORDER BY created_at DESC, model_id DESC LIMIT 1", [dataset]),
        "contamination_check_id": store.one("SELECT check_id FROM store.contamination_checks WHERE dataset = ? "
                                            "ORDER BY created_at DESC, check_id DESC LIMIT 1", [dataset]),
        "contract_version": export_contract().tag, "created_at": now().isoformat(),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    with store.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO store.versions VALUES (?, ?, 'export', ?, ?, ?, ?, ?, ?)",
                    [version_id, dataset, str(out), manifest["rows"], digest, manifest["contract_version"],
                     json.dumps(manifest), now()])
    return manifest | {"path": str(out)}
