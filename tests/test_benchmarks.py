"""The benchmark plumbing: figures and goals, the runner's summary table (modules with and without figures,
failed, skipped, folded-in JSON), the GPU script's polars stand-in, and the GPU script's tiny CPU run (so the
script that only a GPU machine runs for real cannot rot)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import figure, summary_table

ROOT = Path(__file__).resolve().parent.parent


def test_figure_goals_and_ratio():
    f = figure("scoring", 300.0, "rows/s", baseline=100.0, baseline_name="pipeline", goal=("ratio", ">=", 3))
    assert f["ratio"] == 3.0 and f["met"] is True and f["goal"] == "≥ ×3"
    f = figure("ingest", 5.0, "s", baseline=1.0, goal=("ratio", "<=", 2))
    assert f["ratio"] == 5.0 and f["met"] is False
    assert figure("dedup", 28.9, "s", goal=("value", "<=", 20))["met"] is False
    assert figure("dedup", None, "s", goal=("value", "<=", 20))["met"] is None       # nothing measured
    assert figure("info", 1.0, "x")["met"] is None and figure("info", 1.0, "x")["goal"] == ""
    assert figure("cost", 6.0, "s", baseline=1.0, ratio=6.65)["ratio"] == 6.65       # an explicit ratio wins
    with pytest.raises(ValueError, match="goal"):
        figure("bad", 1.0, "s", goal=("speed", "=>", 1))
    json.dumps(f)                                                                     # JSON-ready


def test_summary_table_lists_every_figure_and_the_others():
    from benchmarks.__main__ import collect

    results = {"machine": {}, "_runner": {},
               "ingest": {"rows": 10, "figures": [figure("ingest csv", 2.0, "s", baseline=1.0, goal=("ratio", "<=", 2))]},
               "lfs": {"rows": 10},                                   # returns no figures yet
               "push": {"error": "Traceback ..."}, "gpu": {"skipped": "no CUDA device here: run it elsewhere"}}
    figs, extra = collect(results, [])
    assert [f["benchmark"] for f in figs] == ["ingest"] and figs[0]["met"] is True
    names = [r[0] for r in extra]
    assert names == ["lfs: no summary (see its output / results.json)", "push: FAILED",
                     "gpu: skipped (no CUDA device here)"]
    table = summary_table(figs, extra).splitlines()
    assert table[0].split() == ["figure", "measured", "baseline", "(same", "run)", "ratio", "goal", "met"]
    assert "×2.00" in table[2] and "≤ ×2" in table[2] and table[2].rstrip().endswith("met")
    assert len(table) == 2 + 1 + 3


def test_runner_folds_in_a_gpu_json_without_running(tmp_path, capsys):
    from benchmarks.__main__ import main

    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"figures": [figure("GPU: classification pool scoring", 9000.0, "rows/s",
                                                  baseline=2000.0, baseline_name="pipeline",
                                                  goal=("ratio", ">=", 3))]}))
    out = tmp_path / "results.json"
    assert main(["--no-run", "--out", str(out), "--include", str(gpu)]) == 0
    text = capsys.readouterr().out
    assert "GPU: classification pool scoring (gpu.json)" in text and "×4.50" in text and "goals met: 1 of 1" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["goals_met"] == 1 and summary["table"][1][-1] == "met"


def test_runner_list_and_unknown_name(capsys):
    from benchmarks.__main__ import DEFAULT, main

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in [*DEFAULT, "gpu"])
    with pytest.raises(SystemExit):
        main(["--only", "nope"])
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err


def test_gpu_script_stands_in_for_a_missing_polars():
    code = ("import sys; sys.modules['polars'] = None\n"
            "from benchmarks.gpu import polars_standin\n"
            "assert polars_standin()\n"
            "import training.train, training.score, training.sft\n"
            "import polars\n"
            "try:\n    polars.DataFrame()\nexcept ImportError as e:\n    print('raised', e)\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "raised polars is not installed here" in r.stdout


@pytest.mark.slow
def test_gpu_script_tiny_cpu_run(tmp_path, one_torch_thread):
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    result = gpu.main(["--device", "cpu", "--tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert result["failed"] == [] and saved["failed"] == []
    assert saved["env"]["device"] == "cpu" and saved["env"]["torch"] and saved["env"]["transformers"]
    names = [f["name"] for f in saved["figures"]]
    assert len(names) == 5 and all(n.startswith("CPU plumbing run") for n in names)
    assert all(f["value"] > 0 and f["baseline"] > 0 and f["ratio"] > 0 for f in saved["figures"])
    assert all(f["met"] is None for f in saved["figures"])           # goals are judged on CUDA only
    assert saved["cls_scoring"]["max_abs_prob_diff"] < 1e-4          # the same model on both sides, fp32
    assert saved["sft"]["max_abs_nll_diff"] < 1e-3                   # batched NLL equals the naive loop's
    assert saved["cls_training"]["train_rows"] == gpu.TINY.cls_train


def test_ingest_benchmark_breakdown_runs_on_a_small_file(tmp_path, monkeypatch):
    """The plumbing of `bench_ingest --breakdown`: both formats, the floor writes the store's two tables."""
    from benchmarks import bench_ingest

    monkeypatch.setattr(bench_ingest, "WORK", tmp_path)
    out = bench_ingest.main(["--rows", "2000", "--breakdown"])
    for fmt in ("csv", "parquet"):
        parts = out[fmt]["breakdown"]
        assert any(p.startswith("floor") for p in parts) and "unique-id rule" in parts
        assert all(v["s"] > 0 and v["cpu_s"] >= 0 for v in parts.values())
