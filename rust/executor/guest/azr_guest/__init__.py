"""The harness that runs inside the sandbox (CPython on WASI, pre-initialised by componentize-py).

Everything at module level runs once, at build time, and is frozen into the component's memory
snapshot. Each call then checks one job statically, runs it in a fresh namespace with its own
builtins, and reports a typed outcome. No exception escapes: one would trap the instance.

The WebAssembly sandbox is the security boundary. The checks here give AZR's semantics (no
clocks, randomness, I/O or introspection a solver could not reason about) and keep one job from
changing what the next one sees when an instance is reused.
"""

import gc
import marshal
import sys
import warnings

import wit_world
from componentize_py_types import Err

from . import data, isolation, script
from .bytecode import Unsettled, fast_check
from .checks import Rejection, check, compile_checked, parse, parse_call

ERROR_TEXT_LIMIT = 1000

_STATUS = {
    "syntax": wit_world.Status.SYNTAX,
    "forbidden": wit_world.Status.FORBIDDEN,
    "error": wit_world.Status.ERROR,
}


def _clean(text):
    """Text the component model can carry: lone surrogates become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _describe(exc):
    text = _clean(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


# Programs already compiled and checked by this instance. AZR runs one program on many inputs (an
# induction task's ten, a proposal's solver checks), and a reused instance then compiles it once.
_CHECKED = {}
_CHECKED_LIMIT = 256


def _check_program(source, reuse, evaluation):
    """Compile and check the program under the active policy: the fast bytecode check, or the AST
    check when that cannot tell. Returns (code, shared_risk). A rejection is not remembered: it
    costs no more the second time than the first."""
    key = (source, reuse, evaluation)
    checked = _CHECKED.get(key)
    if checked is None:
        code = compile_checked(source, "exec", "program")
        try:
            shared_risk = fast_check(code, reuse)
        except Unsettled:
            shared_risk = check(parse(source, "exec", "program"))
        if len(_CHECKED) >= _CHECKED_LIMIT:
            _CHECKED.clear()
        checked = _CHECKED[key] = (code, shared_risk)
    return checked


def _source(job):
    return job.program if not job.imports else job.imports + "\n" + job.program


def compile_job(job):
    """The job's program compiled and checked under its policy, marshalled; None when refused."""
    try:
        code, _ = _check_program(_source(job), False, job.evaluation)
    except Rejection:
        return None
    return marshal.dumps(code)


def _prepare(job):
    """Everything that can refuse a job before it runs: (program, arguments, shared_risk). The input
    is read as data before any of the program runs, so nothing it says reaches the program's names;
    `arguments` is then `(args, kwargs)`. Under the evaluation policy an input that is not data is
    a benchmark's own (CRUXEval's use lambdas, calls, even the program's globals): it is then the
    compiled call `f(<input>)`, evaluated in the program's namespace as the benchmark's harness does."""
    if job.code is not None:
        # Compiled and checked by `compile_job` in a fresh instance; what it may share is unknown here.
        program, shared_risk = marshal.loads(job.code), True
    else:
        program, shared_risk = _check_program(_source(job), job.reuse, job.evaluation)
    try:
        arguments = data.arguments(job.input)
    except data.NotData as exc:
        if not job.evaluation:
            raise data.input_rejection(exc) from None
        tree = parse_call(job.input)
        shared_risk = shared_risk or check(tree)
        arguments = compile_checked(tree, "eval", "input")
    return program, arguments, shared_risk


def _call_f(namespace, arguments):
    if not isinstance(arguments, tuple):
        return eval(arguments, namespace)
    function = namespace.get("f")
    if function is None:
        raise NameError("name 'f' is not defined")
    args, kwargs = arguments
    return function(*args, **kwargs)


def run_job(job):
    isolation.reset_interpreter_state(job.salt, job.reuse, job.evaluation)
    try:
        program, arguments, shared_risk = _prepare(job)
    except Rejection as rejection:
        return wit_world.Outcome(_STATUS[rejection.status], None, _clean(str(rejection)), None, False, None, None)

    namespace = isolation.job_namespace(job.reuse, job.evaluation)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = isolation.CappedSink(job.output_limit)
    status, output, error, value = wit_world.Status.OK, None, None, None
    spacers = isolation.heap_spacers(job.salt)
    try:
        exec(program, namespace)
        result = _call_f(namespace, arguments)
        output = _clean(repr(result))
        if len(output) > job.output_limit:
            status, output = wit_world.Status.OUTPUT_LIMIT, None
            error = f"the result's repr is longer than {job.output_limit} characters"
        else:
            value = _judged(result, output)
    except MemoryError as exc:
        status, output, error = wit_world.Status.MEMORY, None, _describe(exc)
    except BaseException as exc:
        status, output, error = wit_world.Status.ERROR, None, _describe(exc)
    finally:
        sys.stdout, sys.stderr = saved
    violations = isolation.violations
    if violations.forbidden is not None:
        status, output, error = wit_world.Status.FORBIDDEN, None, violations.forbidden
    elif violations.output_limit:
        status, output = wit_world.Status.OUTPUT_LIMIT, None
        error = f"printed more than {job.output_limit} characters"
    if status != wit_world.Status.OK:
        value = None
    namespace.clear()
    del spacers
    return wit_world.Outcome(status, output, error, value, shared_risk, None, None)


def run_script_job(job):
    finished, exit_code, stdout, stderr, problem = script.run_script(job)
    if finished:
        return wit_world.Outcome(wit_world.Status.OK, _clean(stdout), None, None, True, exit_code, _clean(stderr))
    status = wit_world.Status.MEMORY if problem == "memory" else wit_world.Status.OUTPUT_LIMIT
    error = "MemoryError" if problem == "memory" else f"printed more than {job.output_limit} characters"
    return wit_world.Outcome(status, _clean(stdout), error, None, True, None, _clean(stderr))


class Unjudgeable(Exception):
    """A result that is not data but whose repr reads as data."""


def _judged(result, output):
    """The canonical text the host compares with an expected value's. Runs after the program, on
    the result only: the expected value never enters the interpreter the program runs in."""
    try:
        return data.judged_result(result, output)
    except data.NotData as reason:
        raise Unjudgeable(str(reason)) from None


class WitWorld(wit_world.WitWorld):
    def run(self, job):
        try:
            return run_script_job(job) if job.script else run_job(job)
        except BaseException as exc:
            error = f"harness: {_describe(exc)}"
            return wit_world.Outcome(wit_world.Status.INTERNAL, None, error, None, True, None, None)

    def compile(self, job):
        try:
            return compile_job(job)
        except BaseException:
            return None  # `run` compiles it again and reports what went wrong

    def canonical(self, text):
        try:
            return data.canonical_text(text)
        except BaseException as exc:
            raise Err(_describe(exc)) from None


# Jobs like the ones the sandbox runs, run once while the snapshot is made: the type caches, interned
# names and allocator pools they fill are then part of every fresh instance instead of being built
# (and their pages copied) by each job. Everything they could change is reset before each job.
_WARM_UP = (
    ("def f(a, b):\n    return sorted(set(a) | {b}), {k: v for k, v in zip(a, a)}", "[3, 1, 2], 4"),
    (
        "import collections, itertools, math, re\n"
        "def f(s):\n    c = collections.Counter(s)\n"
        "    return max(c.items()), list(itertools.accumulate(map(ord, s)))[-1], math.gcd(12, 18),"
        " re.findall('[a-z]+', s)",
        "'hello world'",
    ),
    ("def f(n):\n    return [i * i for i in range(n) if i % 2] + list(str(n)), f'{n:>4}', n / 3", "10"),
    ("class A:\n    def __init__(self, x):\n        self.x = x\ndef f(x):\n    return A(x).x // 0", "1"),
    ("def f(t, d):\n    return t[::-1], ' '.join(t).upper(), tuple(t), sorted(d.items())", "('a', 'b'), {'k': 1.5}"),
)


def _warm_up():
    for program, text in _WARM_UP:
        job = wit_world.Job(program, text, "", 1 << 16, 0, False, False, False, None)
        run_job(job)
        # And as a job whose code the host kept from `compile`.
        run_job(wit_world.Job(program, text, "", 1 << 16, 0, False, False, False, compile_job(job)))
        data.canonical_text(text)
    isolation.reset_interpreter_state(0, False)


_warm_up()
warnings.simplefilter("ignore")
# Everything alive now is part of the snapshot. Freezing it keeps the collector from walking (and
# so writing to, and so copying) those pages in every fresh instance.
gc.collect()
gc.freeze()
