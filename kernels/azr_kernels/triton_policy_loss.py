"""The policy loss with a Triton kernel, a chunk of tokens at a time.

For each chunk of C tokens:
1. `logits = hidden_chunk @ weightᵀ` into an fp32 `[C, V]` buffer (cuBLAS; bf16 inputs, fp32 output);
2. one Triton program per token walks its row of the vocabulary twice: first with an online
   log-sum-exp (max, sum of exponentials and the entropy's running sum, rescaled as the max grows)
   to get the log-prob of the target, the entropy, the ratio, the clipped surrogate and its
   coefficients; then again to write the gradient of the loss with respect to its logits over them;
3. `grad_hidden_chunk = grad_logits @ weight` and `grad_weight += grad_logitsᵀ @ hidden_chunk` (cuBLAS).

The gradients are made in the forward pass, so the backward pass only scales them. Memory beyond the
inputs and the gradients: the `[C, V]` buffer (C is chosen to keep it under `CHUNK_BYTES`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from azr_kernels.types import PolicyLoss, token_weights

CHUNK_BYTES = 1 << 30
BLOCK_V = 1024


@triton.jit
def _policy_rows(
    logits_ptr,
    row_stride,
    targets_ptr,
    old_ptr,
    advantages_ptr,
    weights_ptr,
    logprobs_ptr,
    entropy_ptr,
    ratio_ptr,
    loss_ptr,
    clipped_ptr,
    vocab,
    inv_temperature,
    clip_low,
    clip_high,
    entropy_coef,
    WITH_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * row_stride
    # Pass 1: online log-sum-exp. `total` is Σ exp(z − m); `spread` is Σ exp(z − m)·(z − m), from
    # which the entropy follows without subtracting two large numbers: H = log(total) − spread / total.
    peak = -1e30
    total = 0.0
    spread = 0.0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = cols < vocab
        z = tl.load(base + cols, mask=valid, other=float("-inf")) * inv_temperature
        new_peak = tl.maximum(peak, tl.max(z, axis=0))
        rescale = tl.exp(peak - new_peak)
        shifted = tl.where(valid, z - new_peak, 0.0)
        exps = tl.where(valid, tl.exp(shifted), 0.0)
        spread = rescale * (spread + (peak - new_peak) * total) + tl.sum(exps * shifted, axis=0)
        total = rescale * total + tl.sum(exps, axis=0)
        peak = new_peak
    lse = peak + tl.log(total)
    target = tl.load(targets_ptr + row)
    logprob = tl.minimum(tl.load(base + target) * inv_temperature - lse, 0.0)
    entropy = tl.log(total) - spread / total

    weight = tl.load(weights_ptr + row)
    advantage = tl.load(advantages_ptr + row)
    ratio = tl.exp(logprob - tl.load(old_ptr + row))
    unclipped = -advantage * ratio
    clipped = -advantage * tl.minimum(tl.maximum(ratio, 1.0 - clip_low), 1.0 + clip_high)
    tl.store(logprobs_ptr + row, logprob)
    tl.store(entropy_ptr + row, entropy)
    tl.store(ratio_ptr + row, ratio)
    tl.store(loss_ptr + row, weight * (tl.maximum(unclipped, clipped) - entropy_coef * entropy))
    tl.store(clipped_ptr + row, (clipped > unclipped).to(tl.float32))

    if WITH_GRAD:
        # dL/dlogp (zero where the clipped term wins: the ratio is outside the range) and dL/dH.
        c_logp = tl.where(unclipped >= clipped, weight * unclipped, 0.0)
        c_entropy = -entropy_coef * weight
        # Pass 2: dL/dz = c_logp·(onehot − p) − c_H·p·(log p + H), times 1/T for the raw logits.
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            valid = cols < vocab
            log_p = tl.load(base + cols, mask=valid, other=0.0) * inv_temperature - lse
            p = tl.exp(log_p)
            grad = -c_logp * p - c_entropy * p * (log_p + entropy)
            grad = tl.where(cols == target, grad + c_logp, grad)
            tl.store(base + cols, grad * inv_temperature, mask=valid)


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` with an fp32 result; half-precision inputs are multiplied as they are."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    if a.dtype != b.dtype:
        a = a.to(b.dtype)
    return torch.mm(a, b, out_dtype=torch.float32)


def chunk_rows(vocab: int, tokens: int) -> int:
    return max(1, min(tokens, CHUNK_BYTES // (4 * vocab)))


def _rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    token_weight: torch.Tensor,
    temperature: float,
    clip_low: float,
    clip_high: float,
    entropy_coef: float,
    grad_hidden: torch.Tensor | None,
    grad_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """Run the kernel over all tokens, chunk by chunk; fill the gradients when given."""
    tokens, vocab = hidden.shape[0], weight.shape[0]
    outputs = [torch.empty(tokens, dtype=torch.float32, device=hidden.device) for _ in range(5)]
    logprobs, entropy, ratio, loss, clipped = outputs
    with_grad = grad_hidden is not None or grad_weight is not None
    step = chunk_rows(vocab, tokens)
    for start in range(0, tokens, step):
        end = min(start + step, tokens)
        chunk = hidden[start:end]
        logits = _mm_fp32(chunk, weight.T)
        rows = slice(start, end)
        _policy_rows[(end - start,)](
            logits,
            logits.stride(0),
            targets[rows],
            old_logprobs[rows],
            advantages[rows],
            token_weight[rows],
            logprobs[rows],
            entropy[rows],
            ratio[rows],
            loss[rows],
            clipped[rows],
            vocab,
            1.0 / temperature,
            clip_low,
            clip_high,
            entropy_coef,
            WITH_GRAD=with_grad,
            BLOCK=BLOCK_V,
        )
        if grad_hidden is not None:
            grad_hidden[rows] = _mm_fp32(logits, weight)
        if grad_weight is not None:
            grad_weight += _mm_fp32(logits.T.contiguous(), chunk)
    return logprobs, entropy, ratio, loss, clipped


class _TritonPolicyLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, old_logprobs, advantages, token_weight, settings):
        temperature, clip_low, clip_high, entropy_coef = settings
        grad_hidden = (
            torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if ctx.needs_input_grad[0] else None
        )
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        )
        logprobs, entropy, ratio, loss, clipped = _rows(
            hidden,
            weight,
            targets,
            old_logprobs.float().contiguous(),
            advantages.float().contiguous(),
            token_weight.float().contiguous(),
            temperature,
            clip_low,
            clip_high,
            entropy_coef,
            grad_hidden,
            grad_weight,
        )
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        active = token_weight > 0
        clip_fraction = clipped[active].mean() if bool(active.any()) else clipped.new_zeros(())
        ctx.mark_non_differentiable(logprobs, entropy, ratio, clip_fraction)
        return loss.sum(), logprobs, entropy, ratio, clip_fraction

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        saved = iter(ctx.saved_tensors)
        grad_hidden = (next(saved) * grad_loss).to(ctx.dtypes[0]) if ctx.has[0] else None
        grad_weight = (next(saved) * grad_loss).to(ctx.dtypes[1]) if ctx.has[1] else None
        return grad_hidden, grad_weight, None, None, None, None, None


def triton_policy_loss(
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
) -> PolicyLoss:
    token_weight = token_weights(mask, aggregation, seq_ids)
    loss, logprobs, entropy, ratio, clip_fraction = _TritonPolicyLoss.apply(
        hidden.contiguous(),
        weight.contiguous(),
        targets.contiguous(),
        old_logprobs,
        advantages,
        token_weight,
        (temperature, clip_low, clip_high, entropy_coef),
    )
    return PolicyLoss(loss, logprobs, entropy, ratio, clip_fraction)


def triton_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    logprobs, entropy, _, _, _ = _rows(
        hidden.contiguous(),
        weight.contiguous(),
        targets.contiguous(),
        zeros,
        zeros,
        zeros,
        temperature,
        0.0,
        0.0,
        0.0,
        None,
        None,
    )
    return logprobs, entropy
