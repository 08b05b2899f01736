"""Label noise on WRENCH YouTube: does `curate label-issues` find flipped gold labels, and does fixing them help?
And: a simulated team of 3 annotators, consensus by majority vote vs Dawid–Skene.

    python -m experiments.label_noise [--seeds 3] [--rate 0.1]

1. Label issues. For each seed, 10 % of the train gold labels (1586 rows) are flipped at random. The product's
   detector (`labeling.label_issues`: frozen base-encoder embeddings, 5-fold out-of-fold logistic regression,
   cleanlab `find_label_issues`) runs on the noisy train labels. Reported: precision and recall of the flagged
   rows for the flipped rows. End model — the FAST PROXY, not the product's LoRA fine-tune: logistic regression
   (C=2) on the same frozen embeddings, test accuracy (WRENCH test, 250 rows) trained on (a) the noisy labels,
   (b) the noisy labels after review of the flagged rows (a reviewer gives each flagged row its true label, as
   the review path in Label Studio does), (c) the noisy labels with the flagged rows dropped, (d) clean labels.
2. Annotator team. Every train row is labelled by 3 simulated annotators with accuracies 0.95, 0.9, 0.7 (a wrong
   answer is the other class), 3 seeds; consensus accuracy against the gold label for majority vote and
   Dawid–Skene (`labeling.consensus`), and Dawid–Skene's estimate of each annotator's accuracy. A second setting
   where each row gets 2 of the 3 annotators (ties are possible, the careless one answers more often) shows where
   the two differ.
Writes docs/results/label_noise.json, docs/experiment_label_noise.png and docs/label_quality_agreement.png.
"""

import argparse
import json
import time

import numpy as np

from experiments.common import DOCS, WRENCH, pct, write_results
from labeling.agreement import agreement_report, plot_agreement
from labeling.consensus import consensus_labels
from labeling.label_issues import find_issues, out_of_fold_probs, precision_recall

TEAM = (0.95, 0.9, 0.7)


def load() -> dict:
    rows = [json.loads(x) for x in WRENCH.read_text().splitlines() if x.strip()]
    from experiments.active_learning import embed_cached  # cached under build/cache/

    X = embed_cached([r["text"] for r in rows])
    split = np.array([r["split"] for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    return {"X": X, "y": y, "train": np.flatnonzero(split == "train"), "test": np.flatnonzero(split == "test")}


def end_model_acc(X, y, Xt, yt, seed: int, weight=None) -> float:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=2.0, max_iter=2000, random_state=seed).fit(X, y, sample_weight=weight)
    return float((m.predict(Xt) == yt).mean())


def noise_run(d: dict, seed: int, rate: float) -> dict:
    rng = np.random.default_rng(seed)
    tr, te = d["train"], d["test"]
    X, y = d["X"][tr], d["y"][tr]
    Xt, yt = d["X"][te], d["y"][te]
    flipped = np.zeros(len(y), bool)
    flipped[rng.choice(len(y), round(rate * len(y)), replace=False)] = True
    noisy = np.where(flipped, 1 - y, y)
    t0 = time.perf_counter()
    probs = out_of_fold_probs(X, noisy, 2, folds=5, seed=seed)
    issues = find_issues(noisy, probs)
    secs = time.perf_counter() - t0
    pr = precision_recall(issues.mask, flipped)
    fixed = np.where(issues.mask, y, noisy)                 # review: a flagged row gets its true label
    keep = ~issues.mask
    return {"seed": seed, "flipped": int(flipped.sum()), **pr, "detect_seconds": round(secs, 2),
            "suggestion_accuracy": float((issues.suggested[issues.mask & flipped] == y[issues.mask & flipped]).mean())
            if (issues.mask & flipped).any() else None,
            "test_acc": {"noisy": end_model_acc(X, noisy, Xt, yt, seed),
                         "fixed_flagged": end_model_acc(X, fixed, Xt, yt, seed),
                         "dropped_flagged": end_model_acc(X[keep], noisy[keep], Xt, yt, seed),
                         "clean": end_model_acc(X, y, Xt, yt, seed)},
            "review_budget": int(issues.mask.sum())}


def team_answers(truth: np.ndarray, accs, rng, per_item: int | None = None) -> np.ndarray:
    M = np.empty((len(truth), len(accs)), dtype=np.int64)
    for j, a in enumerate(accs):
        M[:, j] = np.where(rng.random(len(truth)) < a, truth, 1 - truth)
    if per_item is not None:
        for i in range(len(truth)):
            M[i, rng.choice(len(accs), len(accs) - per_item, replace=False)] = -1
    return M


def team_run(truth: np.ndarray, seed: int, per_item: int | None) -> dict:
    rng = np.random.default_rng(100 + seed)
    M = team_answers(truth, TEAM, rng, per_item)
    out = {"seed": seed, "per_item": per_item or len(TEAM)}
    for method in ("majority", "dawid_skene"):
        c = consensus_labels(M, 2, method)
        # a majority tie (-1) is resolved the way the sync does: the latest annotation; here a random one of them
        labels = c.labels.copy()
        for i in np.flatnonzero(labels < 0):
            answers = M[i][M[i] >= 0]
            labels[i] = answers[rng.integers(len(answers))] if len(answers) else 0
        out[method] = {"accuracy": float((labels == truth).mean()), "ties": int(c.tie.sum())}
        if method == "dawid_skene":
            out[method]["estimated_accuracy"] = [round(x, 4) for x in c.annotator_accuracy]
    out["true_accuracy"] = [round(float((M[:, j][M[:, j] >= 0] == truth[M[:, j] >= 0]).mean()), 4)
                            for j in range(len(TEAM))]
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.1)
    a = ap.parse_args(argv)
    d = load()
    seeds = list(range(a.seeds))
    noise = [noise_run(d, s, a.rate) for s in seeds]
    truth = d["y"][d["train"]]
    team_full = [team_run(truth, s, None) for s in seeds]
    team_two = [team_run(truth, s, 2) for s in seeds]
    summary = {
        "precision": _mean([r["precision"] for r in noise]), "recall": _mean([r["recall"] for r in noise]),
        "flagged": _mean([r["flagged"] for r in noise]),
        **{f"test_acc_{k}": _mean([r["test_acc"][k] for r in noise]) for k in noise[0]["test_acc"]},
        "team_3_of_3": {m: _mean([r[m]["accuracy"] for r in team_full]) for m in ("majority", "dawid_skene")},
        "team_2_of_3": {m: _mean([r[m]["accuracy"] for r in team_two]) for m in ("majority", "dawid_skene")},
    }
    results = {
        "protocol": {"data": "WRENCH YouTube (train 1586 gold labels, test 250)", "flip_rate": a.rate,
                     "seeds": seeds, "detector": "frozen all-MiniLM-L6-v2 mean-pooled embeddings, 5-fold "
                     "out-of-fold logistic regression (C=2), cleanlab find_label_issues (prune_by_noise_rate)",
                     "end_model": "FAST PROXY: logistic regression (C=2) on the same frozen embeddings (not the "
                     "product's LoRA fine-tune)", "review": "a flagged row gets its true label",
                     "team": list(TEAM)},
        "summary": summary, "label_issues": noise, "team_all_three": team_full, "team_two_of_three": team_two}
    path = write_results("label_noise", results)
    _plot(results)
    _heatmap(truth)
    _report(results)
    print(f"wrote {path}")
    return results


def _plot(r: dict) -> None:
    from curation.plots import pyplot, save_figure

    plt = pyplot()
    s = r["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = ["noisy", "dropped_flagged", "fixed_flagged", "clean"]
    vals = [100 * s[f"test_acc_{n}"] for n in names]
    errs = [100 * np.std([x["test_acc"][n] for x in r["label_issues"]]) for n in names]
    axes[0].bar(["10% flipped", "flagged\ndropped", "flagged\nfixed", "clean"], vals, yerr=errs,
                color=["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"])
    axes[0].set_ylim(min(vals) - 3, 100)
    axes[0].set_ylabel("test accuracy % (LR proxy)")
    axes[0].set_title(f"End model; label-issues precision {100 * s['precision']:.0f}%, recall "
                      f"{100 * s['recall']:.0f}%", fontsize=9)
    for i, v in enumerate(vals):
        axes[0].text(i, v + 0.3, f"{v:.1f}", ha="center", fontsize=8)
    groups = ["3 of 3 answer", "2 of 3 answer"]
    mv = [100 * s["team_3_of_3"]["majority"], 100 * s["team_2_of_3"]["majority"]]
    ds = [100 * s["team_3_of_3"]["dawid_skene"], 100 * s["team_2_of_3"]["dawid_skene"]]
    x = np.arange(2)
    axes[1].bar(x - 0.2, mv, 0.4, label="majority")
    axes[1].bar(x + 0.2, ds, 0.4, label="Dawid–Skene")
    for i in range(2):
        axes[1].text(i - 0.2, mv[i] + 0.2, f"{mv[i]:.1f}", ha="center", fontsize=8)
        axes[1].text(i + 0.2, ds[i] + 0.2, f"{ds[i]:.1f}", ha="center", fontsize=8)
    axes[1].set_xticks(x, groups)
    axes[1].set_ylim(min(mv + ds) - 3, 100)
    axes[1].set_ylabel("consensus accuracy %")
    axes[1].set_title("Annotators with accuracy 0.95 / 0.9 / 0.7", fontsize=9)
    axes[1].legend(fontsize=8)
    save_figure(fig, DOCS / "experiment_label_noise.png")


def _heatmap(truth: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    M = team_answers(truth[:300], (0.95, 0.9, 0.7, 0.92), rng)
    rep = agreement_report(M, 2, ["ham", "spam"], ["ann1 (0.95)", "ann2 (0.90)", "ann3 (0.70)", "ann4 (0.92)"])
    plot_agreement(rep, DOCS / "label_quality_agreement.png")


def _report(r: dict) -> None:
    s = r["summary"]
    print(f"label issues: precision {pct(s['precision'])}, recall {pct(s['recall'])}, flagged {s['flagged']:.0f}")
    print("test acc (LR proxy): " + ", ".join(f"{k[9:]} {pct(v)}" for k, v in s.items() if k.startswith("test_acc_")))
    print(f"team 3/3: {s['team_3_of_3']}; 2/3: {s['team_2_of_3']}")


if __name__ == "__main__":
    main()
