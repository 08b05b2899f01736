"""Training and scoring throughput beside the stock `transformers` tools, measured in the same run.

    .venv/bin/python -m benchmarks.bench_training [--quick] [--threads N] [--batch-size 32]

(a) Scoring: `training.score.LoadedModel.predict_proba` (length-sorted batches, dynamic padding, inference_mode,
    LoRA merged, bf16 autocast on CUDA) beside `transformers.pipeline("text-classification")` with the same merged
    model, the same rows (the 1,956 YouTube comments; --quick: 400) and the same batch size and max_length. Each
    side runs `--repeats` times, alternating, and the best time counts (the machine is shared). The two sides'
    probabilities are compared (max |Δp|). Goal ≥ 2× on CPU, ≥ 3× on GPU.
(b) Training: `training.train.run_training` (plain loop, length-grouped batches of 32, dynamic padding) beside
    `transformers.Trainer` with its defaults (batch size 8, DataCollatorWithPadding, linear schedule) and the same
    LoRA config, learning rate, epochs and seed, on the WRENCH YouTube train split with gold labels (--quick: 256
    rows). Examples/s over the training loop only; accuracy on the 120 val rows after the last epoch, scored by the
    same code for both. Goal ≥ 2× examples/s at the same accuracy ± 0.5 points.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
WRENCH = ROOT / "data" / "youtube-spam" / "wrench" / "youtube.jsonl"
LABELS = ["ham", "spam"]


def wrench() -> list[dict]:
    return [json.loads(line) for line in WRENCH.read_text().splitlines()]


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- (a) scoring ------------------------------------------------------------------------------------------
def bench_scoring(n: int, batch_size: int, max_length: int, repeats: int, device: str) -> dict:
    import torch
    from transformers import pipeline

    from training.config import TrainConfig
    from training.score import load_model
    from training.train import TrainResult, build_model, save_run

    texts = [r["text"] for r in wrench()]
    texts = (texts * (n // len(texts) + 1))[:n]
    config = TrainConfig(max_length=max_length, eval_batch_size=batch_size, device=device)
    config = config.model_copy(update={"base_model": config.resolved_base_model()})
    model, tok = build_model(config, LABELS, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    with tempfile.TemporaryDirectory() as tmp:
        save_run(Path(tmp), TrainResult(model, tok, LABELS, [], 1, {}, {}, "cpu", [], 0, 0.0, 0.0), config,
                 {"run_id": "bench", "base_model": config.base_model, "labels": LABELS, "config": config.model_dump()})
        loaded = load_model(tmp, device)
    pipe = pipeline("text-classification", model=loaded.model, tokenizer=loaded.tokenizer,
                    device=0 if loaded.device == "cuda" else -1, top_k=None, batch_size=batch_size,
                    truncation=True, max_length=max_length)
    if loaded.device == "cuda":
        pipe.model = pipe.model.to(torch.bfloat16)         # the pipeline's fastest CUDA dtype, for a fair GPU figure
    loaded.predict_proba(texts[:64])                       # warm-up both
    pipe(texts[:64])
    ours_s, base_s, emb_s = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ours = loaded.predict_proba(texts)
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = pipe(texts)
        base_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        loaded.predict(texts, embeddings=True)
        emb_s.append(time.perf_counter() - t)
    index = {lab: i for i, lab in enumerate(LABELS)}
    base = np.zeros_like(ours)
    for i, row in enumerate(out):
        for d in row:
            base[i, index[d["label"]]] = d["score"]
    o, b, e = min(ours_s), min(base_s), min(emb_s)
    return {"rows": n, "batch_size": batch_size, "max_length": max_length, "device": loaded.device,
            "ours_rows_per_s": n / o, "pipeline_rows_per_s": n / b, "speedup": b / o,
            "ours_with_embeddings_rows_per_s": n / e, "max_abs_prob_diff": float(np.abs(ours - base).max()),
            "ours_s": ours_s, "pipeline_s": base_s}


# -- (b) training -----------------------------------------------------------------------------------------
def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame({
        "record_id": list(range(len(rows))), "text": [r["text"] for r in rows], "origin": ["ingest"] * len(rows),
        "label": [LABELS[r["label"]] for r in rows], "weak_probs": [None] * len(rows),
        "split": [r["split"] for r in rows], "leaks": [False] * len(rows)},
        schema_overrides={"weak_probs": pl.List(pl.Float64)})


def bench_training(n_train: int, epochs: int, lr: float, max_length: int, device: str) -> dict:
    import datasets
    from transformers import Trainer, TrainingArguments

    from training.config import TrainConfig, resolve_device
    from training.metrics import accuracy
    from training.score import forward_batches
    from training.train import build_model, run_training, set_seed

    rows = wrench()
    train_rows = [r for r in rows if r["split"] == "train"][:n_train]
    val_rows = [r for r in rows if r["split"] == "val"]
    config = TrainConfig(epochs=epochs, lr=lr, max_length=max_length, patience=0, device=device, seed=0)
    dev = resolve_device(device)

    res = run_training(_frame(train_rows + val_rows), LABELS, config)
    ours_eps = res.train_examples_per_s
    ours_acc_last = res.history[-1]["val_accuracy"]

    set_seed(0)
    model, tok = build_model(config, LABELS, dev)
    enc = tok([r["text"] for r in train_rows], truncation=True, max_length=max_length)
    ds = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                     "labels": [r["label"] for r in train_rows]})
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, num_train_epochs=epochs, learning_rate=lr, seed=0,
                                 report_to="none", save_strategy="no", logging_strategy="no",
                                 use_cpu=dev == "cpu", bf16=dev == "cuda", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        t = time.perf_counter()
        trainer.train()
        base_s = time.perf_counter() - t
    base_eps = len(train_rows) * epochs / base_s
    val_ids = tok([r["text"] for r in val_rows], truncation=True, max_length=max_length)["input_ids"]
    probs, _ = forward_batches(model, val_ids, pad_id=tok.pad_token_id or 0, batch_size=128, device=dev)
    base_acc = accuracy(np.asarray([r["label"] for r in val_rows]), probs.argmax(1))
    return {"train_rows": len(train_rows), "epochs": epochs, "lr": lr, "max_length": max_length, "device": dev,
            "ours_examples_per_s": ours_eps, "trainer_examples_per_s": base_eps, "speedup": ours_eps / base_eps,
            "ours_val_accuracy_last_epoch": ours_acc_last, "ours_val_accuracy_best_epoch": res.metrics["val"]["accuracy"],
            "trainer_val_accuracy": base_acc, "accuracy_delta_points": 100 * (ours_acc_last - base_acc),
            "ours_history": res.history}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--only", choices=["scoring", "training"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides")
    ap.add_argument("--batch-size", type=int, default=32, help="scoring batch size (both sides)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    _quiet()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads()}
    if args.only in (None, "scoring"):
        results["scoring"] = s = bench_scoring(400 if args.quick else 1956, args.batch_size, args.max_length,
                                               1 if args.quick else args.repeats, args.device)
        if not args.json:
            print(f"(a) scoring {s['rows']} comments, batch {s['batch_size']}, max_length {s['max_length']}, "
                  f"{s['device']}, {results['threads']} thread(s)")
            print(f"    ours {s['ours_rows_per_s']:8.0f} rows/s   pipeline {s['pipeline_rows_per_s']:8.0f} rows/s   "
                  f"×{s['speedup']:.2f}   (ours with embeddings {s['ours_with_embeddings_rows_per_s']:.0f} rows/s; "
                  f"max |Δp| {s['max_abs_prob_diff']:.1e})")
    if args.only in (None, "training"):
        results["training"] = t = bench_training(256 if args.quick else 1586, 1 if args.quick else args.epochs,
                                                 args.lr, 64 if args.quick else args.max_length, args.device)
        if not args.json:
            print(f"(b) training {t['train_rows']} rows × {t['epochs']} epoch(s), lr {t['lr']}, {t['device']}")
            print(f"    ours {t['ours_examples_per_s']:8.1f} ex/s   Trainer {t['trainer_examples_per_s']:8.1f} ex/s   "
                  f"×{t['speedup']:.2f}")
            print(f"    val accuracy (last epoch): ours {t['ours_val_accuracy_last_epoch'] * 100:.1f}   Trainer "
                  f"{t['trainer_val_accuracy'] * 100:.1f}   Δ {t['accuracy_delta_points']:+.1f} points")
    if args.json:
        print(json.dumps(results, default=str))
    return results


if __name__ == "__main__":
    main()
