"""The strict-mode memo: a job whose run already happened is answered from that run.

A strict run is a pure function of what the sandbox sees (program, input, imports, policy, time
limit, determinism salt) — every run starts from the same snapshot with the same seeded clocks and
randomness — so a solver check of a program that validation already ran need not run it again.
The memo decides rewards, so the cheats come first: each case is a way an answer could score
without being right if the memo were keyed or filled carelessly. Every case also holds the memo
to what the same jobs give with the memo off.
"""

from __future__ import annotations

import pytest
from azr.executor import Executor, Job

PROGRAM = "def f(xs):\n    return sorted(set(xs))"
INPUT = "[3, 1, 2, 3]"


@pytest.fixture(scope="module")
def memo() -> Executor:
    return Executor(workers=2, timeout_s=1.0)


@pytest.fixture(scope="module")
def plain() -> Executor:
    return Executor(workers=2, timeout_s=1.0, memo_mb=0)


def agree(memo: Executor, plain: Executor, jobs: list[Job]) -> list:
    """Run `jobs` with and without the memo; they must give the same verdicts."""
    remembered, ran = memo.run(jobs), plain.run(jobs)
    verdict = lambda o: (o.status, o.output, o.error, o.matches)  # noqa: E731
    assert [verdict(o) for o in remembered] == [verdict(o) for o in ran]
    return remembered


def hits(executor: Executor) -> int:
    return executor.memo_stats()["hits"]


def test_checks_after_validation_come_from_the_memo_and_each_is_judged(memo: Executor, plain: Executor) -> None:
    [valid] = memo.run([Job(PROGRAM, INPUT, runs=2)])
    assert (valid.status, valid.output) == ("ok", "[1, 2, 3]")
    before = hits(memo)
    answers = ["[1, 2, 3]", "[1,2,3]", "[3, 2, 1]", "(1, 2, 3)", "[1, 2, 3.0]", "f([3, 1, 2, 3])", "[1, 2, 3] or 1"]
    outcomes = agree(memo, plain, [Job(PROGRAM, INPUT, expected=answer) for answer in answers])
    assert hits(memo) - before == len(answers)
    # A wrong answer after a right one is judged on its own; code is not an answer.
    assert [o.matches for o in outcomes] == [True, True, False, False, False, False, False]
    assert all(o.output == "[1, 2, 3]" for o in outcomes)


def test_a_job_that_differs_in_anything_the_sandbox_sees_is_run(memo: Executor, plain: Executor) -> None:
    program = "def f(n):\n    import random\n    return n + 1"
    [evaluated] = memo.run([Job(program, "1", policy="evaluation")])
    assert evaluated.status == "ok"
    before = hits(memo)
    variants = [
        Job(program, "1"),  # another policy: the import is forbidden in self-play
        Job(program, "2", policy="evaluation"),  # another input
        Job(program, " 1", policy="evaluation"),  # another text of the same input
        Job(program + "\n", "1", policy="evaluation"),  # another program text
        Job(program, "1", imports="import math", policy="evaluation"),  # imports run first
        Job(program, "1", policy="evaluation", timeout_s=0.5),  # another time limit
    ]
    outcomes = agree(memo, plain, variants)
    assert hits(memo) == before
    assert outcomes[0].status == "forbidden"


def test_more_agreeing_runs_than_are_known_are_run(memo: Executor) -> None:
    program = "def f(a):\n    return object()"
    [once] = memo.run([Job(program, "1")])
    assert once.status == "ok"
    before = hits(memo)
    [twice] = memo.run([Job(program, "1", runs=2)])
    assert hits(memo) == before, "one known run cannot vouch for two"
    assert twice.status == "nondeterministic", twice
    # What two runs settled, one run may take from the memo (the first run is the same run).
    [again] = memo.run([Job(PROGRAM, "[5]", runs=3)])
    [fewer] = memo.run([Job(PROGRAM, "[5]", runs=2, expected="[5]")])
    assert (again.status, fewer.matches) == ("ok", True)
    assert hits(memo) == before + 1


def test_what_is_not_a_pure_result_is_never_remembered(memo: Executor, plain: Executor) -> None:
    spinner = "def f(a):\n    while True:\n        a += 1"
    nondeterministic = "def f(a):\n    return repr(object())"
    first = memo.run([Job(spinner, "1"), Job(nondeterministic, "1", runs=2)])
    assert [o.status for o in first] == ["timeout", "nondeterministic"]
    before = hits(memo)
    again = memo.run([Job(spinner, "1"), Job(nondeterministic, "1", expected="'x'")])
    assert hits(memo) == before
    assert again[0].status == "timeout" and again[0].elapsed_s >= 1.0
    # It ran again: an address in its result is whatever this run's heap gave (a worker that
    # compiled the program before loads its code, and lays out the heap a little differently).
    assert again[1].status == "ok" and again[1].matches is False and "object at 0x" in (again[1].output or "")


def test_a_program_that_changes_itself_does_not_change_later_answers(memo: Executor, plain: Executor) -> None:
    # Its first run mutates its own globals, defaults and code; a fresh run never sees that, and
    # neither does an answer from the memo.
    program = "\n".join(
        [
            "count = [0]",
            "def f(a, seen=[]):",
            "    seen.append(a)",
            "    count[0] += 1",
            "    return len(seen) + count[0]",
        ]
    )
    outcomes = agree(memo, plain, [Job(program, "1", runs=2)] + [Job(program, "1", expected="2")] * 3)
    assert [o.output for o in outcomes] == ["2"] * 4
    assert [o.matches for o in outcomes[1:]] == [True] * 3


def test_an_unreadable_expected_value_matches_nothing(memo: Executor, plain: Executor) -> None:
    memo.run([Job(PROGRAM, INPUT)])
    deep = "[" * 100000 + "]" * 100000
    outcomes = agree(memo, plain, [Job(PROGRAM, INPUT, expected=deep), Job(PROGRAM, INPUT, expected="[1, 2, 3]")])
    assert [o.matches for o in outcomes] == [False, True]


def test_batch_mode_and_a_memo_of_zero_never_remember(plain: Executor) -> None:
    batch = Executor(workers=1, timeout_s=1.0, mode="batch")
    for executor in (batch, plain):
        executor.run([Job(PROGRAM, INPUT)] * 3)
        assert executor.memo_stats()["hits"] == 0


def test_the_memo_stays_within_its_budget() -> None:
    executor = Executor(workers=1, timeout_s=1.0, memo_mb=1)
    big = "def f(n):\n    return 'x' * n"
    executor.run([Job(big, str(60_000 + i)) for i in range(40)])
    stats = executor.memo_stats()
    assert 0 < stats["bytes"] <= 1 << 20
    assert stats["entries"] < 40
    # The newest results are the ones kept.
    [last] = executor.run([Job(big, str(60_000 + 39))])
    assert executor.memo_stats()["hits"] == 1 and last.output == repr("x" * 60_039)


def test_a_program_that_poisons_its_cached_code_does_not_change_later_runs() -> None:
    """Strict mode keeps a program's compiled code per worker (compiled once, in a fresh instance,
    before it ran) and later runs load it. A program whose runs mutate its globals, defaults and
    function objects still gives every later run — another input, another determinism run — what a
    fresh process gives."""
    program = "\n".join(
        [
            "count = [0]",
            "def helper():",
            "    return 1",
            "def f(a, seen=[]):",
            "    global helper",
            "    seen.append(a)",
            "    count[0] += 1",
            "    helper = lambda: 100",
            "    return (len(seen), count[0], helper(), a)",
        ]
    )
    jobs = [Job(program, str(n), runs=2) for n in range(4)] + [Job(program, "1", expected="(1, 1, 100, 1)")]
    warm = Executor(workers=1, timeout_s=1.0, memo_mb=0)
    warm.run([Job(program, "0")])  # its code is now in the worker's cache
    outcomes = warm.run(jobs)
    assert [o.output for o in outcomes[:4]] == [f"(1, 1, 100, {n})" for n in range(4)]
    assert outcomes[4].matches is True
    fresh = Executor(workers=1, timeout_s=1.0, memo_mb=0, isolation="thread")
    assert [(o.status, o.output, o.matches) for o in fresh.run(jobs)] == [
        (o.status, o.output, o.matches) for o in outcomes
    ]
