"""The ``bench`` command.

    bench report [--db results.db] [--suite NAME] [--metric NAME ...] [--by-variant | --per-seed]
    bench merge SHARD.db [SHARD.db ...] -o OUT.db
    bench list [methods|models|datasets]

More subcommands come from ``bench/cli_*.py`` modules: each defines
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
from pathlib import Path

from bench.errors import BenchError


def _report(args: argparse.Namespace) -> int:
    from bench.report import DEFAULT_METRICS, render

    if not Path(args.db).exists():
        print(f"bench report: no database at {args.db}; run a suite first (make bench)", file=sys.stderr)
        return 2
    layout = ("by-variant" if args.by_variant else "per-seed" if args.per_seed
              else "matrix" if args.matrix else "summary")
    try:
        print(render(args.db, args.suite, args.metric or DEFAULT_METRICS, layout, args.matrix or "", args.variant))
    except ValueError as err:
        print(f"bench report: {err}", file=sys.stderr)
        return 2
    return 0


def _merge(args: argparse.Namespace) -> int:
    from bench.store import merge

    for src in args.sources:
        if not Path(src).exists():
            print(f"bench merge: no such file: {src}", file=sys.stderr)
            return 2
    counts = merge(args.sources, args.out)
    print(f"merged {len(args.sources)} database(s) into {args.out}: "
          + ", ".join(f"{n} new {table}" for table, n in counts.items()))
    return 0


def _list(args: argparse.Namespace) -> int:
    from bench.registry import DATASETS, METHODS, MODELS

    registries = {"methods": METHODS, "models": MODELS, "datasets": DATASETS}
    for kind in [args.kind] if args.kind else list(registries):
        print(f"{kind}: {', '.join(registries[kind].names())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="architecture-aware fine-tuning benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="seed-aggregated summary of a results database")
    p.add_argument("--db", default="results.db")
    p.add_argument("--suite", default=None)
    p.add_argument("--variant", default=None, help="only method entries starting with this, e.g. 'nasoa:gen-t0'")
    p.add_argument("--metric", action="append", help="metric to summarise (repeatable; the first one for"
                                                     " --by-variant and --per-seed)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--by-variant", action="store_true",
                        help="method entries side by side, one row per suite/dataset/model/tier (the papers' tables)")
    layout.add_argument("--per-seed", action="store_true",
                        help="every seed's value beside the mean (collapsed seeds show)")
    layout.add_argument("--matrix", metavar="PATTERN",
                        help="a metric family as a table, e.g. 't3_{row}_{col}_mae' (NASOA's Table 3)")
    p.set_defaults(func=_report)
    p = sub.add_parser("merge", help="fold shard databases into one (idempotent)")
    p.add_argument("sources", nargs="+")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=_merge)
    p = sub.add_parser("list", help="registered methods, models and datasets")
    p.add_argument("kind", nargs="?", choices=("methods", "models", "datasets"))
    p.set_defaults(func=_list)
    for module in command_modules():
        importlib.import_module(module).register(sub)
    return parser


def command_modules() -> list[str]:
    """The ``bench.cli_*`` modules that contribute subcommands, in name order."""
    import bench

    return sorted(f"bench.{m.name}" for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("cli_"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(f"bench {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
