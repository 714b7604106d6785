"""`RemoteExecutor`: the `Executor` API over one or more `azr-executor serve` hosts.

    from azr.executor import RemoteExecutor, Job
    ex = RemoteExecutor(["http://exec-1:8000", "http://exec-2:8000"], token="...")
    outcomes = ex.run(jobs)            # same outcomes, in the same order, as Executor.run
    ex.equal("[1, 2]", "[1,2]")

Jobs go in batches (msgpack) over kept-alive connections, spread over the hosts; a batch refused
with 429 or lost to a connection error is retried, with backoff, on the next host. A batch that still fails after
every retry comes back as `internal` outcomes that name the host and what it said (the self-play
loop re-runs them once, then leaves them out); an answer that says the request itself is wrong
(401, 413, 422, ...) raises `RemoteExecutorError`.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import msgpack

from azr._executor import RemoteExecutorError
from azr.executor.jobs import STATUSES, Job, Outcome, checked_jobs, checked_pairs
from azr.executor.progress import ProgressCallback, progress_callback

RETRYABLE = {429, 500, 502, 503, 504}


class _Unavailable(Exception):
    """Every attempt at a batch failed in a way that retrying might have fixed."""


class _Host:
    """One service address with a small pool of persistent connections."""

    def __init__(self, url: str, timeout_s: float, connections: int) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._connect: Callable[[], http.client.HTTPConnection] = (
            (lambda: http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s))
            if parts.scheme == "https"
            else (lambda: http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s))
        )
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(maxsize=connections)
        # A host that refused a connection is skipped until then, so one dead host among live ones
        # costs one failed attempt per cool-off rather than a share of every batch's retries.
        self.down_until = 0.0
        self._strikes = 0

    def mark(self, reachable: bool) -> None:
        if reachable:
            self._strikes = 0
            self.down_until = 0.0
        else:
            self._strikes += 1
            self.down_until = time.monotonic() + min(30.0, 0.5 * 2 ** (self._strikes - 1))

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            try:
                self._idle.put_nowait(connection)
            except queue.Full:
                connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


class RemoteExecutor:
    """The executor of one or more `azr-executor serve` hosts, with the `Executor` API.

    `batch_size` jobs go in one request (at most the service's `max_jobs_per_request`);
    `concurrency` requests are in flight per host; a batch is tried up to `retries + 1` times.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        timeout_s: float = 600.0,
        *,
        batch_size: int = 64,
        concurrency: int = 4,
        retries: int = 8,
        backoff_s: float = 0.2,
    ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("RemoteExecutor needs at least one URL")
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("concurrency", concurrency, 1),
            ("retries", retries, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int of at least {low}, got {value!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.hosts = [_Host(url, timeout_s, concurrency) for url in urls]
        self.token = token
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _next_host(self, avoid: _Host | None) -> _Host:
        """The next host in turn that is up and, when there is a choice, not the one that just failed."""
        with self._lock:
            start = next(self._turn)
        now = time.monotonic()
        order = [self.hosts[(start + i) % len(self.hosts)] for i in range(len(self.hosts))]
        up = [host for host in order if host.down_until <= now] or order
        return next((host for host in up if host is not avoid), up[0])

    def _post(self, path: str, payload: dict) -> dict:
        """Send one batch, retrying on another host after 429s and connection errors."""
        body = msgpack.packb(payload, use_bin_type=True)
        failures: list[str] = []
        host = None
        for attempt in range(self.retries + 1):
            host = self._next_host(avoid=host)
            try:
                status, headers, answer = host.request("POST", path, body, self._headers())
            except (OSError, http.client.HTTPException) as error:
                host.mark(reachable=False)
                failures.append(f"{host.url}: {type(error).__name__}: {error}")
                delay = self.backoff_s * 2**attempt
            else:
                host.mark(reachable=True)
                if status == 200:
                    return msgpack.unpackb(answer, raw=False)
                message = _error_message(answer)
                if status not in RETRYABLE:
                    raise RemoteExecutorError(f"{host.url}{path} answered {status}: {message}")
                failures.append(f"{host.url}: {status} {message}")
                delay = max(float(headers.get("retry-after", 0) or 0), self.backoff_s * 2**attempt)
            if attempt < self.retries:
                time.sleep(min(delay, 30.0))
        raise _Unavailable(f"{path} failed after {self.retries + 1} attempts; last: {failures[-1]}")

    def run(self, jobs: Iterable[Job], *, progress: ProgressCallback | bool | None = None) -> list[Outcome]:
        """Run `jobs` on the hosts; outcomes come back in job order, as from `Executor.run`. A batch
        no host could run after every retry comes back `internal`, saying why.

        `progress=True` draws a bar on stderr; a callable is called as `progress(done, total)`.
        """
        jobs = checked_jobs(jobs)
        batches = [jobs[i : i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        callback, close = progress_callback(progress, len(jobs))
        done = 0
        lock = threading.Lock()

        def send(batch: list[Job]) -> list[Outcome]:
            nonlocal done
            payload = {"jobs": [_job_payload(job) for job in batch]}
            try:
                outcomes = [_outcome(raw) for raw in self._post("/v1/run", payload)["outcomes"]]
            except _Unavailable as failure:
                outcomes = [Outcome("internal", None, str(failure), 0.0) for _ in batch]
            if len(outcomes) != len(batch):
                raise RemoteExecutorError(f"the service answered {len(outcomes)} outcomes for {len(batch)} jobs")
            if callback is not None:
                with lock:
                    done += len(batch)
                    callback(done, len(jobs))
            return outcomes

        try:
            with ThreadPoolExecutor(max_workers=max(1, len(self.hosts) * self.concurrency)) as pool:
                return [outcome for outcomes in pool.map(send, batches) for outcome in outcomes]
        finally:
            close()

    def equal(self, a: str, b: str) -> bool:
        return self.equal_many([(a, b)])[0]

    def equal_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]:
        """Value equality of each pair, as `Executor.equal_many`; raises `RemoteExecutorError` when
        no host could decide (a failure is never a `False`)."""
        pairs = checked_pairs(pairs)
        batches = [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]

        def send(batch: list[tuple[str, str]]) -> list[bool]:
            try:
                return self._post("/v1/equal", {"pairs": batch})["equal"]
            except _Unavailable as failure:
                raise RemoteExecutorError(str(failure)) from None

        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts) * self.concurrency)) as pool:
            return [bool(value) for answer in pool.map(send, batches) for value in answer]

    def info(self) -> dict:
        """`GET /v1/info` of the first host."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, _, answer = self.hosts[0].request("GET", "/v1/info", None, headers)
        if status != 200:
            raise RemoteExecutorError(f"{self.hosts[0].url}/v1/info answered {status}: {_error_message(answer)}")
        return json.loads(answer)

    def __repr__(self) -> str:
        return f"RemoteExecutor({[h.url for h in self.hosts]!r}, batch_size={self.batch_size})"


def _job_payload(job: Job) -> dict:
    payload: dict = {"program": job.program, "input": job.input, "runs": job.runs}
    if job.imports:
        payload["imports"] = job.imports
    if job.expected is not None:
        payload["expected"] = job.expected
    if job.policy != "selfplay":
        payload["policy"] = job.policy
    if job.timeout_s is not None:
        payload["timeout_s"] = job.timeout_s
    if job.script:
        payload["script"] = True
    return payload


def _outcome(raw: dict) -> Outcome:
    status = raw["status"]
    if status not in STATUSES:
        raise RemoteExecutorError(f"the service answered an unknown status {status!r}")
    return Outcome(
        status=status,
        output=raw.get("output"),
        error=raw.get("error"),
        elapsed_s=float(raw["elapsed_s"]),
        matches=raw.get("matches"),
        exit_code=raw.get("exit_code"),
        stderr=raw.get("stderr"),
    )


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


@contextmanager
def local_service(*flags: str, log: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `azr-executor serve --port 0 <flags>` on this machine; yields its `host:port` and process.

    The service's log goes to `log` (a file, never a pipe that could fill and stall it). On exit the
    service gets SIGTERM and is waited for, so in-flight requests are answered first.
    """
    command = [sys.executable, "-m", "azr.executor_cli", "serve", "--port", "0", *flags]
    with open(log or os.devnull, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = process.stdout.readline()
        if "listening on http://" not in line:
            process.wait(timeout=30)
            detail = log.read_text()[-2000:] if log else "(pass log= to see its log)"
            raise RemoteExecutorError(f"azr-executor serve exited with {process.returncode}: {detail}")
        yield line.split("http://", 1)[1].strip(), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
