"""Contamination check: N records (prompt + response) against an evaluation set of M records, 13-grams.

Ours: `curation.contamination` (hashed token ids, rolling n-gram hash, sorted search in the eval set's hash
table, coverage by a difference array), in blocks of 100k records as `check_contamination` runs it. Baseline,
in the same run: a plain Python n-gram-set check (tokens by `normalise_tokens`, a set of n-gram tuples from
the eval set, per record the n-grams looked up and the covered tokens counted) on a subsample, extrapolated to
N. Texts: Zipf-distributed words over a 50k vocabulary (prompt ~25 tokens, response ~40); 1% of the records
carry a 20-token passage of an eval record (planted), which both must find.

`python -m benchmarks.bench_contamination [--records 1000000] [--eval 10000] [--baseline 20000]`
"""

import argparse
import time

import numpy as np
import polars as pl

from curation.contamination import (
    BLOCK_RECORDS,
    DEFAULT_NGRAM,
    eval_ngram_set,
    find_contamination,
    normalise_tokens,
)

VOCAB = np.array([f"w{i}" for i in range(50_000)])


def _texts(rng: np.random.Generator, n: int, mean_len: int) -> list[str]:
    lens = rng.integers(mean_len // 2, mean_len * 3 // 2 + 1, n)
    ids = np.minimum(rng.zipf(1.2, int(lens.sum())) - 1, len(VOCAB) - 1)
    words = VOCAB[ids]
    cut = np.cumsum(lens)[:-1]
    return [" ".join(p) + "." for p in np.split(words, cut)]


def make_block(rng: np.random.Generator, n: int, eval_texts: list[str], planted: float = 0.01
               ) -> dict[str, list[str]]:
    prompts, responses = _texts(rng, n, 25), _texts(rng, n, 40)
    for i in np.flatnonzero(rng.random(n) < planted):
        toks = eval_texts[rng.integers(len(eval_texts))].split()
        responses[i] = responses[i] + " " + " ".join(toks[:20])
    return {"prompt": prompts, "response": responses}


def baseline(fields: dict[str, list[str]], eval_texts: list[str], n: int) -> tuple[int, float]:
    """Plain Python: n-gram tuple sets. Returns (records flagged, seconds excluding the eval set build)."""
    grams: set[tuple[str, ...]] = set()
    for t in eval_texts:
        tok = normalise_tokens(t)
        grams.update(tuple(tok[i:i + n]) for i in range(len(tok) - n + 1))
    t0 = time.perf_counter()
    flagged = 0
    for rec in zip(*fields.values()):
        total = covered = hits = 0
        for text in rec:
            tok = normalise_tokens(text)
            cov = [False] * len(tok)
            for i in range(len(tok) - n + 1):
                if tuple(tok[i:i + n]) in grams:
                    hits += 1
                    for j in range(i, i + n):
                        cov[j] = True
            total += len(tok)
            covered += sum(cov)
        flagged += hits > 0
    return flagged, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--baseline", type=int, default=20_000, help="records the Python baseline checks")
    ap.add_argument("--quick", action="store_true", help="100k records, 5k for the baseline")
    a = ap.parse_args(argv)
    if a.quick:
        a.records, a.baseline = 100_000, 5_000
    rng = np.random.default_rng(0)
    ev = _texts(rng, a.eval, 60)
    t0 = time.perf_counter()
    table = eval_ngram_set(ev, DEFAULT_NGRAM)
    eval_s = time.perf_counter() - t0
    match_s, flagged, gen_s = 0.0, 0, 0.0
    first_block = None
    for lo in range(0, a.records, BLOCK_RECORDS):
        n = min(BLOCK_RECORDS, a.records - lo)
        g = time.perf_counter()
        block = make_block(rng, n, ev)
        gen_s += time.perf_counter() - g
        if first_block is None:
            first_block = block
        t = time.perf_counter()
        res = find_contamination({k: pl.Series(k, v) for k, v in block.items()}, table, DEFAULT_NGRAM)
        match_s += time.perf_counter() - t
        flagged += int((res.matches > 0).sum())
    nb = min(a.baseline, len(first_block["prompt"]))
    sub = {k: v[:nb] for k, v in first_block.items()}
    ours_sub = find_contamination({k: pl.Series(k, v) for k, v in sub.items()}, table, DEFAULT_NGRAM)
    base_flagged, base_s = baseline(sub, ev, DEFAULT_NGRAM)
    base_total = base_s * a.records / nb
    ours_total = eval_s + match_s
    out = {"records": a.records, "eval_records": a.eval, "eval_ngrams": len(table), "ngram": DEFAULT_NGRAM,
           "eval_set_s": round(eval_s, 2), "match_s": round(match_s, 2), "ours_total_s": round(ours_total, 2),
           "records_per_s": round(a.records / match_s), "flagged": flagged,
           "baseline_records": nb, "baseline_s": round(base_s, 2), "baseline_extrapolated_s": round(base_total, 1),
           "speedup": round(base_total / ours_total, 1),
           "same_flags_on_subsample": int((ours_sub.matches > 0).sum()) == base_flagged,
           "generate_s_not_counted": round(gen_s, 1)}
    print(f"contamination {a.records:,} records vs {a.eval:,} eval records ({len(table):,} {DEFAULT_NGRAM}-grams): "
          f"ours {ours_total:.1f} s ({a.records / match_s:,.0f} records/s matching); plain Python n-gram sets "
          f"{base_s:.1f} s on {nb:,} -> {base_total / 60:.1f} min extrapolated; x{base_total / ours_total:.0f}; "
          f"{flagged:,} flagged; same flags on the subsample: {out['same_flags_on_subsample']}")
    return out


if __name__ == "__main__":
    main()
