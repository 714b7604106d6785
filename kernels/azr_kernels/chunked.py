"""The policy loss in PyTorch without ever holding `[tokens × vocab]`: logits are made a chunk of
tokens at a time, in the forward pass and again in the backward pass, which is written by hand.
This is the path on machines without Triton; it matches the reference to float precision.

Gradient of the loss with respect to the scaled logits `z = hidden @ weightᵀ / T` of one token:
`dL/dz = c_logp · (onehot(target) − p) + c_H · (−p · (log p + H))`, where `c_logp = dL/dlogp` and
`c_H = dL/dH` come from the clipped surrogate (`loss_terms`), `p = softmax(z)`, `H` its entropy.
With an `allowed` mask (constrained decoding), `p` is the softmax over the allowed tokens and the
same formula holds with `p = 0` (and no gradient) on the others.
"""

from __future__ import annotations

import torch

from azr_kernels.types import PolicyLoss, allowed_tokens, entropy_of, masked_log_softmax, token_weights

# Logits held at once: chunk_tokens × vocab floats (32 MiB).
CHUNK_ELEMENTS = 1 << 23


def chunk_tokens(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab)


def loss_terms(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    clip_low: float,
    clip_high: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped REINFORCE++ loss from per-token log-probs and entropies, and the coefficients
    `dL/dlogp` and `dL/dH` of each token: (loss, ratio, clip_fraction, c_logp, c_entropy)."""
    advantages = advantages.float()
    ratio = torch.exp(logprobs - old_logprobs.float())
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = (weights * (torch.maximum(unclipped, clipped) - entropy_coef * entropy)).sum()
    # Where the clipped term is the larger, the ratio is outside the clip range and the loss is flat.
    c_logp = weights * unclipped * (unclipped >= clipped)
    c_entropy = -entropy_coef * weights
    active = weights > 0
    clip_fraction = (clipped > unclipped)[active].float().mean() if active.any() else loss.new_zeros(())
    return loss, ratio, clip_fraction, c_logp, c_entropy


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    return (hidden.float() @ weight.float().T) / temperature


def _allowed_chunk(allowed: torch.Tensor | None, start: int, end: int, vocab: int) -> torch.Tensor | None:
    return None if allowed is None else allowed_tokens(allowed[start:end], vocab)


def chunked_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of `targets` and entropies, a chunk of tokens at a time."""
    tokens = hidden.shape[0]
    logprobs = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
    entropy = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
    step = chunk_tokens(weight.shape[0])
    with torch.no_grad():
        for start in range(0, tokens, step):
            end = min(start + step, tokens)
            logits = _chunk_logits(hidden[start:end], weight, temperature)
            # Subtracting the log-sum-exp before anything else keeps large logits from cancelling.
            log_p = masked_log_softmax(logits, _allowed_chunk(allowed, start, end, weight.shape[0]))
            logprobs[start:end] = log_p.gather(-1, targets[start:end].long().unsqueeze(-1)).squeeze(-1)
            entropy[start:end] = entropy_of(log_p)
    return logprobs, entropy


class _ChunkedPolicyLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, c_logp, c_entropy, temperature, allowed):
        ctx.save_for_backward(hidden, weight, targets, c_logp, c_entropy, allowed)
        ctx.temperature = temperature
        # The value is computed outside (it needs no logits); this node only carries the gradient.
        return hidden.new_zeros((), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, targets, c_logp, c_entropy, allowed = ctx.saved_tensors
        temperature = ctx.temperature
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        step = chunk_tokens(weight.shape[0])
        weight_f = weight.float()
        for start in range(0, hidden.shape[0], step):
            end = min(start + step, hidden.shape[0])
            hidden_f = hidden[start:end].float()
            logits = (hidden_f @ weight_f.T) / temperature
            log_p = masked_log_softmax(logits, _allowed_chunk(allowed, start, end, weight.shape[0]))
            probs = torch.exp(log_p)
            entropy = entropy_of(log_p).unsqueeze(-1)
            a = c_logp[start:end].unsqueeze(-1)
            b = c_entropy[start:end].unsqueeze(-1)
            # Masked tokens have p = 0: their term is 0 (not 0 · −inf).
            grad_logits = -a * probs - torch.where(probs > 0, b * probs * (log_p + entropy), 0.0)
            grad_logits.scatter_add_(-1, targets[start:end].long().unsqueeze(-1), a)
            grad_logits *= grad_output / temperature
            if grad_hidden is not None:
                grad_hidden[start:end] = grad_logits @ weight_f
            if grad_weight is not None:
                grad_weight += grad_logits.T @ hidden_f
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def chunked_policy_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    temperature: float = 1.0,
    entropy_coef: float = 0.0,
    aggregation: str = "token",
    seq_ids: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
) -> PolicyLoss:
    logprobs, entropy = chunked_logprobs(hidden.detach(), weight.detach(), targets, temperature, allowed)
    weights = token_weights(mask, aggregation, seq_ids)
    loss, ratio, clip_fraction, c_logp, c_entropy = loss_terms(
        logprobs, entropy, old_logprobs, advantages, weights, clip_low, clip_high, entropy_coef
    )
    carrier = _ChunkedPolicyLoss.apply(hidden, weight, targets, c_logp, c_entropy, temperature, allowed)
    return PolicyLoss(loss.detach() + carrier, logprobs, entropy, ratio.detach(), clip_fraction.detach())
