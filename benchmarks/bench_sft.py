"""SFT training throughput beside `transformers.Trainer`, measured in the same run.

    .venv/bin/python -m benchmarks.bench_sft [--quick] [--threads N] [--train 32] [--epochs 1]

`training.sft.fit_sft` (the loop inside `train_sft`: length-grouped dynamically padded batches, the LM head on
assistant positions only, bf16 autocast on CUDA) beside `transformers.Trainer` with its defaults (random batches,
`DataCollatorForSeq2Seq` padding, the model's own loss over full logits), on the same data: SmolLM2-135M-Instruct
(the offline GGUF, converted once into the model cache), the same LoRA config (r 16, alpha 32, q_proj/v_proj,
no dropout), learning rate, linear schedule, epochs, batch size, seed, and the same assistant-only labels
(`encode_conversations`; both losses are the mean NLL over a batch's assistant tokens). Data: the self-instruct
seed tasks as single-turn conversations.

Tokens/s counts the non-padding tokens of the training batches over the training loop only. Both adapters are then
scored by the same code (`split_loss`) on the same validation conversations. Goal: ≥ 1.5× tokens/s at the same
val loss ± 1 %. Also reported: GGUF conversion (when the cache was empty) and load-from-cache seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def bench_sft(n_train: int, n_val: int, epochs: int, batch_size: int, lr: float, max_length: int, device: str,
              cache_dir: str | None) -> dict:
    import datasets
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from training.config import resolve_device
    from training.llm import cache_key, default_llm, load_causal_lm, model_cache_dir, resolve_base
    from training.sft import SftConfig, build_sft_model, encode_conversations, fit_sft, split_loss
    from training.train import set_seed

    dev = resolve_device(device)
    gguf = Path(default_llm())
    cached = (model_cache_dir(cache_dir) / cache_key(gguf) / "config.json").is_file()
    t = time.perf_counter()
    folder = resolve_base(str(gguf), cache_dir)
    convert_s = None if cached else time.perf_counter() - t
    t = time.perf_counter()
    load_causal_lm(folder, device=dev)
    load_s = time.perf_counter() - t

    from benchmarks.common import seed_conversations

    convs = seed_conversations()
    train = convs[:n_train]
    # the shortest of the other tasks: every val answer fits in max_length (a cut-off one has no loss)
    val = sorted(convs[n_train:], key=lambda c: sum(len(m["content"]) for m in c))[:n_val]
    config = SftConfig(base_model=folder, epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length,
                       lora_dropout=0.0, patience=0, device=dev, seed=0, num_generations=0)

    # ours
    set_seed(0)
    model, tok, _ = build_sft_model(config, dev)
    pad_id = tok.pad_token_id
    tr_ids, tr_labels, counts = encode_conversations(tok, train, max_length=max_length)
    va_ids, va_labels, _ = encode_conversations(tok, val, max_length=max_length)
    ev = {"pad_id": pad_id, "batch_size": 16, "device": dev}
    base_val = split_loss(model, va_ids, va_labels, **ev)["loss"]
    fit = fit_sft(model, (tr_ids, tr_labels), None, config, pad_id=pad_id, device=dev)
    ours_s, ours_tokens = fit["train_seconds"], fit["tokens"]
    ours_val = split_loss(model, va_ids, va_labels, **ev)["loss"]
    del model

    # transformers.Trainer with the same model, LoRA, labels and optimisation
    set_seed(0)
    model, tok, _ = build_sft_model(config, dev)
    keep = [i for i, lab in enumerate(tr_labels) if any(x != -100 for x in lab[1:])]
    ds = datasets.Dataset.from_dict({"input_ids": [tr_ids[i] for i in keep],
                                     "attention_mask": [[1] * len(tr_ids[i]) for i in keep],
                                     "labels": [tr_labels[i] for i in keep]})
    steps = -(-len(keep) // batch_size) * epochs
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, num_train_epochs=epochs, learning_rate=lr, seed=0,
                                 per_device_train_batch_size=batch_size, lr_scheduler_type="linear",
                                 warmup_steps=int(steps * config.warmup_ratio), max_grad_norm=config.max_grad_norm,
                                 weight_decay=0.0, report_to="none", save_strategy="no", logging_strategy="no",
                                 use_cpu=dev == "cpu", bf16=dev == "cuda", disable_tqdm=True,
                                 dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        t = time.perf_counter()
        trainer.train()
        base_s = time.perf_counter() - t
    trainer_tokens = sum(len(tr_ids[i]) for i in keep) * epochs
    trainer_val = split_loss(model, va_ids, va_labels, **ev)["loss"]
    ours_tps, trainer_tps = ours_tokens / ours_s, trainer_tokens / base_s
    return {"train_conversations": len(keep), "val_conversations": len(val), "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "max_length": max_length, "device": dev,
            "train_tokens": counts["tokens"], "train_target_tokens": counts["target_tokens"],
            "convert_gguf_s": convert_s, "load_from_cache_s": load_s,
            "ours_tokens_per_s": ours_tps, "trainer_tokens_per_s": trainer_tps, "speedup": ours_tps / trainer_tps,
            "ours_steps_per_s": fit["steps"] / ours_s, "trainer_steps_per_s": steps / base_s,
            "ours_train_s": ours_s, "trainer_train_s": base_s,
            "base_val_loss": base_val, "ours_val_loss": ours_val, "trainer_val_loss": trainer_val,
            "val_loss_rel_diff": (ours_val - trainer_val) / trainer_val}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides")
    ap.add_argument("--train", type=int, default=24, help="training conversations (self-instruct seed tasks)")
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--model-cache", default=None, help="converted-model cache (default: CURATE_MODEL_CACHE or "
                    "~/.cache/curate/models)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    _quiet()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    n_train, n_val, max_length = (8, 4, 64) if args.quick else (args.train, args.val, args.max_length)
    r = bench_sft(n_train, n_val, args.epochs, args.batch_size, args.lr, max_length, args.device, args.model_cache)
    r["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(r, default=str))
        return r
    conv = f"{r['convert_gguf_s']:.1f} s" if r["convert_gguf_s"] is not None else "cached"
    print(f"SmolLM2-135M GGUF → safetensors: {conv}; load from cache {r['load_from_cache_s']:.2f} s")
    print(f"SFT {r['train_conversations']} conversations ({r['train_tokens']} tokens, {r['train_target_tokens']} "
          f"assistant) × {r['epochs']} epoch(s), batch {r['batch_size']}, max_length {r['max_length']}, "
          f"{r['device']}, {r['threads']} thread(s)")
    print(f"    ours {r['ours_tokens_per_s']:8.1f} tokens/s ({r['ours_steps_per_s']:.3f} steps/s)   Trainer "
          f"{r['trainer_tokens_per_s']:8.1f} tokens/s ({r['trainer_steps_per_s']:.3f} steps/s)   "
          f"×{r['speedup']:.2f} (goal ≥ 1.5)")
    print(f"    val loss: base {r['base_val_loss']:.4f}   ours {r['ours_val_loss']:.4f}   Trainer "
          f"{r['trainer_val_loss']:.4f}   Δ {r['val_loss_rel_diff'] * 100:+.2f} % (goal ± 1 %)")
    return r


if __name__ == "__main__":
    main()
