"""What every implementation of the policy loss returns, and how tokens are weighted."""

from __future__ import annotations

from typing import NamedTuple

import torch

AGGREGATIONS = ("token", "sequence")


class PolicyLoss(NamedTuple):
    """`loss` is a differentiable scalar; the per-token tensors are detached diagnostics."""

    loss: torch.Tensor
    logprobs: torch.Tensor  # [T] log π(target) under logits / temperature
    entropy: torch.Tensor  # [T]
    ratio: torch.Tensor  # [T] exp(logprobs − old_logprobs)
    clip_fraction: torch.Tensor  # scalar: share of masked tokens whose clipped term is the larger


def token_weights(mask: torch.Tensor, aggregation: str, seq_ids: torch.Tensor | None) -> torch.Tensor:
    """The weight of each token in the loss, so that `loss = Σ weight · per_token_loss`.

    `"token"`: the mean over masked tokens. `"sequence"`: the mean over sequences (`seq_ids`) of
    each sequence's mean over its masked tokens; sequences with no masked token do not count.
    """
    mask = mask.float()
    if aggregation == "token":
        return mask / mask.sum().clamp(min=1.0)
    if aggregation != "sequence":
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if seq_ids is None:
        raise ValueError('aggregation="sequence" needs seq_ids (the sequence of each token)')
    if seq_ids.shape != mask.shape:
        raise ValueError(f"seq_ids has shape {tuple(seq_ids.shape)}, the mask {tuple(mask.shape)}")
    seq_ids = seq_ids.long()
    counts = torch.zeros(int(seq_ids.max().item()) + 1 if seq_ids.numel() else 0, device=mask.device)
    counts.index_add_(0, seq_ids, mask)
    sequences = (counts > 0).sum().clamp(min=1)
    return mask / counts[seq_ids].clamp(min=1.0) / sequences


def bitmask_words(vocab: int) -> int:
    """32-bit words per row of an allowed-token bitmask over `vocab` tokens."""
    return (vocab + 31) // 32


def allowed_tokens(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """`[T, ⌈V/32⌉]` int32 bitmask rows (bit `j` of word `i` set: token `32·i + j` may be sampled;
    the layout guided-decoding libraries such as xgrammar fill) as a `[T, V]` bool tensor."""
    shifts = torch.arange(32, device=bitmask.device, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab].bool()


def masked_log_softmax(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """log softmax over the allowed tokens only (−inf elsewhere): the distribution a constrained
    sampler draws from."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def entropy_of(log_p: torch.Tensor) -> torch.Tensor:
    """−Σ p log p over the last axis, where tokens of probability 0 (masked) add nothing."""
    # `where` on the factor, not the product: 0 · −inf would be NaN, in the values and the gradients.
    return -(torch.exp(log_p) * torch.where(torch.isinf(log_p), 0.0, log_p)).sum(-1)


def check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [T, H] and weight [V, H]; got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    tokens = hidden.shape[0]
    for name, tensor in (
        ("targets", targets),
        ("mask", mask),
        ("advantages", advantages),
        ("old_logprobs", old_logprobs),
    ):
        if tensor.shape != (tokens,):
            raise ValueError(f"{name} must have shape [{tokens}], got {tuple(tensor.shape)}")
    if tokens and (int(targets.min()) < 0 or int(targets.max()) >= weight.shape[0]):
        raise ValueError(f"targets must be token ids in [0, {weight.shape[0]})")


def check_allowed(allowed: torch.Tensor | None, tokens: int, vocab: int) -> None:
    if allowed is None:
        return
    words = bitmask_words(vocab)
    if allowed.dtype != torch.int32 or allowed.shape != (tokens, words):
        raise ValueError(
            f"allowed must be an int32 bitmask of shape [{tokens}, {words}], got {allowed.dtype} {tuple(allowed.shape)}"
        )
