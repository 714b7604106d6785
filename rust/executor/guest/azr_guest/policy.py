"""What a program may use: the import allow-list and everything that is refused."""

# Modules a program may import. The harness imports them at build time so they exist in the
# snapshot; a name this build of CPython lacks is skipped.
ALLOWED_MODULES = (
    "__future__",
    "abc",
    "array",
    "ast",
    "base64",
    "binascii",
    "bisect",
    "cmath",
    "collections",
    "collections.abc",
    "colorsys",
    "contextlib",
    "copy",
    "dataclasses",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "graphlib",
    "heapq",
    "html",
    "io",
    "itertools",
    "json",
    "keyword",
    "math",
    "numbers",
    "operator",
    "pprint",
    "queue",
    "re",
    "reprlib",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "types",
    "typing",
    "unicodedata",
    "weakref",
    "zlib",
)

# Text codecs a program may use with `str.encode` and `bytes.decode` (the codec modules are loaded
# into the snapshot; UTF-8 is always there).
TEXT_CODECS = (
    "ascii",
    "latin-1",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "utf-8-sig",
    "utf-7",
    "cp1252",
    "cp1251",
    "cp1250",
    "cp437",
    "cp850",
    "iso8859-2",
    "iso8859-15",
    "mac-roman",
    "koi8-r",
    "raw-unicode-escape",
    "unicode-escape",
    "shift_jis",
    "cp932",
    "euc_jp",
    "iso2022_jp",
    "gbk",
    "gb2312",
    "gb18030",
    "big5",
    "euc_kr",
    "cp949",
)

# Modules a program may not import, by any dotted component: AZR's list, the sandbox's own, and
# every other route to clocks, randomness, processes, files or the interpreter's internals. Any
# module whose name starts with an underscore is refused too (`_thread`, `_random`, ...).
FORBIDDEN_MODULES = frozenset(
    {
        "os",
        "sys",
        "shutil",
        "subprocess",
        "socket",
        "ctypes",
        "multiprocessing",
        "threading",
        "signal",
        "random",
        "time",
        "datetime",
        "logging",
        "hashlib",
        "hmac",
        "calendar",
        "importlib",
        "gc",
        "inspect",
        "builtins",
        "pebble",
        "bcrypt",
        "secrets",
        "uuid",
        "tempfile",
        "pathlib",
        "glob",
        "select",
        "selectors",
        "asyncio",
        "concurrent",
        "timeit",
        "zoneinfo",
        "sched",
        "atexit",
        "faulthandler",
        "tracemalloc",
        "resource",
        "pickle",
        "marshal",
        "code",
        "codeop",
        "pdb",
        "traceback",
        "warnings",
        "site",
        "sysconfig",
        "platform",
        "locale",
        "getpass",
        "pwd",
        "grp",
        "mmap",
        "fcntl",
        "posix",
        "nt",
        "ssl",
        "http",
        "urllib",
        "ftplib",
        "smtplib",
        "email",
        "webbrowser",
        "pty",
        "tty",
        "termios",
        "codecs",
        "linecache",
        "tokenize",
        "dis",
        "opcode",
        "runpy",
        "pkgutil",
        "zipimport",
        "zipfile",
        "tarfile",
        "sqlite3",
        "dbm",
        "shelve",
        "fileinput",
        "filecmp",
        "stat",
        "errno",
        "copyreg",
        "contextvars",
        "wsgiref",
        "xml",
        "cProfile",
        "profile",
        "pstats",
        "trace",
        "ensurepip",
        "venv",
        "idlelib",
        "tkinter",
        "turtle",
    }
)

# Names whose mere mention reaches the import machinery or the real builtins.
FORBIDDEN_NAMES = frozenset({"__import__", "__builtins__", "__loader__", "__spec__"})

# Builtins that do I/O or open a debugger. Programs often use these names for their own variables
# (`def f(input): ...`), so they are refused only when called without being bound by the program;
# at run time the job's builtins replace them with functions that refuse.
FORBIDDEN_CALLS = frozenset({"open", "input", "breakpoint", "exit", "quit", "help"})

# Attributes that lead from any object to modules, frames, code or the class graph. (A class's
# `__mro__`, a function's `__closure__` and cells' `cell_contents` are allowed: they lead only to
# the program's own objects and to classes the program can already name.)
FORBIDDEN_ATTRS = frozenset(
    {
        "__subclasses__",
        "__globals__",
        "__builtins__",
        "__import__",
        "__loader__",
        "__spec__",
        "__code__",
        "__self__",
        "__bases__",
        "__base__",
        "__reduce__",
        "__reduce_ex__",
        "__traceback__",
        "__objclass__",
        "__func__",
        "tb_frame",
        "tb_next",
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
    }
)

# Calls that can change objects the program did not create: state shared with later jobs when an
# instance is reused.
MUTATING_CALLS = frozenset({"setattr", "delattr", "vars", "globals", "locals"})

# Any of these in a code object's names sends the program to the exact (AST) check.
SUSPICIOUS_NAMES = FORBIDDEN_NAMES | FORBIDDEN_ATTRS | FORBIDDEN_CALLS | MUTATING_CALLS | {"__dict__"}

# Strings that may not appear as constants (the `getattr(x, "__globals__")` route).
FORBIDDEN_STRINGS = FORBIDDEN_NAMES | FORBIDDEN_ATTRS


# Modules benchmark solutions and their tests import (MBPP's `sys.maxsize`, HumanEval's `random` and
# `hashlib`), allowed when a job asks for the evaluation policy: the sandbox stays the boundary, and
# clocks and randomness are still fixed per run.
EVALUATION_MODULES = ("sys", "random", "hashlib", "time", "datetime", "calendar")
# Builtins stdin/stdout programs (LiveCodeBench) call, allowed under the evaluation policy: `input`
# reads the job's `sys.stdin` (which a harness sets), `exit` and `quit` raise SystemExit.
EVALUATION_CALLS = frozenset({"input", "exit", "quit"})


class _Policy:
    """The policy of the job being checked and run (set when the interpreter is reset for it)."""

    evaluation = False


ACTIVE = _Policy()


def forbidden_call(name):
    """Whether calling the builtin `name` is refused under the active policy."""
    return name in FORBIDDEN_CALLS and not (ACTIVE.evaluation and name in EVALUATION_CALLS)


def forbidden_module(name):
    """Whether importing `name` is refused (`os.path`, `_thread`, ...) under the active policy."""
    parts = name.split(".")
    if ACTIVE.evaluation and parts[0] in EVALUATION_MODULES:
        parts = parts[1:]
    return any(part in FORBIDDEN_MODULES or (part.startswith("_") and part != "__future__") for part in parts)
