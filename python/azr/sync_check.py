"""The stale-sync check: after new weights reach an engine, its log-probs of a fixed sequence must
equal the trainer's, so a skipped, partial or stale sync fails loudly instead of sampling from old
weights (`vllm_check_sync`; the in-process vLLM engine and every rollout replica run it).

    probe = Probe.of(model, probe_ids(tokenizer))    # the trainer's side, sent with the weights
    probe.check(engine_logprobs, what="replica 1")   # the engine's side; raises StaleWeightsError
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

# Ordinary code, so every layer matters.
SYNC_PROBE = "def f(a, b):\n    return sorted(a)[b] if b < len(a) else None\n"


class StaleWeightsError(RuntimeError):
    """The engine's log-probs do not match the trainer's: its weights are not the trainer's."""


def probe_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    return tuple(tokenizer(SYNC_PROBE, add_special_tokens=False)["input_ids"])


def default_tolerance(model: torch.nn.Module) -> float:
    """fp32 kernels of the engine and the trainer agree to ~1e-5 per token; bf16/fp16 to ~1e-1."""
    return 1e-3 if next(model.parameters()).dtype == torch.float32 else 0.15


def sequence_logprobs(model: torch.nn.Module, token_ids: Sequence[int]) -> torch.Tensor:
    """`model`'s log-prob of each token of `token_ids` after its prefix (all but the first), in
    eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.tensor([list(token_ids)], device=next(model.parameters()).device)
            logits = model(ids).logits[0, :-1].float()
    finally:
        model.train(was_training)
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1).cpu()


@dataclass(frozen=True)
class Probe:
    """The trainer's log-probs of `token_ids`, and how far an engine's may differ."""

    token_ids: tuple[int, ...]
    logprobs: torch.Tensor
    tolerance: float

    @classmethod
    def of(cls, model: torch.nn.Module, token_ids: Sequence[int], tolerance: float | None = None) -> Probe:
        tolerance = default_tolerance(model) if tolerance is None else tolerance
        return cls(tuple(token_ids), sequence_logprobs(model, token_ids), tolerance)

    def check(self, engine: torch.Tensor, what: str = "the engine") -> float:
        """The largest per-token difference of `engine`'s log-probs from the trainer's; raises
        `StaleWeightsError` past the tolerance."""
        difference = float((engine.float().cpu() - self.logprobs).abs().max())
        if difference > self.tolerance:
            raise StaleWeightsError(
                f"{what}'s log-probs differ from the trainer's by up to {difference:.4g} (tolerance "
                f"{self.tolerance:g}) on a fixed sequence: its weights are stale or partly synced"
            )
        return difference
