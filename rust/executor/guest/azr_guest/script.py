"""Script mode: a whole program run as `__main__` with a standard input, its standard output and
error captured (each capped), and an exit code, as a process would give them: 0, 1 with the
traceback on stderr for an uncaught exception, `sys.exit(n)`'s n.

No policy layer: the WebAssembly instance is the boundary (no files, no network, no environment, a
virtual clock), and the host never runs another job in an instance a script ran in.
"""

import builtins
import io
import os
import sys
import traceback

from . import isolation


class CappedText(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and stops the script past them."""

    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.size = 0
        self.overflowed = False

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self.size
        self.parts.append(text[: max(room, 0)])
        self.size += len(text)
        if self.size > self.limit:
            self.overflowed = True
            raise isolation.OutputLimit(f"printed more than {self.limit} characters")
        return len(text)

    def text(self):
        return "".join(self.parts)


def _exit_code(code, stderr):
    """What `SystemExit(code)` makes the exit status, as CPython decides it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return max(-(2**31), min(code, 2**31 - 1))
    try:
        stderr.write(f"{code}\n")
    except isolation.OutputLimit:
        pass
    return 1


def run_script(job):
    """(finished, exit_code, stdout, stderr, problem): `finished` is False when the script was
    stopped (`problem` is then "memory" or "output_limit")."""
    isolation.reset_interpreter_state(job.salt, False)
    stdout, stderr = CappedText(job.output_limit), CappedText(job.output_limit)
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    sys.stdin, sys.stdout, sys.stderr, sys.argv = io.StringIO(job.input), stdout, stderr, ["main.py"]
    source = job.program if not job.imports else job.imports + "\n" + job.program
    # `os._exit` would end the interpreter (a trap, losing the captured output): it exits the script.
    real_exit, os._exit = os._exit, isolation.raise_exit
    exit_code, problem = 0, None
    try:
        exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as stop:
        exit_code = _exit_code(stop.code, stderr)
    except isolation.OutputLimit:
        problem = "output_limit"
    except MemoryError:
        problem = "memory"
    except BaseException as error:
        exit_code = 1
        try:
            # The traceback from the script's own frames on, as `python main.py` prints it.
            traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        except isolation.OutputLimit:
            problem = "output_limit"
    finally:
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
        os._exit = real_exit
    if stdout.overflowed or stderr.overflowed:
        problem = "output_limit"
    return problem is None, exit_code, stdout.text(), stderr.text(), problem
