"""The `azr-executor` command of the Python package: the Rust command line, run in-process."""

import json
import os
import sys

from azr import _executor


def main() -> None:
    # The command line starts its worker processes through this interpreter, not `python worker`.
    os.environ.setdefault("AZR_EXECUTOR_WORKER", json.dumps([sys.executable, "-m", "azr.executor_cli", "worker"]))
    sys.exit(_executor.cli_main(["azr-executor", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
