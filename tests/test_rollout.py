"""`HFEngine` (transformers `generate`): the log-probs it reports are those the trainer computes,
whatever the sampling truncation, and its completions end where they should."""

from __future__ import annotations

import pytest
import torch
from azr.models import tiny_qwen2
from azr.rollout import HFEngine, SamplingParams
from azr.trainer import Sample, completion_hidden

PROMPTS = ["def f(a):\n    return", "Hello world"]


def trainer_logprobs(
    model: torch.nn.Module, prompt_ids: tuple[int, ...], token_ids: tuple[int, ...], temperature: float
) -> torch.Tensor:
    """What the trainer computes for these tokens: softmax(logits / temperature) over the whole
    vocabulary, from the hidden states it trains on."""
    hidden, targets, _ = completion_hidden(model, [Sample(prompt_ids, token_ids, (0.0,) * len(token_ids), 0.0)])
    logits = hidden @ model.get_output_embeddings().weight.T / temperature
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.5), (1.5, 0.9)])
def test_logprobs_are_the_trainers_whatever_the_truncation(temperature: float, top_p: float) -> None:
    policy = tiny_qwen2(seed=0)
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=2)
    torch.manual_seed(0)
    completions = engine.generate(PROMPTS, SamplingParams(10, temperature=temperature, top_p=top_p, stop=()))
    for completion in completions:
        assert len(completion.token_ids) == len(completion.logprobs) == 10
        with torch.no_grad():
            expected = trainer_logprobs(policy.model, completion.prompt_ids, completion.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)


def test_a_stop_string_ends_the_completion_and_its_logprobs() -> None:
    policy = tiny_qwen2(seed=0)
    engine = HFEngine(policy.model, policy.tokenizer)
    torch.manual_seed(1)
    [free] = engine.generate(PROMPTS[:1], SamplingParams(16, stop=()))
    stop = policy.tokenizer.decode(free.token_ids[:3])[-2:]
    torch.manual_seed(1)
    [stopped] = engine.generate(PROMPTS[:1], SamplingParams(16, stop=(stop,)))
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop)
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert len(stopped.logprobs) == len(stopped.token_ids) <= 3


def test_temperature_zero_is_greedy_decoding() -> None:
    policy = tiny_qwen2(seed=3)
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=2)
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop=())
    prompts = ["def f(a):", "x = 1"]
    torch.manual_seed(0)
    first = engine.generate(prompts, params)
    torch.manual_seed(1)
    second = engine.generate(prompts, params)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    # Each token is the argmax of the model's next-token logits.
    completion = first[0]
    ids = torch.tensor([list(completion.prompt_ids) + list(completion.token_ids)])
    with torch.no_grad():
        logits = policy.model(ids).logits[0, len(completion.prompt_ids) - 1 : -1]
    assert logits.argmax(-1).tolist() == list(completion.token_ids)
    with pytest.raises(ValueError, match="or 0 for greedy"):
        SamplingParams(max_new_tokens=4, temperature=-0.5)
