"""LoRA fine-tuning of `AutoModelForSequenceClassification` on a snapshot.

Pure core: `run_training(frame, labels, config)` takes a snapshot frame and returns the trained model, the
per-epoch history and the metrics (no DuckDB). A plain PyTorch loop: soft-target cross-entropy (gold labels
one-hot, weak labels their probabilities) with per-example weights, AdamW with linear warmup/decay, gradient
clipping, length-grouped dynamically padded batches, early stopping on val (the best epoch's weights are kept),
bf16 autocast on CUDA and fp32 on CPU, seeded.

DuckDB edge: `train(store, dataset, config)` takes a snapshot (`curation.versions.snapshot`), refuses a leaky
split unless `config.allow_leakage`, records the run in `store.runs` (running → succeeded / failed with its
error) and saves the adapter, config and labels under `settings.runs_dir/<run_id>/`.
"""

import datetime as dt
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curation.errors import InputError, LeakageError
from training import metrics
from training.config import TrainConfig, resolve_device
from training.data import SplitData, build_splits, input_ids, iter_batches, to_hf
from training.score import autocast, forward_batches

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (optimizer steps done, total steps)


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_model(config: TrainConfig, labels: list[str], device: str):
    """Base model with a fresh classification head, wrapped in a LoRA adapter → (peft model, tokenizer)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = config.resolved_base_model()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        base = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}, dtype=torch.float32)
    except OSError as e:
        raise InputError(f"--base-model {name!r}: cannot load it ({e}). Pass a local model folder or a hub name "
                         "reachable from here") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        base.config.pad_token_id = tokenizer.pad_token_id
    targets = config.resolved_target_modules(base.config.model_type)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    try:
        model = get_peft_model(base, lora)
    except ValueError as e:
        raise InputError(f"--target-modules {','.join(targets)}: {e}") from None
    return model.to(device), tokenizer


def soft_cross_entropy(logits, targets, weights):
    """Σ_i w_i · CE(p_i, softmax(logits_i)) / Σ_i w_i with probability targets (one-hot for gold)."""
    import torch

    per = -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
    return (per * weights).sum() / weights.sum().clamp(min=1e-12)


def _eval(model, ds, *, pad_id: int, batch_size: int, device: str) -> np.ndarray:
    return forward_batches(model, input_ids(ds), pad_id=pad_id, batch_size=batch_size, device=device)[0]


def _val_score(report: dict, loss: float, metric: str) -> float:
    return -loss if metric == "loss" else report[metric]


@dataclass
class TrainResult:
    model: object
    tokenizer: object
    labels: list[str]
    history: list[dict]
    best_epoch: int
    metrics: dict
    data_counts: dict
    device: str
    target_modules: list[str]
    trainable_params: int
    train_seconds: float
    train_examples_per_s: float
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def fit(model, train_ds, val_ds, config: TrainConfig, *, pad_id: int, device: str, labels: list[str],
        progress: Progress | None = None) -> tuple[list[dict], int, bool, float, int]:
    """The training loop. Returns (history, best_epoch, stopped_early, train_seconds, examples_seen);
    the model ends holding the best epoch's weights (by `config.early_stopping_metric` on val)."""
    import torch

    rng = np.random.default_rng(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    history: list[dict] = []
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    step, seen, train_seconds, stopped = 0, 0, 0.0, False
    has_val = val_ds is not None and len(val_ds) > 0
    val_y = np.asarray(val_ds["y"]) if has_val else None
    val_targets = np.asarray(val_ds["targets"], dtype=np.float32) if has_val else None
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum, w_sum = 0.0, 0.0
        batches = iter_batches(train_ds, config.batch_size, pad_id, rng, grouped=config.group_by_length)
        for batch in batches:
            ids = torch.from_numpy(batch["input_ids"]).to(device)
            mask = torch.from_numpy(batch["attention_mask"]).to(device)
            tgt = torch.from_numpy(batch["targets"]).to(device)
            w = torch.from_numpy(batch["weight"]).to(device)
            with autocast(device):
                logits = model(input_ids=ids, attention_mask=mask).logits
            loss = soft_cross_entropy(logits, tgt, w)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}, step {step + 1}: loss is {loss.item()}; "
                                         f"lower --lr (now {config.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(batch["index"])
            loss_sum += float(loss.detach()) * float(w.sum())
            w_sum += float(w.sum())
            if progress:
                progress(step, total)
        epoch_s = time.perf_counter() - t0
        train_seconds += epoch_s
        row = {"epoch": epoch, "train_loss": loss_sum / max(w_sum, 1e-12), "seconds": round(epoch_s, 3),
               "examples_per_s": round(len(train_ds) / epoch_s, 1), "lr": sched.get_last_lr()[0]}
        if has_val:
            probs = _eval(model, val_ds, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
            val_loss = float(-(val_targets * np.log(np.clip(probs, 1e-12, 1))).sum(1).mean())
            rep = metrics.evaluate(val_y, probs, labels)
            row |= {"val_loss": val_loss, "val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"],
                    "val_ece": rep["ece"]}
            score = _val_score(rep, val_loss, config.early_stopping_metric)
            if score > best + 1e-9:
                best, best_epoch, bad = score, epoch, 0
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            else:
                bad += 1
        else:
            best_epoch = epoch
        history.append(row)
        log.info("epoch %d: %s", epoch, row)
        if hasattr(progress, "epoch_end"):   # a tuner's per-epoch report (training/tune.py); it may stop the run
            progress.epoch_end(row)
        if has_val and config.patience and bad >= config.patience and epoch < config.epochs:
            stopped = True
            log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
            break
    if best_state is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    if progress and stopped:
        progress(total, total)
    return history, best_epoch, stopped, train_seconds, seen


def run_training(frame, labels: list[str], config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Pure: snapshot frame → trained model, history and metrics on val, test and the leakage-free test subset
    (present when some test rows leak)."""
    import torch

    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    splits = build_splits(frame, labels, config)
    set_seed(config.seed)
    model, tokenizer = build_model(config, labels, device)
    pad_id = tokenizer.pad_token_id or 0
    hf = {name: to_hf(data, tokenizer, config.max_length) for name, data in splits.items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    history, best_epoch, stopped, seconds, seen = fit(
        model, hf["train"], hf["val"], config, pad_id=pad_id, device=device, labels=labels, progress=progress)
    result_metrics: dict = {}
    for name in ("val", "test"):
        data: SplitData = splits[name]
        if len(data) == 0:
            result_metrics[name] = None
            continue
        probs = _eval(model, hf[name], pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
        result_metrics[name] = metrics.evaluate(data.y, probs, labels) | {"label_source": data.counts["label_source"]}
        if name == "test" and data.leaks.any() and not data.leaks.all():
            clean = ~data.leaks
            result_metrics["test_leakage_free"] = metrics.evaluate(data.y[clean], probs[clean], labels) | {
                "excluded_leaking": int(data.leaks.sum())}
    counts = {name: d.counts | {"examples": len(d)} for name, d in splits.items()}
    return TrainResult(model, tokenizer, labels, history, best_epoch, result_metrics, counts, device,
                       sorted(model.peft_config["default"].target_modules), trainable, seconds,
                       seen / seconds if seconds > 0 else float("nan"), stopped)


def save_run(run_dir: Path, result: TrainResult, config: TrainConfig, meta: dict) -> Path:
    """Adapter (+ classification head), tokenizer, config.json, labels.json and run.json under `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(str(run_dir / "adapter"))
    result.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    (run_dir / "labels.json").write_text(json.dumps(result.labels))
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    return run_dir / "adapter"


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


# -- the DuckDB edge ------------------------------------------------------------------------------------
def train(store, dataset: str, config: TrainConfig | None = None, progress: Progress | None = None, *,
          allow_contamination: bool = False, engine=None) -> dict:
    """Snapshot `dataset`, train on the snapshot, record the run. Returns the run (see `train_snapshot`).
    An instruction dataset (or an `SftConfig`) goes to supervised fine-tuning of an LLM
    (`training.sft_runs.train_sft_run`; the run's task is 'sft')."""
    from curation import versions
    from training.sft import SftConfig
    from training.sft_runs import is_sft, train_sft_run

    if isinstance(config, SftConfig) or is_sft(store, dataset):
        return train_sft_run(store, dataset, config, progress, allow_contamination=allow_contamination)
    store.dataset(dataset)
    manifest = versions.snapshot(store, dataset)
    frame, manifest = versions.load_snapshot(manifest["path"])
    return train_snapshot(store, frame, manifest, config or TrainConfig(), progress,
                          allow_contamination=allow_contamination, engine=engine)


def check_leakage(manifest: dict, config: TrainConfig) -> int:
    leaks = int(manifest.get("split_leaks") or 0)
    if leaks and not config.allow_leakage:
        raise LeakageError(
            f"snapshot {manifest.get('version_id')} of {manifest.get('dataset')!r}: {leaks} duplicate "
            f"component(s) cross splits (split {manifest.get('split_id')}). Re-split with `curate split` "
            "(grouped by duplicates), or pass --allow-leakage to train anyway (the run records it and reports "
            "the leakage-free test subset)")
    return leaks


def check_contamination_gate(store, frame, manifest: dict, allow: bool) -> dict:
    """The contamination gate: the newest check of the dataset must flag no record of the snapshot's train
    split, unless `allow` (`curation.contamination.require_uncontaminated`)."""
    from curation.contamination import require_uncontaminated

    train_ids = frame.filter(frame["split"] == "train")["record_id"].to_list() if "split" in frame.columns else []
    return require_uncontaminated(store, manifest["dataset"], train_ids, allow)


def train_snapshot(store, frame, manifest: dict, config: TrainConfig, progress: Progress | None = None, *,
                   allow_contamination: bool = False, engine=None) -> dict:
    """Train on an already loaded snapshot (frame + manifest) and record the run in `store.runs`. `engine`: a Ray
    `curation.engine.Engine` trains with Ray Train's TorchTrainer (DDP over the cluster's workers)."""
    from curation.store import now

    dataset = manifest["dataset"]
    labels = list(manifest.get("labels") or store.dataset(dataset)["labels"])
    leaks = check_leakage(manifest, config)
    contamination = check_contamination_gate(store, frame, manifest,
                                             allow_contamination or getattr(config, "allow_contamination", False))
    config = config.model_copy(update={"base_model": config.resolved_base_model()})
    run_id = new_run_id()
    run_dir = Path(store.settings.runs_dir) / run_id
    started = now()
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, snapshot_id, status, config, leakage_allowed, "
                    "contamination_allowed, started_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                    [run_id, dataset, manifest.get("version_id"), config.model_dump_json(),
                     bool(leaks and config.allow_leakage), contamination["contamination_allowed"], started])
    try:
        if engine is not None:   # the same run_training per DDP worker (training.distributed.ray_run_training)
            from training.distributed import ray_run_training

            result = ray_run_training(frame, labels, config, engine=engine, progress=progress)
        else:
            result = run_training(frame, labels, config, progress)
        run = {
            "run_id": run_id, "dataset": dataset, "status": "succeeded", "snapshot_id": manifest.get("version_id"),
            "split_id": manifest.get("split_id"), "split_leaks": leaks, "leakage_allowed": bool(leaks),
            "contamination": contamination, "contamination_allowed": contamination["contamination_allowed"],
            "base_model": config.base_model, "labels": labels, "config": config.model_dump(),
            "data_counts": result.data_counts, "history": result.history, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "metrics": result.metrics, "device": result.device,
            "target_modules": result.target_modules, "trainable_params": result.trainable_params,
            "train_seconds": round(result.train_seconds, 3),
            "train_examples_per_s": round(result.train_examples_per_s, 1), "run_dir": str(run_dir),
        }
        adapter = save_run(run_dir, result, config, run)
        run["adapter_path"] = str(adapter)
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        log.error("run %s failed: %s", run_id, error)
        with store.transaction() as cur:
            cur.execute("UPDATE store.runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                        [error, now(), run_id])
        raise
    summary = {k: run[k] for k in ("best_epoch", "stopped_early", "device", "target_modules", "trainable_params",
                                   "train_seconds", "train_examples_per_s", "split_leaks")}
    finished = now()
    with store.transaction() as cur:
        cur.execute("UPDATE store.runs SET status = 'succeeded', data_counts = ?, history = ?, metrics = ?, "
                    "adapter_path = ?, finished_at = ? WHERE run_id = ?",
                    [json.dumps(result.data_counts), json.dumps(result.history),
                     json.dumps(result.metrics | {"summary": summary}), str(adapter), finished, run_id])
    run |= {"started_at": started, "finished_at": finished}
    log.info("run %s succeeded: test %s", run_id, (result.metrics.get("test") or {}).get("accuracy"))
    return run
