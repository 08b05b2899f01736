"""Run the benchmarks and print ONE summary table of every figure beside its baseline and goal.

    python -m benchmarks [--quick] [--only ingest,dedup] [--all] [--list] [--include FILE ...] [--no-run]

Each `benchmarks/bench_<name>.py` has `main(argv) -> dict` and prints its figures beside the baseline it measures
in the same run. A module whose result holds `"figures"` (a list of `benchmarks.common.figure` dicts) feeds the
summary table; one that does not yet is listed as "no summary" (its full result is still in the JSON). `gpu` is
`benchmarks/gpu.py`: it runs only where CUDA is present (elsewhere it is skipped with the reason); its JSON from a
GPU machine can be folded into the table with `--include FILE`.

Default set (2 shared cores, full sizes; `--quick` runs each in well under a minute): see DEFAULT and `--list`.
Opt-in (`--all` or `--only`): push (starts a real Label Studio), webhook (a real training round, minutes), sft (a
135M LLM trained on CPU), gpu (CUDA only).

Writes all results to `--out` (default `.bench/results.json`) and the table to `summary.json` beside it.
"""

import argparse
import importlib
import json
import platform
import time
import traceback
from pathlib import Path

from benchmarks.common import summary_rows, summary_table

HERE = Path(__file__).resolve().parent

DEFAULT = ["ingest", "lfs", "dedup", "contamination", "training"]
OPT_IN = {"push": "starts a real Label Studio (its own venv, ~1 GB) and pushes 10k tasks",
          "webhook": "a real training round on CPU under webhook traffic (several minutes)",
          "sft": "LoRA SFT of SmolLM2-135M on CPU beside Trainer (GGUF conversion once, then minutes)",
          "gpu": "GPU figures (benchmarks/gpu.py); needs CUDA"}
# wall time on the 2-core development machine (full / --quick), shown by --list: the --quick times of ingest, lfs
# and dedup measured under load; the rest are estimates from docs/benchmarks.md, not remeasured by this runner
TYPICAL = {"ingest": "~40 s / ~8 s", "lfs": "~1-2 min / ~6 s", "dedup": "~1.5 min / ~15 s",
           "contamination": "~1 min / ~10 s", "training": "~4 min / ~1 min", "push": "~3 min + install",
           "webhook": "~4 min", "sft": "~3-5 min", "gpu": "~3 min on an H200"}


def machine() -> dict:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": gpu}


def known() -> list[str]:
    return sorted([p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")] + ["gpu"])


def module_name(name: str) -> str:
    return "benchmarks.gpu" if name == "gpu" else f"benchmarks.bench_{name}"


def skip_reason(name: str) -> str | None:
    if name == "gpu":
        import torch

        if not torch.cuda.is_available():
            return ("no CUDA device here: run benchmarks/gpu.py on a GPU machine (docs/benchmarks.md) and fold its "
                    "JSON in with --include FILE")
    return None


def figures_of(result) -> list[dict] | None:
    """The summary figures a benchmark returned, or None when it returns none (yet)."""
    figs = result.get("figures") if isinstance(result, dict) else None
    if isinstance(figs, list) and all(isinstance(f, dict) and "name" in f and "value" in f for f in figs):
        return figs
    return None


def collect(results: dict, includes: list[Path]) -> tuple[list[dict], list[list[str]]]:
    """(figures with their benchmark's name, extra table rows for benchmarks without figures / failed /
    skipped)."""
    figs, extra = [], []
    for name, r in results.items():
        if name in ("machine", "_runner"):
            continue
        if isinstance(r, dict) and "error" in r and len(r) == 1:
            extra.append([f"{name}: FAILED", "–", "–", "–", "–", "–"])
        elif isinstance(r, dict) and "skipped" in r and len(r) == 1:
            extra.append([f"{name}: skipped ({r['skipped'].split(':')[0]})", "–", "–", "–", "–", "–"])
        elif (f := figures_of(r)) is None:
            extra.append([f"{name}: no summary (see its output / results.json)", "–", "–", "–", "–", "–"])
        else:
            figs += [x | {"benchmark": name} for x in f]
    for path in includes:
        data = json.loads(path.read_text())
        for x in figures_of(data) or []:
            figs.append(x | {"benchmark": f"{path.name}", "name": f"{x['name']} ({path.name})"})
    return figs, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated names, e.g. ingest,dedup (any known name)")
    ap.add_argument("--all", action="store_true", help="the default set and the opt-in ones")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--include", type=Path, action="append", default=[],
                    help="a JSON with a `figures` list from elsewhere (e.g. gpu.json from a GPU machine)")
    ap.add_argument("--no-run", action="store_true", help="rebuild the table from --out's earlier results")
    ap.add_argument("--out", type=Path, default=HERE.parent / ".bench" / "results.json")
    args = ap.parse_args(argv)
    names = known()
    if args.list:
        for n in names:
            where = "default" if n in DEFAULT else f"opt-in: {OPT_IN.get(n, 'not in the default set')}"
            print(f"{n:<14} {TYPICAL.get(n, 'not timed'):<22} {where}")
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"unknown benchmark(s) {unknown}; known: {names}")
    else:
        wanted = names if args.all else [n for n in DEFAULT if n in names]
    failed: list[str] = []
    if args.no_run:
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    else:
        results = {"machine": machine(), "_runner": {"quick": args.quick, "seconds": {}}}
        for name in wanted:
            print(f"\n=== {name} ===", flush=True)
            if reason := skip_reason(name):
                print(f"skipped: {reason}")
                results[name] = {"skipped": reason}
                continue
            start = time.perf_counter()
            try:
                argv_b = (["--tiny"] if name == "gpu" else ["--quick"]) if args.quick else []
                results[name] = importlib.import_module(module_name(name)).main(argv_b)
            except Exception:  # noqa: BLE001 - a failed benchmark is reported and counted, the others still run
                traceback.print_exc()
                failed.append(name)
                results[name] = {"error": traceback.format_exc(limit=3)}
            secs = time.perf_counter() - start
            results["_runner"]["seconds"][name] = round(secs, 1)
            print(f"({name}: {secs:.0f} s)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
    figs, extra = collect(results, args.include)
    print("\n=== summary: every figure beside its same-run baseline and its goal ===")
    print(summary_table(figs, extra))
    n_goal = sum(f.get("met") is not None for f in figs)
    n_met = sum(f.get("met") is True for f in figs)
    print(f"goals met: {n_met} of {n_goal} judged ({len(figs)} figures)")
    summary = {"machine": results.get("machine"), "quick": (results.get("_runner") or {}).get("quick"),
               "figures": figs, "others": [r[0] for r in extra], "failed": failed,
               "seconds": (results.get("_runner") or {}).get("seconds"), "goals_met": n_met, "goals_judged": n_goal,
               "table": [["figure", "measured", "baseline (same run)", "ratio", "goal", "met"], *summary_rows(figs)]}
    out = args.out.parent / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    if not args.no_run:
        print(f"\nresults written to {args.out}, the summary to {out}; {len(wanted) - len(failed)} ran or skipped, "
              f"{len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
