"""The fast static check, on the compiled program.

Parsing a program into a Python AST and walking it costs about three times as much as compiling
it, and the program must be compiled anyway. So the code objects are read directly: the modules
the program imports, the global and attribute names it mentions, its string constants and, when
the sandbox will run more jobs, what each attribute or item store writes into. Whatever the
bytecode does not settle (a suspicious name, a store whose target is not plainly the program's
own) raises `Unsettled`, and the exact AST check decides. This check is therefore never more
permissive than that one, only faster when it can be.
"""

import opcode

from .checks import refuse_import, refuse_string
from .policy import FORBIDDEN_STRINGS, SUSPICIOUS_NAMES, forbidden_module


class Unsettled(Exception):
    """The bytecode alone does not settle the verdict."""


_OP = opcode.opmap
_CACHE = _OP.get("CACHE", 0)
_EXTENDED_ARG = _OP["EXTENDED_ARG"]
_IMPORT_NAME = _OP["IMPORT_NAME"]
_IMPORT_FROM = _OP["IMPORT_FROM"]
_LOAD_SMALL_INT = _OP.get("LOAD_SMALL_INT")
_LOAD_GLOBAL = _OP["LOAD_GLOBAL"]
_LOAD_NAME = _OP["LOAD_NAME"]
_LOAD_ATTR = _OP["LOAD_ATTR"]
_BINARY_OP = _OP["BINARY_OP"]
_NB_SUBSCR = next((i for i, (name, _) in enumerate(getattr(opcode, "_nb_ops", ())) if name == "NB_SUBSCR"), None)
_NAME_STORES = {_OP["STORE_NAME"], _OP["STORE_GLOBAL"]}
_LOCAL_STORES = {_OP[name] for name in ("STORE_FAST", "STORE_DEREF") if name in _OP}
_LOCAL_LOADS = {_OP[name] for name in ("LOAD_FAST", "LOAD_FAST_BORROW", "LOAD_FAST_CHECK", "LOAD_DEREF") if name in _OP}
_PAIR_LOADS = {_OP[name] for name in ("LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW") if name in _OP}
_CONST_LOADS = {_OP[name] for name in ("LOAD_CONST", "LOAD_SMALL_INT", "LOAD_COMMON_CONSTANT") if name in _OP}
# For each store, how deep below the top of the stack the object it writes into sits.
_TARGET_DEPTH = {
    _OP["STORE_ATTR"]: 0,
    _OP["DELETE_ATTR"]: 0,
    _OP["STORE_SUBSCR"]: 1,
    _OP["DELETE_SUBSCR"]: 1,
    _OP["STORE_SLICE"]: 2,
}


def _code_objects(code):
    found, stack = [], [code]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(const for const in current.co_consts if type(const) is type(code))
    return found


def _strings(consts):
    for const in consts:
        if type(const) is str:
            yield const
        elif type(const) in (tuple, frozenset):
            yield from _strings(const)


def _instructions(code):
    """(opcode, argument) pairs, without inline caches and EXTENDED_ARG prefixes."""
    raw = code.co_code
    found, extended = [], 0
    for index in range(0, len(raw), 2):
        op = raw[index]
        if op == _CACHE:
            continue
        arg = raw[index + 1] | extended
        if op == _EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        found.append((op, arg))
    return found


def _local_name(code, arg):
    try:
        return code._varname_from_oparg(arg)
    except (AttributeError, IndexError, ValueError):
        raise Unsettled from None


class _Program:
    """What the whole program binds: module-level names, and names bound to imported objects."""

    def __init__(self, codes):
        self.globals, self.imported = set(), set()
        self.instructions = {}
        for code in codes:
            ops = code.co_code[::2]
            if _IMPORT_NAME not in ops and not any(op in ops for op in _NAME_STORES):
                continue
            instructions = self.instructions[code] = _instructions(code)
            for index, (op, arg) in enumerate(instructions):
                if op == _IMPORT_NAME:
                    self._check_import(code, instructions, index)
                elif op in _NAME_STORES or op in _LOCAL_STORES:
                    name = code.co_names[arg] if op in _NAME_STORES else _local_name(code, arg)
                    previous = instructions[index - 1][0] if index else None
                    if previous == _IMPORT_NAME or previous == _IMPORT_FROM:
                        self.imported.add(name)
                    elif op in _NAME_STORES:
                        self.globals.add(name)

    @staticmethod
    def _check_import(code, instructions, index):
        name = code.co_names[instructions[index][1]]
        level = instructions[index - 2] if index >= 2 else None
        # `import x` compiles to LOAD_SMALL_INT <level>, LOAD_CONST <fromlist>, IMPORT_NAME x;
        # relative imports and anything unusual go to the AST check.
        if not name or level is None or level[0] != _LOAD_SMALL_INT or level[1] != 0:
            raise Unsettled
        if forbidden_module(name):
            raise refuse_import(name)

    def instructions_of(self, code):
        found = self.instructions.get(code)
        if found is None:
            found = self.instructions[code] = _instructions(code)
        return found


def _effect(op, arg):
    """(values pushed, values popped) for the instructions a store target can be built from."""
    if op in _LOCAL_LOADS or op in _CONST_LOADS or op == _LOAD_NAME:
        return 1, 0
    if op == _LOAD_GLOBAL:
        return 1 + (arg & 1), 0
    if op in _PAIR_LOADS:
        return 2, 0
    if op == _LOAD_ATTR:
        return 1 + (arg & 1), 1
    if op == _BINARY_OP:
        return 1, 2
    raise Unsettled


def _producer(instructions, index, depth):
    """Where the value `depth` below the top of the stack just before `index` was pushed: the
    instruction's position and which of its pushed values it is (0 = first pushed)."""
    above = depth
    for position in range(index - 1, -1, -1):
        op, arg = instructions[position]
        pushed, popped = _effect(op, arg)
        if above < pushed:
            return position, pushed - 1 - above
        above += popped - pushed
    raise Unsettled


def _is_own(program, code, instructions, position, slot):
    """Whether the object pushed there is the job's own: a local, a constant, a global the program
    defined itself, or an attribute or item of one of those; never something imported."""
    op, arg = instructions[position]
    if op in _LOCAL_LOADS:
        return _local_name(code, arg) not in program.imported
    if op in _PAIR_LOADS:
        return _local_name(code, arg >> 4 if slot == 0 else arg & 15) not in program.imported
    if op in _CONST_LOADS:
        return True
    if op == _LOAD_GLOBAL or op == _LOAD_NAME:
        name = code.co_names[arg >> 1 if op == _LOAD_GLOBAL else arg]
        return name in program.globals and name not in program.imported
    if op == _LOAD_ATTR and not arg & 1:
        return _is_own(program, code, instructions, *_producer(instructions, position, 0))
    if op == _BINARY_OP and arg == _NB_SUBSCR:
        return _is_own(program, code, instructions, *_producer(instructions, position, 1))
    raise Unsettled


def _follow_aliases(program, codes):
    """Names assigned from an imported object (`c = collections`, `C = collections.Counter`) hold
    it too; followed until nothing changes. A value the bytecode cannot trace (a call's result,
    say) counts as the job's own."""
    stores = [
        (code, index)
        for code in codes
        if any(op in code.co_code[::2] for op in _LOCAL_STORES | _NAME_STORES)
        for index, (op, _) in enumerate(program.instructions_of(code))
        if op in _LOCAL_STORES or op in _NAME_STORES
    ]
    grew = True
    while grew:
        grew = False
        for code, index in stores:
            instructions = program.instructions_of(code)
            op, arg = instructions[index]
            name = code.co_names[arg] if op in _NAME_STORES else _local_name(code, arg)
            if name in program.imported:
                continue
            try:
                own = _is_own(program, code, instructions, *_producer(instructions, index, 0))
            except Unsettled:
                own = True
            if not own:
                program.imported.add(name)
                grew = True


def fast_check(code, reuse):
    """Check the compiled program. Raises `Rejection` for a forbidden construct and `Unsettled`
    when only the AST check can tell; otherwise returns `shared_risk`: whether the program may change
    state that later jobs in the same sandbox would see.

    `shared_risk` is only worked out when `reuse` says the sandbox will run more jobs.
    """
    codes = _code_objects(code)
    for current in codes:
        if not SUSPICIOUS_NAMES.isdisjoint(current.co_names):
            raise Unsettled
        for value in _strings(current.co_consts):
            if value in FORBIDDEN_STRINGS:
                raise refuse_string(value)
    program = _Program(codes)
    shared_risk = False
    if reuse:
        _follow_aliases(program, codes)
        for current in codes:
            ops = current.co_code[::2]
            if not any(op in ops for op in _TARGET_DEPTH):
                continue
            instructions = program.instructions_of(current)
            for index, (op, _) in enumerate(instructions):
                depth = _TARGET_DEPTH.get(op)
                if depth is not None and not _is_own(
                    program, current, instructions, *_producer(instructions, index, depth)
                ):
                    shared_risk = True
    return shared_risk
