"""Weak supervision on the WRENCH YouTube split: majority vote vs label model vs an end model trained on weak
labels only, on the published test split and on its leakage-free subset, beside the published anchors.

    python -m experiments.weak_supervision [--seeds 2] [--epochs 5] [--quick]

Label models fit on the train split (1,586 rows, gold never seen); ties and all-abstain rows are broken by
Snorkel/WRENCH's hash rule, and every test row counts. The end model is the product's LoRA fine-tune of
all-MiniLM-L6-v2 on the label model's probabilities (soft targets), early-stopped on val. The published split
leaks (test rows with a duplicate in train), so every figure is also given on the leakage-free test subset.
Writes docs/results/weak_supervision.json and docs/experiment_weak_supervision.png.

    python -m experiments.weak_supervision --model-choice     # label models only, ~1 min on 2 cores

`--model-choice` measures `curate label --model auto` (issue 13): every candidate on the Psy + KatyPerry gold rows
(the measured fault) and on WRENCH YouTube (chosen on val gold, judged on test), and the all-abstain policies
through a quick end model (TF-IDF + logistic regression on the train rows' stored weak labels, WRENCH test).
Writes docs/results/label_model_choice.json.
"""

import argparse
import json
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
    from curation.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(9, 4.8))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * r[1] for r in rows], 0.4, label="published test split")
    ax.bar(x + 0.2, [100 * r[2] for r in rows], 0.4, label="leakage-free test subset")
    for i, (name, y) in enumerate(ANCHORS.items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{i + 2}", label=f"published: {name} {y}")
    ax.set_xticks(x, [r[0].replace(" + ", "\n+ ").replace(" → ", "\n→ ") for r in rows], fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(70, 100), title="Weak supervision on WRENCH YouTube")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, DOCS / "experiment_weak_supervision.png")


def model_choice(seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """Every candidate's score where `curate label --model auto` chooses, and the all-abstain policies."""
    import tempfile
    from pathlib import Path

    from curation.ingest import FieldMap, ingest
    from curation.splits import make_split
    from curation.store import Store
    from labeling.weak import ABSTAIN_POLICIES, apply_lfs, fit_label_model

    root = Path(__file__).resolve().parent.parent
    raw, lfs = root / "data" / "youtube-spam" / "raw", root / "examples" / "youtube_lfs.py"
    out: dict = {"seeds": list(seeds)}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(db=Path(tmp) / "psy.duckdb")
        ingest(store, raw / "Youtube01-Psy.csv", "yt", fields=FieldMap(id="COMMENT_ID", text="CONTENT",
                                                                      label="CLASS"), labels=LABELS)
        ingest(store, raw / "Youtube02-KatyPerry.csv", "yt", fields=FieldMap(id="COMMENT_ID", text="CONTENT",
                                                                           exclude=("CLASS",)), labels=LABELS)
        apply_lfs(store, "yt", lfs)
        r = fit_label_model(store, "yt", seeds=seeds)
        out["psy_katyperry"] = {"chosen": r["selection"]["chosen"], "accuracy": r["metrics"]["all"]["accuracy"],
                                "candidates": {c["name"]: {m: c.get(m) for m in ("accuracy", "macro_f1")}
                                               for c in r["selection"]["candidates"]}}
        store.close()

        store = Store.open(db=Path(tmp) / "wrench.duckdb")
        ingest(store, WRENCH, DATASET, fields=FieldMap(id="id", label="label"), labels=LABELS)
        make_split(store, DATASET, from_column="split")
        texts = store.frame(f"SELECT record_id, text FROM store.records WHERE dataset = '{DATASET}' "
                            "ORDER BY record_id")
        for votes, lf_set in (("wrench_votes", import_votes(store, WRENCH, DATASET)["lf_set_id"]),
                              ("our_lfs", apply_lfs(store, DATASET, lfs)["lf_set_id"])):
            r = fit_label_model(store, DATASET, lf_set_id=lf_set, seeds=seeds)
            mat = load_matrix(store, DATASET, lf_set)
            L, gold, split = mat["L"].astype(np.int64), mat["gold"], np.asarray(mat["split"], dtype=object)
            test = {}
            for c in lm.default_candidates(seeds, lm.gold_balance(gold[split == "val"], len(LABELS))):
                model = lm.get_label_model(c["kind"], **c["params"]).fit(L[split == "train"], 2, seed=c["seed"])
                pred = lm.probs_to_labels(model.predict_proba(L[split == "test"]), "hash")
                test[c["name"]] = lm.accuracy(pred, gold[split == "test"])
            out[f"wrench_{votes}"] = {
                "chosen": r["selection"]["chosen"], "test": r["metrics"]["test"]["accuracy"],
                "candidates": {c["name"]: {"val": c.get("accuracy"), "val_macro_f1": c.get("macro_f1"),
                                           "test": test.get(c["name"])} for c in r["selection"]["candidates"]}}
            out[f"wrench_{votes}"]["abstain_policies"] = _abstain_study(store, r["kind"], lf_set, texts, split,
                                                                        gold, r["selection"], ABSTAIN_POLICIES)
        store.close()
    print(json.dumps(out, indent=1))
    write_results("label_model_choice", out)
    return out


def _abstain_study(store, kind, lf_set, texts, split, gold, selection, policies) -> dict:
    """TF-IDF + logistic regression on the train rows' stored weak labels, per all-abstain policy: WRENCH test
    accuracy (the fast stand-in for the end model; the LoRA end model is `main`)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from labeling.weak import fit_label_model

    chosen = next(c for c in selection["candidates"] if c["chosen"])
    params = {"class_balance": chosen["class_balance"]} if chosen.get("class_balance") else None
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    X = vec.fit_transform(texts["text"].to_list())
    res = {}
    for policy in policies:
        r = fit_label_model(store, DATASET, kind, lf_set_id=lf_set, abstain_policy=policy, seed=chosen["seed"],
                            params=params)
        w = store.frame("SELECT label FROM store.weak_labels WHERE model_id = ? ORDER BY record_id",
                        [r["model_id"]])["label"].to_list()
        y = np.asarray([LABELS.index(x) if x is not None else -1 for x in w])
        tr = (split == "train") & (y != -1)
        clf = LogisticRegression(max_iter=2000, C=10.0).fit(X[tr], y[tr])
        te = split == "test"
        res[policy] = {"train_rows": int(tr.sum()), "test": lm.accuracy(clf.predict(X[te]), gold[te])}
    return res


if __name__ == "__main__":
    import sys

    if "--model-choice" in sys.argv:
        model_choice()
    else:
        main()
