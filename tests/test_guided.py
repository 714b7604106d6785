"""Format-guided decoding: the grammar against the parser (both directions), guided generation with
the HF engine, the constrained log-probs the trainer recomputes, and a guided self-play step."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from azr.config import load_config
from azr.executor import Executor
from azr.guided import Grammars, task_role_regex
from azr.models import Policy, tiny_qwen2
from azr.parsing import parse_induction_proposal, parse_proposal, parse_solution
from azr.prompts import propose_triplet_prompt, solve_deduction_prompt
from azr.rollout import Completion, HFEngine, SamplingParams
from azr.selfplay import SelfPlay
from azr.tasks import TASK_ROLES, Role, TaskType, Triplet
from azr.trainer import Sample, TrainConfig, Trainer, completion_hidden, grammar_masks
from azr_kernels import token_logprobs
from azr_kernels.types import allowed_tokens

from .scripted import mixed_policy

INPUTS = 3
TRIPLET = Triplet("def f(a):\n    return sorted(a)[::-1]", "[3, 1, 2]", "[3, 2, 1]")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return tiny_qwen2(seed=0)


@pytest.fixture(scope="module")
def grammars(policy: Policy) -> Grammars:
    return Grammars(policy.tokenizer, policy.model.get_output_embeddings().weight.shape[0])


def formatted(role: Role, task: TaskType, text: str) -> bool:
    if role is Role.SOLVE:
        return parse_solution(task, text).formatted
    if task is TaskType.INDUCTION:
        parsed = parse_induction_proposal(text, INPUTS)
        return parsed.formatted and len(parsed.value.inputs) == INPUTS
    return parse_proposal(text).formatted


def accepts(grammars: Grammars, regex: str, text: str) -> bool:
    import xgrammar

    matcher = xgrammar.GrammarMatcher(grammars.compiled(regex))
    return matcher.accept_string(text) and matcher.is_completed()


def scripted_prompt(role: Role, task: TaskType) -> str:
    """A prompt the scripted policy recognises as the task-role's."""
    if role is Role.PROPOSE and task is TaskType.INDUCTION:
        return "inputs for the program below"
    if role is Role.PROPOSE:
        return "working backwards from the" if task is TaskType.ABDUCTION else "a new program"
    if task is TaskType.DEDUCTION:
        return f"work out the output of the program\n```python\n{TRIPLET.program}\n```\n```input\n{TRIPLET.input}\n```"
    if task is TaskType.ABDUCTION:
        return f"find an input for which\n```python\n{TRIPLET.program}\n```\n```output\n{TRIPLET.output}\n```"
    return "write the function `f`"


def test_the_grammar_accepts_the_projects_formatted_completions_and_rejects_the_others(grammars: Grammars) -> None:
    write = mixed_policy(INPUTS)
    seen = {True: 0, False: 0}
    for role, task in TASK_ROLES:
        regex = task_role_regex(role, task, INPUTS, 1024)
        for _ in range(6):
            text = write(scripted_prompt(role, task))
            parsed = formatted(role, task, text)
            assert accepts(grammars, regex, text) == parsed, (role, task, text)
            seen[parsed] += 1
    assert seen[True] and seen[False]


def test_no_body_can_end_the_answer_or_its_fence_early(grammars: Grammars) -> None:
    """A body holding `</answer>` would end the parser's answer inside it; one holding a fence, the
    block. The grammar accepts neither, though both are printable ASCII."""
    regex = task_role_regex(Role.SOLVE, TaskType.ABDUCTION, INPUTS, 1024)
    good = "ok</think>\n<answer>\n```input\n'a'\n```\n</answer>"
    assert accepts(grammars, regex, good) and formatted(Role.SOLVE, TaskType.ABDUCTION, good)
    for body in ("'</answer>'", "'```'", "1 < 2"):
        text = good.replace("'a'", body)
        assert not accepts(grammars, regex, text), text


def sample_from_grammar(grammars: Grammars, regex: str, rng: random.Random) -> str:
    """A random walk through the grammar over the tokenizer's vocabulary, uniform over allowed tokens."""
    import xgrammar

    matcher = xgrammar.GrammarMatcher(grammars.compiled(regex))
    bitmask = xgrammar.allocate_token_bitmask(1, grammars.vocab_size)
    text = []
    while not matcher.is_completed():
        matcher.fill_next_token_bitmask(bitmask)
        allowed = allowed_tokens(bitmask, grammars.vocab_size)[0].nonzero().flatten().tolist()
        token = rng.choice(allowed)
        assert matcher.accept_token(token)
        text.append(token)
    return grammars.tokenizer.decode(text)


def test_the_parser_accepts_what_the_grammar_generates(grammars: Grammars) -> None:
    rng = random.Random(0)
    for index in range(200):
        role, task = TASK_ROLES[index % len(TASK_ROLES)]
        text = sample_from_grammar(grammars, task_role_regex(role, task, INPUTS, 150), rng)
        assert formatted(role, task, text), (role, task, text)


def test_budgets_too_small_for_the_format_and_missing_guides_are_refused(policy: Policy) -> None:
    with pytest.raises(ValueError, match="needs at least"):
        task_role_regex(Role.PROPOSE, TaskType.INDUCTION, 10, 100)
    engine = HFEngine(policy.model, policy.tokenizer)
    with pytest.raises(ValueError, match="1 guides for 2 prompts: give one per prompt"):
        engine.generate(["a", "b"], SamplingParams(4), guides=[task_role_regex(Role.SOLVE, TaskType.DEDUCTION, 1, 60)])


def guided_completions(policy: Policy, budget: int = 90) -> list[Completion]:
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=4)
    prompts = [propose_triplet_prompt(TaskType.DEDUCTION, [TRIPLET])] * 3 + [solve_deduction_prompt(TRIPLET)] * 3
    guides = [task_role_regex(Role.PROPOSE, TaskType.DEDUCTION, INPUTS, budget)] * 3
    guides += [task_role_regex(Role.SOLVE, TaskType.DEDUCTION, INPUTS, budget)] * 3
    torch.manual_seed(0)
    return engine.generate(prompts, SamplingParams(budget), guides=guides)


def test_hf_guided_completions_are_formatted_and_their_logprobs_are_the_trainers(
    policy: Policy, grammars: Grammars
) -> None:
    completions = guided_completions(policy)
    for index, completion in enumerate(completions):
        role = Role.PROPOSE if index < 3 else Role.SOLVE
        assert completion.finish_reason == "stop" and formatted(role, TaskType.DEDUCTION, completion.text)
        sample = Sample(completion.prompt_ids, completion.token_ids, completion.logprobs, 1.0, completion.guide)
        with torch.no_grad():
            hidden, targets, _ = completion_hidden(policy.model, [sample])
            head = policy.model.get_output_embeddings().weight
            trainer, _ = token_logprobs(hidden, head, targets, allowed=grammar_masks(grammars)([sample]))
            free, _ = token_logprobs(hidden, head, targets)
        torch.testing.assert_close(trainer, torch.tensor(completion.logprobs), atol=1e-4, rtol=0)
        # Where the format leaves one choice (the end of sequence after the answer, among others) the
        # token has probability 1 under the grammar, whatever the model.
        assert (trainer > -1e-6).sum() >= 3 and (free < trainer - 1e-3).any()


def test_the_update_on_guided_samples_is_on_policy(policy: Policy, grammars: Grammars) -> None:
    """With the grammar's masks the trainer's ratio to the engine's log-probs is exactly 1 before the
    step; computed over the whole vocabulary instead, it would not be."""
    completions = guided_completions(policy)
    samples = [Sample(c.prompt_ids, c.token_ids, c.logprobs, 1.0 - i % 2, c.guide) for i, c in enumerate(completions)]
    model = tiny_qwen2(seed=0).model
    masked = Trainer(model, TrainConfig(lr=0.0, gradient_checkpointing=False), tokenizer=grammars.tokenizer)
    stats = masked.accumulate(samples)
    assert stats["ratio_max"] == pytest.approx(1.0, abs=1e-4) and stats["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    unguided = [dataclasses.replace(s, guide=None) for s in samples]
    assert masked.accumulate(unguided)["ratio_mean"] < 0.99
    with pytest.raises(ValueError, match="need a trainer made with the tokenizer"):
        Trainer(model, TrainConfig(lr=0.0, gradient_checkpointing=False)).accumulate(samples)


@pytest.mark.slow
def test_a_guided_step_with_the_hf_engine_has_no_format_errors(tmp_path: Path) -> None:
    config = dataclasses.replace(load_config("smoke"), model="tiny-qwen2", rollout_engine="hf", lr=1e-3)
    run = SelfPlay(config, tmp_path, executor=Executor(timeout_s=5.0, mode="batch"), progress=False)
    run.run(1)
    [row] = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    errors = {name: value for name, value in row.items() if name.startswith("format_error/")}
    assert len(errors) == 6 and not any(errors.values()), errors
    assert torch.isfinite(torch.tensor(row["train/loss"])) and row["train/ratio_max"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_two_trainer_workers_make_the_single_process_update_on_guided_samples(policy: Policy) -> None:
    from azr.trainer_group import TrainerGroup

    samples = [
        Sample(c.prompt_ids, c.token_ids, c.logprobs, 1.5 - i % 3, c.guide)
        for i, c in enumerate(guided_completions(policy))
    ]
    train = TrainConfig(lr=1e-3, micro_batch_tokens=512, gradient_checkpointing=False)
    config = dataclasses.replace(load_config("smoke"), model="tiny-qwen2", seed=0, trainer_workers=2)
    single = tiny_qwen2(seed=0).model
    expected = Trainer(single, train, tokenizer=policy.tokenizer).step(samples)
    trainers = TrainerGroup.start(config, train, checkpoint=None, last_checkpoint=lambda: "none yet")
    try:
        stats = trainers.step(samples)
        updated = tiny_qwen2(seed=99).model
        trainers.publish(updated)
    finally:
        trainers.shutdown()
    assert stats["ratio_max"] == pytest.approx(1.0, abs=1e-4)
    for name in ("loss", "entropy", "ratio_mean"):
        assert stats[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    whole = torch.cat([p.detach().flatten() for p in single.parameters()])
    sharded = torch.cat([p.detach().flatten() for p in updated.parameters()])
    assert float((whole - sharded).norm() / whole.norm()) <= 1e-5
