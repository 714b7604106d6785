"""The judge under attack: answers that try to be scored correct without solving the task, and honest
answers written in different but equal ways. Everything goes through the public judging path
(`proposal_check`, `proposed_triplet`, `answer_check`, `run_checks`, `correct`) and the real
executor, in strict and in batch mode.

A cheat is written as the policy would write it: the text of a deduction answer (```output), an
abduction answer (```input) or an induction answer (a program), against a task made the way
self-play makes it (the program's output recorded by a validation run)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from azr.executor import Executor, Job
from azr.parsing import Proposal
from azr.tasks import InductionTask, TaskType, Triplet
from azr.verify import answer_check, correct, proposal_check, proposed_triplet, run_checks

REVERSE = "def f(a):\n    return sorted(a)[::-1]"
TABLE = "TABLE = [0, [3, 2, 1]]\ndef f(a):\n    return sorted(a)[::-1]"
HELPER = "def g(x):\n    return x * 2\ndef f(a):\n    return g(a) + 1"
IDENTITY = "def f(a):\n    return a"
GLOBAL_HELPER = "def g(x):\n    return x\ndef f(a):\n    return g(a) + 1"
DOUBLE = "def f(a):\n    return a * 2"
ALWAYS_EQUAL = "type('A', (), {'__eq__': lambda s, o: True})()"


@dataclass(frozen=True)
class Case:
    name: str
    task: TaskType
    program: str  # the task's program (deduction/abduction) or the program whose pairs are hidden (induction)
    input: str  # the task's input (deduction/abduction) or the inputs, separated by ';' (induction)
    answer: str


def ded(name: str, program: str, given: str, answer: str) -> Case:
    return Case(name, TaskType.DEDUCTION, program, given, answer)


def abd(name: str, program: str, given: str, answer: str) -> Case:
    return Case(name, TaskType.ABDUCTION, program, given, answer)


def ind(name: str, answer: str, program: str = DOUBLE, inputs: str = "1;2;3;4") -> Case:
    return Case(name, TaskType.INDUCTION, program, inputs, answer)


def subclass_cheat(base: str, value: str, imports: str = "") -> str:
    """A program answering with an instance of a subclass of a built-in type that equals, hashes
    like and prints like whatever it is compared with."""
    return (
        f"{imports}class X({base}):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    def __hash__(self):\n        return 0\n"
        "    def __repr__(self):\n        return '6'\n"
        f"def f(a):\n    return X({value})"
    )


# A program that goes looking for the judge inside the sandbox (through routes the static check
# cannot see) and replaces everything it finds that could decide a match.
POISONER = """
def f(a):
    get = object.__getattribute__
    walk = get(object, ''.join(['__sub', 'classes__']))
    patched = 0
    seen = set()
    stack = list(walk())
    while stack:
        cls = stack.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        try:
            stack.extend(get(cls, ''.join(['__sub', 'classes__']))())
        except Exception:
            pass
        if not str(getattr(cls, '__module__', '')).startswith('azr_guest'):
            continue
        for item in list(vars(cls).values()):
            try:
                space = get(item, ''.join(['__glo', 'bals__']))
            except Exception:
                continue
            for key, value in list(space.items()):
                if callable(value) and any(w in key for w in ('canonical', 'judge', 'equal', 'match', 'value')):
                    space[key] = lambda *args, **kwargs: 'data:i0xc'
                    patched += 1
    return patched
"""

CHEATS = [
    # Deduction answers that compute the output instead of stating it.
    ded("calls_the_program", REVERSE, "[1, 2, 3]", "f([1, 2, 3])"),
    ded("reads_a_program_global", TABLE, "[1, 2, 3]", "TABLE[1]"),
    ded("calls_a_program_helper", HELPER, "3", "g(3) + 1"),
    ded("eval_of_a_call", REVERSE, "[1, 2, 3]", "eval('f([1, 2, 3])')"),
    ded("builtins_eval", REVERSE, "[1, 2, 3]", "__import__('builtins').eval('f([1, 2, 3])')"),
    ded("lambda_call", REVERSE, "[1, 2, 3]", "(lambda: f([1, 2, 3]))()"),
    ded("comprehension", REVERSE, "[1, 2, 3]", "[x for x in f([1, 2, 3])]"),
    ded("attribute_call", REVERSE, "[1, 2, 3]", "f.__call__([1, 2, 3])"),
    ded("walrus", REVERSE, "[1, 2, 3]", "(r := f([1, 2, 3]))"),
    ded("conditional", REVERSE, "[1, 2, 3]", "f([1, 2, 3]) if True else 0"),
    ded("boolean_operator", REVERSE, "[1, 2, 3]", "0 or f([1, 2, 3])"),
    ded("builtin_calls", REVERSE, "[1, 2, 3]", "list(reversed(sorted([1, 2, 3])))"),
    ded("subscript_of_data", REVERSE, "[1, 2, 3]", "[[3, 2, 1]][0]"),
    ded("f_string", REVERSE, "[1, 2, 3]", "f'{f([1, 2, 3])}'"),
    # Deduction answers that are data but not the output.
    ded("equals_everything", REVERSE, "[1, 2, 3]", ALWAYS_EQUAL),
    ded("the_repr_as_a_string", REVERSE, "[1, 2, 3]", "'[3, 2, 1]'"),
    ded("tuple_for_a_list", REVERSE, "[1, 2, 3]", "(3, 2, 1)"),
    ded("deque_for_a_list", REVERSE, "[1, 2, 3]", "deque([3, 2, 1])"),
    ded("true_for_one", "def f(a):\n    return len(a)", "'x'", "True"),
    ded("float_for_int", "def f(a):\n    return len(a)", "'x'", "1.0"),
    ded("int_for_float", "def f(a):\n    return a / 2", "4", "2"),
    ded("int_keys_for_bool_keys", "def f(a):\n    return {a: 'x'}", "True", "{1: 'x'}"),
    ded("frozenset_for_set", "def f(a):\n    return set(a)", "[1, 2]", "frozenset({1, 2})"),
    ded("counter_for_dict", "def f(a):\n    return {x: 1 for x in a}", "'ab'", "Counter({'a': 1, 'b': 1})"),
    ded("nan_for_a_number", "def f(a):\n    return a + 1", "1", "nan"),
    ded("ellipsis_for_a_list", REVERSE, "[1, 2, 3]", "[3, 2, ...]"),
    ded("power_bomb", REVERSE, "[1, 2, 3]", "9 ** 9 ** 9"),
    ded("repetition_bomb", REVERSE, "[1, 2, 3]", "[0] * 10 ** 9"),
    ded("deep_nesting", REVERSE, "[1, 2, 3]", "[" * 5000 + "]" * 5000),
    ded("unhashable_key", REVERSE, "[1, 2, 3]", "{[3, 2, 1]: 1}"),
    # Abduction inputs that are code, not data.
    abd("input_equals_everything", IDENTITY, "5", ALWAYS_EQUAL),
    abd("input_rebinds_a_global", GLOBAL_HELPER, "10", "(g := lambda x: 10) and 0"),
    abd("input_calls_the_program", "def f(a):\n    return a + 1", "5", "f(4) - 1"),
    abd("input_names_the_program", "def f(a):\n    return a is f", "1", "f"),
    abd("input_unpacks", IDENTITY, "5", "*[5]"),
    abd("input_unpacks_keywords", IDENTITY, "5", "**{'a': 5}"),
    abd("keyword_with_a_call", IDENTITY, "5", "a=int('5')"),
    abd("input_prints", IDENTITY, "5", "print('x') or 5"),
    abd("input_imports", IDENTITY, "5", "__import__('os').getpid() and 5"),
    abd("input_closes_the_call", IDENTITY, "5", "5); (6"),
    abd("input_bomb", "def f(a):\n    return a > 0", "1", "10 ** 10 ** 10"),
    # Induction programs that return something other than the hidden outputs.
    ind(
        "object_equal_to_everything", "class A:\n    def __eq__(s, o):\n        return True\ndef f(a):\n    return A()"
    ),
    ind("repr_that_lies", "class A:\n    def __repr__(s):\n        return '6'\ndef f(a):\n    return A()"),
    ind(
        "class_attribute_lies",
        "class A:\n    __class__ = int\n    def __repr__(s):\n        return '6'\ndef f(a):\n    return A()",
    ),
    ind("recursive_list", "def f(a):\n    x = []\n    x.append(x)\n    return x"),
    ind("generator", "def f(a):\n    return (x for x in [a * 2])"),
    ind("poisons_the_judge", POISONER),
    *[
        ind(f"subclass_of_{base.lower()}", subclass_cheat(base, value, imports))
        for base, value, imports in [
            ("int", "6", ""),
            ("float", "6", ""),
            ("str", "'6'", ""),
            ("bytes", "b'6'", ""),
            ("list", "[6]", ""),
            ("tuple", "(6,)", ""),
            ("dict", "{6: 6}", ""),
            ("set", "{6}", ""),
            ("frozenset", "{6}", ""),
            ("Counter", "'6'", "from collections import Counter\n"),
            ("OrderedDict", "", "from collections import OrderedDict\n"),
            ("deque", "[6]", "from collections import deque\n"),
            ("Fraction", "6", "from fractions import Fraction\n"),
        ]
    ],
]

# An output of the program on the left, and the same value written otherwise.
HONEST = [
    ded("set_order", "def f(a):\n    return set(a)", "[3, 1, 2]", "{2, 3, 1}"),
    ded("dict_order", "def f(a):\n    return {k: len(k) for k in a}", "['bb', 'a']", "{'a': 1, 'bb': 2}"),
    ded("double_quotes", IDENTITY, "'hello'", '"hello"'),
    ded("no_spaces", IDENTITY, "[1, 2, 3]", "[1,2,3]"),
    ded("many_spaces", IDENTITY, "[1, 2, 3]", " [ 1 ,  2 , 3 ] "),
    ded("escape_for_newline", IDENTITY, "'a\\nb'", '"a\\x0ab"'),
    ded("escape_for_accent", IDENTITY, "'é'", "'\\xe9'"),
    ded("big_int", "def f(a):\n    return 2 ** a", "100", "1267650600228229401496703205376"),
    ded("big_int_as_power", "def f(a):\n    return 10 ** a", "30", "10 ** 30"),
    ded("nested_reordered", IDENTITY, "{'a': [1, {2, 3}], 'b': (4, 5)}", "{'b': (4, 5), 'a': [1, {3, 2}]}"),
    ded("empty_set", "def f(a):\n    return set(a)", "[]", "set()"),
    ded("frozenset", "def f(a):\n    return frozenset(a)", "[2, 1]", "frozenset({1, 2})"),
    ded("empty_frozenset", "def f(a):\n    return frozenset(a)", "[]", "frozenset()"),
    ded("negative_zero", "def f(a):\n    return -a", "0.0", "-0.00"),
    ded("negative_zero_is_zero", "def f(a):\n    return -a", "0.0", "0.0"),
    ded("float_digits", "def f(a):\n    return a + 0.2", "0.1", "0.30000000000000004"),
    ded("infinity", "def f(a):\n    return float(a)", "'inf'", "inf"),
    ded("minus_infinity", "def f(a):\n    return float(a)", "'-inf'", "-inf"),
    ded("not_a_number", "def f(a):\n    return float(a)", "'nan'", "nan"),
    ded("nans_in_a_list", "def f(a):\n    return [float('nan')] * a", "2", "[nan, nan]"),
    ded("one_tuple", IDENTITY, "(1,)", "(1, )"),
    ded(
        "counter",
        "from collections import Counter\ndef f(a):\n    return Counter(a)",
        "'aab'",
        "Counter({'b': 1, 'a': 2})",
    ),
    ded(
        "ordered_dict",
        "from collections import OrderedDict\ndef f(a):\n    return OrderedDict(a)",
        "[(1, 2)]",
        "OrderedDict([(1, 2)])",
    ),
    ded(
        "defaultdict_by_name",
        "from collections import defaultdict\ndef f(a):\n    d = defaultdict(int)\n    d[a] += 1\n    return d",
        "'x'",
        "defaultdict(int, {'x': 1})",
    ),
    ded(
        "defaultdict_as_its_repr",
        "from collections import defaultdict\ndef f(a):\n    d = defaultdict(list)\n    d[a].append(1)\n    return d",
        "'x'",
        "defaultdict(<class 'list'>, {'x': [1]})",
    ),
    ded("deque", "from collections import deque\ndef f(a):\n    return deque(a, maxlen=5)", "[1, 2]", "deque([1, 2])"),
    ded("complex", "def f(a):\n    return complex(a, 2)", "1", "1+2j"),
    ded("bytes", "def f(a):\n    return a.encode()", "'ab'", 'b"ab"'),
    ded("fraction", "from fractions import Fraction\ndef f(a):\n    return Fraction(1, a)", "3", "Fraction(2, 6)"),
    ded("decimal", "from decimal import Decimal\ndef f(a):\n    return Decimal(a)", "'1.10'", "Decimal('1.1')"),
    ded("none", "def f(a):\n    return None", "1", "None"),
    ded("negative_spaced", "def f(a):\n    return -a", "5", "- 5"),
    ded("range", "def f(a):\n    return range(a)", "3", "range(0, 3)"),
    ded(
        "class_text",
        "class P:\n    def __repr__(self):\n        return 'P(1, 2)'\ndef f(a):\n    return P()",
        "1",
        " P(1, 2) ",
    ),
    ded("string_with_class_text", IDENTITY, "\"<class 'int'>\"", "'<class \\'int\\'>'"),
    ded("empty_containers", IDENTITY, "[[], {}, (), '']", '[[],{},(),""]'),
    ded("bit_operators", "def f(a):\n    return a << 3", "1", "~-9"),
    ded("aliased_lists", "def f(a):\n    x = [a]\n    return [x, x]", "1", "[[1], [1]]"),
    abd("keyword_arguments", "def f(a, b):\n    return a - b", "5, 2", "b=2, a=5"),
    abd("another_input", "def f(a):\n    return len(a)", "'abc'", "'xyz'"),
    abd("underscores", "def f(a):\n    return a // 10", "1000", "1_009"),
    abd("set_input", "def f(a):\n    return sorted(a)", "{1, 2}", "{2, 1}"),
    ind("another_program", "def f(x):\n    return x + x"),
    ind(
        "program_with_a_helper_class",
        "class D:\n    def go(self, x):\n        return 2 * x\ndef f(x):\n    return D().go(x)",
    ),
]


def make_task(executor: Executor, case: Case) -> Triplet | InductionTask:
    """The task as self-play makes it: the program's output recorded by a validation run."""
    if case.task is TaskType.INDUCTION:
        inputs = tuple(case.input.split(";"))
        outcomes = executor.run([Job(case.program, given, runs=2) for given in inputs])
        assert all(o.ok for o in outcomes), outcomes
        return InductionTask(case.program, inputs, tuple(o.output or "" for o in outcomes), "doubles")
    proposal = Proposal(case.program, case.input)
    check = proposal_check(proposal)
    run_checks(executor, [check])
    task = proposed_triplet(proposal, check)
    assert task is not None, check.outcomes
    return task


def judge(executor: Executor, cases: list[Case]) -> dict[str, bool]:
    tasks = [make_task(executor, case) for case in cases]
    checks = [answer_check(case.task, task, case.answer) for case, task in zip(cases, tasks, strict=True)]
    run_checks(executor, checks)
    return {case.name: correct(check) for case, check in zip(cases, checks, strict=True)}


@pytest.fixture(params=["strict", "batch"], scope="module")
def executor(request: pytest.FixtureRequest) -> Executor:
    return Executor(timeout_s=3.0, memory_mb=128, mode=request.param)


def test_the_suites_are_as_large_as_promised() -> None:
    assert len(CHEATS) >= 40 and len(HONEST) >= 30
    assert len({c.name for c in CHEATS + HONEST}) == len(CHEATS) + len(HONEST)


def test_no_cheat_is_scored_correct(executor: Executor) -> None:
    started = time.monotonic()
    verdicts = judge(executor, CHEATS)
    assert [name for name, ok in verdicts.items() if ok] == []
    # Bombs in answers are refused by size, not run until the deadline.
    assert time.monotonic() - started < 60


def test_every_honest_answer_is_scored_correct(executor: Executor) -> None:
    verdicts = judge(executor, HONEST)
    assert [name for name, ok in verdicts.items() if not ok] == []


def test_the_poisoner_reaches_the_judge_and_still_fails(strict: Executor) -> None:
    """The harness-poisoning cheat is not vacuous: in a sandbox of its own it does find and replace
    the guest's functions (the policy layer is not the boundary); the verdict does not move,
    because expected values are read before any program runs and compared on the host."""
    [outcome] = strict.run([Job(POISONER, "1")])
    assert outcome.status == "forbidden" or (outcome.ok and int(outcome.output or 0) > 0), outcome
    task = InductionTask(DOUBLE, ("1", "2", "3", "4"), ("2", "4", "6", "8"), "doubles")
    check = answer_check(TaskType.INDUCTION, task, POISONER)
    run_checks(strict, [check])
    assert not correct(check)


@pytest.mark.parametrize(
    ("program", "given", "reason"),
    [
        ("class L(list):\n    pass\ndef f(a):\n    return L(a)", "[1]", "reads as data"),
        ("def f(a):\n    a.append(a)\n    return a", "[1]", "reads as data"),
        ("class A:\n    def __repr__(self):\n        return '[1, 2]'\ndef f(a):\n    return A()", "1", "reads as data"),
        (IDENTITY, "f", "the input must be data"),
        (IDENTITY, "print(1)", "the input must be data"),
        (IDENTITY, "[x for x in 'ab']", "the input must be data"),
        ("def f(a):\n    return (x for x in a)", "[1]", "nondeterministic"),
    ],
)
def test_proposals_the_judge_could_not_judge_are_invalid(
    strict: Executor, program: str, given: str, reason: str
) -> None:
    check = proposal_check(Proposal(program, given))
    run_checks(strict, [check])
    assert proposed_triplet(Proposal(program, given), check) is None
    [outcome] = check.outcomes
    assert reason in f"{outcome.status}: {outcome.error}", outcome


def test_grammar_errors_say_what_is_not_data(strict: Executor) -> None:
    outcomes = strict.run(
        [Job(IDENTITY, text) for text in ("g(1)", "x", "[1][0]", "1 if 1 else 2", "a.b", "lambda: 1", "'%d' % 1")]
    )
    assert [o.status for o in outcomes] == ["forbidden"] * 7
    reasons = [o.error for o in outcomes]
    for fragment, reason in zip(
        ["calls are not data", "name 'x'", "subscript", "conditional", "attribute", "lambda", "does not format"],
        reasons,
        strict=True,
    ):
        assert fragment in (reason or ""), reasons
