"""`azr-executor serve` against a real server process on loopback, and the Python RemoteExecutor."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import msgpack
import pytest
from azr.executor import Executor, Job, RemoteExecutor, RemoteExecutorError, local_service

JSON = "application/json"
MSGPACK = "application/msgpack"
# About half a second of work in the sandbox.
SLOW = "def f(n):\n    return sum(i * i for i in range(n))"
SLOW_INPUT = "10**6"


def server(*flags: str, log: Path | None = None) -> AbstractContextManager[tuple[str, subprocess.Popen]]:
    return local_service("--timeout", "5", *flags, log=log)


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    token: str | None = None,
) -> tuple[int, dict, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


JOBS = [
    {"program": "def f(a):\n    return a", "input": "'Hello world'", "runs": 2},
    {"program": "import math\ndef f(a, b):\n    return math.gcd(a, b)", "input": "12, 18"},
    {"program": "import os\ndef f(a):\n    return 1", "input": "1"},
    {"program": "def f(a):\n    return 1 / a", "input": "0"},
    {"program": "def f(a):\n    return a", "input": "[3, 1]", "expected": "[3, 1]"},
    {"program": "def f(x):\n    return x", "input": "1", "imports": ["from collections import Counter"]},
]


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    with server("--workers", "2", "--max-body-bytes", "4096", "--max-jobs-per-request", "8") as (address, _):
        yield address


def test_round_trips_match_the_in_process_executor(service: str) -> None:
    local = Executor(timeout_s=5.0).run([Job(**{**j, "imports": j.get("imports", "")}) for j in JOBS])
    expected = [(o.status, o.output, o.error, o.matches) for o in local]
    for content_type, encode, decode in (
        (JSON, lambda x: json.dumps(x).encode(), json.loads),
        (MSGPACK, msgpack.packb, lambda b: msgpack.unpackb(b, raw=False)),
    ):
        status, headers, body = request(service, "POST", "/v1/run", encode({"jobs": JOBS}), content_type)
        assert status == 200 and headers["content-type"] == content_type
        outcomes = decode(body)["outcomes"]
        assert [(o["status"], o["output"], o["error"], o.get("matches")) for o in outcomes] == expected
    remote = RemoteExecutor([f"http://{service}"]).run([Job(**{**j, "imports": j.get("imports", "")}) for j in JOBS])
    assert [(o.status, o.output, o.error, o.matches) for o in remote] == expected


def test_equal_and_description_endpoints(service: str) -> None:
    status, _, body = request(
        service, "POST", "/v1/equal", msgpack.packb({"pairs": [["[1, 2]", "[1,2]"], ["1", "'1'"]]}), MSGPACK
    )
    assert status == 200 and msgpack.unpackb(body)["equal"] == [True, False]
    assert RemoteExecutor(service).equal("{'a': 1}", "{'a': 1}")
    status, _, body = request(service, "GET", "/v1/info")
    info = json.loads(body)
    assert status == 200 and info["limits"]["max_jobs_per_request"] == 8 and len(info["guest_sha256"]) == 64
    assert request(service, "GET", "/healthz")[0] == 200
    assert request(service, "GET", "/readyz")[:1] == (200,)
    status, headers, body = request(service, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        'azr_requests_total{endpoint="/v1/run",code="200"}',
        'azr_jobs_total{status="ok"}',
        "azr_request_duration_seconds_bucket",
        "azr_queue_jobs",
        "azr_busy_workers",
        "azr_workers 2",
        "azr_memo_hits_total",
    ):
        assert name in text, name
    # The ok results of the jobs above are kept for checks that repeat their runs.
    [memo_bytes] = [line.split()[1] for line in text.splitlines() if line.startswith("azr_memo_bytes ")]
    assert int(memo_bytes) > 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (msgpack.packb({"jobs": JOBS})[:-7], MSGPACK, 400, "malformed_body"),  # truncated msgpack
        (b'{"jobs": [{"program": "\xff\xfe", "input": "1"}]}', JSON, 400, "malformed_body"),  # invalid UTF-8
        (
            msgpack.packb({"jobs": [{"program": b"\xff", "input": "1"}]}, use_bin_type=False),
            MSGPACK,
            400,
            "malformed_body",
        ),
        (b"{not json", JSON, 400, "malformed_body"),
        (b'{"jobs": 5}', JSON, 400, "malformed_body"),
        (json.dumps({"jobs": [{"program": "x" * 5000, "input": "1"}]}).encode(), JSON, 413, "body_too_large"),
        (b'{"jobs": []}', JSON, 422, "invalid_job"),
        (json.dumps({"jobs": [JOBS[0]] * 9}).encode(), JSON, 413, "too_many_jobs"),
        (json.dumps({"jobs": [{**JOBS[0], "runs": 99}]}).encode(), JSON, 422, "invalid_job"),
        (b'{"jobs": []}', "text/plain", 415, "unsupported_media_type"),
        (b'{"jobs": []}', None, 415, "unsupported_media_type"),
    ],
    ids=[
        "truncated_msgpack",
        "invalid_utf8_json",
        "invalid_utf8_msgpack",
        "malformed_json",
        "wrong_shape",
        "body_over_limit",
        "zero_jobs",
        "too_many_jobs",
        "invalid_runs",
        "wrong_media_type",
        "no_media_type",
    ],
)
def test_error_paths(service: str, body: bytes, content_type: str | None, status: int, code: str) -> None:
    got, headers, answer = request(service, "POST", "/v1/run", body, content_type)
    assert got == status, answer
    assert headers["content-type"] == JSON and error_code(answer) == code
    assert json.loads(answer)["error"]["message"]


def test_unknown_endpoint_and_errors_naming_the_job(service: str) -> None:
    status, _, body = request(service, "GET", "/v2/run")
    assert status == 404 and error_code(body) == "not_found"
    status, _, body = request(
        service, "POST", "/v1/run", json.dumps({"jobs": [JOBS[0], {**JOBS[0], "runs": 0}]}).encode(), JSON
    )
    assert status == 422 and "job 1: runs must be between 1 and 16" in body.decode()


def test_auth(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with server("--workers", "1", "--token-file", str(token_file)) as (address, _):
        body = json.dumps({"jobs": JOBS[:1]}).encode()
        status, _, answer = request(address, "POST", "/v1/run", body, JSON)
        assert status == 401 and error_code(answer) == "unauthorized"
        assert request(address, "POST", "/v1/run", body, JSON, token="wrong")[0] == 401
        assert request(address, "GET", "/v1/info")[0] == 401
        assert request(address, "POST", "/v1/run", body, JSON, token="s3cret")[0] == 200
        assert request(address, "GET", "/healthz")[0] == 200  # probes need no token
        with pytest.raises(RemoteExecutorError, match="401"):
            RemoteExecutor(address, retries=0).run([Job("def f(a):\n    return a", "1")])
        assert RemoteExecutor(address, token="s3cret").run([Job("def f(a):\n    return a", "1")])[0].output == "1"


def test_saturation_refuses_with_429_and_retries_complete_every_job() -> None:
    with server("--workers", "1", "--max-queue", "4", "--max-jobs-per-request", "4") as (address, _):
        body = json.dumps({"jobs": [{"program": SLOW, "input": SLOW_INPUT}] * 2}).encode()
        answers: list[tuple[int, dict]] = []

        def hit() -> None:
            status, headers, _ = request(address, "POST", "/v1/run", body, JSON)
            answers.append((status, headers))

        threads = [threading.Thread(target=hit) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = [status for status, _ in answers]
        assert statuses.count(429) >= 1 and statuses.count(200) >= 2, statuses
        assert all(headers.get("retry-after") == "1" for status, headers in answers if status == 429)
        # The client's retries complete every job, once, in order.
        jobs = [Job("def f(n):\n    return sum(range(n)) + n", str(10**5 + i)) for i in range(24)]
        remote = RemoteExecutor(address, batch_size=2, concurrency=6, retries=50, backoff_s=0.05)
        outcomes = remote.run(jobs)
        assert [o.output for o in outcomes] == [str(sum(range(10**5 + i)) + 10**5 + i) for i in range(24)]
        metrics = request(address, "GET", "/metrics")[2].decode()
        rejected = next(line for line in metrics.splitlines() if line.startswith("azr_rejected_busy_total "))
        assert int(rejected.split()[1]) >= 1


def test_graceful_shutdown_answers_requests_in_flight() -> None:
    with server("--workers", "1") as (address, process):
        body = json.dumps({"jobs": [{"program": SLOW, "input": SLOW_INPUT}] * 2}).encode()
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(request(address, "POST", "/v1/run", body, JSON)[0]))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert answers == [200, 200, 200]
        assert process.wait(timeout=30) == 0
        with pytest.raises(OSError):
            request(address, "GET", "/healthz")


def test_remote_executor_spreads_over_hosts_and_names_a_dead_one() -> None:
    with server("--workers", "1") as (first, _), server("--workers", "1") as (second, _):
        jobs = [Job("def f(a):\n    return a * 3", str(i)) for i in range(20)]
        remote = RemoteExecutor([first, second], batch_size=2)
        assert [o.output for o in remote.run(jobs)] == [str(3 * i) for i in range(20)]
        served = [
            int(line.split()[1])
            for address in (first, second)
            for line in request(address, "GET", "/metrics")[2].decode().splitlines()
            if line.startswith('azr_requests_total{endpoint="/v1/run",code="200"}')
        ]
        assert len(served) == 2 and all(count >= 3 for count in served), served
        # One dead host among live ones: its batches are retried elsewhere.
        mixed = RemoteExecutor(["127.0.0.1:9", first], batch_size=2, retries=3, backoff_s=0.01)
        assert [o.output for o in mixed.run(jobs)] == [str(3 * i) for i in range(20)]
    # A fleet that cannot be reached: the jobs come back `internal`, naming the host, never as a
    # verdict on the programs; a comparison it cannot make raises.
    dead = RemoteExecutor("127.0.0.1:9", retries=1, backoff_s=0.01)
    [outcome] = dead.run(jobs[:1])
    assert outcome.status == "internal" and outcome.matches is None
    assert re.search(r"127\.0\.0\.1:9.*ConnectionRefusedError", outcome.error or ""), outcome
    with pytest.raises(RemoteExecutorError, match=r"127\.0\.0\.1:9.*ConnectionRefusedError"):
        dead.equal("1", "1")


def test_bad_remote_arguments() -> None:
    with pytest.raises(ValueError, match="at least one URL"):
        RemoteExecutor([])
    with pytest.raises(ValueError, match="not an http"):
        RemoteExecutor("ftp://x")
    with pytest.raises(ValueError, match="batch_size"):
        RemoteExecutor("127.0.0.1:1", batch_size=0)


def test_one_structured_log_line_per_request(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with server("--workers", "1", "--log-format", "json", log=log) as (address, _):
        request(address, "POST", "/v1/run", json.dumps({"jobs": JOBS[:2]}).encode(), JSON)
        request(address, "GET", "/v2/nothing")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    requests = [line for line in lines if line["message"] == "request"]
    assert [(r["level"], r["method"], r["path"], r["status"]) for r in requests] == [
        ("INFO", "POST", "/v1/run", 200),
        ("INFO", "GET", "/v2/nothing", 404),
    ]
    assert all(r["ms"] >= 0 for r in requests)
    assert lines[-1]["message"] == "stopped"


def test_serve_refuses_impossible_limits(tmp_path: Path) -> None:
    flags = ("--max-queue", "4", "--max-jobs-per-request", "8")
    with pytest.raises(RemoteExecutorError, match=r"exited with 1.*cannot exceed --max-queue"):
        with local_service(*flags, log=tmp_path / "service.log"):
            pass


def test_selfplay_runs_its_programs_on_a_fleet(service: str, tmp_path: Path) -> None:
    from azr.config import SelfPlayConfig
    from azr.selfplay import make_executor

    assert isinstance(make_executor(SelfPlayConfig()), Executor)
    token = tmp_path / "token"
    token.write_text("unused\n")
    fleet = make_executor(
        SelfPlayConfig(executor_urls=f" http://{service} , {service},", executor_token_file=str(token))
    )
    assert isinstance(fleet, RemoteExecutor) and [h.url for h in fleet.hosts] == [f"http://{service}"] * 2
    seen: list[tuple[int, int]] = []
    outcomes = fleet.run(
        [Job("def f(a):\n    return a + 1", str(i)) for i in range(3)], progress=lambda *p: seen.append(p)
    )
    assert [o.output for o in outcomes] == ["1", "2", "3"] and seen[-1] == (3, 3)
