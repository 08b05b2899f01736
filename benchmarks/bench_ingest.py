"""Contract-checked ingest vs a bare DuckDB load of the same file, in the same run.

Ours: read, field mapping, every contract rule, quarantine, normalised-text hash, one transaction.
Baseline: `CREATE TABLE t AS SELECT * FROM read_csv(...)` / `read_parquet(...)` into a fresh DuckDB file.
Goal: the checked ingest costs at most 2x the bare load.
"""

import argparse
import shutil

import duckdb

from benchmarks.common import WORK, ratio_line, sample_comments, timer
from curation.ingest import FieldMap, ingest
from curation.settings import Settings
from curation.store import Store


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k rows")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.rows
    work = WORK / "ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    df = sample_comments(n)
    df.write_csv(work / "in.csv")
    df.write_parquet(work / "in.parquet")
    fields = FieldMap(text="CONTENT", label="CLASS", id="COMMENT_ID", group="AUTHOR")
    figures = {"rows": n}
    print(f"ingest benchmark: {n:,} YouTube comments (sampled), 2 formats")
    for fmt, reader in (("csv", "read_csv"), ("parquet", "read_parquet")):
        path = work / f"in.{fmt}"
        con = duckdb.connect(str(work / f"bare-{fmt}.duckdb"))
        with timer() as base:
            con.execute(f"CREATE TABLE t AS SELECT * FROM {reader}('{path}')")
        con.close()
        with Store.open(Settings(db=work / f"ours-{fmt}.duckdb")) as store, timer() as ours:
            r = ingest(store, path, "bench", fields=fields, labels=["ham", "spam"])
        assert r.accepted == n, r
        print(ratio_line(f"{fmt}: checked ingest", ours["s"], base["s"], n, f"bare {reader}"))
        figures[fmt] = {"ours_s": ours["s"], "bare_s": base["s"], "cost_ratio": ours["s"] / base["s"],
                        "ours_rows_per_s": n / ours["s"], "bare_rows_per_s": n / base["s"]}
    shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
