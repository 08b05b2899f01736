"""Active learning on the WRENCH YouTube split: which strategy gets the most out of a human's labels, on top of
the weak labels. A simulated annotator answers from the gold labels.

    python -m experiments.active_learning [--seeds 3] [--budget 300] [--step 25] [--lora-epochs 4] [--quick]

1. Strategy comparison (margin, entropy, least_confidence, diverse_margin vs random; 3 seeds; budgets up to 300
   labels, `--step` labels per round). The learner is fast so that 5 × 3 × 13 rounds fit on 2 CPU cores: frozen
   all-MiniLM-L6-v2 sentence embeddings + logistic regression, trained on the label model's weak labels (weight 1)
   with each human label replacing its row's weak label (weight 2, the product's `gold_weight`). Reported: test
   accuracy per budget, and the labels each strategy needs to come within 1 point of the same learner trained on
   all 1,586 gold labels.
2. The product's loop with the product's model: LoRA-fine-tuned MiniLM on weak labels, then rounds of 100
   labels chosen by the best strategy of part 1 (scored by the LoRA model itself), to 200 labels; beside 200
   random labels and the LoRA model on all gold labels. Question: do ≤200 actively chosen labels on top of the
   weak labels reach 97.5 (BERT trained on all 1,586 gold labels)?
Writes docs/results/active_learning.json and docs/experiment_active_learning.png.
"""

import argparse
import time

import numpy as np
import polars as pl

from experiments.common import DOCS, LABELS, pct, wrench_setup, write_results
from labeling.active import STRATEGIES, Pool

STRATEGY_NAMES = ["random", "least_confidence", "margin", "entropy", "diverse_margin"]
GOLD_WEIGHT = 2.0
ALL_GOLD_ANCHOR = 97.5


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings from the base encoder (no fine-tuning)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from training.config import TrainConfig

    path = TrainConfig().resolved_base_model()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(vec, dim=-1).numpy()
    return out


class Proxy:
    """Logistic regression on frozen embeddings: weak labels weigh 1, human labels GOLD_WEIGHT."""

    def __init__(self, seed: int):
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=2.0, max_iter=2000, random_state=seed)

    def fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> "Proxy":
        self.model.fit(X, y, sample_weight=w)
        return self

    def proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X)


def compare_strategies(X, weak, gold, split, clean, budget: int, step: int, seeds: list[int]) -> dict:
    train = np.flatnonzero(split == "train")
    test = split == "test"
    has_weak = weak >= 0
    ref = Proxy(0).fit(X[train], gold[train], np.ones(len(train)))
    ref_acc = float((ref.proba(X[test]).argmax(1) == gold[test]).mean())
    curves: dict[str, list[list[float]]] = {}
    curves_clean: dict[str, list[list[float]]] = {}
    budgets = list(range(0, budget + 1, step))
    for name in STRATEGY_NAMES:
        strategy = STRATEGIES[name]()
        curves[name], curves_clean[name] = [], []
        for seed in seeds:
            labeled: list[int] = []
            accs, accs_clean = [], []
            for b in budgets:
                y, w = weak.copy(), np.where(has_weak, 1.0, 0.0)
                y[labeled], w[labeled] = gold[labeled], GOLD_WEIGHT
                rows = train[w[train] > 0]
                model = Proxy(seed).fit(X[rows], y[rows], w[rows])
                pred = model.proba(X[test]).argmax(1)
                accs.append(float((pred == gold[test]).mean()))
                accs_clean.append(float((pred[clean[test]] == gold[test][clean[test]]).mean()))
                if b == budgets[-1]:
                    break
                pool_rows = np.setdiff1d(train, labeled)
                pool = Pool(pool_rows, model.proba(X[pool_rows]), X[pool_rows])
                picked, _ = strategy.query(pool, step, seed=seed * 1000 + b)
                labeled += [int(i) for i in picked]
            curves[name].append(accs)
            curves_clean[name].append(accs_clean)
    summary = {}
    for name in STRATEGY_NAMES:
        mean = np.mean(curves[name], axis=0)
        within = [b for b, a in zip(budgets, mean) if a >= ref_acc - 0.01]
        summary[name] = {"test_by_budget": dict(zip(budgets, mean.round(4).tolist())),
                         "test_leakage_free_by_budget": dict(zip(budgets, np.mean(curves_clean[name], 0).round(4).tolist())),
                         "labels_to_within_1_point_of_all_gold": within[0] if within else None,
                         "mean_accuracy_over_budgets": float(mean.mean())}
    return {"budgets": budgets, "seeds": seeds, "all_gold_reference_test": ref_acc, "strategies": summary}


def lora_loop(w, strategy_name: str, rounds: list[int], epochs: int, seed: int = 0) -> dict:
    """The product's loop: LoRA on weak labels, then rounds of human labels chosen with the LoRA model's scores."""
    from training.config import TrainConfig
    from training.score import LoadedModel
    from training.train import run_training

    frame = w.frame
    is_train = (frame["split"] == "train").to_numpy()
    gold_all = frame["label"].to_list()
    hidden = frame.with_columns(pl.when(pl.col("split") == "train").then(None).otherwise(pl.col("label"))
                                .alias("label"))
    rids = frame["record_id"].to_numpy()
    texts = frame["text"].to_list()
    strategy = STRATEGIES[strategy_name]()

    def train_with(labeled: set[int], sources: str = "gold+weak"):
        f = hidden.with_columns(pl.Series("label", [g if (not t or r in labeled) else None for g, t, r in
                                                    zip(gold_all, is_train, rids)]))
        cfg = TrainConfig(label_sources=sources, allow_leakage=True, epochs=epochs, seed=seed)
        return run_training(f, LABELS, cfg)

    def row(res, labeled: int, name: str) -> dict:
        return {"name": name, "labels": labeled, "test": res.metrics["test"]["accuracy"],
                "test_leakage_free": res.metrics["test_leakage_free"]["accuracy"], "val": res.metrics["val"]["accuracy"]}

    out, labeled = [], set()
    for i, target in enumerate(rounds):
        res = train_with(labeled)
        out.append(row(res, len(labeled), strategy_name))
        if target <= len(labeled):
            continue
        loaded = LoadedModel("experiment", res.model.eval(), res.tokenizer, LABELS, res.device, 128, 128)
        pool_idx = np.flatnonzero(is_train & ~np.isin(rids, list(labeled)))
        probs, embs = loaded.predict([texts[j] for j in pool_idx], embeddings=True)
        picked, _ = strategy.query(Pool(rids[pool_idx], probs, embs), target - len(labeled), seed=seed + i)
        labeled |= {int(r) for r in picked}
    res = train_with(labeled)
    out.append(row(res, len(labeled), strategy_name))
    rng = np.random.default_rng(seed)
    random_ids = set(rng.choice(rids[is_train], size=len(labeled), replace=False).tolist())
    out.append(row(train_with(random_ids), len(random_ids), "random"))
    out.append(row(train_with(set(rids[is_train].tolist()), "gold"), int(is_train.sum()), "all gold (no weak)"))
    return {"strategy": strategy_name, "epochs": epochs, "rows": out}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--step", type=int, default=25)
    ap.add_argument("--lora-epochs", type=int, default=4)
    ap.add_argument("--lora-rounds", default="100,200", help="cumulative label counts of the LoRA rounds")
    ap.add_argument("--no-lora", action="store_true", help="only the strategy comparison")
    ap.add_argument("--quick", action="store_true", help="1 seed, budget 50, LoRA 1 epoch with 20 labels")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.step, args.lora_epochs, args.lora_rounds = 1, 50, 25, 1, "20"
    t0 = time.perf_counter()
    w = wrench_setup("snorkel")
    f = w.frame
    X = embed(f["text"].to_list())
    gold = np.asarray([LABELS.index(x) for x in f["label"].to_list()])
    weak = np.asarray([LABELS.index(x) if x is not None else -1 for x in f["weak_label"].to_list()])
    split = np.asarray(f["split"].to_list(), dtype=object)
    clean = np.isin(f["record_id"].to_numpy(), list(w.clean_test_ids))
    results = {"part1_proxy": compare_strategies(X, weak, gold, split, clean, args.budget, args.step,
                                                 list(range(args.seeds)))}
    p1 = results["part1_proxy"]
    print(f"\nPart 1 — strategies with the fast proxy learner (embeddings + logistic regression), "
          f"{len(p1['seeds'])} seeds. Test accuracy %; all-gold reference {pct(p1['all_gold_reference_test'])}")
    shown = [b for b in p1["budgets"] if b % 50 == 0]
    print(f"{'strategy':<18}" + "".join(f"{b:>7}" for b in shown) + "   labels to within 1 pt of all-gold")
    for name, s in p1["strategies"].items():
        print(f"{name:<18}" + "".join(f"{pct(s['test_by_budget'][b]):>7}" for b in shown)
              + f"   {s['labels_to_within_1_point_of_all_gold'] or f'>{args.budget}'}")
    active = {k: v for k, v in p1["strategies"].items() if k != "random"}
    best = max(active, key=lambda k: active[k]["mean_accuracy_over_budgets"])
    results["best_strategy"] = best
    if not args.no_lora:
        rounds = [int(x) for x in args.lora_rounds.split(",")]
        results["part2_lora"] = lora_loop(w, best, rounds, args.lora_epochs)
        print(f"\nPart 2 — the product's loop: LoRA MiniLM on weak labels + rounds of labels chosen by {best} "
              f"(scored by the LoRA model). Test accuracy %.")
        print(f"{'labels chosen by':<22}{'labels':>8}{'test':>8}{'leak-free':>11}")
        for r in results["part2_lora"]["rows"]:
            print(f"{r['name']:<22}{r['labels']:>8}{pct(r['test']):>8}{pct(r['test_leakage_free']):>11}")
        final = [r for r in results["part2_lora"]["rows"] if r["name"] == best][-1]
        results["reaches_97_5_with_at_most_200_active_labels"] = bool(final["labels"] <= 200
                                                                      and final["test"] * 100 >= ALL_GOLD_ANCHOR)
        print(f"≤200 active labels + weak labels reach {ALL_GOLD_ANCHOR}: "
              f"{'yes' if results['reaches_97_5_with_at_most_200_active_labels'] else 'no'} "
              f"({pct(final['test'])} with {final['labels']} labels)")
    results["seconds"] = time.perf_counter() - t0
    results["plot"] = str(_plot(results))
    print(f"results: {write_results('active_learning', results)}; plot: {results['plot']}")
    return results


def _plot(results: dict):
    from training.plots import plot_learning_curve

    p1 = results["part1_proxy"]
    curves = {name: [(b, 100 * a) for b, a in s["test_by_budget"].items()] for name, s in p1["strategies"].items()}
    anchors = {"same learner, all gold": round(100 * p1["all_gold_reference_test"], 1)}
    return plot_learning_curve(curves, DOCS / "experiment_active_learning.png", anchors=anchors,
                               title=f"Active learning on WRENCH YouTube (proxy learner, {len(p1['seeds'])} seeds)",
                               xlabel="human labels on top of the weak labels")


if __name__ == "__main__":
    main()
