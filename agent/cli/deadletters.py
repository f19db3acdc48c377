"""``hypertail dead-letters``: list the lines the agent could not store, and replay them after a fix.

Listing reads ``hypertail.dead_letters`` (newest first, with filters) and shows each one's file,
offset, reason and a safe preview of its bytes (:mod:`agent.views.deadletters`).

``--replay`` (:mod:`agent.cli.replay`) parses each chosen line again, now, as the agent would
(the runner's ``LineParser`` with the current configuration: the source's record_type_key and
app-log policy, the deterministic id the agent that wrote the dead letter gave it), and writes a
line that now becomes a row in the same transaction that deletes its dead letter
(:mod:`agent.sink.deadletters`): exactly once, across crashes too. What still fails stays a dead
letter, with the reason it fails now. A line the dead letter holds only in part (longer than
``tail.max_line_bytes`` then, or than 64 KiB) is read again from its file, if the file is still
that file (:mod:`agent.sources.lookup`). Only the parser's arguments are imported with the
command line; the rest loads when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.output import note, print_styled, terminal_width
from agent.config import Settings, load_settings

if TYPE_CHECKING:  # the database, the parser and rich load only when the command runs
    from agent.sink.deadletters import DeadLetterFilter

EPILOG = """\
examples:
  hypertail dead-letters --config c.toml                       the 50 newest, with reason and bytes
  hypertail dead-letters --since 1h --reason max_line_bytes    filter by age and by a part of the reason
  hypertail dead-letters --source app --json | jq '.[].reason'
  hypertail dead-letters --reason max_line_bytes --replay --dry-run   what a replay would do now
  HYPERTAIL_TAIL__MAX_LINE_BYTES=4194304 hypertail dead-letters --reason max_line_bytes --replay

--replay parses the chosen lines again with the current configuration (after a fix: a wider
tail.max_line_bytes, a source's record_type_key...) and moves each line that now becomes a row out
of hypertail.dead_letters in the same transaction that writes the row: exactly once, also if the
replay is killed (run it again to finish). Lines that still fail stay, with today's reason. Its
role needs, besides the agent's grants, SELECT and DELETE on hypertail.dead_letters and SELECT
on hypertail.checkpoints (docs/operations.md, section 9).

exit codes: 0 listed / every chosen line replayed, 1 some chosen lines still fail (or a database
error), 2 invalid arguments or config.
"""


def add_dead_letters_parser(sub: Any, since: Any, positive: Any) -> None:
    """The ``dead-letters`` subcommand (``since``/``positive``: the argument types of the parser)."""
    p = sub.add_parser(
        "dead-letters", help="list the lines that became dead letters, and replay them after a fix",
        description="List the newest dead letters (file, offset, reason, a safe preview of the line's bytes) "
        "matching the filters, or --replay them.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, metavar="PATH", help="config file (default: $HYPERTAIL_CONFIG)")
    p.add_argument("-d", "--database", metavar="NAME", help="read database NAME on the same server")
    p.add_argument("--since", type=since, metavar="AGE",
                   help="only dead letters received within AGE (90s, 30m, 1h, 7d)")
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--path", metavar="TEXT", help="only files whose path contains TEXT")
    p.add_argument("--reason", metavar="TEXT", help="only reasons that contain TEXT (any case)")
    p.add_argument("--agent", metavar="ID", help="only dead letters of this agent id")
    p.add_argument("--id", type=positive, action="append", default=[], metavar="N", dest="ids",
                   help="only the dead letter with this id (the #N of the listing); repeatable")
    p.add_argument("--limit", type=positive, metavar="N",
                   help="at most N (default: 50 listed; every match replayed)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.add_argument("--replay", action="store_true", help="parse the chosen lines again and store those that now "
                   "become rows (exactly once)")
    p.add_argument("--dry-run", action="store_true", help="with --replay: say what would happen, write nothing")
    p.set_defaults(func=cmd_dead_letters)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from agent.cli.commands import command_dsn
    from agent.cli.replay import replay
    from agent.sink.deadletters import DeadLetterFilter

    settings = load_settings(args.config)
    since = None if args.since is None else datetime.now(UTC) - args.since
    f = DeadLetterFilter(since=since, source=args.source, path=args.path, reason=args.reason, agent_id=args.agent,
                         ids=tuple(args.ids), limit=args.limit if args.limit or args.replay else 50)
    with command_dsn(settings, args.database) as dsn:
        if args.replay:
            return asyncio.run(replay(settings, dsn, f, dry_run=args.dry_run))
        return asyncio.run(_list(settings, dsn, f, as_json=args.json))


async def _list(settings: Settings, dsn: str, f: DeadLetterFilter, *, as_json: bool) -> int:
    from agent.sink.deadletters import DeadLetterStore
    from agent.views.deadletters import listing, to_json

    async with DeadLetterStore(settings.database, dsn) as store:
        dead, total = await store.newest(f)
    if as_json:
        print(json.dumps([to_json(d) for d in dead], indent=2))
    elif not dead:
        note("no dead letters match")
    else:
        print_styled([(line, "" if line.startswith(("#", " ")) else "dim") for line in
                      listing(dead, total, terminal_width())])
    return 0
