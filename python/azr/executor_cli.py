"""The `azr-executor` command of the Python package: the Rust command line, run in-process."""

import sys

from azr import _executor


def main() -> None:
    sys.exit(_executor.cli_main(["azr-executor", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
