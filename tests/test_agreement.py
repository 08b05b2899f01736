"""Agreement and consensus: hand-computed values, the packages' own outputs, Dawid–Skene on simulated
annotators, and the store edge (annotations import, gold provenance)."""

import json

import numpy as np
import pytest

from labeling.agreement import (
    agreement_report,
    dataset_agreement,
    fleiss_category_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    ordinal_alpha,
    pairwise_cohen,
)
from labeling.consensus import apply_consensus, consensus_labels, record_gold
from tests.helpers import make_dataset

# Fleiss (1971) / Wikipedia's worked example: 10 items, 14 raters, 5 categories; kappa = 0.210.
FLEISS_COUNTS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                 [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def counts_to_matrix(counts):
    return np.array([[c for c, n in enumerate(row) for _ in range(n)] for row in counts])


def test_fleiss_kappa_worked_example():
    M = counts_to_matrix(FLEISS_COUNTS)
    assert M.shape == (10, 14)
    assert fleiss_kappa(M, 5) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_hand_computed_small():
    # 3 items, 3 raters, 2 classes: [3,0], [2,1], [0,3]; P_i = 1, 1/3, 1 -> P̄ = 7/9; p = (5/9, 4/9),
    # P_e = 41/81; kappa = (7/9 - 41/81) / (1 - 41/81) = (22/81) / (40/81) = 0.55
    M = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1]])
    assert fleiss_kappa(M, 2) == pytest.approx(0.55)
    # category kappas of a 2-class problem equal the overall kappa
    assert fleiss_category_kappa(M, 2) == pytest.approx([0.55, 0.55])


def test_fleiss_kappa_with_missing_answers_ignores_single_answer_items():
    M = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, -1, -1]])
    assert fleiss_kappa(M, 2) == pytest.approx(fleiss_kappa(M[:3], 2))
    assert fleiss_kappa(np.array([[0, -1], [-1, 1]]), 2) is None


def test_krippendorff_alpha_reference_example():
    # Krippendorff's nominal reliability example (4 coders, 12 units, missing data): alpha = 0.743
    nan = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    M = np.array([[-1 if v is None else v - 1 for v in coder] for coder in data]).T
    assert krippendorff_alpha(M, 5) == pytest.approx(0.743, abs=1e-3)


def test_krippendorff_matches_the_package_and_perfect_agreement():
    import krippendorff

    rng = np.random.default_rng(0)
    M = rng.integers(0, 3, size=(40, 4))
    M[rng.random(M.shape) < 0.2] = -1
    R = M.T.astype(float)
    R[R < 0] = np.nan
    keep = (M != -1).sum(axis=1) >= 2
    ref = krippendorff.alpha(reliability_data=R[:, keep], level_of_measurement="nominal")
    assert krippendorff_alpha(M, 3) == pytest.approx(ref)
    same = np.tile(rng.integers(0, 3, size=(20, 1)), (1, 3))
    assert krippendorff_alpha(same, 3) == pytest.approx(1.0)
    assert krippendorff_alpha(np.zeros((5, 3), int), 3) is None      # no variation: undefined


def test_cohen_kappa_hand_computed_and_sklearn():
    from sklearn.metrics import cohen_kappa_score

    # Wikipedia: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    M = np.stack([a, b, -np.ones(50, int)], axis=1)
    M[:5, 2] = a[:5]
    pw = pairwise_cohen(M, 2)
    assert pw["kappa"][0, 1] == pytest.approx(0.4)
    assert pw["kappa"][0, 1] == pytest.approx(cohen_kappa_score(a, b))
    assert pw["agreement"][0, 1] == pytest.approx(0.7)
    assert pw["shared"][0, 1] == 50 and pw["shared"][0, 2] == 5
    assert np.isnan(pw["kappa"][0, 2])         # the 5 shared items are all one class: undefined


def test_ordinal_alpha_of_ratings():
    R = np.array([[5, 5, np.nan], [4, 4, 4], [1, 2, 1], [3, 3, np.nan], [2, 1, 2]], dtype=float)
    a = ordinal_alpha(R)
    assert 0.7 < a <= 1.0
    assert ordinal_alpha(np.array([[1, np.nan], [np.nan, 2]])) is None


def test_agreement_report_shape():
    M = counts_to_matrix(FLEISS_COUNTS)[:, :4] % 2
    r = agreement_report(M, 2, ["ham", "spam"], ["a", "b", "c", "d"])
    assert r["items"] == 10 and r["annotators"] == 4 and len(r["pairs"]) == 6
    assert {p["label"] for p in r["per_label"]} == {"ham", "spam"}
    assert len(r["matrix"]["cohen_kappa"]) == 4
    json.dumps(r)


def simulated_team(accuracies, n=600, k=2, seed=0, per_item=None):
    """Annotators who give the true class with their accuracy, else a uniformly wrong one."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    M = np.empty((n, len(accuracies)), dtype=np.int64)
    for j, acc in enumerate(accuracies):
        right = rng.random(n) < acc
        wrong = (truth + rng.integers(1, k, n)) % k
        M[:, j] = np.where(right, truth, wrong)
    if per_item is not None:           # each item answered by `per_item` random annotators
        for i in range(n):
            drop = rng.choice(len(accuracies), len(accuracies) - per_item, replace=False)
            M[i, drop] = -1
    return M, truth


def test_dawid_skene_recovers_a_careless_annotator():
    M, truth = simulated_team([0.95, 0.9, 0.55, 0.9, 0.6], n=800, seed=1)
    ds = consensus_labels(M, 2, "dawid_skene")
    acc = np.array(ds.annotator_accuracy)
    true_acc = (M == truth[:, None]).mean(axis=0)
    assert np.abs(acc - true_acc).max() < 0.05
    assert int(acc.argmin()) == 2                       # the careless one is found
    mv = consensus_labels(M, 2, "majority")
    assert (ds.labels == truth).mean() >= (mv.labels == truth).mean()


def test_dawid_skene_beats_majority_with_missing_answers():
    # 3-class, 3 of 5 annotators per item, two careless annotators: DS down-weights them
    M, truth = simulated_team([0.95, 0.9, 0.4, 0.35, 0.9], n=1500, k=3, seed=2, per_item=3)
    ds = consensus_labels(M, 3, "dawid_skene")
    mv = consensus_labels(M, 3, "majority")
    mv_acc = (mv.labels == truth).mean()         # ties count as wrong (-1)
    assert (ds.labels == truth).mean() > mv_acc + 0.03
    assert ds.confidence.min() >= 1 / 3 - 1e-9


def test_majority_consensus_ties_and_confidence():
    M = np.array([[0, 0, 1], [0, 1, -1], [1, -1, -1], [-1, -1, -1]])
    c = consensus_labels(M, 2, "majority")
    assert c.labels.tolist() == [0, -1, 1, -1]
    assert c.tie.tolist() == [False, True, False, False]
    assert c.confidence.tolist() == pytest.approx([2 / 3, 0.5, 1.0, 0.0])


def test_record_gold_rule():
    # one annotator (twice): the latest, as before
    assert record_gold([(2, "spam", "a"), (1, "ham", "a")]).method == "latest"
    assert record_gold([(2, "spam", "a"), (1, "ham", "a")]).label == "spam"
    # several: the majority of each annotator's latest; a tie goes to the latest among the tied labels
    g = record_gold([(5, "ham", "c"), (4, "spam", "b"), (3, "spam", "a")])
    assert (g.label, g.method, g.confidence, g.source_ref, g.tie) == ("spam", "majority", 2 / 3, "4", False)
    g = record_gold([(5, "ham", "b"), (4, "spam", "a")])
    assert (g.label, g.tie, g.confidence) == ("ham", True, 0.5)
    assert record_gold([]) is None


# -- store edge ----------------------------------------------------------------------------------------
@pytest.fixture
def annotated(store, tmp_path):
    """6 records, imported annotations from 3 annotators (c careless), one record annotated by one person."""
    ids = make_dataset(store, "yt", [f"text {i}" for i in range(6)], labels=["ham"] * 6)
    with store.transaction() as cur:
        cur.execute("UPDATE store.records SET source_id = 's' || (record_id - ?)", [ids[0]])
    rows = ["source_id,annotator,label,lead_time"]
    truth = ["ham", "spam", "ham", "spam", "ham"]
    for i, t in enumerate(truth):
        for who, lt in (("a", 3.0), ("b", 5.0)):
            rows.append(f"s{i},{who},{t},{lt}")
        rows.append(f"s{i},c,{'spam' if t == 'ham' else 'ham'},1.0")
    rows.append("s5,a,spam,2.0")
    f = tmp_path / "ann.csv"
    f.write_text("\n".join(rows) + "\n")
    return ids, f


def test_import_annotations_gold_and_agreement(store, annotated, tmp_path):
    from labeling.studio.sync import import_annotations

    ids, f = annotated
    r = import_annotations(store, str(f), "yt")
    assert r["created"] == 16 and r["unknown_record"] == 0 and r["bad_label"] == 0
    again = import_annotations(store, str(f), "yt")
    assert again["created"] == 0 and again["duplicate"] == 16
    assert store.one("SELECT max(annotation_id) FROM store.annotations WHERE via = 'import'") < 0
    gold = {rid: (lab, m, c) for rid, lab, m, c in store.query(
        "SELECT record_id, label, method, confidence FROM store.gold_labels ORDER BY record_id")}
    assert gold[ids[1]] == ("spam", "majority", pytest.approx(2 / 3, abs=1e-5))
    assert gold[ids[5]] == ("spam", None, None)            # one annotator: the latest annotation, as before
    rep = dataset_agreement(store, "yt", png=tmp_path / "heat.png")
    per = {p["annotator"]: p for p in rep["per_annotator"]}
    assert per["c"]["consensus_agreement"] == 0.0 and per["a"]["consensus_agreement"] == 1.0
    assert per["a"]["items"] == 6 and per["b"]["median_lead_time"] == 5.0
    assert rep["pairs"][0]["cohen_kappa"] == pytest.approx(1.0)          # a and b agree everywhere
    assert (tmp_path / "heat.png").stat().st_size > 1000
    bad = tmp_path / "bad.csv"
    bad.write_text("source_id,annotator,label\nnope,a,ham\ns0,a,maybe\n")
    r = import_annotations(store, str(bad), "yt")
    assert (r["unknown_record"], r["bad_label"]) == (1, 1) and len(r["problems"]) == 2


def test_apply_consensus_dawid_skene_provenance(store, annotated):
    from labeling.studio.sync import import_annotations

    ids, f = annotated
    import_annotations(store, str(f), "yt")
    r = apply_consensus(store, "yt", "dawid_skene", threshold=0.9)
    assert r["multi_annotated"] == 5 and r["gold_set"] == 5
    methods = {m for (m,) in store.query("SELECT DISTINCT method FROM store.gold_labels WHERE record_id < ?",
                                         [ids[5]])}
    assert methods == {"dawid_skene"}
    acc = {a["annotator"]: a["accuracy"] for a in r["annotators"]}
    assert acc["c"] < acc["a"]
    assert store.one("SELECT method FROM store.gold_labels WHERE record_id = ?", [ids[5]]) is None
