"""A sandbox worker process that dies when it is handed a job whose program contains `MARKER`, the
way a worker killed by the OOM killer dies; everything else it passes to a real worker. Started by
the executor through `Executor(worker_command=[python, this file])`.

The parent and the worker speak length-prefixed JSON messages (`rust/executor/src/worker.rs`)."""

import os
import signal
import struct
import subprocess
import sys

MARKER = b"# this job kills its worker"


def read(stream):
    header = stream.read(4)
    if len(header) < 4:
        return None
    return header + stream.read(struct.unpack("<I", header)[0])


def main():
    real = subprocess.Popen(
        [sys.executable, "-m", "azr.executor_cli", "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    parent_in, parent_out = sys.stdin.buffer, sys.stdout.buffer
    while (message := read(parent_in)) is not None:
        if MARKER in message:
            real.kill()
            os.kill(os.getpid(), signal.SIGKILL)
        real.stdin.write(message)
        real.stdin.flush()
        answer = read(real.stdout)
        if answer is None:
            break
        parent_out.write(answer)
        parent_out.flush()
    real.stdin.close()
    real.wait()


if __name__ == "__main__":
    main()
