"""The Python contract of the executor (DESIGN §3.4): types, statuses, order, errors."""

from __future__ import annotations

import time
from typing import get_args

import pytest
from azr import _executor
from azr.executor import (
    MODES,
    STATUSES,
    CancelledError,
    Executor,
    ExecutorError,
    ExecutorProtocol,
    GuestError,
    InternalError,
    InvalidJobError,
    Job,
    Outcome,
    RemoteExecutor,
    RemoteExecutorError,
    Status,
)

IDENTITY = "def f(a):\n    return a"


def test_identity_triplet(strict: Executor) -> None:
    # An input no other test runs: the session's executor would answer a repeat from its memo (0 s).
    [outcome] = strict.run([Job(program=IDENTITY, input="'Hello identity'", runs=2)])
    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.output, outcome.error) == ("ok", "'Hello identity'", None)
    assert outcome.ok and outcome.elapsed_s > 0


def test_outcomes_come_back_in_job_order(strict: Executor, batch: Executor) -> None:
    jobs = [Job(program="def f(n):\n    return n * n", input=str(n)) for n in range(40)]
    for executor in (strict, batch):
        assert [o.output for o in executor.run(jobs)] == [str(n * n) for n in range(40)]


def test_batch_groups_hold_about_a_second_of_measured_work() -> None:
    """Batch mode sizes a group by what its jobs were measured to cost (`groups.rs`): once jobs
    are known to be slow, a group holds about a second of them instead of a share of the batch,
    so a worker is not held by one long group and fewer jobs share an instance."""
    executor = Executor(workers=1, mode="batch", timings=True, timeout_s=20.0)
    slow = "def f(n):\n    return sum(i * i for i in range(n))"

    def groups(outcomes: list[Outcome]) -> int:
        # Each group makes one fresh instance, for its first job (these jobs all leave it reusable).
        assert all(o.ok for o in outcomes)
        return sum(1 for o in outcomes if o.timings["instantiate_s"] > 0)

    measured = executor.run([Job(slow, "700000"), Job(slow, "700001")])
    job_s = sum(o.timings["run_s"] + o.timings["expected_s"] for o in measured) / len(measured)
    assert job_s > 0.15, "the jobs must be slow for the budget to matter (balance alone makes 4 groups)"
    jobs = 24
    balanced = jobs // 4  # one worker: a quarter of the batch a group, the rule before any measure
    expected_groups = -(-jobs // min(balanced, max(1, int(1.0 / job_s))))
    assert groups(executor.run([Job(slow, str(700_002 + n)) for n in range(jobs)])) == expected_groups > 4


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


def test_expected_is_judged_as_data_or_by_repr_text(strict: Executor) -> None:
    """Data results compare as data; results that are not data compare by their repr text, which
    their own `__eq__` has no say in."""
    point = "class P:\n    def __init__(self, x):\n        self.x = x\n    def __eq__(self, o):\n        return True\n"
    point += "    def __repr__(self):\n        return f'P({self.x})'\n"
    jobs = [
        Job(point + "def f(x):\n    return (P(x), 1)", "5", expected="(P(5), 1)"),
        Job(point + "def f(x):\n    return (P(x), 1)", "5", expected="(P(6), 1)"),
        Job("def f(x):\n    return {x: [1, 2], 'b': {3, 1}}", "'a'", expected="{'b': {1, 3}, 'a': [1, 2]}"),
        Job("def f(x):\n    return x", "1", expected="1.0"),
        Job("def f(x):\n    return x", "1", expected="True"),
    ]
    assert [(o.status, o.matches) for o in strict.run(jobs)] == [
        ("ok", True),
        ("ok", False),
        ("ok", True),
        ("ok", False),
        ("ok", False),
    ]
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
    # Reprs that are not data still match themselves, and only themselves.
    assert strict.equal("<__azr__.A object at 0x1234>", "<__azr__.A object at 0x1234>")
    assert not strict.equal("<__azr__.A object at 0x1234>", "<__azr__.A object at 0x9999>")
    # An answer that tries to run something is not evaluated: it is text, unequal to data.
    assert not strict.equal("__import__('os').getcwd()", "'/'")
    # Exact types: 1, 1.0 and True are three different values; 0.0 and -0.0 are one.
    pairs = [("1", "1.0"), ("True", "1"), ("[]", "()"), ("-0.0", "0.0")]
    assert strict.equal_many(pairs) == [False, False, False, True]


def test_equal_does_not_run_answers_that_would_never_finish(strict: Executor) -> None:
    started = time.monotonic()
    assert not strict.equal("[x for x in iter(int, 1)]", "[]")
    assert not strict.equal("9 ** 9 ** 9", "0")
    assert not strict.equal("'x' * 10 ** 10", "''")
    assert time.monotonic() - started < 5
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


def test_statuses_limits_and_errors_come_from_the_rust_core() -> None:
    assert STATUSES == _executor.STATUSES and set(get_args(Status)) == set(STATUSES)
    assert "internal" in STATUSES and MODES == _executor.MODES
    assert issubclass(InvalidJobError, ExecutorError) and issubclass(InvalidJobError, ValueError)
    for error in (GuestError, InternalError, CancelledError, RemoteExecutorError):
        assert issubclass(error, ExecutorError) and error.__module__ == "azr._executor"
    assert issubclass(ExecutorError, RuntimeError)


def test_a_job_the_core_refuses_raises_its_typed_error(strict: Executor) -> None:
    huge = Job("def f(a):\n    return a", "1", expected="x" * (_executor.MAX_TEXT_BYTES + 1))
    with pytest.raises(InvalidJobError, match=r"job 1: expected is \d+ bytes"):
        strict.run([Job(IDENTITY, "1"), huge])


def test_both_executors_implement_the_protocol(strict: Executor) -> None:
    assert isinstance(strict, ExecutorProtocol)
    assert isinstance(RemoteExecutor("127.0.0.1:9"), ExecutorProtocol)


# Programs that read their own objects' introspection attributes or use the standard text codecs:
# nothing here reaches the host or shared state, and none may be refused.
LEGITIMATE = [
    (
        "class A:\n    pass\nclass B(A):\n    pass\ndef f(a):\n    return [c.__name__ for c in B.__mro__]",
        "['B', 'A', 'object']",
    ),
    ("def f(a):\n    def g():\n        return a\n    return g.__closure__[0].cell_contents", "5"),
    ("def f(a):\n    def inner():\n        pass\n    return inner.__qualname__", "'f.<locals>.inner'"),
    ('class A:\n    """Doc."""\ndef f(a):\n    return A.__doc__', "'Doc.'"),
    ("class A:\n    x = 1\ndef f(a):\n    return sorted(k for k in A.__dict__ if not k.startswith('__'))", "['x']"),
    ("class A:\n    def __init__(self):\n        self.v = 2\ndef f(a):\n    return A().__dict__", "{'v': 2}"),
    (
        "class A:\n    pass\ndef f(a):\n    o = A()\n    setattr(o, 'v', a)\n    return getattr(o, 'v'), hasattr(o, 'w')",
        "(5, False)",
    ),
    ("def f(a):\n    return 'x'.encode('utf-16-le')", "b'x\\x00'"),
    ("def f(a):\n    return 'é'.encode('utf-32')[4:]", "b'\\xe9\\x00\\x00\\x00'"),
    (
        "def f(a):\n    return 'é'.encode('latin-1'), 'x'.encode('ascii'), '€'.encode('cp1252')",
        "(b'\\xe9', b'x', b'\\x80')",
    ),
    ("def f(a):\n    return b'\\xff\\xfeA\\x00'.decode('utf-16')", "'A'"),
    (
        "import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\ndef f(a):\n    return [fl.name for fl in dataclasses.fields(P)]",
        "['x']",
    ),
]


@pytest.mark.parametrize(("program", "output"), LEGITIMATE, ids=[f"legit_{i}" for i in range(len(LEGITIMATE))])
def test_legitimate_programs_are_not_refused(strict: Executor, batch: Executor, program: str, output: str) -> None:
    for executor in (strict, batch):
        [outcome] = executor.run([Job(program, "5", runs=2)])
        assert (outcome.status, outcome.output) == ("ok", output), outcome


def test_the_evaluation_policy_allows_what_benchmark_solutions_import(strict: Executor) -> None:
    programs = [
        "import sys\ndef f(a):\n    return sys.maxsize > a",
        "import hashlib\ndef f(a):\n    return hashlib.md5(b'a').hexdigest()",
        "import random\ndef f(a):\n    random.seed(a)\n    return random.randint(0, 9)",
        "import os\ndef f(a):\n    return os.getcwd()",
    ]
    selfplay = strict.run([Job(p, "1") for p in programs])
    evaluation = strict.run([Job(p, "1", policy="evaluation", runs=2) for p in programs])
    assert [o.status for o in selfplay] == ["forbidden"] * 4
    assert [o.status for o in evaluation] == ["ok", "ok", "ok", "forbidden"]
    assert evaluation[1].output == "'0cc175b9c0f1b6a831c399e269772661'"
    with pytest.raises(ValueError, match=r"Job\.policy must be one of"):
        Job(programs[0], "1", policy="anything")  # type: ignore[arg-type]


def test_evaluation_inputs_may_be_call_arguments_but_selfplay_inputs_must_be_data(strict: Executor) -> None:
    program = "def helper():\n    return 4\ndef f(a, b=0):\n    return a + b"
    inputs = ["*[1, 2]", "helper(), b=helper()", "(lambda: 3)()"]
    evaluation = strict.run([Job(program, text, policy="evaluation") for text in inputs])
    selfplay = strict.run([Job(program, text) for text in inputs])
    assert [(o.status, o.output) for o in evaluation] == [("ok", "3"), ("ok", "8"), ("ok", "3")]
    assert {o.status for o in selfplay} == {"forbidden"}
    # The input is still checked like the program: it cannot import what the policy forbids.
    [escape] = strict.run([Job(program, "__import__('os').getpid()", policy="evaluation")])
    assert escape.status == "forbidden", escape


def test_a_job_may_carry_its_own_time_limit(strict: Executor, batch: Executor) -> None:
    endless = "def f(a):\n    while True:\n        a += 1"
    for executor in (strict, batch):
        short, default = executor.run([Job(endless, "1", timeout_s=0.2), Job("def f(a):\n    return a", "7")])
        assert (short.status, short.error) == ("timeout", "exceeded the 0.200 s time limit")
        assert short.elapsed_s < 2.0
        assert (default.status, default.output) == ("ok", "7")
    for bad in (0, -1, 3601, float("nan"), True):
        with pytest.raises(ValueError, match=r"Job\.timeout_s must be"):
            Job(endless, "1", timeout_s=bad)


def test_evaluation_programs_may_read_stdin_and_exit(strict: Executor, batch: Executor) -> None:
    harness = (
        "import io, sys\n"
        "def f(text):\n"
        "    sys.stdin = io.StringIO(text)\n"
        "    try:\n"
        "        return [input(), input(), exit(3)]\n"
        "    except SystemExit as stop:\n"
        "        return ('exit', stop.code)\n"
    )
    for executor in (strict, batch):
        reads, empty = executor.run(
            [Job(harness, "'a\\nb\\n'", policy="evaluation"), Job(harness, "''", policy="evaluation")]
        )
        assert (reads.status, reads.output) == ("ok", "('exit', 3)")
        assert (empty.status, empty.error) == ("error", "EOFError: EOF when reading a line")
        # Self-play programs still may not read input or exit.
        assert {o.status for o in executor.run([Job(harness, "'a'")])} == {"forbidden"}
