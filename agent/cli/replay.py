"""``hypertail dead-letters --replay``: each chosen line parsed again, and stored if it now is a row.

See :mod:`agent.cli.deadletters` for what a replay promises; this module does it, line by line
in file order: the whole line (from the dead letter, or read again from its file), the current
``tail.max_line_bytes``, the parse of the agent that read the line, and one transaction per line
that becomes a row (:meth:`agent.sink.deadletters.DeadLetterStore.replay`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.cli.output import note, terminal_width
from agent.config import Settings
from agent.model import Block, DeadLetter, FileIdentity, FileRef, Row, Rows
from agent.ops.metrics import Metrics
from agent.runner.parsing import LineParser
from agent.sink.deadletters import DeadLetterFilter, DeadLetterStore, StoredDeadLetter
from agent.sources.lookup import LineGone, read_line
from agent.views.deadletters import stored_whole
from agent.views.table import cut


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay did with one dead letter: the ``tables`` of the rows it became (one per row:
    an OTLP line becomes many), or why it stays."""

    dead: StoredDeadLetter
    tables: tuple[str, ...] = ()
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
        line = Block(ref, [dl.byte_offset, dl.byte_offset + dl.line_length], [data])
        [item] = self._parser(dl.agent_id).parse_block(line)
        result = item.result
        if isinstance(result, DeadLetter):
            return Outcome(dl, left=f"still a dead letter: {result.reason}")
        if isinstance(result, Rows) and result.dead is not None:
            return Outcome(dl, left=f"still a dead letter: {result.dead.reason}")
        rows = (result,) if isinstance(result, Row) else result.rows if isinstance(result, Rows) else ()
        if not rows:
            if isinstance(result, Rows):
                return Outcome(dl, left="its line holds no record to store")
            return Outcome(dl, left=f"an ordinary log line that source {dl.source!r} does not store (app_logs)")
        if not self.dry_run and not await self.store.replay(dl.id, rows):
            return Outcome(dl, left="replayed meanwhile by another replay")
        return Outcome(dl, tables=tuple(r.table for r in rows))

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


async def replay(settings: Settings, dsn: str, f: DeadLetterFilter, *, dry_run: bool) -> int:
    """Replay the dead letters ``f`` chooses; exit 0 when each became a row, else 1."""
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
    verb = "would become" if dry_run else "became"
    if len(o.tables) == 1:
        return f"{where}  {verb} a row of observability.{o.tables[0]}"
    if o.tables:
        return f"{where}  {verb} {len(o.tables)} rows ({_per_table(o.tables)})"
    return f"{where}  left: {o.left}"


def _per_table(tables: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for t in tables:
        counts[t] = counts.get(t, 0) + 1
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))


def _summary(outcomes: list[Outcome], dry_run: bool) -> str:
    replayed = sum(1 for o in outcomes if o.tables)
    rows = [t for o in outcomes for t in o.tables]
    per = _per_table(rows)
    verb = "would replay" if dry_run else "replayed"
    into = f"{len(rows)} rows" if len(rows) != replayed else "rows"
    return (f"{verb} {replayed} of {len(outcomes)} dead letters into {into}" + (f" ({per})" if per else "")
            + f"; {len(outcomes) - replayed} left")
