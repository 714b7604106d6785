"""Rollout replicas on Ray actors (`azr.fleet`), on a local Ray with the tiny model: every prompt
answered exactly once, by load, on every replica; weights that reach every replica, a restarted one
included; a replica killed mid-phase loses nothing; a self-play step with 2 replicas and 2 trainer
workers end to end, its completions checked where they were generated."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')

from azr.config import load_config
from azr.executor import Executor
from azr.fleet import RolloutFleet, RolloutReplica
from azr.models import tiny_qwen2
from azr.phases import PhaseTimes, Rollout, check_answer
from azr.rollout import HFEngine, SamplingParams
from azr.selfplay import SelfPlay
from azr.sync_check import Probe, StaleWeightsError, probe_ids, sequence_logprobs
from azr.tasks import IDENTITY_TRIPLET, Role, TaskType

CONFIG = dataclasses.replace(
    load_config("smoke"), model="tiny-qwen2", seed=5, rollout_replicas=2, generation_batch_size=2
)
PROMPTS = [f"def f(x):\n    return x * {i}" + " " * (i % 5) * 40 for i in range(10)]
GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


@pytest.fixture
def fleet():
    fleet = RolloutFleet.start(dataclasses.replace(CONFIG, generation_batch_size=1))
    yield fleet
    fleet.shutdown()


def reference(model: torch.nn.Module, prompts: list[str]) -> list[tuple[int, ...]]:
    """Greedy completions of `model`, one prompt at a time (no padding), in this process."""
    policy = tiny_qwen2(seed=CONFIG.seed)
    policy.model.load_state_dict(model.state_dict())
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=1)
    return [c.token_ids for c in engine.generate(prompts, GREEDY)]


def test_every_prompt_is_answered_once_and_every_replica_works(fleet: RolloutFleet) -> None:
    fleet.take_stats()
    seen: list[int] = []
    completions = fleet.generate(PROMPTS, GREEDY, on_completion=lambda index, _: seen.append(index))
    assert sorted(seen) == list(range(len(PROMPTS)))
    tokenizer = tiny_qwen2(seed=0).tokenizer
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        assert completion.prompt_ids == tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    stats = fleet.take_stats()
    assert [s.requests for s in stats] != [len(PROMPTS), 0] and all(s.requests > 0 for s in stats), stats
    assert sum(s.requests for s in stats) == len(PROMPTS)
    # The replicas sample what the same weights sample in this process.
    assert [c.token_ids for c in completions] == reference(tiny_qwen2(seed=CONFIG.seed).model, PROMPTS)


def test_follow_ups_are_dispatched_as_verdicts_come_in(fleet: RolloutFleet) -> None:
    """No barrier between rollouts and what their verdicts call for: a rollout's follow-ups are
    asked for as its verdict arrives, while the others still generate, and go out in the same call;
    every rollout, follow-ups included, is answered once, each checked on its replica."""
    first = [Rollout(Role.SOLVE, TaskType.DEDUCTION, p, subject=IDENTITY_TRIPLET) for p in PROMPTS]
    unanswered_at_follow_up: list[int] = []

    def follow_up(rollout: Rollout) -> list[Rollout]:
        if not any(rollout is r for r in first):
            return []
        unanswered_at_follow_up.append(sum(r.completion is None for r in first))
        return [Rollout(Role.SOLVE, TaskType.DEDUCTION, rollout.prompt + " #", subject=IDENTITY_TRIPLET)]

    fleet.take_stats()
    seen: list[int] = []
    fleet.generate_and_check(
        first, GREEDY, check_answer, on_completion=lambda index, _: seen.append(index), follow_up=follow_up
    )
    assert sorted(seen) == list(range(2 * len(PROMPTS))), "every rollout answered exactly once"
    assert sum(s.requests for s in fleet.take_stats()) == 2 * len(PROMPTS)
    assert unanswered_at_follow_up[0] == len(PROMPTS) - 1, "the first verdict's follow-up did not wait"
    assert all(r.completion is not None and r.parsed is not None for r in first)


def test_a_call_submitted_during_another_fills_its_tail(fleet: RolloutFleet) -> None:
    """Calls overlap: `on_drained` is asked once nothing of the first call is left to dispatch, and
    the call it submits goes out to the replicas while the first one's last chunks still run; both
    are answered once each, as the same weights answer them in this process."""
    first = [Rollout(Role.SOLVE, TaskType.DEDUCTION, p, subject=IDENTITY_TRIPLET) for p in PROMPTS[:6]]
    second = [Rollout(Role.SOLVE, TaskType.DEDUCTION, p + " #", subject=IDENTITY_TRIPLET) for p in PROMPTS[:6]]
    opened = []

    def open_second() -> bool:
        assert not fleet.queue, "asked while the first call still had work to dispatch"
        if opened:
            return False
        opened.append(fleet.submit_and_check(second, GREEDY, check_answer))
        return True

    fleet.take_stats()
    fleet.finish(fleet.submit_and_check(first, GREEDY, check_answer), on_drained=open_second)
    [call] = opened
    assert all(r.completion is not None for r in first)
    # The second call's chunks went out before the first call ended.
    assert call.done > 0 or any(chunk.call is call for chunk in fleet.running.values()), call
    fleet.finish(call)
    assert not fleet.queue and not fleet.running
    assert sum(s.requests for s in fleet.take_stats()) == len(first + second), "every rollout answered once"
    expected = reference(tiny_qwen2(seed=CONFIG.seed).model, [r.prompt for r in first + second])
    assert [r.completion.token_ids for r in first + second] == expected


def test_new_weights_reach_every_replica_a_restarted_one_too(fleet: RolloutFleet) -> None:
    import ray

    updated = tiny_qwen2(seed=77).model
    fleet.sync_weights(updated)
    expected = reference(updated, PROMPTS)
    assert [c.token_ids for c in fleet.generate(PROMPTS, GREEDY)] == expected
    killed = False

    def kill_once(index: int, _completion) -> None:
        nonlocal killed
        if not killed:  # mid-phase: replica 0 dies with work in hand
            killed = True
            ray.kill(fleet.replicas[0].actor, no_restart=False)

    fleet.take_stats()
    seen: list[int] = []

    def track(index: int, completion) -> None:
        seen.append(index)
        kill_once(index, completion)

    completions = fleet.generate(PROMPTS, GREEDY, on_completion=track)
    assert sorted(seen) == list(range(len(PROMPTS))), "every prompt answered exactly once"
    stats = fleet.take_stats()
    assert stats[0].restarts >= 1 and sum(s.requests for s in stats) == len(PROMPTS)
    # What the restarted replica answered comes from the synced weights, not its fresh load.
    assert [c.token_ids for c in completions] == expected
    assert [c.token_ids for c in fleet.generate(PROMPTS, GREEDY)] == expected


def test_a_replica_restarted_between_calls_gets_the_weights_before_it_samples(fleet: RolloutFleet) -> None:
    """A replica killed and back before the fleet sends it anything is noticed by its answer (its
    fresh load is no policy version): that chunk goes back to the queue, the replica gets the
    current weights first, and every completion comes from them."""
    updated = tiny_qwen2(seed=77).model
    fleet.sync_weights(updated)
    expected = reference(updated, PROMPTS)
    kill_and_wait_for_restart(fleet.replicas[0].actor)
    fleet.take_stats()
    completions = fleet.generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in completions] == expected
    assert {c.version for c in completions} == {0}
    stats = fleet.take_stats()
    assert stats[0].restarts == 1 and stats[0].requests > 0, stats


def test_a_replica_refuses_weights_that_fail_the_stale_sync_check() -> None:
    """With the check on, every version carries the trainer's log-probs of a fixed sequence; a
    replica whose weights give others (a stale or partial sync) refuses to generate, naming itself."""
    ids = probe_ids(tiny_qwen2(seed=0).tokenizer)
    fleet = RolloutFleet.start(dataclasses.replace(CONFIG, generation_batch_size=1), probe_ids=ids)
    try:
        updated = tiny_qwen2(seed=77).model
        fleet.sync_weights(updated)  # checked on every replica: it passes
        assert [c.token_ids for c in fleet.generate(PROMPTS, GREEDY)] == reference(updated, PROMPTS)
        stale = tiny_qwen2(seed=CONFIG.seed).model
        fleet.publish(stale.state_dict().items(), 2, Probe.of(updated, ids))
        with pytest.raises(StaleWeightsError, match=r"rollout replica \d, policy version 2: .* stale or partly"):
            fleet.generate(PROMPTS, GREEDY)
    finally:
        fleet.shutdown()


class CountingExecutor(Executor):
    """The driver's executor, counting the jobs it is given."""

    jobs = 0

    def run(self, jobs, **kwargs):
        jobs = list(jobs)
        CountingExecutor.jobs += len(jobs)
        return super().run(jobs, **kwargs)


def test_a_self_play_step_with_two_replicas_and_two_trainer_workers(tmp_path) -> None:
    """Both replicas generate, and every completion is checked on the replica that generated it:
    the driver's executor runs nothing."""
    config = dataclasses.replace(CONFIG, trainer_workers=2, lr=1e-3)
    run = SelfPlay(config, tmp_path / "run", executor=CountingExecutor(workers=1), progress=False)
    try:
        metrics = run.step()
    finally:
        run.trainer.shutdown()
        run.engine.shutdown()
    requests = [metrics[f"rollout/replica{i}_requests"] for i in range(2)]
    assert all(r > 0 for r in requests), metrics
    # Every trained rollout was generated by a replica (and learnability samples besides).
    assert sum(requests) >= sum(v for k, v in metrics.items() if k.startswith("count/")) > 0
    assert metrics["train/trainer_workers"] == 2.0
    assert metrics["executor/checked_on_replicas"] > 0 and CountingExecutor.jobs == 0


class ProbedReplica(RolloutReplica):
    """A replica that tells its log-probs of a sequence, to compare its weights with the trainer's."""

    def logprobs(self, token_ids: tuple[int, ...]) -> torch.Tensor:
        return self.engine.probe_logprobs(token_ids)


def kill_and_wait_for_restart(actor) -> str:
    """Kill `actor` (Ray restarts it); the identity of its new process once it is back."""
    import ray

    before = ray.get(actor.identity.remote())
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            process = ray.get(actor.identity.remote())
            if process != before:
                return process
        except ray.exceptions.RayActorError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the killed replica did not come back in 120 s")


def test_broadcast_sends_the_trainer_ranks_weights_straight_to_every_replica(tmp_path) -> None:
    """weight_transport=broadcast: after each update every replica's (and the driver's) log-probs of
    a fixed sequence equal the trainer group's, the stale-sync check passing on each; the step's
    timeline has each replica's and each rank's spans (a span per bucket sent); a replica killed
    between syncs comes back with the driver's copy of the weights, and the next sync forms the
    groups again, with its new process."""
    import ray
    from azr.timeline import read_step
    from azr.trainer import load_weights

    config = dataclasses.replace(CONFIG, trainer_workers=2, lr=1e-3, weight_transport="broadcast", vllm_check_sync=True)
    ids = probe_ids(tiny_qwen2(seed=0).tokenizer)
    fleet = RolloutFleet.start(config, replica=ProbedReplica, probe_ids=ids)
    run = SelfPlay(config, tmp_path / "run", executor=Executor(workers=1), engine=fleet, progress=False)

    def trainers_logprobs(name: str) -> torch.Tensor:
        run.trainer.save(tmp_path / name)
        model = tiny_qwen2(seed=CONFIG.seed).model
        load_weights(model, tmp_path / name)
        return sequence_logprobs(model, ids)

    try:
        initial = sequence_logprobs(run.policy.model, ids)
        for step in (1, 2):
            if step == 2:  # replica 0 dies and is back before the step: the fleet learns it from its answer
                restarted = kill_and_wait_for_restart(fleet.replicas[0].actor)
            metrics = run.step()
            # Every sample came from the version its update started from: the restarted replica
            # sampled from the driver's copy of version 1, not from its fresh load.
            assert {v for k, v in metrics.items() if k.startswith("lag/")} == {0.0}, metrics
            trained = trainers_logprobs(f"step{step}")
            assert not torch.allclose(trained, initial)  # the update moved the weights
            torch.testing.assert_close(sequence_logprobs(run.policy.model, ids), trained, rtol=0, atol=1e-6)
            for replica in fleet.replicas:
                torch.testing.assert_close(ray.get(replica.actor.logprobs.remote(ids)), trained, rtol=0, atol=1e-6)
            assert fleet.version == run.version == step and all(r.version == step for r in fleet.replicas)
            initial = trained
            if step == 1:  # every actor's spans in the step's timeline: the sync per bucket on each rank
                _, spans = read_step(tmp_path / "run" / "timeline.jsonl", step=1)
                names = {(s.actor, s.name) for s in spans}
                for replica in ("replica 0", "replica 1"):
                    assert {(replica, "receive v1")} <= names
                    assert {name.split()[0] for actor, name in names if actor == replica} >= {"generate", "verify"}
                for rank in ("trainer 0", "trainer 1"):
                    buckets = [s for s in spans if s.actor == rank and s.name.startswith("sync bucket")]
                    assert buckets and all(s.args["version"] == 1 and s.args["bytes"] > 0 for s in buckets)
        assert metrics["rollout/replica0_restarts"] == 1 and metrics["rollout/replica0_requests"] > 0
        assert run.trainer.epoch == 2 and ray.get(fleet.replicas[0].actor.identity.remote()) == restarted
        # A received version is loaded before the replica's next call (its span in that step or the
        # next); replica 0, back from the dead, loaded the driver's copy of version 1 in step 2.
        timeline = tmp_path / "run" / "timeline.jsonl"
        steps = [{(s.actor, s.name) for s in read_step(timeline, step=n)[1]} for n in (1, 2)]
        assert ("replica 1", "load v1") in steps[0] | steps[1] and ("replica 0", "load v1") in steps[1]
    finally:
        run.trainer.shutdown()
        fleet.shutdown()


# While this file exists, the first replica to receive weights takes it away and dies mid-transfer.
DIE_MARKER = Path(tempfile.gettempdir()) / f"azr-test-die-in-transfer-{os.getuid()}"


def _take_marker() -> bool:
    try:
        DIE_MARKER.unlink()
    except FileNotFoundError:
        return False
    return True


class DiesReceiving(ProbedReplica):
    """A replica that, when `DIE_MARKER` exists, removes it, takes the first message of a
    broadcast and dies (its process exits, as on an OOM kill); Ray restarts it."""

    def receive_weights(self, version: int, epoch: int) -> int:
        from azr.weight_transport import _HEADER

        if not _take_marker():
            return super().receive_weights(version, epoch)
        assert self.receiver is not None
        self.receiver.groups[0].broadcast(torch.empty(_HEADER, dtype=torch.int64))
        os._exit(1)


class DiesJoining(ProbedReplica):
    """A replica that, when `DIE_MARKER` exists, removes it and dies instead of joining the
    weight groups: the others wait for it to come (gloo alone would wait 10 minutes)."""

    def join_weights(self, host: str, port: int, member: int, members: int, ranks: int, epoch: int) -> None:
        if _take_marker():
            os._exit(1)
        super().join_weights(host, port, member, members, ranks, epoch)


@pytest.mark.parametrize("replica", [DiesReceiving, DiesJoining], ids=["mid-broadcast", "joining"])
def test_a_replica_dying_in_a_transfer_gets_the_version_in_groups_formed_again(replica: type, tmp_path) -> None:
    """A replica that dies in the middle of a broadcast, or before it joined the groups, fails
    every member's part; the step goes on: the groups are formed again with its restarted process,
    the version is sent again, and every replica ends with the trainer's weights."""
    import ray

    config = dataclasses.replace(CONFIG, trainer_workers=2, lr=1e-3, weight_transport="broadcast", vllm_check_sync=True)
    ids = probe_ids(tiny_qwen2(seed=0).tokenizer)
    fleet = RolloutFleet.start(config, replica=replica, probe_ids=ids)
    run = SelfPlay(config, tmp_path / "run", executor=Executor(workers=1), engine=fleet, progress=False)
    try:
        DIE_MARKER.touch()
        epoch = run.trainer.epoch
        run.step()
        assert not DIE_MARKER.exists(), "a replica took the marker and died in the transfer"
        assert run.trainer.epoch == epoch + 2  # the step's groups, then the ones formed again
        assert sorted(r.stats.restarts for r in fleet.replicas) == [0, 1]
        metrics = run.step()  # the restarted replica samples again, from the version it was sent
        assert {v for k, v in metrics.items() if k.startswith("lag/")} == {0.0}, metrics
        run.trainer.save(tmp_path / "trained")
        model = tiny_qwen2(seed=CONFIG.seed).model
        from azr.trainer import load_weights

        load_weights(model, tmp_path / "trained")
        trained = sequence_logprobs(model, ids)
        for member in fleet.replicas:
            torch.testing.assert_close(ray.get(member.actor.logprobs.remote(ids)), trained, rtol=0, atol=1e-6)
        assert fleet.version == run.version == 2 and all(r.version == 2 for r in fleet.replicas)
    finally:
        DIE_MARKER.unlink(missing_ok=True)
        run.trainer.shutdown()
        fleet.shutdown()


def test_broadcast_needs_trainer_workers_and_replicas() -> None:
    with pytest.raises(ValueError, match="trainer_workers >= 1 and rollout_replicas >= 1"):
        dataclasses.replace(CONFIG, weight_transport="broadcast")
    with pytest.raises(ValueError, match="weight_transport must be 'object-store' or 'broadcast', got 'nccl'"):
        dataclasses.replace(CONFIG, weight_transport="nccl")


def test_one_step_off_trains_each_step_during_the_next_ones_generation(tmp_path) -> None:
    """Samples are trained one step later, while the next step generates: from the third step on
    every trained sample is exactly one policy version old, and the update's span overlaps the
    generation phases in the timeline. A step that drains leaves nothing pending."""
    from azr.timeline import read_step

    config = dataclasses.replace(CONFIG, pipeline="one-step-off", lr=1e-3)
    run = SelfPlay(config, tmp_path / "run", executor=Executor(workers=1), progress=False)
    try:
        first, second, third = run.step(), run.step(), run.step()
        assert not any(k.startswith(("train/", "lag/")) for k in first), "nothing to train yet"
        second_lags = [v for k, v in second.items() if k.startswith("lag/")]
        assert second_lags and set(second_lags) == {0.0}
        lags = {k: v for k, v in third.items() if k.startswith("lag/")}
        assert lags and set(lags.values()) == {1.0}, lags
        assert "train/loss" in third and run.version == 2
        _, spans = read_step(tmp_path / "run" / "timeline.jsonl", step=3)
        driver = {s.name: s for s in spans if s.actor == "driver"}
        train, rollout = driver["train"], driver["rollout"]
        assert train.start < rollout.start + rollout.seconds and rollout.start < train.start + train.seconds
        run.step(drain=True)
        assert run.pending is None and run.version == 4
    finally:
        run.engine.shutdown()


class SlowReplica(RolloutReplica):
    """Replica 1 takes ten times as long as it needs to generate: a straggler."""

    def generate(self, seed, prompts, params, guides):
        started = time.perf_counter()
        answer = super().generate(seed, prompts, params, guides)
        if self.index == 1:
            time.sleep(9 * (time.perf_counter() - started))
        return answer


def test_a_late_chunk_is_backed_up_and_answered_once() -> None:
    """With nothing left to dispatch, a chunk that has run three times as long as chunks usually
    take (the straggler's first, before it is measured) is also given to an idle replica; whichever
    copy answers first is delivered, once, and both sample the same."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica class goes by value
    fleet = RolloutFleet.start(dataclasses.replace(CONFIG, generation_batch_size=1), replica=SlowReplica)
    try:
        seen: list[int] = []
        completions = fleet.generate(PROMPTS, GREEDY, on_completion=lambda index, _: seen.append(index))
        assert sorted(seen) == list(range(len(PROMPTS))), "every prompt answered exactly once"
        fast, slow = fleet.take_stats()
        assert fast.backups >= 1 and slow.backups == 0, (fast, slow)
        assert fast.requests + slow.requests == len(PROMPTS)
        assert [c.token_ids for c in completions] == reference(tiny_qwen2(seed=CONFIG.seed).model, PROMPTS)
    finally:
        fleet.shutdown()


def async_run(tmp_path, replica: type, **settings) -> tuple[SelfPlay, list[tuple[int, list[int]]]]:
    """A self-play run with `pipeline=async, max_staleness=2` (and `settings`) on replicas of class
    `replica`, and the list its updates append (the version each started from, its samples'
    versions) to."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica class goes by value
    # Every version each replica loads, mid-phase included, passes the stale-sync check.
    config = dataclasses.replace(CONFIG, pipeline="async", max_staleness=2, lr=1e-3, vllm_check_sync=True, **settings)
    fleet = RolloutFleet.start(config, replica=replica, probe_ids=probe_ids(tiny_qwen2(seed=0).tokenizer))
    run = SelfPlay(config, tmp_path / "run", executor=Executor(workers=1), engine=fleet, progress=False)
    trained: list[tuple[int, list[int]]] = []
    train = run._train

    def recording(batch, times):
        trained.append((run.version, list(batch.versions)))
        return train(batch, times)

    run._train = recording
    return run, trained


@pytest.mark.parametrize(
    "transport", [{}, {"weight_transport": "broadcast", "trainer_workers": 2}], ids=["object-store", "broadcast"]
)
def test_async_under_a_ten_times_slower_replica(tmp_path, transport: dict) -> None:
    """Generation never waits for training; each update's weights reach the replicas mid-step, so a
    step's samples come from more than one version; none trained is over 2 versions old; the
    straggler gets less work. The same when the weights come from the trainer ranks by broadcast
    (the updater waits for every replica to take them; generation does not)."""
    run, trained = async_run(tmp_path, SlowReplica, **transport)
    try:
        steps = [run.step() for _ in range(3)] + [run.step(drain=True)]
    finally:
        run.engine.shutdown()
        if transport:
            run.trainer.shutdown()
    assert len(trained) == 4 and not run.in_flight and run.version == 4
    lags = [version - sample for version, versions in trained for sample in versions]
    assert lags and 0 <= min(lags) and max(lags) <= 2, trained
    assert max(s.get("lag/max", 0.0) for s in steps) == max(lags)
    assert any(len(set(versions)) > 1 for _, versions in trained), f"no update reached a replica mid-step: {trained}"
    requests = [sum(s[f"rollout/replica{i}_requests"] for s in steps) for i in range(2)]
    backups = [sum(s[f"rollout/replica{i}_backups"] for s in steps) for i in range(2)]
    # The straggler answers less: it is given work only while it would finish first, and what it
    # holds late is copied to the fast replica, which may answer all of it.
    assert requests[1] < requests[0] and (requests[1] > 0 or backups[0] > 0), (requests, backups)


def test_overlapped_steps_open_during_the_last_ones_tail(tmp_path) -> None:
    """overlap_steps: once nothing of a step is left to dispatch and every proposal has its verdict,
    the next step opens and its work runs beside the step's last completions; no trained sample is
    over 2 versions old. A step opens early only while at most max_staleness - 1 updates are
    unfinished, and never before every proposal is settled; a step that drains opens nothing."""
    run, trained = async_run(tmp_path, RolloutReplica, overlap_steps=True)
    generate = run.generate_and_check
    running_at_end: list[int] = []

    def recording(*args, **kwargs) -> None:
        generate(*args, **kwargs)
        if run.next_step is not None:  # what of the next step had gone out when this one's ended
            assert run.next_step.round is not None
            call = run.next_step.round.call
            running_at_end.append(call.done + sum(c.call is call for c in run.engine.running.values()))

    run.generate_and_check = recording
    try:
        steps = [run.step() for _ in range(2)] + [run.step(drain=True)]
        assert run.next_step is None, "a step that drains for a checkpoint opened the next one"
        # The room rule, on the run's own fleet: two unfinished updates (max_staleness=2) keep the
        # next step closed; with one it opens; an unsettled proposal keeps it closed.
        current = run._open_step()
        current.plan.unsettled = 0
        release = threading.Event()
        run.in_flight.extend(run._updater.submit(release.wait) for _ in range(2))
        assert not run._open_next_step(current) and run.next_step is None
        release.set()
        run.in_flight.popleft().result()
        run.in_flight.popleft().result()
        current.plan.unsettled = 1
        assert not run._open_next_step(current) and run.next_step is None
        current.plan.unsettled = 0
        assert run._open_next_step(current) and run.next_step is not None
        run.generate_and_check(run.next_step.round, "rollout", run.check, PhaseTimes())
    finally:
        run.engine.shutdown()
    assert steps[0]["pipeline/opened_early"] == 0
    assert sum(s["pipeline/opened_early"] for s in steps) >= 1, steps
    assert running_at_end and max(running_at_end) > 0, running_at_end
    assert len(trained) == 3 and run.version == 3
    lags = [version - sample for version, versions in trained for sample in versions]
    assert lags and 0 <= min(lags) and max(lags) <= 2, trained
    assert all(r.completion is not None for r in run.next_step.rollouts)


def test_async_waits_for_a_slow_trainer_at_max_staleness(tmp_path) -> None:
    """With updates far slower than generation the run goes ahead by `max_staleness` steps and no
    further: samples reach exactly 2 versions old, never 3, and the driver waits for room."""
    run, trained = async_run(tmp_path, RolloutReplica)
    step = run.trainer.step
    updates, draining = [], threading.Event()

    def slow_step(samples):
        # Step k's update waits until the driver has begun step k + 3, whatever the machine's
        # speed (a fixed sleep let a slow machine's generation keep pace), until the run drains.
        updates.append(samples)
        k = len(updates)
        while run.step_index < k + 3 and not draining.is_set():
            time.sleep(0.05)
        return step(samples)

    run.trainer.step = slow_step
    try:
        steps = [run.step() for _ in range(4)]
        draining.set()
        steps.append(run.step(drain=True))
    finally:
        run.engine.shutdown()
    lags = [version - sample for version, versions in trained for sample in versions]
    assert len(trained) == 5 and max(lags) == 2, trained
    assert sum(s.get("seconds/wait_staleness", 0.0) for s in steps) > 0
    assert steps[-1]["pipeline/in_flight"] == 0 and run.version == 5


def test_async_refuses_a_sample_older_than_max_staleness(tmp_path) -> None:
    from azr.selfplay import Batch, StalenessError

    run, _ = async_run(tmp_path, RolloutReplica)
    try:
        run.version = 5
        with pytest.raises(StalenessError, match="3 versions old"):
            run._train(Batch([], ["x", "y"], [4, 2]), PhaseTimes())
    finally:
        run.engine.shutdown()


def test_pipelines_need_replicas_and_staleness_at_least_one() -> None:
    for pipeline in ("one-step-off", "async"):
        with pytest.raises(ValueError, match="rollout_replicas"):
            dataclasses.replace(load_config("smoke"), pipeline=pipeline)
    with pytest.raises(ValueError, match="max_staleness"):
        dataclasses.replace(CONFIG, pipeline="async", max_staleness=0)
    with pytest.raises(ValueError, match=r"overlap_steps .* needs pipeline=async"):
        dataclasses.replace(CONFIG, pipeline="one-step-off", overlap_steps=True)
