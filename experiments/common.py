"""The WRENCH YouTube setup the experiments share: a fresh store with the published split, our LFs' votes and
the label model's weak labels; plus a results writer."""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cli.common import quiet_third_party
from curation.ingest import FieldMap, ingest
from curation.settings import Settings
from curation.splits import make_split
from curation.store import Store
from curation.versions import load_snapshot, snapshot
from labeling.weak import apply_lfs, fit_label_model

ROOT = Path(__file__).resolve().parent.parent
WRENCH = ROOT / "data" / "youtube-spam" / "wrench" / "youtube.jsonl"
LFS = ROOT / "examples" / "youtube_lfs.py"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
LABELS = ["ham", "spam"]
DATASET = "wrench"


@dataclass
class Wrench:
    store: Store
    frame: pl.DataFrame          # the snapshot: gold labels everywhere, weak labels from our LFs + label model
    manifest: dict
    split_report: dict
    label_model: dict
    workdir: Path

    @property
    def clean_test_ids(self) -> set[int]:
        """Test rows with no duplicate in another split (the leakage-free subset)."""
        return set(self.split_report["clean_ids_by_split"]["test"])


def wrench_setup(label_model: str = "snorkel", seed: int = 0) -> Wrench:
    """Ingest the WRENCH split (gold labels on every row), keep its published split (it leaks, so the report
    names the leakage-free test rows), apply the tutorial's LFs and fit the label model on train."""
    quiet_third_party()
    workdir = Path(tempfile.mkdtemp(prefix="curate-exp-"))
    store = Store.open(Settings(db=workdir / "exp.duckdb"))
    ingest(store, WRENCH, DATASET, fields=FieldMap(id="id", label="label"), labels=LABELS)
    report = make_split(store, DATASET, from_column="split")
    apply_lfs(store, DATASET, LFS)
    lm = fit_label_model(store, DATASET, label_model, seed=seed)
    frame, manifest = load_snapshot(snapshot(store, DATASET)["path"])
    return Wrench(store, frame, manifest, report, lm, workdir)


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"
