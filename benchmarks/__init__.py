"""Benchmarks: each module runs with `python -m benchmarks.<name> [--quick]` and prints figures beside baselines."""
