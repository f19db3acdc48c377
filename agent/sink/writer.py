"""Commit batches: rows, merges, dead letters and checkpoints in one transaction.

The order inside the transaction is what makes delivery exactly-once:

1. lock the checkpoint rows of the batch's files (``SELECT ... FOR UPDATE``, after making sure
   they exist). Another agent tailing the same files waits here; when it gets the lock it sees
   our committed offsets and drops the lines below them. That is the single-writer rule.
2. COPY plain rows, optimistically. If the table already holds a key (the app wrote the same
   span twice, a chat message id repeats, another agent raced us on a new file), the transaction
   is retried with that table's rows going through ``INSERT ... SELECT FROM unnest(...) ON
   CONFLICT``. The conflict is recognised by the statement that raised it (the COPY into that
   table), not by the table the server names: on a hypertable the server names the chunk.
3. Upsert merge rows (trace start/end, span start) the same way.

Nothing outlives a transaction, so the writer works unchanged behind PgBouncer in transaction
pooling: no temporary staging table (the upsert reads typed arrays, one parameter per column),
no named prepared statement (the connection has no statement cache), no session ``SET`` (the
statement timeout is ``SET LOCAL`` in each transaction), and only transaction-scoped locks.
4. Insert dead letters; move the checkpoints.

Only after COMMIT returns are offsets acknowledged upstream. If the database refuses the data,
the batch is split in halves (each a prefix-closed part, see :mod:`agent.batcher`) until the
offending rows are isolated; they become dead letters and the rest commits. A line becomes a
"database refused" dead letter only after its own insert, tried alone, was refused.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from agent import contract
from agent.batcher import Tables, build_tables
from agent.errors import DataError, RetryableError, StallError
from agent.model import DeadLetter, FileRef, Item
from agent.sink.classify import classify

MERGE_TABLES = ("traces", "spans")
RAW_LIMIT = 64 * 1024
KILL_AFTER_COMMITS_ENV = "HYPERTAIL_TEST_KILL_AFTER_COMMITS"
DB_REFUSAL = "database refused the row: "


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert_sql(table: str, types: dict[str, str]) -> str:
    """``INSERT ... SELECT FROM unnest($1::t1[], ...) ON CONFLICT``: merge for traces/spans,
    keep-first otherwise. ``types`` are the columns' SQL types as the catalog spells them."""
    cols = contract.COLUMNS[table]
    keys = contract.KEY_COLUMNS[table]
    collist = ", ".join(_q(c) for c in cols)
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(cols, 1))
    if table in MERGE_TABLES:
        sets = [_merge_set(c) for c in cols if c not in keys]
        action = "DO UPDATE SET " + ", ".join(sets)
    else:
        action = "DO NOTHING"
    return (
        f"INSERT INTO {contract.SCHEMA}.{table} AS t ({collist}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(_q(k) for k in keys)}) {action}"
    )


COLUMN_TYPES_SQL = """
SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
"""


def _merge_set(col: str) -> str:
    c = _q(col)
    if col == "status":
        return f"{c} = CASE WHEN EXCLUDED.{c} = '{contract.IN_PROGRESS}' THEN t.{c} ELSE EXCLUDED.{c} END"
    if col == "metadata":
        return f"{c} = t.{c} || EXCLUDED.{c}"
    return f"{c} = COALESCE(EXCLUDED.{c}, t.{c})"


# Lock the batch's checkpoint rows (creating missing ones) and read their committed offsets, in
# one round trip. A row another agent inserts concurrently is not visible to this statement's
# snapshot; the compare-and-set below catches that case.
LOCK_SQL = """
WITH locked AS (
    SELECT file_key, committed_offset FROM hypertail.checkpoints
    WHERE file_key = ANY($1::text[]) ORDER BY file_key FOR UPDATE
), created AS (
    INSERT INTO hypertail.checkpoints (file_key, agent_id, source, path, device, inode, fingerprint,
                                       fingerprint_len, committed_offset, tail_hash)
    SELECT k, $2, '', '', 0, 0, '', 0, 0, '' FROM unnest($1::text[]) AS k
    ON CONFLICT (file_key) DO NOTHING
)
SELECT file_key, committed_offset FROM locked
"""
# Compare-and-set: a checkpoint moves only from the offset this transaction read.
CHECKPOINT_SQL = """
UPDATE hypertail.checkpoints AS c
SET agent_id = $2, source = u.source, path = u.path, device = u.device, inode = u.inode,
    fingerprint = u.fp, fingerprint_len = u.fpl, committed_offset = u.off, tail_hash = u.th, updated_at = now()
FROM unnest($1::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::int[],
            $9::bigint[], $10::text[], $11::bigint[]) AS u(key, source, path, device, inode, fp, fpl, off, th, expected)
WHERE c.file_key = u.key AND c.committed_offset = u.expected
RETURNING c.file_key
"""
DEAD_LETTER_SQL = """
INSERT INTO hypertail.dead_letters (agent_id, source, path, file_key, byte_offset, line_length, reason, field, raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (file_key, byte_offset) DO NOTHING
"""


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


TailHash = Any  # Callable[[FileRef, int], str]; kept loose so the sink does not import sources


class Writer:
    """Commits batches on one connection. Errors come out already classified."""

    def __init__(
        self, conn: asyncpg.Connection, agent_id: str, tail_hash: TailHash, *, statement_timeout_ms: int = 0
    ) -> None:
        self.conn = conn
        self.agent_id = agent_id
        self.tail_hash = tail_hash
        self._set_timeout = f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"
        self._upserts: dict[str, str] = {}  # table -> its upsert statement, built from the catalog's types
        self._commits = 0
        self._kill_after = int(os.environ.get(KILL_AFTER_COMMITS_ENV, "0") or 0)

    async def commit(self, items: Sequence[Item], known_bad: DataError | None = None) -> CommitStats:
        """Commit ``items``; split on data errors until the poison rows are dead letters.

        ``known_bad`` is the error of a failed parent attempt whose other half committed: this
        part probably holds the failing row, so a part of several lines is split without being
        tried whole. A single line is always tried on its own first: an error seen on a larger
        part proves nothing about one line (the fault may have been between two rows, or have
        gone meanwhile), so no line is dead-lettered for a refusal it was not itself given.
        """
        stats = CommitStats()
        if known_bad is None or len(items) == 1:
            try:
                return await self._commit_once(items)
            except DataError as exc:
                known_bad = exc
                stats.attempts += 1
        if len(items) == 1:
            stats.absorb(await self._commit_poison(items[0], known_bad))
            return stats
        mid = len(items) // 2
        left = await self.commit(items[:mid])
        stats.absorb(left)
        left_clean = not left.dead_letters or all(not _is_db_refusal(dl) for _, dl in left.dead_letters)
        stats.absorb(await self.commit(items[mid:], known_bad if left_clean else None))
        return stats

    async def _commit_poison(self, item: Item, exc: DataError) -> CommitStats:
        if isinstance(item.result, DeadLetter):
            raise StallError(f"the database refused a dead letter itself: {exc}") from exc
        reason = f"{DB_REFUSAL}{exc}"
        return await self._commit_once([Item(item.line, DeadLetter(reason=reason, field=None))])

    async def _commit_once(self, items: Sequence[Item]) -> CommitStats:
        """One batch in one transaction; retried at once after a key conflict or a checkpoint race.

        Plain rows are COPYed optimistically without a savepoint (a savepoint costs two round
        trips on every batch); when a key already exists the transaction is retried with that
        table going through the staging upsert. When another agent moved a checkpoint meanwhile,
        the retry reads its offset and drops the lines it already committed.
        """
        upsert: set[str] = set()
        attempts = 0
        while True:
            attempts += 1
            try:
                stats = await self._transaction(items, upsert)
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

    async def _transaction(self, items: Sequence[Item], upsert: set[str]) -> CommitStats:
        stats = CommitStats()
        async with self.conn.transaction():
            await self.conn.execute(self._set_timeout)
            kept, expected = await self._lock_and_filter(items, stats)
            tables = build_tables(kept)
            await self._write_tables(tables, stats, upsert)
            await self._write_dead_letters(tables)
            await self._write_checkpoints(kept, expected, stats)
        stats.dead_letters = tables.dead
        stats.app_logs, stats.warnings = tables.app_logs, tables.warnings
        return stats

    def _after_commit(self) -> None:
        self._commits += 1
        if self._kill_after and self._commits >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: crash after COMMIT, before bookkeeping

    async def _lock_and_filter(self, items: Sequence[Item], stats: CommitStats) -> tuple[list[Item], dict[str, int]]:
        keys = sorted({i.line.file.identity.key for i in items})
        committed = {r["file_key"]: r["committed_offset"] for r in await self.conn.fetch(LOCK_SQL, keys, self.agent_id)}
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
            await self.conn.copy_records_to_table(
                table, records=rows, columns=contract.COLUMNS[table], schema_name=contract.SCHEMA
            )
        except asyncpg.UniqueViolationError as exc:
            raise KeyConflict(table, getattr(exc, "constraint_name", None)) from exc

    async def _upsert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement: the rows as one typed array per column, merged or kept-first on conflict.

        The batcher has already merged rows that share a key, so no key occurs twice here (which
        ON CONFLICT DO UPDATE would refuse).
        """
        sql = self._upserts.get(table)
        if sql is None:
            found = await self.conn.fetch(COLUMN_TYPES_SQL, f"{contract.SCHEMA}.{table}")
            sql = self._upserts[table] = upsert_sql(table, {r["attname"]: r["type"] for r in found})
        await self.conn.execute(sql, *[list(col) for col in zip(*rows, strict=True)])

    async def _write_dead_letters(self, tables: Tables) -> None:
        if not tables.dead:
            return
        args = [self._dead_letter_args(item, dl) for item, dl in tables.dead]
        await self.conn.executemany(DEAD_LETTER_SQL, args)

    def _dead_letter_args(self, item: Item, dl: DeadLetter) -> tuple[Any, ...]:
        line = item.line
        f = line.file
        return (
            self.agent_id, f.source, f.path, f.identity.key, line.start, line.end - line.start,
            _clean_text(dl.reason), _clean_text(dl.field) if dl.field else None, line.data[:RAW_LIMIT],
        )

    async def _write_checkpoints(self, items: Sequence[Item], expected: dict[str, int], stats: CommitStats) -> None:
        last: dict[str, Item] = {}
        for item in items:
            last[item.line.file.identity.key] = item
        if not last:
            return
        cols: list[list[Any]] = [[] for _ in range(10)]
        for key, item in last.items():
            f, end = item.line.file, item.line.end
            th = self.tail_hash(f, end)
            ident = f.identity
            row = (key, f.source, f.path, ident.dev, ident.ino, ident.fingerprint, ident.fingerprint_len, end, th,
                   expected.get(key, 0))
            for col, value in zip(cols, row, strict=True):
                col.append(value)
            stats.committed[key] = Committed(f, end, th)
        moved = await self.conn.fetch(CHECKPOINT_SQL, cols[0], self.agent_id, *cols[1:])
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
