"""The executor as another trainer's reward: code completions against unit tests in the sandbox, for
TRL (inside a real `GRPOTrainer` step) and veRL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azr.executor import Executor
from azr.integrations.code_tests import CodeTests, run_tests
from azr.integrations.trl import code_tests_reward
from azr.integrations.verl import compute_score, compute_score_batch


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(timeout_s=5.0)


ADD = "def add(a, b):\n    return a + b"
STDIN = {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}
ASSERTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\nDone."


def test_tests_in_every_format_decide_the_verdict(executor: Executor) -> None:
    sums = "a, b = map(int, input().split())\nprint(a + b)"
    cases = [
        (ADD, ASSERTS, (1, 1)),  # (passed, total): a program's asserts are one test
        (ADD, {"test_list": ASSERTS}, (1, 1)),
        (ADD, json.dumps({"test_list": ASSERTS}), (1, 1)),
        (ADD, {"test": "def check(f):\n    assert f(2, 2) == 4", "entry_point": "add"}, (1, 1)),
        ("def add(a, b):\n    return a - b", ASSERTS, (0, 1)),
        (sums, STDIN, (2, 2)),
        (sums, json.dumps(STDIN), (2, 2)),
        ("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)", STDIN, (1, 2)),
        ("while True:\n    pass", STDIN, (0, 2)),
        (None, STDIN, (0, 2)),
    ]
    results = run_tests(executor, [c[0] for c in cases], [c[1] for c in cases], timeout_s=1.0)
    assert [(r.passed, r.total) for r in results] == [c[2] for c in cases], [r.reason for r in results]
    assert results[7].reason == "case 1: '0\\n' (expected '7\\n')"
    assert results[8].reason.startswith("case 0: 'timeout")
    assert results[9].reason == "no code block"
    assert (results[7].score(), results[7].score(partial_credit=True)) == (0.0, 0.5)
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        CodeTests.parse({"inputs": ["1", "2"], "outputs": ["1"]})


def test_the_trl_reward_function_scores_completions_from_the_dataset_column(executor: Executor) -> None:
    details: list = []
    reward = code_tests_reward(executor, tests_column="tests", details=details)
    completions = [fenced(ADD), [{"role": "assistant", "content": fenced("def add(a, b):\n    return 0")}], "no code"]
    assert reward(completions, tests=[ASSERTS] * 3, prompts=["p"] * 3) == [1.0, 0.0, 0.0]
    assert [d.reason for d in details][2] == "no code block"
    with pytest.raises(KeyError, match="no 'tests' column"):
        reward(completions, other=[1, 2, 3])


def test_verl_compute_score(monkeypatch: pytest.MonkeyPatch) -> None:
    sums = fenced("a, b = map(int, input().split())\nprint(a + b)")
    assert compute_score("codecontests", sums, json.dumps(STDIN)) == 1.0
    assert compute_score("codecontests", "no code", STDIN) == 0.0
    detailed = compute_score_batch(["x", "x"], [sums, fenced("print(3)")], [STDIN, STDIN], return_details=True)
    assert [(d["score"], d["passed"], d["total"]) for d in detailed] == [(1.0, 2, 2), (0.0, 1, 2)]
    monkeypatch.setenv("AZR_PARTIAL_CREDIT", "1")
    assert compute_score("x", fenced("print(3)"), STDIN) == 0.5


def test_the_trl_reward_inside_a_real_grpo_step(tmp_path: Path, executor: Executor) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from azr.integrations.code_tests import extract_code
    from azr.models import tiny_qwen2

    policy = tiny_qwen2(seed=0)
    inner = code_tests_reward(executor, tests_column="tests")
    seen: list[tuple[list, list, list[float]]] = []

    def reward(completions: list, **columns: object) -> list[float]:
        rewards = inner(completions, **columns)
        seen.append((list(completions), list(columns["tests"]), rewards))  # type: ignore[call-overload]
        return rewards

    reward.__name__ = "code_tests"
    rows = [{"prompt": f"Write add. Example {i}:\n```python\n", "tests": json.dumps(ASSERTS)} for i in range(4)]
    config = trl.GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-4,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = trl.GRPOTrainer(
        model=policy.model,
        reward_funcs=[reward],
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=policy.tokenizer,
    )
    trainer.train()
    assert seen, "the reward function was never called"
    for completions, tests, rewards in seen:
        verdicts = run_tests(executor, [extract_code(c) for c in completions], tests)
        assert rewards == [v.score() for v in verdicts]
    assert any("reward" in key for row in trainer.state.log_history for key in row)
