"""Contract-checked ingest vs a bare DuckDB load of the same file, in the same run.

Ours: read, field mapping, every contract rule, quarantine, normalised-text hash, one transaction.
Baseline: `CREATE TABLE t AS SELECT * FROM read_csv(...)` / `read_parquet(...)` into a fresh DuckDB file.
Goal: the checked ingest costs at most 2x the bare load. Each figure is printed beside the baseline measured in
the same run, as wall-clock and as CPU time of the process (all threads): on a shared machine the CPU ratio is the
steadier of the two. With --repeat N each side is run N times, alternating, and the fastest run of each counts.

`--breakdown` also measures where the time goes, each part alone over the same file: the floor (the same rows
written into the store's two tables, records and gold_labels, by DuckDB alone with no checks, MD5 of the raw
text), then reading, mapping + row-local rules, text normalisation, and the unique-id rule.
"""

import argparse
import shutil
import time

import duckdb

from benchmarks.common import WORK, figure, ratio_line, sample_comments, timer
from curation.ingest import FieldMap, SourceIds, ingest, open_source, prepare_batch
from curation.settings import Settings
from curation.store import Store

GOAL = 2.0


def _bare(path, reader: str, db) -> tuple[float, float]:
    con = duckdb.connect(str(db))
    cpu = time.process_time()
    with timer() as t:
        con.execute(f"CREATE TABLE t AS SELECT * FROM {reader}('{path}')")
    cpu = time.process_time() - cpu
    con.close()
    return t["s"], cpu


def _ours(path, db, fields: FieldMap, n: int) -> tuple[float, float]:
    with Store.open(Settings(db=db)) as store:
        cpu = time.process_time()
        with timer() as t:
            r = ingest(store, path, "bench", fields=fields, labels=["ham", "spam"])
        cpu = time.process_time() - cpu
    assert r.accepted == n, r
    return t["s"], cpu


def _floor(path, reader: str, db, fields: FieldMap) -> tuple[float, float]:
    """The same rows written into the store's records and gold_labels by DuckDB alone (MD5 of the raw text, the
    other column as JSON meta), in one transaction: no rule, no normalisation, no Python. The file is read once
    into a temporary table, as a SQL-only ingest writing two tables would."""
    Store.open(Settings(db=db)).close()  # the store's schema; the store's own connection may not read files
    lit = str(path).replace("'", "''")
    text, rid, src = f'"{fields.text}"', "rowid + 1", "src"
    con = duckdb.connect(str(db))
    cpu = time.process_time()
    with timer() as t:
        con.execute(f"CREATE TEMP TABLE src AS SELECT * FROM {reader}('{lit}')")  # read once; rowid = row - 1
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, "
                    f"origin, ingest_id, source_row, ingested_at) SELECT {rid}, 'bench', \"{fields.id}\"::VARCHAR, "
                    f"{text}, \"{fields.group}\", json_object('DATE', \"DATE\"), substr(md5({text}), 1, 16), "
                    f"'ingest', 1, {rid}, now() FROM {src}")
        con.execute("INSERT INTO store.gold_labels (record_id, label, source, updated_at) "
                    f"SELECT {rid}, \"{fields.label}\"::VARCHAR, 'imported', now() FROM {src}")
        con.execute("COMMIT")
    cpu = time.process_time() - cpu
    con.close()
    return t["s"], cpu


def _stages(path, fields: FieldMap, db) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of each part of the checked ingest alone, over the whole file, in one thread."""
    out = {}

    def run(name, fn):
        cpu = time.process_time()
        with timer() as t:
            r = fn()
        out[name] = (t["s"], time.process_time() - cpu)
        return r

    batches = run("read into Arrow/polars", lambda: list(open_source(path, fields).batches))
    prepared = run("mapping, row rules, normalised text", lambda: [prepare_batch(b, fields, ["ham", "spam"], 20_000)
                                                                    for b in batches])
    with Store.open(Settings(db=db)) as store:
        ids = SourceIds(store.cursor(), "bench", 1)
        run("unique-id rule", lambda: [ids.flag(df) for df, _ in prepared if df is not None])
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k rows")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side; the fastest counts")
    ap.add_argument("--breakdown", action="store_true", help="also where the time goes (see the module docstring)")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.rows
    work = WORK / "ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    df = sample_comments(n)
    df.write_csv(work / "in.csv")
    df.write_parquet(work / "in.parquet")
    fields = FieldMap(text="CONTENT", label="CLASS", id="COMMENT_ID", group="AUTHOR")
    figures = {"rows": n, "goal_ratio": GOAL, "repeat": args.repeat}
    print(f"ingest benchmark: {n:,} YouTube comments (sampled), 2 formats, goal: checked ingest ≤ {GOAL:g}× the "
          f"bare load (best of {args.repeat})")
    for fmt, reader in (("csv", "read_csv"), ("parquet", "read_parquet")):
        path = work / f"in.{fmt}"
        bare, ours = [], []
        for k in range(args.repeat):
            for f in work.glob("*.duckdb*"):
                f.unlink()
            bare.append(_bare(path, reader, work / f"bare-{fmt}-{k}.duckdb"))
            ours.append(_ours(path, work / f"ours-{fmt}-{k}.duckdb", fields, n))
        base_s, base_cpu = min(b[0] for b in bare), min(b[1] for b in bare)
        ours_s, ours_cpu = min(o[0] for o in ours), min(o[1] for o in ours)
        ratio, cpu_ratio = ours_s / base_s, ours_cpu / base_cpu
        print(ratio_line(f"{fmt}: checked ingest", ours_s, base_s, n, f"bare {reader}")
              + f"   {'meets' if ratio <= GOAL else 'misses'} goal ≤ ×{GOAL:g}")
        print(f"{'':<34} cpu  {ours_cpu:6.2f} s   bare {base_cpu:6.2f} s   cpu cost ×{cpu_ratio:.2f}   "
              f"{'meets' if cpu_ratio <= GOAL else 'misses'} goal ≤ ×{GOAL:g}")
        figures[fmt] = {"ours_s": ours_s, "bare_s": base_s, "cost_ratio": ratio, "ours_cpu_s": ours_cpu,
                        "bare_cpu_s": base_cpu, "cpu_cost_ratio": cpu_ratio, "goal_ratio": GOAL,
                        "meets_goal": ratio <= GOAL, "ours_rows_per_s": n / ours_s, "bare_rows_per_s": n / base_s}
        if args.breakdown:
            parts = {"floor: the store's two tables written by DuckDB alone": _floor(path, reader, work / f"floor-{fmt}.duckdb", fields),
                     **_stages(path, fields, work / f"stages-{fmt}.duckdb")}
            for part, (s, c) in parts.items():
                print(f"{'':<4}{part:<56} {s:6.2f} s  ×{s / base_s:5.2f}   cpu {c:6.2f} s  ×{c / base_cpu:5.2f}")
            figures[fmt]["breakdown"] = {p: {"s": s, "cpu_s": c, "ratio": s / base_s, "cpu_ratio": c / base_cpu}
                                         for p, (s, c) in parts.items()}
    shutil.rmtree(work, ignore_errors=True)
    figures["figures"] = [
        figure(f"ingest {n:,} rows {fmt}, {kind}", figures[fmt][f"ours{sfx}_s"], "s",
               baseline=figures[fmt][f"bare{sfx}_s"], baseline_name=f"bare {reader}",
               goal=("ratio", "<=", GOAL))
        for fmt, reader in (("csv", "read_csv"), ("parquet", "read_parquet"))
        for kind, sfx in (("wall", ""), ("CPU time", "_cpu"))]
    return figures


if __name__ == "__main__":
    main()
