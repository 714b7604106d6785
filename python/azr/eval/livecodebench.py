"""LiveCodeBench (code_generation_lite): its tests, the sandbox jobs that run a candidate on them, and
the comparison of outputs, as LiveCodeBench's own runner makes it.

A test is `stdin` (the program runs in the executor's script mode, with that standard input; its
standard output is compared line by line, tokens that are both numbers compared as decimals) or
`functional` (a LeetCode method, `Solution().<func_name>(*arguments)`, arguments one JSON value per
line; the result compared with the JSON output). Each test is a job of its own with its own time
limit. The tests are decoded once, when the benchmark is loaded (`Item.reference`). Private tests are
stored compressed (base64 of zlib of a pickled JSON string); the pickle is read with an unpickler
that builds no objects but strings, so a data file cannot run code here.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import pickle
import zlib
from decimal import Decimal, InvalidOperation

from azr.executor import Job, Outcome

# LiveCodeBench gives a test 6 s natively; CPython in WebAssembly is 2-4x slower.
TEST_TIMEOUT_S = 15.0

# A functional test: the candidate in a namespace of its own, its method called on the arguments.
HARNESS = """
import json as _json

_SOURCE = {candidate!r}


def f(text, name):
    namespace = {{"__name__": "__candidate__"}}
    exec(_SOURCE, namespace)
    arguments = [_json.loads(line) for line in text.split("\\n") if line.strip()]
    target = getattr(namespace["Solution"](), name) if "Solution" in namespace else namespace[name]
    return target(*arguments)
"""


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> None:  # type: ignore[override]
        raise pickle.UnpicklingError(f"the test data names {module}.{name}; only strings are read")


def tests(row: dict) -> list[dict]:
    """The public and private tests of a problem: `{"input", "output", "testtype"}` each."""
    found = json.loads(row.get("public_test_cases") or "[]")
    private = row.get("private_test_cases") or "[]"
    try:
        found += json.loads(private)
    except ValueError:
        text = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(private)))).load()
        if not isinstance(text, str):
            raise ValueError("private_test_cases does not decode to JSON text") from None
        found += json.loads(text)
    return found


def function_name(row: dict) -> str:
    metadata = row.get("metadata") or "{}"
    return str((json.loads(metadata) if isinstance(metadata, str) else metadata).get("func_name") or "")


def jobs(row: dict, cases: list[dict], answer: str) -> list[Job]:
    """A job per test of `cases` (the problem's decoded tests)."""
    program = HARNESS.format(candidate=answer)
    name = function_name(row)
    return [
        Job(answer, t["input"], script=True, timeout_s=TEST_TIMEOUT_S)
        if t["testtype"] == "stdin"
        else Job(program, f"{t['input']!r}, {name!r}", policy="evaluation", timeout_s=TEST_TIMEOUT_S)
        for t in cases
    ]


def failure(cases: list[dict], outcomes: list[Outcome]) -> str | None:
    """Why the candidate fails its tests (the first failed test), or None."""
    for position, (test, outcome) in enumerate(zip(cases, outcomes, strict=True)):
        where = f"test {position} ({test['testtype']})"
        if outcome.status != "ok":
            return f"{where}: {outcome.status}: {outcome.error}"
        if test["testtype"] == "stdin":
            if outcome.exit_code != 0:
                last = (outcome.stderr or "").strip().splitlines()
                return f"{where}: exit code {outcome.exit_code}: {last[-1] if last else ''}"
            if not same_stdout(outcome.output or "", test["output"]):
                return f"{where}: printed {(outcome.output or '')[:200]!r}, expected {test['output'][:200]!r}"
        elif not same_result(outcome.output or "", test["output"]):
            return f"{where}: got {(outcome.output or '')[:200]}, expected {test['output'][:200]}"
    return None


def same_stdout(got: str, want: str) -> bool:
    """Standard outputs equal line by line (surrounding blanks ignored), tokens that are both
    numbers compared as decimals."""
    got_lines = [line.strip() for line in got.strip().splitlines()]
    want_lines = [line.strip() for line in want.strip().splitlines()]
    if got_lines == want_lines:
        return True
    if len(got_lines) != len(want_lines):
        return False
    for a, b in zip(got_lines, want_lines, strict=True):
        tokens_a, tokens_b = a.split(), b.split()
        if len(tokens_a) != len(tokens_b):
            return False
        for x, y in zip(tokens_a, tokens_b, strict=True):
            if x != y and not _same_number(x, y):
                return False
    return True


def _same_number(a: str, b: str) -> bool:
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def same_result(got_repr: str, want_json: str) -> bool:
    """A functional test's result (its repr) equal to the JSON output, tuples read as lists."""
    try:
        got, want = ast.literal_eval(got_repr), json.loads(want_json)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    return _lists(got) == want


def _lists(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value
