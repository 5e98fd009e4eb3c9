"""``bench export``: any table or view of a results database as CSV, Parquet or JSON.

    bench export [--db results.db] --view NAME --format csv|parquet|json [-o FILE]
                 [--where SQL] [--suite S]

CSV has a header row; JSON is a list of records; both go to stdout without ``-o``.
Parquet (pyarrow) needs ``-o``. ``--where`` is an SQL condition on the view's columns
(e.g. ``"status = 'ok' AND seed < 3"``), ``--suite`` keeps one suite's rows. An unknown
name exits 2 and lists the tables and views there are. See ``bench.results.exports``.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a table or view as csv, parquet or json",
        description="Write any table or view of a results database as CSV, Parquet or JSON.",
    )
    p.add_argument("--db", default="results.db", help="results database (default: results.db)")
    p.add_argument("--view", required=True, help="table or view, e.g. results, metrics, latest_results, seed_summary")
    p.add_argument("--format", required=True, choices=("csv", "parquet", "json"))
    p.add_argument("-o", "--out", default=None, help="output file (csv/json: stdout when omitted)")
    p.add_argument("--where", default=None, help="SQL condition on the view's columns")
    p.add_argument("--suite", default=None, help="only rows of this suite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.results.exports import export

    n = export(args.db, args.view, args.format, args.out, where=args.where, suite=args.suite)
    if args.out is not None:
        print(f"wrote {n} row(s) of {args.view} to {args.out}", file=sys.stderr)
    return 0
