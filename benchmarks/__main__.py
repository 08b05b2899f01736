"""Run every benchmark: `python -m benchmarks [--quick] [--only ingest,lfs] [--out results.json]`.

Each `benchmarks/bench_<name>.py` has `main(argv) -> dict` and prints its figures beside the baseline it
measures in the same run. This runner calls them in turn and writes all figures to one JSON file.
"""

import argparse
import importlib
import json
import platform
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": gpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated names, e.g. ingest,lfs")
    ap.add_argument("--out", type=Path, default=HERE.parent / ".bench" / "results.json")
    args = ap.parse_args(argv)
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"unknown benchmark(s) {unknown}; known: {names}")
        names = wanted
    results, failed = {"machine": machine()}, []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            results[name] = importlib.import_module(f"benchmarks.bench_{name}").main(["--quick"] if args.quick else [])
        except Exception:  # noqa: BLE001 - a failed benchmark is reported and counted, the others still run
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=3)}
        print(f"({name}: {time.perf_counter() - start:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nfigures written to {args.out}; {len(names) - len(failed)} ran, {len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
