"""Active learning on several text datasets: which strategy gets the most out of a human's labels, on top of the
weak labels. A simulated annotator answers from the gold labels.

    python -m experiments.active_learning [--datasets youtube,movie_reviews,chatterbot_topics] [--seeds 3]
                                          [--budget 300] [--step 50] [--lora] [--quick]

1. Strategy comparison on every dataset of `experiments.common.TEXT_DATASETS` (WRENCH YouTube, movie reviews
   plot/fresh/rotten, chatterbot topics), same protocol everywhere: frozen base-encoder sentence embeddings
   (computed once per dataset and cached under build/cache/) + logistic regression, trained on the label model's
   weak labels (weight 1; rows without a weak label are left out) with each human label replacing its row's weak
   label (weight 2, the product's `gold_weight`); 3 seeds; `--step` labels a round up to `--budget`. Reported per
   dataset: test accuracy (and macro-F1) per budget for every strategy, `auto` simulated with the product's rule
   (`labeling.active.strategies.choose_auto` on the validation accuracy of the rounds so far), and the labels each
   strategy needs to come within 1 point of the same learner trained on all train gold labels.
2. Cold start: round 1 chosen by the label model's disagreement (LF vote entropy, or the label model's posterior
   entropy) instead of model uncertainty, then margin; compared at the first round and over the curve.
3. The default: the strategy within 1 point of margin at 200 and 300 labels on every dataset with the best mean
   accuracy over all budgets and datasets (margin itself always qualifies).
4. (`--lora`, YouTube only) the product's loop with the product's model: LoRA-fine-tuned MiniLM on weak labels,
   then rounds of labels chosen by the default strategy (scored by the LoRA model itself).
   `--lora-only --seeds 3` runs only this part over seeds; `--lora-combine PARTS --lora-attempts PARTS` merges
   seed runs made in separate processes and plots them beside the attempts (docs/experiments.md).
Writes docs/results/active_learning.json and docs/experiment_active_learning_<dataset>.png.
"""

import argparse
import hashlib
import json
import time

import numpy as np
import polars as pl

from experiments.common import DOCS, LABELS, RESULTS, ROOT, TEXT_DATASETS, dataset_setup, pct, write_results
from labeling.active import STRATEGIES, Pool
from labeling.active.strategies import AUTO_CANDIDATES, DEFAULT_STRATEGY, choose_auto

STRATEGY_NAMES = ["random", "least_confidence", "margin", "entropy", "diverse_margin", "density_margin",
                  "cluster_margin", "auto"]
COLD_START = ["lf_disagreement", "label_model_entropy"]      # round 1 only, then margin
GOLD_WEIGHT = 2.0
ALL_GOLD_ANCHOR = 97.5
CACHE = ROOT / "build" / "cache" / "active_learning"


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


def embed_cached(texts: list[str]) -> np.ndarray:
    """`embed` once per distinct text list and base model; cached as .npy under build/cache/ (ignored by git)."""
    from training.config import TrainConfig

    key = hashlib.sha256(("\x00".join(texts) + str(TrainConfig().resolved_base_model())).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.npy"
    if path.exists():
        return np.load(path)
    X = embed(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


class Proxy:
    """Logistic regression on frozen embeddings: weak labels weigh 1, human labels GOLD_WEIGHT."""

    def __init__(self, seed: int):
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=2.0, max_iter=2000, random_state=seed)

    def fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> "Proxy":
        self.model.fit(X, y, sample_weight=w)
        self.classes = self.model.classes_
        return self

    def proba(self, X: np.ndarray, k: int) -> np.ndarray:
        """(n, k) probabilities over all k labels (a label absent from the training rows gets 0)."""
        out = np.zeros((len(X), k))
        out[:, self.classes] = self.model.predict_proba(X)
        return out


def _metrics(pred: np.ndarray, gold: np.ndarray, k: int) -> tuple[float, float]:
    acc = float((pred == gold).mean())
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        if np.sum(gold == c):
            f1s.append(2 * tp / denom if denom else 0.0)
    return acc, float(np.mean(f1s))


def vote_entropy(votes: np.ndarray) -> np.ndarray:
    """(n, k) LF vote counts → entropy of each row's vote distribution (0 with one or no distinct vote); ties
    broken toward rows with more votes."""
    tot = votes.sum(1, keepdims=True)
    p = np.divide(votes, tot, out=np.zeros_like(votes, dtype=float), where=tot > 0)
    ent = -(p * np.log(np.where(p > 0, p, 1))).sum(1)
    return ent + 1e-3 * tot[:, 0]


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)


def run_curve(name: str, d: dict, budgets: list[int], step: int, seed: int) -> dict:
    """One strategy, one seed: test/val metrics at every budget, and what `auto` chose per round."""
    X, weak, gold, train, test, val, k = d["X"], d["weak"], d["gold"], d["train"], d["test"], d["val"], d["k"]
    has_weak = weak >= 0
    labeled: list[int] = []
    accs, f1s, vals, chosen = [], [], [], []
    history: list[dict] = []
    for r, b in enumerate(budgets):
        y, w = weak.copy(), np.where(has_weak, 1.0, 0.0)
        y[labeled], w[labeled] = gold[labeled], GOLD_WEIGHT
        rows = train[w[train] > 0]
        model = Proxy(seed).fit(X[rows], y[rows], w[rows])
        acc, f1 = _metrics(model.proba(X[test], k).argmax(1), gold[test], k)
        val_acc = float((model.proba(X[val], k).argmax(1) == gold[val]).mean())
        accs.append(acc), f1s.append(f1), vals.append(val_acc)
        if history:
            history[-1]["val_after"] = val_acc
        if b == budgets[-1]:
            break
        pool_rows = np.setdiff1d(train, labeled)
        rng_seed = seed * 1000 + b
        if name in COLD_START and r == 0:
            score = vote_entropy(d["votes"][pool_rows]) if name == "lf_disagreement" else _entropy(d["weak_probs"][pool_rows])
            order = np.lexsort((pool_rows, -score))
            picked = pool_rows[order[:step]]
        else:
            strat_name = "margin" if name in COLD_START else name
            if name == "auto":
                strat_name, _ = choose_auto(history)
                chosen.append(strat_name)
            pool = Pool(pool_rows, model.proba(X[pool_rows], k), X[pool_rows])
            picked, _ = STRATEGIES[strat_name]().query(pool, step, seed=rng_seed)
            history.append({"round": r + 1, "strategy": strat_name, "val_before": val_acc, "val_after": None})
        labeled += [int(i) for i in picked]
    return {"test": accs, "macro_f1": f1s, "val": vals, "auto_choices": chosen}


def load_dataset(name: str) -> dict:
    """Store pipeline (ingest, split, LFs, label model) → arrays for the proxy experiment."""
    spec = TEXT_DATASETS[name]
    w = dataset_setup(spec.path, spec.name, spec.labels, spec.lfs, "snorkel")
    f = w.frame
    labels = list(spec.labels)
    k = len(labels)
    gold = np.asarray([labels.index(x) for x in f["label"].to_list()])
    weak = np.asarray([labels.index(x) if x is not None else -1 for x in f["weak_label"].to_list()])
    weak_probs = np.asarray([p if p is not None else [1.0 / k] * k for p in f["weak_probs"].to_list()])
    split = np.asarray(f["split"].to_list(), dtype=object)
    rids = f["record_id"].to_numpy()
    lf_set = w.store.one("SELECT lf_set_id FROM store.label_models WHERE model_id = ?",
                         [f["weak_model_id"].drop_nulls()[0]])
    votes = np.zeros((len(rids), k))
    pos = {int(r): i for i, r in enumerate(rids)}
    for rid, v in w.store.query("SELECT record_id, vote FROM store.votes WHERE lf_set_id = ?", [lf_set]):
        if int(rid) in pos and 0 <= v < k:
            votes[pos[int(rid)], v] += 1
    train = np.flatnonzero(split == "train")
    return {"name": name, "source": spec.source, "labels": labels, "k": k, "X": embed_cached(f["text"].to_list()),
            "gold": gold, "weak": weak, "weak_probs": weak_probs, "votes": votes, "train": train,
            "test": np.flatnonzero(split == "test"), "val": np.flatnonzero(split == "val"),
            "weak_coverage_train": float((weak[train] >= 0).mean()),
            "weak_accuracy_train": float((weak[train] == gold[train])[weak[train] >= 0].mean())}


def compare_strategies(d: dict, budget: int, step: int, seeds: list[int], names: list[str]) -> dict:
    budgets = list(range(0, budget + 1, step))
    ref = Proxy(0).fit(d["X"][d["train"]], d["gold"][d["train"]], np.ones(len(d["train"])))
    ref_acc, ref_f1 = _metrics(ref.proba(d["X"][d["test"]], d["k"]).argmax(1), d["gold"][d["test"]], d["k"])
    summary = {}
    for name in names:
        runs = [run_curve(name, d, budgets, step, seed) for seed in seeds]
        mean = np.mean([r["test"] for r in runs], axis=0)
        within = [b for b, a in zip(budgets, mean) if a >= ref_acc - 0.01]
        summary[name] = {"test_by_budget": dict(zip(budgets, mean.round(4).tolist())),
                         "test_std_by_budget": dict(zip(budgets, np.std([r["test"] for r in runs], 0).round(4).tolist())),
                         "macro_f1_by_budget": dict(zip(budgets, np.mean([r["macro_f1"] for r in runs], 0).round(4).tolist())),
                         "val_by_budget": dict(zip(budgets, np.mean([r["val"] for r in runs], 0).round(4).tolist())),
                         "labels_to_within_1_point_of_all_gold": within[0] if within else None,
                         "mean_accuracy_over_budgets": float(mean[1:].mean())}
        if name == "auto":
            summary[name]["choices_per_seed"] = [r["auto_choices"] for r in runs]
        print(f"  {d['name']:<18} {name:<20}" + "".join(f"{pct(a):>7}" for a in mean), flush=True)
    return {"budgets": budgets, "seeds": seeds, "source": d["source"], "labels": d["labels"],
            "pool": len(d["train"]), "test_rows": len(d["test"]), "val_rows": len(d["val"]),
            "weak_coverage_train": d["weak_coverage_train"], "weak_accuracy_train": d["weak_accuracy_train"],
            "all_gold_reference_test": ref_acc, "all_gold_reference_macro_f1": ref_f1, "strategies": summary}


def choose_default(per_dataset: dict, names: list[str], tolerance: float = 0.01) -> dict:
    """The evidence-based default: within `tolerance` of margin at 200 and 300 labels on every dataset; among
    those, the best mean accuracy over budgets and datasets."""
    ok, why = [], {}
    for name in names:
        if name in ("random", "auto") or name in COLD_START:
            continue
        gaps = {ds: {b: r["strategies"][name]["test_by_budget"][b] - r["strategies"]["margin"]["test_by_budget"][b]
                     for b in (200, 300) if b in r["strategies"][name]["test_by_budget"]}
                for ds, r in per_dataset.items()}
        worst = min((g for ds in gaps.values() for g in ds.values()), default=0.0)
        mean = float(np.mean([r["strategies"][name]["mean_accuracy_over_budgets"] for r in per_dataset.values()]))
        why[name] = {"worst_gap_to_margin_at_200_300": round(worst, 4), "mean_accuracy_all_datasets": round(mean, 4)}
        if worst >= -tolerance:
            ok.append(name)
    best = max(ok, key=lambda n: (why[n]["mean_accuracy_all_datasets"], n == "margin"))
    return {"default": best, "qualifying": ok, "evidence": why,
            "rule": "within 1 point of margin at 200 and 300 labels on every dataset; then best mean test accuracy "
                    "over budgets 50..300 averaged over datasets"}


def lora_loop(w, strategy_name: str, rounds: list[int], epochs: int, seed: int = 0, baselines: bool = True,
              **overrides) -> dict:
    """The product's loop: LoRA on weak labels, then rounds of human labels chosen with the LoRA model's scores,
    and (`baselines`) as many random labels and all train gold. `overrides`: TrainConfig fields that differ from
    the defaults (an attempt)."""
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
        cfg = TrainConfig(label_sources=sources, allow_leakage=True, epochs=epochs, seed=seed, **overrides)
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
    if not baselines:
        return {"strategy": strategy_name, "epochs": epochs, "seed": seed, "overrides": overrides, "rows": out}
    rng = np.random.default_rng(seed)
    random_ids = set(rng.choice(rids[is_train], size=len(labeled), replace=False).tolist())
    out.append(row(train_with(random_ids), len(random_ids), "random"))
    out.append(row(train_with(set(rids[is_train].tolist()), "gold"), int(is_train.sum()), "all gold (no weak)"))
    return {"strategy": strategy_name, "epochs": epochs, "seed": seed, "overrides": overrides, "rows": out}


def lora_seeds(label_model: str, strategy_name: str, rounds: list[int], epochs: int, seeds: list[int],
               name: str = "lora", baselines: bool = True, **overrides) -> dict:
    """`lora_loop` over seeds (the label model fitted with each seed); the mean test accuracy of each row."""
    from experiments.common import wrench_setup

    runs = []
    for s in seeds:
        t = time.perf_counter()
        runs.append(lora_loop(wrench_setup(label_model, seed=s), strategy_name, rounds, epochs, s, baselines,
                              **overrides))
        print(f"seed {s} ({time.perf_counter() - t:.0f}s): " + ", ".join(
            f"{r['name']}@{r['labels']} {pct(r['test'])}" for r in runs[-1]["rows"]), flush=True)
    results = {"strategy": strategy_name, "epochs": epochs, "label_model": label_model, "seeds": seeds,
               "overrides": overrides, "mean": _mean_rows(runs), "runs": runs}
    print(f"results: {write_results(f'active_learning_{name}', results)}")
    return results


def all_gold_ceiling(seeds: list[int], name: str, **overrides) -> dict:
    """The model's ceiling: the loop's model (TrainConfig defaults + `overrides`) on all train gold labels, per
    seed — if it stays below a goal, no choice of 200 labels reaches that goal with this model."""
    from experiments.common import wrench_setup
    from training.config import TrainConfig
    from training.train import run_training

    rows = []
    for s in seeds:
        frame = wrench_setup("auto", seed=s).frame
        res = run_training(frame, LABELS, TrainConfig(label_sources="gold", allow_leakage=True, seed=s, **overrides))
        rows.append({"seed": s, "test": res.metrics["test"]["accuracy"], "val": res.metrics["val"]["accuracy"],
                     "test_leakage_free": res.metrics["test_leakage_free"]["accuracy"]})
        print(f"{name} seed {s}: test {pct(rows[-1]['test'])}", flush=True)
    results = {"overrides": overrides, "rows": rows, "mean_test": float(np.mean([r["test"] for r in rows]))}
    print(f"results: {write_results(f'active_learning_{name}', results)}")
    return results


def _mean_rows(runs: list[dict]) -> list[dict]:
    """Per row (strategy, labels) of the runs: mean, min and max of test, leakage-free test and val accuracy."""
    out = []
    for i, r in enumerate(runs[0]["rows"]):
        vals = {k: [run["rows"][i][k] for run in runs] for k in ("test", "test_leakage_free", "val")}
        out.append({"name": r["name"], "labels": r["labels"], **{k: float(np.mean(v)) for k, v in vals.items()},
                    "test_min": float(min(vals["test"])), "test_max": float(max(vals["test"]))})
    return out


def combine_lora(parts: list[str], attempts: list[str]) -> dict:
    """Merge `lora_seeds` results (docs/results/active_learning_<part>.json, one seed or several) into
    active_learning_lora.json with the attempts beside them, and plot the curves."""
    runs = []
    for part in parts:
        d = json.loads((RESULTS / f"active_learning_{part}.json").read_text())
        runs += d.get("runs") or [{"seed": 0, **d}]
    runs.sort(key=lambda r: r["seed"])
    first = runs[0]
    results = {"strategy": first["strategy"], "epochs": first["epochs"], "label_model": "auto",
               "seeds": [r["seed"] for r in runs], "mean": _mean_rows(runs), "runs": runs, "attempts": {}}
    for name in attempts:
        d = json.loads((RESULTS / f"active_learning_{name}.json").read_text())
        results["attempts"][name] = {"overrides": d["overrides"], "seeds": d["seeds"], "mean": d["mean"]}
    from curation.plots import plot_learning_curve

    def curve(mean):
        return [(r["labels"], 100 * r["test"]) for r in mean if r["name"] == results["strategy"]]

    curves = {f"{results['strategy']}, defaults ({len(runs)} seeds)": curve(results["mean"]),
              **{f"attempt: {n.removeprefix('lora_').replace('_', ' ')} ({len(a['seeds'])} seeds)": curve(a["mean"])
                 for n, a in results["attempts"].items()}}
    ref = {r["name"]: r for r in results["mean"]}
    anchors = {f"{ref['random']['labels']} random labels": round(100 * ref["random"]["test"], 1),
               f"all {ref['all gold (no weak)']['labels']:,} gold": round(100 * ref["all gold (no weak)"]["test"], 1),
               "goal": ALL_GOLD_ANCHOR}
    results["plot"] = str(plot_learning_curve(curves, DOCS / "experiment_active_learning_lora.png", anchors=anchors,
                                              title="The product's loop on WRENCH YouTube (LoRA MiniLM, mean of seeds)",
                                              xlabel="human labels on top of the weak labels"))
    print(f"results: {write_results('active_learning_lora', results)}; plot: {results['plot']}")
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(TEXT_DATASETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--strategies", default=",".join(STRATEGY_NAMES + COLD_START))
    ap.add_argument("--lora", action="store_true", help="also part 4, the LoRA loop on YouTube (~15 min)")
    ap.add_argument("--lora-epochs", type=int, default=10)
    ap.add_argument("--lora-rounds", default="50,100,150,200", help="cumulative label counts of the LoRA rounds")
    ap.add_argument("--lora-only", action="store_true", help="only part 4, over --seeds seeds; writes "
                                                                  "docs/results/active_learning_lora.json")
    ap.add_argument("--lora-combine", help="comma-separated lora parts to merge into active_learning_lora.json "
                                           "(seeds run separately), then plot; with --lora-attempts")
    ap.add_argument("--lora-attempts", default="", help="comma-separated attempt parts to show beside them")
    ap.add_argument("--quick", action="store_true", help="1 seed, budget 100")
    ap.add_argument("--part", help="write only docs/results/active_learning_<part>.json (run datasets in parallel "
                                   "processes, then --combine)")
    ap.add_argument("--combine", help="comma-separated parts: merge their datasets, choose the default, plot")
    args = ap.parse_args(argv)
    if args.combine:
        return combine(args.combine.split(","), args.strategies.split(","))
    if args.quick:
        args.seeds, args.budget, args.lora_epochs, args.lora_rounds = 1, 100, 1, "20"
    t0 = time.perf_counter()
    if args.lora_combine:
        return combine_lora(args.lora_combine.split(","), [a for a in args.lora_attempts.split(",") if a])
    if args.lora_only:
        return lora_seeds("auto", DEFAULT_STRATEGY, [int(x) for x in args.lora_rounds.split(",")], args.lora_epochs,
                          list(range(args.seeds)))
    names = args.strategies.split(",")
    results: dict = {"protocol": {"learner": "frozen base-encoder embeddings + logistic regression (C=2)",
                                  "weak_weight": 1.0, "gold_weight": GOLD_WEIGHT, "step": args.step,
                                  "budget": args.budget, "seeds": args.seeds,
                                  "auto": {"candidates": list(AUTO_CANDIDATES), "default": DEFAULT_STRATEGY}},
                     "datasets": {}}
    for ds in args.datasets.split(","):
        t = time.perf_counter()
        d = load_dataset(ds)
        print(f"\n{ds}: pool {len(d['train'])}, test {len(d['test'])}, weak coverage {pct(d['weak_coverage_train'])}"
              f"%, weak accuracy {pct(d['weak_accuracy_train'])}% (setup {time.perf_counter() - t:.0f}s)", flush=True)
        results["datasets"][ds] = compare_strategies(d, args.budget, args.step, list(range(args.seeds)), names)
    if args.part:
        results["seconds"] = time.perf_counter() - t0
        print(f"part: {write_results(f'active_learning_{args.part}', results)}")
        return results
    results["default_choice"] = choose_default(results["datasets"], names)
    _report(results)
    if args.lora:
        from experiments.common import wrench_setup

        rounds = [int(x) for x in args.lora_rounds.split(",")]
        results["part4_lora"] = lora_loop(wrench_setup("snorkel"), results["default_choice"]["default"], rounds,
                                          args.lora_epochs)
        for r in results["part4_lora"]["rows"]:
            print(f"{r['name']:<22}{r['labels']:>8}{pct(r['test']):>8}{pct(r['test_leakage_free']):>11}")
    results["seconds"] = time.perf_counter() - t0
    results["plots"] = [str(p) for p in _plot(results)]
    print(f"results: {write_results('active_learning', results)}; plots: {results['plots']}")
    return results


def combine(parts: list[str], names: list[str]) -> dict:
    """Merge per-dataset parts (docs/results/active_learning_<part>.json) into active_learning.json."""
    import json

    from experiments.common import RESULTS

    results: dict = {"datasets": {}, "seconds": 0.0}
    for part in parts:
        r = json.loads((RESULTS / f"active_learning_{part}.json").read_text())
        results["protocol"] = r["protocol"]
        for ds, d in r["datasets"].items():     # a later part's strategies replace an earlier part's
            d = _int_budgets(d)
            if ds in results["datasets"]:
                results["datasets"][ds]["strategies"] |= d["strategies"]
            else:
                results["datasets"][ds] = d
        results["seconds"] += r["seconds"]
    results["default_choice"] = choose_default(results["datasets"], [n for n in names if n != "auto"])
    _report(results)
    results["plots"] = [str(p) for p in _plot(results)]
    print(f"results: {write_results('active_learning', results)}; plots: {results['plots']}")
    return results


def _int_budgets(d: dict) -> dict:
    for s in d["strategies"].values():
        for key, v in list(s.items()):
            if key.endswith("_by_budget"):
                s[key] = {int(b): x for b, x in v.items()}
    return d


def _report(results: dict) -> None:
    for ds, r in results["datasets"].items():
        print(f"\n{ds} ({r['source']}): test accuracy %, {len(r['seeds'])} seeds; all-gold reference "
              f"{pct(r['all_gold_reference_test'])}")
        print(f"{'strategy':<22}" + "".join(f"{b:>7}" for b in r["budgets"]) + "   labels to within 1 pt of all-gold")
        for name, s in r["strategies"].items():
            print(f"{name:<22}" + "".join(f"{pct(s['test_by_budget'][b]):>7}" for b in r["budgets"])
                  + f"   {s['labels_to_within_1_point_of_all_gold'] or '>' + str(r['budgets'][-1])}")
    dc = results["default_choice"]
    print(f"\ndefault: {dc['default']} ({dc['rule']}); qualifying: {', '.join(dc['qualifying'])}")
    for name, e in dc["evidence"].items():
        print(f"  {name:<20} worst gap to margin @200/300 {100 * e['worst_gap_to_margin_at_200_300']:+.1f}  "
              f"mean accuracy {pct(e['mean_accuracy_all_datasets'])}")


def _plot(results: dict) -> list:
    from curation.plots import plot_learning_curve

    paths = []
    for ds, r in results["datasets"].items():
        curves = {name: [(b, 100 * a) for b, a in s["test_by_budget"].items()] for name, s in r["strategies"].items()
                  if name not in ("least_confidence", "entropy")}
        anchors = {"same learner, all gold": round(100 * r["all_gold_reference_test"], 1)}
        paths.append(plot_learning_curve(curves, DOCS / f"experiment_active_learning_{ds}.png", anchors=anchors,
                                         title=f"Active learning on {ds} (proxy learner, {len(r['seeds'])} seeds)",
                                         xlabel="human labels on top of the weak labels"))
    return paths


if __name__ == "__main__":
    main()
