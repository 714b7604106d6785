"""The exact static check, on the AST. The program usually takes the fast check in `bytecode`
instead; this one runs on the (small) input and expected texts, and on programs the fast check
could not clear."""

import ast

from .policy import (
    FORBIDDEN_ATTRS,
    FORBIDDEN_NAMES,
    FORBIDDEN_STRINGS,
    MUTATING_CALLS,
    forbidden_call,
    forbidden_module,
)


class Rejection(Exception):
    """A job refused before it runs; `status` is its verdict."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def refuse_import(name):
    return Rejection("forbidden", f"import of '{name}'")


def refuse_string(value):
    return Rejection("forbidden", f"string naming '{value}'")


def _root_name(node):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def check(tree):
    """Reject the program's forbidden constructs; return `shared_risk`: whether it may change state
    shared with later jobs. One walk collects what needs the complete set of names the program
    binds; the verdicts on those come after it."""
    bound, imported, stores, calls, aliases = set(), set(), [], [], []
    shared_risk = False
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Name:
            if node.id in FORBIDDEN_NAMES:
                raise Rejection("forbidden", f"use of '{node.id}'")
            if type(node.ctx) is not ast.Load:
                bound.add(node.id)
        elif kind is ast.Attribute:
            if node.attr in FORBIDDEN_ATTRS:
                raise Rejection("forbidden", f"access to attribute '{node.attr}'")
            if type(node.ctx) is not ast.Load or node.attr == "__dict__":
                stores.append(node)
        elif kind is ast.Subscript:
            if type(node.ctx) is not ast.Load:
                stores.append(node)
        elif kind is ast.Assign or kind is ast.AnnAssign or kind is ast.NamedExpr:
            targets = node.targets if kind is ast.Assign else [node.target]
            root = _root_name(node.value) if node.value is not None else None
            if root is not None:
                aliases.extend((target.id, root) for target in targets if type(target) is ast.Name)
        elif kind is ast.Call:
            if type(node.func) is ast.Name:
                calls.append(node.func.id)
        elif kind is ast.Constant:
            if type(node.value) is str and node.value in FORBIDDEN_STRINGS:
                raise refuse_string(node.value)
        elif kind is ast.arg:
            bound.add(node.arg)
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef or kind is ast.ClassDef:
            bound.add(node.name)
        elif kind is ast.Import or kind is ast.ImportFrom:
            if kind is ast.ImportFrom:
                if node.level:
                    raise Rejection("error", "ImportError: relative imports are not supported")
                if forbidden_module(node.module or ""):
                    raise refuse_import(node.module)
            for alias in node.names:
                if kind is ast.Import and forbidden_module(alias.name):
                    raise refuse_import(alias.name)
                imported.add((alias.asname or alias.name).split(".")[0])
    _follow_aliases(imported, aliases)
    bound |= imported
    for name in calls:
        if forbidden_call(name) and name not in bound:
            raise Rejection("forbidden", f"call of '{name}'")
        if name in MUTATING_CALLS:
            shared_risk = True
    for node in stores:
        # A store through `x.a` or `x[k]` (or a look at `x.__dict__`) where `x` is a module or
        # anything else the job did not create itself.
        root = _root_name(node.value)
        if root is None or root in imported or root not in bound:
            shared_risk = True
    return shared_risk


def _follow_aliases(imported, aliases):
    """Names assigned from an imported object (`c = collections`, `C = collections.Counter`) hold
    it too; followed until nothing changes."""
    grew = True
    while grew:
        grew = False
        for target, root in aliases:
            if root in imported and target not in imported:
                imported.add(target)
                grew = True


def parse(source, mode, what):
    try:
        return ast.parse(source, filename=f"<{what}>", mode=mode)
    except SyntaxError as exc:
        raise syntax_rejection(exc, what) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        # NUL bytes raise ValueError; absurd nesting raises RecursionError or MemoryError.
        raise Rejection("syntax", f"{type(exc).__name__}: {exc} ({what})") from None


def compile_checked(source, mode, what):
    """`compile`, with every way it can refuse turned into a `syntax` rejection (some errors only
    the compiler sees: `return` outside a function, `nonlocal` at module level)."""
    try:
        return compile(source, f"<{what}>", mode, dont_inherit=True)
    except SyntaxError as exc:
        raise syntax_rejection(exc, what) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise Rejection("syntax", f"{type(exc).__name__}: {exc} ({what})") from None


def syntax_rejection(exc, what):
    where = f" ({what}, line {exc.lineno})" if exc.lineno else f" ({what})"
    return Rejection("syntax", f"{type(exc).__name__}: {exc.msg}{where}")


def parse_call(arguments):
    """The tree of `f(<arguments>)`, refusing text that closes the call and opens another expression."""
    tree = parse(f"f({arguments})", "eval", "input")
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        raise Rejection("syntax", "SyntaxError: the input must be the arguments of one call to f")
    return tree
