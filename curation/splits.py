"""Leakage-checked splits: whole duplicate components go to one split, stratified by label, seeded.

Pure core: `parse_ratios`, `assign_splits` (components + strata + ratios + seed -> split per row) and
`leakage_report` (split + component per row -> what crosses). DuckDB edges: `make_split`, `check_split`,
`current_split` / `current_split_id`, `require_clean` (the gate training calls).

A split set is a row of `store.split_sets` (method 'computed' or 'column', its params and its report) and one
row per record in `store.splits` (split, component, reason, leaks). A new split set becomes the dataset's
current one; the older ones are kept. Augmented copies (origin 'augment') are not split on their own: they
take their parent's component and go to train with it; when a new split puts the parent outside train, the copy
gets no row in that split set (counted in the report), so it can never reach val or test.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from curation.dedup import DedupConfig, Duplicates, find_duplicates, prompt_config
from curation.errors import InputError, LeakageError, NotFound
from curation.store import Store, now

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
UNLABELED = "\x00unlabeled"   # the stratum of records with no gold and no weak label
_MAX_PAIRS_PER_COMPONENT = 10
_MAX_EXAMPLES_PER_COMPONENT = 4


# -- pure core ------------------------------------------------------------------------------------------
def parse_ratios(ratios: str | Sequence[float] | dict) -> dict[str, float]:
    """'0.8,0.1,0.1' -> train/val/test; two values -> train/test; 'train=0.7,test=0.3' names them."""
    if isinstance(ratios, dict):
        items = list(ratios.items())
    else:
        parts = [p.strip() for p in ratios.split(",")] if isinstance(ratios, str) else list(ratios)
        if parts and all(isinstance(p, str) and "=" in p for p in parts):
            items = [tuple(x.strip() for x in p.split("=", 1)) for p in parts]
        else:
            names = {2: ("train", "test"), 3: SPLITS}.get(len(parts))
            if names is None:
                raise InputError(f"ratios {ratios!r}: give 2 (train,test) or 3 (train,val,test) numbers, "
                                 "e.g. 0.8,0.1,0.1, or name them: train=0.8,val=0.1,test=0.1")
            items = list(zip(names, parts))
    out: dict[str, float] = {}
    for name, value in items:
        if name not in SPLITS:
            raise InputError(f"ratios: unknown split {name!r}; valid: {', '.join(SPLITS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"ratios: {name}={value!r} is not a number") from None
        if not 0.0 <= v <= 1.0:
            raise InputError(f"ratios: {name}={v} must be within [0, 1]")
        out[name] = v
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"ratios {ratios!r} sum to {total:g}; they must sum to 1")
    if out.get("train", 0.0) <= 0.0:
        raise InputError(f"ratios {ratios!r}: train needs a share above 0")
    return out


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to weights that sum to total."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    rest = total - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return base


def assign_splits(component: np.ndarray, strata: Sequence[str | None] | np.ndarray, ratios: dict[str, float],
                  seed: int = 0) -> np.ndarray:
    """The split (index into `list(ratios)`) of every row, such that all rows of a component share one split.

    Components of more than one row go first, largest first (ties in seeded random order), each to the split
    whose per-stratum counts move closest to their targets (least squares; ties broken at random). Single rows
    then fill what each stratum still needs, in seeded random order, so ratios hold per stratum to within a
    row wherever the components allow it. `strata[i]` is row i's label (None: unlabeled, a stratum of its own).
    """
    component = np.asarray(component)
    n = len(component)
    names = list(ratios)
    r = np.array([ratios[s] for s in names], dtype=np.float64)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    st = pl.Series("s", [UNLABELED if x is None else str(x) for x in strata], dtype=pl.String)
    if len(st) != n:
        raise InputError(f"{len(st)} strata for {n} rows; give one label (or None) per row")
    levels, st_idx = np.unique(st.to_numpy().astype(str), return_inverse=True)
    comps, comp_idx, sizes = np.unique(component, return_inverse=True, return_counts=True)
    n_levels = len(levels)
    totals = np.bincount(st_idx, minlength=n_levels).astype(np.float64)
    target = r[:, None] * totals[None, :]                 # (splits, strata)
    counts = np.zeros_like(target)
    allowed = r > 0
    # multi-row components: greedy, largest first
    multi = np.flatnonzero(sizes > 1)
    if len(multi):
        mrows = np.flatnonzero(sizes[comp_idx] > 1)
        x = np.zeros((len(comps), n_levels))
        np.add.at(x, (comp_idx[mrows], st_idx[mrows]), 1.0)
        order = multi[np.lexsort((rng.random(len(multi)), -sizes[multi]))]
        comp_split = np.full(len(comps), -1, dtype=np.int64)
        noise = rng.random((len(order), len(names)))
        for i, c in enumerate(order):
            xc = x[c]
            delta = (xc[None, :] * (2.0 * (counts - target) + xc[None, :])).sum(axis=1)
            delta = np.where(allowed, delta, np.inf)
            best = np.flatnonzero(delta <= delta.min() + 1e-9)
            s = best[np.argmin(noise[i, best])] if len(best) > 1 else best[0]
            comp_split[c] = s
            counts[s] += xc
        out[mrows] = comp_split[comp_idx[mrows]]
    # single rows: fill each stratum's remaining need
    singles = np.flatnonzero(sizes[comp_idx] == 1)
    singles = singles[rng.permutation(len(singles))]
    for lv in range(n_levels):
        rows_lv = singles[st_idx[singles] == lv]
        m = len(rows_lv)
        if m == 0:
            continue
        final = _largest_remainder(int(totals[lv]), r)
        need = np.maximum(final - counts[:, lv], 0).astype(np.int64)
        if need.sum() > m:
            need = _largest_remainder(m, need.astype(np.float64))
        elif need.sum() < m:
            need = need + _largest_remainder(m - int(need.sum()), r)
        bounds = np.concatenate([[0], np.cumsum(need)])
        for s in range(len(names)):
            out[rows_lv[bounds[s]:bounds[s + 1]]] = s
            counts[s, lv] += need[s]
    return out


def leakage_report(split: Sequence[str], component: np.ndarray, *, pairs: pl.DataFrame | None = None,
                   texts: Sequence[str] | None = None, ids: Sequence[int] | None = None,
                   max_components: int | None = None) -> dict:
    """What crosses splits. `split[i]`, `component[i]` per row; `pairs` (a, b, kind, similarity: row indexes)
    name the cross-split edges; `texts` give examples; `ids` map rows to record ids (default: the row index).

    Returns `crossing_components` (count), `leaking_records_by_split` (per split: its records whose component
    holds a record of another split), `clean_ids_by_split` (val/test records whose component has no train
    record: the leakage-free subsets), and `crossing` (one entry per crossing component)."""
    n = len(split)
    ids_arr = np.asarray(ids if ids is not None else np.arange(n), dtype=np.int64)
    f = pl.DataFrame({"row": np.arange(n, dtype=np.int64), "split": pl.Series(list(split), dtype=pl.String),
                      "component": np.asarray(component, dtype=np.int64), "id": ids_arr})
    per = f.group_by("component").agg(pl.col("split").n_unique().alias("n_splits"),
                                      (pl.col("split") == "train").any().alias("has_train"))
    f = f.join(per, on="component", how="left").sort("row")
    crossing = f.filter(pl.col("n_splits") > 1)
    split_names = [s for s in SPLITS if s in set(f["split"].to_list())]
    leaking = {s: int(crossing.filter(pl.col("split") == s).height) for s in split_names}
    clean = {s: f.filter((pl.col("split") == s) & ~pl.col("has_train"))["id"].to_list()
             for s in split_names if s != "train"}
    report = {
        "records": n,
        "counts": {s: int(f.filter(pl.col("split") == s).height) for s in split_names},
        "crossing_components": int(crossing["component"].n_unique()),
        "leaking_records_by_split": leaking,
        "leaking_records": int(crossing.height),
        "clean_counts_by_split": {s: len(v) for s, v in clean.items()},
        "clean_ids_by_split": clean,
        "crossing": [],
    }
    if crossing.height == 0:
        return report
    split_arr = f["split"].to_numpy()
    comp_arr = f["component"].to_numpy()
    cross_pairs: dict[int, list] = {}
    if pairs is not None and pairs.height:
        a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
        m = split_arr[a] != split_arr[b]
        for ai, bi, kind, sim in zip(a[m], b[m], pairs["kind"].to_numpy()[m], pairs["similarity"].to_numpy()[m]):
            lst = cross_pairs.setdefault(int(comp_arr[ai]), [])
            if len(lst) < _MAX_PAIRS_PER_COMPONENT:
                lst.append({"a": int(ids_arr[ai]), "b": int(ids_arr[bi]), "split_a": split_arr[ai],
                            "split_b": split_arr[bi], "kind": kind,
                            "similarity": None if sim is None or np.isnan(sim) else round(float(sim), 4)})
    groups = crossing.group_by("component", maintain_order=True).agg("row", "split")
    groups = groups.with_columns(pl.col("row").list.len().alias("size")).sort(["size", "component"],
                                                                               descending=[True, False])
    for comp, rows, splits, size in groups.iter_rows():
        if max_components is not None and len(report["crossing"]) >= max_components:
            report["crossing_truncated"] = True
            break
        by_split: dict[str, int] = {}
        for s in splits:
            by_split[s] = by_split.get(s, 0) + 1
        examples, seen = [], set()
        for row, s in zip(rows, splits):   # one example per split first, then more
            if s not in seen:
                seen.add(s)
                examples.append({"record_id": int(ids_arr[row]), "split": s,
                                 "text": None if texts is None else texts[row]})
        examples = examples[:_MAX_EXAMPLES_PER_COMPONENT]
        report["crossing"].append({"component": int(comp),
                                   "records": int(size), "splits": by_split,
                                   "pairs": cross_pairs.get(int(comp), []), "examples": examples})
    return report


def fingerprint(record_ids: Sequence[int], splits: Sequence[str]) -> str:
    """A hash of the assignment: the same records in the same splits give the same fingerprint."""
    f = pl.DataFrame({"id": list(record_ids), "s": list(splits)}).sort("id")
    h = hashlib.sha256()
    for rid, s in f.iter_rows():
        h.update(f"{rid}:{s};".encode())
    return h.hexdigest()[:16]


# -- store edges ----------------------------------------------------------------------------------------
def current_split_id(store: Store, dataset: str) -> str | None:
    """The id of the dataset's current split set, None when it has none (the dataset itself is not checked)."""
    row = store.query("SELECT split_id FROM store.split_sets WHERE dataset = ? AND is_current "
                      "ORDER BY created_at DESC LIMIT 1", [dataset])
    return row[0][0] if row else None


def current_split(store: Store, dataset: str) -> str:
    """The id of the dataset's current split set; NotFound when the dataset or its split does not exist."""
    store.dataset(dataset)
    sid = current_split_id(store, dataset)
    if sid is None:
        raise NotFound(f"dataset {dataset!r} has no split yet; run `curate split --dataset {dataset}` "
                       f"(or `--from-column split` to use the split given in the data)")
    return sid


def _col_expr(col: str) -> tuple[str, list]:
    if col == "group":
        return 'r."group"', []
    if not re.fullmatch(r"[A-Za-z0-9_.\- ]{1,128}", col):
        raise InputError(f"column {col!r}: use 'group' or the name of a metadata field (letters, digits, _ . -)")
    return "json_extract_string(r.meta, ?)", [f'$."{col}"']


def _weak_model(store: Store, dataset: str) -> str | None:
    return store.one("SELECT model_id FROM store.label_models WHERE dataset = ? "
                     "ORDER BY created_at DESC, model_id DESC LIMIT 1", [dataset])


def _load(store: Store, dataset: str, *, group_by: str | None, from_column: str | None) -> tuple[pl.DataFrame,
                                                                                                   str | None]:
    store.dataset(dataset)
    model = _weak_model(store, dataset)
    params: list = []
    gexpr, gp = _col_expr(group_by) if group_by else ("NULL::TEXT", [])
    cexpr, cp = _col_expr(from_column) if from_column else ("NULL::TEXT", [])
    params = [*gp, *cp, model, dataset]
    df = store.frame(
        f"SELECT r.record_id, r.text, r.origin, r.parent_id, {gexpr} AS grp, {cexpr} AS given, "
        "g.label AS gold, w.label AS weak FROM store.records r "
        "LEFT JOIN store.gold_labels g USING (record_id) "
        "LEFT JOIN (SELECT record_id, label FROM store.weak_labels WHERE model_id = ?) w USING (record_id) "
        "WHERE r.dataset = ? ORDER BY r.record_id", params)
    return df, model


def _given_splits(df: pl.DataFrame, col: str) -> list[str]:
    raw = df["given"]
    missing = raw.is_null()
    if missing.any():
        first = df.filter(missing)["record_id"].head(5).to_list()
        raise InputError(f"{int(missing.sum())} of {df.height} records have no value in metadata field {col!r} "
                         f"(record ids {first}...); give every record a split, or compute one without "
                         "--from-column")
    mapped = raw.str.strip_chars().str.to_lowercase().replace_strict(SPLIT_ALIASES, default=None)
    bad = mapped.is_null()
    if bad.any():
        vc = df.filter(bad).group_by("given").len().sort("len", descending=True).head(5)
        shown = ", ".join(f"{v!r} ({c})" for v, c in vc.iter_rows())
        raise InputError(f"metadata field {col!r}: {int(bad.sum())} records have an unknown split value: {shown}; "
                         f"valid: {', '.join(sorted(SPLIT_ALIASES))}")
    return mapped.to_list()


def _reasons(dups: Duplicates, n: int) -> list[str]:
    sizes = np.bincount(dups.component, minlength=n)
    kinds: dict[int, set] = {}
    if dups.pairs.height:
        for comp, kind in pl.DataFrame({"c": dups.component[dups.pairs["a"].to_numpy()],
                                        "k": dups.pairs["kind"]}).unique().iter_rows():
            kinds.setdefault(int(comp), set()).add(kind)
    order = {"exact": 0, "near": 1, "contained": 2, "group": 3}
    out = []
    for c in dups.component:
        size = sizes[c]
        if size == 1:
            out.append("singleton")
        else:
            k = sorted(kinds.get(int(c), ()), key=order.get)
            out.append(f"component of {size} ({', '.join(k)})")
    return out


def _compute(store: Store, dataset: str, *, group_by: str | None, config: DedupConfig, from_column: str | None,
             progress: Callable[[str], None] | None, engine=None) -> dict:
    """Load the dataset and find the components of its ingested records; augmented rows follow their parent."""
    df, model = _load(store, dataset, group_by=group_by, from_column=from_column)
    if df.height == 0:
        raise InputError(f"dataset {dataset!r} has no records; ingest some first")
    base = df.filter(pl.col("origin") != "augment")
    aug = df.filter(pl.col("origin") == "augment")
    if group_by and base["grp"].null_count() == base.height:
        raise InputError(f"--group-by {group_by}: no record of {dataset!r} has a value there; use 'group' "
                         "(the ingest's --group-field) or a metadata field the records carry")
    dups = find_duplicates(base["text"], base["grp"] if group_by else None, config, progress=progress,
                           engine=engine)
    ids = base["record_id"].to_numpy()
    return {"df": df, "base": base, "aug": aug, "dups": dups, "ids": ids, "component_ids": ids[dups.component],
            "weak_model": model}


def _is_instruction(store: Store, dataset: str) -> bool:
    return store.one("SELECT task FROM store.datasets WHERE name = ?", [dataset]) == "instruction"


def _config(threshold: float, shingle: str, k: int | None, template_aware: bool) -> DedupConfig:
    if template_aware:
        return prompt_config(threshold, shingle=shingle, k=k, seed=1)
    return DedupConfig(threshold=threshold, shingle=shingle, k=k, seed=1)


def _strata(base: pl.DataFrame) -> list[str | None]:
    return base.select(pl.coalesce("gold", "weak"))[:, 0].to_list()


def _augmented_rows(aug: pl.DataFrame, parent_split: dict[int, str], parent_comp: dict[int, int]
                    ) -> tuple[pl.DataFrame, dict]:
    rows, skipped = [], {"parent_not_in_train": 0, "parent_missing": 0}
    for rid, pid in zip(aug["record_id"].to_list(), aug["parent_id"].to_list()):
        s = parent_split.get(pid)
        if s is None:
            skipped["parent_missing"] += 1
        elif s != "train":
            skipped["parent_not_in_train"] += 1
        else:
            rows.append((rid, "train", parent_comp[pid], f"augmented from {pid}"))
    frame = pl.DataFrame(rows, schema={"record_id": pl.Int64, "split": pl.String, "component": pl.Int64,
                                       "reason": pl.String}, orient="row")
    return frame, skipped


def make_split(store: Store, dataset: str, ratios: str | Sequence[float] | dict = (0.8, 0.1, 0.1), *,
               group_by: str | None = None, near_dup_threshold: float = 0.7, seed: int = 0,
               from_column: str | None = None, shingle: str = "char", k: int | None = None,
               template_aware: bool | None = None, progress: Callable[[str], None] | None = None,
               engine=None) -> dict:
    """Make a new current split set of `dataset` and return its report. `engine`: None (local) or a Ray
    `curation.engine.Engine` for the near-duplicate stage (the same components).

    Computed (default): whole duplicate components (exact, near at `near_dup_threshold`, and `group_by`) go to
    one split, stratified by label (gold, else the newest weak label, else unlabeled), reproducibly for a seed.
    `from_column`: the split given by a metadata field (e.g. 'split'; 'valid'/'validation'/'dev' mean val) is
    stored as it is and only checked: records of components that cross splits get `leaks = true`, and the
    report names the test records with no duplicate in train (the leakage-free test subset).

    Instruction datasets are split on their prompts (the record text) with the template-aware setting
    (`curation.dedup.prompt_config`: template n-grams dropped, containment edges) unless `template_aware` is
    False; classification datasets use it only when `template_aware` is True."""
    if template_aware is None:
        template_aware = _is_instruction(store, dataset)
    config = _config(near_dup_threshold, shingle, k, template_aware)
    ratio_map = parse_ratios(ratios) if from_column is None else None
    c = _compute(store, dataset, group_by=group_by, config=config, from_column=from_column, progress=progress,
                 engine=engine)
    base, dups, ids = c["base"], c["dups"], c["ids"]
    if from_column is None:
        idx = assign_splits(dups.component, _strata(base), ratio_map, seed)
        names = list(ratio_map)
        split = [names[i] for i in idx]
        reason = _reasons(dups, base.height)
        method = "computed"
    else:
        split = _given_splits(base, from_column)
        reason = [f"given by metadata field {from_column!r}"] * base.height
        method = "column"
    rep = leakage_report(split, c["component_ids"], pairs=dups.pairs, texts=base["text"].to_list(), ids=ids)
    crossing_components = {x["component"] for x in rep["crossing"]}
    frame = pl.DataFrame({"record_id": ids, "split": split, "component": c["component_ids"], "reason": reason})
    frame = frame.with_columns(pl.col("component").is_in(list(crossing_components)).alias("leaks"))
    aug_frame, skipped = _augmented_rows(c["aug"], dict(zip(ids.tolist(), split)),
                                         dict(zip(ids.tolist(), c["component_ids"].tolist())))
    if aug_frame.height:
        aug_frame = aug_frame.with_columns(pl.lit(False).alias("leaks"))
        frame = pl.concat([frame, aug_frame])
    strata = _strata(base)
    label_counts: dict[str, dict[str, int]] = {}
    for s, lab in zip(split, strata):
        d = label_counts.setdefault(s, {})
        key = "(unlabeled)" if lab is None else lab
        d[key] = d.get(key, 0) + 1
    params = {"ratios": ratio_map, "group_by": group_by, "near_dup_threshold": near_dup_threshold, "seed": seed,
              "from_column": from_column, "shingle": shingle, "k": config.shingle_size,
              "weak_model_id": c["weak_model"], "template_aware": template_aware}
    stats = {k_: v for k_, v in dups.stats.items() if k_ not in ("timings", "cpu_timings")}
    with store.transaction() as cur:
        nth = cur.execute("SELECT count(*) FROM store.split_sets WHERE dataset = ?", [dataset]).fetchall()[0][0]
        split_id = f"{dataset}-split{nth + 1}"
        while cur.execute("SELECT 1 FROM store.split_sets WHERE split_id = ?", [split_id]).fetchall():
            nth += 1
            split_id = f"{dataset}-split{nth + 1}"
        report = {
            "split_id": split_id, "dataset": dataset, "method": method, "params": params,
            "fingerprint": fingerprint(frame["record_id"].to_list(), frame["split"].to_list()),
            "label_counts": label_counts, "components": stats["components"], "dedup": stats,
            "augmented_in_train": aug_frame.height, "augmented_left_out": skipped,
            **{k_: v for k_, v in rep.items() if k_ != "records"},
            "records": int(frame.height),
            "counts": {s: int((frame["split"] == s).sum()) for s in SPLITS if (frame["split"] == s).any()},
            "test_ids_without_train_duplicate": rep["clean_ids_by_split"].get("test", []),
        }
        cur.execute("UPDATE store.split_sets SET is_current = false WHERE dataset = ?", [dataset])
        cur.execute("INSERT INTO store.split_sets VALUES (?, ?, ?, ?, ?, true, ?)",
                    [split_id, dataset, method, json.dumps(params), json.dumps(report, default=str), now()])
        cur.register("new_splits", frame.with_columns(pl.lit(split_id).alias("split_id")))
        cur.execute("INSERT INTO store.splits (split_id, record_id, split, component, reason, leaks) "
                    "SELECT split_id, record_id, split, component, reason, leaks FROM new_splits")
        cur.unregister("new_splits")
    log.info("split %s of %s: %s, %d crossing components", split_id, dataset, report["counts"],
             report["crossing_components"])
    return report


def split_report(store: Store, dataset: str, split_id: str | None = None) -> dict:
    """The stored report of a split set (default: the current one)."""
    sid = split_id or current_split(store, dataset)
    raw = store.one("SELECT report FROM store.split_sets WHERE split_id = ? AND dataset = ?", [sid, dataset])
    if raw is None:
        raise NotFound(f"no split set {sid!r} for dataset {dataset!r}")
    return json.loads(raw)


def check_split(store: Store, dataset: str, *, split_id: str | None = None,
                progress: Callable[[str], None] | None = None, update: bool = True) -> dict:
    """Recompute the components of the dataset as it is now (with the split set's own threshold, shingles and
    group column) and report every component that crosses splits. Also counts records that have no split
    (ingested after it) and augmented copies outside train. With `update`, the split set's `leaks` flags and
    its report's `last_check` are refreshed. `ok` is true when nothing crosses."""
    sid = split_id or current_split(store, dataset)
    row = store.query("SELECT params FROM store.split_sets WHERE split_id = ? AND dataset = ?", [sid, dataset])
    if not row:
        raise NotFound(f"no split set {sid!r} for dataset {dataset!r}")
    params = json.loads(row[0][0])
    config = _config(params.get("near_dup_threshold", 0.7), params.get("shingle", "char"), params.get("k"),
                     bool(params.get("template_aware", False)))
    c = _compute(store, dataset, group_by=params.get("group_by"), config=config, from_column=None,
                 progress=progress)
    base, dups, ids = c["base"], c["dups"], c["ids"]
    assigned = store.frame("SELECT record_id, split FROM store.splits WHERE split_id = ?", [sid])
    f = pl.DataFrame({"record_id": ids, "row": np.arange(len(ids))}).join(assigned, on="record_id", how="left")
    f = f.sort("row")
    has = f["split"].is_not_null().to_numpy()
    unassigned = f.filter(pl.col("split").is_null())["record_id"].to_list()
    rows = np.flatnonzero(has)
    remap = np.full(len(ids), -1, dtype=np.int64)
    remap[rows] = np.arange(len(rows))
    comp = c["component_ids"][rows]
    pairs = dups.pairs.filter(pl.Series(has[dups.pairs["a"].to_numpy()] & has[dups.pairs["b"].to_numpy()]))
    pairs = pairs.with_columns(pl.Series("a", remap[pairs["a"].to_numpy()]),
                               pl.Series("b", remap[pairs["b"].to_numpy()]))
    texts = base["text"].to_list()
    rep = leakage_report(f["split"].to_numpy()[rows].tolist(), comp, pairs=pairs,
                         texts=[texts[i] for i in rows], ids=ids[rows])
    aug = c["aug"]
    aug_bad = []
    if aug.height:
        a = aug.select("record_id", "parent_id").join(assigned, on="record_id", how="inner").join(
            assigned.rename({"record_id": "parent_id", "split": "parent_split"}), on="parent_id", how="left")
        aug_bad = a.filter((pl.col("split") != "train") | (pl.col("parent_split").fill_null("") != "train"))[
            "record_id"].to_list()
    report = {"split_id": sid, "dataset": dataset, "ok": rep["crossing_components"] == 0 and not aug_bad,
              **rep, "test_ids_without_train_duplicate": rep["clean_ids_by_split"].get("test", []),
              "unassigned_records": len(unassigned), "unassigned_ids": unassigned[:100],
              "augmented_outside_train": aug_bad, "checked_at": str(now())}
    if update:
        crossing = np.array([e["component"] for e in rep["crossing"]], dtype=np.int64)
        leak_ids = ids[rows][np.isin(comp, crossing)].tolist()
        with store.transaction() as cur:
            cur.execute("UPDATE store.splits SET leaks = false WHERE split_id = ? AND leaks", [sid])
            if leak_ids:
                cur.register("leak_ids", pl.DataFrame({"record_id": leak_ids}))
                cur.execute("UPDATE store.splits SET leaks = true WHERE split_id = ? AND record_id IN "
                            "(SELECT record_id FROM leak_ids)", [sid])
                cur.unregister("leak_ids")
            stored = json.loads(cur.execute("SELECT report FROM store.split_sets WHERE split_id = ?",
                                            [sid]).fetchall()[0][0] or "{}")
            stored["last_check"] = {k_: report[k_] for k_ in (
                "ok", "crossing_components", "leaking_records_by_split", "unassigned_records", "checked_at")}
            cur.execute("UPDATE store.split_sets SET report = ? WHERE split_id = ?",
                        [json.dumps(stored, default=str), sid])
    return report


def require_clean(store: Store, dataset: str, allow_leakage: bool = False) -> dict:
    """The gate training calls: checks the current split and raises LeakageError when a component crosses
    splits, unless `allow_leakage` (then the returned dict says `leakage_allowed: true`, for the run record)."""
    rep = check_split(store, dataset)
    crossing = rep["crossing_components"]
    result = {"split_id": rep["split_id"], "crossing_components": crossing,
              "leaking_records_by_split": rep["leaking_records_by_split"],
              "augmented_outside_train": len(rep["augmented_outside_train"]),
              "unassigned_records": rep["unassigned_records"],
              "leakage_allowed": bool(allow_leakage and not rep["ok"]), "ok": rep["ok"]}
    if not rep["ok"] and not allow_leakage:
        by = ", ".join(f"{s} {n}" for s, n in rep["leaking_records_by_split"].items() if n)
        extra = (f"; {len(rep['augmented_outside_train'])} augmented copies outside train"
                 if rep["augmented_outside_train"] else "")
        raise LeakageError(
            f"split {rep['split_id']} of dataset {dataset!r} leaks: {crossing} duplicate components cross splits "
            f"(records with a duplicate in another split: {by or 'none'}){extra}. Fix: re-split with "
            f"`curate split --dataset {dataset}` (keeps duplicates together), inspect with `curate split check "
            f"--dataset {dataset}`, or allow it explicitly (allow_leakage=True / --allow-leakage), which the run "
            "records.")
    return result
