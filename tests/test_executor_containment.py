"""Containment: programs that attack the sandbox end with a non-ok status (or a harmless result)
within timeout + 1 s, and the host keeps working. Each case is one attack class."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
from azr.executor import Executor, Job

TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Attack:
    name: str
    program: str
    input: str = "1"
    # Statuses that count as contained. An `ok` is only allowed where `harmless` checks its output.
    statuses: tuple[str, ...] = ()
    harmless: str | None = None


def lines(*body: str) -> str:
    return "\n".join(body)


ATTACKS = [
    # File system
    Attack("read_etc_passwd", "def f(a):\n    return open('/etc/passwd').read()", statuses=("forbidden",)),
    Attack(
        "open_through_builtins_dict",
        "def f(a):\n    return __builtins__['open']('/etc/passwd')",
        statuses=("forbidden",),
    ),
    Attack(
        "io_open_has_no_files", "import io\ndef f(a):\n    return io.open('/etc/passwd').read()", statuses=("error",)
    ),
    Attack("list_root_with_os", "import os\ndef f(a):\n    return os.listdir('/')", statuses=("forbidden",)),
    Attack(
        "pathlib_read",
        "from pathlib import Path\ndef f(a):\n    return Path('/etc/hostname').read_text()",
        statuses=("forbidden",),
    ),
    Attack("shutil_remove", "import shutil\ndef f(a):\n    shutil.rmtree('/')", statuses=("forbidden",)),
    # Network and processes
    Attack(
        "socket_connect",
        "import socket\ndef f(a):\n    socket.create_connection(('127.0.0.1', 22))",
        statuses=("forbidden",),
    ),
    Attack(
        "urllib_fetch",
        "import urllib.request\ndef f(a):\n    return urllib.request.urlopen('http://x')",
        statuses=("forbidden",),
    ),
    Attack(
        "subprocess_run", "import subprocess\ndef f(a):\n    return subprocess.run(['ls'])", statuses=("forbidden",)
    ),
    Attack(
        "multiprocessing_fork",
        "import multiprocessing\ndef f(a):\n    return multiprocessing.Process()",
        statuses=("forbidden",),
    ),
    Attack(
        "threading_start",
        "import threading\ndef f(a):\n    threading.Thread(target=print).start()",
        statuses=("forbidden",),
    ),
    Attack("ctypes_libc", "import ctypes\ndef f(a):\n    return ctypes.CDLL(None)", statuses=("forbidden",)),
    # Escapes through the import system and introspection
    Attack("dunder_import", "def f(a):\n    return __import__('os').getcwd()", statuses=("forbidden",)),
    Attack(
        "importlib", "import importlib\ndef f(a):\n    return importlib.import_module('os')", statuses=("forbidden",)
    ),
    Attack("private_module", "import _thread\ndef f(a):\n    return _thread.get_ident()", statuses=("forbidden",)),
    Attack("subclass_walk", "def f(a):\n    return ().__class__.__base__.__subclasses__()", statuses=("forbidden",)),
    Attack("function_globals", "def f(a):\n    return f.__globals__['__builtins__']", statuses=("forbidden",)),
    Attack("getattr_by_name", "def f(a):\n    return getattr(f, '__globals__')", statuses=("forbidden",)),
    Attack("builtin_self_is_builtins_module", "def f(a):\n    return len.__self__.open", statuses=("forbidden",)),
    Attack(
        "traceback_frame_walk",
        lines(
            "def f(a):",
            "    try:",
            "        1 / 0",
            "    except Exception as e:",
            "        return e.__traceback__.tb_frame.f_back.f_globals",
        ),
        statuses=("forbidden",),
    ),
    Attack(
        "generator_frame",
        "def f(a):\n    g = (x for x in [1])\n    return g.gi_frame.f_globals",
        statuses=("forbidden",),
    ),
    Attack("computed_import_name", "def f(a):\n    return eval('__imp' + 'ort__')('os')", statuses=("forbidden",)),
    Attack(
        "getattr_with_a_computed_name",
        "def f(a):\n    return getattr(f, ''.join(['__glo', 'bals__']))",
        statuses=("forbidden",),
    ),
    Attack(
        "getattr_with_a_str_subclass",
        "class S(str):\n    def __eq__(s, o):\n        return False\n    __hash__ = str.__hash__\n"
        "def f(a):\n    return getattr(object, S('__subclasses__'))()",
        statuses=("forbidden",),
    ),
    Attack(
        "sys_through_a_module_attribute",
        "import collections\ndef f(a):\n    return collections._sys.modules",
        statuses=("error",),
    ),
    Attack(
        "sys_through_from_import",
        "from enum import sys\ndef f(a):\n    return sys.modules",
        statuses=("error",),
    ),
    Attack(
        "builtins_through_a_module",
        "import json\ndef f(a):\n    return getattr(json, ''.join(['__built', 'ins__']))",
        statuses=("forbidden",),
    ),
    Attack("exec_an_import", "def f(a):\n    exec('import os')\n    return 1", statuses=("forbidden",)),
    Attack(
        "import_swallowing_the_refusal",
        lines(
            "def f(a):",
            "    try:",
            "        import sys",
            "    except BaseException:",
            "        pass",
            "    return 'escaped'",
        ),
        statuses=("forbidden",),
    ),
    Attack("debugger", "def f(a):\n    breakpoint()", statuses=("forbidden",)),
    Attack("read_stdin", "def f(a):\n    return input()", statuses=("forbidden",)),
    # Environment and clocks
    Attack("environment", "import os\ndef f(a):\n    return dict(os.environ)", statuses=("forbidden",)),
    Attack("wall_clock", "import time\ndef f(a):\n    return time.time()", statuses=("forbidden",)),
    Attack("datetime_now", "import datetime\ndef f(a):\n    return datetime.datetime.now()", statuses=("forbidden",)),
    # Waiting 60 s for an item: the clock only moves when the guest sleeps, so this ends at the deadline.
    Attack(
        "wait_through_an_allowed_module",
        "import queue\ndef f(a):\n    return queue.Queue().get(timeout=60)",
        statuses=("timeout", "error"),
    ),
    # Memory
    Attack("list_bomb", "def f(a):\n    return [0] * 10**8", statuses=("memory",)),
    Attack(
        "growing_list", "def f(a):\n    x = []\n    while True:\n        x.append(' ' * 10**6)", statuses=("memory",)
    ),
    Attack("bytes_bomb", "def f(a):\n    return bytearray(2**30)", statuses=("memory",)),
    Attack("index_overflow", "def f(a):\n    return [0] * 10**10", statuses=("error",)),
    Attack("string_doubling", "def f(a):\n    s = 'x'\n    while True:\n        s += s", statuses=("memory",)),
    # Recursion and the stack
    Attack("unbounded_recursion", "def f(a):\n    return f(a + 1)", statuses=("error",)),
    Attack(
        "recursion_through_eq",
        "class A:\n    def __eq__(s, o):\n        return s == o\ndef f(a):\n    return A() == A()",
        statuses=("error",),
    ),
    Attack(
        "c_level_recursion",
        "import json\ndef f(a):\n    return json.loads('[' * 100000 + ']' * 100000)",
        statuses=("error",),
    ),
    Attack("deeply_nested_source", "def f(a):\n    return " + "(" * 5000 + "1" + ")" * 5000, statuses=("syntax",)),
    # Time
    Attack("infinite_loop", "def f(a):\n    while True:\n        pass", statuses=("timeout",)),
    Attack(
        "loop_that_swallows_base_exception",
        lines(
            "def f(a):",
            "    while True:",
            "        try:",
            "            while True:",
            "                pass",
            "        except BaseException:",
            "            pass",
        ),
        statuses=("timeout",),
    ),
    Attack("huge_integer_power", "def f(a):\n    return 7 ** (10 ** 9)", statuses=("timeout", "memory")),
    Attack("huge_integer_repr", "def f(a):\n    return 10 ** 20000", statuses=("error",)),
    # Output
    Attack("print_flood", "def f(a):\n    while True:\n        print('y' * 1000)", statuses=("output_limit",)),
    Attack(
        "stderr_flood_swallowed",
        lines(
            "def f(a):",
            "    while True:",
            "        try:",
            "            raise ValueError('x' * 10000)",
            "        except ValueError as e:",
            "            print(e)",
        ),
        statuses=("output_limit",),
    ),
    Attack("huge_result", "def f(a):\n    return 'x' * 10**6", statuses=("output_limit",)),
    Attack(
        "repr_bomb",
        "class A:\n    def __repr__(self):\n        return 'x' * 10**9\ndef f(a):\n    return A()",
        statuses=("memory", "output_limit"),
    ),
    Attack(
        "repr_that_never_returns",
        "class A:\n    def __repr__(self):\n        while True:\n            pass\ndef f(a):\n    return A()",
        statuses=("timeout",),
    ),
    # Leaving the interpreter
    Attack("system_exit", "def f(a):\n    raise SystemExit(0)", statuses=("error",)),
    Attack("keyboard_interrupt", "def f(a):\n    raise KeyboardInterrupt", statuses=("error",)),
    Attack("exit_builtin", "def f(a):\n    exit(0)", statuses=("forbidden",)),
    # Hostile input text
    Attack(
        "input_closes_the_call",
        "def f(a):\n    return a",
        input="1), (__import__('os'),",
        statuses=("syntax", "forbidden"),
    ),
    Attack("input_runs_a_statement", "def f(a):\n    return a", input="1); import os; (2", statuses=("syntax",)),
    Attack(
        "input_calls_import", "def f(a):\n    return a", input="__import__('os').system('ls')", statuses=("forbidden",)
    ),
    Attack("nul_byte_in_program", "def f(a):\n    return a\x00", statuses=("syntax",)),
    Attack("nul_byte_in_input", "def f(a):\n    return a", input="'a'\x00", statuses=("syntax",)),
    Attack("lone_surrogate_result", "def f(a):\n    return '\\ud800'", statuses=(), harmless="'\\ud800'"),
    Attack(
        "format_string_introspection",
        "def f(a):\n    return '{0.__class__}'.format(a)",
        statuses=(),
        harmless="\"<class 'int'>\"",
    ),
]


@pytest.fixture(scope="module")
def guarded() -> Executor:
    return Executor(timeout_s=TIMEOUT_S, memory_mb=128)


@pytest.fixture(scope="module")
def guarded_batch() -> Executor:
    return Executor(timeout_s=TIMEOUT_S, memory_mb=128, mode="batch")


@pytest.mark.parametrize("mode", ["strict", "batch"])
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(guarded: Executor, guarded_batch: Executor, attack: Attack, mode: str) -> None:
    executor = guarded if mode == "strict" else guarded_batch
    started = time.monotonic()
    [outcome] = executor.run([Job(program=attack.program, input=attack.input)])
    wall = time.monotonic() - started
    if attack.harmless is not None:
        assert (outcome.status, outcome.output) == ("ok", attack.harmless), outcome
    else:
        assert outcome.status in attack.statuses, outcome
        assert outcome.output is None
    assert wall <= TIMEOUT_S + 1.0, f"{attack.name} took {wall:.2f} s"


def test_host_keeps_working_after_all_attacks_in_one_batch(guarded: Executor) -> None:
    started = time.monotonic()
    outcomes = guarded.run([Job(program=a.program, input=a.input) for a in ATTACKS])
    assert all(o.status != "ok" or a.harmless is not None for o, a in zip(outcomes, ATTACKS, strict=True))
    assert time.monotonic() - started < 60
    [after] = guarded.run([Job("def f(a):\n    return a + 1", "41")])
    assert (after.status, after.output) == ("ok", "42")


def test_the_host_environment_does_not_leak() -> None:
    os.environ["AZR_CONTAINMENT_SECRET"] = "hunter2"
    try:
        executor = Executor(workers=1, timeout_s=TIMEOUT_S)
        # Everything the program can reach through the modules it may import, and its own globals.
        modules = ["io", "json", "string", "collections", "typing", "re", "functools", "itertools"]
        program = lines(
            f"import {', '.join(modules)}",
            "def f(a):",
            f"    seen = [repr(vars(m)) for m in ({', '.join(modules)})] + [repr(globals())]",
            "    return 'hunter2' in ''.join(seen)",
        )
        [outcome] = executor.run([Job(program, "1")])
        assert (outcome.status, outcome.output) == ("ok", "False")
    finally:
        del os.environ["AZR_CONTAINMENT_SECRET"]


POISONERS = [
    (
        "builtins",
        "def f(a):\n    globals()['__builtins__']['len'] = lambda x: 42\n    return len([])",
        "def f(a):\n    return len([1, 2])",
        "2",
    ),
    (
        "module attribute",
        "import math\ndef f(a):\n    math.pi = 3\n    return math.pi",
        "import math\ndef f(a):\n    return round(math.pi, 5)",
        "3.14159",
    ),
    (
        "library class",
        "from collections import Counter\ndef f(a):\n    Counter.most_common = None\n    return 1",
        "from collections import Counter\ndef f(a):\n    return Counter('aab').most_common(1)",
        "[('a', 2)]",
    ),
    (
        "library class through an alias",
        "import collections\ndef f(a):\n    c = collections\n    c.Counter.total = None\n    return 1",
        "from collections import Counter\ndef f(a):\n    return Counter('aab').total()",
        "3",
    ),
    (
        "decimal context",
        "from decimal import getcontext\ndef f(a):\n    getcontext().prec = 3\n    return 1",
        "from decimal import Decimal\ndef f(a):\n    return str(Decimal(1) / Decimal(7))",
        "'0.1428571428571428571428571429'",
    ),
    (
        "module-level cache",
        "import functools\ndef f(a):\n    functools.lru_cache = None\n    return 1",
        "import functools\ndef f(a):\n    return functools.lru_cache(maxsize=2) is not None",
        "True",
    ),
]


@pytest.mark.parametrize(("what", "poison", "probe", "expected"), POISONERS, ids=[p[0] for p in POISONERS])
def test_poisoning_does_not_leak_to_the_next_job_in_batch_mode(
    what: str, poison: str, probe: str, expected: str
) -> None:
    executor = Executor(workers=1, timeout_s=TIMEOUT_S, mode="batch")
    outcomes = executor.run([Job(probe, "1"), Job(poison, "1"), Job(probe, "1"), Job(probe, "1")])
    assert outcomes[1].status in ("ok", "forbidden"), outcomes[1]
    assert [o.output for o in (outcomes[0], outcomes[2], outcomes[3])] == [expected] * 3, outcomes


# What a fresh instance looks like from inside: where new objects of several sizes land (the
# allocator's state), a default hash, a function's address, the loaded modules and limits.
STATE_PROBE = lines(
    "import sys",
    "def f(a):",
    "    fresh = [object(), [], {}, set(), 1.5 + a, 'x' * (a + 40), (a, a + 1), bytearray(3000), bytes(200000)]",
    "    def g():",
    "        return 1",
    "    return ([id(x) for x in fresh], hash(object()), repr(g), sorted(sys.modules), sys.getrecursionlimit())",
)

# Programs that change as much of an instance as they can reach: its heap, memory grown past the
# snapshot, module and interpreter state, and instances that end in a trap mid-allocation.
STATE_POISONERS = [
    lines(
        "def f(a):",
        "    junk = [[i] * 8 for i in range(100000)]",
        "    table = {str(i): i for i in range(20000)}",
        "    return len(junk) + len(table)",
    ),
    "def f(a):\n    grown = bytearray(b'\\xff') * (120 << 20)\n    return len(grown)",
    lines(
        "import sys, math, json, collections",
        "def f(a):",
        "    sys.setrecursionlimit(60)",
        "    math.pi = 3",
        "    json.dumps = None",
        "    collections.Counter.most_common = None",
        "    sys.modules.clear()",
        "    return 1",
    ),
    "def f(a):\n    hog = []\n    while True:\n        hog.append('x' * 4096)",
    "def f(a):\n    return 'x' * (600 << 20)",
    "import sys\ndef f(a):\n    sys.setrecursionlimit(10 ** 6)\n    return f(a)",
]


@pytest.mark.parametrize("resident_mb", ["32", "0"])
def test_a_strict_run_after_poisoning_starts_from_the_snapshot(monkeypatch, resident_mb: str) -> None:
    """Strict mode's reuse paths: a pool slot keeps the memory its last instance wrote and copies the
    snapshot back over it (`AZR_EXECUTOR_RESIDENT_MB`, on by default; with `0` the pages are dropped
    and faulted in again), and a worker keeps a program's compiled code. After any poisoner, what a
    job sees equals what it saw before them, and what a fresh process sees. (The probe runs once
    first so that every probe compared loads its code: a run that compiles lays out the heap a
    little differently, which the addresses the probe shows would tell.)"""
    monkeypatch.setenv("AZR_EXECUTOR_RESIDENT_MB", resident_mb)
    executor = Executor(workers=1, timeout_s=1.0, memory_mb=512, memo_mb=0)
    probe = Job(STATE_PROBE, "1", policy="evaluation")
    jobs = [probe, probe]
    for poisoner in STATE_POISONERS:
        jobs += [Job(poisoner, "1", policy="evaluation"), probe]
    outcomes = executor.run(jobs)[1:]
    first = outcomes[0]
    assert first.status == "ok" and "'math'" in (first.output or ""), first
    for poisoner, outcome, after in zip(STATE_POISONERS, outcomes[1::2], outcomes[2::2], strict=True):
        assert outcome.status in ("ok", "error", "forbidden", "timeout", "memory"), (poisoner, outcome)
        assert after.output == first.output, f"state left behind by:\n{poisoner}\n{outcome}"
    fresh = Executor(workers=1, timeout_s=1.0, memory_mb=512, isolation="thread", memo_mb=0)
    assert fresh.run([probe, probe])[1].output == first.output
    # The probe sees the heap's layout: a second determinism run, whose heap is laid out
    # differently on purpose, disagrees with the first.
    [salted] = executor.run([Job(STATE_PROBE, "1", policy="evaluation", runs=2)])
    assert salted.status == "nondeterministic", salted
