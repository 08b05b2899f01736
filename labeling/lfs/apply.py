"""Applying LFs: the planner (which LF runs in DuckDB and which in Python), the compiler of keyword, regex and SQL
LFs into one vectorised DuckDB query, and the batched Python runner with per-LF fault counts.

Keyword, regex and SQL LFs compile into ONE vectorised DuckDB query; a regex is translated to RE2 with Python's
meaning (`labeling.lfs.regex`). A regex RE2 cannot express faithfully runs in Python
(`engine="auto"`, the default; the apply result says which and why) or is refused (`engine="sql"`).

The records relation gives RECORD_COLUMNS; one without `prompt`/`response` (a classification dataset, or an older
caller's relation) gets `prompt` = text and `response` = NULL (`with_text_fields`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curation.errors import CurateError
from labeling.lfs.kinds import (
    ABSTAIN,
    LF,
    RECORD_COLUMNS,
    LFDefinitionError,
    PythonLF,
    RegexLF,
    SqlLF,
    check_names,
    resolve_label,
)
from labeling.lfs.regex import Untranslatable, translate_regex_fast

log = logging.getLogger(__name__)


class LFRuntimeError(CurateError):
    """A Python LF raised (or returned a bad value) on a record, and the run is not fault-tolerant."""

    exit_code = 1


# -- compiling to one DuckDB query ----------------------------------------------------------------------
def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def regex_sql(pattern: str, flags: int = 0, column: str = "text") -> str:
    r"""The DuckDB boolean expression for `re.search(pattern, column, flags) is not None`. Raises Untranslatable.

    The empty text is decided in Python once (RE2 and Python disagree there, e.g. `\B` matches '' in RE2 only).
    """
    full, fast, rare = translate_regex_fast(pattern, flags)
    cond = f"regexp_matches({column}, {_sql_str(full)})"
    if rare:
        has_rare = " OR ".join(f"contains({column}, {_sql_str(chr(c))})" for c in sorted(rare))
        cond = f"(regexp_matches({column}, {_sql_str(fast)}) OR (({has_rare}) AND {cond}))"
    if re.search(pattern, "", flags) is not None:
        return f"({column} = '' OR {cond})"
    return f"({column} <> '' AND {cond})"


@dataclasses.dataclass
class Plan:
    """How each LF runs: `engines[j]` is 'sql' or 'python'; `reasons[j]` why a regex/keyword LF runs in Python."""

    lfs: list[LF]
    label_idx: list[int | None]
    engines: list[str]
    reasons: list[str | None]
    sql_exprs: dict[int, str]


def plan(lfs: Sequence[LF], labels: Sequence[str]) -> Plan:
    check_names(lfs)
    label_idx: list[int | None] = []
    engines, reasons, exprs = [], [], {}
    translating = 0.0  # seconds spent translating the regexes of guarded LFs (bounded: an upload cannot burn CPU)
    for j, lf in enumerate(lfs):
        label_idx.append(None if (isinstance(lf, PythonLF) and lf.label is None)
                         else resolve_label(lf.name, lf.label, labels))
        if isinstance(lf, SqlLF):
            engines.append("sql"), reasons.append(None)
            exprs[j] = f"CASE WHEN ({lf.expr}) THEN {label_idx[j]} ELSE -1 END"
        elif isinstance(lf, RegexLF):
            if lf.engine == "python":
                engines.append("python"), reasons.append("engine='python' requested")
                continue
            t0 = time.perf_counter()
            try:
                cond, why = regex_sql(lf.pattern, lf.flags, column=f'"{lf.field}"'), None
            except Untranslatable as e:
                cond, why = None, str(e)
            if lf.timeout_s is not None:
                translating += time.perf_counter() - t0
                if translating > lf.timeout_s:
                    raise LFDefinitionError(f"LF {lf.name!r}: translating the file's regexes took over "
                                            f"{lf.timeout_s:g} s (CURATE_LF_REGEX_TIMEOUT_S); use fewer or simpler "
                                            "patterns")
            if cond is None:
                if lf.engine == "sql":
                    raise LFDefinitionError(f"LF {lf.name!r}: pattern {lf.pattern!r} cannot run in DuckDB with "
                                            f"Python's meaning: {why}. Use engine='auto' to run it in Python.")
                log.info("LF %s runs in Python: %s", lf.name, why)
                engines.append("python"), reasons.append(why)
                continue
            if lf.negate:
                cond = f"NOT {cond}"
            engines.append("sql"), reasons.append(None)
            exprs[j] = f"CASE WHEN {cond} THEN {label_idx[j]} ELSE -1 END"
        elif isinstance(lf, PythonLF):
            engines.append("python"), reasons.append(None)
        else:
            raise LFDefinitionError(f"LF {lf.name!r}: unknown kind {type(lf).__name__}")
    return Plan(list(lfs), label_idx, engines, reasons, exprs)


def check_sql_exprs(cur: Any, p: Plan, relation: str) -> None:
    """Each SQL LF must be one boolean expression that DuckDB binds over the record columns."""
    import duckdb

    from curation.errors import SqlRefused
    from curation.sql import check_expression

    for j, lf in enumerate(p.lfs):
        if not isinstance(lf, SqlLF):
            continue
        try:  # DuckDB's own parse, the same positive lists as user SQL, and no tables at all
            check_expression(lf.expr, RECORD_COLUMNS)
        except SqlRefused as e:
            why = str(e).removeprefix("refused: ")
            if "subquery" in why or "table reference" in why:
                raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} has a subquery or table reference; an "
                                        f"SQL LF sees one record's columns ({', '.join(RECORD_COLUMNS)}) and never "
                                        "other tables (gold labels)") from None
            if why.startswith("column"):
                raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} does not run over the records: "
                                        f"{why}") from None
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} must be one boolean expression over one "
                                    f"record: {why}") from None
        try:
            cur.execute(f"SELECT ({lf.expr})::BOOLEAN FROM ({relation}) LIMIT 0").fetchall()
        except duckdb.Error as e:
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} does not run over the records: "
                                    f"{str(e).splitlines()[0]}. Columns: {', '.join(RECORD_COLUMNS)}") from None


def compiled_query(p: Plan, relation: str) -> str:
    """One SELECT computing every SQL-engine LF's vote column (c0, c1, ...) per record, ordered by record_id."""
    cols = [f"{e}::SMALLINT AS c{j}" for j, e in p.sql_exprs.items()]
    return f"SELECT record_id, {', '.join(cols) or 'NULL AS none'} FROM ({relation}) ORDER BY record_id"


# -- Python rows ----------------------------------------------------------------------------------------
class Row:
    """What a Python LF sees: record columns as attributes; `meta` parsed; unknown attributes read meta keys."""

    __slots__ = ("_meta", "group", "input_hash", "origin", "parent_id", "prompt", "record_id", "response",
                 "source_id", "text")

    def __init__(self, **cols: Any):
        for k in self.__slots__:
            object.__setattr__(self, k, cols.get(k.lstrip("_") if k == "_meta" else k))

    @property
    def meta(self) -> dict:
        m = self._meta
        if isinstance(m, str):
            m = json.loads(m)
            object.__setattr__(self, "_meta", m)
        return m or {}

    def __getattr__(self, key: str) -> Any:
        meta = self.meta
        if key in meta:
            return meta[key]
        raise AttributeError(f"record {self.record_id} has no field {key!r}; fields: "
                             f"{', '.join(c for c in RECORD_COLUMNS)}, meta keys: {', '.join(meta) or 'none'}")

    def __getitem__(self, key: str) -> Any:
        return getattr(self, "_meta" if key == "meta" else key) if key in RECORD_COLUMNS else self.meta[key]

    def __repr__(self) -> str:
        resp = "" if self.response is None else f", response={self.response!r:.60}"
        return f"Row(record_id={self.record_id}, text={self.text!r:.60}{resp})"


@dataclasses.dataclass
class MatrixResult:
    """The label matrix and how it was made. `L[i, j]` is LF j's vote on `record_ids[i]` (-1 = abstain)."""

    record_ids: np.ndarray
    L: np.ndarray
    names: list[str]
    engines: list[str]
    reasons: list[str | None]
    fired: list[int]
    faults: list[int]
    fault_examples: dict[str, str]
    seconds: dict[str, float]

    def lf_summary(self) -> list[dict]:
        return [{"lf": n, "engine": e, "fired": f, "faults": fa, **({"why_python": r} if r else {})}
                for n, e, r, f, fa in zip(self.names, self.engines, self.reasons, self.fired, self.faults)]


def _python_vote(lf: PythonLF, fixed: int | None, value: Any, labels: Sequence[str]) -> int:
    if fixed is not None:
        return fixed if value else ABSTAIN
    if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == ABSTAIN):
        return ABSTAIN
    return resolve_label(lf.name, value, labels)


def run_python(lf: LF, fixed: int | None, rows: list[Row], labels: Sequence[str], *, fault_tolerant: bool,
               faults: list[int], j: int, examples: dict[str, str]) -> np.ndarray:
    """One LF over a batch of rows. A raise is counted (fault-tolerant) or stops the run naming LF and record."""
    out = np.full(len(rows), ABSTAIN, dtype=np.int16)
    is_regex = isinstance(lf, RegexLF)
    if is_regex and lf.timeout_s is not None:  # type: ignore[union-attr]
        return _run_guarded(lf, fixed, rows)  # type: ignore[arg-type]
    for i, x in enumerate(rows):
        try:
            if is_regex:
                out[i] = fixed if lf.fires(getattr(x, lf.field)) else ABSTAIN  # type: ignore[union-attr]
            else:
                out[i] = _python_vote(lf, fixed, lf(x), labels)  # type: ignore[operator]
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            if not fault_tolerant:
                raise LFRuntimeError(f"LF {lf.name!r} failed on record {x.record_id} ({x.text!r:.80}): {msg}. "
                                     "Fix the LF, or pass --fault-tolerant to count such failures as "
                                     "abstains.") from e
            faults[j] += 1
            examples.setdefault(lf.name, f"record {x.record_id}: {msg}")
    return out


def _run_guarded(lf: RegexLF, fixed: int | None, rows: list[Row]) -> np.ndarray:
    """A regex LF from an uploaded file on the Python path: in a killable worker, under its time budget."""
    from labeling.lfs.guard import RegexTimeout, search_in_worker

    try:
        hits = search_in_worker(lf.pattern, lf.flags, [getattr(x, lf.field) for x in rows], lf.timeout_s or 0)
    except RegexTimeout as e:
        first = rows[0].record_id if rows else None
        raise LFRuntimeError(f"LF {lf.name!r}: its regex {lf.pattern!r:.80} {e} (records from {first}): Python's "
                             "engine backtracks on it. Rewrite it so it runs in DuckDB (no lookaround or "
                             "backreference), or raise CURATE_LF_REGEX_TIMEOUT_S") from None
    fires = (hits == 0) if lf.negate else (hits == 1)  # a missing field (-1) abstains either way
    return np.where(fires, fixed, ABSTAIN).astype(np.int16)


def with_text_fields(cur: Any, relation: str) -> str:
    """`relation` with the `prompt` and `response` columns: added as `text` and NULL where it lacks them."""
    cur.execute(f"SELECT * FROM ({relation}) LIMIT 0")
    have = {d[0] for d in cur.description}
    cur.fetchall()  # a pending result would block the next query on this cursor
    extra = [x for x, present in (("text AS prompt", "prompt" in have),
                                  ("NULL::VARCHAR AS response", "response" in have)) if not present]
    return f"SELECT *, {', '.join(extra)} FROM ({relation})" if extra else relation


def label_matrix(con: Any, relation: str, lfs: Sequence[LF], labels: Sequence[str], *,
                 fault_tolerant: bool = False, batch_size: int = 20_000,
                 progress: Callable[[int], None] | None = None, engine: Any = None) -> MatrixResult:
    """Apply LFs to the records `relation` (a SELECT over RECORD_COLUMNS; `prompt`/`response` may be missing,
    see `with_text_fields`) on a DuckDB connection.

    SQL-engine LFs run as one vectorised query; the rest stream through Python in batches of `batch_size`.
    Returns the dense matrix (rows ordered by record_id, int16, -1 = abstain). `engine` ('ray' or a
    `curation.engine.Engine`): this same function runs per block of a Parquet snapshot on Ray.
    """
    if engine is not None and engine != "local":
        from labeling.lfs.distributed import ray_label_matrix

        return ray_label_matrix(con, relation, lfs, labels, fault_tolerant=fault_tolerant, batch_size=batch_size,
                                engine=engine, progress=progress)
    p = plan(lfs, labels)
    m = len(lfs)
    times: dict[str, float] = {}
    cur = con.cursor()
    try:
        relation = with_text_fields(cur, relation)
        check_sql_exprs(cur, p, relation)
        t0 = time.perf_counter()
        tbl = cur.sql(compiled_query(p, relation)).to_arrow_table()
        times["sql"] = time.perf_counter() - t0
        ids = tbl.column("record_id").to_numpy()
        n = len(ids)
        L = np.full((n, m), ABSTAIN, dtype=np.int16)
        for j in p.sql_exprs:
            L[:, j] = tbl.column(f"c{j}").to_numpy()
        del tbl
        py = [j for j, e in enumerate(p.engines) if e == "python"]
        faults, examples = [0] * m, {}
        if py:
            t0 = time.perf_counter()
            needs_rows = any(isinstance(lfs[j], PythonLF) for j in py)
            fields = dict.fromkeys(["record_id", "text", *(lfs[j].field for j in py if isinstance(lfs[j], RegexLF))])
            cols = ", ".join(f'"{c}"' for c in (RECORD_COLUMNS if needs_rows else fields))
            reader = cur.sql(f"SELECT {cols} FROM ({relation}) ORDER BY record_id").to_arrow_reader(batch_size)
            start = 0
            for batch in reader:
                d = batch.to_pydict()
                k = batch.num_rows
                rows = [Row(**{c: d[c][i] for c in d}) for i in range(k)]
                if not np.array_equal(np.asarray(d["record_id"]), ids[start:start + k]):
                    raise CurateError("records changed while the LFs ran; run again")
                for j in py:
                    L[start:start + k, j] = run_python(lfs[j], p.label_idx[j], rows, labels,
                                                       fault_tolerant=fault_tolerant, faults=faults, j=j,
                                                       examples=examples)
                start += k
                if progress:
                    progress(k)
            times["python"] = time.perf_counter() - t0
        elif progress:
            progress(n)
    finally:
        cur.close()
    fired = [int(np.count_nonzero(L[:, j] != ABSTAIN)) for j in range(m)]
    return MatrixResult(ids, L, [lf.name for lf in lfs], p.engines, p.reasons, fired, faults, examples, times)
