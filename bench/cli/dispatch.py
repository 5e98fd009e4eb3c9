"""The ``bench`` command.

Each subcommand lives in its own module of ``bench.cli`` (``report``, ``merge``, ``listing``,
``run``, ``gate``, ``serve``, ``export``, ``claims``): each defines
``register(subparsers)`` and adds its parsers with ``set_defaults(func=handler)``, where
``handler(args) -> int`` is the exit status. Only these small modules are imported to
build the parser; they import heavy dependencies inside their handlers.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from bench.errors import BenchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="architecture-aware fine-tuning benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        importlib.import_module(module).register(sub)
    return parser


def command_modules() -> list[str]:
    """The ``bench.cli`` modules that contribute subcommands (every one but ``dispatch``), in name order."""
    import bench.cli

    return sorted(f"bench.cli.{m.name}" for m in pkgutil.iter_modules(bench.cli.__path__) if m.name != "dispatch")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(f"bench {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
