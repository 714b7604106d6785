"""The Python contract of the executor (DESIGN §3.4): types, statuses, order, errors."""

from __future__ import annotations

import pytest
from azr.executor import STATUSES, Executor, Job, Outcome

IDENTITY = "def f(a):\n    return a"


def test_identity_triplet(strict: Executor) -> None:
    [outcome] = strict.run([Job(program=IDENTITY, input="'Hello world'", runs=2)])
    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.output, outcome.error) == ("ok", "'Hello world'", None)
    assert outcome.ok and outcome.elapsed_s > 0


def test_outcomes_come_back_in_job_order(strict: Executor, batch: Executor) -> None:
    jobs = [Job(program="def f(n):\n    return n * n", input=str(n)) for n in range(40)]
    for executor in (strict, batch):
        assert [o.output for o in executor.run(jobs)] == [str(n * n) for n in range(40)]


def test_modes_and_isolations_agree(strict: Executor, batch: Executor, threaded: Executor) -> None:
    jobs = [
        Job(IDENTITY, "[1, {'a': (2, 3)}]"),
        Job("def f(s):\n    return sorted(set(s))", "'mississippi'"),
        Job("import math\ndef f(x):\n    return math.isqrt(x)", "10**12 + 7"),
        Job("def f(x):\n    return 1 / x", "0"),
        Job("import os\ndef f(x):\n    return x", "1"),
        Job("def f(x:\n    return x", "1"),
        Job("class A:\n    def __init__(self, v):\n        self.v = v\ndef f(v):\n    return A(v).v + 1", "41"),
    ]
    verdicts = [[(o.status, o.output, o.error) for o in executor.run(jobs)] for executor in (strict, batch, threaded)]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert [v[0] for v in verdicts[0]] == ["ok", "ok", "ok", "error", "forbidden", "syntax", "ok"]
    assert verdicts[0][3][2] == "ZeroDivisionError: division by zero"


def test_every_status_is_one_of_the_contract(strict: Executor) -> None:
    outcomes = strict.run([Job(IDENTITY, "1"), Job("def f(a):\n    while True:\n        pass", "1")])
    assert {o.status for o in outcomes} <= set(STATUSES)
    assert outcomes[1].status == "timeout" and outcomes[1].output is None


def test_imports_are_run_before_the_program(strict: Executor) -> None:
    program = "def f(xs):\n    return Counter(xs).most_common(1)"
    as_list = Job(program, "'abca'", imports=["from collections import Counter"])
    as_text = Job(program, "'abca'", imports="from collections import Counter")
    assert as_list.imports == as_text.imports
    assert [o.output for o in strict.run([as_list, as_text])] == ["[('a', 2)]"] * 2


def test_expected_is_compared_by_value_in_the_programs_namespace(strict: Executor) -> None:
    program = "class P:\n    def __init__(self, x):\n        self.x = x\n    def __eq__(self, o):\n        return self.x == o.x\n"
    program += "def f(x):\n    return (P(x), {3, 1, 2})"
    good, bad = strict.run(
        [Job(program, "5", expected="(P(5), {1, 2, 3})"), Job(program, "5", expected="(P(6), {1, 2, 3})")]
    )
    assert (good.status, good.matches) == ("ok", True)
    assert (bad.status, bad.matches) == ("ok", False)
    [plain] = strict.run([Job(IDENTITY, "1")])
    assert plain.matches is None


def test_equal_compares_values_not_text(strict: Executor) -> None:
    assert strict.equal("[1, 2]", "[1,2]")
    assert strict.equal("{'b': 1, 'a': 2}", "{'a': 2, 'b': 1}")
    assert strict.equal("{3, 1, 2}", "{1, 2, 3}")
    assert strict.equal("(1,)", "(1, )")
    assert not strict.equal("[1, 2]", "[2, 1]")
    assert not strict.equal("1", "'1'")
    assert strict.equal("Counter({'a': 2})", "Counter({'a': 2})")
    # Reprs that are not expressions still match themselves, and only themselves.
    assert strict.equal("<__azr__.A object at 0x1234>", "<__azr__.A object at 0x1234>")
    assert not strict.equal("<__azr__.A object at 0x1234>", "<__azr__.A object at 0x9999>")
    # An answer that tries to run something is not evaluated.
    assert not strict.equal("__import__('os').getcwd()", "'/'")
    assert strict.equal_many([("1", "1.0"), ("True", "1"), ("[]", "()")]) == [True, True, False]


def test_equal_survives_an_answer_that_never_finishes(strict: Executor) -> None:
    assert not strict.equal("[x for x in iter(int, 1)]", "[]")
    assert strict.equal("2", "2")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be between 1 and"),
        ({"workers": 2.5}, TypeError, "workers must be an int"),
        ({"timeout_s": 0}, ValueError, "timeout_s must be a number of seconds"),
        ({"timeout_s": "5"}, TypeError, "timeout_s must be a number"),
        ({"memory_mb": 8}, ValueError, "memory_mb must be between 64"),
        ({"mode": "fast"}, ValueError, "mode must be one of"),
        ({"isolation": "vm"}, ValueError, "isolation must be one of"),
        ({"max_output_bytes": 0}, ValueError, "max_output_bytes must be between"),
    ],
)
def test_bad_settings_are_refused_clearly(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Executor(**kwargs)


def test_bad_jobs_are_refused_clearly(strict: Executor) -> None:
    with pytest.raises(TypeError, match=r"Job\.program must be a str"):
        Job(program=b"def f(a): return a", input="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Job\.runs must be between 1 and 16"):
        Job(IDENTITY, "1", runs=17)
    with pytest.raises(TypeError, match=r"jobs\[1\] is a dict"):
        strict.run([Job(IDENTITY, "1"), {"program": IDENTITY, "input": "1"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a tuple of two str"):
        strict.equal_many([("1", 1)])  # type: ignore[list-item]


def test_empty_batch_and_progress(strict: Executor) -> None:
    assert strict.run([]) == []
    seen: list[tuple[int, int]] = []
    strict.run([Job(IDENTITY, str(i)) for i in range(10)], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10)
    assert all(total == 10 for _, total in seen)


def test_a_failing_progress_callback_stops_the_batch(strict: Executor) -> None:
    def explode(done: int, total: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        strict.run([Job("def f(a):\n    return sum(range(10**6))", "1") for _ in range(20)], progress=explode)
    # The executor is still usable afterwards.
    assert strict.run([Job(IDENTITY, "3")])[0].output == "3"
