"""``hypertail metrics`` and ``hypertail workflows``: what the application's metrics and workflows say.

Kept apart from :mod:`agent.cli.commands` (the agent's own commands): these read what
``emit.counter/gauge/histogram`` and ``emit.workflow`` wrote (issue 26). Exit codes as in
:mod:`agent.cli`; read errors are one line, printed there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from agent.config import load_settings

EXIT_OK = 0

METRICS_EPILOG = """\
Each series is a name with its attributes (emit.counter("cache.hits", route="/q") is the series
cache.hits{route=/q}), merged over every process and interval written within --since:
  counter     its increase over the window, and that per second
  gauge       its last value, and the lowest and highest set
  histogram   how many values, and p50/p95/p99 (within 1.1 % of the true values, docs/metrics.md)

examples:
  hypertail metrics                              every series of the last 15 minutes
  hypertail metrics --since 1h --name latency    series whose name contains "latency"
  hypertail metrics --kind histogram --json | jq '.[] | {name, p95}'

--since takes a number and a unit: s, m, h, d (90s, 30m, 1h, 7d).
"""

WORKFLOWS_EPILOG = """\
A workflow's state is that of its latest transition by the time the application recorded it
(emit.workflow), whatever order the lines reached the database in. Within a state, the workflows
that have been in it longest come first. A state marked * has a transition whose from_state differs
from the state before it (clocks that disagree between hosts, or two processes moving it at once).

examples:
  hypertail workflows                            counts per state, then every workflow by state
  hypertail workflows --state failed --since 1d  failed ones that moved in the last day
  hypertail workflows --type document --json | jq '.workflows[] | {workflow_id, history}'
"""


def add_app_parsers(sub: Any) -> None:
    """The ``metrics`` and ``workflows`` subcommands, on the main parser's subparsers."""
    from agent.cli.parser import _add_config, _add_database, _duration, _positive

    fmt = argparse.RawDescriptionHelpFormatter
    mt = sub.add_parser(
        "metrics", help="the application's counters, gauges and histograms and their recent values",
        description="List the series the application wrote with emit.counter, emit.gauge and emit.histogram "
        "(or OTLP metrics) within --since, with their values over that window.",
        epilog=METRICS_EPILOG, formatter_class=fmt,
    )
    _add_config(mt)
    mt.add_argument("--since", type=_duration, default=timedelta(minutes=15), metavar="AGE",
                    help="how far back to look (default: 15m)")
    mt.add_argument("--name", metavar="TEXT", help="only series whose name contains TEXT")
    mt.add_argument("--kind", choices=("counter", "updown_counter", "gauge", "histogram"), help="only this kind")
    mt.add_argument("--limit", type=_positive, default=200, metavar="N", help="at most N series (default: 200)")
    mt.add_argument("--json", action="store_true", help="machine-readable output")
    _add_database(mt)
    mt.set_defaults(func=cmd_metrics)

    wf = sub.add_parser(
        "workflows", help="the application's workflows by current state, with time in state",
        description="Count the workflows the application moved with emit.workflow per current state, then "
        "list them by state with how long each has been in it.",
        epilog=WORKFLOWS_EPILOG, formatter_class=fmt,
    )
    _add_config(wf)
    wf.add_argument("--since", type=_duration, metavar="AGE",
                    help="only workflows that moved within AGE (default: all)")
    wf.add_argument("--state", metavar="STATE", help="only workflows now in STATE")
    wf.add_argument("--type", dest="workflow_type", metavar="TYPE", help="only workflows of this workflow_type")
    wf.add_argument("--limit", type=_positive, default=200, metavar="N", help="list at most N (default: 200)")
    wf.add_argument("--json", action="store_true", help="machine-readable output")
    _add_database(wf)
    wf.set_defaults(func=cmd_workflows)


def _width() -> int:
    """The terminal's width, or 80 (also in a pipe, so piped output has the same shape)."""
    return shutil.get_terminal_size((80, 24)).columns


def _emit_lines(lines: Iterable[str]) -> None:
    """Print; a reader that went away (``| head``) ends the output quietly, as Unix tools do."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again


def _as_json(data: Any) -> list[str]:
    return json.dumps(data, indent=2).splitlines()


def cmd_metrics(args: argparse.Namespace) -> int:
    """List the application's metric series (a table, or JSON)."""
    from agent.cli.commands import command_dsn
    from agent.sink.appdata import fetch_metrics
    from agent.views.apps import metrics_json, render_metrics
    from agent.views.model import MetricFilter

    settings = load_settings(args.config)
    f = MetricFilter(since=args.since, name=args.name, kind=args.kind, limit=args.limit)
    with command_dsn(settings, args.database) as dsn:
        series = asyncio.run(fetch_metrics(settings.database, dsn, f))
    if args.json:
        _emit_lines(_as_json(metrics_json(series)))
    elif not series:
        print(f"no metrics written in the last {args.since} match", file=sys.stderr)
    else:
        _emit_lines(render_metrics(series, _width()))
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace) -> int:
    """List the application's workflows by current state (a table, or JSON)."""
    from agent.cli.commands import command_dsn
    from agent.sink.appdata import fetch_workflows
    from agent.views.apps import render_workflows, workflows_json
    from agent.views.model import WorkflowFilter

    settings = load_settings(args.config)
    f = WorkflowFilter(since=args.since, state=args.state, workflow_type=args.workflow_type, limit=args.limit)
    with command_dsn(settings, args.database) as dsn:
        found = asyncio.run(fetch_workflows(settings.database, dsn, f))
    if args.json:
        _emit_lines(_as_json(workflows_json(found)))
    elif not found.per_state:
        print("no workflows match", file=sys.stderr)
    else:
        _emit_lines(render_workflows(found, _width()))
    return EXIT_OK
