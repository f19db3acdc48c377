"""Commit batches: rows, merges, dead letters and checkpoints in one transaction.

The order inside the transaction is what makes delivery exactly-once:

1. lock the checkpoint rows of the batch's files (``SELECT ... FOR UPDATE``, after making sure
   they exist) and drop the lines below their committed offsets. Another agent tailing the same
   files waits here; when it gets the lock it sees our committed offsets and drops the lines
   below them. That is the single-writer rule.
2. COPY plain rows, optimistically and without a savepoint. If the table already holds a key
   (the app wrote the same span twice, a chat message id repeats, another agent raced us on a
   new file), the whole transaction is retried with that table's rows going through
   ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING``. The conflict is recognised by
   the statement that raised it (the COPY into that table), not by the table the server names:
   on a hypertable the server names the chunk.
3. Upsert merge rows (trace start/end, span start) with ``ON CONFLICT DO UPDATE``, always.
4. Insert dead letters; move the checkpoints by compare-and-set from the offsets read in step 1
   (a checkpoint another agent moved meanwhile retries the transaction).

Only after COMMIT returns are offsets acknowledged upstream. If the database refuses the data,
the batch is split in halves (each a prefix-closed part, see :mod:`agent.batcher`) until the
offending rows are isolated; they become dead letters and the rest commits. A line becomes a
"database refused" dead letter only after its own insert, tried alone, was refused.

The checkpoint of a file stores the tail hash its last block carried (see
:class:`agent.model.Block`); the sink never reads a log file.

Nothing outlives a transaction, so the writer works unchanged behind PgBouncer in transaction
pooling: no temporary staging table (the upsert reads typed arrays, one parameter per column),
named prepared statements only on a direct connection (:mod:`agent.sink.session`), no session
``SET`` (the statement timeout is ``SET LOCAL`` in each transaction), and only
transaction-scoped locks.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import asyncpg

from agent import contract
from agent.batcher import Tables, Tails, build_tables, merge_in_order
from agent.errors import DataError, RetryableError, StallError
from agent.model import DeadLetter, FileRef, Item
from agent.sink.backfill import last_row_times
from agent.sink.classify import classify
from agent.sink.session import Session
from agent.sink.statements import CHECKPOINT_SQL, COLUMN_TYPES_SQL, DEAD_LETTER_SQL, LOCK_SQL, MERGE_TABLES, upsert_sql

RAW_LIMIT = 64 * 1024
UNKNOWN_TAIL = ""  # a checkpoint inside a block (a split batch): the identity alone is trusted
_key_of = attrgetter("line.file.identity.key")  # per item in C: a batch has thousands
_start_of = attrgetter("line.start")
KILL_AFTER_COMMITS_ENV = "HYPERTAIL_TEST_KILL_AFTER_COMMITS"
DB_REFUSAL = "database refused the row: "


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit moved: a file's new committed offset and the hash of the bytes before it."""

    file: FileRef
    offset: int
    tail_hash: str


@dataclass(slots=True)
class CommitStats:
    """What one batch commit did, for acks, metrics and tests."""

    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: list[tuple[Item, DeadLetter]] = field(default_factory=list)
    committed: dict[str, Committed] = field(default_factory=dict)
    attempts: int = 0
    transactions: int = 0
    skipped_lines: int = 0
    app_logs: int = 0
    warnings: int = 0

    def absorb(self, other: CommitStats) -> None:
        for t, n in other.rows.items():
            self.rows[t] = self.rows.get(t, 0) + n
        self.dead_letters.extend(other.dead_letters)
        self.committed.update(other.committed)
        self.attempts += other.attempts
        self.transactions += other.transactions
        self.skipped_lines += other.skipped_lines
        self.app_logs += other.app_logs
        self.warnings += other.warnings


class Writer:
    """Commits batches on one connection. Errors come out already classified."""

    def __init__(self, session: Session, agent_id: str, *, statement_timeout_ms: int = 0) -> None:
        self.session = session
        self.agent_id = agent_id
        self.statement_timeout_ms = statement_timeout_ms
        self._upserts: dict[str, str] = {}  # table -> its upsert statement, built from the catalog's types
        self._commits = 0
        self._kill_after = int(os.environ.get(KILL_AFTER_COMMITS_ENV, "0") or 0)

    async def commit(
        self, items: Sequence[Item], known_bad: DataError | None = None, tables: Tables | None = None,
        tails: Tails | None = None,
    ) -> CommitStats:
        """Commit ``items``; split on data errors until the poison rows are dead letters.

        ``tables`` is what ``items`` write, if the caller built it already (see
        :class:`agent.batcher.Batch`); it serves the first attempt, while no line is dropped.
        ``tails`` maps a file key to the end of its last block in the batch and that block's tail
        hash; a checkpoint elsewhere (inside a block, after a split) stores an unknown tail.

        ``known_bad`` is the error of a failed parent attempt whose other half committed: this
        part probably holds the failing row, so a part of several lines is split without being
        tried whole. A single line is always tried on its own first: an error seen on a larger
        part proves nothing about one line (the fault may have been between two rows, or have
        gone meanwhile), so no line is dead-lettered for a refusal it was not itself given.
        """
        stats = CommitStats()
        tails = tails or {}
        if known_bad is None or len(items) == 1:
            try:
                return await self._commit_once(items, tails, tables)
            except DataError as exc:
                known_bad = exc
                stats.attempts += 1
        if len(items) == 1:
            stats.absorb(await self._commit_poison(items[0], known_bad, tails))
            return stats
        mid = len(items) // 2
        left = await self.commit(items[:mid], tails=tails)
        stats.absorb(left)
        left_clean = not left.dead_letters or all(not _is_db_refusal(dl) for _, dl in left.dead_letters)
        stats.absorb(await self.commit(items[mid:], known_bad if left_clean else None, tails=tails))
        return stats

    async def _commit_poison(self, item: Item, exc: DataError, tails: Tails) -> CommitStats:
        if isinstance(item.result, DeadLetter):
            raise StallError(f"the database refused a dead letter itself: {exc}") from exc
        reason = f"{DB_REFUSAL}{exc}"
        return await self._commit_once([Item(item.line, DeadLetter(reason=reason, field=None))], tails)

    async def _commit_once(self, items: Sequence[Item], tails: Tails, tables: Tables | None = None) -> CommitStats:
        """One batch in one transaction; retried at once after a key conflict or a checkpoint race.

        Plain rows are COPYed optimistically without a savepoint (a savepoint costs two round
        trips on every batch); when a key already exists the transaction is retried with that
        table going through the upsert. When another agent moved a checkpoint meanwhile,
        the retry reads its offset and drops the lines it already committed.
        """
        upsert: set[str] = set()
        attempts = 0
        while True:
            attempts += 1
            try:
                stats = await self._transaction(items, upsert, tails, tables)
            except KeyConflict as exc:
                upsert.add(exc.table)
                continue
            except CheckpointConflict:
                if attempts > 10:
                    raise RetryableError("checkpoint compare-and-set kept failing") from None
                continue
            except Exception as exc:  # translated once, here
                raise classify(exc) from exc
            stats.attempts = stats.transactions = attempts
            self._after_commit()
            return stats

    async def _transaction(self, items: Sequence[Item], upsert: set[str], tails: Tails,
                           built: Tables | None) -> CommitStats:
        stats = CommitStats()
        async with self.session.transaction(self.statement_timeout_ms):
            kept, expected = await self._lock_and_filter(items, stats)
            tables = built if built is not None and len(kept) == len(items) else build_tables(kept)
            await self._write_tables(tables, stats, upsert)
            await self._write_dead_letters(tables)
            await self._write_checkpoints(kept, expected, tails, stats)
        stats.dead_letters = tables.dead
        stats.app_logs, stats.warnings = tables.app_logs, tables.warnings
        return stats

    def _after_commit(self) -> None:
        self._commits += 1
        if self._kill_after and self._commits >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: crash after COMMIT, before bookkeeping

    async def _lock_and_filter(self, items: Sequence[Item], stats: CommitStats) -> tuple[list[Item], dict[str, int]]:
        """Lock the batch's checkpoints and drop the lines another agent committed meanwhile.

        A file's lines are in file order within a batch, so when no committed offset is past the
        first line of its file (the common case) nothing is dropped, and no line is looked at
        one by one.
        """
        first = dict(zip(map(_key_of, reversed(items)), map(_start_of, reversed(items)), strict=True))
        rows = await self.session.fetch(LOCK_SQL, sorted(first), self.agent_id)
        committed: dict[str, int] = {r["file_key"]: r["committed_offset"] for r in rows}
        if all(committed.get(key, 0) <= start for key, start in first.items()):
            return list(items), committed
        kept = [i for i in items if i.line.start >= committed.get(i.line.file.identity.key, 0)]
        stats.skipped_lines = len(items) - len(kept)
        return kept, committed

    async def _write_tables(self, tables: Tables, stats: CommitStats, upsert: set[str]) -> None:
        for table, rows in tables.copy.items():
            if table in upsert:
                await self._upsert(table, rows)
            else:
                await self._copy_optimistic(table, rows)
            stats.rows[table] = stats.rows.get(table, 0) + len(rows)
        for table, rows in tables.merge.items():
            await self._upsert(table, rows)
            stats.rows[table] = stats.rows.get(table, 0) + len(rows)

    async def _copy_optimistic(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """COPY straight into ``table``; a key that is already there raises :class:`KeyConflict`."""
        try:
            await self.session.copy(table, rows)
        except asyncpg.UniqueViolationError as exc:
            raise KeyConflict(table, getattr(exc, "constraint_name", None)) from exc

    async def _upsert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement: the rows as one typed array per column, merged or kept-first on conflict.

        Rows arrive in line order. A merging table's rows that share a key are merged first, in
        that order (ON CONFLICT DO UPDATE refuses to touch a row twice); for the other tables
        the first line of a key wins, in the statement as across batches (DO NOTHING).
        """
        if table in MERGE_TABLES:
            rows = merge_in_order(table, rows)
        sql = self._upserts.get(table)
        if sql is None:
            found = await self.session.fetch(COLUMN_TYPES_SQL, f"{contract.SCHEMA}.{table}")
            sql = self._upserts[table] = upsert_sql(table, {r["attname"]: r["type"] for r in found})
        await self.session.execute(sql, *[list(col) for col in zip(*rows, strict=True)])

    async def _write_dead_letters(self, tables: Tables) -> None:
        if not tables.dead:
            return
        args = [self._dead_letter_args(item, dl) for item, dl in tables.dead]
        await self.session.executemany(DEAD_LETTER_SQL, args)

    def _dead_letter_args(self, item: Item, dl: DeadLetter) -> tuple[Any, ...]:
        line = item.line
        f = line.file
        return (
            self.agent_id, f.source, f.path, f.identity.key, line.start, line.end - line.start,
            _clean_text(dl.reason), _clean_text(dl.field) if dl.field else None, line.data[:RAW_LIMIT],
        )

    async def _write_checkpoints(self, items: Sequence[Item], expected: dict[str, int], tails: Tails,
                                 stats: CommitStats) -> None:
        last = dict(zip(map(_key_of, items), items, strict=True))  # each file's last line
        if not last:
            return
        cols: list[list[Any]] = [[] for _ in range(11)]
        times = last_row_times(items, last)
        for key, item in last.items():
            f, end = item.line.file, item.line.end
            block_end, block_tail = tails.get(key, (-1, UNKNOWN_TAIL))
            th = block_tail if block_end == end else UNKNOWN_TAIL
            ident = f.identity
            row = (key, f.source, f.path, ident.dev, ident.ino, ident.fingerprint, ident.fingerprint_len, end, th,
                   expected.get(key, 0), times.get(key))
            for col, value in zip(cols, row, strict=True):
                col.append(value)
            stats.committed[key] = Committed(f, end, th)
        moved = await self.session.fetch(CHECKPOINT_SQL, cols[0], self.agent_id, *cols[1:])
        if len(moved) != len(last):
            raise CheckpointConflict(f"{len(last) - len(moved)} checkpoint(s) moved by another agent")


class KeyConflict(Exception):
    """The optimistic COPY into ``table`` met a key that exists: retry with that table upserted.

    ``constraint`` is what the server named (on a hypertable, the chunk's copy of the key), kept
    for the record only: the table is known from the statement, which is what the retry needs.
    """

    def __init__(self, table: str, constraint: str | None) -> None:
        super().__init__(f"duplicate key in {table} ({constraint})")
        self.table = table
        self.constraint = constraint


class CheckpointConflict(Exception):
    """Another agent committed the same file between our read and our update: retry the batch."""


def _is_db_refusal(dl: DeadLetter) -> bool:
    return dl.reason.startswith(DB_REFUSAL)


def _clean_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, valid UTF-8 (lone surrogates replaced)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "replace").decode("utf-8")
