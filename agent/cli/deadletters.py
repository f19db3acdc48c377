"""``hypertail dead-letters``: list the lines the agent could not store, and replay them after a fix.

Listing reads ``hypertail.dead_letters`` (newest first, with filters) and shows each one's file,
offset, reason and a safe preview of its bytes (:mod:`agent.views.deadletters`).

``--replay`` parses each chosen line again, now, as the agent would (:class:`LineParser` of the
current configuration: the source's record_type_key and app-log policy, the deterministic id the
agent gave it, as the agent that wrote the dead letter), and writes a line that now becomes a row
in the same transaction that deletes its dead letter (:mod:`agent.sink.deadletters`): exactly
once, across crashes too. What still fails stays a dead letter, with the reason it fails now.
A line the dead letter holds only in part (longer than ``tail.max_line_bytes`` then, or than
64 KiB) is read again from its file, if the file is still that file (:mod:`agent.sources.lookup`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.output import note, print_styled, terminal_width
from agent.config import Settings, load_settings
from agent.model import AppLog, DeadLetter, FileIdentity, FileRef, Row, one_line
from agent.ops.metrics import Metrics
from agent.runner.parsing import LineParser
from agent.sink.deadletters import REPLAY_GRANT, DeadLetterFilter, DeadLetterStore, StoredDeadLetter
from agent.sources.lookup import LineGone, read_line
from agent.views.deadletters import listing, stored_whole, to_json
from agent.views.table import cut

EPILOG = f"""\
examples:
  hypertail dead-letters --config c.toml                       the 50 newest, with reason and bytes
  hypertail dead-letters --since 1h --reason max_line_bytes    filter by age and by a part of the reason
  hypertail dead-letters --source app --json | jq '.[].reason'
  hypertail dead-letters --reason max_line_bytes --replay --dry-run   what a replay would do now
  HYPERTAIL_TAIL__MAX_LINE_BYTES=4194304 hypertail dead-letters --reason max_line_bytes --replay

--replay parses the chosen lines again with the current configuration (after a fix: a wider
tail.max_line_bytes, a source's record_type_key...) and moves each line that now becomes a row out
of hypertail.dead_letters in the same transaction that writes the row: exactly once, also if the
replay is killed (run it again to finish). Lines that still fail stay, with today's reason. It
needs, besides the agent's grants: {REPLAY_GRANT.format(role="ROLE")}

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

    settings = load_settings(args.config)
    since = None if args.since is None else datetime.now(UTC) - args.since
    f = DeadLetterFilter(since=since, source=args.source, path=args.path, reason=args.reason, agent_id=args.agent,
                         ids=tuple(args.ids), limit=args.limit if args.limit or args.replay else 50)
    with command_dsn(settings, args.database) as dsn:
        if args.replay:
            return asyncio.run(_replay(settings, dsn, f, dry_run=args.dry_run))
        return asyncio.run(_list(settings, dsn, f, as_json=args.json))


async def _list(settings: Settings, dsn: str, f: DeadLetterFilter, *, as_json: bool) -> int:
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay did with one dead letter: ``table`` it became a row of, or why it stays."""

    dead: StoredDeadLetter
    table: str | None = None
    left: str | None = None


class Replayer:
    """Parses dead letters again as their agents would now, and stores those that become rows."""

    def __init__(self, settings: Settings, store: DeadLetterStore, *, dry_run: bool) -> None:
        self.settings = settings
        self.store = store
        self.dry_run = dry_run
        self._metrics = Metrics()
        self._parsers: dict[str, LineParser] = {}

    def _parser(self, agent_id: str) -> LineParser:
        """The parse of the agent that read the line (its id is part of the deterministic row ids)."""
        parser = self._parsers.get(agent_id)
        if parser is None:
            agent = self.settings.agent.model_copy(update={"id": agent_id})
            parser = self._parsers[agent_id] = LineParser(self.settings.model_copy(update={"agent": agent}),
                                                          self._metrics)
        return parser

    async def one(self, dl: StoredDeadLetter) -> Outcome:
        try:
            ref = FileRef(dl.source, dl.path, _identity_of(dl.file_key))
            data = dl.raw if stored_whole(dl) else await self._read_again(dl, ref.identity)
        except LineGone as exc:
            return Outcome(dl, left=f"only its first {len(dl.raw)} bytes are stored, and {exc}")
        limit = self.settings.tail.max_line_bytes
        if len(data) > limit:
            return Outcome(dl, left=f"{len(data)} bytes, still longer than tail.max_line_bytes ({limit})")
        [item] = self._parser(dl.agent_id).parse_block(one_line(ref, dl.byte_offset, dl.byte_offset + dl.line_length,
                                                                data))
        result = item.result
        if isinstance(result, DeadLetter):
            return Outcome(dl, left=f"still a dead letter: {result.reason}")
        if isinstance(result, AppLog) or not isinstance(result, Row):
            return Outcome(dl, left=f"an ordinary log line that source {dl.source!r} does not store (app_logs)")
        if not self.dry_run and not await self.store.replay(dl.id, result):
            return Outcome(dl, left="replayed meanwhile by another replay")
        return Outcome(dl, table=result.table)

    async def _read_again(self, dl: StoredDeadLetter, key_identity: FileIdentity) -> bytes:
        known = await self.store.identity(dl.file_key)
        if known is None:
            raise LineGone("its file's checkpoint is gone (agent.checkpoint_retention_days)")
        identity = FileIdentity(known.device, known.inode, known.fingerprint, known.fingerprint_len)
        if identity.key != key_identity.key:  # the checkpoint row is keyed by file_key: cannot happen
            raise LineGone(f"its checkpoint names another file ({identity.key})")
        return read_line(dl.path, identity, dl.byte_offset, dl.byte_offset + dl.line_length)


def _identity_of(file_key: str) -> FileIdentity:
    """The identity whose key is ``file_key`` (``dev:ino:fingerprint16``), for the row ids."""
    try:
        dev, ino, fp = file_key.split(":")
        return FileIdentity(int(dev), int(ino), fp, 0)
    except ValueError:
        raise LineGone(f"its file key {file_key!r} is not one the agent writes") from None


async def _replay(settings: Settings, dsn: str, f: DeadLetterFilter, *, dry_run: bool) -> int:
    async with DeadLetterStore(settings.database, dsn) as store:
        dead = await store.in_file_order(f)
        if not dead:
            note("no dead letters match")
            return 0
        replayer = Replayer(settings, store, dry_run=dry_run)
        width = terminal_width()
        outcomes = []
        for dl in dead:
            outcome = await replayer.one(dl)
            outcomes.append(outcome)
            print(cut(_line(outcome, dry_run), width) if width else _line(outcome, dry_run), flush=True)
    print(_summary(outcomes, dry_run))
    return 1 if any(o.left for o in outcomes) else 0


def _line(o: Outcome, dry_run: bool) -> str:
    where = f"#{o.dead.id}  {o.dead.path}:{o.dead.byte_offset}"
    if o.table is not None:
        return f"{where}  {'would become' if dry_run else 'became'} a row of observability.{o.table}"
    return f"{where}  left: {o.left}"


def _summary(outcomes: list[Outcome], dry_run: bool) -> str:
    tables: dict[str, int] = {}
    for o in outcomes:
        if o.table is not None:
            tables[o.table] = tables.get(o.table, 0) + 1
    rows = sum(tables.values())
    per = ", ".join(f"{t} {n}" for t, n in sorted(tables.items()))
    verb = "would replay" if dry_run else "replayed"
    return (f"{verb} {rows} of {len(outcomes)} dead letters into rows" + (f" ({per})" if per else "")
            + f"; {len(outcomes) - rows} left")
