"""The `azr-executor` command line, run as users run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXECUTOR = shutil.which("azr-executor") or str(Path(sys.executable).with_name("azr-executor"))


def azr_executor(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXECUTOR, *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_help_explains_the_commands() -> None:
    result = azr_executor("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "info" in result.stdout
    run_help = azr_executor("run", "--help").stdout
    for flag in ("--output", "--mode", "--workers", "--timeout", "--memory-mb", "--isolation"):
        assert flag in run_help


def test_run_writes_outcomes_in_order_and_names_bad_lines(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            [
                json.dumps({"program": "def f(a):\n    return a", "input": "'Hello world'", "runs": 2, "id": "first"}),
                "{not json",
                json.dumps({"program": "def f(a):\n    return a * 2"}),
                "",
                json.dumps({"program": "import os\ndef f(a):\n    return 1", "input": "1"}),
                json.dumps({"program": "def f(a):\n    return a", "input": "1", "runs": 99}),
                json.dumps({"program": "def f(a, b):\n    return a + b", "input": "1, 2", "imports": ["import math"]}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = azr_executor("run", str(jobs), "-o", str(out), "--timeout", "2")
    assert result.returncode == 2, result.stderr
    assert "line 2: not JSON" in result.stderr
    assert "line 3: missing field `input`" in result.stderr
    assert "line 6: runs must be between 1 and 16, got 99" in result.stderr
    assert "3 jobs in" in result.stderr and "ok 2, forbidden 1" in result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "invalid", "invalid", "forbidden", "invalid", "ok"]
    assert lines[0]["id"] == "first" and lines[0]["output"] == "'Hello world'"
    assert lines[1]["line"] == 2 and lines[5]["output"] == "3"


def test_run_reads_stdin_and_writes_stdout() -> None:
    result = azr_executor(
        "run",
        "-",
        "--quiet",
        "--mode",
        "batch",
        stdin=json.dumps({"program": "def f(x):\n    return -x", "input": "5"}),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == "-5"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
        (["run", "-", "--timeout", "0"], "timeout_s must be a number of seconds"),
        (["run", "-", "--memory-mb", "1"], "memory_mb must be between"),
        (["run", "-", "--mode", "fast"], "invalid value 'fast'"),
    ],
)
def test_bad_arguments_fail_clearly(args: list[str], message: str) -> None:
    result = azr_executor(*args, stdin="")
    assert result.returncode != 0
    assert message in result.stderr


def test_info_reports_the_guest() -> None:
    result = azr_executor("info")
    assert result.returncode == 0
    info = json.loads(result.stdout)
    assert info["wasmtime"] == "48.0.8" and len(info["guest_sha256"]) == 64
    assert Path(info["compiled_guest"]).exists()
