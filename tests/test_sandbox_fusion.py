"""`azr-executor serve` answers SandboxFusion's `/run_code`: its official client (`sandbox-fusion` from
PyPI) against a real service on loopback."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azr.executor import local_service

sandbox_fusion = pytest.importorskip("sandbox_fusion")
from sandbox_fusion import RunCodeRequest, RunStatus, run_code  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with local_service("--workers", "2", "--timeout", "5", "--max-queue", "2048") as (address, _):
        yield f"http://{address}"


def run(endpoint: str, code: str, stdin: str | None = None, **kwargs: object) -> object:
    request = RunCodeRequest(code=code, stdin=stdin, language="python", **kwargs)
    return run_code(request, endpoint=endpoint, max_attempts=1)


def test_printing_stdin_errors_and_exit_codes(endpoint: str) -> None:
    printed = run(endpoint, "print('hello')")
    assert printed.status == RunStatus.Success and printed.run_result.status == "Finished"
    assert (printed.run_result.stdout, printed.run_result.return_code) == ("hello\n", 0)
    echoed = run(endpoint, "a, b = map(int, input().split())\nprint(a * b)", stdin="6 7\n")
    assert echoed.run_result.stdout == "42\n"
    raised = run(endpoint, "raise KeyError('missing')")
    assert raised.status == RunStatus.Failed and raised.run_result.return_code == 1
    assert "KeyError: 'missing'" in raised.run_result.stderr
    exited = run(endpoint, "import sys\nprint('bye')\nsys.exit(3)")
    assert (exited.status, exited.run_result.return_code, exited.run_result.stdout) == (RunStatus.Failed, 3, "bye\n")


def test_time_limits_and_containment(endpoint: str) -> None:
    endless = run(endpoint, "while True:\n    pass", run_timeout=1)
    assert endless.status == RunStatus.Failed and endless.run_result.status == "TimeLimitExceeded"
    assert endless.run_result.execution_time < 2.5
    listing = run(endpoint, "import os\nprint(os.listdir('/'))")
    assert listing.run_result.return_code == 1 and listing.run_result.stdout == ""
    spawn = run(endpoint, "import subprocess\nsubprocess.run(['ls', '/'])")
    assert spawn.run_result.return_code == 1 and "No module named 'subprocess'" in spawn.run_result.stderr


def test_what_is_not_supported_is_a_sandbox_error(endpoint: str) -> None:
    with pytest.raises(Exception, match="language 'cpp' is not supported"):
        run_code(RunCodeRequest(code="int main() {}", language="cpp"), endpoint=endpoint, max_attempts=1)
    with pytest.raises(Exception, match="files and fetch_files are not supported"):
        run(endpoint, "print(1)", files={"a.txt": "eA=="})


def test_two_hundred_concurrent_requests_are_all_answered_right(endpoint: str) -> None:
    def square(n: int) -> tuple[int, str]:
        response = run(endpoint, "n = int(input())\nprint(n * n)", stdin=f"{n}\n")
        return n, response.run_result.stdout

    with ThreadPoolExecutor(32) as threads:
        answers = list(threads.map(square, range(200)))
    assert answers == [(n, f"{n * n}\n") for n in range(200)]
    # Counted in the service's metrics like /v1/run requests.
    with urllib.request.urlopen(f"{endpoint}/metrics") as response:
        metrics = response.read().decode()
    served = re.search(r'azr_requests_total\{endpoint="/run_code",code="200"\} (\d+)', metrics)
    assert served is not None and int(served.group(1)) >= 200


def test_a_token_protected_service_takes_the_token_in_the_path(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with local_service("--workers", "1", "--token-file", str(token_file)) as (address, _):
        answered = run(f"http://{address}/t/{TOKEN}", "print('in')")
        assert answered.run_result.stdout == "in\n"
        for refused in (f"http://{address}", f"http://{address}/t/wrong"):
            with pytest.raises(Exception, match="401"):
                run(refused, "print('in')")
