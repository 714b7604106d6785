"""Unit tests for code completions, as RL datasets store them, run as script jobs.

Formats `CodeTests.parse` reads (a JSON string of any of them too):
- stdin/stdout cases: `{"inputs": [...], "outputs": [...]}` (APPS, TACO, PRIME, veRL's code data);
- assert-style: `{"test_list": ["assert f(1) == 2", ...]}`, a list of assert lines, or test code as
  one string (MBPP, HumanEval's `check` with `"test"` and `"entry_point"`).

Assert tests run after the program in one script (passed: exit code 0). Each stdin case is a script
of its own (passed: exit code 0 and the same stdout, trailing blanks ignored per line).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from azr.executor import ExecutorProtocol, Job, Outcome
from azr.parsing import extract_code

__all__ = ["CodeTests", "TestResult", "extract_code", "jobs_for", "result_of", "run_tests"]


@dataclass(frozen=True)
class CodeTests:
    asserts: str = ""  # test code run after the program
    stdin: tuple[str, ...] = ()
    stdout: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> CodeTests:
        if isinstance(value, CodeTests):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return cls(asserts=value)
        if isinstance(value, dict):
            if "inputs" in value and "outputs" in value:
                inputs, outputs = list(value["inputs"]), list(value["outputs"])
                if len(inputs) != len(outputs):
                    raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
                return cls(stdin=tuple(map(_text, inputs)), stdout=tuple(map(_text, outputs)))
            if "test_list" in value:
                return cls(asserts="\n".join(value["test_list"]))
            if "test" in value:
                check = f"\ncheck({value['entry_point']})" if value.get("entry_point") else ""
                return cls(asserts=value["test"] + check)
        if isinstance(value, (list, tuple)) and all(isinstance(line, str) for line in value):
            return cls(asserts="\n".join(value))
        raise ValueError(f"unknown test format: {str(value)[:200]}")

    @property
    def total(self) -> int:
        return len(self.stdin) + (1 if self.asserts else 0)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "\n".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class TestResult:
    passed: int
    total: int
    reason: str

    def score(self, partial_credit: bool = False) -> float:
        """1.0 when every test passed (else 0.0); with `partial_credit`, the share that passed."""
        if not self.total:
            return 0.0
        return self.passed / self.total if partial_credit else float(self.passed == self.total)


def jobs_for(program: str, tests: CodeTests, timeout_s: float | None) -> list[Job]:
    jobs = [Job(program + "\n\n" + tests.asserts + "\n", "", script=True, timeout_s=timeout_s)] if tests.asserts else []
    jobs += [Job(program, stdin, script=True, timeout_s=timeout_s) for stdin in tests.stdin]
    return jobs


def result_of(tests: CodeTests, outcomes: Sequence[Outcome]) -> TestResult:
    passed, reasons = 0, []
    outcomes = list(outcomes)
    if tests.asserts:
        outcome = outcomes.pop(0)
        if _finished(outcome):
            passed += 1
        else:
            reasons.append(f"asserts: {_why(outcome)}")
    for position, (want, outcome) in enumerate(zip(tests.stdout, outcomes, strict=True)):
        if _finished(outcome) and _same_stdout(outcome.output or "", want):
            passed += 1
        elif len(reasons) < 3:
            got = (outcome.output or "")[:100] if _finished(outcome) else _why(outcome)
            reasons.append(f"case {position}: {got!r} (expected {want[:100]!r})")
    return TestResult(passed, tests.total, "; ".join(reasons) or "ok")


def _finished(outcome: Outcome) -> bool:
    return outcome.status == "ok" and outcome.exit_code == 0


def _why(outcome: Outcome) -> str:
    if outcome.status != "ok":
        return f"{outcome.status}: {outcome.error}"
    last = (outcome.stderr or "").strip().splitlines()
    return f"exit code {outcome.exit_code}: {last[-1] if last else ''}"


def _same_stdout(got: str, want: str) -> bool:
    lines = [line.rstrip() for line in got.rstrip().splitlines()]
    return lines == [line.rstrip() for line in want.rstrip().splitlines()]


def run_tests(
    executor: ExecutorProtocol,
    programs: Sequence[str | None],
    tests: Sequence[Any],
    *,
    timeout_s: float | None = None,
) -> list[TestResult]:
    """Each program against its tests, all in one executor call; a missing program passes nothing."""
    parsed = [CodeTests.parse(t) for t in tests]
    jobs: list[Job] = []
    spans: list[tuple[int, int] | None] = []
    for program, case in zip(programs, parsed, strict=True):
        if program is None:
            spans.append(None)
            continue
        batch = jobs_for(program, case, timeout_s)
        spans.append((len(jobs), len(jobs) + len(batch)))
        jobs += batch
    outcomes = executor.run(jobs) if jobs else []
    return [
        result_of(case, outcomes[span[0] : span[1]]) if span else TestResult(0, case.total, "no code block")
        for case, span in zip(parsed, spans, strict=True)
    ]
