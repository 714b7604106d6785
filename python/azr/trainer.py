"""The policy update: one optimizer step of clipped REINFORCE++ over all sequences of a self-play step.

The loss comes from `azr_kernels.fused_policy_loss` on the decoder's final hidden states and the
LM-head weight, so `[tokens × vocab]` logits are never materialised (the Triton kernel on GPU, a
chunked PyTorch path on CPU). Sequences are processed in micro-batches bounded by a token budget;
the loss is normalised over the whole step, so micro-batching does not change it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from azr_kernels import fused_policy_loss, token_logprobs
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    entropy_coef: float = 0.001
    temperature: float = 1.0
    aggregation: str = "token"
    micro_batch_tokens: int = 8192
    gradient_checkpointing: bool = True
    kl_coef: float = 0.0
    loss_backend: str = "auto"
    # Truncated importance sampling (0: off). The engine samples from slightly different numbers than
    # the trainer computes (other kernels, precision); with a cap C, each token's advantage is weighted
    # by min(π_trainer / π_engine, C) and the clip ratio is taken against the trainer's own log-probs.
    tis_cap: float = 0.0


@dataclass(frozen=True)
class Sample:
    """One trained sequence: the completion is what gets the gradient."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    old_logprobs: tuple[float, ...]
    advantage: float

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.old_logprobs):
            raise ValueError("completion_ids and old_logprobs must have the same length")
        if not self.prompt_ids:
            raise ValueError("a sample needs a prompt")


class Trainer:
    def __init__(self, model: PreTrainedModel, config: TrainConfig, reference: PreTrainedModel | None = None) -> None:
        if config.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        self.model = model
        self.config = config
        self.reference = reference
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.head = model.get_output_embeddings()

    def save(self, path: str | Path) -> None:
        """Model and optimizer state as a torch.distributed.checkpoint (DCP) directory: each rank of a
        trainer group writes its own shards, and any number of ranks can read it back."""
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        with _quiet_single_process():
            dcp.save({"model": model_state, "optim": optimizer_state}, checkpoint_id=str(path), no_dist=_single())

    def load(self, path: str | Path) -> None:
        """Restore what `save` wrote, whatever the number of ranks that wrote it."""
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optim": optimizer_state}
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(path), no_dist=_single())
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])

    def _autocast(self) -> contextlib.AbstractContextManager:
        device = next(self.model.parameters()).device
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        """One optimizer step on `samples`; returns the update's statistics."""
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.accumulate(samples)
        if not stats["tokens"]:
            return {**stats, "grad_norm": 0.0}
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**stats, "grad_norm": float(grad_norm)}

    def accumulate(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Add the gradient of the step's loss on `samples` to the parameters' `.grad`."""
        trained = [s for s in samples if s.completion_ids]
        if not trained:
            return {"loss": 0.0, "tokens": 0.0, "sequences": 0.0}
        total_tokens = sum(len(s.completion_ids) for s in trained)
        total_sequences = len(trained)
        self.model.train()
        totals = {"loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "ratio_max": 0.0, "kl": 0.0}
        for batch in _micro_batches(trained, self.config.micro_batch_tokens):
            tokens = sum(len(s.completion_ids) for s in batch)
            share = tokens / total_tokens if self.config.aggregation == "token" else len(batch) / total_sequences
            with self._autocast():
                hidden, targets, seq_ids = completion_hidden(self.model, batch)
            device = hidden.device
            advantages = torch.tensor([s.advantage for s in batch for _ in s.completion_ids], device=device)
            old = torch.tensor([lp for s in batch for lp in s.old_logprobs], device=device)
            if self.config.tis_cap > 0:
                advantages, old, truncated, weight_sum = self._importance_weights(hidden, targets, advantages, old)
                totals["tis_truncated"] = totals.get("tis_truncated", 0.0) + truncated / total_tokens
                totals["tis_weight_mean"] = totals.get("tis_weight_mean", 0.0) + weight_sum / total_tokens
            out = fused_policy_loss(
                hidden,
                self.head.weight,
                targets,
                torch.ones_like(targets, dtype=torch.float32),
                advantages,
                old,
                clip_low=self.config.clip_low,
                clip_high=self.config.clip_high,
                temperature=self.config.temperature,
                entropy_coef=self.config.entropy_coef,
                aggregation=self.config.aggregation,
                seq_ids=seq_ids,
                backend=self.config.loss_backend,
            )
            loss = out.loss * share
            if self.config.kl_coef > 0:
                kl = self._kl(batch, hidden, targets)
                loss = loss + self.config.kl_coef * kl * (tokens / total_tokens)
                totals["kl"] += kl.item() * tokens / total_tokens
            loss.backward()
            totals["loss"] += loss.item()
            totals["entropy"] += out.entropy.sum().item() / total_tokens
            totals["clip_fraction"] += out.clip_fraction.item() * tokens / total_tokens
            totals["ratio_mean"] += out.ratio.sum().item() / total_tokens
            totals["ratio_max"] = max(totals["ratio_max"], out.ratio.max().item())
        return {**totals, "tokens": float(total_tokens), "sequences": float(total_sequences)}

    def _importance_weights(
        self, hidden: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor, engine: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Advantages weighted by the capped trainer/engine ratio, the trainer's log-probs as the new
        `old`, and how many tokens were truncated and the weights' sum (for the logs)."""
        with torch.no_grad():
            trainer, _ = token_logprobs(hidden.detach(), self.head.weight, targets, self.config.temperature)
            ratio = torch.exp(trainer.float() - engine)
            weights = ratio.clamp(max=self.config.tis_cap)
        return advantages * weights, trainer.float(), float((ratio > self.config.tis_cap).sum()), float(weights.sum())

    def _kl(self, batch: Sequence[Sample], hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean k3 estimate of KL(π ‖ π_ref) over the batch's completion tokens."""
        assert self.reference is not None
        with torch.no_grad(), self._autocast():
            reference_hidden, _, _ = completion_hidden(self.reference, batch)
            reference, _ = token_logprobs(
                reference_hidden, self.reference.get_output_embeddings().weight, targets, self.config.temperature
            )
        weight = self.head.weight
        step = max(1, (1 << 23) // weight.shape[0])
        parts = []
        for start in range(0, hidden.shape[0], step):
            chunk = slice(start, start + step)
            logp = checkpoint(
                _target_logprobs, hidden[chunk], weight, targets[chunk], self.config.temperature, use_reentrant=False
            )
            delta = reference[chunk] - logp
            parts.append(torch.exp(delta) - delta - 1.0)
        return torch.cat(parts).mean()


def _single() -> bool:
    """Whether this process saves and loads alone (no process group)."""
    return not (dist.is_available() and dist.is_initialized())


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it works in one process when there is no process group; that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Only the model weights of a trainer checkpoint (`Trainer.save`), into `model`."""
    state = {"model": get_model_state_dict(model)}
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(path), no_dist=_single())
    set_model_state_dict(model, state["model"])


def _target_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    logits = hidden.float() @ weight.float().T / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def completion_hidden(
    model: PreTrainedModel, batch: Sequence[Sample]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The final hidden states at the positions that predict each completion token, flattened over
    the batch, with those tokens and the index of each token's sequence."""
    device = next(model.parameters()).device
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    attention = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    rows, positions = [], []
    for row, s in enumerate(batch):
        sequence = list(s.prompt_ids) + list(s.completion_ids)
        ids[row, : len(sequence)] = torch.tensor(sequence, device=device)
        attention[row, : len(sequence)] = 1
        # The hidden state at position i predicts token i + 1.
        start = len(s.prompt_ids) - 1
        rows += [row] * len(s.completion_ids)
        positions += range(start, start + len(s.completion_ids))
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    row_index = torch.tensor(rows, device=device)
    selected = hidden[row_index, torch.tensor(positions, device=device)]
    targets = torch.tensor([t for s in batch for t in s.completion_ids], device=device)
    return selected, targets, row_index


def _micro_batches(samples: Sequence[Sample], token_budget: int) -> list[list[Sample]]:
    """Consecutive groups whose padded size (sequences × longest) stays within the budget."""
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    longest = 0
    for s in samples:
        length = len(s.prompt_ids) + len(s.completion_ids)
        if current and max(longest, length) * (len(current) + 1) > token_budget:
            batches.append(current)
            current, longest = [], 0
        current.append(s)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches
