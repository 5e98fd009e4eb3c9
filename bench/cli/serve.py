"""``bench serve``: browse a results database in Datasette (the manual is ``bench.serve.app``).

    bench serve [DB] [--host 127.0.0.1] [--port 8001] [--metadata-out PATH] [--migrate] [--get PATH]

DB defaults to ``results.db``. A missing file, a file that is not an archbench results
database, or a busy port exits with status 2 and says why. A database that lacks schema
migrations is served with a warning (``--migrate`` applies them first). Ctrl-C stops the
server and exits 0. ``--get PATH`` answers one request without starting a server and
exits 0 on HTTP 200, 1 otherwise (a smoke test for CI or scripts).
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="browse a results database in Datasette (tables, canned queries, dashboards)",
        description="Serve a results database read-only with Datasette, with column descriptions, "
        "facets, canned queries and dashboards.",
    )
    p.add_argument(
        "db", nargs="?", default="results.db", metavar="DB", help="results database to serve (default: results.db)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port to listen on (default: 8001)")
    p.add_argument(
        "--metadata-out",
        metavar="PATH",
        help="also write the Datasette metadata used to PATH (JSON for a .json name, YAML "
        "otherwise), e.g. for `datasette DB -m PATH` or `datasette publish`",
    )
    p.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending schema migrations first (writes the file: only while no suite writes it)",
    )
    p.add_argument(
        "--get",
        metavar="PATH",
        help="print the response to one request, e.g. '/results/leaderboard.json?suite=baselines"
        "&_shape=array', and exit (0 on HTTP 200, 1 otherwise) without starting a server",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.serve import app as serve

    state = serve.check_database(args.db)  # ServeError (a BenchError) -> `bench serve: ...`, exit 2
    if state.pending and args.migrate:
        print(f"bench serve: applied migrations {serve.migrate(args.db)} to {args.db}", file=sys.stderr)
    elif state.pending:
        print(
            f"bench serve: warning: {args.db} lacks schema migrations {state.pending}; tables, views and "
            f"queries they add will fail. Run `bench serve {args.db} --migrate` (while no suite writes it).",
            file=sys.stderr,
        )
    if state.unknown:
        print(
            f"bench serve: warning: {args.db} has migrations {state.unknown} that this archbench does not "
            "know (written by a newer version); some descriptions and queries may not match.",
            file=sys.stderr,
        )
    metadata = serve.build_metadata(serve.database_name(args.db))
    if args.metadata_out:
        print(f"bench serve: wrote metadata to {serve.write_metadata(metadata, args.metadata_out)}", file=sys.stderr)
    if args.get:
        status, body = serve.fetch(args.db, args.get, metadata=metadata)
        print(body)
        return 0 if status == 200 else 1
    try:
        serve.serve(
            args.db, host=args.host, port=args.port, metadata=metadata, echo=lambda line: print(line, flush=True)
        )
    except KeyboardInterrupt:
        pass
    print("bench serve: stopped", flush=True)
    return 0
