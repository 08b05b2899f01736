"""LF application speed: curate's compiled LFs vs Snorkel's `PandasLFApplier`, same LFs, same texts.

    .venv/bin/python -m benchmarks.bench_lfs [--quick] [--rows 1000000] [--snorkel-rows 100000]

The Snorkel spam tutorial's 7 keyword/regex LFs (my, subscribe, http, please/plz, song, check.*out, short
comment), written twice: as Snorkel `LabelingFunction`s (the tutorial's code: `word in x.text.lower()`,
`re.search(r"check.*out", x.text, flags=re.I)`, `len(x.text.split()) < 5`) and as curate LFs. Texts: `--rows`
comments sampled with replacement from the 1,956 YouTube comments.

Measured in one run:
- ours: `label_matrix` over the records in DuckDB (one compiled query → the dense matrix), and the whole
  `apply_lfs` into a store (matrix + sparse votes written in a transaction);
- Snorkel: `PandasLFApplier.apply` on a pandas DataFrame. It is slow, so it runs on the first `--snorkel-rows`
  texts (default 100,000) and its 1M time is extrapolated linearly (rows/s); we also time ours on that same
  subsample, and check the two label matrices are identical there (and report any differing cells).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from benchmarks.common import sample_comments

LABELS = ["ham", "spam"]
HAM, SPAM, ABSTAIN = 0, 1, -1


def our_lfs() -> list:
    from labeling import keyword_lf, regex_lf

    return [
        keyword_lf("keyword_my", ["my"], "spam", whole_word=False),
        keyword_lf("keyword_subscribe", ["subscribe"], "spam", whole_word=False),
        keyword_lf("keyword_http", ["http"], "spam", whole_word=False),
        keyword_lf("keyword_please", ["please", "plz"], "spam", whole_word=False),
        keyword_lf("keyword_song", ["song"], "ham", whole_word=False),
        regex_lf("regex_check_out", r"check.*out", "spam", flags=re.IGNORECASE),
        regex_lf("short_comment", r"(?:\S+\s+){4}\S", "ham", negate=True),  # len(text.split()) < 5
    ]


def snorkel_lfs() -> list:
    """The tutorial's code, verbatim in spirit."""
    from snorkel.labeling import LabelingFunction, labeling_function

    def keyword_lookup(x, keywords, label):
        if any(word in x.text.lower() for word in keywords):
            return label
        return ABSTAIN

    def make_keyword_lf(keywords, label=SPAM):
        return LabelingFunction(name=f"keyword_{keywords[0]}", f=keyword_lookup,
                                resources={"keywords": keywords, "label": label})

    @labeling_function()
    def regex_check_out(x):
        return SPAM if re.search(r"check.*out", x.text, flags=re.IGNORECASE) else ABSTAIN

    @labeling_function()
    def short_comment(x):
        return HAM if len(x.text.split()) < 5 else ABSTAIN

    return [make_keyword_lf(["my"]), make_keyword_lf(["subscribe"]), make_keyword_lf(["http"]),
            make_keyword_lf(["please", "plz"]), make_keyword_lf(["song"], label=HAM), regex_check_out,
            short_comment]


def records_db(texts: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    n = len(texts)
    con.register("t", pl.DataFrame({"text": texts}))
    con.execute("CREATE TABLE recs AS SELECT (row_number() OVER ())::BIGINT AS record_id, NULL::VARCHAR AS "
                "source_id, text, NULL::VARCHAR AS \"group\", NULL::JSON AS meta, ''::VARCHAR AS input_hash, "
                "'ingest' AS origin, NULL::BIGINT AS parent_id FROM t")
    con.unregister("t")
    assert con.execute("SELECT count(*) FROM recs").fetchall()[0][0] == n
    return con


def time_ours(con, lfs, relation: str, repeat: int = 3) -> tuple[float, np.ndarray]:
    from labeling.lfs import label_matrix

    best, L = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = label_matrix(con, relation, lfs, LABELS)
        best = min(best, time.perf_counter() - t0)
        L = res.L
    assert all(e == "sql" for e in res.engines), res.reasons
    return best, L


def time_apply_store(texts: list[str], lfs) -> dict:
    """The whole `apply_lfs` into a real store (records inserted directly; input_hash is a placeholder)."""
    from curation.store import Store, now
    from labeling.weak import apply_lfs

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(db=Path(tmp) / "bench.duckdb")
        with store.transaction() as cur:
            store.ensure_dataset(cur, "bench", LABELS, "bench")
            cur.register("t", pl.DataFrame({"text": texts}))
            cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, origin, parent_id, ingest_id, source_row, ingested_at) SELECT row_number() OVER (), 'bench', NULL, text, NULL, NULL, "
                        "'-', 'ingest', NULL, NULL, NULL, ? FROM t", [now()])
            cur.unregister("t")
        t0 = time.perf_counter()
        r = apply_lfs(store, "bench", lfs)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = apply_lfs(store, "bench", lfs)
        noop = time.perf_counter() - t0
        store.close()
    return {"apply_lfs_s": total, "votes": r["votes"], "sql_s": r["seconds"]["sql"], "reapply_noop_s": noop,
            "reapply_status": again["status"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k texts, Snorkel on 5k")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--snorkel-rows", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = 20_000 if args.quick else args.rows
    sn_rows = min(5_000 if args.quick else args.snorkel_rows, rows)
    texts = sample_comments(rows, seed=0)["CONTENT"].to_list()
    lfs = our_lfs()
    con = records_db(texts)
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]

    ours_full_s, L_full = time_ours(con, lfs, "SELECT * FROM recs")
    ours_sub_s, L_sub = time_ours(con, lfs, f"SELECT * FROM recs WHERE record_id <= {sn_rows}")

    import pandas as pd
    from snorkel.labeling import PandasLFApplier

    df = pd.DataFrame({"text": texts[:sn_rows]})
    applier = PandasLFApplier(snorkel_lfs())
    t0 = time.perf_counter()
    L_snorkel = applier.apply(df, progress_bar=False)
    snorkel_s = time.perf_counter() - t0
    con.close()

    differing = int((L_snorkel != L_sub).sum())
    identical = differing == 0 and L_snorkel.shape == L_sub.shape
    snorkel_rate = sn_rows / snorkel_s
    snorkel_full_est = rows / snorkel_rate
    store = time_apply_store(texts, lfs)
    res = {
        "rows": rows, "snorkel_rows": sn_rows, "lfs": len(lfs), "duckdb_threads": threads,
        "ours_matrix_s": ours_full_s, "ours_rows_per_s": rows / ours_full_s,
        "ours_subsample_s": ours_sub_s, "snorkel_subsample_s": snorkel_s, "snorkel_rows_per_s": snorkel_rate,
        "snorkel_full_estimated_s": snorkel_full_est,
        "speedup_subsample": snorkel_s / ours_sub_s, "speedup_full": snorkel_full_est / ours_full_s,
        "speedup_full_apply_lfs": snorkel_full_est / store["apply_lfs_s"],
        "identical": identical, "differing_cells": differing, "fired": (L_full != ABSTAIN).sum(axis=0).tolist(),
        **{f"store_{k}": v for k, v in store.items()},
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{len(lfs)} tutorial LFs over {rows:,} YouTube comments (sampled with replacement); "
              f"DuckDB threads {threads}, Snorkel single-process")
        print(f"  ours, label matrix ({rows:,} rows)          {ours_full_s:8.3f} s  {rows / ours_full_s:>12,.0f} rows/s")
        print(f"  ours, apply_lfs into the store ({rows:,})    {store['apply_lfs_s']:8.3f} s  "
              f"({store['votes']:,} sparse votes; re-apply no-op {store['reapply_noop_s']:.3f} s)")
        print(f"  Snorkel PandasLFApplier ({sn_rows:,} rows)     {snorkel_s:8.3f} s  {snorkel_rate:>12,.0f} rows/s")
        print(f"  ours on the same {sn_rows:,} rows               {ours_sub_s:8.3f} s   speedup ×{res['speedup_subsample']:.0f}")
        print(f"  Snorkel extrapolated to {rows:,} rows        {snorkel_full_est:8.1f} s   speedup ×"
              f"{res['speedup_full']:.0f} (matrix), ×{res['speedup_full_apply_lfs']:.0f} (apply_lfs incl. writes)")
        print(f"  label matrices identical on the {sn_rows:,}-row subsample: {identical} "
              f"({differing} differing cells)")
    return res


if __name__ == "__main__":
    sys.exit(0 if main()["identical"] else 1)
