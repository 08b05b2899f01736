"""Shared benchmark helpers: the YouTube comment corpus, sampled to any size, a timer, and `figure` (one row of
the summary table that `python -m benchmarks` prints)."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parent.parent
SEED_TASKS = ROOT / "data" / "self-instruct-seed" / "seed_tasks.jsonl"
RAW = ROOT / "data" / "youtube-spam" / "raw"
WORK = ROOT / ".bench"


def youtube() -> pl.DataFrame:
    """The 1,956 comments: COMMENT_ID, AUTHOR, DATE, CONTENT, CLASS."""
    import polars as pl

    return pl.concat([pl.read_csv(p) for p in sorted(RAW.glob("*.csv"))])


def sample_comments(n: int, seed: int = 0) -> pl.DataFrame:
    """`n` rows sampled with replacement from the YouTube comments, with unique ids."""
    import numpy as np
    import polars as pl

    df = youtube()
    idx = np.random.default_rng(seed).integers(0, df.height, n)
    return df[idx].with_columns(pl.format("c{}", pl.int_range(n)).alias("COMMENT_ID"))


@contextmanager
def timer() -> Iterator[dict]:
    t = {"s": 0.0}
    start = time.perf_counter()
    yield t
    t["s"] = time.perf_counter() - start


def ratio_line(name: str, ours_s: float, base_s: float, rows: int, base_name: str) -> str:
    return (f"{name:<34} ours {rows / ours_s:>12,.0f} rows/s ({ours_s:6.2f} s)   {base_name} "
            f"{rows / base_s:>12,.0f} rows/s ({base_s:6.2f} s)   cost ×{ours_s / base_s:.2f}")


# -- figures: what every benchmark hands the runner's summary table ---------------------------------------
GOAL_OPS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}


def figure(name: str, value: float | None, unit: str, *, baseline: float | None = None, baseline_name: str = "",
           ratio: float | None = None, goal: tuple[str, str, float] | None = None,
           note: str = "") -> dict:
    """One figure for `python -m benchmarks`' summary table, as a plain JSON-ready dict:

    `name`, `value` (measured) and `unit`; `baseline` (the same quantity measured in the same run by
    `baseline_name`, same unit); `ratio` (default value / baseline; pass it explicitly where the figure is a cost
    ratio such as ours_s / bare_s); `goal` as `(on, op, target)` with `on` in {"value", "ratio"} and `op` in
    >=, <=, >, < — e.g. `("ratio", ">=", 3)` or `("value", "<=", 20)`; `met` is then True/False, or None where the
    goal does not apply (no goal, or nothing measured)."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    goal_text, met = "", None
    if goal is not None:
        on, op, target = goal
        if on not in ("value", "ratio") or op not in GOAL_OPS:
            raise ValueError(f"figure {name!r}: goal {goal!r}; expected (value|ratio, >=|<=|>|<, number)")
        goal_text = f"{GOAL_OPS[op]} ×{target:g}" if on == "ratio" else f"{GOAL_OPS[op]} {target:g} {unit}"
        x = ratio if on == "ratio" else value
        if x is not None:
            met = bool({">=": x >= target, "<=": x <= target, ">": x > target, "<": x < target}[op])
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "baseline_name": baseline_name,
            "ratio": ratio, "goal": goal_text, "met": met, "note": note}


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if math.isnan(x):
        return "nan"
    a = abs(x)
    return f"{x:,.0f}" if a >= 1000 else f"{x:.1f}" if a >= 10 else f"{x:.4g}"


def summary_rows(figures: list[dict]) -> list[list[str]]:
    """Table rows: figure | measured | baseline (same run) | ratio | goal | met."""
    rows = []
    for f in figures:
        base = f"{_num(f['baseline'])} {f['unit']} ({f['baseline_name']})" if f.get("baseline") is not None \
            else (f.get("baseline_name") or "–")
        ratio = f"×{f['ratio']:.2f}" if f.get("ratio") is not None else "–"
        met = {True: "met", False: "NOT MET", None: "–"}[f.get("met")]
        name = f["name"] + (f" [{f['note']}]" if f.get("note") else "")
        rows.append([name, f"{_num(f['value'])} {f['unit']}", base, ratio, f.get("goal") or "–", met])
    return rows


def summary_table(figures: list[dict], extra_rows: list[list[str]] | None = None) -> str:
    """A plain-text table of figures (and extra rows, e.g. benchmarks with no summary) for the terminal."""
    head = ["figure", "measured", "baseline (same run)", "ratio", "goal", "met"]
    rows = summary_rows(figures) + (extra_rows or [])
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def latency_stats(xs: list[float], *, median: str = "median_ms") -> dict:
    """n, median (under the key `median`), p95 and max of latencies in seconds, in milliseconds."""
    xs = sorted(xs)
    if not xs:
        return {"n": 0, median: None, "p95_ms": None, "max_ms": None}
    return {"n": len(xs), median: round(1000 * statistics.median(xs), 2),
            "p95_ms": round(1000 * xs[min(len(xs) - 1, int(0.95 * len(xs)))], 2), "max_ms": round(1000 * xs[-1], 2)}


def webhook_event(i: int, record_id: int, input_hash: str) -> dict:
    """A Label Studio ANNOTATION_CREATED webhook body for record `record_id` (spam/ham alternating)."""
    stamp = "2026-01-01T00:00:00Z"
    return {"action": "ANNOTATION_CREATED", "project": {"id": 1},
            "annotation": {"id": 10_000 + i, "task": 50_000 + i, "completed_by": 1, "created_at": stamp,
                           "updated_at": stamp, "lead_time": 2.0, "was_cancelled": False,
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": ["ham" if i % 2 else "spam"]}}]},
            "task": {"id": 50_000 + i, "project": 1, "data": {"text": "x", "record_id": record_id,
                                                              "input_hash": input_hash}}}


def seed_conversations() -> list[list[dict]]:
    """The 175 bundled self-instruct seed tasks → [user: instruction (+ input), assistant: output]."""
    convs = []
    for line in SEED_TASKS.read_text().splitlines():
        row = json.loads(line)
        inst = row["instances"][0]
        user = row["instruction"] + (f"\n\n{inst['input']}" if inst["input"] else "")
        convs.append([{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"]}])
    return convs
