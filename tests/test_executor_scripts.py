"""Script mode: whole programs with stdin, stdout, stderr and an exit code, as a process runs them;
and the containment suite's attack classes rewritten as scripts (no policy layer: the WebAssembly
sandbox alone must hold them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azr.executor import Executor, Job, RemoteExecutor, local_service

TIMEOUT_S = 2.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["strict", "batch"])
def executor(request: pytest.FixtureRequest) -> Executor:
    return Executor(timeout_s=TIMEOUT_S, memory_mb=128, mode=request.param)


def script(program: str, stdin: str = "", **kwargs: object) -> Job:
    return Job(program, stdin, script=True, **kwargs)  # type: ignore[arg-type]


def test_a_script_reads_stdin_and_prints_as_a_process_would(executor: Executor) -> None:
    jobs = [
        script("import sys\nname = input()\nrest = sys.stdin.read()\nprint('hi', name)\nprint(rest.upper(), end='')",
               "ada\nline 2\nline 3\n"),
        script("import sys\nprint('partial')\nsys.exit(3)"),
        script("print('before')\nraise ValueError('bad input')"),
        script("def (:"),
        script("import os\nprint('kept')\nos._exit(4)"),
        script("print('é😀', file=__import__('sys').stderr)\nexit()"),
        script("import sys\nsys.exit('fatal: no input')"),
    ]  # fmt: skip
    outcomes = executor.run(jobs)
    assert [(o.status, o.exit_code) for o in outcomes] == [("ok", 0), ("ok", 3), ("ok", 1), ("ok", 1), ("ok", 4),
                                                           ("ok", 0), ("ok", 1)]  # fmt: skip
    assert outcomes[0].output == "hi ada\nLINE 2\nLINE 3\n" and outcomes[0].stderr == ""
    assert outcomes[1].output == "partial\n"
    raised = outcomes[2]
    assert raised.output == "before\n"
    assert raised.stderr == (
        'Traceback (most recent call last):\n  File "main.py", line 2, in <module>\nValueError: bad input\n'
    )
    assert "SyntaxError" in (outcomes[3].stderr or "")
    assert outcomes[4].output == "kept\n"
    assert outcomes[5].stderr == "é😀\n"
    assert outcomes[6].stderr == "fatal: no input\n"


def test_script_limits_and_validation(executor: Executor) -> None:
    endless, flood, hog, seeded = executor.run(
        [
            script("while True:\n    pass"),
            script("while True:\n    print('x' * 1000)"),
            script("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))"),
            script("import random\nprint(random.random())", runs=2),
        ]
    )
    assert endless.status == "timeout"
    assert flood.status == "output_limit" and len(flood.output or "") <= 1 << 16
    assert hog.status == "memory"
    # Each determinism run is seeded apart, so a script that prints randomness disagrees with itself.
    assert seeded.status == "nondeterministic"
    [short] = executor.run([script("while True:\n    pass", timeout_s=0.2)])
    assert (short.status, short.error) == ("timeout", "exceeded the 0.200 s time limit")
    with pytest.raises(ValueError, match="a script job takes no expected value"):
        script("print(1)", expected="1")


# (name, script, what must be true of the outcome): the attack classes of the containment suite.
ATTACKS = [
    ("read_etc_passwd", "print(open('/etc/passwd').read())", lambda o: o.exit_code == 1 and not o.output),
    ("list_root", "import os\nprint(os.listdir('/'))", lambda o: o.exit_code == 1 and not o.output),
    ("write_a_file", "open('/tmp/azr-escape', 'w').write('x')", lambda o: o.exit_code == 1),
    ("subprocess", "import subprocess\nsubprocess.run(['ls'])", lambda o: o.exit_code == 1),
    ("os_system", "import os\nos.system('touch /tmp/azr-escape')", lambda o: o.exit_code == 1),
    ("fork", "import os\nos.fork()", lambda o: o.exit_code == 1),
    ("socket", "import socket\nsocket.create_connection(('127.0.0.1', 22))", lambda o: o.exit_code == 1),
    ("ctypes", "import ctypes\nctypes.CDLL(None)", lambda o: o.exit_code == 1),
    ("threads", "import threading\nthreading.Thread(target=print).start()", lambda o: o.exit_code == 1),
    ("environment", "import os\nprint(dict(os.environ))", lambda o: "AZR_SCRIPT_SECRET" not in (o.output or "")),
    ("wall_clock", "import time\nprint(time.time() < 1.8e9)", lambda o: o.output == "True\n"),
    ("sleep_holds_no_thread", "import time\ntime.sleep(3600)\nprint('woke')", lambda o: o.output == "woke\n"),
    ("recursion", "def r(n):\n    return r(n + 1)\nr(0)", lambda o: o.status in ("ok", "error") and o.exit_code != 0),
    ("memory_bomb", "x = ' ' * (1 << 40)", lambda o: o.exit_code == 1 or o.status == "memory"),
    ("busy_loop", "while True:\n    pass", lambda o: o.status == "timeout"),
    ("posix_exit", "import posix\nposix._exit(0)", lambda o: o.status == "error"),
]


@pytest.mark.parametrize(("name", "program", "contained"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_script_attacks_are_contained(executor: Executor, name: str, program: str, contained: object) -> None:
    os.environ["AZR_SCRIPT_SECRET"] = "hunter2"
    try:
        started = time.monotonic()
        [outcome] = executor.run([script(program)])
    finally:
        del os.environ["AZR_SCRIPT_SECRET"]
    assert contained(outcome), outcome  # type: ignore[operator]
    assert time.monotonic() - started <= TIMEOUT_S + 1.0
    assert not Path("/tmp/azr-escape").exists()


def test_a_script_cannot_poison_the_jobs_after_it(executor: Executor) -> None:
    poison = script(
        "import builtins, json, sys\n"
        "builtins.len = lambda x: 42\njson.dumps = lambda x: 'poisoned'\nsys.modules.clear()\nprint('done')"
    )
    after = [Job("import json\ndef f(a):\n    return len(a), json.dumps(a)", "[1, 2]"), script("print(len([1]))")]
    outcomes = executor.run([poison, *after, poison, *after])
    assert [o.output for o in outcomes] == ["done\n", "(2, '[1, 2]')", "1\n"] * 2


def test_the_cli_runs_script_jobs(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"program": "print(input()[::-1])", "input": "olleh\n", "script": True, "id": "a"})
        + "\n"
        + json.dumps({"program": "import sys\nsys.exit(2)", "input": "", "script": True, "id": "b"})
        + "\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "azr.executor_cli", "run", str(jobs), "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["id"], r["status"], r["output"], r["exit_code"]) for r in rows] == [
        ("a", "ok", "hello\n", 0),
        ("b", "ok", "", 2),
    ]


def test_the_service_runs_script_jobs_for_a_remote_executor() -> None:
    with local_service("--workers", "2") as (address, _):
        remote = RemoteExecutor([f"http://{address}"])
        jobs = [script("print(sum(map(int, input().split())))", "2 3\n"), script("raise SystemExit(7)")]
        local = Executor(timeout_s=TIMEOUT_S).run(jobs)
        outcomes = remote.run(jobs)
    assert [(o.status, o.output, o.exit_code, o.stderr) for o in outcomes] == [
        (o.status, o.output, o.exit_code, o.stderr) for o in local
    ]
    assert [(o.output, o.exit_code) for o in outcomes] == [("5\n", 0), ("", 7)]
