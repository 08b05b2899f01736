"""The store edge of supervised fine-tuning (SFT): instruction datasets → LoRA runs → response scores.

`train_sft_run(store, dataset, config)` is `curate train` on an instruction dataset (or `--task sft`):

1. a snapshot of the dataset (`curation.versions.snapshot`): its manifest names the split and the label model,
   and gates the run: leaky splits are refused unless `allow_leakage` (`training.train.check_leakage`), a train
   split flagged by the newest contamination check is refused unless `allow_contamination`
   (`curation.contamination.require_uncontaminated`);
2. the conversations: the chat-JSONL export (`curation.versions.export_instructions`) into `<run>/data/`, so
   the run trains on exactly what `curate export --format chat-jsonl` would hand a fine-tuning tool: the latest
   accepted revision, only records kept (gold keep, or weak P(keep) ≥ `min_quality`), nothing quarantined,
   contaminated (unless allowed) or augmented from val/test; the export's manifest (counts kept / dropped by
   reason, sha256 of each file) stays with the run;
3. `training.sft.train_sft` on train (early stopping on val, metrics on val and test, the base model's loss on the
   same splits, greedy generations on val prompts) → `store.runs` with `task = 'sft'`.

`score_sft(store, run_id)` is `curate score` on an SFT run: per record of the pool, the mean token NLL of the
response under the fine-tuned model (`loss`) and the base model (`base_loss`), the number of response tokens
and an L2-normalised prompt embedding (mean-pooled last hidden state over the prompt tokens, from the same forward
pass as the loss: attention is causal, so the prompt's hidden states do not see the response) →
`store.response_scores`. High loss = the model is not confident about that response: `curate select --strategy
highest_loss | cluster_loss` sends those to review first.

`llm_tokenizer(base)` loads only the tokenizer of the (default) base LLM, for token counts at ingest.
"""

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field

from curation.errors import InputError, NotFound
from curation.store import dataset_task
from training.sft import SftConfig

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

SFT_ONLY_FIELDS = ("max_steps", "quantize", "train_on", "num_generations", "max_new_tokens", "min_quality",
                   "gradient_checkpointing", "max_grad_norm")


class SftRunConfig(SftConfig):
    """An SFT run's configuration: `SftConfig` plus the data and gate options of the store edge."""

    min_quality: float | None = Field(None, ge=0, le=1, description="weak P(keep) a record without a gold label "
                                      "needs to be trained on; None: the export's default (0.5); 0 trains on "
                                      "unlabeled records too")
    allow_leakage: bool = Field(False, description="train on a split whose duplicate components cross splits")
    allow_contamination: bool = Field(False, description="train although train records share n-grams with an "
                                      "evaluation set (recorded on the run)")


def is_sft(store, dataset: str, task: str | None = None) -> bool:
    """Whether `curate train` on `dataset` is SFT: `task` 'sft' / 'classification' decides, else the dataset's."""
    if task not in (None, "auto", "sft", "classification"):
        raise InputError(f"--task {task!r}: use auto, classification or sft")
    ds_task = dataset_task(store, dataset)
    if task == "sft" and ds_task != "instruction":
        raise InputError(f"--task sft: dataset {dataset!r} is a {ds_task} dataset; SFT trains on conversations. "
                         f"Export it as instructions (`curate export --dataset {dataset} --format chat-jsonl "
                         "--template ...`) and ingest that with `--task instruction`")
    if task == "classification" and ds_task == "instruction":
        raise InputError(f"--task classification: dataset {dataset!r} holds instructions; train it with SFT "
                         "(drop --task)")
    return ds_task == "instruction"


def sft_config(options: dict | SftConfig | None) -> SftRunConfig:
    """Options (a dict, a TrainConfig's explicitly set fields, or an SftConfig) → SftRunConfig. Options that mean
    nothing for SFT are an error naming them."""
    from pydantic import BaseModel, ValidationError

    if isinstance(options, SftRunConfig):
        return options
    if isinstance(options, BaseModel):
        options = options.model_dump(exclude_unset=True) if not isinstance(options, SftConfig) \
            else options.model_dump()
    options = {k: v for k, v in (options or {}).items() if v is not None}
    wrong = sorted(set(options) - set(SftRunConfig.model_fields))
    if wrong:
        raise InputError(f"option(s) {', '.join(wrong)} are for classification runs; an SFT run takes "
                         f"{', '.join(sorted(SftRunConfig.model_fields))}")
    try:
        return SftRunConfig(**options)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise InputError(f"invalid SFT option: {problems}") from None


# -- tokenizer only (ingest token counts) ------------------------------------------------------------------
def llm_tokenizer(base: str | Path | None = None, cache_dir: str | Path | None = None):
    """The tokenizer of `base` (None: the default SmolLM2 GGUF) without loading weights. A GGUF file's tokenizer
    comes from its converted model folder when there is one, else from `<cache>/<key>.tokenizer/` (saved the
    first time: reading it out of the GGUF takes ~10 s, the saved folder ~1 s)."""
    from transformers import AutoTokenizer

    from training.llm import cache_key, default_llm, is_gguf, model_cache_dir, require_gguf

    base = str(base) if base else default_llm()
    if not is_gguf(base):
        try:
            return AutoTokenizer.from_pretrained(base)
        except OSError as e:
            raise InputError(f"--base-model {base!r}: cannot load its tokenizer ({e})") from None
    gguf = Path(base).expanduser().resolve()
    if not gguf.is_file():
        raise InputError(f"--base-model {str(gguf)!r}: no such GGUF file")
    cache = model_cache_dir(cache_dir)
    key = cache_key(gguf)
    for folder in (cache / key, cache / f"{key}.tokenizer"):
        if (folder / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
    require_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target = cache / f"{key}.tokenizer"
    tmp = cache / f".{key}.tokenizer-tmp"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        tmp.rename(target)
    except OSError as e:          # a read-only or concurrently filled cache: the tokenizer still works
        log.info("tokenizer of %s not cached (%s)", gguf.name, e)
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def ingest_token_counter(base: str | Path | None = None, cache_dir: str | Path | None = None):
    """`count_tokens` for instruction ingest with the base LLM's chat template (`curation.instructions.
    tokenizer_counter`); None (the whitespace counter) when no LLM tokenizer is available, logged."""
    from curation.instructions import tokenizer_counter

    try:
        tokenizer = llm_tokenizer(base, cache_dir)
    except (InputError, ImportError) as e:
        if base:
            raise
        log.warning("token counts use whitespace words: %s", e)
        return None
    counter = tokenizer_counter(tokenizer)
    counter.__name__ = f"tokenizer:{Path(str(base or getattr(tokenizer, 'name_or_path', ''))).name or 'llm'}"
    return counter


# -- training ---------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[list[dict]]:
    if not path.is_file():
        return []
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_conversations(store, dataset: str, out: Path, config: SftRunConfig) -> tuple[dict, dict]:
    """The chat-JSONL export of `dataset` into `out` → ({split: conversations}, export manifest)."""
    from curation.versions import SPLITS, ExportOptions, export_instructions

    manifest = export_instructions(store, dataset, out, "chat-jsonl",
                                   ExportOptions(min_quality=config.min_quality,
                                                 allow_contamination=config.allow_contamination))
    data = {s: _read_jsonl(out / f"{s}.jsonl") for s in SPLITS}
    if not data["train"]:
        dropped = manifest["counts"]["train"]["dropped"]
        hint = ""
        if dropped.get("unlabeled"):
            hint = (" Records without a gold label need a weak quality label: `curate lf apply --dataset "
                    f"{dataset} --lfs builtin:instruction-quality` and a label model, or pass --min-quality 0 to "
                    "train on unlabeled records too.")
        elif dropped.get("low_quality"):
            hint = " Lower --min-quality, or review the records in Label Studio."
        raise InputError(f"dataset {dataset!r}: no train conversation is fit to train on (dropped by reason: "
                         f"{dropped or 'none; the train split is empty'}).{hint}")
    return data, manifest


def train_sft_run(store, dataset: str, config: SftRunConfig | dict | None = None, progress: Progress | None = None,
                  *, allow_contamination: bool = False, cache_dir: str | Path | None = None) -> dict:
    """Snapshot `dataset`, gate it, fine-tune a LoRA adapter on its kept train conversations and record the run
    (`store.runs.task = 'sft'`). Returns the run: metrics.val/test {loss, perplexity, tokens, examples},
    metrics.base.val/test (the base model on the same conversations), history, counts, paths."""
    from curation import versions
    from curation.store import now
    from training.config import resolve_device
    from training.llm import check_quantize, default_llm
    from training.sft import train_sft
    from training.train import check_contamination_gate, check_leakage, new_run_id

    config = sft_config(config)
    if allow_contamination and not config.allow_contamination:
        config = config.model_copy(update={"allow_contamination": True})
    if not is_sft(store, dataset):
        raise InputError(f"dataset {dataset!r} is not an instruction dataset; SFT trains on conversations")
    check_quantize(None if config.quantize == "none" else config.quantize, resolve_device(config.device))
    base_source = config.base_model or default_llm()
    manifest = versions.snapshot(store, dataset)
    frame, manifest = versions.load_snapshot(manifest["path"])
    leaks = check_leakage(manifest, config)
    contamination = check_contamination_gate(store, frame, manifest, config.allow_contamination)
    run_id = new_run_id()
    run_dir = Path(store.settings.runs_dir) / run_id
    try:
        data, export = training_conversations(store, dataset, run_dir / "data", config)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    config = config.model_copy(update={"base_model": str(base_source)})
    started = now()
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, snapshot_id, status, config, leakage_allowed, "
                    "contamination_allowed, started_at, task) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, 'sft')",
                    [run_id, dataset, manifest.get("version_id"), config.model_dump_json(),
                     bool(leaks and config.allow_leakage), contamination["contamination_allowed"], started])
    try:
        result = train_sft(data["train"], data["val"], config, run_dir, progress, messages_test=data["test"],
                           cache_dir=cache_dir)
        counts = {"export": export["counts"], "export_version": export["version_id"],
                  "encoded": result["data_counts"]}
        summary = {k: result[k] for k in ("best_epoch", "stopped_early", "device", "target_modules",
                                          "trainable_params", "load_seconds", "train_seconds", "train_steps",
                                          "train_tokens_per_s")} | {"split_leaks": leaks}
        run = {
            "run_id": run_id, "dataset": dataset, "task": "sft", "status": "succeeded",
            "snapshot_id": manifest.get("version_id"), "split_id": manifest.get("split_id"), "split_leaks": leaks,
            "leakage_allowed": bool(leaks), "contamination": contamination,
            "contamination_allowed": contamination["contamination_allowed"], "base_model": str(base_source),
            "base_folder": result["base_model"], "config": config.model_dump(), "data_counts": counts,
            "history": result["history"], "metrics": result["metrics"], "run_dir": str(run_dir),
            "adapter_path": result["adapter_path"], "generations_path": result["generations_path"],
            "data_path": str(run_dir / "data"), **summary,
        }
        (run_dir / "run.json").write_text(json.dumps(run, indent=2, default=str))
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        log.error("SFT run %s failed: %s", run_id, error)
        with store.transaction() as cur:
            cur.execute("UPDATE store.runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                        [error, now(), run_id])
        raise
    finished = now()
    with store.transaction() as cur:
        cur.execute("UPDATE store.runs SET status = 'succeeded', data_counts = ?, history = ?, metrics = ?, "
                    "adapter_path = ?, finished_at = ? WHERE run_id = ?",
                    [json.dumps(counts), json.dumps(result["history"]),
                     json.dumps(result["metrics"] | {"summary": summary}), result["adapter_path"], finished,
                     run_id])
    run |= {"started_at": started, "finished_at": finished}
    val, base = result["metrics"].get("val") or {}, (result["metrics"].get("base") or {}).get("val") or {}
    log.info("SFT run %s succeeded: val loss %s (base %s)", run_id, val.get("loss"), base.get("loss"))
    return run


# -- scoring ------------------------------------------------------------------------------------------------
def run_info(store, run_id: str) -> dict:
    """A succeeded SFT run's row and run.json."""
    from training.score import RunNotUsable

    rows = store.query("SELECT dataset, status, task, adapter_path, error FROM store.runs WHERE run_id = ?",
                       [run_id])
    if not rows:
        raise NotFound(f"no run {run_id!r}; list runs with `curate sql \"SELECT run_id, task, status FROM runs\"`")
    dataset, status, task, adapter_path, error = rows[0]
    if task != "sft":
        raise InputError(f"run {run_id} is a {task} run; response scores need an SFT run")
    if status != "succeeded":
        raise RunNotUsable(f"run {run_id} is {status}" + (f" ({error})" if error else "")
                           + "; score with a succeeded run")
    run_dir = Path(adapter_path).parent
    meta_file = run_dir / "run.json"
    if not meta_file.is_file():
        raise RunNotUsable(f"{run_dir}: no run.json; the run folder is incomplete")
    return json.loads(meta_file.read_text()) | {"dataset": dataset, "run_dir": str(run_dir)}


def score_conversations(model, tokenizer, conversations, *, batch_size: int, max_length: int,
                        device: str | None = None, embeddings: bool = True,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per conversation: (sum of the last assistant turn's token NLL, its token count, prompt embedding or None).
    One decoder pass per batch; the LM head runs on the response positions only; the embedding is the mean of
    the last hidden state over the prompt tokens (every token before the response), L2-normalised."""
    import torch

    from training.data import length_grouped_batches
    from training.score import autocast
    from training.sft import (
        IGNORE,
        batch_tensors,
        decoder_and_head,
        encode_conversations,
        model_device,
        token_nll,
        tokenizer_pad_id,
    )

    device = device or model_device(model)
    ids, labels, _ = encode_conversations(tokenizer, conversations, max_length=max_length, train_on="last")
    n = len(ids)
    sums, counts = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)
    embs: np.ndarray | None = None
    if n == 0:
        return sums, counts, None
    decoder, head = decoder_and_head(model)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    was_training = model.training
    model.eval()
    done = 0
    with torch.inference_mode(), autocast(device):
        for b in length_grouped_batches(lengths, batch_size, None):
            x, m, y = batch_tensors(ids, labels, b, tokenizer_pad_id(tokenizer), device)
            if decoder is None or not embeddings:
                nll, rows = token_nll(model, x, m, y)
                hidden = None
            else:
                hidden = decoder(input_ids=x, attention_mask=m).last_hidden_state
                target = y[:, 1:]
                keep = target != IGNORE
                logits = head(hidden[:, :-1][keep])
                nll = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
                rows = keep.nonzero()[:, 0]
            r = rows.cpu().numpy()
            sums[b] += np.bincount(r, weights=nll.double().cpu().numpy(), minlength=len(b))
            counts[b] += np.bincount(r, minlength=len(b))
            if hidden is not None:
                # prompt = the positions before the first response token (all of them when none is left)
                is_target = (y != IGNORE)
                first = torch.where(is_target.any(1), is_target.float().argmax(1),
                                    torch.full_like(is_target[:, 0], y.shape[1], dtype=torch.long))
                pos = torch.arange(y.shape[1], device=y.device).unsqueeze(0)
                w = ((pos < first.unsqueeze(1)) & m.bool()).unsqueeze(-1).to(hidden.dtype)
                e = (hidden.float() * w).sum(1) / w.sum(1).clamp(min=1)
                e = torch.nn.functional.normalize(e, dim=-1).cpu().numpy()
                if embs is None:
                    embs = np.zeros((n, e.shape[1]), dtype=np.float32)
                embs[b] = e
            done += len(b)
            if progress:
                progress(done, n)
    if was_training:
        model.train()
    return sums, counts, embs


def score_sft(store, run_id: str, dataset: str | None = None, include_labeled: bool = False,
              progress: Progress | None = None, *, batch_size: int | None = None, device: str = "auto",
              max_length: int | None = None, cache_dir: str | Path | None = None) -> dict:
    """Score the pool of an instruction dataset with SFT run `run_id` → `store.response_scores` (loss and
    base_loss: mean token NLL of the response under the fine-tuned and the base model; tokens; prompt embedding).
    The pool: ingested records without a gold label (`include_labeled`: all), their latest accepted revision.
    Records whose response lies wholly beyond `max_length` (default: the run's) are skipped and counted.
    Earlier scores of this run for these records are replaced."""
    import polars as pl
    from peft import PeftModel

    from curation.store import now
    from training.config import resolve_device
    from training.llm import load_causal_lm
    from training.sft import per_example_nll, tokenizer_pad_id

    run = run_info(store, run_id)
    dataset = dataset or run["dataset"]
    if not is_sft(store, dataset):
        raise InputError(f"dataset {dataset!r} is not an instruction dataset; SFT run {run_id} scores responses")
    cfg = run.get("config") or {}
    max_length = max_length or cfg.get("max_length") or 1024
    batch_size = batch_size or cfg.get("eval_batch_size") or 16
    where = "" if include_labeled else "AND i.label IS NULL"
    pool = store.frame("SELECT i.record_id, i.messages FROM main.instructions i WHERE i.dataset = ? "
                       f"AND i.origin = 'ingest' AND i.messages IS NOT NULL {where} ORDER BY i.record_id", [dataset])
    convs = [[{"role": str(t["role"]), "content": str(t["content"])} for t in json.loads(m)]
             for m in pool["messages"].to_list()]
    device = resolve_device(device)
    t0 = time.perf_counter()
    if convs:
        base, tokenizer, _ = load_causal_lm(run.get("base_model") or run.get("base_folder"), device=device,
                                            cache_dir=cache_dir)
        model = PeftModel.from_pretrained(base, str(Path(run["run_dir"]) / "adapter")).to(device)
        load_seconds = time.perf_counter() - t0
        half = (lambda d, t: progress(d, 2 * t)) if progress else None
        sums, counts, embs = score_conversations(model, tokenizer, convs, batch_size=batch_size,
                                                 max_length=max_length, device=device, progress=half)
        from training.sft import encode_conversations

        ids, labels, _ = encode_conversations(tokenizer, convs, max_length=max_length, train_on="last")
        with model.disable_adapter():
            base_sums, base_counts = per_example_nll(model, ids, labels, pad_id=tokenizer_pad_id(tokenizer),
                                                     batch_size=batch_size, device=device)
        if progress:
            progress(2 * len(convs), 2 * len(convs))
    else:
        load_seconds = 0.0
        sums = counts = base_sums = base_counts = np.zeros(0)
        embs = None
    seconds = time.perf_counter() - t0
    ok = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(ok, sums / np.maximum(counts, 1), np.nan)
        base_loss = np.where(base_counts > 0, base_sums / np.maximum(base_counts, 1), np.nan)
    keep = np.flatnonzero(ok)
    frame = pl.DataFrame({
        "record_id": pool["record_id"].to_numpy()[keep] if pool.height else np.zeros(0, dtype=np.int64),
        "loss": loss[keep], "base_loss": base_loss[keep],
        "tokens": counts[keep].astype(np.int32),
        "embedding": pl.Series(embs[keep].tolist() if embs is not None else [None] * len(keep),
                               dtype=pl.List(pl.Float32)),
    })
    with store.transaction() as cur:
        cur.register("new_scores", frame)
        cur.execute("DELETE FROM store.response_scores WHERE run_id = ? AND record_id IN "
                    "(SELECT record_id FROM new_scores)", [run_id])
        cur.execute("INSERT INTO store.response_scores (run_id, record_id, loss, base_loss, tokens, embedding, "
                    "scored_at) SELECT ?, record_id, loss, base_loss, tokens, embedding, ? FROM new_scores",
                    [run_id, now()])
        cur.unregister("new_scores")

    def mean(a):
        a = a[np.isfinite(a)]
        return float(a.mean()) if len(a) else None

    result = {"run_id": run_id, "dataset": dataset, "task": "sft", "scored": len(keep),
              "skipped_no_response_tokens": int((~ok).sum()), "include_labeled": include_labeled,
              "mean_loss": mean(loss[keep]), "mean_base_loss": mean(base_loss[keep]),
              "max_length": max_length, "tokens": int(counts.sum()), "device": device,
              "load_seconds": round(load_seconds, 3), "seconds": round(seconds, 3),
              "examples_per_s": round(len(convs) / (seconds - load_seconds), 2)
              if convs and seconds > load_seconds else None}
    log.info("scored %d responses of %s with SFT run %s in %.1fs (mean loss %s, base %s)", len(keep), dataset,
             run_id, seconds, result["mean_loss"], result["mean_base_loss"])
    return result
