"""Contamination check: records that share a long token n-gram with an evaluation set.

The method of the GPT-3 (Brown et al. 2020, appendix C) and Llama 2 (Touvron et al. 2023, appendix A.6)
contamination studies: texts are normalised to tokens (lowercase, punctuation stripped, split on whitespace);
a record is contaminated when one of its n-grams (default 13 tokens, as GPT-3) appears in any text of the
evaluation set, and its `overlap` is the share of its tokens covered by such n-grams (Llama 2's measure of how
much of a sample is contaminated). A record's tokens are those of its prompt and its response together; the
fields that matched are named.

Pure core: `tokenize` -> `ngram_hashes` (the rolling k-gram hash of `curation.dedup` over hashed token ids) ->
`eval_ngram_set` (sorted distinct hashes) and `find_contamination` (membership by binary search, coverage by a
difference array). The DuckDB edge is `check_contamination` (stores `store.contamination_checks` and
`store.contamination`); `latest_flags` / `require_uncontaminated` serve the export and the training gate.
"""

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.dedup import kgrams
from curation.errors import InputError, LeakageError
from curation.store import Store, now

log = logging.getLogger(__name__)

DEFAULT_NGRAM = 13
BLOCK_RECORDS = 100_000          # records tokenised and matched at a time (bounds memory)
_TOKEN_SEED = 0x7E57
_PUNCT = r"[^\w\s]"


class ContaminationError(LeakageError):
    """The train split holds records that share an n-gram with an evaluation set."""


# -- pure core ------------------------------------------------------------------------------------------
def normalise_tokens(text: str) -> list[str]:
    """One text's tokens as `tokenize` sees them (lowercase, punctuation stripped, whitespace split)."""
    return re.sub(_PUNCT, "", text.lower()).split()


def tokenize(texts: pl.Series | Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Hashed token ids (uint64, all texts concatenated) and the token count of each text. Null: no tokens."""
    s = texts if isinstance(texts, pl.Series) else pl.Series("t", list(texts), dtype=pl.String)
    clean = s.fill_null("").str.to_lowercase().str.replace_all(_PUNCT, "").str.replace_all(r"\s+", " ")
    words = pl.DataFrame({"w": clean.str.split(" ")}).with_row_index("doc").explode("w").filter(
        pl.col("w").is_not_null() & (pl.col("w") != ""))
    lens = (np.bincount(words["doc"].to_numpy(), minlength=len(s)) if words.height
            else np.zeros(len(s), dtype=np.int64))
    return words["w"].hash(seed=_TOKEN_SEED).to_numpy().astype(np.uint64), lens.astype(np.int64)


def ngram_hashes(tokens: np.ndarray, lens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram of each text (texts shorter than n tokens have none): (hashes, offsets), text i's
    n-grams being hashes[offsets[i]:offsets[i+1]] in token order (n-gram j starts at token j)."""
    lens = np.asarray(lens, dtype=np.int64)
    h, off = kgrams(tokens, lens, n)
    short = (lens > 0) & (lens < n)           # `kgrams` gives these one whole-text shingle: drop it
    if short.any():
        keep = np.ones(len(h), dtype=bool)
        keep[off[:-1][short]] = False
        h = h[keep]
        counts = np.where(lens >= n, lens - n + 1, 0)
        off = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
    return h, off


def eval_ngram_set(texts: pl.Series | Sequence[str | None], n: int = DEFAULT_NGRAM) -> np.ndarray:
    """The sorted distinct n-gram hashes of the evaluation texts."""
    tok, lens = tokenize(texts)
    return np.unique(ngram_hashes(tok, lens, n)[0])


def _member(h: np.ndarray, table: np.ndarray) -> np.ndarray:
    """h in table (sorted distinct): a bitmap over the top hash bits (~32 slots per entry) rules most hashes out
    with one lookup; binary search confirms the rest."""
    if not len(table) or not len(h):
        return np.zeros(len(h), dtype=bool)
    bits = min(28, max(10, int(len(table) * 32).bit_length()))
    shift = np.uint64(64 - bits)
    bitmap = np.zeros(1 << bits, dtype=bool)
    bitmap[(table >> shift).astype(np.intp)] = True
    maybe = np.flatnonzero(bitmap[(h >> shift).astype(np.intp)])
    out = np.zeros(len(h), dtype=bool)
    if len(maybe):
        hm = h[maybe]
        pos = np.searchsorted(table, hm)
        out[maybe] = table[np.minimum(pos, len(table) - 1)] == hm
    return out


@dataclass
class Contamination:
    """Per record: `covered` tokens (in n-grams found in the eval set) of `tokens`, `matches` (matching
    n-grams), `fields` (bit i: field i matched), `first` (field, token index) of the first match or (-1, -1)."""

    tokens: np.ndarray
    covered: np.ndarray
    matches: np.ndarray
    fields: np.ndarray
    first_field: np.ndarray
    first_start: np.ndarray

    @property
    def overlap(self) -> np.ndarray:
        return np.divide(self.covered, self.tokens, out=np.zeros(len(self.tokens)), where=self.tokens > 0)


def find_contamination(fields: Mapping[str, pl.Series | Sequence[str | None]], eval_set: np.ndarray,
                       n: int = DEFAULT_NGRAM) -> Contamination:
    """Which records (row i of every field) share an n-gram with `eval_set` (`eval_ngram_set`), and how much
    of each record's tokens (all fields together) such n-grams cover."""
    names = list(fields)
    m = len(next(iter(fields.values()))) if names else 0
    tokens = np.zeros(m, dtype=np.int64)
    covered = np.zeros(m, dtype=np.int64)
    matches = np.zeros(m, dtype=np.int64)
    flags = np.zeros(m, dtype=np.int64)
    first_field = np.full(m, -1, dtype=np.int64)
    first_start = np.full(m, -1, dtype=np.int64)
    for fi, name in enumerate(names):
        tok, lens = tokenize(fields[name])
        if len(lens) != m:
            raise InputError(f"field {name!r} has {len(lens)} values for {m} records")
        tokens += lens
        h, off = ngram_hashes(tok, lens, n)
        hit = _member(h, eval_set)
        if not hit.any():
            continue
        doc = np.repeat(np.arange(m, dtype=np.int64), np.diff(off))
        starts = np.cumsum(lens) - lens
        j = np.flatnonzero(hit)
        gstart = starts[doc[j]] + (j - off[doc[j]])     # global token index of each matching n-gram
        diff = np.zeros(len(tok) + 1, dtype=np.int64)
        np.add.at(diff, gstart, 1)
        np.add.at(diff, gstart + n, -1)
        cov = np.cumsum(diff[:-1]) > 0
        tok_doc = np.repeat(np.arange(m, dtype=np.int64), lens)
        covered += np.bincount(tok_doc[cov], minlength=m)
        matches += np.bincount(doc[j], minlength=m)
        flags[np.unique(doc[j])] |= 1 << fi
        d, first_j = np.unique(doc[j], return_index=True)   # j ascending: the first match of each record
        new = first_field[d] < 0
        first_field[d[new]] = fi
        first_start[d[new]] = (j[first_j] - off[d])[new]
    return Contamination(tokens, covered, matches, flags, first_field, first_start)


# -- reading an evaluation file -------------------------------------------------------------------------
def eval_texts(source: str | Path | Any, *, fmt: str = "auto", text_field: str = "text",
               file_format: str | None = None) -> tuple[list[str], dict]:
    """The prompts and responses (every turn's content) of an evaluation file in any ingest format — an
    instruction layout (chat, alpaca, sharegpt, prompt-completion, dolly) or a classification file with a
    `text_field` column. Returns (texts, counts: rows, texts, unreadable rows, layout)."""
    from curation.instructions import FORMATS, detect_format, read_rows, to_messages

    name, ffmt, rows = read_rows(source, file_format=file_format)
    rows = list(rows)
    good = [r for r in rows if r.error is None]
    if not good:
        raise InputError(f"{name}: no readable rows ({len(rows)} rows, all rejected); check the file")
    layout = fmt
    if fmt == "auto":
        first = [r.obj for r in good[:20]]
        if all(isinstance(o, dict) and isinstance(o.get(text_field), str) for o in first):
            layout = "text"
        else:
            layout = detect_format(first)
    elif fmt not in (*FORMATS, "text"):
        raise InputError(f"--format {fmt!r}: unknown; valid: auto, text, {', '.join(FORMATS)}")
    texts: list[str] = []
    bad = len(rows) - len(good)
    for r in good:
        try:
            if layout == "text":
                v = r.obj.get(text_field) if isinstance(r.obj, dict) else None
                if not isinstance(v, str):
                    raise InputError(f"row {r.row}, field {text_field!r}: missing or not text")
                texts.append(v)
            else:
                texts.extend(str(m["content"]) for m in to_messages(r.obj, layout) if m.get("content"))
        except InputError:
            bad += 1
    counts = {"file": name, "file_format": ffmt, "layout": layout, "rows": len(rows), "texts": len(texts),
              "unreadable_rows": bad}
    if bad:
        log.warning("contamination: %d of %d rows of %s could not be read as %s and were skipped", bad, len(rows),
                    name, layout)
    return texts, counts


# -- the store edge -------------------------------------------------------------------------------------
def _record_fields(store: Store, dataset: str) -> tuple[pl.DataFrame, list[str]]:
    store.dataset(dataset)   # NotFound names the known datasets
    task = store.one("SELECT task FROM store.datasets WHERE name = ?", [dataset])
    if task == "instruction":
        df = store.frame("SELECT record_id, source_id, prompt, response FROM main.instructions WHERE dataset = ? "
                         "ORDER BY record_id", [dataset])
        return df, ["prompt", "response"]
    df = store.frame("SELECT record_id, source_id, text FROM store.records WHERE dataset = ? ORDER BY record_id",
                     [dataset])
    return df, ["text"]


def check_contamination(store: Store, dataset: str, against: str | Path | Any, *, ngram: int = DEFAULT_NGRAM,
                        min_overlap: float = 0.0, fmt: str = "auto", text_field: str = "text",
                        block: int = BLOCK_RECORDS, progress: Callable[[int, int], None] | None = None) -> dict:
    """Check every record of `dataset` against the evaluation file `against`; store the check and its flags
    (records with a shared n-gram and `overlap` >= `min_overlap`). Returns {check_id, checked, contaminated,
    records: [{record_id, source_id, overlap, field, matched}], ...}."""
    if not 1 <= ngram <= 64:
        raise InputError(f"--ngram {ngram}: use 1..64 tokens (GPT-3 used 13)")
    if not 0.0 <= min_overlap <= 1.0:
        raise InputError(f"--min-overlap {min_overlap}: use a share in [0, 1]")
    t0 = time.perf_counter()
    texts, eval_counts = eval_texts(against, fmt=fmt, text_field=text_field)
    table = eval_ngram_set(texts, ngram)
    t_eval = time.perf_counter() - t0
    df, names = _record_fields(store, dataset)
    t1 = time.perf_counter()
    parts = []
    for lo in range(0, df.height, block):
        part = df.slice(lo, block)
        res = find_contamination({f: part[f] for f in names}, table, ngram)
        ov = res.overlap
        flag = (res.matches > 0) & (ov >= min_overlap - 1e-12)
        rows = np.flatnonzero(flag)
        sub = part[rows]
        matched = []
        for i, r in enumerate(rows):
            toks = normalise_tokens(sub[names[res.first_field[r]]][i] or "")
            matched.append(" ".join(toks[res.first_start[r]:res.first_start[r] + ngram]))
        parts.append(pl.DataFrame({
            "record_id": sub["record_id"], "source_id": sub["source_id"].cast(pl.String),
            "overlap": ov[rows], "matches": res.matches[rows],
            "field": [",".join(nm for fi, nm in enumerate(names) if res.fields[r] >> fi & 1) for r in rows],
            "matched": pl.Series(matched, dtype=pl.String)}))
        if progress:
            progress(min(lo + block, df.height), df.height)
    flagged = pl.concat(parts) if parts else pl.DataFrame(schema={
        "record_id": pl.Int64, "source_id": pl.String, "overlap": pl.Float64, "matches": pl.Int64,
        "field": pl.String, "matched": pl.String})
    flagged = flagged.sort("overlap", "record_id", descending=[True, False])
    t_match = time.perf_counter() - t1
    params = {"min_overlap": min_overlap, "format": fmt, "text_field": text_field, "fields": names,
              "eval": eval_counts, "eval_ngrams": len(table),
              "timings": {"eval_s": round(t_eval, 3), "match_s": round(t_match, 3)}}
    against_name = str(against) if isinstance(against, (str, Path)) else eval_counts["file"]
    with store.transaction() as cur:
        nth = cur.execute("SELECT count(*) FROM store.contamination_checks WHERE dataset = ?",
                          [dataset]).fetchall()[0][0]
        check_id = f"{dataset}-contam{nth + 1}"
        while cur.execute("SELECT 1 FROM store.contamination_checks WHERE check_id = ?", [check_id]).fetchall():
            nth += 1
            check_id = f"{dataset}-contam{nth + 1}"
        cur.execute("INSERT INTO store.contamination_checks (check_id, dataset, against, ngram, checked, "
                    "contaminated, params, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [check_id, dataset, against_name, ngram, df.height, flagged.height, json.dumps(params), now()])
        if flagged.height:
            cur.register("new_flags", flagged.with_columns(pl.lit(check_id).alias("check_id")))
            cur.execute("INSERT INTO store.contamination (check_id, record_id, overlap, field, matched) "
                        "SELECT check_id, record_id, overlap, field, matched FROM new_flags")
            cur.unregister("new_flags")
    log.info("contamination %s: %d of %d records of %s share a %d-gram with %s", check_id, flagged.height,
             df.height, dataset, ngram, against_name)
    return {"check_id": check_id, "dataset": dataset, "against": against_name, "ngram": ngram,
            "min_overlap": min_overlap, "checked": df.height, "contaminated": flagged.height,
            "eval": eval_counts, "eval_ngrams": len(table), "timings": params["timings"],
            "records": [{k: (round(v, 4) if k == "overlap" else v) for k, v in r.items()}
                        for r in flagged.iter_rows(named=True)]}


def latest_check(store: Store, dataset: str) -> str | None:
    """The id of the dataset's newest contamination check (None when none was run)."""
    return store.one("SELECT check_id FROM store.contamination_checks WHERE dataset = ? "
                     "ORDER BY created_at DESC, check_id DESC LIMIT 1", [dataset])


def flagged_ids(store: Store, check_id: str) -> set[int]:
    return {r[0] for r in store.query("SELECT record_id FROM store.contamination WHERE check_id = ?", [check_id])}


def require_uncontaminated(store: Store, dataset: str, train_ids: Iterable[int],
                           allow_contamination: bool = False) -> dict:
    """The training gate: the newest contamination check of `dataset` must flag none of `train_ids` (the
    snapshot's train split), unless `allow_contamination` (then `contamination_allowed: true`, for the run).
    No check run: passes, saying so (`check_id: None`)."""
    check_id = latest_check(store, dataset)
    if check_id is None:
        return {"check_id": None, "contaminated_in_train": 0, "contamination_allowed": False, "ok": True}
    bad = sorted(flagged_ids(store, check_id) & {int(i) for i in train_ids})
    result = {"check_id": check_id, "contaminated_in_train": len(bad), "contaminated_ids": bad[:20],
              "contamination_allowed": bool(bad and allow_contamination), "ok": not bad}
    if bad and not allow_contamination:
        against = store.one("SELECT against FROM store.contamination_checks WHERE check_id = ?", [check_id])
        raise ContaminationError(
            f"dataset {dataset!r}: {len(bad)} train records share an n-gram with the evaluation set {against} "
            f"(check {check_id}; record ids {bad[:10]}{'...' if len(bad) > 10 else ''}). Fix: drop or re-split "
            f"them, inspect with `curate sql \"SELECT * FROM contamination WHERE check_id = '{check_id}'\"`, or "
            "allow it explicitly (--allow-contamination), which the run records.")
    return result
