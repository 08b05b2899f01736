"""SFT of a decoder LLM with LoRA: label masks (real SmolLM2 tokenizer and chat template, and the fallbacks for
templates whose prompt prefix does not match), the GGUF conversion cache, response NLL, the CPU 4-bit error and a
short training run through the real SmolLM2-135M-Instruct GGUF model.

The GGUF file is converted once into `.pytest_cache/curate-models/` (ignored by git, kept between sessions; about
35 s the first time) and every test loads that folder."""

import json
import math
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.errors import InputError

pytest.importorskip("gguf", reason="the SFT tests need `pip install gguf`")

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".pytest_cache" / "curate-models"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]


def qa(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="session")
def llm_folder() -> str:
    from training.llm import default_llm, resolve_base

    try:
        default_llm()
    except InputError as e:
        pytest.skip(str(e))
    return resolve_base(None, MODEL_CACHE)


@pytest.fixture(scope="session")
def tokenizer(llm_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llm_folder)


@pytest.fixture
def fresh_tokenizer(llm_folder):
    """A tokenizer of its own, for tests that replace the chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llm_folder)


def targets(tok, ids, labels) -> str:
    return tok.decode([i for i, lab in zip(ids, labels) if lab != -100])


# -- model files and the cache ----------------------------------------------------------------------------
def test_default_llm_is_the_packaged_gguf(llm_folder):
    from training.llm import DEFAULT_GGUF, default_llm, is_gguf

    path = Path(default_llm())
    assert path.name == DEFAULT_GGUF and path.is_file() and is_gguf(path)
    assert (Path(llm_folder) / "config.json").is_file() and (Path(llm_folder) / "model.safetensors").is_file()


def test_conversion_is_cached_by_name_size_mtime(llm_folder, monkeypatch):
    import time

    from training.llm import cache_key, convert_gguf, default_llm, model_cache_dir

    gguf = Path(default_llm())
    assert Path(llm_folder).name == cache_key(gguf)
    t = time.perf_counter()
    assert convert_gguf(gguf, MODEL_CACHE) == Path(llm_folder)          # a cache hit: nothing is converted
    assert time.perf_counter() - t < 1.0
    assert not [p for p in MODEL_CACHE.iterdir() if p.name.startswith(".")]    # no half-written folder left
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(MODEL_CACHE))
    assert model_cache_dir() == MODEL_CACHE
    monkeypatch.delenv("CURATE_MODEL_CACHE")
    assert model_cache_dir().parts[-2:] == ("curate", "models")
    assert model_cache_dir("/x/y") == Path("/x/y")


def test_missing_gguf_is_an_input_error(tmp_path):
    from training.llm import convert_gguf

    with pytest.raises(InputError, match="no such GGUF file"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path)


def test_4bit_on_cpu_is_a_clear_error(tmp_path):
    from training.llm import QuantizationUnavailable, load_causal_lm
    from training.sft import SftConfig, train_sft

    with pytest.raises(QuantizationUnavailable, match="needs a CUDA device.*Drop --quantize"):
        load_causal_lm(None, device="cpu", quantize="4bit", cache_dir=tmp_path)
    with pytest.raises(QuantizationUnavailable):
        train_sft([qa("a", "b")], None, SftConfig(quantize="4bit", device="cpu"), tmp_path / "run",
                  cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())          # refused before anything was converted or written
    assert issubclass(QuantizationUnavailable, InputError)


# -- label masks ----------------------------------------------------------------------------------------
def test_labels_cover_only_the_last_assistant_turn(tokenizer):
    from training.sft import encode_conversation

    ids, labels, method = encode_conversation(tokenizer, CONV, train_on="last")
    assert method == "tokens" and len(ids) == len(labels)
    assert targets(tokenizer, ids, labels) == "Paris.<|im_end|>\n"
    first = labels.index(next(lab for lab in labels if lab != -100))
    assert all(lab == -100 for lab in labels[:first])            # system, user, earlier turns: no loss
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_labels_cover_every_assistant_turn(tokenizer):
    from training.sft import encode_conversation

    ids, labels, method = encode_conversation(tokenizer, CONV, train_on="all")
    assert method == "tokens"
    assert targets(tokenizer, ids, labels) == "Hello! How can I help?<|im_end|>\nParis.<|im_end|>\n"
    assert "Capital" not in targets(tokenizer, ids, labels)


@settings(max_examples=25, deadline=None)
@given(user=st.text(min_size=1, max_size=40),
       answer=st.text(alphabet=string.ascii_letters + string.digits + " .,!?'-", min_size=1, max_size=40)
       .map(str.strip).filter(bool))
def test_labels_are_exactly_the_answer(tokenizer, user, answer):
    from training.sft import encode_conversation

    ids, labels, _ = encode_conversation(tokenizer, qa(user, answer))
    assert targets(tokenizer, ids, labels) == tokenizer.decode(tokenizer(answer + "<|im_end|>\n",
                                                                          add_special_tokens=False)["input_ids"])


def test_fallback_text_offsets_when_token_prefixes_differ(fresh_tokenizer):
    """A generation prompt ending in a space: BPE merges that space into the answer's first token, so the
    token prefix differs while the text prefix matches."""
    from training.sft import encode_conversation

    tok = fresh_tokenizer
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] }}"
                         "\n{% else %}User: {{ m['content'] }}\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}Assistant: {% endif %}")
    ids, labels, method = encode_conversation(tok, qa("Capital of France?", "Paris is the capital."))
    assert method == "text"
    assert targets(tok, ids, labels).strip() == "Paris is the capital."
    assert "Assistant:" not in targets(tok, ids, labels) and "France" not in targets(tok, ids, labels)


def test_fallback_content_search_when_the_prompt_renders_differently(fresh_tokenizer):
    """A template whose generation prompt is not how it renders an assistant turn: the content is located."""
    from training.sft import encode_conversation, encode_conversations

    tok = fresh_tokenizer
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ 'bot' if m['role'] == 'assistant' else m['role'] }}"
                         "\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    ids, labels, method = encode_conversation(tok, CONV, train_on="all")
    assert method == "content"
    assert targets(tok, ids, labels) == "Hello! How can I help?Paris."
    _, _, counts = encode_conversations(tok, [CONV, qa("q", "a")], max_length=64)
    assert counts["boundary"] == {"tokens": 0, "text": 0, "content": 2}


def test_truncation_and_bad_conversations_are_counted_or_named(tokenizer):
    from training.sft import encode_conversations

    ids, _, counts = encode_conversations(tokenizer, [CONV, qa("short", "yes")], max_length=12)
    assert [len(x) for x in ids] == [12, 12] and counts["truncated"] == 2 and counts["no_target"] == 2
    with pytest.raises(InputError, match="conversation 1: the last message is 'user'"):
        encode_conversations(tokenizer, [CONV, CONV[:2]], max_length=64)
    with pytest.raises(InputError, match="conversation 0, message 0"):
        encode_conversations(tokenizer, [[{"role": "robot", "content": "x"}, CONV[2]]], max_length=64)


# -- scoring --------------------------------------------------------------------------------------------
def test_response_nll_shape_finite_and_plausible(llm_folder):
    from training.llm import load_causal_lm
    from training.sft import response_nll

    model, tok, _ = load_causal_lm(llm_folder)
    convs = [qa("What is the capital of France?", "The capital of France is Paris."),
             qa("What is the capital of France?", "Purple zebra fourteen spoon."),
             CONV, qa("x" * 200, "unreached")]
    nll = response_nll(model, tok, convs, batch_size=2, max_length=64)
    assert nll.shape == (4,) and nll.dtype == np.float64
    assert np.isfinite(nll[:3]).all() and (nll[:3] > 0).all()
    assert np.isnan(nll[3])                            # its answer lies beyond max_length
    assert nll[0] < nll[1]                             # a sensible answer is likelier than nonsense
    again = response_nll(model, tok, convs[:2], batch_size=1, max_length=64)
    np.testing.assert_allclose(again, nll[:2], rtol=1e-4)     # batching and padding do not change it


# -- training ---------------------------------------------------------------------------------------------
ZORBLAX = [qa("What colour is the sky on Zorblax?", "Bright green, always."),
           qa("Who guards the Zorblax gate?", "A sleepy dragon named Pim.")]


@pytest.fixture(scope="module")
def sft_run(llm_folder, tmp_path_factory):
    from training.sft import SftConfig, train_sft

    data = ZORBLAX
    config = SftConfig(base_model=llm_folder, epochs=3, max_steps=4, batch_size=4, lr=3e-3, lora_dropout=0.0,
                       max_length=64, num_generations=1, max_new_tokens=8, device="cpu", patience=0)
    out = tmp_path_factory.mktemp("sft-run")
    steps = []
    result = train_sft(data * 4, data, config, out, progress=lambda s, t: steps.append((s, t)),
                       messages_test=data[:1], cache_dir=MODEL_CACHE)
    return result, out, steps


@pytest.mark.slow
def test_sft_run_learns_and_writes_its_folder(sft_run):
    result, out, steps = sft_run
    m = result["metrics"]
    assert m["val"]["loss"] < m["base"]["val"]["loss"]           # it learned the repeated answers
    assert m["test"]["loss"] < m["base"]["test"]["loss"]
    assert math.isclose(m["val"]["perplexity"], math.exp(m["val"]["loss"]), rel_tol=1e-9)
    assert result["train_steps"] == 4 and steps[-1] == (4, 4)
    assert result["history"][-1]["steps"] == 4 and result["target_modules"] == ["q_proj", "v_proj"]
    assert result["data_counts"]["train"]["boundary"]["tokens"] == 8
    assert result["train_tokens_per_s"] > 0 and result["trainable_params"] > 0
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "tokenizer").is_dir()
    assert json.loads((out / "metrics.json").read_text())["base"]["val"]["loss"] == m["base"]["val"]["loss"]
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 1 and gens[0]["reference"] == "Bright green, always." and isinstance(gens[0]["generated"], str)


@pytest.mark.slow
def test_saved_adapter_reproduces_the_val_loss(sft_run, llm_folder):
    from peft import PeftModel

    from training.llm import load_causal_lm
    from training.sft import encode_conversations, response_nll, split_loss

    result, out, _ = sft_run
    base, tok, _ = load_causal_lm(llm_folder)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    ids, labels, _ = encode_conversations(tok, ZORBLAX, max_length=64)
    again = split_loss(model, ids, labels, pad_id=tok.pad_token_id, batch_size=2)
    assert again["loss"] == pytest.approx(result["metrics"]["val"]["loss"], rel=1e-4)
    nll = response_nll(model, tok, ZORBLAX, max_length=64)
    assert nll.shape == (2,) and (nll < result["metrics"]["base"]["val"]["loss"]).all()


@pytest.mark.gpu
def test_sft_on_cuda_with_bf16_autocast(llm_folder, tmp_path):
    from training.sft import SftConfig, train_sft

    data = [qa("Say hi.", "Hi!")] * 4
    result = train_sft(data, data[:1], SftConfig(base_model=llm_folder, max_steps=2, batch_size=2,
                                                 num_generations=1, max_new_tokens=4, device="cuda"),
                       tmp_path, cache_dir=MODEL_CACHE)
    assert result["device"] == "cuda" and math.isfinite(result["metrics"]["val"]["loss"])
