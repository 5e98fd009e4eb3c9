"""``bench report``: the seed-aggregated summary of a results database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from bench.results.report import DEFAULT_METRICS, render

    if not Path(args.db).exists():
        print(f"bench report: no database at {args.db}; run a suite first (make bench)", file=sys.stderr)
        return 2
    layout = (
        "by-variant" if args.by_variant else "per-seed" if args.per_seed else "matrix" if args.matrix else "summary"
    )
    try:
        print(render(args.db, args.suite, args.metric or DEFAULT_METRICS, layout, args.matrix or "", args.variant))
    except ValueError as err:
        print(f"bench report: {err}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="seed-aggregated summary of a results database")
    p.add_argument("--db", default="results.db")
    p.add_argument("--suite", default=None)
    p.add_argument("--variant", default=None, help="only method entries starting with this, e.g. 'nasoa:gen-t0'")
    p.add_argument(
        "--metric",
        action="append",
        help="metric to summarise (repeatable; the first one for --by-variant and --per-seed)",
    )
    layout = p.add_mutually_exclusive_group()
    layout.add_argument(
        "--by-variant",
        action="store_true",
        help="method entries side by side, one row per suite/dataset/model/tier (the papers' tables)",
    )
    layout.add_argument(
        "--per-seed", action="store_true", help="every seed's value beside the mean (collapsed seeds show)"
    )
    layout.add_argument(
        "--matrix", metavar="PATTERN", help="a metric family as a table, e.g. 't3_{row}_{col}_mae' (NASOA's Table 3)"
    )
    p.set_defaults(func=_report)
