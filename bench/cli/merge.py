"""``bench merge``: fold shard databases into one (idempotent)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _merge(args: argparse.Namespace) -> int:
    from bench.results.store import merge

    for src in args.sources:
        if not Path(src).exists():
            print(f"bench merge: no such file: {src}", file=sys.stderr)
            return 2
    counts = merge(args.sources, args.out)
    print(
        f"merged {len(args.sources)} database(s) into {args.out}: "
        + ", ".join(f"{n} new {table}" for table, n in counts.items())
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="fold shard databases into one (idempotent)")
    p.add_argument("sources", nargs="+")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=_merge)
