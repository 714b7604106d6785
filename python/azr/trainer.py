"""The policy update: one optimizer step of clipped REINFORCE++ over all sequences of a self-play step.

The loss comes from `azr_kernels.fused_policy_loss` on the decoder's final hidden states and the
LM-head weight, so `[tokens × vocab]` logits are never materialised (the Triton kernel on GPU, a
chunked PyTorch path on CPU). Sequences are processed in micro-batches bounded by a token budget;
the loss is normalised over the whole step, so micro-batching does not change it.

A sample generated under a format grammar (`Sample.guide`, `azr.guided`) was drawn from the policy
restricted to the tokens its grammar allowed at each step; its log-probs, ratio, entropy and
gradient are computed for that same constrained distribution (the grammar's masks replayed over
its tokens), so the update is the exact policy gradient of the policy as it is sampled.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from azr_kernels import fused_policy_loss, token_logprobs
from azr_kernels.types import bitmask_words
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from azr.guided import Grammars
from azr.timeline import Span, Timeline


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
    # Several sequences in one row, without padding (position ids restart per sequence, and the
    # attention mask is block-diagonal): the micro-batch budget then counts tokens, not padded slots.
    # Cheaper only with varlen attention kernels (flash-attn); with SDPA's masked attention the work
    # grows with the square of the packed row (measured in docs/benchmarks.md).
    sequence_packing: bool = False
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
    guide: str | None = None  # the grammar it was sampled under, if any

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.old_logprobs):
            raise ValueError("completion_ids and old_logprobs must have the same length")
        if not self.prompt_ids:
            raise ValueError("a sample needs a prompt")


@dataclass(frozen=True)
class Totals:
    """The step's totals every micro-batch's loss is normalised by (global across trainer ranks)."""

    tokens: int
    sequences: int

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Totals:
        return cls(sum(len(s.completion_ids) for s in samples), sum(1 for s in samples if s.completion_ids))


# A micro-batch that contributes nothing: trainer ranks with fewer micro-batches than others run it, so
# that every rank makes the same sequence of collective calls.
PADDING = Sample((0,), (0,), (0.0,), 0.0)

# The allowed-token masks of a micro-batch's completion tokens (`[tokens, ⌈V/32⌉]` int32), or None
# when no sample of it was guided.
AllowedTokens = Callable[[Sequence[Sample]], "torch.Tensor | None"]


def grammar_masks(grammars: Grammars) -> AllowedTokens:
    """Masks replayed from each guided sample's grammar; unguided samples allow every token."""

    def allowed(batch: Sequence[Sample]) -> torch.Tensor | None:
        if not any(s.guide for s in batch):
            return None
        words = bitmask_words(grammars.vocab_size)
        rows = [
            grammars.allowed(s.guide, s.completion_ids)
            if s.guide
            else torch.full((len(s.completion_ids), words), -1, dtype=torch.int32)
            for s in batch
        ]
        return torch.cat(rows)

    return allowed


class PolicyObjective(torch.nn.Module):
    """The policy loss of one micro-batch as one call of one module: the decoder's hidden states,
    then the fused loss on the LM head. Being one module call is what lets FSDP2 gather the
    parameters its root owns (embeddings, final norm, LM head) around the whole computation."""

    def __init__(
        self,
        model: PreTrainedModel,
        config: TrainConfig,
        reference_logprobs: Callable[[Sequence[Sample], torch.Tensor], torch.Tensor] | None = None,
        allowed_tokens: AllowedTokens | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.reference_logprobs = reference_logprobs
        self.allowed_tokens = allowed_tokens

    def forward(self, batch: Sequence[Sample], share: float, totals: Totals) -> tuple[torch.Tensor, dict[str, float]]:
        """`share` × this batch's loss (its part of the step's loss), and its part of the statistics."""
        config = self.config
        head = self.model.get_output_embeddings().weight
        with _autocast(head.device):
            hidden, targets, seq_ids = completion_hidden(self.model, batch, packed=config.sequence_packing)
        device = hidden.device
        advantages = torch.tensor([s.advantage for s in batch for _ in s.completion_ids], device=device)
        old = torch.tensor([lp for s in batch for lp in s.old_logprobs], device=device)
        if self.allowed_tokens is None and any(s.guide for s in batch):
            # Never a silently unconstrained update of samples drawn under a grammar.
            raise ValueError("guided samples need a trainer made with the tokenizer, to replay their grammars")
        allowed = self.allowed_tokens(batch) if self.allowed_tokens is not None else None
        allowed = None if allowed is None else allowed.to(device)
        stats: dict[str, float] = {}
        scale = 1.0 / max(totals.tokens, 1) if share else 0.0
        if config.tis_cap > 0:
            advantages, old, truncated, weight_sum = _importance_weights(
                hidden, head, targets, advantages, old, config.temperature, config.tis_cap, allowed
            )
            stats["tis_truncated"] = truncated * scale
            stats["tis_weight_mean"] = weight_sum * scale
        out = fused_policy_loss(
            hidden,
            head,
            targets,
            torch.ones_like(targets, dtype=torch.float32),
            advantages,
            old,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
            temperature=config.temperature,
            entropy_coef=config.entropy_coef,
            aggregation=config.aggregation,
            seq_ids=seq_ids,
            backend=config.loss_backend,
            allowed=allowed,
        )
        tokens = len(targets)
        loss = out.loss * share
        if self.reference_logprobs is not None:
            kl = _kl(hidden, head, targets, self.reference_logprobs(batch, targets), config.temperature)
            loss = loss + config.kl_coef * kl * tokens * scale
            stats["kl"] = kl.item() * tokens * scale
        stats["loss"] = loss.item()
        stats["entropy"] = out.entropy.sum().item() * scale
        stats["clip_fraction"] = out.clip_fraction.item() * tokens * scale
        stats["ratio_mean"] = out.ratio.sum().item() * scale
        stats["ratio_max"] = out.ratio.max().item() if share else 0.0
        return loss, stats


class Trainer:
    """One optimizer step of clipped REINFORCE++ per self-play step.

    `shard`, when given, is applied to the `PolicyObjective` before the optimizer is made (the
    trainer group's FSDP2 wrapping), and `ranks` is the group's size: each rank's loss is its part of
    the global loss, scaled by `ranks` because the sharded gradients are averaged over the ranks; the
    update is then the same, computed by several ranks."""

    def __init__(
        self,
        model: PreTrainedModel,
        config: TrainConfig,
        reference: PreTrainedModel | None = None,
        *,
        shard: Callable[[torch.nn.Module], None] | None = None,
        ranks: int = 1,
        tokenizer: PreTrainedTokenizerBase | None = None,
        actor: str = "trainer",
    ) -> None:
        if config.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        self.model = model
        self.config = config
        self.ranks = ranks
        self.actor, self.timeline = actor, Timeline()
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        reference_logprobs = partial(_reference_logprobs, reference, config.temperature) if reference else None
        # Samples generated under a format grammar are trained with its masks (`tokenizer` needed).
        vocab = model.get_output_embeddings().weight.shape[0]
        allowed = grammar_masks(Grammars(tokenizer, vocab)) if tokenizer is not None else None
        self.objective = PolicyObjective(model, config, reference_logprobs, allowed)
        if shard is not None:
            shard(self.objective)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )

    def publish(self, model: torch.nn.Module) -> None:
        """Make `model` hold the trained weights (in one process it usually is the trained model)."""
        if model is not self.model:
            model.load_state_dict(self.model.state_dict())

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

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        """One optimizer step on `samples`; returns the update's statistics."""
        trained = [s for s in samples if s.completion_ids]
        return self.step_batches(self.micro_batches(trained), Totals.of(trained))

    def micro_batches(self, samples: Sequence[Sample]) -> list[list[Sample]]:
        return micro_batches(samples, self.config.micro_batch_tokens, packed=self.config.sequence_packing)

    def step_batches(self, batches: Sequence[Sequence[Sample] | None], totals: Totals) -> dict[str, float]:
        """One optimizer step on micro-batches whose losses are normalised by `totals` (a trainer
        rank gets its share of the step's batches and the step's totals; `None` pads)."""
        if self.config.lr == 0:
            # A frozen policy (an lr=0 control run): no update could change a weight, so none is computed.
            return {"tokens": float(totals.tokens), "sequences": float(totals.sequences)}
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.accumulate_batches(batches, totals)
        if not totals.tokens:
            return {**stats, "grad_norm": 0.0}
        with self.timeline.span(self.actor, "optimizer step"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # Sharded parameters give a distributed norm: the whole of it is the same on every rank.
        whole = grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm
        return {**stats, "grad_norm": float(whole)}

    def accumulate(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Add the gradient of the step's loss on `samples` to the parameters' `.grad`."""
        trained = [s for s in samples if s.completion_ids]
        return self.accumulate_batches(self.micro_batches(trained), Totals.of(trained))

    def accumulate_batches(self, batches: Sequence[Sequence[Sample] | None], totals: Totals) -> dict[str, float]:
        stats = {"loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "ratio_max": 0.0, "kl": 0.0}
        if not totals.tokens:
            return {**stats, "tokens": 0.0, "sequences": 0.0}
        self.objective.train()
        for index, batch in enumerate(batches):
            started = time.time()
            share = 0.0
            if batch:
                share = (
                    sum(len(s.completion_ids) for s in batch) / totals.tokens
                    if self.config.aggregation == "token"
                    else len(batch) / totals.sequences
                )
            loss, part = self.objective(batch or [PADDING], share, totals)
            (loss * self.ranks if self.ranks > 1 else loss).backward()
            for name, value in part.items():
                stats[name] = max(stats[name], value) if name == "ratio_max" else stats.get(name, 0.0) + value
            tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in batch or ())
            self.timeline.add(self.actor, f"micro-batch {index}", started, time.time(), tokens=tokens)
        return {**stats, "tokens": float(totals.tokens), "sequences": float(totals.sequences)}

    def spans(self) -> list[Span]:
        """The update's spans since the last call (micro-batches, the optimizer step)."""
        return self.timeline.drain()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _importance_weights(
    hidden: torch.Tensor,
    head: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    engine: torch.Tensor,
    temperature: float,
    cap: float,
    allowed: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Advantages weighted by the capped trainer/engine ratio, the trainer's log-probs as the new
    `old`, and how many tokens were truncated and the weights' sum (for the logs)."""
    with torch.no_grad():
        trainer, _ = token_logprobs(hidden.detach(), head, targets, temperature, allowed=allowed)
        ratio = torch.exp(trainer.float() - engine)
        weights = ratio.clamp(max=cap)
    return advantages * weights, trainer.float(), float((ratio > cap).sum()), float(weights.sum())


def _reference_logprobs(
    reference: PreTrainedModel, temperature: float, batch: Sequence[Sample], targets: torch.Tensor
) -> torch.Tensor:
    head = reference.get_output_embeddings().weight
    with torch.no_grad(), _autocast(head.device):
        hidden, _, _ = completion_hidden(reference, batch)
        logprobs, _ = token_logprobs(hidden, head, targets, temperature)
    return logprobs


def _kl(
    hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean k3 estimate of KL(π ‖ π_ref) over the batch's completion tokens."""
    step = max(1, (1 << 23) // head.shape[0])
    parts = []
    for start in range(0, hidden.shape[0], step):
        chunk = slice(start, start + step)
        logp = checkpoint(_target_logprobs, hidden[chunk], head, targets[chunk], temperature, use_reentrant=False)
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
    model: PreTrainedModel, batch: Sequence[Sample], *, packed: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The final hidden states at the positions that predict each completion token, flattened over
    the batch, with those tokens and the index of each token's sequence. `packed` puts the batch's
    sequences in one row with position ids that restart per sequence (transformers then masks
    attention block-diagonally), instead of one padded row each."""
    device = next(model.parameters()).device
    rows, positions, sequences = [], [], []
    for row, s in enumerate(batch):
        sequences.append(list(s.prompt_ids) + list(s.completion_ids))
        rows += [row] * len(s.completion_ids)
    if packed:
        ids = torch.tensor([[t for sequence in sequences for t in sequence]], device=device)
        restart = torch.tensor([[p for sequence in sequences for p in range(len(sequence))]], device=device)
        hidden = model.get_decoder()(input_ids=ids, position_ids=restart, use_cache=False).last_hidden_state[0]
        offset = 0
        for s, sequence in zip(batch, sequences, strict=True):
            # The hidden state at position i predicts token i + 1.
            start = offset + len(s.prompt_ids) - 1
            positions += range(start, start + len(s.completion_ids))
            offset += len(sequence)
        selected = hidden[torch.tensor(positions, device=device)]
    else:
        width = max(len(sequence) for sequence in sequences)
        ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        attention = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        for row, (s, sequence) in enumerate(zip(batch, sequences, strict=True)):
            ids[row, : len(sequence)] = torch.tensor(sequence, device=device)
            attention[row, : len(sequence)] = 1
            start = len(s.prompt_ids) - 1
            positions += range(start, start + len(s.completion_ids))
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
        selected = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]
    row_index = torch.tensor(rows, device=device)
    targets = torch.tensor([t for s in batch for t in s.completion_ids], device=device)
    return selected, targets, row_index


def micro_batches(samples: Sequence[Sample], token_budget: int, *, packed: bool = False) -> list[list[Sample]]:
    """Consecutive groups that stay within the budget: in tokens when packed, in padded slots
    (sequences × longest) when not; a sequence longer than the budget is a group of its own."""
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    used = longest = 0
    for s in samples:
        length = len(s.prompt_ids) + len(s.completion_ids)
        cost = used + length if packed else max(longest, length) * (len(current) + 1)
        if current and cost > token_budget:
            batches.append(current)
            current, used, longest = [], 0, 0
        current.append(s)
        used += length
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches
