"""Commands: `curate train`, `curate score`, `curate select`."""

import logging
from typing import Annotated

import typer

from cli.common import (
    DbOption,
    JsonOption,
    emit,
    handle_errors,
    kv_table,
    open_store,
    out,
    progress_bar,
)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("score")(score)
    app.command("select")(select)


def _quiet_transformers() -> None:
    """The CLI shows its own progress; silence the load reports and per-file bars of transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)


def _stepper(advance):
    done = [0]

    def progress(n: int, total: int) -> None:
        advance(n - done[0])
        done[0] = n

    return progress


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


@handle_errors
def train(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset to train on (a snapshot is taken)")],
    base_model: Annotated[str | None, typer.Option(help="local path or hub name (default: offline "
                                                        "all-MiniLM-L6-v2)")] = None,
    epochs: Annotated[int, typer.Option(help="maximum epochs (early stopping on val)")] = 5,
    lr: Annotated[float, typer.Option(help="learning rate")] = 5e-3,
    lora_r: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha")] = 16,
    target_modules: Annotated[str | None, typer.Option(help="LoRA target modules, comma-separated (default: "
                                                            "per architecture)")] = None,
    batch_size: Annotated[int, typer.Option(help="training batch size")] = 16,
    max_length: Annotated[int, typer.Option(help="max tokens per text")] = 128,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    gold_weight: Annotated[float, typer.Option(help="loss weight of gold labels (weak: 1)")] = 2.0,
    label_sources: Annotated[str, typer.Option(help="gold+weak | gold | weak")] = "gold+weak",
    patience: Annotated[int, typer.Option(help="early-stopping patience in epochs (0: off)")] = 2,
    allow_leakage: Annotated[bool, typer.Option("--allow-leakage", help="train on a leaky split (recorded)")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune a LoRA adapter on a snapshot of the dataset; prints the run (metrics on val, test and the
    leakage-free test subset)."""
    from curation.errors import InputError
    from training.config import TrainConfig
    from training.train import train as run

    try:
        config = TrainConfig(base_model=base_model, epochs=epochs, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha,
                             target_modules=[t.strip() for t in target_modules.split(",")] if target_modules
                             else None, batch_size=batch_size, max_length=max_length, seed=seed,
                             gold_weight=gold_weight, label_sources=label_sources, patience=patience,
                             allow_leakage=allow_leakage, device=device)
    except ValueError as e:
        raise InputError(f"invalid training option: {e}") from None
    _quiet_transformers()
    with open_store(db) as store, progress_bar(f"train {dataset}", None,
                                               enabled=not (as_json or no_progress)) as advance:
        result = run(store, dataset, config, progress=_stepper(advance))
    emit(result, as_json, _render_run)


def _render_run(r: dict) -> None:
    kv_table({"run_id": r["run_id"], "status": r["status"], "snapshot": r["snapshot_id"], "device": r["device"],
              "best_epoch": r["best_epoch"], "train ex/s": r["train_examples_per_s"],
              "leakage_allowed": r["leakage_allowed"], "run_dir": r["run_dir"]}, title="run")
    for name in ("val", "test", "test_leakage_free"):
        m = r["metrics"].get(name)
        if m:
            out.print(f"{name:>18}: accuracy {_pct(m['accuracy'])}  macro-F1 {_pct(m['macro_f1'])}  "
                      f"ECE {m['ece']:.3f}  (n={m['n']})")


@handle_errors
def score(
    run: Annotated[str, typer.Option("--run", help="run id")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="dataset (default: the run's)")] = None,
    all_records: Annotated[bool, typer.Option("--all", help="score labeled records too")] = False,
    batch_size: Annotated[int | None, typer.Option(help="inference batch size (default: the run's)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score the pool (unlabeled records; --all: every record) with a run → `predictions`."""
    from training.score import score as run_score

    _quiet_transformers()
    with open_store(db) as store, progress_bar(f"score {run}", None,
                                               enabled=not (as_json or no_progress)) as advance:
        result = run_score(store, run, dataset, include_labeled=all_records, progress=_stepper(advance),
                           batch_size=batch_size, device=device)
    emit(result, as_json, lambda r: kv_table(r, title="score"))


@handle_errors
def select(
    run: Annotated[str, typer.Option("--run", help="run whose predictions to use")],
    strategy: Annotated[str, typer.Option(help="random | least_confidence | margin | entropy | "
                                               "diverse_margin")] = "diverse_margin",
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
    out.print("record ids: " + ", ".join(map(str, r["record_ids"][:50])) + (" ..." if r["n"] > 50 else ""))
