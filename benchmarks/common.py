"""Shared benchmark helpers: the YouTube comment corpus, sampled to any size, and a timer."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "data" / "youtube-spam" / "raw"
WORK = ROOT / ".bench"


def youtube() -> pl.DataFrame:
    """The 1,956 comments: COMMENT_ID, AUTHOR, DATE, CONTENT, CLASS."""
    return pl.concat([pl.read_csv(p) for p in sorted(RAW.glob("*.csv"))])


def sample_comments(n: int, seed: int = 0) -> pl.DataFrame:
    """`n` rows sampled with replacement from the YouTube comments, with unique ids."""
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
