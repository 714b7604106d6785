"""The policy update on a real (tiny, random) Qwen2 model: the loss goes through the kernel entry
point and matches the reference path; micro-batching does not change it; training moves weights."""

from __future__ import annotations

import random

import pytest
import torch
from azr.models import tiny_qwen2
from azr.trainer import Sample, TrainConfig, Trainer, completion_hidden, micro_batches


def samples(seed: int = 0, count: int = 6) -> list[Sample]:
    rng = random.Random(seed)
    result = []
    for i in range(count):
        prompt = tuple(rng.randrange(150_000) for _ in range(rng.randint(3, 20)))
        completion = tuple(rng.randrange(150_000) for _ in range(rng.randint(1, 15)))
        old = tuple(-rng.uniform(8, 14) for _ in completion)
        result.append(Sample(prompt, completion, old, rng.uniform(-1.5, 1.5) if i else 0.0))
    return result


def gradients(backend: str, micro_batch_tokens: int = 4096, aggregation: str = "token", **kwargs) -> tuple:
    policy = tiny_qwen2(seed=3)
    trainer = Trainer(
        policy.model,
        TrainConfig(
            loss_backend=backend,
            micro_batch_tokens=micro_batch_tokens,
            aggregation=aggregation,
            gradient_checkpointing=False,
            **kwargs,
        ),
    )
    stats = trainer.accumulate(samples())
    return stats, {name: p.grad.clone() for name, p in policy.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_trainer_loss_and_gradients_match_the_reference_path(aggregation: str) -> None:
    fused, fused_grads = gradients("auto", aggregation=aggregation, entropy_coef=0.01, clip_high=0.28)
    reference, reference_grads = gradients("reference", aggregation=aggregation, entropy_coef=0.01, clip_high=0.28)
    assert fused["loss"] == pytest.approx(reference["loss"], rel=1e-5, abs=1e-7)
    assert fused_grads.keys() == reference_grads.keys() and fused_grads
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batches_do_not_change_the_loss() -> None:
    whole, whole_grads = gradients("auto", micro_batch_tokens=100_000)
    split, split_grads = gradients("auto", micro_batch_tokens=40)
    assert whole["loss"] == pytest.approx(split["loss"], rel=1e-5)
    for name in whole_grads:
        torch.testing.assert_close(whole_grads[name], split_grads[name], rtol=1e-4, atol=1e-6)


def test_packed_and_padded_micro_batches_make_the_same_update() -> None:
    """Sequences packed into one row (position ids restarting, block-diagonal attention) give the
    gradients padded rows give; the token budget then counts tokens, not padded slots."""
    padded, padded_grads = gradients("auto", micro_batch_tokens=60, sequence_packing=False)
    packed, packed_grads = gradients("auto", micro_batch_tokens=60, sequence_packing=True)
    assert packed["loss"] == pytest.approx(padded["loss"], rel=1e-5)
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in samples()]
    packed_batches = micro_batches(samples(), 60, packed=True)
    assert all(sum(len(s.prompt_ids) + len(s.completion_ids) for s in b) <= 60 for b in packed_batches)
    assert len(packed_batches) <= len(micro_batches(samples(), 60)) and sum(lengths) > 60


def test_hidden_states_line_up_with_completion_tokens() -> None:
    policy = tiny_qwen2(seed=1)
    batch = samples(count=3)
    hidden, targets, seq_ids = completion_hidden(policy.model, batch)
    packed, packed_targets, packed_ids = completion_hidden(policy.model, batch, packed=True)
    torch.testing.assert_close(packed, hidden, rtol=1e-4, atol=1e-5)
    assert packed_targets.tolist() == targets.tolist() and packed_ids.tolist() == seq_ids.tolist()
    assert hidden.shape == (sum(len(s.completion_ids) for s in batch), 64)
    assert targets.tolist() == [t for s in batch for t in s.completion_ids]
    # The same positions from a full forward pass: logits at position i predict token i + 1.
    first = batch[0]
    ids = torch.tensor([list(first.prompt_ids) + list(first.completion_ids)])
    logits = policy.model(ids).logits[0]
    expected = logits[len(first.prompt_ids) - 1 : len(first.prompt_ids) - 1 + len(first.completion_ids)]
    head = policy.model.get_output_embeddings().weight
    torch.testing.assert_close(hidden[: len(first.completion_ids)] @ head.T, expected, rtol=1e-4, atol=1e-4)
    assert seq_ids.tolist() == [i for i, s in enumerate(batch) for _ in s.completion_ids]


def test_a_step_changes_the_weights_and_reports() -> None:
    policy = tiny_qwen2(seed=2)
    before = [p.detach().clone() for p in policy.model.parameters()]
    trainer = Trainer(policy.model, TrainConfig(lr=1e-3, gradient_checkpointing=True))
    stats = trainer.step(samples())
    assert all(k in stats for k in ("loss", "entropy", "clip_fraction", "grad_norm", "tokens"))
    assert torch.isfinite(torch.tensor(stats["loss"])) and stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True))


def test_a_frozen_policy_computes_no_update() -> None:
    """lr=0 (a control run): no gradient is computed, the weights and the optimizer stay as they were."""
    policy = tiny_qwen2(seed=2)
    before = [p.detach().clone() for p in policy.model.parameters()]
    trainer = Trainer(policy.model, TrainConfig(lr=0.0, gradient_checkpointing=False))
    stats = trainer.step(samples())
    assert stats["tokens"] == sum(len(s.completion_ids) for s in samples()) and "loss" not in stats
    assert all(p.grad is None for p in policy.model.parameters())
    assert not trainer.optimizer.state
    assert all(torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True))


def test_kl_penalty_needs_a_reference_and_is_zero_against_itself() -> None:
    policy = tiny_qwen2(seed=4)
    with pytest.raises(ValueError, match="reference model"):
        Trainer(policy.model, TrainConfig(kl_coef=0.1))
    reference = tiny_qwen2(seed=4).model.eval()
    trainer = Trainer(policy.model, TrainConfig(kl_coef=0.1, gradient_checkpointing=False), reference)
    stats = trainer.accumulate(samples())
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)


def test_empty_completions_are_skipped() -> None:
    policy = tiny_qwen2(seed=5)
    trainer = Trainer(policy.model, TrainConfig(gradient_checkpointing=False))
    assert trainer.step([Sample((1, 2), (), (), 1.0)])["tokens"] == 0.0


def test_truncated_importance_sampling_weights_tokens_by_the_capped_ratio() -> None:
    """With the engine's log-probs equal to the trainer's, TIS changes nothing; with every engine
    log-prob lower by ln 3 and a cap of 2, every token's weight is 2: twice the gradient."""
    policy = tiny_qwen2(seed=3)
    with torch.no_grad():
        hidden, targets, _ = completion_hidden(policy.model, samples())
        current = (hidden @ policy.model.get_output_embeddings().weight.T).log_softmax(-1)
        current = current.gather(-1, targets[:, None]).squeeze(-1).tolist()

    def run(shift: float, cap: float) -> tuple[dict, list[torch.Tensor]]:
        position, shifted = 0, []
        for sample in samples():
            n = len(sample.completion_ids)
            old = tuple(lp - shift for lp in current[position : position + n])
            shifted.append(Sample(sample.prompt_ids, sample.completion_ids, old, sample.advantage))
            position += n
        policy.model.zero_grad(set_to_none=True)
        trainer = Trainer(policy.model, TrainConfig(gradient_checkpointing=False, entropy_coef=0.0, tis_cap=cap))
        stats = trainer.accumulate(shifted)
        return stats, [p.grad.clone() for p in policy.model.parameters() if p.grad is not None]

    plain, plain_grads = run(0.0, 0.0)
    same, same_grads = run(0.0, 2.0)
    doubled, doubled_grads = run(float(torch.log(torch.tensor(3.0))), 2.0)
    assert "tis_weight_mean" not in plain
    assert same["tis_weight_mean"] == pytest.approx(1.0, abs=1e-4) and same["tis_truncated"] == 0.0
    assert doubled["tis_weight_mean"] == pytest.approx(2.0) and doubled["tis_truncated"] == pytest.approx(1.0)
    for base, unchanged, twice in zip(plain_grads, same_grads, doubled_grads, strict=True):
        torch.testing.assert_close(unchanged, base, rtol=1e-3, atol=1e-7)
        torch.testing.assert_close(twice, 2 * base, rtol=1e-3, atol=1e-7)
