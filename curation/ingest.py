"""Ingest CSV, JSON lines, Parquet and HF `datasets` into the store, enforcing the import contract.

Files are read in batches (a progress bar can follow them); every batch is checked with vectorised rules; rows
that break a rule go to the quarantine with file, row, field, rule and message, the rest are accepted. The
whole ingest is one transaction: an error or a killed process leaves the store exactly as it was.
Always `rows_read == accepted + quarantined`.

Row numbers are 1-based data rows (the CSV header is not counted; a quoted multi-line field is one row).
"""

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from curation.contracts import import_contract
from curation.errors import InputError
from curation.normalize import normalise_arrow
from curation.store import Store, now

log = logging.getLogger(__name__)

BATCH_ROWS = 4 * 122_880  # 4 DuckDB row groups: an insert of several row groups runs on every thread
FORMATS = ("csv", "jsonl", "parquet", "hf")


@dataclass(frozen=True)
class FieldMap:
    """Which source column feeds which record field; all other columns are kept in `meta`."""

    text: str = "text"
    label: str | None = None
    id: str | None = None
    group: str | None = None
    exclude: tuple[str, ...] = ()  # columns not stored at all (PII, answer keys)


@dataclass
class IngestResult:
    dataset: str
    file: str
    format: str
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    labeled: int = 0
    ingest_id: int | None = None
    labels: list[str] = field(default_factory=list)
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    contract_version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Batch:
    """Source columns of one batch plus the 1-based data row of each, and rows already rejected by the reader."""

    columns: pl.DataFrame
    rows: pl.Series
    rejected: list[dict] = field(default_factory=list)
    meta: pl.Series | None = None  # JSON of the unmapped columns, when the reader builds it itself


# -- readers --------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    suffixes = "".join(path.suffixes).lower()
    for fmt, exts in {"csv": (".csv", ".tsv", ".csv.gz"), "jsonl": (".jsonl", ".ndjson", ".json"),
                      "parquet": (".parquet", ".pq")}.items():
        if suffixes.endswith(exts):
            return fmt
    raise InputError(f"{path}: unknown format {suffixes or '(no extension)'}; pass --format csv|jsonl|parquet|hf")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_file():
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty (0 bytes); check that it was written completely")
        head = path.open("rb").read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InputError(f"{path}: the file is UTF-16; convert it to UTF-8 "
                             f"(e.g. `iconv -f UTF-16 -t UTF-8 {path.name} > out.csv`) and ingest that")


# DuckDB's CSV reader rejects a WHOLE file whose line passes max_line_size (default 2 MB: "CSV Error on Line: 1");
# with a generous bound the long row is read and the contract's maxLength quarantines that row alone
CSV_MAX_LINE_BYTES = 64 * 2**20


def _read_csv(path: Path, delimiter: str | None) -> Iterator[_Batch]:
    reader = duckdb.connect()  # private in-memory reader; the store's connection has no file access
    lit = str(path).replace("'", "''")
    delim = "" if delimiter is None else ", delim='" + delimiter.replace("'", "''") + "'"
    try:
        rel = reader.sql(f"SELECT * FROM read_csv('{lit}', all_varchar=true, header=true, store_rejects=true,"
                         f" strict_mode=true, max_line_size={CSV_MAX_LINE_BYTES}{delim})")
        batches = rel.fetch_record_batch(BATCH_ROWS)
    except duckdb.Error as e:
        if "Maximum line size" in str(e):
            raise InputError(f"{path}: a row is longer than {CSV_MAX_LINE_BYTES // 2**20} MiB, the most a CSV row "
                             "may hold; split that text, or ingest the file as JSON lines or Parquet") from None
        raise InputError(f"{path}: not readable as CSV ({str(e).splitlines()[0]}); check that it is a UTF-8 "
                         f"CSV with a header row, or pass --format") from None
    accepted = 0
    for rb in batches:
        n = rb.num_rows
        yield _Batch(pl.from_arrow(pa.Table.from_batches([rb])), pl.Series("row", range(accepted + 1, accepted + n + 1)))
        accepted += n
    rejects = reader.sql("SELECT line, column_name, error_type, csv_line, error_message FROM reject_errors "
                         "ORDER BY line").fetchall()
    # the reader numbers a rejected row by its record index counting the header; map accepted rows around them
    seen: dict[int, dict] = {}
    for line, column, etype, csv_line, message in rejects:
        row = int(line) - 1
        if row in seen:
            continue
        rule = "valid_utf8" if "ENCODING" in etype or "UNICODE" in etype else "row_shape"
        fixes = {"valid_utf8": "re-save the file as UTF-8", "row_shape": "quote fields that contain the delimiter"}
        seen[row] = {"row": row, "field": column if rule == "valid_utf8" else None, "rule": rule,
                     "message": f"{message.rstrip('.')}; {fixes[rule]}", "raw": csv_line}
    if seen and accepted == 0 and all(r["rule"] == "valid_utf8" for r in seen.values()):
        raise InputError(f"{path}: no row decodes as UTF-8; the file has another encoding. Convert it "
                         f"(e.g. `iconv -f LATIN1 -t UTF-8`) and ingest again")
    yield _Batch(pl.DataFrame(), pl.Series("row", [], dtype=pl.Int64), list(seen.values()))


def _remap_csv_rows(rows: pl.Series, rejected_rows: list[int]) -> pl.Series:
    """Accepted ordinal k → its data row, skipping the rows the reader rejected."""
    if not rejected_rows:
        return rows
    rej = pl.Series(sorted(rejected_rows), dtype=pl.Int64)
    total = int(rows.max()) + len(rej)
    kept = pl.Series(range(1, total + 1), dtype=pl.Int64)
    kept = kept.filter(~kept.is_in(rej))
    return kept.gather(rows - 1)


def json_lines(path: Path, *, objects: bool = False) -> Iterator[tuple[int, Any, dict | None]]:
    """(line number, parsed value, None) per line of a JSON-lines file, or (line number, None, rejection) for an
    empty line, bytes that are not UTF-8, a line that is not JSON, or (`objects`) a value that is not an object;
    a rejection is {field, rule, message, raw}."""
    with path.open("rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                yield i, None, {"field": None, "rule": "row_shape", "message": "empty line; remove it", "raw": ""}
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield i, None, {"field": None, "rule": "valid_utf8", "raw": raw[:500].decode("utf-8", "replace"),
                                "message": f"bytes at {e.start} are not UTF-8; re-save the file as UTF-8"}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, None, {"field": None, "rule": "row_shape", "raw": line[:2000],
                                "message": f"not JSON ({e.msg} at column {e.colno}); fix the line"}
                continue
            if objects and not isinstance(obj, dict):
                yield i, None, {"field": None, "rule": "row_shape", "raw": line[:2000],
                                "message": "a JSON line must be an object {\"text\": ...}"}
                continue
            yield i, obj, None


def _read_jsonl(path: Path, fields: FieldMap) -> Iterator[_Batch]:
    mapped = {fields.text, fields.label, fields.id, fields.group} - {None}
    buf, metas, nums, bad = [], [], [], []
    for i, obj, error in json_lines(path, objects=True):
        if error is not None:
            bad.append({"row": i, **error})
            continue
        buf.append({k: v if v is None or isinstance(v, str) else json.dumps(v) for k, v in obj.items()
                    if k in mapped})
        rest = {k: v for k, v in obj.items() if k not in mapped and k not in fields.exclude}
        metas.append(json.dumps(rest, ensure_ascii=False) if rest else None)
        nums.append(i)
        if len(buf) >= BATCH_ROWS:
            yield _Batch(_frame_from_rows(buf), pl.Series("row", nums), bad, pl.Series(metas, dtype=pl.String))
            buf, metas, nums, bad = [], [], [], []
    yield _Batch(_frame_from_rows(buf), pl.Series("row", nums, dtype=pl.Int64), bad,
                 pl.Series(metas, dtype=pl.String))


def _frame_from_rows(rows: list[dict]) -> pl.DataFrame:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return pl.DataFrame({k: [r.get(k) for r in rows] for k in keys}, schema={k: pl.String for k in keys})


def _arrow_batches(table_batches: Iterator[pa.RecordBatch]) -> Iterator[_Batch]:
    start = 0
    for rb in table_batches:
        df = pl.from_arrow(pa.Table.from_batches([rb]))
        yield _Batch(df, pl.Series("row", range(start + 1, start + rb.num_rows + 1), dtype=pl.Int64))
        start += rb.num_rows


def _read_parquet(path: Path) -> tuple[int, Iterator[_Batch]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not readable as Parquet ({e}); check the file or pass --format") from None
    return pf.metadata.num_rows, _arrow_batches(pf.iter_batches(batch_size=BATCH_ROWS))


def _hf_dataset(source: Any) -> tuple[Any, list[str] | None]:
    """A HF Dataset (object or `save_to_disk` folder) and the label names of a ClassLabel column, if any."""
    import datasets

    if isinstance(source, (str, Path)):
        try:
            ds = datasets.load_from_disk(str(source))
        except (FileNotFoundError, ValueError) as e:
            raise InputError(f"{source}: not a HF datasets folder saved with save_to_disk ({e})") from None
    else:
        ds = source
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"{source}: a DatasetDict with splits {list(ds)}; ingest one split, e.g. ds['train']")
    return ds, None


def _hf_batches(ds: Any, fields: FieldMap) -> tuple[int, Iterator[_Batch], list[str] | None]:
    import datasets

    names = None
    feat = ds.features.get(fields.label) if fields.label else None
    if isinstance(feat, datasets.ClassLabel):
        names = list(feat.names)
    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    return ds.num_rows, _arrow_batches(iter(table.to_batches(max_chunksize=BATCH_ROWS))), names


@dataclass
class Source:
    name: str
    format: str
    total: int | None
    batches: Iterator[_Batch]
    class_names: list[str] | None = None  # a HF ClassLabel's names


def open_source(source: str | Path | Any, fields: FieldMap, *, fmt: str | None = None,
                delimiter: str | None = None) -> Source:
    """Open a file (or a HF Dataset object) for batched reading. Unreadable input raises InputError at once."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        _check_readable(path)
        fmt = fmt or detect_format(path)
        name = str(path)
    else:
        fmt, name = "hf", getattr(getattr(source, "info", None), "dataset_name", None) or "<Dataset>"
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return Source(name, fmt, None, _read_csv(Path(source), delimiter))
    if fmt == "jsonl":
        return Source(name, fmt, None, _read_jsonl(Path(source), fields))
    if fmt == "parquet":
        total, batches = _read_parquet(Path(source))
        return Source(name, fmt, total, batches)
    ds, _ = _hf_dataset(source)
    total, batches, class_names = _hf_batches(ds, fields)
    return Source(name, fmt, total, batches, class_names)


# -- checks ---------------------------------------------------------------------------------------------

def stringify(df: pl.DataFrame) -> pl.DataFrame:
    """Every non-string column as text (lists/structs as JSON), so rules and meta see one type."""
    exprs = []
    for name, dtype in df.schema.items():
        if dtype == pl.String:
            exprs.append(pl.col(name))
        elif dtype.is_nested():
            exprs.append(pl.col(name).map_elements(lambda v: json.dumps(v.to_list() if hasattr(v, "to_list") else v,
                                                                     default=str),
                                                   return_dtype=pl.String, skip_nulls=True).alias(name))
        else:
            exprs.append(pl.col(name).cast(pl.String).alias(name))
    return df.select(exprs) if exprs else df


def _mapped(batch: _Batch, fields: FieldMap) -> pl.DataFrame:
    """Source columns → text, label_raw, source_id, group (as strings), meta (JSON of the rest, types kept)."""
    mapped = {fields.text: "text", fields.label: "label_raw", fields.id: "source_id", fields.group: "group"}
    others = [c for c in batch.columns.columns if c not in mapped and c not in fields.exclude]
    if batch.meta is not None:
        meta = pl.lit(batch.meta).alias("meta")
    elif others:
        meta = pl.lit(batch.columns.select(pl.struct(others).struct.json_encode()).to_series()).alias("meta")
    else:
        meta = pl.lit(None, pl.String).alias("meta")
    df = stringify(batch.columns.select([c for c in batch.columns.columns if c in mapped]))
    cols = [pl.col(src).alias(dst) if src in df.columns else pl.lit(None, pl.String).alias(dst)
            for src, dst in mapped.items() if src is not None]
    for dst in ("label_raw", "source_id", "group"):
        if dst not in {d for s, d in mapped.items() if s is not None}:
            cols.append(pl.lit(None, pl.String).alias(dst))
    return df.select(*cols, meta).with_columns(batch.rows.alias("row"))


def _label_expr(labels: list[str]) -> pl.Expr:
    """The declared label a raw value names: itself, or an integer index into `labels` (null: none or no match)."""
    index_labels = not any(lab.lstrip("-").isdigit() for lab in labels)
    as_index = pl.col("label_raw").str.strip_chars().cast(pl.Int64, strict=False)
    return (
        pl.when(pl.col("label_raw").is_null() | (pl.col("label_raw").str.strip_chars() == "")).then(None)
        .when(pl.col("label_raw").is_in(labels)).then(pl.col("label_raw"))
        .when(pl.lit(index_labels) & as_index.is_between(0, len(labels) - 1))
        .then(pl.lit(pl.Series(labels, dtype=pl.String)).implode().list.get(as_index, null_on_oob=True)
              if labels else None)
        .otherwise(None)
    )


RULE_FIELDS = {"required": "text", "not_blank": "text", "no_nul": "text", "max_length": "text", "in_label_set": "label",
               "unique": "source_id"}


def rule_columns(labels: list[str], max_length: int) -> tuple[pl.Expr, pl.Expr]:
    """(`label`, `rule`): the resolved label, and the first row-local rule the row breaks (null = it passes), in
    this order: required text, not_blank, no_nul, max_length, in_label_set. Cheap: no message is built here."""
    label = _label_expr(labels)
    raw, text = pl.col("label_raw"), pl.col("text")
    bad_label = raw.is_not_null() & (raw.str.strip_chars() != "") & label.is_null()
    rule = (pl.when(text.is_null()).then(pl.lit("required"))
            .when(text.str.strip_chars().str.len_bytes() == 0).then(pl.lit("not_blank"))
            .when(text.str.contains("\x00", literal=True)).then(pl.lit("no_nul"))
            .when(text.str.len_chars() > max_length).then(pl.lit("max_length"))
            .when(bad_label).then(pl.lit("in_label_set"))
            .otherwise(pl.lit(None, pl.String)))
    return label.alias("label"), rule.alias("rule")


def explain(df: pl.DataFrame, labels: list[str], max_length: int) -> pl.DataFrame:
    """Adds `field` and `message` for each row's `rule` (null where the row passes; `unique` keeps its message)."""
    declared = ", ".join(labels) if labels else "(none declared)"
    rule = pl.col("rule")
    msg = (pl.when(rule == "required").then(pl.lit("text is missing; give every row a text"))
           .when(rule == "not_blank").then(pl.lit("text is empty or only whitespace; drop the row or fill it"))
           .when(rule == "no_nul").then(
               pl.format("text holds a NUL byte (\\x00) at character {}; remove it (NUL breaks exports and "
                         "tokenizers)", pl.col("text").str.find("\x00", literal=True).fill_null(-1) + 1))
           .when(rule == "max_length").then(
               pl.format("text has {} characters, more than the contract's maxLength {}; shorten or split it",
                         pl.col("text").str.len_chars(), pl.lit(max_length)))
           .when(rule == "in_label_set").then(
               pl.format("label '{}' is not one of {}; fix the value or declare it with --labels",
                         pl.col("label_raw"), pl.lit(declared)))
           .otherwise(pl.col("message") if "message" in df.columns else pl.lit(None, pl.String)))
    return df.with_columns(rule.replace_strict(RULE_FIELDS, default=None, return_dtype=pl.String).alias("field"),
                           msg.alias("message"))


def check_rows(df: pl.DataFrame, labels: list[str], max_length: int) -> pl.DataFrame:
    """Vectorised row-local rules. Adds `label` (resolved), `rule`, `field`, `message` (null = row passes).

    The first broken rule of a row is reported, in this order: required text, not_blank, no_nul, max_length,
    in_label_set.
    """
    return explain(df.with_columns(*rule_columns(labels, max_length)), labels, max_length)


# -- the edge -------------------------------------------------------------------------------------------

def ingest(store: Store, source: str | Path | Any, dataset: str, *, fields: FieldMap = FieldMap(),
           labels: list[str] | None = None, fmt: str | None = None, delimiter: str | None = None,
           progress: Callable[[int, int | None], None] | None = None) -> IngestResult:
    """Ingest `source` (a path, or a HF Dataset object) into `dataset`. `progress(rows_done, total_or_None)`."""
    contract = import_contract()
    max_length = store.settings.max_text_length or contract.fields["text"].max_length or 20_000
    src = open_source(source, fields, fmt=fmt, delimiter=delimiter)
    name, fmt, total, batches = src.name, src.format, src.total, src.batches
    if labels is None and src.class_names is not None:
        labels = src.class_names

    result = IngestResult(dataset, name, fmt, contract_version=contract.tag)
    started = now()
    with store.transaction() as cur:
        result.labels = store.ensure_dataset(cur, dataset, labels, contract.tag)
        ingest_id = store.next_id(cur, "store.ingests", "ingest_id")
        first_record = store.next_id(cur, "store.records", "record_id")
        result.ingest_id = ingest_id
        reader = store.cursor()  # the worker's own: it only reads rows committed before this ingest
        checked = _prefetch(_checked(batches, fields, result.labels, max_length, SourceIds(reader, dataset, first_record),
                                     first_record))
        with contextlib.closing(reader), contextlib.closing(checked):  # the worker stops before its cursor closes
            for i, c in enumerate(checked):
                batch = c.batch
                if i == 0 and batch.columns.width and fields.text not in batch.columns.columns:
                    raise InputError(f"{name}: no column {fields.text!r} (columns: {', '.join(batch.columns.columns)}); "
                                     f"pass --text-field COLUMN")
                for col, opt in ((fields.label, "--label-field"), (fields.id, "--id-field"), (fields.group, "--group-field")):
                    if i == 0 and col and batch.columns.width and col not in batch.columns.columns:
                        raise InputError(f"{name}: no column {col!r} for {opt} (columns: "
                                         f"{', '.join(batch.columns.columns)})")
                if batch.rejected:
                    write_quarantine(cur, ingest_id, dataset, name, pl.DataFrame(batch.rejected, schema={
                        "row": pl.Int64, "field": pl.String, "rule": pl.String, "message": pl.String, "raw": pl.String}))
                    result.quarantined += len(batch.rejected)
                    result.rows_read += len(batch.rejected)
                    for r in batch.rejected:
                        result.quarantined_by_rule[r["rule"]] = result.quarantined_by_rule.get(r["rule"], 0) + 1
                if c.df is None:
                    continue
                if i == 0 and fields.label and not result.labels:
                    raise InputError(f"{name}: dataset {dataset!r} has no declared labels but the file has a label column "
                                     f"{fields.label!r}; declare them with --labels a,b,c")
                if c.bad.height:
                    write_quarantine(cur, ingest_id, dataset, name, c.bad)
                    for rule, n in c.bad.group_by("rule").len().iter_rows():
                        result.quarantined_by_rule[rule] = result.quarantined_by_rule.get(rule, 0) + n
                _insert_records(cur, c.df, c.norm, c.bad.height > 0, dataset, ingest_id, name, started)
                result.accepted += c.df.height - c.bad.height
                result.quarantined += c.bad.height
                result.rows_read += c.df.height
                result.labeled += c.labeled
                if progress:
                    progress(result.rows_read, total)
        if fmt == "csv":
            _fix_csv_rows(cur, ingest_id)
        result.duplicates = _count_duplicates(cur, dataset, first_record)
        cur.execute("INSERT INTO store.ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [ingest_id, dataset, name, fmt, result.rows_read, result.accepted, result.quarantined,
                     result.duplicates, contract.tag, started, now()])
    assert result.rows_read == result.accepted + result.quarantined
    log.info("ingested %s into %s: %d read, %d accepted, %d quarantined", name, dataset, result.rows_read,
             result.accepted, result.quarantined)
    return result


def prepare_batch(batch: _Batch, fields: FieldMap, labels: list[str], max_length: int
                  ) -> tuple[pl.DataFrame | None, pa.Array | None]:
    """Mapping, row-local rules and the normalised text of one batch (None, None for an empty one)."""
    if batch.columns.height == 0:
        return None, None
    df = _mapped(batch, fields).with_columns(*rule_columns(labels, max_length))
    return df, normalise_arrow(df["text"].to_arrow(compat_level=pl.CompatLevel.oldest()))


@dataclass
class _Checked:
    """One batch after every rule: `df` with `record_id` (null for a row that broke a rule), the quarantine rows
    `bad` (row, field, rule, message, raw), the normalised texts and how many accepted rows carry a label."""

    batch: _Batch
    df: pl.DataFrame | None = None
    norm: pa.Array | None = None
    bad: pl.DataFrame | None = None
    labeled: int = 0


def _checked(batches: Iterator[_Batch], fields: FieldMap, labels: list[str], max_length: int, ids: "SourceIds",
             first_record: int) -> Iterator[_Checked]:
    """Every check that needs nothing written by this ingest, batch by batch, with record ids numbered from
    `first_record`: it runs in the prefetch worker, ahead of the inserts."""
    next_record = first_record
    for batch in batches:
        df, norm = prepare_batch(batch, fields, labels, max_length)
        if df is None:
            yield _Checked(batch)
            continue
        df, dup_msgs = ids.flag(df)
        ok = df["rule"].is_null()
        n_good = int(ok.sum())
        bad = df.filter(~ok) if n_good < df.height else df.clear()
        if bad.height:
            if dup_msgs.height:
                bad = bad.join(dup_msgs, on="row", how="left")
            bad = explain(bad, labels, max_length)
            raw = bad.select(pl.struct("text", "label_raw", "source_id", "group", "meta").struct.json_encode())
            bad = bad.select("row", "field", "rule", "message").with_columns(raw.to_series().alias("raw"))
        record_id = (pl.when(ok).then(ok.cast(pl.Int64).cum_sum() + (next_record - 1)) if bad.height
                     else pl.int_range(next_record, next_record + df.height, dtype=pl.Int64))
        df = df.with_columns(record_id.alias("record_id"))
        ids.accepted(df.filter(ok) if bad.height else df)
        labeled = int((ok & df["label"].is_not_null()).sum())
        next_record += n_good
        yield _Checked(batch, df, norm, bad, labeled)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _prefetch(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Iterate `items` in a worker thread, up to `depth` ahead: reading and preparing the next batches (polars,
    numba and the readers release the GIL) overlaps with DuckDB inserting the current one. The worker's errors
    are raised here; leaving the loop early stops the worker."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in items:
                if not put(x):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failed(e))
            return
        put(end)

    worker = threading.Thread(target=work, name="ingest-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            x = q.get()
            if x is end:
                return
            if isinstance(x, _Failed):
                raise x.error
            yield x
    finally:
        stop.set()
        worker.join()


def _insert_records(cur: duckdb.DuckDBPyConnection, df: pl.DataFrame, norm: pa.Array, has_bad: bool, dataset: str,
                    ingest_id: int, file: str, started: Any) -> None:
    """One batch into `store.records` (input_hash = MD5 of the normalised text, in SQL) and its labels into
    `store.gold_labels`. The batch goes to DuckDB as Arrow without a copy; rows that broke a rule are skipped."""
    cols = df.select("record_id", "source_id", "text", "group", "meta", "row", "label")
    table = cols.to_arrow(compat_level=pl.CompatLevel.newest()).append_column("norm", norm)
    keep = " WHERE record_id IS NOT NULL" if has_bad else ""
    cur.register("_batch", table)
    cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, "
                "origin, parent_id, ingest_id, source_row, ingested_at) "
                "SELECT record_id, ?, source_id, text, \"group\", meta::JSON, "
                f"substr(md5(norm), 1, 16), 'ingest', NULL, ?, row, ? FROM _batch{keep}",
                [dataset, ingest_id, started])
    cur.execute("INSERT INTO store.gold_labels (record_id, label, source, source_ref, annotator, updated_at) "
                "SELECT record_id, label, 'imported', ?, NULL, ? FROM _batch "
                "WHERE label IS NOT NULL" + (" AND record_id IS NOT NULL" if has_bad else ""), [file, started])
    cur.unregister("_batch")


def _count_duplicates(cur: duckdb.DuckDBPyConnection, dataset: str, first_record: int) -> int:
    """New records whose input_hash an earlier record of the dataset has: all new rows of a hash the dataset
    already had, and all but the first new row of any other hash."""
    return cur.execute(
        "SELECT count(*) - count(DISTINCT n.input_hash) FILTER (WHERE o.input_hash IS NULL) "
        "FROM (SELECT input_hash FROM store.records WHERE dataset = ? AND record_id >= ?) n "
        "LEFT JOIN (SELECT DISTINCT input_hash FROM store.records WHERE dataset = ? AND record_id < ?) o "
        "USING (input_hash)", [dataset, first_record, dataset, first_record]).fetchall()[0][0]


class SourceIds:
    """Rule `unique` on source_id: a second row with an id already in this file or in the dataset. Ids accepted
    earlier in this ingest are kept here, so the store is only asked when the dataset had ids before."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, dataset: str, first_record: int):
        self.cur = cur
        self.dataset = dataset
        self.first_record = first_record
        self.in_store = cur.execute("SELECT count(source_id) > 0 FROM store.records WHERE dataset = ?",
                                    [dataset]).fetchall()[0][0]
        self.seen: list[pl.DataFrame] = []

    def accepted(self, good: pl.DataFrame) -> None:
        ids = good.filter(pl.col("source_id").is_not_null()).select("source_id", "record_id")
        if ids.height:
            self.seen.append(ids)

    def flag(self, df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`df` with rule `unique` set on duplicate ids, and (row, message) of those rows."""
        none = pl.DataFrame(schema={"row": pl.Int64, "message": pl.String})
        ids = df.filter(pl.col("rule").is_null() & pl.col("source_id").is_not_null()).select("row", "source_id")
        if ids.height == 0:
            return df, none
        parts = []
        if self.in_store:
            cur = self.cur
            cur.register("_ids", ids.select("source_id").to_arrow(compat_level=pl.CompatLevel.newest()))
            try:
                parts.append(cur.sql(
                    "SELECT i.source_id, min(r.record_id) AS record_id FROM _ids i JOIN store.records r "
                    "ON r.source_id = i.source_id AND r.dataset = ? AND r.record_id < ? GROUP BY 1",
                    params=[self.dataset, self.first_record]).pl())
            finally:
                cur.unregister("_ids")
        if self.seen:
            parts.append(ids.select("source_id").join(pl.concat(self.seen), on="source_id", how="inner"))
        existing = pl.concat(parts).group_by("source_id").agg(pl.col("record_id").min()) if parts else None
        dup_in_file = ids.filter(ids["source_id"].is_duplicated() & ~ids["source_id"].is_first_distinct())
        in_store = (ids.join(existing, on="source_id", how="inner") if existing is not None
                    else ids.with_columns(pl.lit(None, pl.Int64).alias("record_id")).clear())
        if dup_in_file.height == 0 and in_store.height == 0:
            return df, none
        msgs = pl.concat([
            dup_in_file.select("row", pl.format("source id '{}' appears earlier in this file; ids must be unique",
                                                pl.col("source_id")).alias("message")),
            in_store.select("row", pl.format("source id '{}' is already in dataset as record {}; drop the row or "
                                             "ingest into a new dataset", pl.col("source_id"),
                                             pl.col("record_id")).alias("message")),
        ]).unique("row", keep="first")
        df = df.with_columns(pl.when(pl.col("row").is_in(msgs["row"].implode())).then(pl.lit("unique"))
                             .otherwise(pl.col("rule")).alias("rule"))
        return df, msgs


def write_quarantine(cur: duckdb.DuckDBPyConnection, ingest_id: int, dataset: str, file: str, rows: pl.DataFrame) -> None:
    cur.register("_q", rows.select("row", "field", "rule", "message", "raw"))
    cur.execute("INSERT INTO store.quarantine SELECT ?, ?, ?, row, field, rule, message, raw, ? FROM _q",
                [ingest_id, dataset, file, now()])
    cur.unregister("_q")


READER_RULES = ("row_shape", "valid_utf8")


def _fix_csv_rows(cur: duckdb.DuckDBPyConnection, ingest_id: int) -> None:
    """CSV rows the reader accepted were numbered by their order among accepted rows (the reader reports its
    rejects only at the end); renumber them, and their contract violations, around the rejected rows."""
    rejected = [r[0] for r in cur.execute(
        f"SELECT row FROM store.quarantine WHERE ingest_id = ? AND rule IN {READER_RULES} ORDER BY row",
        [ingest_id]).fetchall()]
    if not rejected:
        return
    for table, key, extra in (("store.records", "source_row", ""),
                              ("store.quarantine", "row", f" AND rule NOT IN {READER_RULES}")):
        ords = cur.sql(f"SELECT DISTINCT {key} AS k FROM {table} WHERE ingest_id = ?{extra}",
                       params=[ingest_id]).pl()
        if ords.height == 0:
            continue
        cur.register("_map", ords.with_columns(_remap_csv_rows(ords["k"], rejected).alias("new")))
        cur.execute(f"UPDATE {table} SET {key} = m.new FROM _map m WHERE {table}.ingest_id = ? "
                    f"AND {table}.{key} = m.k{extra}", [ingest_id])
        cur.unregister("_map")
