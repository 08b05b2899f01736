"""Weak supervision at the store's edge: apply LFs, import external votes, fit a label model, report on LFs.

Tables (curation/schema.py): lf_sets, lfs, votes (sparse: abstains are not stored), label_models, weak_labels.
Views for SQL users: `votes`, `weak_labels`, `lfs`, `label_models`.

- LFs see RECORD_COLUMNS. On an instruction dataset (`datasets.task = 'instruction'`) the records come from the
  view `main.instructions`: `text` and `prompt` are the prompt, `response` the latest accepted revision of the
  last assistant turn; its label set is `keep,drop` unless it declares one. A new revision re-applies the set.
- An LF set's id is `<dataset>/<version>`; the version hashes the LF definitions (`lfs:<hash>`) or the imported
  file and its mapping (`import:<hash>`). Applying an unchanged set to unchanged records is a no-op.
- The label model fits on the `train` rows of the dataset's current split (all rows when there is no split)
  and predicts every record. Ties are broken by the chosen policy; the `hash` policy keys each row by its
  position (in record_id order) within its split — Snorkel's and WRENCH's rule applied per split, so a dataset
  ingested in WRENCH's order reproduces WRENCH's figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.errors import InputError, NotFound
from curation.splits import current_split_id
from curation.store import Store, dataset_task, now
from labeling import analysis
from labeling import label_model as lm
from labeling.lfs import (
    ABSTAIN,
    INSTRUCTION_LABELS,
    LF,
    RECORD_COLUMNS,
    RegexLF,
    label_matrix,
    lf_set_version,
    load_lfs,
    resolve_label,
)

log = logging.getLogger(__name__)

VOTE_FORMATS = ("long", "wrench")


def dataset_labels(store: Store, dataset: str) -> list[str]:
    """The dataset's label set; an instruction dataset that declares none has `keep,drop`."""
    labels = store.dataset(dataset)["labels"]
    if not labels and dataset_task(store, dataset) == "instruction":
        return list(INSTRUCTION_LABELS)
    return labels


def records_relation(dataset: str, task: str = "classification") -> str:
    """The SELECT over RECORD_COLUMNS an LF set is applied to. Instruction datasets read `main.instructions`
    (the latest accepted revision of each response); classification datasets have `prompt` = text and no
    response."""
    name = dataset.replace(chr(39), chr(39) * 2)
    if task == "instruction":
        cols = ", ".join("prompt AS text" if c == "text" else f'"{c}"' for c in RECORD_COLUMNS)
        return f"SELECT {cols} FROM main.instructions WHERE dataset = '{name}'"
    cols = ", ".join('text AS prompt' if c == "prompt" else "NULL::VARCHAR AS response" if c == "response"
                     else f'"{c}"' for c in RECORD_COLUMNS)
    return f"SELECT {cols} FROM store.records WHERE dataset = '{name}'"


def _data_state(store: Store, dataset: str, task: str) -> str | None:
    """What besides the record span changes what LFs see: accepted revisions of an instruction dataset."""
    if task != "instruction":
        return None
    n, last = store.query("SELECT count(*), max(v.created_at) FROM store.revisions v JOIN store.records r "
                          "USING (record_id) WHERE r.dataset = ? AND v.status = 'accepted'", [dataset])[0]
    return f"revisions:{n}:{last}"


def _record_span(store: Store, dataset: str) -> tuple[int, int]:
    n, mx = store.query("SELECT count(*), coalesce(max(record_id), 0) FROM store.records WHERE dataset = ?",
                        [dataset])[0]
    return int(n), int(mx)


def _write_votes(cur: Any, lf_set_id: str, record_ids: np.ndarray, L: np.ndarray) -> int:
    rows, cols = np.nonzero(L != ABSTAIN)
    frame = pl.DataFrame({"record_id": record_ids[rows].astype(np.int64), "lf_index": cols.astype(np.int32),
                          "vote": L[rows, cols].astype(np.int16)})
    cur.execute("DELETE FROM store.votes WHERE lf_set_id = ?", [lf_set_id])
    cur.register("new_votes", frame)
    cur.execute("INSERT INTO store.votes SELECT ?, record_id, lf_index, vote FROM new_votes", [lf_set_id])
    cur.unregister("new_votes")
    return len(rows)


def _save_lf_set(cur: Any, lf_set_id: str, dataset: str, source: str, version: str, kind: str, n: int, mx: int,
                 result: dict, lf_rows: list[tuple]) -> None:
    ts = now()
    cur.execute("DELETE FROM store.lfs WHERE lf_set_id = ?", [lf_set_id])
    cur.execute("DELETE FROM store.lf_sets WHERE lf_set_id = ?", [lf_set_id])
    cur.execute("INSERT INTO store.lf_sets (lf_set_id, dataset, source, created_at, version, kind, n_records, "
                "max_record_id, result, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [lf_set_id, dataset, source, ts, version, kind, n, mx, json.dumps(result, default=str), ts])
    cur.executemany("INSERT INTO store.lfs (lf_set_id, lf_index, name, kind, label, definition, engine, "
                    "declared_at, fired, faults) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", lf_rows)


def _unchanged(store: Store, lf_set_id: str, n: int, mx: int, state: str | None = None) -> dict | None:
    row = store.query("SELECT n_records, max_record_id, result FROM store.lf_sets WHERE lf_set_id = ?",
                      [lf_set_id])
    if row and row[0][0] == n and row[0][1] == mx:
        prev = json.loads(row[0][2]) if row[0][2] else {}
        if prev.get("data_state") == state:
            return prev
    return None


# -- apply ----------------------------------------------------------------------------------------------
def apply_lfs(store: Store, dataset: str, lfs: str | Path | Sequence[LF], *, fault_tolerant: bool = False,
              force: bool = False, batch_size: int = 20_000,
              progress: Callable[[int], None] | None = None, engine: Any = None) -> dict:
    """Apply an LF file (or a list of LFs) to every record of `dataset` and store the sparse votes.
    `engine`: None / 'local' in-process, 'ray' (or an `Engine`) per block on Ray; the votes are the same.

    Returns a dict: lf_set_id, version, status ('applied' | 'unchanged'), records, votes, and per LF its
    engine, records fired on and faults. Re-applying an unchanged set to unchanged records does nothing.
    """
    task = dataset_task(store, dataset)
    labels = dataset_labels(store, dataset)
    if len(labels) < 2:
        raise InputError(f"dataset {dataset!r} declares labels {labels}; LFs need a label set of 2 or more "
                         "(ingest with --labels)")
    source = str(lfs) if isinstance(lfs, (str, Path)) else "<python>"
    lf_list = (load_lfs(lfs, max_bytes=store.settings.lf_file_max_bytes,
                        regex_timeout_s=store.settings.lf_regex_timeout_s)
               if isinstance(lfs, (str, Path)) else list(lfs))
    if task != "instruction":
        on_response = [lf.name for lf in lf_list if isinstance(lf, RegexLF) and lf.field == "response"]
        if on_response:
            raise InputError(f"LFs {', '.join(on_response)} read field `response`, but dataset {dataset!r} is a "
                             f"{task} dataset (only instruction datasets have responses); use field `text`")
    version = lf_set_version(lf_list)
    lf_set_id = f"{dataset}/{version}"
    n, mx = _record_span(store, dataset)
    state = _data_state(store, dataset, task)
    if not force and (prev := _unchanged(store, lf_set_id, n, mx, state)) is not None:
        log.info("LF set %s already applied to the same %d records: nothing to do", lf_set_id, n)
        return prev | {"status": "unchanged"}
    res = label_matrix(store.con, records_relation(dataset, task), lf_list, labels, fault_tolerant=fault_tolerant,
                       batch_size=batch_size, progress=progress, engine=engine)
    result = {
        "dataset": dataset, "task": task, "labels": labels, "lf_set_id": lf_set_id, "version": version,
        "source": source, "status": "applied", **({"data_state": state} if state else {}),
        "records": len(res.record_ids), "lfs": res.lf_summary(),
        "coverage": float((res.L != ABSTAIN).any(axis=1).mean()) if len(res.record_ids) else 0.0,
        "faults": int(sum(res.faults)), "fault_examples": res.fault_examples,
        "seconds": {k: round(v, 4) for k, v in res.seconds.items()},
    }
    lf_rows = []
    for j, lf in enumerate(lf_list):
        label = None if lf.label is None else labels[resolve_label(lf.name, lf.label, labels)]
        lf_rows.append((lf_set_id, j, lf.name, lf.kind, label, json.dumps(lf.definition(), default=str),
                        res.engines[j], lf.declared_at, res.fired[j], res.faults[j]))
    with store.transaction() as cur:
        result["votes"] = _write_votes(cur, lf_set_id, res.record_ids, res.L)
        _save_lf_set(cur, lf_set_id, dataset, source, version, "lfs", n, mx, result, lf_rows)
    return result


# -- import ---------------------------------------------------------------------------------------------
def _vote_index(values: pl.Series, labels: Sequence[str], where: str) -> np.ndarray:
    """Votes given as label names or indexes (-1 / empty = abstain) → indexes."""
    out = np.full(len(values), ABSTAIN, dtype=np.int16)
    for i, v in enumerate(values.to_list()):
        if v is None or (isinstance(v, str) and v.strip() in ("", "-1")) or v == -1:
            continue
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v.strip())
        if isinstance(v, (int, np.integer)) and 0 <= int(v) < len(labels):
            out[i] = int(v)
        elif isinstance(v, str) and v in labels:
            out[i] = labels.index(v)
        else:
            raise InputError(f"{where} row {i + 1}, field `vote`: {v!r} is not a label of {list(labels)}, an "
                             f"index 0..{len(labels) - 1}, or -1 (abstain)")
    return out


def _read_long(path: Path) -> pl.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema_length=0)  # all strings: ids and votes are parsed below


def _read_wrench(path: Path, id_prefix: str) -> tuple[list[str], list[list[int]]]:
    """WRENCH JSON ({key: {"data", "label", "weak_labels"}}) or JSON lines with `weak_labels` (and `id`)."""
    text = path.read_text(encoding="utf-8")
    ids, votes = [], []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        items = list(obj.items())
    else:
        items = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path} line {i + 1}: not JSON ({e.msg}); WRENCH files are JSON or JSON lines")
            items.append((str(row.get("id", i)), row))
    for key, row in items:
        if not isinstance(row, dict) or "weak_labels" not in row:
            raise InputError(f"{path}, record {key}: no `weak_labels` field (WRENCH format)")
        ids.append(f"{id_prefix}{key}")
        votes.append(row["weak_labels"])
    return ids, votes


def import_votes(store: Store, file: str | Path, dataset: str, *, fmt: str | None = None, id_prefix: str = "",
                 lf_names: Sequence[str] | None = None, force: bool = False) -> dict:
    """Import votes produced elsewhere as an LF set of kind 'import'.

    - `long` (CSV or Parquet): columns `record_id` or `source_id` (or `record`: matched as a record_id when
      it is an integer of this dataset, else as a source_id), `lf`, `vote` (label name, index, or -1).
    - `wrench`: WRENCH JSON (`{key: {..., "weak_labels": [...]}}`) or JSON lines with `weak_labels`; rows are
      matched on `source_id = id_prefix + key` (the `id` field for JSON lines: our WRENCH copy's ids are
      'train:0', ... so no prefix is needed; for WRENCH's own train.json pass `--id-prefix train:`).
    Unmatched rows are counted and reported; none matched is an error.
    """
    path = Path(file)
    if not path.is_file():
        raise InputError(f"{path}: no such votes file")
    ds = store.dataset(dataset)
    labels = ds["labels"]
    fmt = fmt or ("wrench" if path.suffix.lower() in (".json", ".jsonl") else "long")
    if fmt not in VOTE_FORMATS:
        raise InputError(f"votes format {fmt!r} unknown; valid: {', '.join(VOTE_FORMATS)}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    version = "import:" + hashlib.sha256(
        json.dumps([digest, fmt, id_prefix, list(lf_names or [])]).encode()).hexdigest()[:16]
    lf_set_id = f"{dataset}/{version}"
    n, mx = _record_span(store, dataset)
    if not force and (prev := _unchanged(store, lf_set_id, n, mx)) is not None:
        return prev | {"status": "unchanged"}
    recs = store.frame("SELECT record_id, source_id FROM store.records WHERE dataset = ? ORDER BY record_id",
                       [dataset])
    by_source = dict(zip(recs["source_id"].to_list(), recs["record_id"].to_list()))
    known_ids = set(recs["record_id"].to_list())
    if fmt == "wrench":
        keys, votes = _read_wrench(path, id_prefix)
        widths = {len(v) for v in votes}
        if len(widths) > 1:
            raise InputError(f"{path}: rows have different numbers of weak labels {sorted(widths)}")
        m = widths.pop() if widths else 0
        names = list(lf_names) if lf_names else [f"{path.stem}_{j}" for j in range(m)]
        if len(names) != m:
            raise InputError(f"{len(names)} LF names given for {m} weak-label columns in {path}")
        matched = [(by_source.get(k), v) for k, v in zip(keys, votes)]
        unmatched = [k for k, (rid, _) in zip(keys, matched) if rid is None]
        pairs = [(rid, v) for rid, v in matched if rid is not None]
        W = np.asarray([v for _, v in pairs], dtype=np.int64).reshape(len(pairs), m)
        bad = np.argwhere((W < -1) | (W >= len(labels)))
        if len(bad):
            i, j = bad[0]
            raise InputError(f"{path}, record {pairs[i][0]}, weak label {j}: {W[i, j]} is outside -1..{len(labels) - 1}")
        ids = np.asarray([rid for rid, _ in pairs], dtype=np.int64)
        rows, cols = np.nonzero(W != ABSTAIN)
        long = pl.DataFrame({"record_id": ids[rows], "lf_index": cols.astype(np.int32),
                             "vote": W[rows, cols].astype(np.int16)})
        n_in = len(keys)
    else:
        df = _read_long(path)
        missing = [c for c in ("lf", "vote") if c not in df.columns]
        key_col = next((c for c in ("record_id", "source_id", "record") if c in df.columns), None)
        if missing or key_col is None:
            raise InputError(f"{path}: a long votes table needs columns record_id or source_id, lf, vote; "
                             f"has {df.columns}")
        vote = _vote_index(df["vote"], labels, str(path))
        keys = df[key_col].cast(pl.Utf8).to_list()
        rid_of: list[int | None] = []
        for k in keys:
            if key_col == "source_id":
                rid_of.append(by_source.get(k))
            else:
                rid = int(k) if k is not None and k.strip().isdigit() and int(k) in known_ids else None
                rid_of.append(rid if rid is not None or key_col == "record_id" else by_source.get(k))
        unmatched = [k for k, r in zip(keys, rid_of) if r is None]
        names = list(dict.fromkeys(df["lf"].cast(pl.Utf8).to_list()))
        j_of = {nm: j for j, nm in enumerate(names)}
        long = pl.DataFrame({"record_id": rid_of, "lf_index": [j_of[x] for x in df["lf"].cast(pl.Utf8).to_list()],
                             "vote": vote}, schema={"record_id": pl.Int64, "lf_index": pl.Int32, "vote": pl.Int16})
        long = long.filter(pl.col("record_id").is_not_null() & (pl.col("vote") != ABSTAIN))
        dup = long.group_by("record_id", "lf_index").len().filter(pl.col("len") > 1)
        if dup.height:
            r = dup.row(0, named=True)
            raise InputError(f"{path}: record {r['record_id']} has {r['len']} votes from LF {names[r['lf_index']]!r}; "
                             "give one vote per record and LF")
        n_in = df.height
        m = len(names)
    if n_in and len(unmatched) == n_in:
        raise InputError(f"{path}: none of the {n_in} rows matches a record of {dataset!r} (e.g. id "
                         f"{unmatched[0]!r}); match on record_id or source_id, or set --id-prefix")
    fired = long.group_by("lf_index").len()
    fired_of = dict(zip(fired["lf_index"].to_list(), fired["len"].to_list()))
    result = {"dataset": dataset, "lf_set_id": lf_set_id, "version": version, "source": str(path),
              "format": fmt, "status": "imported", "rows_read": n_in, "unmatched": len(unmatched),
              "unmatched_examples": unmatched[:5], "votes": long.height, "lfs": names}
    lf_rows = []
    for j, nm in enumerate(names):
        pol = long.filter(pl.col("lf_index") == j)["vote"].unique().sort().to_list()
        lf_rows.append((lf_set_id, j, nm, "import", labels[pol[0]] if len(pol) == 1 else None,
                        json.dumps({"file": str(path), "format": fmt, "column": j if fmt == "wrench" else nm}),
                        "import", f"{path}#{nm}", int(fired_of.get(j, 0)), 0))
    with store.transaction() as cur:
        cur.execute("DELETE FROM store.votes WHERE lf_set_id = ?", [lf_set_id])
        cur.register("new_votes", long)
        cur.execute("INSERT INTO store.votes SELECT ?, record_id, lf_index, vote FROM new_votes", [lf_set_id])
        cur.unregister("new_votes")
        _save_lf_set(cur, lf_set_id, dataset, str(path), version, "import", n, mx, result, lf_rows)
    if unmatched:
        log.warning("%s: %d of %d rows matched no record of %s", path, len(unmatched), n_in, dataset)
    return result


# -- reading votes back ---------------------------------------------------------------------------------
def resolve_lf_set(store: Store, dataset: str, lf_set_id: str | None = None) -> str:
    store.dataset(dataset)
    if lf_set_id:
        if "/" not in lf_set_id:
            lf_set_id = f"{dataset}/{lf_set_id}"
        if not store.query("SELECT 1 FROM store.lf_sets WHERE lf_set_id = ? AND dataset = ?", [lf_set_id, dataset]):
            known = [r[0] for r in store.query("SELECT lf_set_id FROM store.lf_sets WHERE dataset = ? ORDER BY "
                                               "applied_at DESC", [dataset])]
            raise NotFound(f"no LF set {lf_set_id!r} for {dataset!r}; known: {', '.join(known) or 'none'}")
        return lf_set_id
    row = store.query("SELECT lf_set_id FROM store.lf_sets WHERE dataset = ? ORDER BY applied_at DESC LIMIT 1",
                      [dataset])
    if not row:
        raise NotFound(f"dataset {dataset!r} has no votes yet: run `curate lf apply --dataset {dataset} --lfs "
                       "FILE` or `curate votes import FILE --dataset ...`")
    return row[0][0]


def load_matrix(store: Store, dataset: str, lf_set_id: str) -> dict:
    """Dense L for every record of the dataset (record_id order), LF names, gold indexes (-1) and splits."""
    labels = dataset_labels(store, dataset)
    lfs = store.frame("SELECT lf_index, name, kind, engine, label, fired, faults, declared_at FROM store.lfs "
                      "WHERE lf_set_id = ? ORDER BY lf_index", [lf_set_id])
    split_id = current_split_id(store, dataset)
    recs = store.frame(
        "SELECT r.record_id, g.label AS gold, s.split FROM store.records r "
        "LEFT JOIN store.gold_labels g USING (record_id) "
        "LEFT JOIN (SELECT record_id, split FROM store.splits WHERE split_id = ?) s USING (record_id) "
        "WHERE r.dataset = ? ORDER BY r.record_id", [split_id, dataset])
    ids = recs["record_id"].to_numpy()
    votes = store.frame("SELECT record_id, lf_index, vote FROM store.votes WHERE lf_set_id = ?", [lf_set_id])
    m = lfs.height
    L = np.full((len(ids), m), ABSTAIN, dtype=np.int16)
    if votes.height:
        pos = np.searchsorted(ids, votes["record_id"].to_numpy())
        ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == votes["record_id"].to_numpy())
        L[pos[ok], votes["lf_index"].to_numpy()[ok]] = votes["vote"].to_numpy()[ok]
    index = {lab: i for i, lab in enumerate(labels)}
    gold = np.asarray([index.get(g, ABSTAIN) if g is not None else ABSTAIN for g in recs["gold"].to_list()],
                      dtype=np.int64)
    return {"record_ids": ids, "L": L, "names": lfs["name"].to_list(), "lfs": lfs, "gold": gold,
            "split": recs["split"].to_list(), "split_id": split_id, "labels": labels}


# -- label model ----------------------------------------------------------------------------------------
def _split_positions(splits: list[str | None]) -> np.ndarray:
    """Each row's position within its split (rows are in record_id order)."""
    seen: dict[str | None, int] = {}
    out = np.empty(len(splits), dtype=np.int64)
    for i, s in enumerate(splits):
        out[i] = seen.get(s, 0)
        seen[s] = out[i] + 1
    return out


MIN_SELECTION_GOLD = 30  # fewer gold rows than this: choosing among label models on them is noise
ABSTAIN_POLICIES = ("leave_out", "model", "tie_break", "prior")
MODEL_CHOICES = ("auto", *lm.LABEL_MODELS)


def _selection_rows(gold: np.ndarray, splits: list[str | None], has_split: bool,
                    min_gold: int) -> tuple[np.ndarray | None, str | None, str | None]:
    """Which gold rows may choose the label model: (mask, source, leakage note), or (None, None, why not).

    With a split: the val rows' gold; else the train rows' gold (the label model never sees gold, so this is
    no fitting leakage, and the end model is judged on val/test). Test gold never chooses. Without a split:
    every gold row — the same rows any later evaluation would use, which the note says."""
    has_gold = gold != ABSTAIN
    if has_split:
        for part in ("val", "train"):
            mask = has_gold & np.asarray([s == part for s in splits])
            if mask.sum() >= min_gold:
                note = None if part == "val" else (
                    "chosen on the train split's gold rows (no val gold): the label model never sees gold, "
                    "but the end model's train rows are the rows that chose its teacher")
                return mask, part, note
        n_test = int((has_gold & np.asarray([s == "test" for s in splits])).sum())
        return None, None, (f"fewer than {min_gold} gold rows on val and on train"
                            + (f" ({n_test} on test, never used to choose)" if n_test else ""))
    if has_gold.sum() >= min_gold:
        return has_gold, "all", ("no split: the gold rows that choose and judge the label model are the rows any later "
                                 "evaluation on this dataset uses, so those figures are optimistic; after "
                                 "`curate split` the val split's gold rows choose instead")
    return None, None, f"{int(has_gold.sum())} gold rows (fewer than {min_gold})"


def _abstain_rows(policy: str, probs: np.ndarray, pred: np.ndarray, covered: np.ndarray, fit_rows: np.ndarray,
                  tie_break: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) for every row after applying the all-abstain policy; labels -1 = no label."""
    uncovered = ~covered
    if policy == "leave_out" or not uncovered.any():
        return probs, np.where(covered | (policy != "leave_out"), pred, ABSTAIN)
    probs = probs.copy()
    k = probs.shape[1]
    if policy == "tie_break":
        probs[uncovered] = 1.0 / k
    elif policy == "prior":  # the class balance the model predicts on the covered rows it was fitted on
        ref = fit_rows & covered
        probs[uncovered] = probs[ref].mean(axis=0) if ref.any() else 1.0 / k
    labels = pred.copy()
    if policy != "model":
        labels[uncovered] = lm.probs_to_labels(probs[uncovered], tie_break, keys=keys[uncovered])
    return probs, labels


def fit_label_model(store: Store, dataset: str, kind: str = "auto", *, lf_set_id: str | None = None,
                    tie_break: str = "hash", include_abstains: bool = False, abstain_policy: str | None = None,
                    seed: int = 0, params: dict | None = None, seeds: Sequence[int] = (0, 1, 2),
                    select_metric: str = "accuracy", min_selection_gold: int = MIN_SELECTION_GOLD) -> dict:
    """Fit the label model on the train rows (all rows without a split) and store weak labels for every record.

    `kind="auto"` (default): with at least `min_selection_gold` gold rows that may choose (`_selection_rows`:
    the val split's, else the train split's, else — without a split — every gold row), fit the candidates of
    `lm.default_candidates` (majority, Dawid–Skene, Snorkel × `seeds` × {uniform, gold-estimated balance}) and
    keep the best on those rows by `select_metric` (ties: the other metric, then the simpler model). Without
    such gold: the majority vote (Snorkel's label model is unstable on small or skewed matrices and the vote
    is within a few points of it where Snorkel works). A named kind is fitted as asked; with gold it is still
    compared with the majority vote and `worse_than_majority` / `warnings` say so when it loses.

    All-abstain rows (`abstain_policy`): `leave_out` (default: probabilities stored, label NULL), `model` (the
    model's own tie-broken prediction; what `include_abstains=True` means), `tie_break` (uniform, then the
    tie-break rule), `prior` (the class balance the model predicts on its covered fit rows).
    Returns model_id, counts, metrics per split (accuracy against gold where it exists) and `selection`.
    """
    if tie_break not in lm.TIE_BREAKS:
        raise InputError(f"tie-break {tie_break!r} unknown; valid: {', '.join(lm.TIE_BREAKS)}")
    if kind not in MODEL_CHOICES:
        raise InputError(f"label model {kind!r} unknown; valid: {', '.join(MODEL_CHOICES)}")
    policy = abstain_policy or ("model" if include_abstains else "leave_out")
    if policy not in ABSTAIN_POLICIES:
        raise InputError(f"all-abstain policy {policy!r} unknown; valid: {', '.join(ABSTAIN_POLICIES)}")
    if select_metric not in lm.SELECT_METRICS:
        raise InputError(f"selection metric {select_metric!r} unknown; valid: {', '.join(lm.SELECT_METRICS)}")
    if kind != "auto":
        lm.get_label_model(kind, **(params or {}))  # bad parameters fail before any work
    lf_set_id = resolve_lf_set(store, dataset, lf_set_id)
    mat = load_matrix(store, dataset, lf_set_id)
    L, labels, splits = mat["L"].astype(np.int64), mat["labels"], mat["split"]
    k = len(labels)
    if L.shape[1] == 0:
        raise InputError(f"LF set {lf_set_id} has no LFs")
    has_split = mat["split_id"] is not None
    fit_rows = np.asarray([s == "train" for s in splits]) if has_split else np.ones(len(splits), bool)
    if not fit_rows.any():
        raise InputError(f"the current split {mat['split_id']} of {dataset!r} has no train rows to fit on")
    keys = _split_positions(splits)
    gold = mat["gold"]
    sel, gold_source, note = _selection_rows(gold, splits, has_split, min_selection_gold)
    selection: dict[str, Any] = {"requested": kind, "metric": select_metric, "gold_source": gold_source,
                                 "gold_rows": int(sel.sum()) if sel is not None else 0}
    warnings: list[str] = []
    if sel is not None:
        selection["leakage"] = note
        cands = (lm.default_candidates(seeds, lm.gold_balance(gold[sel], k)) if kind == "auto" else
                 [{"name": "majority", "kind": "majority", "params": {}, "seed": 0}]
                 + ([] if kind == "majority" else [{"name": kind, "kind": kind, "params": params or {},
                                                    "seed": seed}]))
        model, chosen, report = lm.select_label_model(L[fit_rows], k, cands, L_eval=L[sel], gold_eval=gold[sel],
                                                      keys_eval=keys[sel], tie_break=tie_break,
                                                      metric=select_metric)
        if kind != "auto":  # as asked, whatever the comparison says
            chosen = cands[-1]
            for r in report:
                r["chosen"] = r["name"] == chosen["name"]
            if kind != "majority" and getattr(model, "name", None) != kind:  # the vote won: refit the one asked
                model = lm.get_label_model(kind, **(params or {})).fit(L[fit_rows], k, seed=seed)
        by_name = {r["name"]: r for r in report}
        mine, mv = by_name[chosen["name"]], by_name["majority"]
        worse = mine.get("status") != "ok" or (mine[select_metric] or 0.0) < (mv[select_metric] or 0.0) - 1e-12
        selection |= {"mode": "gold" if kind == "auto" else "forced", "candidates": report,
                      "failed_candidates": sum(r["status"] != "ok" for r in report),
                      "worse_than_majority": bool(worse),
                      "reason": (f"best {select_metric} on {selection['gold_rows']} gold rows ({gold_source}) of "
                                 f"{len(cands)} candidates" if kind == "auto" else
                                 f"--model {kind} forced; scored beside the majority vote on "
                                 f"{selection['gold_rows']} gold rows ({gold_source})")}
        if worse:
            warnings.append(f"the stored label model ({chosen['name']}) is WORSE than the majority vote on "
                            f"{selection['gold_rows']} gold rows ({gold_source}): {select_metric} "
                            f"{mine.get(select_metric, 0) or 0:.3f} vs {mv[select_metric]:.3f}; "
                            "run with --model auto (the default) or --model majority")
        if note:
            warnings.append(note)
    else:
        chosen_kind = "majority" if kind == "auto" else kind
        chosen = {"name": chosen_kind, "kind": chosen_kind, "params": (params or {}) if kind != "auto" else {},
                  "seed": seed if kind != "auto" else 0}
        model = lm.get_label_model(chosen_kind, **chosen["params"]).fit(L[fit_rows], k, seed=chosen["seed"])
        selection |= {"mode": "rule" if kind == "auto" else "forced", "candidates": [],
                      "worse_than_majority": None,
                      "reason": (f"no gold to choose on ({note}; test gold never chooses): the majority vote, "
                                 "the default without gold — Snorkel's label model is unstable on small or skewed "
                                 "matrices, and where it works it is within a few points of the vote (WRENCH "
                                 "YouTube test: 86.4 vs 84.0). Add gold labels to a val split (curate split) to "
                                 "choose among label models on them"
                                 if kind == "auto" else f"--model {kind} as asked; no gold to compare ({note})")}
    selection["chosen"] = chosen["name"]
    kind = chosen["kind"]
    seed, params = chosen["seed"], chosen["params"] or None
    probs = model.predict_proba(L)
    pred = lm.probs_to_labels(probs, tie_break, keys=keys)
    covered = (L != ABSTAIN).any(axis=1)
    probs, stored_label = _abstain_rows(policy, probs, pred, covered, fit_rows, tie_break, keys)
    pred = np.where(covered, pred, np.where(stored_label != ABSTAIN, stored_label, pred))
    metrics = _metrics(pred, stored_label, covered, gold, splits, has_split)
    settings = {"kind": kind, "lf_set_id": lf_set_id, "tie_break": tie_break, "abstain_policy": policy,
                "seed": seed, "params": params or {}, "split_id": mat["split_id"]}
    if policy in ("leave_out", "model"):  # the ids models had before the policies existed
        settings = {k_: v for k_, v in settings.items() if k_ != "abstain_policy"} | {
            "include_abstains": policy == "model"}
    model_id = f"{kind}-" + hashlib.sha256(json.dumps([dataset, settings], sort_keys=True, default=str).encode()
                                           ).hexdigest()[:12]
    conf = probs.max(axis=1)
    frame = pl.DataFrame({
        "record_id": mat["record_ids"].astype(np.int64),
        "probs": pl.Series([row.tolist() for row in probs], dtype=pl.List(pl.Float64)),
        "label": [labels[i] if i != ABSTAIN else None for i in stored_label.tolist()],
        "confidence": np.where(stored_label != ABSTAIN, conf, np.nan),
    }).with_columns(pl.col("confidence").fill_nan(None))
    stored_params = {**settings, **model.params(), "labels": labels, "fit_rows": int(fit_rows.sum()),
                     "fit_on": "train" if has_split else "all", "abstain_policy": policy,
                     "selected_by": selection["mode"]}
    with store.transaction() as cur:
        cur.execute("DELETE FROM store.weak_labels WHERE model_id = ?", [model_id])
        cur.execute("DELETE FROM store.label_models WHERE model_id = ?", [model_id])
        cur.execute("INSERT INTO store.label_models VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [model_id, dataset, lf_set_id, kind, json.dumps(stored_params, default=str),
                     json.dumps(metrics | {"selection": selection}, default=str), now()])
        cur.register("new_weak", frame)
        cur.execute("INSERT INTO store.weak_labels SELECT ?, record_id, probs, label, confidence FROM new_weak",
                    [model_id])
        cur.unregister("new_weak")
    for w in warnings:
        log.warning("%s: %s", dataset, w)
    return {"dataset": dataset, "model_id": model_id, "kind": kind, "lf_set_id": lf_set_id, "tie_break": tie_break,
            "abstain_policy": policy, "fit_on": stored_params["fit_on"], "fit_rows": stored_params["fit_rows"],
            "records": len(pred), "labeled": int((stored_label != ABSTAIN).sum()),
            "unlabeled_all_abstain": int(((~covered) & (stored_label == ABSTAIN)).sum()),
            "all_abstain": int((~covered).sum()), "metrics": metrics, "selection": selection,
            "worse_than_majority": selection["worse_than_majority"], "warnings": warnings}


def _metrics(pred: np.ndarray, stored: np.ndarray, covered: np.ndarray, gold: np.ndarray,
             splits: list[str | None], has_split: bool) -> dict:
    """Per split: rows, coverage, and against gold: `accuracy` over every gold row (all-abstain rows take the
    model's tie-broken prediction: WRENCH's convention, comparable to published figures) and
    `accuracy_labeled` over the gold rows that got a stored label."""
    groups: dict[str, np.ndarray] = {"all": np.ones(len(pred), bool)}
    if has_split:
        for s in sorted({s for s in splits if s is not None}):
            groups[s] = np.asarray([x == s for x in splits])
    out = {}
    for name, sel in groups.items():
        g = sel & (gold != ABSTAIN)
        gl = g & (stored != ABSTAIN)
        out[name] = {"rows": int(sel.sum()), "coverage": float(covered[sel].mean()) if sel.any() else 0.0,
                     "gold_rows": int(g.sum()), "accuracy": lm.accuracy(pred[g], gold[g]),
                     "accuracy_labeled": lm.accuracy(stored[gl], gold[gl])}
    return out


# -- report ---------------------------------------------------------------------------------------------
def lf_report(store: Store, dataset: str, *, lf_set_id: str | None = None, split: str | None = None,
              png: str | Path | None = None) -> dict:
    """Per-LF polarity, coverage, overlaps, conflicts and empirical accuracy on gold rows; the set's coverage."""
    lf_set_id = resolve_lf_set(store, dataset, lf_set_id)
    mat = load_matrix(store, dataset, lf_set_id)
    sel = np.ones(len(mat["record_ids"]), bool)
    if split:
        if mat["split_id"] is None:
            raise InputError(f"--split {split}: dataset {dataset!r} has no current split")
        sel = np.asarray([s == split for s in mat["split"]])
    gold = mat["gold"][sel]
    stats = analysis.lf_stats(mat["L"][sel], mat["names"], mat["labels"],
                              gold if (gold != ABSTAIN).any() else None)
    meta = {r["lf_index"]: r for r in mat["lfs"].iter_rows(named=True)}
    for row in stats["lfs"]:
        info = meta[row["j"]]
        row |= {"kind": info["kind"], "engine": info["engine"], "faults": info["faults"],
                "declared_at": info["declared_at"]}
    out = {"dataset": dataset, "lf_set_id": lf_set_id, "split": split or "all", **stats}
    if png:
        out["png"] = str(analysis.plot_report(stats, png, title=f"{dataset} {split or ''}".strip()))
    return out
