"""Scoring: a trained run → probabilities, predicted label, uncertainty and a sentence embedding per record.

Pure core: `LoadedModel.predict(texts)` (length-sorted dynamic-padding batches under `torch.inference_mode`,
bf16 autocast on CUDA). The DuckDB edge `score(store, run_id, ...)` reads the pool from the store and writes
`store.predictions`. `load_model(run_dir)` loads a run once per process (cached by run directory) — the ML backend
uses it for `/predict`.

The embedding is the mean-pooled last hidden state of the run's encoder (the base model with the LoRA adapter),
L2-normalised; it comes from the same forward pass as the probabilities, so it costs nothing extra.
"""

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.errors import CurateError, InputError, NotFound
from labeling.uncertainty import measures
from training.data import length_grouped_batches, pad

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (done, total)


class RunNotUsable(CurateError):
    """The run failed, is still running, or its adapter folder is missing."""

    exit_code = 2


def autocast(device: str):
    """bf16 autocast on CUDA; a no-op context on CPU (fp32)."""
    import contextlib

    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_batches(model, input_ids: list[list[int]], *, pad_id: int, batch_size: int, device: str,
                    embeddings: bool = False, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (n, k) float32 and optionally mean-pooled L2-normalised embeddings (n, d), in input order.
    Batches are sorted by length (longest first) and padded dynamically."""
    import torch

    n = len(input_ids)
    if n == 0:
        return np.zeros((0, model.config.num_labels), dtype=np.float32), None
    lengths = np.fromiter((len(x) for x in input_ids), dtype=np.int64, count=n)
    probs: np.ndarray | None = None
    embs: np.ndarray | None = None
    done = 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device):
        for b in length_grouped_batches(lengths, batch_size, None):
            ids, mask = pad([input_ids[i] for i in b], pad_id)
            ids_t = torch.from_numpy(ids).to(device)
            mask_t = torch.from_numpy(mask).to(device)
            out = model(input_ids=ids_t, attention_mask=mask_t, output_hidden_states=embeddings)
            p = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
            if probs is None:
                probs = np.empty((n, p.shape[1]), dtype=np.float32)
            probs[b] = p
            if embeddings:
                h = out.hidden_states[-1].float()
                m = mask_t.unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1)
                e = torch.nn.functional.normalize(e, dim=-1).cpu().numpy()
                if embs is None:
                    embs = np.empty((n, e.shape[1]), dtype=np.float32)
                embs[b] = e
            done += len(b)
            if progress:
                progress(done, n)
    if was_training:
        model.train()
    if probs is None:
        probs = np.zeros((0, 0), dtype=np.float32)
    return probs, embs


@dataclass
class LoadedModel:
    """A run's model ready for inference (LoRA merged into the base weights)."""

    run_id: str
    model: object
    tokenizer: object
    labels: list[str]
    device: str
    max_length: int
    batch_size: int

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)["input_ids"]

    def predict(self, texts: list[str], *, embeddings: bool = False, batch_size: int | None = None,
                progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        return forward_batches(self.model, self.encode(texts), pad_id=self.tokenizer.pad_token_id or 0,
                               batch_size=batch_size or self.batch_size, device=self.device,
                               embeddings=embeddings, progress=progress)

    def predict_proba(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        return self.predict(texts, batch_size=batch_size)[0]


def build_inference_model(base_model: str, adapter_dir: Path, labels: list[str], device: str):
    """Base model + saved LoRA adapter (and classifier head), merged for inference."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)}, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return model.to(device).eval()


@functools.lru_cache(maxsize=4)
def _load_cached(run_dir: str, device: str) -> LoadedModel:
    from transformers import AutoTokenizer

    from training.config import resolve_device

    path = Path(run_dir)
    meta_file = path / "run.json"
    if not meta_file.exists():
        raise RunNotUsable(f"{path}: no run.json; the run did not finish (see `SELECT status, error FROM runs`)")
    meta = json.loads(meta_file.read_text())
    device = resolve_device(device)
    model = build_inference_model(meta["base_model"], path / "adapter", meta["labels"], device)
    tok_dir = path / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir if tok_dir.exists() else meta["base_model"]))
    cfg = meta["config"]
    log.info("loaded run %s from %s on %s", meta["run_id"], path, device)
    return LoadedModel(meta["run_id"], model, tokenizer, list(meta["labels"]), device, cfg["max_length"],
                       cfg.get("eval_batch_size", 128))


def load_model(run_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load a run's model once per process (cached by run directory and device)."""
    return _load_cached(str(Path(run_dir).resolve()), device)


# -- the DuckDB edge ------------------------------------------------------------------------------------
def run_row(store, run_id: str) -> dict:
    rows = store.query("SELECT run_id, dataset, status, adapter_path, error, config FROM store.runs "
                       "WHERE run_id = ?", [run_id])
    if not rows:
        recent = [r[0] for r in store.query("SELECT run_id FROM store.runs ORDER BY started_at DESC LIMIT 5")]
        raise NotFound(f"no run {run_id!r}; recent runs: {', '.join(recent) or 'none (run `curate train`)'}")
    run_id, dataset, status, adapter_path, error, config = rows[0]
    if status != "succeeded":
        raise RunNotUsable(f"run {run_id} is {status}" + (f" ({error})" if error else "")
                           + "; score with a succeeded run")
    return {"run_id": run_id, "dataset": dataset, "run_dir": str(Path(adapter_path).parent),
            "config": json.loads(config) if config else {}}


def score(store, run_id: str, dataset: str | None = None, include_labeled: bool = False,
          progress: Progress | None = None, *, batch_size: int | None = None, device: str = "auto",
          engine=None) -> dict:
    """Score the pool of `dataset` (default: the run's) with run `run_id` and write `store.predictions`.
    `engine` ('ray' or a `curation.engine.Engine`): an actor pool scores the pool, the writer merges.

    The pool is the dataset's ingested records (not augmented copies) without a gold label; `include_labeled`
    scores every record. Earlier predictions of this run for these records are replaced."""
    import polars as pl

    from curation.store import now

    if store.one("SELECT task FROM store.runs WHERE run_id = ?", [run_id]) == "sft":
        # an SFT run: response losses → store.response_scores
        from training.sft_runs import score_sft

        return score_sft(store, run_id, dataset, include_labeled, progress, batch_size=batch_size, device=device)
    run = run_row(store, run_id)
    dataset = dataset or run["dataset"]
    ds = store.dataset(dataset)
    loaded = load_model(run["run_dir"], device)
    if ds["labels"] != loaded.labels:
        raise InputError(f"dataset {dataset!r} has labels {ds['labels']}; run {run_id} predicts {loaded.labels}")
    where = "" if include_labeled else "AND g.record_id IS NULL"
    pool = store.frame("SELECT r.record_id, r.text FROM store.records r LEFT JOIN store.gold_labels g "
                       f"USING (record_id) WHERE r.dataset = ? AND r.origin = 'ingest' {where} ORDER BY r.record_id",
                       [dataset])
    t0 = time.perf_counter()
    if pool.height and engine is not None and engine != "local":
        from training.distributed import ray_score

        probs, embs = ray_score(run["run_dir"], pool, batch_size=batch_size, device=device, engine=engine)
    elif pool.height:
        probs, embs = loaded.predict(pool["text"].to_list(), embeddings=True, batch_size=batch_size,
                                     progress=progress)
    else:  # nothing unlabeled left: an empty scoring, not an error
        probs, embs = np.zeros((0, len(loaded.labels)), dtype=np.float32), np.zeros((0, 1), dtype=np.float32)
    seconds = time.perf_counter() - t0
    unc = measures(probs)
    pred = probs.argmax(1)
    frame = pl.DataFrame({
        "record_id": pool["record_id"],
        "probs": pl.Series(probs.astype(np.float64).tolist(), dtype=pl.List(pl.Float64)),
        "label": [loaded.labels[i] for i in pred],
        "confidence": probs.max(1).astype(np.float64) if pool.height else np.zeros(0),
        "least_confidence": unc["least_confidence"], "margin": unc["margin"], "entropy": unc["entropy"],
        "embedding": pl.Series(embs.tolist() if pool.height else [], dtype=pl.List(pl.Float32)),
    })
    with store.transaction() as cur:
        cur.register("new_predictions", frame)
        cur.execute("DELETE FROM store.predictions WHERE run_id = ? AND record_id IN "
                    "(SELECT record_id FROM new_predictions)", [run_id])
        cur.execute("INSERT INTO store.predictions SELECT ?, record_id, probs, label, confidence, least_confidence, "
                    "margin, entropy, embedding, ? FROM new_predictions", [run_id, now()])
        cur.unregister("new_predictions")
    counts = {lab: int((pred == i).sum()) for i, lab in enumerate(loaded.labels)}
    result = {"run_id": run_id, "dataset": dataset, "scored": pool.height, "include_labeled": include_labeled,
              "predicted": counts, "seconds": round(seconds, 3),
              "examples_per_s": round(pool.height / seconds, 1) if seconds > 0 and pool.height else None,
              "mean_margin": float(unc["margin"].mean()) if pool.height else None, "device": loaded.device}
    log.info("scored %d records of %s with run %s in %.1fs", pool.height, dataset, run_id, seconds)
    return result
