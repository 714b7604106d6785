"""Format-guided decoding: each task-role's answer format as a regular expression that the rollout
engine constrains sampling to (vLLM's structured outputs; xgrammar's logits processor for the HF
engine), and the allowed-token masks with which the trainer computes the same constrained
log-probs the engine sampled from.

The grammar is built from `azr.parsing`'s constants and accepts a subset of what the parser does:

    {thinking}</think>\\n<answer>\\n```tag\\n{body}\\n```\\n```tag\\n{body}\\n```\\n</answer>

Thinking and bodies are printable ASCII and newlines without `<`, so neither can write the tags
that end them (a body with `</answer>` in it would end the parser's answer early), and bodies hold
no backtick, so none can close its fence early (programs compare with `>`). Their lengths are
bounded so that the whole answer fits the token budget: in a byte-level vocabulary every token
covers at least one byte, so an ASCII answer of at most `budget` characters takes at most `budget`
tokens and always finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, cached_property

import torch

from azr.parsing import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    FENCE,
    INDUCTION_INPUT_BLOCK,
    INDUCTION_MESSAGE_BLOCK,
    PROPOSAL_BLOCKS,
    SOLUTION_BLOCK,
    THINK_END,
)
from azr.tasks import Role, TaskType

THINK_CHARS = r"[ -;=-~\n]"  # printable ASCII and newline, without "<"
BODY_FIRST = r"[!-;=-_a-~]"  # printable, not a space, a backtick or "<"
BODY_CHARS = r"[ -;=-_a-~\n]"  # printable ASCII and newline, without the backtick and "<"
# The share of the free characters (the budget less the format's own) that thinking may use.
THINK_SHARE = 0.25


def answer_blocks(role: Role, task: TaskType, induction_inputs: int) -> tuple[str, ...]:
    """The fenced blocks of a task-role's answer, in order."""
    if role is Role.SOLVE:
        return (SOLUTION_BLOCK[task],)
    if task is TaskType.INDUCTION:
        return (INDUCTION_INPUT_BLOCK,) * induction_inputs + (INDUCTION_MESSAGE_BLOCK,)
    return PROPOSAL_BLOCKS


def _literal(text: str) -> str:
    return "".join(r"\n" if c == "\n" else "\\" + c if c in r".^$*+?()[]{}|\/" else c for c in text)


def _opening() -> str:
    return f"{THINK_END}\n{ANSWER_OPEN}\n"


def _block(tag: str) -> tuple[str, str]:
    return f"{FENCE}{tag}\n", f"\n{FENCE}"


def _closing() -> str:
    return f"\n{ANSWER_CLOSE}"


def format_regex(blocks: Sequence[str], budget: int) -> str:
    """The answer with `blocks`, at most `budget` characters long."""
    fixed = len(_opening()) + len(_closing()) + (len(blocks) - 1)
    fixed += sum(len(open_) + len(close) for open_, close in map(_block, blocks))
    free = budget - fixed - len(blocks)  # each body has at least one character
    if free < 0:
        raise ValueError(
            f"a guided answer with blocks {list(blocks)} needs at least {fixed + len(blocks)} tokens; "
            f"max_response_tokens is {budget}"
        )
    think = int(free * THINK_SHARE)
    body = (free - think) // len(blocks)
    bodies = []
    for tag in blocks:
        open_, close = _block(tag)
        bodies.append(f"{_literal(open_)}{BODY_FIRST}{BODY_CHARS}{{0,{body}}}{_literal(close)}")
    between = _literal("\n")
    return f"{THINK_CHARS}{{0,{think}}}{_literal(_opening())}{between.join(bodies)}{_literal(_closing())}"


def task_role_regex(role: Role, task: TaskType, induction_inputs: int, budget: int) -> str:
    return format_regex(answer_blocks(role, task, induction_inputs), budget)


class Grammars:
    """The format grammars compiled for one tokenizer (xgrammar), each once; nothing is prepared
    before the first grammar is needed."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    @cached_property
    def _compile(self):
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
        return cache(xgrammar.GrammarCompiler(info).compile_regex)

    def compiled(self, regex: str):
        return self._compile(regex)

    def logits_processor(self, regexes: Sequence[str]):
        """A transformers logits processor that constrains row `i` of one `generate` call to
        `regexes[i]` (one use only: make a new one for every call)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor([self.compiled(regex) for regex in regexes])

    def allowed(self, regex: str, token_ids: Sequence[int]) -> torch.Tensor:
        """Which tokens the grammar allowed before each of `token_ids`: `[len, ⌈V/32⌉]` int32
        bitmask rows (the layout `azr_kernels` takes), replayed from the grammar's start."""
        import xgrammar

        matcher = xgrammar.GrammarMatcher(self.compiled(regex))
        rows = xgrammar.allocate_token_bitmask(max(len(token_ids), 1), self.vocab_size)[: len(token_ids)]
        for position, token in enumerate(token_ids):
            matcher.fill_next_token_bitmask(rows, position)
            if not matcher.accept_token(int(token)):
                raise ValueError(f"token {token} at position {position} is outside the grammar {regex[:80]!r}…")
        return rows
