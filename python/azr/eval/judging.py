"""Judging benchmark answers: programs run in the WebAssembly sandbox under the evaluation policy,
CRUXEval answers compared as data by the self-play judge, math answers by a maintained grader.

- **CRUXEval-O**: the answer is the output; correct when it equals `f(input)` as data.
- **CRUXEval-I**: the answer is an input; correct when `f(answer)` equals the recorded output.
- **HumanEval**: the answer is the program; the benchmark's own `check(candidate)` runs against it.
- **MBPP+, HumanEval+**: the answer is the program; the task's base and plus inputs run in one job
  that calls the canonical solution and the candidate on fresh copies of each input and compares
  the outputs as evalplus does (`MBPP_HARNESS`). A task passes when every input does.
- **LiveCodeBench**: the answer is the program; a job per test (`azr.eval.livecodebench`).
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

from azr.eval import livecodebench
from azr.eval.benchmarks import BENCHMARKS, Item, last_boxed
from azr.executor import ExecutorProtocol, Job, Outcome
from azr.executor.progress import ProgressCallback
from azr.parsing import extract_answer, extract_code, parse_solution
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
        return (extract_code(answer) if answer else None) or extract_code(completion)
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
    plan = plan_judging(executor, items, answers)
    outcomes = executor.run(plan.jobs, progress=progress) if plan.jobs else []
    return plan.verdicts(outcomes)


@dataclass
class JudgingPlan:
    """What judging a batch takes: the verdicts known without running anything, and the jobs for the
    remaining answers (`owners[j]` is the index of job j's item; LiveCodeBench items have a job per
    test, the others one)."""

    items: Sequence[Item]
    known: dict[int, Verdict]
    jobs: list[Job]
    owners: list[int]

    def verdicts(self, outcomes: Sequence[Outcome]) -> list[Verdict]:
        """Every item's verdict, given the outcomes of `jobs` (from any executor)."""
        verdicts = dict(self.known)
        grouped: dict[int, list[Outcome]] = {}
        for index, outcome in zip(self.owners, outcomes, strict=True):
            grouped.setdefault(index, []).append(outcome)
        for index, results in grouped.items():
            verdicts[index] = _verdict(self.items[index], results)
        return [verdicts[index] for index in range(len(self.items))]


def plan_judging(executor: ExecutorProtocol, items: Sequence[Item], answers: Sequence[str | None]) -> JudgingPlan:
    """The jobs that judge `answers` (running the differential references not yet run, on `executor`)."""
    plan = JudgingPlan(items, {}, [], [])
    references = differential_references(executor, [i for i, a in zip(items, answers, strict=True) if a is not None])
    for index, (item, answer) in enumerate(zip(items, answers, strict=True)):
        reference = references.get(_reference_key(item)) if item.benchmark in DIFFERENTIAL else None
        if answer is None:
            plan.known[index] = Verdict(False, "no answer in the completion")
        elif BENCHMARKS[item.benchmark].kind == "math":
            plan.known[index] = grade_math(item.reference, answer)
        elif isinstance(reference, str):
            plan.known[index] = Verdict(False, reference)
        else:
            jobs = _jobs(item, answer, reference)
            if not jobs:
                plan.known[index] = Verdict(False, "the problem has no tests")
            plan.jobs += jobs
            plan.owners += [index] * len(jobs)
    return plan


# Time limits. HumanEval's harness gives a program 3 s natively; CPython in WebAssembly runs 2-4x
# slower. An MBPP+ task runs all its tests in one job: the canonical solution's time on them (timed
# once per process, in a job of its own) plus `MBPP_TIME_FACTOR` times that for the candidate, and a
# fixed allowance, as evalplus derives its limits from the ground truth's time.
HUMANEVAL_TIMEOUT_S = 10.0
MBPP_TIME_FACTOR = 4.0
MBPP_ALLOWANCE_S = 2.0
MBPP_REFERENCE_TIMEOUT_S = 120.0

# The largest text of canonical outputs a reference job hands back for the candidates' jobs to read
# (larger ones are recomputed in each candidate's job).
MBPP_OUTPUTS_TEXT_LIMIT = 256 << 10


@dataclass(frozen=True)
class Reference:
    """An MBPP+ task's canonical solution, run once: its seconds on all the tests, and its outputs
    as data text when they are data and small (else None: each candidate's job recomputes them)."""

    seconds: float
    outputs: str | None


# Keyed by task and solution text; evaluation during self-play runs each task's reference once.
_REFERENCES: dict[tuple[str, str], Reference | str] = {}


# Benchmarks judged by differential testing against their canonical solution (evalplus's sets).
DIFFERENTIAL = ("mbpp+", "humaneval+")


def _reference_key(item: Item) -> tuple[str, str]:
    return item.benchmark + "/" + item.id, _reference_source(item)


def _reference_source(item: Item) -> str:
    """The canonical solution as a program (HumanEval+ stores only the body after the prompt)."""
    if item.benchmark == "humaneval+":
        return item.row["prompt"] + item.row["canonical_solution"]
    return item.row["canonical_solution"]


def differential_references(
    executor: ExecutorProtocol, items: Sequence[Item]
) -> dict[tuple[str, str], Reference | str]:
    """The canonical solution's run on each MBPP+ or HumanEval+ task among `items` (or why it cannot
    run here), running those not yet run in this process."""
    tasks = {_reference_key(item): item for item in items if item.benchmark in DIFFERENTIAL}
    todo = [item for key, item in tasks.items() if key not in _REFERENCES]
    jobs = [_mbpp_job(item, "", "reference", None, MBPP_REFERENCE_TIMEOUT_S) for item in todo]
    for item, outcome in zip(todo, executor.run(jobs, progress=False) if jobs else [], strict=True):
        _REFERENCES[_reference_key(item)] = (
            Reference(outcome.elapsed_s, _data_text(ast.literal_eval(outcome.output or "")[2]))
            if outcome.status == "ok"
            else f"the canonical solution does not run here: {outcome.status}: {outcome.error}"
        )
    return {key: _REFERENCES[key] for key in tasks}


def _data_text(text: str | None) -> str | None:
    """`text` when it reads as a Python literal (so the guest reads it as data), else None."""
    if text is None:
        return None
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text


def _mbpp_job(item: Item, answer: str, compare: str, expected: str | None, timeout_s: float) -> Job:
    row = item.row
    program = MBPP_HARNESS.format(
        reference=_reference_source(item), candidate=answer, outputs_limit=MBPP_OUTPUTS_TEXT_LIMIT
    )
    cases = ", ".join(_mbpp_inputs(row))
    atol = float(row.get("atol") or 0)
    arguments = f"[{cases}], {row['entry_point']!r}, {atol!r}, {compare!r}, {expected or 'None'}"
    return Job(program, arguments, policy="evaluation", timeout_s=timeout_s)


def _jobs(item: Item, answer: str, reference: Reference | None) -> list[Job]:
    kind = BENCHMARKS[item.benchmark].kind
    row = item.row
    if kind == "crux-output":
        return [Job(row["code"], row["input"], expected=answer, policy="evaluation")]
    if kind == "crux-input":
        return [Job(row["code"], answer, expected=row["output"], policy="evaluation")]
    if item.benchmark == "livecodebench":
        return livecodebench.jobs(row, item.reference, answer)
    if item.benchmark in DIFFERENTIAL:
        reference = reference or Reference(MBPP_REFERENCE_TIMEOUT_S, None)
        compare = MBPP_ORACLES.get(row["entry_point"], "exact")
        timeout = min(3600.0, MBPP_ALLOWANCE_S + (1 + MBPP_TIME_FACTOR) * reference.seconds)
        return [_mbpp_job(item, answer, compare, reference.outputs, timeout)]
    # HumanEval: the benchmark's check function, run on the candidate. The tests run in the
    # candidate's namespace, as the benchmark's harness runs them (they may use helpers the prompt
    # defines).
    program = _isolated(answer) + (
        f"\nexec({row['test']!r}, _candidate)\n"
        f"def f(_):\n    _candidate['check'](_candidate[{row['entry_point']!r}])\n    return True\n"
    )
    return [Job(program, "0", expected="True", policy="evaluation", timeout_s=HUMANEVAL_TIMEOUT_S)]


def _isolated(source: str) -> str:
    """Program text that runs `source` in a namespace of its own, `_candidate`."""
    return f"_candidate = {{'__name__': '__candidate__'}}\nexec({source!r}, _candidate)"


# evalplus's special oracles (by entry point): outputs that compare as sets; outputs that
# only say whether there was a match (None or not); a ground truth evalplus accepts anything against
# (Mbpp/164) or also 0 (Mbpp/295); and two tasks whose statement allows a second reading, accepted
# too (Mbpp/581: the height is the pyramid's, not the face's; Mbpp/558: shorter numbers padded with
# leading zeros).
MBPP_ORACLES = {
    **dict.fromkeys(
        ["similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
         "intersection_array", "find_dissimilar", "Diff"],
        "set",
    ),
    **dict.fromkeys(["check_str", "text_match_three", "text_starta_endb"], "not_none"),
    "are_equivalent": "any",
    "sum_div": "or_zero",
    "surface_Area": "pyramid_height",
    "digit_distance_nums": "padded_digits",
    # HumanEval+: any root of the polynomial is a right answer.
    "find_zero": "poly_root",
}  # fmt: skip

# One MBPP+ task in one job: the canonical solution and the candidate, each in a namespace of its
# own, on a fresh copy of every test input; outputs compared as evalplus compares them (`==`, sets or
# None-ness for the special tasks, floats within `atol` — 1e-6 when the task gives none — with
# numpy's default relative tolerance). The job returns ("ok", tests) or where and why it failed.
# With compare="reference" it only runs the canonical solution (to time it), and returns its outputs'
# text when small; given that text (`expected`), a candidate's job does not run the reference again.
MBPP_HARNESS = """
import copy as _copy
_reference = {{"__name__": "__reference__"}}
_candidate = {{"__name__": "__candidate__"}}
exec({candidate!r}, _candidate)


def _floats(value):
    return isinstance(value, float) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value)
    )


def _close(got, want, atol):
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_close(g, w, atol) for g, w in zip(got, want))
    return abs(got - want) <= atol + 1e-7 * abs(want)


def _second_reading(compare, arguments):
    if compare == "pyramid_height":
        edge, height = arguments
        return round(edge**2 + 2 * edge * ((edge / 2) ** 2 + height**2) ** 0.5)
    first, second = (str(number) for number in arguments)
    width = max(len(first), len(second))
    return sum(abs(int(a) - int(b)) for a, b in zip(first.zfill(width), second.zfill(width)))


def _equal(got, want, atol, compare, arguments):
    if compare == "poly_root":
        return abs(sum(c * got**i for i, c in enumerate(arguments[0]))) <= (atol or 1e-6)
    if compare == "set":
        return set(got) == set(want)
    if compare == "not_none":
        matched = want is not None
        return got == matched if isinstance(got, bool) else (got is not None) == matched
    equal = got == want
    if compare == "any":
        return True
    if compare == "or_zero":
        equal = equal or got == 0
    elif compare in ("pyramid_height", "padded_digits"):
        second = _second_reading(compare, arguments)
        equal = equal or (abs(got - second) <= atol if compare == "pyramid_height" else got == second)
    atol = atol or (1e-6 if _floats(want) else 0)
    if equal or atol == 0:
        return bool(equal)
    try:
        return type(got) is type(want) and _close(got, want, atol)
    except TypeError:
        return False


def _why(error):
    return (type(error).__name__ + ": " + str(error))[:300]


def f(cases, entry, atol, compare, expected):
    if expected is None:
        exec({reference!r}, _reference)
    if compare == "reference":
        texts, size = [], 0
        for arguments in cases:
            output = _reference[entry](*_copy.deepcopy(arguments))
            if texts is not None:
                texts.append(repr(output))
                size += len(texts[-1]) + 2
                if size > {outputs_limit}:
                    texts = None
            del output
        return ("ok", len(cases), None if texts is None else "[" + ", ".join(texts) + "]")
    if entry not in _candidate:
        return ("missing", entry)
    for position, arguments in enumerate(cases):
        try:
            want = expected[position] if expected is not None else _reference[entry](*_copy.deepcopy(arguments))
        except Exception as error:
            return ("reference", position, _why(error))
        try:
            got = _candidate[entry](*_copy.deepcopy(arguments))
            equal = _equal(got, want, atol, compare, arguments)
        except Exception as error:
            return ("error", position, _why(error))
        if not equal:
            return ("wrong", position, repr(got)[:200], repr(want)[:200])
    return ("ok", len(cases))
"""


def _verdict(item: Item, outcomes: list[Outcome]) -> Verdict:
    if item.benchmark == "livecodebench":
        internal = next((o for o in outcomes if o.internal), None)
        if internal is not None:
            return Verdict(False, f"internal: {internal.error}")
        why = livecodebench.failure(item.reference, outcomes)
        return Verdict(why is None, why or f"ok ({len(outcomes)} tests)")
    [outcome] = outcomes
    if outcome.internal:
        return Verdict(False, f"internal: {outcome.error}")
    if outcome.status != "ok":
        return Verdict(False, f"{outcome.status}: {outcome.error}")
    if item.benchmark not in DIFFERENTIAL:
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
