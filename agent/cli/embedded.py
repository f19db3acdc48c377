"""``hypertail embedded status|start|stop|psql|dsn``: the embedded default server, for its user.

Kept apart from :mod:`agent.cli.commands` because it is a tool around the agent, not the agent: it only
reads ``agent.data_dir`` and drives :mod:`agent.embedded`. Exit codes as in :mod:`agent.cli`;
errors are raised as :class:`~agent.errors.HypertailError` and printed there, in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent.config import load_settings

EXIT_OK = 0


EMBEDDED_EPILOG = """\
examples:
  hypertail embedded status                 running? its data directory, version and size
  hypertail embedded psql -d hypertail_demo -c 'select count(*) from observability.spans'
  hypertail embedded psql -- -A -t -c 'select 1'   more psql options after --
  psql "$(hypertail embedded dsn)"          its DSN for any libpq client (psql, pg_dump, asyncpg)
  hypertail embedded stop                   a clean stop; committed data stays
  hypertail embedded status --data-dir /var/lib/hypertail   another agent.data_dir

`hypertail run` and `hypertail demo` start the server when database.dsn is not set and leave it
running (set agent.embedded_keep_running = false to have them stop a server they started).
`psql` and `dsn` start it too when it is not running. `stop` when nothing runs is not an error.
"""


def add_embedded_parser(sub: Any) -> None:
    """The ``embedded`` subcommand and its actions, on the main parser's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    em = sub.add_parser(
        "embedded",
        help="the embedded PostgreSQL used without database.dsn: status, start, stop, psql, dsn",
        description="Manage the private PostgreSQL that `run` and `demo` start when no database.dsn is "
        "set. It lives in the user's data directory (or agent.data_dir), listens only on a Unix "
        "socket, and keeps running between commands.",
        epilog=EMBEDDED_EPILOG,
        formatter_class=fmt,
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", type=Path, metavar="PATH", help="use its agent.data_dir")
    where.add_argument("--data-dir", type=Path, metavar="PATH",
                       help="the agent.data_dir to look in (default: from --config, else the user's data directory)")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("-d", "--database", default="postgres", metavar="NAME",
                    help="database to connect to (default: postgres, where `run` writes; the demo's is "
                    "hypertail_demo)")
    actions = em.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    st = actions.add_parser("status", parents=[where], help="running or stopped, data directory, version, size",
                            description="Report without starting anything. --json prints state "
                            "(running|stopped|absent), pid, data_directory, version, data_version, "
                            "size_bytes and dsn.")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_embedded_status)
    actions.add_parser("start", parents=[where], help="start it (if it is not running) and print its DSN",
                       ).set_defaults(func=cmd_embedded_start)
    actions.add_parser("stop", parents=[where], help="stop it cleanly (committed data stays)",
                       description="pg_ctl stop -m fast: open transactions roll back, clients (a running "
                       "agent retries) are disconnected, a checkpoint is written. Exit 0 also when it "
                       "was not running.").set_defaults(func=cmd_embedded_stop)
    ps = actions.add_parser("psql", parents=[where, db], help="open psql on it (starts it if needed)",
                            description="Run the bundled psql (else psql from PATH) on the embedded "
                            "server; without psql, print the DSN to use with another client.",
                            epilog="example:\n  hypertail embedded psql -d hypertail_demo -c 'select count(*) "
                            "from observability.spans'", formatter_class=fmt)
    ps.add_argument("-c", "--command", metavar="SQL", action="append", default=[],
                    help="run SQL and exit (as psql -c); repeat it to run several, in order")
    ps.add_argument("psql_args", nargs=argparse.REMAINDER, metavar="-- PSQL_ARGS",
                    help="more options for psql, after --")
    ps.set_defaults(func=cmd_embedded_psql)
    actions.add_parser("dsn", parents=[where, db], help="print its DSN for other tools (starts it if needed)",
                       ).set_defaults(func=cmd_embedded_dsn)


def _embedded_data_dir(args: argparse.Namespace) -> Path | None:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return load_settings(args.config).agent.data_dir


def cmd_embedded_status(args: argparse.Namespace) -> int:
    from agent.embedded import cli_args, embedded_status

    data_dir = _embedded_data_dir(args)
    st = embedded_status(data_dir)
    if args.json:
        print(json.dumps(st.as_json(), indent=2))
        return EXIT_OK
    where = cli_args(data_dir)
    if st.state == "absent":
        print(f"embedded PostgreSQL: not created yet; `hypertail run` or `hypertail demo` without "
              f"database.dsn creates it in {st.pgdata} ({st.version})")
        return EXIT_OK
    from rich.filesize import decimal

    state = f"running (pid {st.pid})" if st.state == "running" else "stopped"
    print(f"embedded PostgreSQL: {state}")
    print(f"  data directory: {st.pgdata} ({decimal(st.size_bytes)})")
    print(f"  version:        {st.version} (data directory of version {st.data_version})")
    if st.dsn is not None:
        print(f"  dsn:            {st.dsn}")
        print(f"  query it:       hypertail embedded psql{where}")
        print(f"  stop it:        hypertail embedded stop{where}")
    else:
        print(f"  start it:       hypertail embedded start{where} (or any command that uses it)")
    return EXIT_OK


def _say_if_started(started: bool, pgdata: Path, data_dir: Path | None) -> None:
    from agent.embedded import cli_args

    if started:
        print(f"hypertail: started the embedded PostgreSQL (data in {pgdata}); it keeps running: "
              f"hypertail embedded stop{cli_args(data_dir)}", file=sys.stderr)


def cmd_embedded_start(args: argparse.Namespace) -> int:
    from agent.embedded import start_embedded

    data_dir = _embedded_data_dir(args)
    emb = start_embedded(data_dir)
    _say_if_started(emb.started, emb.pgdata, data_dir)
    if not emb.started:
        print("hypertail: the embedded PostgreSQL was already running", file=sys.stderr)
    print(emb.admin_dsn)
    return EXIT_OK


def cmd_embedded_stop(args: argparse.Namespace) -> int:
    from agent.embedded import pgdata_dir, stop_embedded

    data_dir = _embedded_data_dir(args)
    pid = stop_embedded(data_dir)
    if pid is None:
        print(f"hypertail: the embedded PostgreSQL is not running (data in {pgdata_dir(data_dir)}); "
              "nothing to stop", file=sys.stderr)
    else:
        print(f"stopped the embedded PostgreSQL (pid {pid}); its data stays in {pgdata_dir(data_dir)}")
    return EXIT_OK


def cmd_embedded_psql(args: argparse.Namespace) -> int:
    from agent.embedded import psql_argv, start_embedded

    data_dir = _embedded_data_dir(args)
    emb = start_embedded(data_dir)
    _say_if_started(emb.started, emb.pgdata, data_dir)
    extra = list(args.psql_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    commands = [arg for sql in args.command for arg in ("-c", sql)]
    argv = psql_argv(emb.dsn_for(args.database), *commands, *extra)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # psql owns the terminal (and Ctrl-C) from here on


def cmd_embedded_dsn(args: argparse.Namespace) -> int:
    from agent.embedded import start_embedded

    data_dir = _embedded_data_dir(args)
    emb = start_embedded(data_dir)
    _say_if_started(emb.started, emb.pgdata, data_dir)
    print(emb.dsn_for(args.database))
    return EXIT_OK
