"""Weak supervision on the WRENCH YouTube split: majority vote vs label model vs an end model trained on weak
labels only, on the published test split and on its leakage-free subset, beside the published anchors.

    python -m experiments.weak_supervision [--seeds 2] [--epochs 5] [--quick]

Label models fit on the train split (1,586 rows, gold never seen); ties and all-abstain rows are broken by
Snorkel/WRENCH's hash rule, and every test row counts. The end model is the product's LoRA fine-tune of
all-MiniLM-L6-v2 on the label model's probabilities (soft targets), early-stopped on val. The published split
leaks (test rows with a duplicate in train), so every figure is also given on the leakage-free test subset.
Writes docs/results/weak_supervision.json and docs/experiment_weak_supervision.png.
"""

import argparse
import time

import numpy as np

from experiments.common import DATASET, DOCS, LABELS, WRENCH, pct, wrench_setup, write_results
from labeling import label_model as lm
from labeling.weak import import_votes, load_matrix

ANCHORS = {"majority vote": 84.0, "Snorkel label model": 86.0, "logistic regression on LM labels": 94.4,
           "BERT on majority-vote labels": 95.36}


def label_model_accuracy(L: np.ndarray, gold: np.ndarray, split: np.ndarray, clean: np.ndarray, kind: str,
                         seed: int) -> dict:
    """Fit on train rows; accuracy on test and on its leakage-free rows (positions within the split key the
    hash tie-break, as in WRENCH)."""
    model = lm.get_label_model(kind).fit(L[split == "train"], len(LABELS), seed=seed)
    test = split == "test"
    pred = lm.probs_to_labels(model.predict_proba(L[test]), "hash")
    return {"test": lm.accuracy(pred, gold[test]), "test_leakage_free": lm.accuracy(pred[clean[test]],
                                                                                      gold[test][clean[test]])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2, help="end-model seeds (label models: 5)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch (a smoke run)")
    args = ap.parse_args(argv)
    seeds = [0] if args.quick else list(range(args.seeds))
    epochs = 1 if args.quick else args.epochs
    t0 = time.perf_counter()

    from training.config import TrainConfig
    from training.train import run_training

    w = wrench_setup("snorkel")
    rids = w.frame["record_id"].to_numpy()
    split_of = dict(zip(rids, w.frame["split"].to_list()))
    clean_ids = w.clean_test_ids
    results = {"rows": dict(w.manifest["counts"]["by_split"]), "leakage_free_test_rows": len(clean_ids),
               "anchors": ANCHORS, "label_models": {}, "end_model": {}}

    wrench_votes = import_votes(w.store, WRENCH, DATASET)["lf_set_id"]
    for votes, lf_set in (("WRENCH's votes", wrench_votes), ("our LFs", w.label_model["lf_set_id"])):
        mat = load_matrix(w.store, DATASET, lf_set)
        L, gold = mat["L"].astype(np.int64), mat["gold"]
        split = np.asarray([split_of[r] for r in mat["record_ids"]], dtype=object)
        clean = np.isin(mat["record_ids"], list(clean_ids))
        for kind in ("majority", "snorkel"):
            runs = [label_model_accuracy(L, gold, split, clean, kind, s) for s in range(1 if kind == "majority" else 5)]
            results["label_models"][f"{votes} + {kind}"] = {
                part: float(np.mean([r[part] for r in runs])) for part in ("test", "test_leakage_free")}

    for seed in seeds:
        config = TrainConfig(label_sources="weak", allow_leakage=True, epochs=epochs, seed=seed)
        res = run_training(w.frame, LABELS, config)
        results["end_model"][f"seed {seed}"] = {
            "test": res.metrics["test"]["accuracy"], "test_leakage_free": res.metrics["test_leakage_free"]["accuracy"],
            "val": res.metrics["val"]["accuracy"], "best_epoch": res.best_epoch,
            "train_examples_per_s": res.train_examples_per_s}
    em = results["end_model"]
    results["end_model_mean"] = {p: float(np.mean([r[p] for r in em.values()])) for p in ("test", "test_leakage_free")}
    results["seconds"] = time.perf_counter() - t0

    print(f"\nWRENCH YouTube, test split ({results['rows'].get('test')} rows; leakage-free subset "
          f"{len(clean_ids)} rows). Accuracy %.")
    print(f"{'method':<60}{'test':>8}{'leak-free':>11}   published")
    rows = [(name, r["test"], r["test_leakage_free"]) for name, r in results["label_models"].items()]
    rows.append((f"our LFs + snorkel → LoRA MiniLM (weak only, {len(seeds)} seeds)",
                 results["end_model_mean"]["test"], results["end_model_mean"]["test_leakage_free"]))
    published = {"LoRA": ANCHORS["BERT on majority-vote labels"], "majority": ANCHORS["majority vote"],
                 "snorkel": ANCHORS["Snorkel label model"]}
    for name, test, free in rows:
        pub = next((v for k, v in published.items() if k in name), "")
        print(f"{name:<60}{pct(test):>8}{pct(free):>11}   {pub}")
    print(f"anchors: {ANCHORS}")
    results["plot"] = str(_plot(rows))
    print(f"results: {write_results('weak_supervision', results)}; plot: {results['plot']}")
    return results


def _plot(rows: list[tuple[str, float, float]]):
    from training.plots import _pyplot, save_figure

    fig, ax = _pyplot().subplots(figsize=(9, 4.8))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * r[1] for r in rows], 0.4, label="published test split")
    ax.bar(x + 0.2, [100 * r[2] for r in rows], 0.4, label="leakage-free test subset")
    for i, (name, y) in enumerate(ANCHORS.items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{i + 2}", label=f"published: {name} {y}")
    ax.set_xticks(x, [r[0].replace(" + ", "\n+ ").replace(" → ", "\n→ ") for r in rows], fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(70, 100), title="Weak supervision on WRENCH YouTube")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, DOCS / "experiment_weak_supervision.png")


if __name__ == "__main__":
    main()
