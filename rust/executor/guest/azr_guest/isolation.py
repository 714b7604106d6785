"""Run-time guards: what a job's code can reach, and the state reset between jobs."""

import builtins
import codecs
import decimal
import importlib
import random
import sys
import types

from .policy import (
    ACTIVE,
    ALLOWED_MODULES,
    EVALUATION_MODULES,
    FORBIDDEN_ATTRS,
    FORBIDDEN_CALLS,
    TEXT_CODECS,
    forbidden_module,
)


def _import_allowed():
    modules = {}
    for name in (*ALLOWED_MODULES, *EVALUATION_MODULES):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            pass
    return modules


# Imported now, at build time, so that they are part of the snapshot: the sandbox has no files.
AVAILABLE = _import_allowed()
# Codecs are found by importing `encodings.<name>` on first use, which a sandbox without files
# cannot do: look them up now, so that `str.encode('utf-16-le')` finds them in the snapshot.
for _codec in TEXT_CODECS:
    codecs.lookup(_codec)


def _module_view(module, views):
    """What a program gets when it imports `module`: a module of the same name holding the same
    objects, minus what reaches forbidden modules and the import machinery (`collections._sys`,
    `enum.sys`, `x.__builtins__`); its submodules are views too."""
    view = views.get(module.__name__)
    if view is None:
        view = views[module.__name__] = types.ModuleType(module.__name__, module.__doc__)
        for name, item in module.__dict__.items():
            if name in FORBIDDEN_ATTRS:
                continue
            if isinstance(item, types.ModuleType):
                if forbidden_module(item.__name__):
                    continue
                item = _module_view(item, views)
            view.__dict__[name] = item
    return view


_VIEWS = {}
for _module in AVAILABLE.values():
    _module_view(_module, _VIEWS)
RECURSION_LIMIT = 1000
INT_DIGITS_LIMIT = sys.get_int_max_str_digits()
_REAL_IMPORT = builtins.__import__


class Forbidden(BaseException):
    """Raised when a job reaches for something it may not use.

    A BaseException, so that `except Exception` in the program does not hide it; the attempt is
    also recorded, so that not even `except BaseException` turns it into an `ok`.
    """


class OutputLimit(BaseException):
    """Raised when a job prints more than it may."""


class Violations:
    """What the current job did that decides its status, whatever it caught."""

    def __init__(self):
        self.forbidden = None
        self.output_limit = False


violations = Violations()


class ModuleCopies:
    """The modules one job imported, as copies: rebinding `math.pi` changes the job's copy only.
    Only needed when the instance runs more jobs; a fresh instance gets the modules themselves."""

    def __init__(self):
        self.copies = {}
        self.enabled = True

    def get(self, module):
        if not self.enabled:
            return module
        copy = self.copies.get(module.__name__)
        if copy is None:
            copy = types.ModuleType(module.__name__, module.__doc__)
            copy.__dict__.update(module.__dict__)
            self.copies[module.__name__] = copy
        return copy


_modules = ModuleCopies()


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0:
        raise ImportError("relative imports are not supported")
    if forbidden_module(name):
        violations.forbidden = f"import of '{name}'"
        raise Forbidden(f"import of '{name}' is not allowed")
    if name not in AVAILABLE and name.split(".")[0] not in AVAILABLE:
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    return _modules.get(_module_view(_REAL_IMPORT(name, globals, locals, fromlist, level), _VIEWS))


def _refusing(name):
    def refuse(*args, **kwargs):
        violations.forbidden = f"call of '{name}'"
        raise Forbidden(f"'{name}' is not allowed")

    refuse.__name__ = name
    return refuse


def _guarding(function):
    """`getattr` and its kin, refusing the attribute names the static check refuses when the name
    is computed at run time (`getattr(f, ''.join(['__glo', 'bals__']))`)."""

    def guarded(target, name, *rest):
        if isinstance(name, str):
            name = str.__str__(name)  # the exact text, whatever a str subclass says of itself
            if name in FORBIDDEN_ATTRS:
                violations.forbidden = f"access to attribute '{name}'"
                raise Forbidden(f"access to attribute '{name}' is not allowed")
        return function(target, name, *rest)

    guarded.__name__ = function.__name__
    return guarded


def _safe_builtins():
    table = dict(builtins.__dict__)
    table["__import__"] = _guarded_import
    for function in (getattr, setattr, delattr, hasattr):
        table[function.__name__] = _guarding(function)
    for name in FORBIDDEN_CALLS:
        table[name] = _refusing(name)
    for name in ("copyright", "credits", "license"):
        table.pop(name, None)
    return table


def _stdin_input(prompt=""):
    if prompt:
        sys.stdout.write(str(prompt))
    # The job's `sys` (its view of the module, or its copy of that): where a harness put its stdin.
    line = _modules.get(_VIEWS["sys"]).stdin.readline()
    if not line:
        raise EOFError("EOF when reading a line")
    return line[:-1] if line.endswith("\n") else line


def raise_exit(code=None):
    """`exit`, `quit` (evaluation policy) and `os._exit` (scripts) as a SystemExit the harness catches."""
    raise SystemExit(code)


_SAFE_BUILTINS = _safe_builtins()
_EVALUATION_BUILTINS = {**_SAFE_BUILTINS, "input": _stdin_input, "exit": raise_exit, "quit": raise_exit}


def job_namespace(reuse, evaluation):
    """A fresh global namespace. When the instance runs more jobs it gets its own copy of the
    builtins, so that poisoning them cannot leak; a fresh instance shares the snapshot's."""
    table = _EVALUATION_BUILTINS if evaluation else _SAFE_BUILTINS
    return {"__name__": "__azr__", "__builtins__": dict(table) if reuse else table}


class CappedSink:
    """Stands in for stdout and stderr: counts what the job prints and keeps none of it."""

    def __init__(self, limit):
        self.limit = limit
        self.written = 0

    def write(self, text):
        self.written += len(text)
        if self.written > self.limit:
            violations.output_limit = True
            raise OutputLimit(f"printed more than {self.limit} characters")
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def reset_interpreter_state(salt, reuse, evaluation=False):
    """Undo what an earlier job could have changed in interpreter-wide state, reseed, and set the
    job's policy (the evaluation policy allows the modules benchmark solutions import)."""
    ACTIVE.evaluation = evaluation
    random.seed(salt)
    decimal.setcontext(decimal.Context())
    sys.setrecursionlimit(RECURSION_LIMIT)
    sys.set_int_max_str_digits(INT_DIGITS_LIMIT)
    violations.forbidden = None
    violations.output_limit = False
    _modules.copies.clear()
    _modules.enabled = reuse


# A bytearray's buffer is a separate small-object allocation of exactly size + 1 bytes, so these
# reach every pymalloc size class, down to the 8-byte one that `object()` lives in.
_SPACER_SIZES = range(1, 520, 8)
_TUPLE_SIZES = range(1, 21)


def _blocks(i):
    """One allocation in each small-object size class, plus one from each type's free list."""
    blocks = [bytearray(size) for size in _SPACER_SIZES]
    blocks += [i + 0.5, i + 2**40, i + 2**80, [], {}, set(), object()]
    blocks += [(i,) * n for n in _TUPLE_SIZES]
    return blocks


def heap_spacers(salt):
    """Hold `salt` sets of blocks, so that addresses (`id()`, default hashes, reprs `at 0x...`)
    differ between determinism runs: a program that shows one is caught as nondeterministic even in
    fresh, otherwise identical instances. Run 0 (most jobs' only run) pays nothing."""
    return [_blocks(i) for i in range(salt)]
