"""A scripted policy for self-play tests: a rollout engine whose completions are written by a
function of the prompt, so that a test decides what the policy says while the rest of the loop
(parsing, the executor, the judge, rewards, advantages, the update) runs for real.

The completions are tokenized with the policy's tokenizer and their log-probs are computed by the
policy's own model at the sampling temperature, exactly as the trainer computes them: the update on
them is the real update of those texts."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from azr.models import Policy
from azr.rollout import Completion, CompletionCallback, ProgressCallback, SamplingParams
from azr.tasks import Role, TaskType

Writer = Callable[[str], str]


def completion_logprobs(
    model: torch.nn.Module, prompt_ids: Sequence[int], token_ids: Sequence[int], temperature: float
) -> list[float]:
    with torch.no_grad():
        ids = torch.tensor([list(prompt_ids) + list(token_ids)])
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1).tolist()


class ScriptedEngine:
    """A `RolloutEngine` that says what `write(prompt)` returns."""

    def __init__(self, policy: Policy, write: Writer) -> None:
        self.policy = policy
        self.write = write
        self.completions: list[tuple[str, Completion]] = []

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> list[Completion]:
        # Scripted text is what it is: `guides` are taken and not applied (runs that need them use a
        # real engine).
        tokenizer = self.policy.tokenizer
        results = []
        for index, prompt in enumerate(prompts):
            text = self.write(prompt)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            logprobs = completion_logprobs(self.policy.model, prompt_ids, token_ids, params.temperature)
            completion = Completion(tuple(prompt_ids), tuple(token_ids), tuple(logprobs), text, "stop")
            self.completions.append((prompt, completion))
            results.append(completion)
            if on_completion is not None:
                on_completion(index, completion)
            if progress is not None:
                progress(index + 1, len(prompts))
        return results

    def sync_weights(self, model: torch.nn.Module) -> None:
        pass  # the policy's own model writes the log-probs

    def state_dict(self) -> dict[str, int]:
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass


def task_role(prompt: str) -> tuple[Role, TaskType]:
    """Which of the six task-roles a prompt of `azr.prompts` asks for."""
    if "work out the output of the program" in prompt:
        return Role.SOLVE, TaskType.DEDUCTION
    if "find an input for which" in prompt:
        return Role.SOLVE, TaskType.ABDUCTION
    if "write the function `f`" in prompt:
        return Role.SOLVE, TaskType.INDUCTION
    if "inputs for the program below" in prompt:
        return Role.PROPOSE, TaskType.INDUCTION
    if "working backwards from the" in prompt:
        return Role.PROPOSE, TaskType.ABDUCTION
    return Role.PROPOSE, TaskType.DEDUCTION


def block(prompt: str, tag: str) -> str:
    """The body of the last ```tag block of a prompt."""
    return re.findall(rf"```{tag}\n(.*?)\n```", prompt, re.DOTALL)[-1]


def answer(body: str) -> str:
    return f"I will work it out.</think>\n<answer>\n{body}\n</answer>"


def fenced(tag: str, body: str) -> str:
    return f"```{tag}\n{body}\n```"


REVERSE = "def f(x):\n    return sorted(x)[::-1]"
KNOWN_OUTPUTS = {(REVERSE, "[3, 1, 2]"): "[3, 2, 1]"}


def mixed_policy(induction_inputs: int) -> Writer:
    """A scripted policy of mixed quality: valid, invalid and unformatted proposals, right and wrong
    answers, so that every task-role has rewards that differ and advantages that are not zero."""
    turns: Counter[tuple[Role, TaskType]] = Counter()

    def write(prompt: str) -> str:
        role, task = task_role(prompt)
        turn = turns[(role, task)]
        turns[(role, task)] += 1
        # Solver turns go by a cycle of 5: a valid proposal's task and learnability samples are 3
        # solver turns in a row, so a cycle of 3 would give every proposal the same solve rate.
        if turn % (3 if role is Role.PROPOSE else 5) == 2:
            return "I am not sure what to write here."
        if role is Role.PROPOSE and task is TaskType.INDUCTION:
            inputs = "".join(fenced("input", str(i)) + "\n" for i in range(induction_inputs))
            return answer(inputs + fenced("message", "it returns what it gets"))
        if role is Role.PROPOSE:
            program = REVERSE if turn % 3 == 0 else "import os\n" + REVERSE
            return answer(fenced("python", program) + "\n" + fenced("input", "[3, 1, 2]"))
        right = turn % 2 == 0
        if task is TaskType.INDUCTION:
            return answer(fenced("python", "def f(a):\n    return a" if right else "def f(a):\n    return None"))
        program, given = block(prompt, "python"), block(prompt, "input" if task is TaskType.DEDUCTION else "output")
        if task is TaskType.DEDUCTION:
            output = KNOWN_OUTPUTS.get((program, given), given)
            return answer(fenced("output", output if right else "'wrong'"))
        return answer(fenced("input", given if right and program != REVERSE else "[1, 2, 3]" if right else "0"))

    return write
