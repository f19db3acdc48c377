"""The ``hypertail`` arguments: subcommands, their options and help texts, argument types.

Each subcommand's ``func`` is its ``cmd_*`` in :mod:`agent.cli.commands`.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent import __version__, contract
from agent.cli.apps import add_app_parsers
from agent.cli.commands import (
    cmd_check_config,
    cmd_demo,
    cmd_migrate,
    cmd_run,
    cmd_status,
    cmd_trace,
    cmd_traces,
)
from agent.cli.deadletters import add_dead_letters_parser
from agent.cli.embedded import add_embedded_parser
from agent.config import CONFIG_ENV

DESCRIPTION = """\
hypertail tails the JSON log lines your application writes (one object per line, as structlog's
JSONRenderer writes them) and COPY-batches them into PostgreSQL/TimescaleDB tables in schema
`observability`, exactly once: every line becomes one row, or one dead letter that says why.
"""

EPILOG = f"""\
configuration:
  A TOML file given with --config or ${CONFIG_ENV}. Any key can be overridden from the
  environment as HYPERTAIL_<SECTION>__<KEY>, e.g. HYPERTAIL_DATABASE__DSN or
  HYPERTAIL_BATCH__MAX_AGE_MS=100. The database password never goes into the file: use
  database.password_file, HYPERTAIL_DATABASE__PASSWORD or PGPASSWORD.

examples:
  hypertail check-config config.toml         validate a config and print it, secrets masked
  hypertail migrate --config config.toml     create or upgrade the tables (idempotent)
  hypertail migrate --dsn postgresql://admin@db/app
  hypertail migrate --print-grants ingest    least-privilege GRANTs for the agent's role
  hypertail embedded status                  the embedded PostgreSQL (no database.dsn): running?
  hypertail check-config config.toml --connect   will it work here? server, schema, grants, files
  hypertail dead-letters --since 1h          lines that became dead letters, and why (then --replay)
  hypertail traces --since 1h --status failed   recent failed requests
  hypertail trace 4bf92f3577b34da6a3ce929d0e0e4736   one request as a waterfall, with its logs

Exit codes: 0 ok, 1 failure, 2 invalid configuration or usage.
"""


CHECK_EPILOG = """\
exit codes with --connect (the first failed check in this order):
  0 all passed   2 invalid config   3 cannot connect   4 storage mode (timescaledb = require)
  5 schema not applied and the agent could not apply it   6 missing grants
  7 a source's glob matches no file

examples:
  hypertail check-config config.toml
  hypertail check-config config.toml --connect
  hypertail check-config config.toml --connect --json | jq '.checks[] | select(.ok | not)'
"""


def _add_config(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument("--config", type=Path, metavar="PATH", help=f"config file (default: ${CONFIG_ENV})")


def _add_database(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--database", metavar="NAME",
                   help="read database NAME on the same server (default: the one of database.dsn; on the embedded "
                   "PostgreSQL `postgres`, where `hypertail run` writes; `hypertail demo` writes to hypertail_demo)")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``hypertail`` parser, every subcommand bound to its ``cmd_*``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="hypertail", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"hypertail {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    cc = sub.add_parser(
        "check-config",
        help="validate a config file (and with --connect: the database, grants and files it names)",
        description="Load PATH, apply HYPERTAIL_* environment overrides and print the effective "
        "configuration as JSON with secrets masked. Exit 2 with a message naming the key on error. "
        "With --connect, check instead what the agent will meet: the server, the storage mode it "
        "would use, the schema version, missing grants, and whether each source's globs match files.",
        epilog=CHECK_EPILOG, formatter_class=fmt,
    )
    cc.add_argument("path", type=Path, metavar="PATH", help="the TOML config file")
    cc.add_argument("--connect", action="store_true",
                    help="connect and check (read-only): server, storage mode, schema, grants, source globs")
    cc.add_argument("--json", action="store_true", help="with --connect: the checks as JSON")
    cc.set_defaults(func=cmd_check_config)

    mg = sub.add_parser(
        "migrate",
        help="apply schema.sql (idempotent) and print the storage mode",
        description="Create or upgrade the observability and hypertail schemas. With TimescaleDB the "
        "tables become hypertables with compression and retention policies; without it they are "
        "plain tables with BRIN indexes. Safe to run again.",
        formatter_class=fmt,
    )
    src = mg.add_mutually_exclusive_group()
    _add_config(src)
    src.add_argument("--dsn", metavar="DSN", help="a postgresql:// URI, instead of a config file")
    mg.add_argument(
        "--print-grants",
        metavar="ROLE",
        help="print the least-privilege GRANT statements for ROLE (the agent's login) and exit; "
        "connects to nothing",
    )
    mg.set_defaults(func=cmd_migrate)

    rn = sub.add_parser(
        "run",
        help="tail the configured files and ingest them (the agent)",
        description="Run the agent: check (or apply) the schema, load checkpoints, tail every file "
        "matching [[sources]] paths and commit rows, dead letters and offsets together. SIGTERM or "
        "SIGINT drains and exits 0 within agent.shutdown_timeout_s; a second signal exits at once. "
        "With no database.dsn, an embedded PostgreSQL is started (install 'hypertail[embedded]'); it "
        "keeps running afterwards unless agent.embedded_keep_running = false (see `hypertail embedded`).",
        epilog="example:\n  hypertail run --config /etc/hypertail/config.toml\n"
        "  hypertail run --config backfill.toml --exit-when-idle   # ingest what is there, then exit",
        formatter_class=fmt,
    )
    _add_config(rn)
    rn.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit 0 once every matching file is committed to its end and nothing changed for --idle-grace",
    )
    rn.add_argument("--idle-grace", type=float, default=1.0, metavar="SECONDS",
                    help="quiet period for --exit-when-idle (default: 1.0)")
    rn.add_argument("--log-level", choices=("debug", "info", "warning", "error"), metavar="LEVEL",
                    help="lowest level of the agent's own log on stdout: debug (one line per batch), info, "
                    "warning, error (default: agent.log_level, info)")
    rn.add_argument("--log-format", choices=("auto", "json", "console"), metavar="FORMAT",
                    help="json (one object per line), console (readable), or auto: console on a terminal, "
                    "json otherwise (default: agent.log_format, auto)")
    rn.set_defaults(func=cmd_run)

    st = sub.add_parser(
        "status",
        help="per source file: committed offset against size, last commit, recent dead letters",
        description="Show how far the database is behind each tailed file, from the checkpoints in "
        "the database. --json prints the documented shape (docs/status.md) for scripts.",
        formatter_class=fmt,
    )
    _add_config(st)
    _add_database(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--all-agents", action="store_true", help="include files committed by other agents")
    st.set_defaults(func=cmd_status)

    dm = sub.add_parser(
        "demo",
        help="start an embedded PostgreSQL, run a simulated RAG app, ingest it and show what landed",
        description="No setup needed: starts the embedded PostgreSQL (in the user's data directory, "
        "or agent.data_dir), runs a small simulated RAG application that logs only through "
        "agent.emit, ingests its log with the real agent and prints rows per table and one trace "
        "as a span tree. Each run adds to the database hypertail_demo; the server keeps running "
        "afterwards, so you can query it (the last line says how).",
        epilog="examples:\n  hypertail demo\n  hypertail embedded psql -d hypertail_demo -c 'select count(*) "
        "from observability.spans'\n  HYPERTAIL_AGENT__EMBEDDED_KEEP_RUNNING=false hypertail demo --fresh"
        "   # start over, stop the server at the end",
        formatter_class=fmt,
    )
    dm.add_argument("--config", type=Path, metavar="PATH",
                    help="optional: only agent.data_dir and agent.embedded_keep_running are used")
    dm.add_argument("--chats", type=int, default=30, help="chat requests to simulate (default: 30)")
    dm.add_argument("--documents", type=int, default=12, help="documents to process (default: 12)")
    dm.add_argument("--fresh", action="store_true",
                    help="drop the data of earlier demo runs first (by default each run adds to it)")
    dm.set_defaults(func=cmd_demo)
    add_embedded_parser(sub)
    _add_trace_parsers(sub)
    add_dead_letters_parser(sub, _duration, _positive)
    add_app_parsers(sub)
    return p


TRACE_EPILOG = """\
The waterfall has one line per span, nested by parent, with a bar on a common time axis
(start offset and duration), then the type, name, status, model, tokens and cost; failed spans
are red. The trace's log lines appear at their times under the span that was active. Totals,
chat messages and document events of the trace follow. Spans whose parent never arrived are
shown at the top level, marked "(parent missing)"; a trace still in progress shows open bars.
A name repeated more than 8 times under one parent is folded into one line, and a trace still
longer than 400 lines is folded below a depth; --all unfolds.

examples:
  hypertail trace 4bf92f3577b34da6a3ce929d0e0e4736 --config config.toml
  hypertail trace 4bf92f3577b34da6a3ce929d0e0e4736 --json | jq '.spans[] | select(.status == "failed")'
  hypertail traces --status failed --limit 1 --json | jq -r '.[0].trace_id' | xargs hypertail trace

Exit codes: 0 shown, 1 no such trace or database unreachable, 2 invalid trace id or config.
"""

TRACES_EPILOG = """\
examples:
  hypertail traces                                   the 50 newest traces of the last hour
  hypertail traces --since 1d --status failed        failed requests of the last day
  hypertail traces --operation chat --user 8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f --limit 10
  hypertail traces --since 30m --json                for scripts (docs/traces.md describes the fields)

--since takes a number and a unit: s, m, h, d (90s, 30m, 1h, 7d).
"""


def _add_trace_parsers(sub: Any) -> None:
    """``trace`` and ``traces``: ways to look at what landed (issue 13)."""
    fmt = argparse.RawDescriptionHelpFormatter
    tr = sub.add_parser(
        "trace", help="show one trace as a terminal waterfall, with its log lines",
        description="Read everything stored under TRACE_ID (trace row, spans, log lines, chat messages, "
        "document events) and draw it as a waterfall.", epilog=TRACE_EPILOG, formatter_class=fmt,
    )
    tr.add_argument("trace_id", metavar="TRACE_ID", type=_trace_id, help="32 hex digits (W3C trace id)")
    _add_config(tr)
    _add_database(tr)
    tr.add_argument("--json", action="store_true", help="print the same data as JSON (all spans, unfolded)")
    tr.add_argument("--all", action="store_true", help="do not fold repeated spans or cut long traces")
    tr.add_argument("--width", type=int, metavar="COLUMNS", help="output width (default: the terminal's)")
    tr.set_defaults(func=cmd_trace)
    ts = sub.add_parser(
        "traces", help="list recent traces with duration, span count, tokens and cost",
        description="List the newest traces (newest first) that started within --since and match the "
        "filters, each with its duration, span count, tokens and cost.", epilog=TRACES_EPILOG, formatter_class=fmt,
    )
    _add_config(ts)
    _add_database(ts)
    ts.add_argument("--since", type=_duration, default=timedelta(hours=1), metavar="AGE",
                    help="how far back to look (default: 1h)")
    ts.add_argument("--status", choices=("completed", "failed", "in_progress"),
                    help="only traces in this status: the request's own outcome (failed: an exception left the "
                    "trace, or the app marked it failed)")
    ts.add_argument("--with-failed-spans", action="store_true",
                    help="only traces in which some span failed, whatever the trace's own status (a step that "
                    "failed and was handled, e.g. a reranker that timed out, leaves the request completed)")
    ts.add_argument("--operation", metavar="TYPE", help="only this operation_type (e.g. chat, rag_query)")
    ts.add_argument("--user", type=_uuid, metavar="USER_ID", help="only this user_id (a UUID)")
    ts.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N traces (default: 50)")
    ts.add_argument("--json", action="store_true", help="machine-readable output")
    ts.set_defaults(func=cmd_traces)


_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _DURATION_UNITS or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number and a unit s, m, h or d (e.g. 1h), got {text!r}")
    return timedelta(**{_DURATION_UNITS[unit]: value})


def _trace_id(text: str) -> str:
    tid = contract.w3c_id(text.strip(), 32)
    if tid is None:
        raise argparse.ArgumentTypeError(f"expected 32 hex digits, not all zero, got {text!r}")
    return tid


def _uuid(text: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UUID, got {text!r}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)
