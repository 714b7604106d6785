"""Judging benchmark answers: programs run in the WebAssembly sandbox under the evaluation policy,
CRUXEval answers compared as data by the self-play judge, math answers by a maintained grader.

- **CRUXEval-O**: the answer is the output; correct when it equals `f(input)` as data.
- **CRUXEval-I**: the answer is an input; correct when `f(answer)` equals the recorded output.
- **HumanEval(+)**: the answer is the program; the benchmark's own `check(candidate)` runs against it.
- **MBPP+**: the answer is the program; the task's base and plus inputs run in one job that calls
  the canonical solution and the candidate on fresh copies of each input and compares the outputs
  as evalplus does (`MBPP_HARNESS`). A task passes when every input does.
- **Math**: the answer is the final answer (from the completion's last `\\boxed{}`); compared with
  `math-verify` (sympy underneath), so `\\frac12`, `0.5` and `\\dfrac{1}{2}` agree.

The candidate program runs in a namespace of its own (`exec` inside the job), so nothing it defines,
not even a function named `f`, can collide with the harness that calls it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from azr.eval.benchmarks import BENCHMARKS, Item, last_boxed
from azr.executor import ExecutorProtocol, Job, Outcome
from azr.executor.progress import ProgressCallback
from azr.parsing import extract_answer, fenced_blocks, parse_solution
from azr.tasks import TaskType


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str


def answer_of(item: Item, completion: str) -> str | None:
    """What a completion answers, for its benchmark; None when it answers nothing."""
    kind = BENCHMARKS[item.benchmark].kind
    if kind == "crux-output":
        return parse_solution(TaskType.DEDUCTION, completion).value  # type: ignore[return-value]
    if kind == "crux-input":
        return parse_solution(TaskType.ABDUCTION, completion).value  # type: ignore[return-value]
    if kind == "code":
        # Inside <answer> when the format holds, else the completion's last Python block.
        answer = extract_answer(completion).text
        for text in (answer, completion):
            if text:
                blocks = [body for tag, body in fenced_blocks(text) if tag in ("python", "py", "python3", None)]
                if blocks:
                    return blocks[-1]
        return None
    return last_boxed(completion)


def judge(
    executor: ExecutorProtocol,
    items: Sequence[Item],
    answers: Sequence[str | None],
    *,
    progress: ProgressCallback | bool | None = False,
) -> list[Verdict]:
    """Verdicts on `answers[i]` for `items[i]`, with one executor call for all the programs
    (`progress` as `Executor.run` takes it), after one for the MBPP+ references not yet timed."""
    verdicts: list[Verdict | None] = [None] * len(items)
    jobs: list[Job] = []
    owners: list[int] = []
    references = mbpp_references(executor, [i for i, a in zip(items, answers, strict=True) if a is not None])
    for index, (item, answer) in enumerate(zip(items, answers, strict=True)):
        reference = references.get(_reference_key(item)) if item.benchmark == "mbpp+" else None
        if answer is None:
            verdicts[index] = Verdict(False, "no answer in the completion")
        elif BENCHMARKS[item.benchmark].kind == "math":
            verdicts[index] = grade_math(item.reference, answer)
        elif isinstance(reference, str):
            verdicts[index] = Verdict(False, reference)
        else:
            jobs.append(_job(item, answer, reference))
            owners.append(index)
    outcomes = executor.run(jobs, progress=progress) if jobs else []
    for index, outcome in zip(owners, outcomes, strict=True):
        verdicts[index] = _verdict(items[index], outcome)
    return [v if v is not None else Verdict(False, "not judged") for v in verdicts]


# Time limits. HumanEval's harness gives a program 3 s natively; CPython in WebAssembly runs 2-4x
# slower. An MBPP+ task runs all its tests in one job: the canonical solution's time on them (timed
# once per process, in a job of its own) plus `MBPP_TIME_FACTOR` times that for the candidate, and a
# fixed allowance, as evalplus derives its limits from the ground truth's time.
HUMANEVAL_TIMEOUT_S = 10.0
MBPP_TIME_FACTOR = 4.0
MBPP_ALLOWANCE_S = 2.0
MBPP_REFERENCE_TIMEOUT_S = 120.0

# Seconds the canonical solution of an MBPP+ task took on all its tests, or why it cannot run here;
# keyed by task and solution text. Evaluation during self-play times each task once per run.
_REFERENCE_SECONDS: dict[tuple[str, str], float | str] = {}


def _reference_key(item: Item) -> tuple[str, str]:
    return item.id, item.row["canonical_solution"]


def mbpp_references(executor: ExecutorProtocol, items: Sequence[Item]) -> dict[tuple[str, str], float | str]:
    """The canonical solution's seconds on each MBPP+ task among `items` (or why it cannot run
    here), timing those not yet timed in this process."""
    tasks = {_reference_key(item): item for item in items if item.benchmark == "mbpp+"}
    todo = [item for key, item in tasks.items() if key not in _REFERENCE_SECONDS]
    jobs = [_mbpp_job(item, "", "reference", MBPP_REFERENCE_TIMEOUT_S) for item in todo]
    for item, outcome in zip(todo, executor.run(jobs, progress=False) if jobs else [], strict=True):
        _REFERENCE_SECONDS[_reference_key(item)] = (
            outcome.elapsed_s
            if outcome.status == "ok"
            else f"the canonical solution does not run here: {outcome.status}: {outcome.error}"
        )
    return {key: _REFERENCE_SECONDS[key] for key in tasks}


def _mbpp_job(item: Item, answer: str, compare: str, timeout_s: float) -> Job:
    row = item.row
    program = MBPP_HARNESS.format(reference=row["canonical_solution"], candidate=answer)
    cases = ", ".join(_mbpp_inputs(row))
    arguments = f"[{cases}], {row['entry_point']!r}, {float(row.get('atol') or 0)!r}, {compare!r}"
    return Job(program, arguments, policy="evaluation", timeout_s=timeout_s)


def _job(item: Item, answer: str, reference_s: float | None) -> Job:
    kind = BENCHMARKS[item.benchmark].kind
    row = item.row
    if kind == "crux-output":
        return Job(row["code"], row["input"], expected=answer, policy="evaluation")
    if kind == "crux-input":
        return Job(row["code"], answer, expected=row["output"], policy="evaluation")
    if item.benchmark == "mbpp+":
        reference_s = MBPP_REFERENCE_TIMEOUT_S if reference_s is None else reference_s
        compare = "set" if row["entry_point"] in MBPP_SET_TASKS else "exact"
        compare = "not_none" if row["entry_point"] in MBPP_NOT_NONE_TASKS else compare
        timeout = min(3600.0, MBPP_ALLOWANCE_S + (1 + MBPP_TIME_FACTOR) * reference_s)
        return _mbpp_job(item, answer, compare, timeout)
    # HumanEval(+): the benchmark's check function, run on the candidate. The tests run in the
    # candidate's namespace, as the benchmark's harness runs them (they may use helpers the prompt
    # defines).
    program = _isolated(answer) + (
        f"\nexec({row['test']!r}, _candidate)\n"
        f"def f(_):\n    _candidate['check'](_candidate[{row['entry_point']!r}])\n    return True\n"
    )
    return Job(program, "0", expected="True", policy="evaluation", timeout_s=HUMANEVAL_TIMEOUT_S)


def _isolated(source: str) -> str:
    """Program text that runs `source` in a namespace of its own, `_candidate`."""
    return f"_candidate = {{'__name__': '__candidate__'}}\nexec({source!r}, _candidate)"


# evalplus's special oracles for MBPP+: tasks whose outputs compare as sets, and tasks whose outputs
# only say whether there was a match (None or not).
MBPP_SET_TASKS = frozenset(
    ["similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
     "intersection_array", "find_dissimilar", "Diff"]
)  # fmt: skip
MBPP_NOT_NONE_TASKS = frozenset(["check_str", "text_match_three", "text_starta_endb"])

# One MBPP+ task in one job: the canonical solution and the candidate, each in a namespace of its
# own, on a fresh copy of every test input; outputs compared as evalplus compares them (`==`, sets or
# None-ness for the special tasks, floats within `atol` — 1e-6 when the task gives none — with
# numpy's default relative tolerance). The job returns ("ok", tests) or where and why it failed.
# With compare="reference" it only runs the canonical solution (to time it).
MBPP_HARNESS = """
import copy as _copy
_reference = {{"__name__": "__reference__"}}
exec({reference!r}, _reference)
_candidate = {{"__name__": "__candidate__"}}
exec({candidate!r}, _candidate)


def _floats(value):
    return isinstance(value, float) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value)
    )


def _close(got, want, atol):
    if isinstance(want, (list, tuple)):
        return (
            isinstance(got, (list, tuple))
            and len(got) == len(want)
            and all(_close(g, w, atol) for g, w in zip(got, want))
        )
    try:
        return abs(got - want) <= atol + 1e-7 * abs(want)
    except TypeError:
        return False


def _equal(got, want, atol, compare):
    if compare == "set":
        equal = set(got) == set(want)
    elif compare == "not_none":
        equal = got == want if isinstance(got, bool) else (got is not None) == (want is not None)
    else:
        equal = got == want
    atol = atol or (1e-6 if _floats(want) else 0)
    return bool(equal) or (atol != 0 and _close(got, want, atol))


def _why(error):
    return (type(error).__name__ + ": " + str(error))[:300]


def f(cases, entry, atol, compare):
    if compare == "reference":
        for arguments in cases:
            _reference[entry](*_copy.deepcopy(arguments))
        return ("ok", len(cases))
    if entry not in _candidate:
        return ("missing", entry)
    for position, arguments in enumerate(cases):
        try:
            want = _reference[entry](*_copy.deepcopy(arguments))
        except Exception as error:
            return ("reference", position, _why(error))
        try:
            got = _candidate[entry](*_copy.deepcopy(arguments))
            equal = _equal(got, want, atol, compare)
        except Exception as error:
            return ("error", position, _why(error))
        if not equal:
            return ("wrong", position, repr(got)[:200], repr(want)[:200])
    return ("ok", len(cases))
"""


def _verdict(item: Item, outcome: Outcome) -> Verdict:
    if outcome.internal:
        return Verdict(False, f"internal: {outcome.error}")
    if outcome.status != "ok":
        return Verdict(False, f"{outcome.status}: {outcome.error}")
    if item.benchmark != "mbpp+":
        return Verdict(bool(outcome.matches), "ok" if outcome.matches else f"wrong: got {outcome.output}")
    try:
        result = ast.literal_eval(outcome.output or "")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return Verdict(False, f"the harness's result cannot be read: {(outcome.output or '')[:100]}")
    base = len(item.row["base_input"])
    if result[0] == "ok":
        return Verdict(True, f"ok ({base} base + {result[1] - base} plus tests)")
    if result[0] == "missing":
        return Verdict(False, f"the program defines no function {result[1]!r}")
    which = "base" if result[1] < base else "plus"
    test = f"{which} test {result[1] if result[1] < base else result[1] - base}"
    if result[0] == "reference":
        return Verdict(False, f"{test}: the canonical solution fails here: {result[2]}")
    if result[0] == "error":
        return Verdict(False, f"{test}: {result[2]}")
    return Verdict(False, f"{test}: got {result[2]}, expected {result[3]}")


def _mbpp_inputs(row: dict) -> list[str]:
    """Each base and plus input as the text of an argument tuple; lists become tuples where the
    task's contract asserts tuples (JSON has no tuples)."""
    tuples, inner = _tuple_parameters(row)
    # evalplus stores the complex numbers of the `cmath` tasks as their text ('1j', '(1+2j)').
    complex_text = "cmath" in row["canonical_solution"]
    texts = []
    for arguments in [*row["base_input"], *row["plus_input"]]:
        converted = []
        for position, value in enumerate(arguments):
            if position in tuples and isinstance(value, list):
                value = _tuples(value)
            elif position in inner and isinstance(value, list):
                value = [_tuples(v) if isinstance(v, list) else v for v in value]
            elif complex_text and isinstance(value, str):
                value = complex(value)
            converted.append(value)
        texts.append(repr(tuple(converted)))
    return texts


def _tuples(value: list) -> tuple:
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)


def _tuple_parameters(row: dict) -> tuple[set[int], set[int]]:
    names = re.search(rf"def\s+{re.escape(row['entry_point'])}\s*\((.*?)\)\s*:", row["canonical_solution"], re.S)
    parameters = [p.split("=")[0].split(":")[0].strip() for p in names.group(1).split(",")] if names else []
    contract = row.get("contract") or ""
    whole = {
        i for i, p in enumerate(parameters) if re.search(rf"isinstance\(\s*{re.escape(p)}\s*,\s*tuple\)", contract)
    }
    inner = {
        i
        for i, p in enumerate(parameters)
        if re.search(rf"isinstance\(\s*(\w+)\s*,\s*tuple\)\s+for\s+\1\s+in\s+{re.escape(p)}\b", contract)
    }
    return whole, inner - whole


def grade_math(reference: str, answer: str) -> Verdict:
    """Whether `answer` is mathematically the reference answer (math-verify)."""
    from math_verify import parse, verify

    def latex(text: str) -> str:
        text = text.replace("\\$", "")  # a dollar sign is a unit, as the text units math-verify drops
        return text if "$" in text or "\\boxed" in text else f"${text}$"

    if " ".join(answer.split()) == " ".join(str(reference).split()):
        return Verdict(
            bool(answer.strip()), "ok"
        )  # the same text (which the grader cannot always read, e.g. `I(0) e^{...}`)
    try:
        gold, given = parse(latex(str(reference))), parse(latex(answer))
        equal = bool(gold) and bool(given) and verify(gold, given)
    except Exception as error:  # noqa: BLE001 - an answer the grader cannot read is wrong, not fatal
        return Verdict(False, f"the grader could not read it: {type(error).__name__}")
    return Verdict(equal, "ok" if equal else f"wrong: {answer[:100]!r} is not {str(reference)[:100]!r}")


def predictions(path: str) -> list[dict]:
    """`{"benchmark", "id", "answer"}` per line; a malformed line is an error naming it."""
    rows = []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answer = row["answer"]
                rows.append({"benchmark": row["benchmark"], "id": str(row["id"]), "answer": answer})
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f'{path}:{number}: expected {{"benchmark", "id", "answer"}}: {error}') from None
    return rows
