"""``hypertail dead-letters``: read the dead letters, and replay one into its row exactly once.

A replay is one transaction per dead letter: ``DELETE`` the dead letter (``RETURNING``: gone
already means someone replayed it meanwhile, and nothing is written), then write its row (or an
OTLP line's rows, one statement per table) with the writer's own statement
(:func:`agent.sink.statements.upsert_sql`: merged into traces and spans, kept-first elsewhere, the
deterministic ids making a replayed line the same rows). Both
commit together or not at all, so a crash (``kill -9``) leaves the dead letter or the row,
never both and never neither, and running the replay again finishes the job.

The role needs, besides the agent's own grants, ``SELECT, DELETE ON hypertail.dead_letters``
(the agent's role deliberately has no DELETE there: dead letters are the evidence of what it
could not store) and ``SELECT ON hypertail.checkpoints`` (a line stored only in part is read
again from its file, whose identity the checkpoint keeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from agent import contract
from agent.batcher import merge_in_order
from agent.config import DatabaseSettings, mask_dsn
from agent.errors import CommandError
from agent.model import Row
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.sink.statements import COLUMN_TYPES_SQL, MERGE_TABLES, upsert_sql

REPLAY_GRANT = ("GRANT SELECT, DELETE ON hypertail.dead_letters TO {role}; "
                "GRANT SELECT ON hypertail.checkpoints TO {role};")


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters; None means "any". ``limit`` None: all of them."""

    since: datetime | None = None
    source: str | None = None
    path: str | None = None  # a part of the path
    reason: str | None = None  # a part of the reason, any case
    agent_id: str | None = None
    ids: tuple[int, ...] = ()
    limit: int | None = 50


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One row of ``hypertail.dead_letters``; ``raw`` is what was stored (up to 64 KiB of the
    line, or an oversize line's first bytes), ``line_length`` the line's full length in the file."""

    id: int
    received_at: datetime
    agent_id: str
    source: str
    path: str
    file_key: str
    byte_offset: int
    line_length: int
    reason: str
    field: str | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class FileIdentityRow:
    """What a checkpoint knows of a file generation (to find its bytes again)."""

    device: int
    inode: int
    fingerprint: str
    fingerprint_len: int


_FILTER = """
WHERE ($1::timestamptz IS NULL OR received_at >= $1) AND ($2::text IS NULL OR source = $2)
  AND ($3::text IS NULL OR strpos(path, $3) > 0) AND ($4::text IS NULL OR strpos(lower(reason), lower($4)) > 0)
  AND ($5::text IS NULL OR agent_id = $5) AND (cardinality($6::bigint[]) = 0 OR id = ANY($6))
"""
LIST_SQL = f"""
SELECT id, received_at, agent_id, source, path, file_key, byte_offset, line_length, reason, field,
       coalesce(raw, ''::bytea) AS raw
FROM hypertail.dead_letters {_FILTER}
ORDER BY received_at DESC, id DESC LIMIT $7
"""
# File order: a trace's start record is replayed before its end record, as the agent read them.
REPLAY_ORDER_SQL = f"""
SELECT id, received_at, agent_id, source, path, file_key, byte_offset, line_length, reason, field,
       coalesce(raw, ''::bytea) AS raw
FROM hypertail.dead_letters {_FILTER}
ORDER BY path, file_key, byte_offset LIMIT $7
"""
COUNT_SQL = f"SELECT count(*) FROM hypertail.dead_letters {_FILTER}"
IDENTITY_SQL = """
SELECT device, inode, fingerprint, fingerprint_len FROM hypertail.checkpoints WHERE file_key = $1 AND fingerprint <> ''
"""
DELETE_SQL = "DELETE FROM hypertail.dead_letters WHERE id = $1 RETURNING id"


def _args(f: DeadLetterFilter) -> tuple[Any, ...]:
    return f.since, f.source, f.path, f.reason, f.agent_id, list(f.ids), f.limit


def _stored(r: asyncpg.Record) -> StoredDeadLetter:
    return StoredDeadLetter(r["id"], r["received_at"], r["agent_id"], r["source"], r["path"], r["file_key"],
                            r["byte_offset"], r["line_length"], r["reason"], r["field"], bytes(r["raw"]))


class DeadLetterStore:
    """One connection to the dead letters, for a listing or a replay (``async with``)."""

    def __init__(self, db: DatabaseSettings, dsn: str) -> None:
        self.db = db
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self._upserts: dict[str, str] = {}

    async def __aenter__(self) -> DeadLetterStore:
        try:
            self.conn = await connect(self.db, self.dsn)
        except DRIVER_ERRORS as exc:
            raise CommandError(f"cannot read dead letters from {mask_dsn(self.dsn)}: {one_line(exc)}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    def _c(self) -> asyncpg.Connection:
        assert self.conn is not None, "use DeadLetterStore in `async with`"
        return self.conn

    async def _run(self, what: str, coro: Any) -> Any:
        """Driver errors as one-line :class:`CommandError` s naming what failed."""
        try:
            return await coro
        except DRIVER_ERRORS as exc:
            hint = ""
            if getattr(exc, "sqlstate", None) == "42501":
                hint = f"; a replay needs: {REPLAY_GRANT.format(role='<its role>')}"
            raise CommandError(f"{what} on {mask_dsn(self.dsn)}: {one_line(exc)}{hint}") from None

    async def newest(self, f: DeadLetterFilter) -> tuple[list[StoredDeadLetter], int]:
        """The newest dead letters matching ``f`` (newest first), and how many match in all."""
        conn = self._c()
        rows = await self._run("reading dead letters", conn.fetch(LIST_SQL, *_args(f)))
        total = await self._run("counting dead letters", conn.fetchval(COUNT_SQL, *_args(f)[:-1]))
        return [_stored(r) for r in rows], int(total)

    async def in_file_order(self, f: DeadLetterFilter) -> list[StoredDeadLetter]:
        """The dead letters matching ``f`` in the order their lines stand in their files."""
        rows = await self._run("reading dead letters", self._c().fetch(REPLAY_ORDER_SQL, *_args(f)))
        return [_stored(r) for r in rows]

    async def identity(self, file_key: str) -> FileIdentityRow | None:
        """The file generation ``file_key`` names, from its checkpoint (None once pruned)."""
        r = await self._run("reading checkpoints", self._c().fetchrow(IDENTITY_SQL, file_key))
        return None if r is None else FileIdentityRow(r["device"], r["inode"], r["fingerprint"], r["fingerprint_len"])

    async def replay(self, dead_letter_id: int, rows: Sequence[Row]) -> bool:
        """Turn the dead letter into its ``rows`` (one, or an OTLP line's many) in one
        transaction; False if it was gone already."""
        conn = self._c()
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            tables.setdefault(row.table, []).append(row.values)
        sqls = {table: await self._upsert(table) for table in tables}

        async def transaction() -> bool:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {int(self.db.statement_timeout_ms)}")
                if await conn.fetchval(DELETE_SQL, dead_letter_id) is None:
                    return False  # replayed meanwhile (by another replay): its row is there
                for table, values in tables.items():
                    if table in MERGE_TABLES:  # one statement touches a key once: merge a line's repeats first
                        values = merge_in_order(table, values)
                    await conn.execute(sqls[table], *[list(col) for col in zip(*values, strict=True)])
            return True

        ok: bool = await self._run(f"replaying dead letter {dead_letter_id}", transaction())
        return ok

    async def _upsert(self, table: str) -> str:
        sql = self._upserts.get(table)
        if sql is None:
            found = await self._run("reading column types",
                                    self._c().fetch(COLUMN_TYPES_SQL, f"{contract.SCHEMA}.{table}"))
            sql = self._upserts[table] = upsert_sql(table, {r["attname"]: r["type"] for r in found})
        return sql
