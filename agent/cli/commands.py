"""What each ``hypertail`` subcommand does, once :mod:`agent.cli.parser` has read its arguments.

Each ``cmd_*`` returns an exit code (see :mod:`agent.cli`). Heavy imports (the runner, the
database, rich) happen inside the command that needs them, so ``hypertail --help`` and
``check-config`` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import Iterator

from agent.cli.output import console, drawing_width, note, print_styled, terminal_width, wrapped
from agent.config import Settings, effective_config, load_settings, mask_dsn
from agent.errors import CommandError, ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration (secrets masked); warn when nothing would be tailed.
    With ``--connect``, check it against the database and the files instead (:mod:`agent.cli.check`)."""
    if args.connect:
        from agent.cli.check import cmd_check_connect

        return cmd_check_connect(args)
    settings = load_settings(args.path)
    print(json.dumps(effective_config(settings), indent=2, sort_keys=True))
    if not settings.sources:
        note("warning: no [[sources]] configured: nothing will be tailed")
    return EXIT_OK


def _settings_for_migrate(args: argparse.Namespace) -> Settings:
    """The config file's settings, or the defaults with ``--dsn`` as database.dsn."""
    if args.dsn:
        settings = load_settings(None)
        db = settings.database.model_copy(update={"dsn": args.dsn})
        return settings.model_copy(update={"database": db})
    return load_settings(args.config)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the schema and print the storage mode and layout, or print the GRANTs for a role."""
    from agent.sink.layout import render_layout
    from agent.sink.schema import grants_for, migrate

    if args.print_grants:
        print(grants_for(args.print_grants), end="")
        return EXIT_OK
    settings = _settings_for_migrate(args)
    if settings.database.dsn is None:
        settings = embedded_settings(settings)
    with command_dsn(settings, start=True) as dsn:
        result = asyncio.run(migrate(settings.database, dsn, settings.schema_))
    mode = result.mode
    if mode.fallback:
        note(f"hypertail: warning: TimescaleDB not used: {mode.fallback}")
    print(f"schema applied: {mode.describe()} (server {mode.server_version}, database {result.database})")
    for line in wrapped(render_layout(result.layout), terminal_width()):
        print(line)
    return EXIT_OK


@contextlib.contextmanager
def command_dsn(settings: Settings, database: str | None = None, *, start: bool = False) -> Iterator[str]:
    """The DSN a command uses: database.dsn, else the embedded server's; ``database`` (``-d``)
    names another database on that server.

    Only ``start`` commands (migrate) start a stopped embedded server (and stop it after, if so
    configured); a read-only command says it is stopped and how to start it instead of starting
    a server its user stopped, or creating an empty one.
    """
    from agent.embedded import ADMIN_DATABASE, cli_args, embedded_session, running_dsn, with_database

    if settings.database.dsn is not None:
        yield settings.database.dsn if database is None else with_database(settings.database.dsn, database)
        return
    agent = settings.agent
    if not start:
        dsn = running_dsn(agent.data_dir)
        if dsn is None:
            raise CommandError(
                "the embedded PostgreSQL is not running, and this command only reads, so it does not start it: "
                f"`hypertail embedded start{cli_args(agent.data_dir)}` starts it (or set database.dsn)")
        yield with_database(dsn, database or ADMIN_DATABASE)
        return
    with embedded_session(agent.data_dir, keep_running=agent.embedded_keep_running) as emb:
        yield emb.dsn_for(database or ADMIN_DATABASE)


def embedded_settings(settings: Settings) -> Settings:
    """The settings for the embedded server, which can never have TimescaleDB: ``auto`` means
    plain tables there without a warning (``require`` still refuses, as asked)."""
    if settings.schema_.timescaledb != "auto":
        return settings
    schema = settings.schema_.model_copy(update={"timescaledb": "off"})
    return settings.model_copy(update={"schema_": schema})


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent on database.dsn, or on the embedded server when none is set."""
    from agent.ops.log import configure_logging

    settings = load_settings(args.config)
    if not settings.sources:
        raise ConfigError("no [[sources]] configured: nothing to tail", key="sources")
    configure_logging(args.log_level or settings.agent.log_level, args.log_format or settings.agent.log_format)
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
    note("hypertail: " + notice(emb, agent.data_dir, keep_running=agent.embedded_keep_running))
    try:
        return _run_agent(args, embedded_settings(settings), emb.admin_dsn)
    finally:
        if release(emb, agent.data_dir, keep_running=agent.embedded_keep_running):
            log.info("db.embedded_stopped", data_dir=str(emb.pgdata))


def _run_agent(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    """The agent itself, with signal handlers, until it stops; its exit code."""
    from agent.runner import Runner

    async def _main() -> int:
        runner = Runner(settings, dsn, exit_when_idle=args.exit_when_idle, idle_grace_s=args.idle_grace)
        runner.install_signal_handlers()
        return await runner.run()

    return asyncio.run(_main())


def cmd_status(args: argparse.Namespace) -> int:
    """Print how far the database is behind each tailed file (a table, or JSON)."""
    from agent.cli.status import build_status, render_table
    from agent.sink.status import status_report

    settings = load_settings(args.config)
    agent_id = None if args.all_agents else settings.agent.id
    with command_dsn(settings, args.database) as dsn:
        report = asyncio.run(status_report(settings.database, dsn, agent_id))
    status = build_status(agent_id, report)
    print(json.dumps(status, indent=2) if args.json else render_table(status, terminal_width()))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo on the embedded server and print its summary."""
    from agent.demo.run import DEMO_DB, run_demo
    from agent.ops.log import configure_logging

    settings = load_settings(args.config)  # a bad HYPERTAIL_AGENT__* value: a config error, not a traceback
    # stdout is the human summary: the agent's warnings (none are expected) go to stderr, readable.
    configure_logging("warning", "console", fd=sys.stderr.fileno())
    again = f"-d {DEMO_DB}" + (f" --config {shlex.quote(str(args.config))}" if args.config else "")
    print(run_demo(settings, chats=args.chats, documents=args.documents, fresh=args.fresh, again=again))
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    """Print one trace as a waterfall (or JSON)."""
    from agent.sink.traces import fetch_trace
    from agent.views.export import to_json
    from agent.views.waterfall import render

    settings = load_settings(args.config)
    with command_dsn(settings, args.database) as dsn:
        view = asyncio.run(fetch_trace(settings.database, dsn, args.trace_id))
    if args.json:
        print(json.dumps(to_json(view), indent=2))
        return EXIT_OK
    width = drawing_width(args.width)
    out = console(width=width, soft_wrap=False)
    for line in render(view, width, fold=not args.all):
        out.print(line)
    return EXIT_OK


def cmd_traces(args: argparse.Namespace) -> int:
    """List recent traces matching the filters (a table that fits the terminal, or JSON)."""
    from agent.sink.traces import fetch_traces
    from agent.views.listing import age, row_style, table, to_json
    from agent.views.model import TraceFilter

    settings = load_settings(args.config)
    f = TraceFilter(since=args.since, status=args.status, operation=args.operation, user_id=args.user,
                    limit=args.limit, failed_spans=args.with_failed_spans)
    with command_dsn(settings, args.database) as dsn:
        traces = asyncio.run(fetch_traces(settings.database, dsn, f))
    if args.json:
        print(json.dumps(to_json(traces), indent=2))
        return EXIT_OK
    if not traces:
        note(f"no traces started in the last {age(args.since)} match")
        return EXIT_OK
    width = terminal_width()
    lines, footer = table(traces, width)
    head = len(lines) - len(traces)
    styles = ["dim"] * (head - 1) + ["bold"] + [row_style(t) for t in traces]
    print_styled([*zip(lines, styles, strict=True), *((text, "dim") for text in footer)])
    return EXIT_OK
