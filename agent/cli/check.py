"""``hypertail check-config PATH --connect``: will this configuration work here, and if not, why.

The checks, in the order they depend on each other, each with the exit code it sets when it is
the first to fail (so a script or an init container can tell them apart):

====  ========  =============================================================================
 0    -         every check passed
 2    config    the file itself is invalid (as without --connect; nothing else is checked)
 3    server    cannot connect: the address, TLS, the password, or the embedded server is stopped
 4    storage   schema.timescaledb = require on a server where TimescaleDB cannot be used
 5    schema    not applied (or older) and the agent could not apply it at start
 6    grants    the role lacks a privilege the agent writes with
 7    sources   a glob of a source matches no file (yet): a typo, or an application not started
====  ========  =============================================================================

It changes nothing: the database is read in a read-only transaction, the globs are matched
without opening a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass

from agent.cli.output import terminal_width, wrapped
from agent.config import Settings, load_settings, mask_dsn
from agent.errors import CommandError

EXIT_CODES = {"server": 3, "storage": 4, "schema": 5, "grants": 6, "sources": 7}
SHOWN_PATHS = 3  # files named per source; the rest are counted


@dataclass(frozen=True, slots=True)
class Line:
    check: str  # a key of EXIT_CODES, or "config"
    ok: bool
    text: str


def run_checks(path: str | None, settings: Settings) -> list[Line]:
    """Every check of the module docstring, in order; the database ones only if it answers."""
    lines = [Line("config", True, f"{path or 'the environment'}: valid ({len(settings.sources)} sources)")]
    lines += _database_lines(settings)
    lines += _source_lines(settings)
    return lines


def _database_lines(settings: Settings) -> list[Line]:
    from agent.sink.validate import Verdict, check_database

    embedded = settings.database.dsn is None
    try:
        dsn = _dsn(settings)
        result = asyncio.run(check_database(settings.database, dsn, settings.schema_))
    except CommandError as exc:
        return [Line("server", False, str(exc))]
    mode = result.mode
    if embedded and settings.schema_.timescaledb == "auto":
        mode = Verdict(True, "plain PostgreSQL (the embedded server has no TimescaleDB)")
    where = "the embedded PostgreSQL" if embedded else mask_dsn(dsn)
    return [Line("server", True, f"{result.server} ({where})"), Line("storage", mode.ok, mode.text),
            Line("schema", result.schema.ok, result.schema.text), Line("grants", result.grants.ok, result.grants.text)]


def _dsn(settings: Settings) -> str:
    """database.dsn, or the running embedded server's (it is not started for a check)."""
    if settings.database.dsn is not None:
        return settings.database.dsn
    from agent.embedded import cli_args, running_dsn

    dsn = running_dsn(settings.agent.data_dir)
    if dsn is None:
        raise CommandError("no database.dsn, and the embedded PostgreSQL is not running: `hypertail run` starts "
                           f"it, or `hypertail embedded start{cli_args(settings.agent.data_dir)}`")
    return dsn


def _source_lines(settings: Settings) -> list[Line]:
    from agent.runner.lifecycle import source_specs
    from agent.sources.survey import survey

    out = []
    for found in survey(source_specs(settings), settings.tail.follow_symlinks):
        paths = found.paths
        named = ", ".join(paths[:SHOWN_PATHS]) + (f" and {len(paths) - SHOWN_PATHS} more"
                                                  if len(paths) > SHOWN_PATHS else "")
        count = f"{len(paths)} file{'' if len(paths) == 1 else 's'}"
        out.append(Line("sources", bool(paths), f"{found.source}: {count}" + (f": {named}" if paths else "")))
        for g in found.globs:
            if not g.paths:
                where = "" if g.folder_exists else f"; its folder {g.folder} does not exist"
                out.append(Line("sources", False, f"{found.source}: {g.glob} matches no file{where}"))
    return out


def exit_code(lines: list[Line]) -> int:
    """The code of the first failed check in dependency order (see the module docstring)."""
    failed = [EXIT_CODES[line.check] for line in lines if not line.ok and line.check in EXIT_CODES]
    return min(failed, default=0)


def render(lines: list[Line], width: int | None) -> list[str]:
    out = [f"{line.check:<8} {'ok' if line.ok else 'FAIL':<4}  {line.text}" for line in lines]
    return [w for line in out for w in _indented(line, width)]


def _indented(line: str, width: int | None) -> list[str]:
    first, *rest = wrapped([line], width)
    return [first] + [" " * 15 + r.strip() for r in rest]


def cmd_check_connect(args: argparse.Namespace) -> int:
    settings = load_settings(args.path)
    lines = run_checks(str(args.path), settings)
    code = exit_code(lines)
    if args.json:
        print(json.dumps({"ok": code == 0, "exit_code": code,
                          "checks": [{"check": x.check, "ok": x.ok, "text": x.text} for x in lines]}, indent=2))
    else:
        print("\n".join(render(lines, terminal_width())))
    return code
