"""Rollout engines: turn prompts into completions with their token ids and log-probabilities.

All prompts of a phase go to the engine in one call. Engines implement `RolloutEngine`:
`HFEngine` (transformers `generate`; the CPU default and the test engine) here, `VLLMEngine` in
`azr.rollout_vllm`.

With `guides` (one regular expression per prompt, `azr.guided`), each completion is sampled from
the policy restricted, token by token, to what its grammar allows; its log-probs are then those of
that constrained distribution (the softmax over the allowed tokens), which the trainer recomputes
with the same masks. A guided completion ends with the end-of-sequence token its grammar forces
after the answer, not at a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from azr_kernels.types import allowed_tokens, masked_log_softmax
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from azr.guided import Grammars
from azr.sync_check import sequence_logprobs
from azr.weight_transport import load_named

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    # 0 is greedy decoding (evaluation); log-probs are then those of softmax(logits).
    temperature: float = 1.0
    top_p: float = 1.0
    # Generation also ends at the end-of-sequence token.
    stop: tuple[str, ...] = ("</answer>",)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be positive, or 0 for greedy decoding, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Completion:
    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    # log π(token) per token, in the distribution the trainer computes: softmax(logits / temperature)
    # over the whole vocabulary (before any top-p truncation), or over the tokens the guide allowed
    logprobs: tuple[float, ...]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    guide: str | None = None  # the grammar (regular expression) sampling was constrained to
    # The policy version (updates published) the engine sampled from, where the engine keeps versions
    # (a rollout fleet's replicas do); None: the version the driver's engine holds.
    version: int | None = None


# Called as `on_completion(index, completion)` as soon as the completion of `prompts[index]` is ready.
CompletionCallback = Callable[[int, "Completion"], None]


def check_guides(prompts: Sequence[str], guides: Sequence[str] | None) -> None:
    if guides is not None and len(guides) != len(prompts):
        raise ValueError(f"{len(guides)} guides for {len(prompts)} prompts: give one per prompt, or none")


class RolloutEngine(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> list[Completion]:
        """Completions in prompt order; each is also handed to `on_completion` as soon as it is ready.
        `guides`, when given, holds one grammar per prompt."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Make the engine sample from these named tensors (a whole model's; `azr.weight_transport`)."""

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint must keep for the engine's next samples to be the same after a resume."""

    def load_state_dict(self, state: dict[str, int]) -> None: ...


class HFEngine:
    """Generation with transformers `generate`, sharing the trainer's model object, so a weight
    sync costs nothing. Prompts go in batches of `batch_size`, longest first."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = _eos_ids(model, tokenizer)
        self.grammars = Grammars(tokenizer, model.get_output_embeddings().weight.shape[0])

    def sync_weights(self, model: torch.nn.Module) -> None:
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """New weights as named tensors (from a weight transport): all of the model's, or an error."""
        load_named(self.model, weights)

    def reseed(self, seed: int) -> None:
        """Sampling draws from torch's global generator: the same seed, the same completions."""
        torch.manual_seed(seed)

    def probe_logprobs(self, token_ids: Sequence[int]) -> torch.Tensor:
        """The engine's log-prob of each token of `token_ids` after its prefix (all but the first)."""
        return sequence_logprobs(self.model, token_ids)

    def state_dict(self) -> dict[str, int]:
        # Sampling draws from torch's global generator, which the self-play loop seeds every step.
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> list[Completion]:
        check_guides(prompts, guides)
        encoded = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(prompts)
        done = 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            batch_guides = None if guides is None else [guides[i] for i in batch]
            generated = self._generate_batch([encoded[i] for i in batch], params, batch_guides)
            for index, completion in zip(batch, generated, strict=True):
                results[index] = completion
                if on_completion is not None:
                    on_completion(index, completion)
            done += len(batch)
            if progress is not None:
                progress(done, len(prompts))
        return [r for r in results if r is not None]

    @torch.no_grad()
    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, guides: list[str] | None
    ) -> list[Completion]:
        device = self.model.device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                **(
                    {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
                    if params.temperature > 0
                    else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
                ),
                max_new_tokens=params.max_new_tokens,
                stop_strings=(list(params.stop) or None) if guides is None else None,
                logits_processor=None if guides is None else [self.grammars.logits_processor(guides)],
                tokenizer=self.tokenizer,
                pad_token_id=pad,
                eos_token_id=self.eos_ids,
                output_logits=True,
                return_dict_in_generate=True,
            )
        finally:
            self.model.train(was_training)
        generated = output.sequences[:, width:]
        # Raw logits, so that log-probs are those of the policy at this temperature, before top-p.
        logits = torch.stack(output.logits, dim=1).float() / (params.temperature or 1.0)
        completions = []
        for row, prompt in enumerate(prompts):
            tokens = generated[row].tolist()
            length, reason = self._length(tokens, params)
            tokens = tokens[:length]
            guide = None if guides is None else guides[row]
            # A guided row's policy is the softmax over the tokens its grammar allowed at each position.
            allowed = None if guide is None else allowed_tokens(self.grammars.allowed(guide, tokens), logits.shape[-1])
            row_logprobs = masked_log_softmax(logits[row, :length], allowed)
            row_logprobs = row_logprobs.gather(-1, generated[row, :length].unsqueeze(-1))[:, 0]
            completions.append(
                Completion(
                    prompt_ids=tuple(prompt),
                    token_ids=tuple(tokens),
                    logprobs=tuple(row_logprobs.tolist()),
                    text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                    finish_reason=reason,
                    guide=guide,
                )
            )
        return completions

    def _length(self, tokens: list[int], params: SamplingParams) -> tuple[int, str]:
        """How many generated tokens belong to the completion: up to and including the first EOS
        or the token that completes a stop string; the rest is padding after the row finished."""
        for position, token in enumerate(tokens):
            if token in self.eos_ids:
                return position + 1, "stop"
        text = self.tokenizer.decode(tokens)
        if params.stop and any(stop in text for stop in params.stop):
            low, high = 1, len(tokens)
            while low < high:
                middle = (low + high) // 2
                prefix = self.tokenizer.decode(tokens[:middle])
                if any(stop in prefix for stop in params.stop):
                    high = middle
                else:
                    low = middle + 1
            return low, "stop"
        return len(tokens), "length"


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))
