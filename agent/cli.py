"""The ``hypertail`` command line.

Every subcommand returns an exit code: 0 success, 1 runtime failure, 2 configuration or usage
error (with a message that names the key and the bad value).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import CONFIG_ENV, Settings, effective_config, load_settings, mask_dsn
from agent.embedded_cli import add_embedded_parser
from agent.errors import ConfigError, HypertailError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2

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
  hypertail traces --since 1h --status failed   recent failed requests
  hypertail trace 4bf92f3577b34da6a3ce929d0e0e4736   one request as a waterfall, with its logs

Exit codes: 0 ok, 1 failure, 2 invalid configuration or usage.
"""


def _add_config(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument("--config", type=Path, metavar="PATH", help=f"config file (default: ${CONFIG_ENV})")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="hypertail", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"hypertail {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    cc = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective configuration",
        description="Load PATH, apply HYPERTAIL_* environment overrides and print the effective "
        "configuration as JSON with secrets masked. Exit 2 with a message naming the key on error.",
        formatter_class=fmt,
    )
    cc.add_argument("path", type=Path, metavar="PATH", help="the TOML config file")
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
    rn.set_defaults(func=cmd_run)

    st = sub.add_parser(
        "status",
        help="per source file: committed offset against size, last commit, recent dead letters",
        description="Show how far the database is behind each tailed file, from the checkpoints in "
        "the database. --json prints the documented shape (docs/status.md) for scripts.",
        formatter_class=fmt,
    )
    _add_config(st)
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
    return p


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.path)
    print(json.dumps(effective_config(settings), indent=2, sort_keys=True))
    if not settings.sources:
        print("warning: no [[sources]] configured: nothing will be tailed", file=sys.stderr)
    return EXIT_OK


def _settings_for_migrate(args: argparse.Namespace) -> Settings:
    if args.dsn:
        settings = load_settings(None)
        db = settings.database.model_copy(update={"dsn": args.dsn})
        return settings.model_copy(update={"database": db})
    return load_settings(args.config)


def cmd_migrate(args: argparse.Namespace) -> int:
    from agent.sink.schema import grants_for, migrate, render_layout

    if args.print_grants:
        print(grants_for(args.print_grants), end="")
        return EXIT_OK
    settings = _settings_for_migrate(args)
    with _database(settings) as dsn:
        result = asyncio.run(migrate(settings.database, dsn, settings.schema_))
    mode = result.mode
    if mode.fallback:
        print(f"hypertail: warning: TimescaleDB not used: {mode.fallback}", file=sys.stderr)
    print(f"schema applied: {mode.describe()} (server {mode.server_version}, database {result.database})")
    for line in render_layout(result.layout):
        print(line)
    return EXIT_OK


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """database.dsn, else the embedded server for this command (stopped after it if so configured)."""
    if settings.database.dsn is not None:
        yield settings.database.dsn
        return
    from agent.embedded import embedded_session

    agent = settings.agent
    with embedded_session(agent.data_dir, keep_running=agent.embedded_keep_running) as emb:
        yield emb.admin_dsn


def cmd_run(args: argparse.Namespace) -> int:
    from agent.ops.log import configure_logging

    settings = load_settings(args.config)
    if not settings.sources:
        raise ConfigError("no [[sources]] configured: nothing to tail", key="sources")
    configure_logging()
    if settings.database.dsn is not None:
        return _run_agent(args, settings, settings.database.dsn)
    return _run_embedded(args, settings)


def _run_embedded(args: argparse.Namespace, settings: Settings) -> int:
    """The agent on the embedded server; say so on stderr (stdout is the JSON log) at start."""
    from agent.embedded import notice, release, start_embedded
    from agent.ops.log import get_logger

    agent = settings.agent
    emb = start_embedded(agent.data_dir)
    log = get_logger()
    log.info("db.embedded", dsn=mask_dsn(emb.admin_dsn), data_dir=str(emb.pgdata), started=emb.started,
             keep_running=agent.embedded_keep_running)
    print("hypertail: " + notice(emb, agent.data_dir, keep_running=agent.embedded_keep_running), file=sys.stderr)
    try:
        return _run_agent(args, settings, emb.admin_dsn)
    finally:
        if release(emb, agent.data_dir, keep_running=agent.embedded_keep_running):
            log.info("db.embedded_stopped", data_dir=str(emb.pgdata))


def _run_agent(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from agent.runner import Runner

    async def _main() -> int:
        runner = Runner(settings, dsn, exit_when_idle=args.exit_when_idle, idle_grace_s=args.idle_grace)
        runner.install_signal_handlers()
        return await runner.run()

    return asyncio.run(_main())


def cmd_status(args: argparse.Namespace) -> int:
    from agent.sink.status import status_report
    from agent.status import build_status, render_table

    settings = load_settings(args.config)
    agent_id = None if args.all_agents else settings.agent.id
    with _database(settings) as dsn:
        report = asyncio.run(status_report(settings.database, dsn, agent_id))
    status = build_status(agent_id, report)
    print(json.dumps(status, indent=2) if args.json else render_table(status))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo.run import run_demo
    from agent.ops.log import configure_logging

    configure_logging("warning")
    settings = load_settings(args.config)  # a bad HYPERTAIL_AGENT__* value: a config error, not a traceback
    print(run_demo(settings, chats=args.chats, documents=args.documents, fresh=args.fresh))
    return EXIT_OK


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
    ts.add_argument("--since", type=_duration, default=timedelta(hours=1), metavar="AGE",
                    help="how far back to look (default: 1h)")
    ts.add_argument("--status", choices=("completed", "failed", "in_progress"), help="only traces in this status")
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
    tid = text.strip().lower()
    if len(tid) != 32 or any(ch not in "0123456789abcdef" for ch in tid) or not tid.strip("0"):
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


def cmd_trace(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.sink.traces import fetch_trace
    from agent.views.waterfall import render, to_json

    settings = load_settings(args.config)
    with _database(settings) as dsn:
        view = asyncio.run(fetch_trace(settings.database, dsn, args.trace_id))
    if args.json:
        print(json.dumps(to_json(view), indent=2))
        return EXIT_OK
    console = Console(width=args.width, highlight=False, soft_wrap=False)
    for line in render(view, console.width, fold=not args.all):
        console.print(line)
    return EXIT_OK


def cmd_traces(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.sink.traces import fetch_traces
    from agent.views.listing import table, to_json
    from agent.views.model import TraceFilter

    settings = load_settings(args.config)
    f = TraceFilter(since=args.since, status=args.status, operation=args.operation, user_id=args.user,
                    limit=args.limit)
    with _database(settings) as dsn:
        traces = asyncio.run(fetch_traces(settings.database, dsn, f))
    if args.json:
        print(json.dumps(to_json(traces), indent=2))
    elif not traces:
        print(f"no traces started in the last {args.since} match", file=sys.stderr)
    else:
        Console(highlight=False).print(table(traces))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"hypertail: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HypertailError as exc:
        print(f"hypertail: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"hypertail: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
