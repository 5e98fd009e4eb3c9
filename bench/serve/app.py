"""Browse a results database in Datasette: ``bench serve``.

    bench serve                              # results.db on http://127.0.0.1:8001/
    bench serve shard.db --port 8002         # any results database; the name is the file stem
    bench serve --metadata-out meta.yaml     # also write the metadata used (for plain datasette / publish)
    bench serve old.db --migrate             # apply pending schema migrations first, then serve
    bench serve --get '/results/leaderboard.json?suite=baselines&_shape=array'   # one request, no server

What you get (Datasette 0.65 with datasette-dashboards 0.8, everything offline):

- every table and view with a description of each column, units on the numeric ones
  (``wall_s`` in s, ``step_ms_median`` in ms, ``peak_mem_mib`` in MiB, ``*_pct`` in %),
  facets on the grid keys and status, newest rows first; ``_sqlite_migrations`` hidden;
- canned queries, each also a JSON API (``/<db>/<query>.json?<params>&_shape=array``):
  ``leaderboard`` (:suite, empty for all), ``compare_runs`` (:base_run, :cand_run: a run id,
  a unique prefix of one, or a tag), ``rank_correlations``, ``failed_cells``, ``claims``;
- dashboards at ``/-/dashboards``: ``accuracy-vs-step-time`` (scatter of seed means),
  ``learning-curves`` (series by step), ``peak-memory`` (bars per variant and model) and
  ``series-heatmap`` (a (step, position) series such as a per-layer kernel probability).

Seed statistics (leaderboard, scatter, memory bars) read the newest row of every cell and
count it when it is ok: the rows ``bench report`` and the ``seed_summary`` view use.

Read-only by construction: Datasette 0.65 has no write API, its query connections open
the file with ``mode=ro`` (a ``WITH ... INSERT`` that passes its SELECT check is still
refused by SQLite), the shipped metadata has no writable canned query, and no plugin that
writes is installed. The live file is served mutable, never immutable (``-i``), because an
immutable open skips the ``-wal`` file and would hide rows a running suite has written; a
suite can keep writing while you browse, and a reload shows its new rows.

The metadata ships as ``bench/datasette/metadata.yaml``, written for a database named
``results``; ``build_metadata(name)`` re-keys it (and the dashboards' ``db``) for the file
being served, since Datasette names a database after its file stem (``database_name``:
characters a URL would escape become ``_``, so ``shard.0.db`` is served as ``shard_0``).
To publish a snapshot, copy the file (``sqlite3 results.db "VACUUM INTO 'snap.db'"``),
write the metadata with ``--metadata-out`` and use ``datasette publish ... -m`` on the copy.

Python::

    from bench.serve.app import build_metadata, make_datasette
    ds = make_datasette("results.db")           # a datasette.app.Datasette; ds.client for requests
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import socket
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from datasette import hookimpl

from bench.errors import ServeError

if TYPE_CHECKING:
    from datasette.app import Datasette

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SETTINGS",
    "SHIPPED_DB_NAME",
    "DatabaseState",
    "ServeError",
    "build_metadata",
    "check_database",
    "database_name",
    "fetch",
    "load_metadata",
    "make_datasette",
    "migrate",
    "serve",
    "write_metadata",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
SHIPPED_DB_NAME = "results"  # the database key metadata.yaml is written for
# Datasette settings (``--setting`` in plain datasette). The views compute the latest row
# of every cell per request, so queries and facets get more time than Datasette's 1 s /
# 200 ms defaults; learning curves return one row per point, hence the higher row cap.
SETTINGS: dict[str, Any] = {
    "sql_time_limit_ms": 5000,
    # Every query of every page waits for one of these threads. With Datasette's 3, six
    # concurrent queries running to the time limit stalled a one-row page to 9.5 s; with 12, a
    # page finds a free thread while up to 11 run (measured: 0.12 s beside 6, 0.24 s beside 11).
    "num_sql_threads": 12,
    "facet_time_limit_ms": 1000,
    "max_returned_rows": 5000,
    # Suggested facets run one probe query per column of every page: on a 20k-row latest_results
    # they took the page from 0.4 s to 6.3 s. The metadata names the useful facets per table.
    "suggest_facets": False,
}
_PLUGIN_NAME = "archbench-sql-functions"


@dataclass(frozen=True)
class DatabaseState:
    """Schema state of a database about to be served: migrations it lacks or does not know."""

    path: Path
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def database_name(path: str | Path) -> str:
    """The name ``path`` is served under: its file stem, as Datasette names it (``results.db`` ->
    ``results``), with characters a URL would escape replaced by ``_`` (``shard.0.db`` ->
    ``shard_0``), because datasette-dashboards puts the name into its data URLs unescaped."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem) or "db"


def load_metadata() -> dict[str, Any]:
    """The shipped metadata (package data ``bench/datasette/metadata.yaml``), as written (a fresh copy)."""
    return json.loads(_metadata_json())


@functools.lru_cache(maxsize=1)
def _metadata_json() -> str:
    """The shipped metadata parsed once, as JSON text (anchors resolved into independent copies)."""
    text = resources.files("bench.serve").joinpath("datasette").joinpath("metadata.yaml").read_text(encoding="utf-8")
    return json.dumps(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def build_metadata(db_name: str = SHIPPED_DB_NAME) -> dict[str, Any]:
    """Datasette metadata for a database served under ``db_name``.

    The shipped file is keyed by ``results``; this moves its database entry (tables,
    queries) to ``db_name`` and points every dashboard chart and filter there. The result
    is plain JSON-compatible data with YAML anchors resolved into independent copies.
    """
    meta = load_metadata()
    databases = meta.get("databases", {})
    if SHIPPED_DB_NAME in databases and db_name != SHIPPED_DB_NAME:
        databases[db_name] = databases.pop(SHIPPED_DB_NAME)
    dashboards = meta.get("plugins", {}).get("datasette-dashboards", {})
    for dashboard in dashboards.values():
        for part in (*dashboard.get("charts", {}).values(), *dashboard.get("filters", {}).values()):
            if part.get("db") == SHIPPED_DB_NAME:
                part["db"] = db_name
    return meta


def write_metadata(metadata: dict[str, Any], path: str | Path) -> Path:
    """Write ``metadata`` to ``path``: JSON for a ``.json`` name, YAML otherwise."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    else:
        out.write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return out


def check_database(path: str | Path) -> DatabaseState:
    """Check ``path`` is an archbench results database, opening it read-only.

    Raises ServeError when the file is missing, is not SQLite, or has no archbench
    schema. Missing or unknown migrations come back in the state (the caller warns or
    migrates): tables and queries of the missing ones would fail in the browser.
    """
    import sqlite_utils

    from bench.results.queries import check_sqlite
    from bench.results.store import migration_state

    db_path = Path(path)
    if not db_path.is_file():
        raise ServeError(
            f"no database at {str(db_path)!r}; run the default suites first with `make bench`"
            f" (or a suite with --bench-db {db_path})"
        )
    conn = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        check_sqlite(conn)
        applied, pending, unknown = migration_state(sqlite_utils.Database(conn))
    except sqlite3.DatabaseError as exc:
        raise ServeError(f"{str(db_path)!r} is not an SQLite database ({exc})") from exc
    finally:
        conn.close()
    if not applied:
        raise ServeError(
            f"{str(db_path)!r} is not an archbench results database (no archbench migrations);"
            " browse other SQLite files with plain `datasette FILE`"
        )
    return DatabaseState(db_path, pending=pending, unknown=unknown)


def migrate(path: str | Path) -> list[str]:
    """Apply pending migrations to ``path`` (a write: only while no suite writes it); return their names."""
    from bench.results.store import Store

    pending = check_database(path).pending
    with Store(path):
        pass
    return pending


READ_METHODS = ("GET", "HEAD", "OPTIONS")


@hookimpl(specname="asgi_wrapper")
def _read_only_methods(datasette: Any) -> Callable[[Any], Any]:
    """Datasette hook: answer every request that is not a read with 405 (a POST to a table page
    was an HTTP 500 from an assertion deep in Datasette). ``bench serve`` never writes."""

    def wrap(app: Any) -> Any:
        async def read_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and scope.get("method", "GET").upper() not in READ_METHODS:
                body = b"bench serve is read-only: only GET and HEAD requests are answered\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 405,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD, OPTIONS")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return read_only

    return wrap


def _refuse_fts3_tokenizer(*_args: Any) -> None:
    raise sqlite3.DatabaseError("fts3_tokenizer() is disabled in bench serve")


@hookimpl(specname="prepare_connection")
def _prepare_connection(conn: sqlite3.Connection) -> None:
    """Datasette hook: add ``sqrt`` (used by the ``seed_summary`` view) where SQLite lacks it, and
    disable ``fts3_tokenizer``."""
    from bench.results.store import ensure_sqrt

    ensure_sqrt(conn)
    # fts3_tokenizer(name) returns a native pointer and (name, pointer) installs one: nothing a
    # results browser needs. An application function of the same name and arity shadows it.
    for arity in (1, 2):
        conn.create_function("fts3_tokenizer", arity, _refuse_fts3_tokenizer)


def make_datasette(
    path: str | Path, *, metadata: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> Datasette:
    """A Datasette app serving ``path`` (mutable, read-only connections) with the archbench metadata."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    if pm.get_plugin(_PLUGIN_NAME) is None:  # this module is the plugin (``_prepare_connection``)
        pm.register(sys.modules[__name__], name=_PLUGIN_NAME)
    name = database_name(path)
    meta = build_metadata(name) if metadata is None else metadata
    ds = Datasette([str(path)], metadata=meta, settings={**SETTINGS, **(settings or {})})
    stem = Path(path).stem
    if name != stem:  # serve e.g. `shard.0.db` as `shard_0`, the name the metadata is keyed by
        database = ds.databases[stem]
        ds.remove_database(stem)
        ds.add_database(database, name=name)
    return ds


def fetch(path: str | Path, url_path: str, *, metadata: dict[str, Any] | None = None) -> tuple[int, str]:
    """(HTTP status, body) of one request to the app for ``path``, without starting a server."""
    ds = make_datasette(path, metadata=metadata)

    async def go() -> tuple[int, str]:
        await ds.invoke_startup()
        response = await ds.client.get(url_path)
        return response.status_code, response.text

    return asyncio.run(go())


def _check_port(host: str, port: int) -> None:
    """Raise ServeError when ``host:port`` cannot be bound (in use, or not an address here)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ServeError(f"cannot listen on {host}:{port} ({reason}); pick another with --port") from exc


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only localhost is known to be local
        return False


def serve(
    path: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    metadata: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve ``path`` until interrupted (Ctrl-C stops the server cleanly and returns)."""
    import uvicorn

    _check_port(host, port)
    ds = make_datasette(path, metadata=metadata)
    asyncio.run(ds.invoke_startup())
    url = f"http://{host}:{port}"
    if not is_loopback(host):
        echo(
            f"warning: --host {host} serves the database to every machine that can reach this one, "
            "without authentication (read-only, but every row and any SQL query); use 127.0.0.1 "
            "and an SSH tunnel unless that is what you want"
        )
    echo(f"Serving {path} at {url}/  (read-only; Ctrl-C to stop)")
    echo(f"  tables:     {url}{ds.urls.database(database_name(path))}")
    echo(f"  dashboards: {url}/-/dashboards")
    uvicorn.run(ds.app(), host=host, port=port, log_level="warning", lifespan="on", workers=1)
