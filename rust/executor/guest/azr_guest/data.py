"""The judge's data: what an answer, an input or an expected value may say, and how values compare.

Answers are data, never code. A text is read with the grammar below, without any of the program's
names, so nothing it says can call, name or rebind anything of the program:

    data     := literal | container | unary | binary | constant-name | constructor
    literal  := str | bytes | int | float | complex | True | False | None | ...
    container:= [data, ...] | (data, ...) | {data, ...} | {data: data, ...}
    unary    := (- | + | ~ | not) data
    binary   := data (+ | - | * | / | // | % | ** | << | >> | & | | | ^) data
    constant-name := inf | nan | infj | nanj | Ellipsis
    constructor   := set(...) | frozenset(...) | bytearray(...) | range(...) | Counter(...)
                   | OrderedDict(...) | defaultdict(...) | deque(...) | Fraction(...) | Decimal(...)

the constructors being exactly those that reprs of built-in values use, called with data (and
`defaultdict`'s factory written as a built-in type name, or as its repr `<class 'int'>`). No other
names, no calls, attributes, subscripts, comprehensions, lambdas, f-strings, unpacking or
assignments. `%` does not format strings, and sizes are bounded (no `'x' * 10**9`, no `9**9**9`), so
reading an answer never stalls a worker. An argument list (a job's input) is data separated by
commas, with `name=data` keyword arguments.

Values compare as data: two values are equal when they have exactly the same built-in types and
equal contents, recursively; sets, frozensets, dicts, Counters and defaultdicts regardless of order,
lists, tuples, deques and OrderedDicts in order. `1`, `1.0` and `True` are three different values
(the type is part of an output); floats follow `==` except that NaN equals NaN (so `0.0` and `-0.0`
are equal); a deque's `maxlen` and a Counter's zero counts are part of nothing but the repr.
No user-defined `__eq__`, `__hash__` or `__repr__` is ever called: comparison goes through
`canonical`, a text that encodes type and value, and two values are equal when their canonical texts
are. A result that is not built-in data (an instance of a user class, a subclass of a built-in, a
recursive container) is compared by its repr text instead, and only with a text that is not data.
"""

import ast
import io
import math
import operator
import tokenize
from collections import Counter, OrderedDict, defaultdict, deque
from decimal import Decimal
from fractions import Fraction

from .checks import Rejection, parse_call


class NotData(Exception):
    """A text outside the data grammar, or a value that is not built-in data."""


# Bounds that keep reading a text cheap: items a repetition may make, bits an int may have.
MAX_ITEMS = 1 << 20
MAX_INT_BITS = 1 << 20

# Each use makes a new value: two NaNs written in one set are two elements, as two computed ones are.
_NAMES = {
    "inf": lambda: math.inf,
    "nan": lambda: float("nan"),
    "infj": lambda: complex(0.0, math.inf),
    "nanj": lambda: complex(0.0, float("nan")),
    "Ellipsis": lambda: ...,
}

# defaultdict's default factories that a data text may name.
_FACTORIES = {cls.__name__: cls for cls in (int, float, complex, str, bytes, bool, list, tuple, dict, set, frozenset)}


def _factory_name(factory):
    """The name of a defaultdict factory that data may have, found by identity (hashing or
    comparing an arbitrary object could run its class's code); None for any other."""
    if factory is None:
        return "None"
    return next((name for name, cls in _FACTORIES.items() if factory is cls), None)


_ITERABLE = (list, tuple, set, frozenset, dict, str, bytes)
_NUMBER = (int, float, complex, Fraction, Decimal)

_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert, ast.Not: operator.not_}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
}


def _bits(number):
    """How many bits the magnitude of an exact number takes (0 for anything inexact)."""
    kind = type(number)
    if kind is int or kind is bool:
        return int(number).bit_length()
    if kind is Fraction:
        return max(number.numerator.bit_length(), number.denominator.bit_length())
    return 0


def _binary(op, left, right):
    kind = type(op)
    if kind is ast.Pow and type(right) in (int, bool) and _bits(left) * abs(right) > MAX_INT_BITS:
        raise NotData("a power too large to be data")
    if kind is ast.LShift and type(right) in (int, bool) and right > MAX_INT_BITS:
        raise NotData("a shift too large to be data")
    if kind is ast.Mod and isinstance(left, (str, bytes, bytearray)):
        raise NotData("'%' does not format strings in data")
    if kind is ast.Mult:
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, bytes, bytearray, list, tuple)) and type(count) in (int, bool):
                if len(sequence) * count > MAX_ITEMS:
                    raise NotData("a repetition too large to be data")
    result = _BINARY[kind](left, right)
    if _bits(result) > MAX_INT_BITS:
        raise NotData("a number too large to be data")
    return result


def _constructor(name, args, kwargs):
    """A call of one of the constructors that reprs of built-in values use, with data arguments."""
    count = len(args)
    if name in ("set", "frozenset"):
        ok = not kwargs and (count == 0 or (count == 1 and type(args[0]) in _ITERABLE))
    elif name == "bytearray":
        ok = not kwargs and (count == 0 or (count == 1 and type(args[0]) in (bytes, list, tuple)))
    elif name == "range":
        ok = not kwargs and 1 <= count <= 3 and all(type(a) is int for a in args)
    elif name in ("Counter", "OrderedDict"):
        ok = count == 0 or (count == 1 and type(args[0]) in _ITERABLE)
    elif name == "defaultdict":
        ok = (count == 0 or _factory_name(args[0]) is not None) and (
            count <= 1 or (count == 2 and type(args[1]) in (dict, list, tuple))
        )
    elif name == "deque":
        ok = count <= 2 and (count == 0 or type(args[0]) in _ITERABLE) and set(kwargs) <= {"maxlen"}
        ok = ok and all(m is None or type(m) is int for m in (*args[1:], *kwargs.values()))
    elif name == "Fraction":
        ok = not kwargs and count <= 2 and all(type(a) in (int, str, float, Fraction, Decimal) for a in args)
    else:  # Decimal
        ok = not kwargs and count <= 1 and all(type(a) in (int, str, float) for a in args)
    if not ok:
        raise NotData(f"{name}(...) takes data of the kinds its repr shows")
    constructor = _CONSTRUCTORS[name]
    try:
        return constructor(*args, **kwargs)
    except (TypeError, ValueError, ArithmeticError, OverflowError) as exc:
        raise NotData(f"{name}(...): {exc}") from None


_CONSTRUCTORS = {
    "set": set,
    "frozenset": frozenset,
    "bytearray": bytearray,
    "range": range,
    "Counter": Counter,
    "OrderedDict": OrderedDict,
    "defaultdict": defaultdict,
    "deque": deque,
    "Fraction": Fraction,
    "Decimal": Decimal,
}


def _evaluate(node):
    kind = type(node)
    if kind is ast.Constant:
        return node.value
    if kind is ast.List or kind is ast.Tuple or kind is ast.Set:
        items = [_evaluate(item) for item in node.elts]
        if kind is ast.List:
            return items
        if kind is ast.Tuple:
            return tuple(items)
        return _hashed(set, items)
    if kind is ast.Dict:
        if any(key is None for key in node.keys):
            raise NotData("no ** unpacking in data")
        pairs = [(_evaluate(k), _evaluate(v)) for k, v in zip(node.keys, node.values, strict=True)]
        return _hashed(dict, pairs)
    if kind is ast.UnaryOp:
        operand = _evaluate(node.operand)
        try:
            return _UNARY[type(node.op)](operand)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise NotData(str(exc)) from None
    if kind is ast.BinOp:
        if type(node.op) not in _BINARY:
            raise NotData("this operator is not one of data")
        left, right = _evaluate(node.left), _evaluate(node.right)
        try:
            return _binary(node.op, left, right)
        except (TypeError, ValueError, ArithmeticError, MemoryError) as exc:
            raise NotData(str(exc)) from None
    if kind is ast.Name:
        if node.id in _NAMES:
            return _NAMES[node.id]()
        raise NotData(f"the name '{node.id}' is not data")
    if kind is ast.Call:
        name = node.func.id if type(node.func) is ast.Name else None
        if name not in _CONSTRUCTORS:
            raise NotData("calls are not data (only the constructors that reprs of built-in values use)")
        if name == "defaultdict" and node.args and type(node.args[0]) is ast.Name and node.args[0].id in _FACTORIES:
            args = [_FACTORIES[node.args[0].id], *(_evaluate(a) for a in node.args[1:])]
        else:
            args = [_evaluate(a) for a in node.args]
        return _constructor(name, args, _keywords(node.keywords))
    raise NotData(f"{_describe(node)} is not data")


def _keywords(keywords):
    found = {}
    for keyword in keywords:
        if keyword.arg is None:
            raise NotData("no ** unpacking in data")
        found[keyword.arg] = _evaluate(keyword.value)
    return found


def _hashed(build, items):
    try:
        return build(items)
    except TypeError as exc:  # an unhashable set element or dict key
        raise NotData(str(exc)) from None


_DESCRIPTIONS = {
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Starred: "unpacking",
    ast.Lambda: "a lambda",
    ast.NamedExpr: "an assignment",
    ast.JoinedStr: "an f-string",
    ast.BoolOp: "'and'/'or'",
    ast.Compare: "a comparison",
    ast.IfExp: "a conditional",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
}


def _describe(node):
    return _DESCRIPTIONS.get(type(node), type(node).__name__)


def _tree(text, what):
    try:
        return ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise NotData(f"not a Python expression ({what}): {exc}") from None


def _class_reprs_as_names(text):
    """`defaultdict(<class 'int'>, {...})`, as its repr writes it, with the factory as a name: the
    tokens `< class 'int' >` become `int` (strings that merely contain such text are left alone)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return text
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(position):
        return starts[position[0] - 1] + position[1]

    pieces, cursor = [], 0
    for index in range(len(tokens) - 3):
        opening, keyword, name, closing = tokens[index : index + 4]
        if (opening.string, keyword.string, closing.string) == ("<", "class", ">") and name.type == tokenize.STRING:
            factory = name.string.strip("'\"")
            if factory in _FACTORIES and offset(opening.start) >= cursor:
                pieces += [text[cursor : offset(opening.start)], factory]
                cursor = offset(closing.end)
    return "".join(pieces) + text[cursor:]


def value(text):
    """The value a data text denotes; `NotData` when the text is outside the grammar."""
    text = text.strip()
    try:
        node = _tree(text, "value")
    except NotData:
        if "<class '" not in text:
            raise
        node = _tree(_class_reprs_as_names(text), "value")
    try:
        return _evaluate(node)
    except RecursionError:
        raise NotData("nested too deeply") from None


def arguments(text):
    """The positional and keyword arguments of an input text (`'a', [1, 2], key=3`). Raises
    `Rejection` for text that is not an argument list and `NotData` for arguments that are not data."""
    call = parse_call(text).body
    for argument in call.args:
        if type(argument) is ast.Starred:
            raise NotData("no * unpacking in an input")
    try:
        return tuple([_evaluate(argument) for argument in call.args]), _keywords(call.keywords)
    except RecursionError:
        raise NotData("nested too deeply") from None


def input_rejection(exc):
    """The verdict on an input outside the grammar: it is refused before the program runs."""
    return Rejection("forbidden", f"the input must be data: {exc}")


# --- canonical texts ------------------------------------------------------------------------


def _float(number):
    if number != number:
        return "nan"
    if number == 0.0:
        return "0.0"
    return repr(number)


def _decimal(number):
    if number.is_nan():
        return "sNaN" if number.is_snan() else "NaN"
    if number.is_infinite():
        return "-Infinity" if number < 0 else "Infinity"
    if number.is_zero():
        return "0"
    sign, digits, exponent = number.as_tuple()
    digits = list(digits)
    while digits[-1] == 0:
        digits.pop()
        exponent += 1
    return ("-" if sign else "") + "".join(map(str, digits)) + "e" + str(exponent)


def _type_name(kind):
    """The name of a type, read past any metaclass (which could define `__name__` itself)."""
    return _TYPE_NAME.__get__(kind, type)


_TYPE_NAME = type.__dict__["__name__"]


def _canonical(item):
    """The canonical text of one value, recursively. Types are told apart by identity, in order of
    frequency: nothing here hashes or compares a type or an object of the program's making. A
    container that holds itself recurses until the recursion limit, which `canonical` reports."""
    kind = type(item)
    if kind is str:
        return "s" + repr(item)
    if kind is int:
        return "i" + hex(item)
    if kind is list or kind is tuple or kind is deque:
        opening = "L[" if kind is list else "U(" if kind is tuple else "Q["
        return opening + ",".join([_canonical(x) for x in item]) + "]"
    if kind is float:
        return "f" + _float(item)
    if kind is bool:
        return "T" if item else "F"
    if item is None:
        return "N"
    if kind is dict or kind is Counter or kind is defaultdict or kind is OrderedDict:
        pairs = [_canonical(k) + ":" + _canonical(v) for k, v in dict.items(item)]
        if kind is OrderedDict:
            return "O[" + ",".join(pairs) + "]"
        pairs.sort()
        if kind is defaultdict:
            factory = _factory_name(item.default_factory)
            if factory is None:
                raise NotData("a defaultdict whose factory is not a built-in type")
            return f"d{factory}{{" + ",".join(pairs) + "}"
        return ("D{" if kind is dict else "C{") + ",".join(pairs) + "}"
    if kind is set or kind is frozenset:
        return ("S{" if kind is set else "Z{") + ",".join(sorted([_canonical(x) for x in item])) + "}"
    if kind is bytes:
        return "b" + repr(item)
    if kind is complex:
        return f"c({_float(item.real)},{_float(item.imag)})"
    if kind is bytearray:
        return "B" + repr(bytes(item))
    if item is ...:
        return "E"
    if kind is range:
        length = len(item)
        return f"r({length},{item.start if length else 0},{item.step if length > 1 else 1})"
    if kind is Fraction:
        return f"q{item.numerator}/{item.denominator}"
    if kind is Decimal:
        return "m" + _decimal(item)
    raise NotData(f"'{_type_name(kind)}' is not a built-in data type")


def canonical(item):
    """The canonical text of built-in data: equal values, and only those, have equal texts."""
    try:
        return "data:" + _canonical(item)
    except RecursionError:
        raise NotData("nested too deeply (or a container that holds itself)") from None


def canonical_text(text):
    """The canonical text of what an expected value or answer says: its value's when it is data,
    else the text itself (stripped), to be matched by a result's repr."""
    try:
        return canonical(value(text))
    except NotData:
        return "text:" + text.strip()


def judged_result(result, output):
    """The canonical text of a program's result, whose repr is `output`. A result that is not data
    but whose repr reads as data (a `__repr__` that lies, a subclass of a built-in container, a
    container that holds itself) cannot be judged: `NotData` says why."""
    try:
        return canonical(result)
    except NotData as reason:
        shown = canonical_text(output)
        if shown.startswith("data:"):
            raise NotData(
                f"the result is not built-in data ({reason}) but its repr reads as data, so it cannot be judged"
            ) from None
        return shown
