"""The ``softseg`` command: argument parsing only.

Each sub-command lives in a ``_<area>.py`` module beside this one that defines
``register(subparsers)``; it adds its parser and sets ``func`` to a function taking the
parsed arguments and returning an exit code. Library errors (:class:`SoftsegError`)
become one message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from softseg import __version__
from softseg.errors import SoftsegError

# Order here is the order in `softseg --help`: the data flow, files to report.
_COMMAND_MODULES = ("_data", "_train", "_predict", "_evaluate", "_report", "_experiments")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softseg",
        description="Segmentation from multi-rater soft labels: train, predict, evaluate, report.",
    )
    parser.add_argument("--version", action="version", version=f"softseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"softseg.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "keep_memory", False):
        # Process-wide malloc tuning belongs to the process's owner, the command, not to the
        # library calls (20-40 % faster training and prediction on glibc).
        from softseg.model.runtime import keep_freed_memory

        keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except SoftsegError as error:
        print(f"softseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"softseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
