"""Weak-label targets for the end model: soft probabilities vs the label model's hard label, margin weighting."""

import polars as pl
import pytest

from training.config import TrainConfig
from training.data import build_splits

LABELS = ["ham", "spam"]


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "record_id": [1, 2, 3, 4, 5], "text": ["a", "b", "c", "d", "e"],
        "label": [None, None, "spam", "ham", "spam"],
        "weak_label": ["spam", "ham", None, None, None],          # record 2: a tie the label model broke to ham
        "weak_probs": [[0.2, 0.8], [0.5, 0.5], None, None, None],
        "split": ["train", "train", "train", "val", "test"],
        "origin": ["ingest"] * 5, "leaks": [False] * 5,
    }, schema_overrides={"weak_probs": pl.List(pl.Float64)})


def test_defaults_are_hard_margin_weighted_targets():
    c = TrainConfig()
    assert (c.weak_targets, c.weak_confidence_weighting, c.epochs, c.patience) == ("hard", True, 10, 3)
    tr = build_splits(_frame(), LABELS, c)["train"]
    assert tr.record_ids.tolist() == [1, 2, 3]
    assert tr.targets.tolist() == [[0, 1], [1, 0], [0, 1]]               # the stored label; gold one-hot
    assert tr.weights.tolist() == pytest.approx([0.6, 0.0, c.gold_weight])  # a tie teaches nothing


@pytest.mark.parametrize("targets,weighting,expect_t,expect_w", [
    ("soft", False, [[0.2, 0.8], [0.5, 0.5]], [1.0, 1.0]),
    ("soft", True, [[0.2, 0.8], [0.5, 0.5]], [0.6, 0.0]),
    ("hard", False, [[0, 1], [1, 0]], [1.0, 1.0]),
])
def test_weak_target_modes(targets, weighting, expect_t, expect_w):
    tr = build_splits(_frame(), LABELS, TrainConfig(label_sources="weak", weak_targets=targets,
                                                    weak_confidence_weighting=weighting))["train"]
    assert tr.record_ids.tolist() == [1, 2]
    assert tr.targets.tolist() == [pytest.approx(t) for t in expect_t]
    assert tr.weights.tolist() == pytest.approx(expect_w)


def test_hard_without_stored_label_uses_the_argmax():
    f = _frame().drop("weak_label")
    tr = build_splits(f, LABELS, TrainConfig(label_sources="weak", weak_confidence_weighting=False))["train"]
    assert tr.targets.tolist() == [[0, 1], [1, 0]]
