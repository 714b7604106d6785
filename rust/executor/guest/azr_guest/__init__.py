"""The harness that runs inside the sandbox (CPython on WASI, pre-initialised by componentize-py).

Everything at module level runs once, at build time, and is frozen into the component's memory
snapshot. Each call then checks one job statically, runs it in a fresh namespace with its own
builtins, and reports a typed outcome. No exception escapes: one would trap the instance.

The WebAssembly sandbox is the security boundary. The checks here give AZR's semantics (no
clocks, randomness, I/O or introspection a solver could not reason about) and keep one job from
changing what the next one sees when an instance is reused.
"""

import collections
import decimal
import fractions
import gc
import sys
import warnings

import wit_world
from componentize_py_types import Err

from . import isolation
from .bytecode import Unsettled, fast_call_check, fast_check, fast_value_check
from .checks import Rejection, check, compile_checked, parse, parse_call

ERROR_TEXT_LIMIT = 1000

# Names of value types that appear in repr texts, for `equal`.
REPR_NAMES = {
    "inf": float("inf"),
    "nan": float("nan"),
    "Counter": collections.Counter,
    "OrderedDict": collections.OrderedDict,
    "defaultdict": collections.defaultdict,
    "deque": collections.deque,
    "Fraction": fractions.Fraction,
    "Decimal": decimal.Decimal,
}

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


def _check_program(source, reuse):
    """Compile and check the program: the fast bytecode check, or the AST check when that cannot
    tell. A rejection is not remembered: it costs no more the second time than the first."""
    key = (source, reuse)
    checked = _CHECKED.get(key)
    if checked is None:
        code = compile_checked(source, "exec", "program")
        try:
            shared_risk, bound = fast_check(code, reuse)
        except Unsettled:
            shared_risk, bound = check([parse(source, "exec", "program")])
        if len(_CHECKED) >= _CHECKED_LIMIT:
            _CHECKED.clear()
        checked = _CHECKED[key] = (code, shared_risk, frozenset(bound))
    return checked


def _check_expression(text, what, bound):
    """Compile and check the input call or the expected value: plain data is settled from its
    bytecode, anything else by the AST check. Returns (code, shared_risk)."""
    source, fast, parse_tree = {
        "input": (f"f({text})", fast_call_check, lambda: parse_call(text)),
        "expected": (text, fast_value_check, lambda: parse(text, "eval", "expected")),
    }[what]
    try:
        code = compile_checked(source, "eval", what)
        fast(code)
        return code, False
    except (Rejection, Unsettled):
        # The AST check gives the precise verdict, including the syntax message for the input.
        tree = parse_tree()
        shared_risk = check([tree], bound_elsewhere=bound)[0]
        return compile_checked(tree, "eval", what), shared_risk


def _prepare(job):
    """Everything that can refuse a job before it runs: (program, call, expected, shared_risk).
    An expected text that cannot be evaluated safely (`dict_items([...])`, `<A object at 0x..>`,
    anything refused) comes back as `None`: it is compared with the result's repr as text."""
    source = job.program if not job.imports else job.imports + "\n" + job.program
    program, shared_risk, bound = _check_program(source, job.reuse)
    call, call_risk = _check_expression(job.input, "input", bound)
    expected, expected_risk = None, False
    if job.expected is not None:
        try:
            expected, expected_risk = _check_expression(job.expected, "expected", bound)
        except Rejection:
            expected = None
    return program, call, expected, shared_risk or call_risk or expected_risk


def _matches(result, output, expected, namespace, text):
    """Whether the result equals the expected value, evaluated in the program's namespace with the
    names reprs use (`inf`, `Counter`, ...) where the program has none; an expected text that is
    not a value there is compared with the result's repr."""
    if expected is not None:
        try:
            want = eval(expected, {**REPR_NAMES, **namespace})
        except Exception:
            return output == text.strip()
        try:
            return bool(result == want)
        except Exception:
            return False
    return output == text.strip()


def run_job(job):
    isolation.reset_interpreter_state(job.salt, job.reuse)
    try:
        program, call, expected, shared_risk = _prepare(job)
    except Rejection as rejection:
        return wit_world.Outcome(_STATUS[rejection.status], None, _clean(str(rejection)), None, False)

    namespace = isolation.job_namespace(job.reuse)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = isolation.CappedSink(job.output_limit)
    status, output, error, matches = wit_world.Status.OK, None, None, None
    spacers = isolation.heap_spacers(job.salt)
    try:
        exec(program, namespace)
        result = eval(call, namespace)
        output = _clean(repr(result))
        if len(output) > job.output_limit:
            status, output = wit_world.Status.OUTPUT_LIMIT, None
            error = f"the result's repr is longer than {job.output_limit} characters"
        elif job.expected is not None:
            matches = _matches(result, output, expected, namespace, job.expected)
    except MemoryError as exc:
        status, output, error = wit_world.Status.MEMORY, None, _describe(exc)
    except BaseException as exc:
        status, output, error = wit_world.Status.ERROR, None, _describe(exc)
    finally:
        sys.stdout, sys.stderr = saved
    violations = isolation.violations
    if violations.forbidden is not None:
        status, output, error, matches = wit_world.Status.FORBIDDEN, None, violations.forbidden, None
    elif violations.output_limit:
        status, output, matches = wit_world.Status.OUTPUT_LIMIT, None, None
        error = f"printed more than {job.output_limit} characters"
    namespace.clear()
    del spacers
    return wit_world.Outcome(status, output, error, matches, shared_risk)


def _eval_repr(text):
    tree = parse(text, "eval", "value")
    if check([tree])[0]:
        raise Rejection("forbidden", "a value may not change shared state")
    names = {"__builtins__": isolation.job_namespace(reuse=True)["__builtins__"], **REPR_NAMES}
    return eval(compile_checked(tree, "eval", "value"), names)


def values_equal(a, b):
    isolation.reset_interpreter_state(0, reuse=True)
    try:
        return bool(_eval_repr(a) == _eval_repr(b))
    except Exception:
        # A repr that is not an expression (`<Foo object at 0x..>`, `defaultdict(<class 'int'>, ..)`)
        # can still be matched exactly.
        return a.strip() == b.strip()


class WitWorld(wit_world.WitWorld):
    def run(self, job):
        try:
            return run_job(job)
        except BaseException as exc:
            return wit_world.Outcome(wit_world.Status.ERROR, None, f"harness: {_describe(exc)}", None, True)

    def equal(self, a, b):
        try:
            return values_equal(a, b)
        except BaseException as exc:
            raise Err(_describe(exc)) from None


warnings.simplefilter("ignore")
# Everything alive now is part of the snapshot. Freezing it keeps the collector from walking (and
# so writing to, and so copying) those pages in every fresh instance.
gc.collect()
gc.freeze()
