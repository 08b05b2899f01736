"""Weak labels → end model on WRENCH YouTube: which defaults make LoRA MiniLM trained on weak labels only good?

    python -m experiments.weak_to_end_model [--settings NAME,...] [--seeds 0,1,2] [--epochs 10] [--threads 2]
    python -m experiments.weak_to_end_model --summary        # the table from the runs recorded so far

The path a new user runs: WRENCH's 10 LF votes imported (`import_votes`), a label model fitted on train
(`fit_label_model`; the val split's 120 gold rows may choose it), the published split kept, LoRA MiniLM trained on
the train rows' weak labels only (`label_sources="weak"`, train gold never seen), val gold chooses the epoch,
test gold (250 rows) only scores.

Each (setting, seed) is ONE training run of `epochs` epochs without early stopping; after every epoch the val and
test accuracy are recorded. Early stopping with patience p is then read off the history exactly: the LR schedule
spans `epochs` either way, the run would have stopped after p epochs without a val improvement and kept the best
val epoch's weights — whose test accuracy the history holds. So one run answers every patience at that epoch
budget. Results are appended to build/weak_to_end_model.jsonl (resumable) and summarised into
docs/results/weak_to_end_model.json.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from experiments.common import RESULTS, ROOT, WRENCH

LOG = ROOT / "build" / "weak_to_end_model.jsonl"
OUT = RESULTS / "weak_to_end_model.json"

SOFT = {"weak_targets": "soft", "weak_confidence_weighting": False}
HARD = {"weak_targets": "hard", "weak_confidence_weighting": False}
HARD_MARGIN = {"weak_targets": "hard", "weak_confidence_weighting": True}
SOFT_MARGIN = {"weak_targets": "soft", "weak_confidence_weighting": True}
# name → (fit_label_model kwargs, TrainConfig overrides); every target setting explicit (the defaults change).
SETTINGS: dict[str, tuple[dict, dict]] = {
    f"{kind}/{policy}/{tname}": ({"kind": kind, "abstain_policy": policy}, targets)
    for kind in ("auto", "majority", "dawid_skene", "snorkel")
    for policy in ("leave_out", "prior", "tie_break")
    for tname, targets in (("soft", SOFT), ("hard", HARD), ("hard+margin", HARD_MARGIN), ("soft+margin", SOFT_MARGIN))
}


def setup(tmp: Path):
    from cli.common import quiet_third_party
    from curation.ingest import FieldMap, ingest
    from curation.settings import Settings
    from curation.splits import make_split
    from curation.store import Store
    from labeling.weak import import_votes

    quiet_third_party()
    store = Store.open(Settings(db=tmp / "w.duckdb"))
    ingest(store, WRENCH, "youtube", fields=FieldMap(id="id", label="label"), labels=["ham", "spam"])
    make_split(store, "youtube", from_column="split")
    import_votes(store, WRENCH, "youtube")
    return store


def one_run(frame, labels: list[str], config) -> dict:
    """`run_training` with a per-epoch test evaluation (the model is caught when it is built)."""
    from training import metrics
    from training import train as T
    from training.data import build_splits, input_ids, to_hf
    from training.score import forward_batches

    caught: dict = {}
    build = T.build_model

    def catching(cfg, labs, device):
        model, tok = build(cfg, labs, device)
        caught.update(model=model, tok=tok, device=device)
        return model, tok

    test = build_splits(frame, labels, config)["test"]
    test_ids: list = []

    class Epochs:
        def __call__(self, step, total):
            pass

        def epoch_end(self, row):
            if not test_ids:
                test_ids.extend(input_ids(to_hf(test, caught["tok"], config.max_length)))
            probs = forward_batches(caught["model"], test_ids, pad_id=caught["tok"].pad_token_id or 0,
                                    batch_size=config.eval_batch_size, device=caught["device"])[0]
            caught["model"].train()
            row["test_accuracy"] = metrics.evaluate(test.y, probs, labels)["accuracy"]
            print(f"  seed {config.seed} epoch {row['epoch']}: val f1 {row['val_macro_f1']:.4f} "
                  f"test {row['test_accuracy'] * 100:.1f} ({row['seconds']:.0f} s)", flush=True)

    T.build_model = catching
    try:
        res = T.run_training(frame, labels, config, Epochs())
    finally:
        T.build_model = build
    return {"history": res.history, "best_epoch": res.best_epoch, "test": res.metrics["test"]["accuracy"],
            "train_examples": res.data_counts["train"]["examples"], "train_seconds": res.train_seconds}


def stop_at(history: list[dict], patience: int, epochs: int, metric: str = "val_macro_f1") -> int:
    """The epoch whose weights early stopping keeps (training.train.fit's rule) with this patience and budget."""
    best, best_epoch, bad = -math.inf, 0, 0
    for row in history[:epochs]:
        if row[metric] > best + 1e-9:
            best, best_epoch, bad = row[metric], row["epoch"], 0
        else:
            bad += 1
        if patience and bad >= patience:
            break
    return best_epoch


def summarise(rows: list[dict], patiences=(2, 3, 0)) -> dict:
    """setting | epochs, patience → test accuracy per seed (the kept epoch's), mean."""
    out: dict = {}
    for r in rows:
        for p in patiences:
            if r.get("run_patience") and (p == 0 or p > r["run_patience"]):
                continue  # the run stopped sooner than this patience would have
            ep = stop_at(r["history"], p, r["epochs"])
            key = f"{r['setting']} | {r['epochs']} ep, patience {p}"
            out.setdefault(key, {})[r["seed"]] = {"test": r["history"][ep - 1]["test_accuracy"], "epoch": ep}
    table = {}
    for key, by_seed in out.items():
        tests = [v["test"] for v in by_seed.values()]
        table[key] = {"per_seed": {str(s): round(v["test"] * 100, 2) for s, v in sorted(by_seed.items())},
                      "epochs_kept": {str(s): v["epoch"] for s, v in sorted(by_seed.items())},
                      "mean": round(float(np.mean(tests)) * 100, 2), "n_seeds": len(tests)}
    return table


def proxy_screen(store) -> dict:
    """The cheap screen run first: logistic regression (C=2) on frozen MiniLM embeddings, trained on the train rows'
    weak labels for every label model × all-abstain policy × target mode (soft: each row twice, weighted by its
    probabilities; hard: the stored label; +margin: weights × top − runner-up). Test accuracy %. A linear probe,
    not the LoRA model: it ranks teachers, it does not predict the end model's figure."""
    from sklearn.linear_model import LogisticRegression

    from curation.versions import load_snapshot, snapshot
    from experiments.active_learning import embed_cached
    from labeling.weak import fit_label_model

    out = {}
    X = None
    for kind in ("auto", "majority", "dawid_skene", "snorkel"):
        for policy in ("leave_out", "prior", "tie_break", "model"):
            lm = fit_label_model(store, "youtube", kind=kind, abstain_policy=policy)
            f, _ = load_snapshot(snapshot(store, "youtube")["path"])
            X = embed_cached(f["text"].to_list()) if X is None else X
            split = np.asarray(f["split"].to_list())
            gold = np.asarray([0 if v == "ham" else 1 for v in f["label"].to_list()])
            P = np.asarray([v if v is not None else [0.5, 0.5] for v in f["weak_probs"].to_list()])
            stored = np.asarray([{"ham": 0, "spam": 1}.get(v, -1) for v in f["weak_label"].to_list()])
            tr, te = (split == "train") & (stored >= 0), split == "test"
            Xt, p1, margin = X[tr], P[tr, 1], np.abs(P[tr, 1] - P[tr, 0])
            row = {}
            for mode in ("soft", "hard", "hard+margin", "soft+margin"):
                if mode.startswith("soft"):
                    XX, yy = np.vstack([Xt, Xt]), np.r_[np.zeros(len(Xt)), np.ones(len(Xt))]
                    ww = np.r_[1 - p1, p1] * (np.r_[margin, margin] if "margin" in mode else 1)
                else:
                    XX, yy, ww = Xt, stored[tr], margin if "margin" in mode else np.ones(len(Xt))
                keep = ww > 0
                m = LogisticRegression(C=2.0, max_iter=3000).fit(XX[keep], yy[keep], sample_weight=ww[keep])
                row[mode] = round(float((m.predict(X[te]) == gold[te]).mean()) * 100, 1)
            out[f"{kind}/{policy}"] = {"chosen": lm["selection"]["chosen"], "train_rows": int(tr.sum()), **row}
            print(f"{kind:<12}{policy:<10} {out[f'{kind}/{policy}']}", flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patience", type=int, default=0, help="0: the whole budget (every patience can be read "
                    "off); p: stop as the product would (patience ≤ p can be read off)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--proxy", action="store_true", help="the linear-probe screen only (a minute; "
                    "build/weak_to_end_model_proxy.json)")
    args = ap.parse_args(argv)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in LOG.read_text().splitlines()] if LOG.exists() else []
    proxy_path = LOG.with_name("weak_to_end_model_proxy.json")
    if args.proxy:
        import tempfile

        proxy_path.write_text(json.dumps(proxy_screen(setup(Path(tempfile.mkdtemp(prefix="w2e-")))), indent=1))
        return
    if not args.summary:
        import tempfile

        import torch

        from curation.versions import load_snapshot, snapshot
        from labeling.weak import fit_label_model
        from training.config import TrainConfig

        torch.set_num_threads(args.threads)
        store = setup(Path(tempfile.mkdtemp(prefix="w2e-")))
        for name in args.settings.split(","):
            lm_kwargs, overrides = SETTINGS[name]
            todo = [int(s) for s in args.seeds.split(",")
                    if not any(d["setting"] == name and d["seed"] == int(s) and d["epochs"] == args.epochs
                               and d["max_length"] == args.max_length
                               and d.get("run_patience", 0) == args.patience for d in done)]
            if not todo:
                continue
            lm = fit_label_model(store, "youtube", **lm_kwargs)
            frame, _ = load_snapshot(snapshot(store, "youtube")["path"])
            for seed in todo:
                config = TrainConfig(label_sources="weak", allow_leakage=True, seed=seed, epochs=args.epochs,
                                     patience=args.patience, max_length=args.max_length, num_threads=args.threads,
                                     **overrides)
                t0 = time.time()
                r = one_run(frame, ["ham", "spam"], config)
                row = {"setting": name, "seed": seed, "epochs": args.epochs, "max_length": args.max_length,
                       "run_patience": args.patience,
                       "label_model": lm["selection"]["chosen"], "labeled_train": lm["metrics"]["train"],
                       "overrides": overrides, "wall_s": round(time.time() - t0, 1), **r}
                done.append(row)
                with LOG.open("a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
                print(f"{name} seed {seed}: test/epoch " + " ".join(
                    f"{h['test_accuracy'] * 100:.1f}" for h in r["history"]) + f"  ({row['wall_s']:.0f} s)",
                    flush=True)
    table = summarise(done)
    for k, v in sorted(table.items()):
        print(f"{k:<60} {v['per_seed']}  mean {v['mean']:.2f}  epochs {v['epochs_kept']}")
    proxy = json.loads(proxy_path.read_text()) if proxy_path.exists() else None
    OUT.write_text(json.dumps({"protocol": __doc__.split("\n\n")[1:3], "table": table, "proxy_screen": proxy,
                               "runs": done}, indent=1, default=str))


if __name__ == "__main__":
    main()
