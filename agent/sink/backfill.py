"""Backfills into compressed ranges: decompress a chunk once instead of paying for every row.

On TimescaleDB 2.25 a row COPYed into a compressed chunk of a table with a unique key makes the
server look for the compressed batches that could hold the same key, and decompress them. Our
keys (``span_id, timestamp`` ...) are not the segment-by column (``trace_id``), so the only filter
it has is each batch's time range: every row scans the chunk's compressed batches. Measured on
this project's server (``bench/backfill.py --candidates``): 0.15-0.27 µs per compressed batch per
row, about 300 rows/s into a day of spans, against 12-20 µs per row to decompress the whole chunk
once (``decompress_chunk``), after which rows go in at the normal rate. Direct-compress COPY is
refused on tables with unique constraints; other compression settings either lose compression
(segment by the key) or still scan every batch per row (no segment-by).

So, before a batch is written, :meth:`Backfill.prepare` looks at the batch's rows against a map
of the chunks that are compressed or that a compression policy would compress at its next run
(read from the catalog at most once a minute, and again after a timeout or a decompression), and
decides, per chunk, in :func:`plan_batch` (the one place that decides *when*):

* **decompress** a compressed chunk when the rows it is about to receive would cost more through
  the key check than decompressing it: ``rows_in_batch x batches >= DECOMPRESS_RATIO x rows``
  (both costs measured, above). One late line into a big chunk goes through the key check; a
  backlog decompresses the chunk with its first batch. Only where the table has a compression
  policy, which compresses the chunk again (the agent never does: compressing takes a lock
  that stops the agent's own writes, and only the policy knows when nobody writes there any more);
* **postpone** the table's compression policy (``hypertail.postpone_compression``) while the batch
  writes at full speed into a chunk that policy would compress at its next run, so a chunk the
  agent is still filling is not compressed under it. Chunks the agent *creates* for old data need
  nothing: the shipped policy goes by chunk creation time (schema.sql).

Decompression runs in its own transaction before the batch's, on the ingest connection: it is
progress in its own right (a batch that fails later does not undo it), it is not bounded by
``statement_timeout_ms`` (it is proportional to the chunk; a day of spans takes seconds) but its
lock waits are (``lock_timeout``), and it holds its exclusive locks only for itself. The two
functions it calls run as their owner (``SECURITY DEFINER`` in schema.sql), so the least-privilege
ingest role can call them; without that grant the agent says so once and keeps to the key check.

Nothing here is session state: the chunk map is the agent's memory, every statement runs in its
own explicit transaction, so it works behind PgBouncer in transaction pooling.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import asyncpg

from agent import contract
from agent.batcher import Tables
from agent.model import Item, Row, Rows
from agent.sink.classify import classify

# Decompress a chunk when rows_in_batch x compressed_batches >= DECOMPRESS_RATIO x chunk_rows:
# decompressing costs ~15 µs per row of the chunk, the key check ~0.2 µs per compressed batch
# per row written (bench/backfill.py --candidates), so 75 is where the two cost the same.
DECOMPRESS_RATIO = 75
REFRESH_S = 60.0  # the chunk map is read again after this long (policies compress once in hours)
QUIET = timedelta(hours=1)  # a postponed policy starts no sooner than this after the last backfill write
PROGRESS_S = 10.0  # at most one backfill.progress event per this many seconds

EventSink = Callable[[str, dict[str, Any]], None]

# Chunks a batch may meet that are not plain: compressed ones, and ones the table's compression
# policy would compress at its next run (``due``), with what the decision needs. The row counts are
# in TimescaleDB's own catalog only (no view has them); readable by any role.
CHUNKS_SQL = """
SELECT c.hypertable_name AS tbl, format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk,
       c.range_start, c.range_end, c.is_compressed AS compressed,
       s.numrows_pre_compression AS nrows, s.numrows_post_compression AS nbatches,
       j.job_id IS NOT NULL AS has_policy,
       coalesce(c.chunk_creation_time < now() - (j.config->>'compress_created_before')::interval
                OR c.range_end < now() - (j.config->>'compress_after')::interval, false) AS due
FROM timescaledb_information.chunks c
LEFT JOIN timescaledb_information.jobs j
  ON j.proc_name = 'policy_compression' AND j.hypertable_schema = c.hypertable_schema
 AND j.hypertable_name = c.hypertable_name
LEFT JOIN _timescaledb_catalog.chunk ch ON ch.schema_name = c.chunk_schema AND ch.table_name = c.chunk_name
LEFT JOIN _timescaledb_catalog.compression_chunk_size s ON s.chunk_id = ch.id
WHERE c.hypertable_schema = 'observability' AND c.range_start IS NOT NULL
  AND (c.is_compressed OR j.job_id IS NOT NULL AND (
       c.chunk_creation_time < now() - (j.config->>'compress_created_before')::interval
       OR c.range_end < now() - (j.config->>'compress_after')::interval))
"""
DECOMPRESS_SQL = "SELECT hypertail.decompress_chunk($1::text::regclass)"
POSTPONE_SQL = "SELECT hypertail.postpone_compression($1::text[], $2::interval)"
_TIME_INDEX = {t: cols.index(contract.TIME_COLUMN) for t, cols in contract.COLUMNS.items()}
_TIME_OF = {t: itemgetter(i) for t, i in _TIME_INDEX.items()}


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk that is compressed, or that its table's policy would compress at its next run."""

    table: str
    name: str  # schema-qualified, quoted
    start: datetime
    end: datetime
    compressed: bool
    rows: int | None  # rows before compression (TimescaleDB's catalog), None if unknown
    batches: int | None  # compressed batches
    has_policy: bool
    due: bool

    def worth_decompressing(self, rows_written: int) -> bool:
        """True when ``rows_written`` rows cost more through the key check than decompressing."""
        if not self.rows or self.batches is None:
            return True
        return rows_written * self.batches >= DECOMPRESS_RATIO * self.rows


@dataclass(slots=True)
class Plan:
    """What one batch needs before it is written, and what it writes into old ranges."""

    decompress: list[Chunk] = field(default_factory=list)
    postpone: set[str] = field(default_factory=set)  # tables whose policy would compress what we fill
    rows: dict[str, int] = field(default_factory=dict)  # rows per table into compressed or due chunks
    oldest: datetime | None = None
    at: float = 0.0  # time.monotonic() when the batch was planned (its backfill's work starts there)

    @property
    def backfill_rows(self) -> int:
        return sum(self.rows.values())


def row_times(items: Sequence[Item], tables: Tables | None) -> dict[str, list[datetime]]:
    """The time column of every row a batch writes, per table (from ``tables`` when built)."""
    if tables is not None:
        out: dict[str, list[datetime]] = {}
        for group in (tables.copy, tables.merge):
            for table, rows in group.items():
                out.setdefault(table, []).extend(map(_TIME_OF[table], rows))
        return out
    out = {}
    for item in items:
        for r in _rows(item):
            out.setdefault(r.table, []).append(r.values[_TIME_INDEX[r.table]])
    return out


def _rows(item: Item) -> tuple[Row, ...]:
    r = item.result
    if isinstance(r, Row):
        return (r,)
    return r.rows if isinstance(r, Rows) else ()


def row_time(item: Item) -> datetime | None:
    """The data time of ``item``'s row (its last row, for a line of many; None for a dead letter
    or an uncounted app log line)."""
    rows = _rows(item)
    if rows:
        r = rows[-1]
        value = r.values[_TIME_INDEX[r.table]]
        return value if isinstance(value, datetime) else None
    return None


def last_row_times(items: Sequence[Item], keys: Collection[str]) -> dict[str, datetime]:
    """Per file key among ``keys``, the data time of the file's last row in ``items`` (what its
    checkpoint reaches in time; a file whose lines made no row is absent). Walks back from the end
    and stops once every file has one, which is at once when the last lines are rows."""
    out: dict[str, datetime] = {}
    for item in reversed(items):
        key = item.line.file.identity.key
        if key not in out:
            t = row_time(item)
            if t is not None:
                out[key] = t
                if len(out) == len(keys):
                    break
    return out


def plan_batch(times: Mapping[str, Sequence[datetime]], chunks: Mapping[str, Sequence[Chunk]], *,
               force: bool = False) -> Plan:
    """Decide, per chunk the batch writes into, whether to decompress it and to postpone its policy.

    ``force`` (after a statement timeout) decompresses every compressed chunk the batch writes
    into, whatever the cost rule says: the key check just proved too slow for the time allowed.
    """
    plan = Plan()
    for table, stamps in times.items():
        mapped = chunks.get(table)
        if not mapped or not stamps:
            continue
        boundary = max(c.end for c in mapped)
        old = sorted(t for t in stamps if t < boundary)
        if not old:
            continue
        for c in mapped:
            n = bisect_left(old, c.end) - bisect_left(old, c.start)
            if not n:
                continue
            plan.rows[table] = plan.rows.get(table, 0) + n
            plan.oldest = old[0] if plan.oldest is None else min(plan.oldest, old[0])
            decompress = c.compressed and c.has_policy and (force or c.worth_decompressing(n))
            if decompress:
                plan.decompress.append(c)
            if c.due and (decompress or not c.compressed):
                plan.postpone.add(table)
    return plan


@dataclass(slots=True)
class BackfillStats:
    """Totals since start, for /metrics (one owner: :class:`Backfill` writes them)."""

    rows: dict[str, int] = field(default_factory=dict)  # rows committed into compressed or due chunks
    chunks_decompressed: int = 0
    rows_decompressed: int = 0
    decompress_seconds: float = 0.0
    policies_postponed: int = 0
    timeout_splits: int = 0
    rows_per_second: float = 0.0  # over the last progress interval; 0 when no backfill runs
    active: bool = False


class Backfill:
    """The chunk map, the decisions of :func:`plan_batch` carried out, and what they did.

    ``enabled`` is set by the sink once it knows the tables are hypertables; ``on_event`` (set by
    the runner) receives the events listed in :mod:`agent.ops.log` as ``backfill.*`` and
    ``batch.timeout_split``. Writes ``stats``; nothing else does.
    """

    def __init__(self, statement_timeout_ms: int) -> None:
        self.statement_timeout_ms = int(statement_timeout_ms)
        self.enabled = False
        self.on_event: EventSink | None = None
        self.stats = BackfillStats()
        self._chunks: dict[str, list[Chunk]] = {}
        self._ours: dict[str, Chunk] = {}  # chunks this agent decompressed, as they are now
        self._read_at = float("-inf")
        self._postponed_at: dict[str, float] = {}
        self._refused: str | None = None  # why the backfill functions cannot be called (until the next map read)
        self._said: str | None = None  # the refusal last logged
        self._window_rows = 0
        self._window_start = 0.0
        self._total_rows = 0
        self._total_start = 0.0
        self._last_write = 0.0

    def emit(self, name: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, fields)

    def stale(self) -> None:
        """Read the chunk map again before the next batch (a timeout: something may have changed)."""
        self._read_at = float("-inf")

    async def prepare(self, conn: asyncpg.Connection, items: Sequence[Item], tables: Tables | None, *,
                      force: bool = False) -> Plan | None:
        """Decompress and postpone what the batch needs; the plan, or None without TimescaleDB.

        The chunk map is only an optimisation: when it cannot be read (no privilege on TimescaleDB's
        catalog, a statement timeout), the batch goes on with the map it has.
        """
        if not self.enabled:
            return None
        at = time.monotonic()
        try:
            if at - self._read_at >= REFRESH_S:
                try:
                    await self._read_chunks(conn)
                except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError,
                        asyncpg.QueryCanceledError) as exc:
                    self._read_at = at
                    if not isinstance(exc, asyncpg.QueryCanceledError):
                        self._refuse(exc)
            plan = plan_batch(row_times(items, tables), self._chunks, force=force)
            plan.at = at
            if self._refused is None:
                for chunk in plan.decompress:
                    await self._decompress(conn, chunk)
                await self._postpone(conn, plan.postpone)
        except Exception as exc:  # translated once, here
            raise classify(exc) from exc
        return plan

    async def _read_chunks(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {self.statement_timeout_ms}")
            rows = await conn.fetch(CHUNKS_SQL)
        found = {r["chunk"]: Chunk(r["tbl"], r["chunk"], r["range_start"], r["range_end"], r["compressed"],
                                   r["nrows"], r["nbatches"], r["has_policy"], r["due"]) for r in rows}
        for name, chunk in self._ours.items():
            found.setdefault(name, chunk)
        self._chunks = {}
        for chunk in found.values():
            self._chunks.setdefault(chunk.table, []).append(chunk)
        self._read_at = time.monotonic()
        self._refused = None  # a GRANT may have come meanwhile: try the functions again

    async def _decompress(self, conn: asyncpg.Connection, chunk: Chunk) -> None:
        t0 = time.perf_counter()
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL statement_timeout = 0")
                await conn.execute(f"SET LOCAL lock_timeout = {self.statement_timeout_ms}")
                done = await conn.fetchval(DECOMPRESS_SQL, chunk.name)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError) as exc:
            self._refuse(exc)
            return
        seconds = time.perf_counter() - t0
        plain = Chunk(chunk.table, chunk.name, chunk.start, chunk.end, False, chunk.rows, chunk.batches,
                      chunk.has_policy, chunk.due)
        self._ours[chunk.name] = plain
        self._chunks[chunk.table] = [plain if c.name == chunk.name else c for c in self._chunks[chunk.table]]
        if not done:  # decompressed meanwhile (another agent, an operator): the map was behind
            return
        s = self.stats
        s.chunks_decompressed += 1
        s.rows_decompressed += chunk.rows or 0
        s.decompress_seconds += seconds
        self.emit("backfill.decompressed", table=chunk.table, chunk=chunk.name, range_start=chunk.start.isoformat(),
                  range_end=chunk.end.isoformat(), rows=chunk.rows, batches=chunk.batches,
                  seconds=round(seconds, 3))

    async def _postpone(self, conn: asyncpg.Connection, tables: Iterable[str]) -> None:
        """Move the tables' policies past the quiet period; at most once per half of it per table."""
        now = time.monotonic()
        due = sorted(t for t in tables if now - self._postponed_at.get(t, float("-inf")) >= QUIET.total_seconds() / 2)
        if not due:
            return
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {self.statement_timeout_ms}")
                moved = await conn.fetchval(POSTPONE_SQL, due, QUIET)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError) as exc:
            self._refuse(exc)
            return
        for t in due:
            self._postponed_at[t] = now
        if moved:
            self.stats.policies_postponed += int(moved)
            self.emit("backfill.postponed", tables=due, policies=int(moved), quiet_s=int(QUIET.total_seconds()))

    def _refuse(self, exc: asyncpg.PostgresError) -> None:
        """The chunk map or the backfill functions cannot be used (no GRANT EXECUTE, schema.sql
        not applied, a timeout): keep writing through the key check until the next map read, and
        say so once per reason."""
        self._refused = f"{exc.sqlstate} {exc}"
        if self._refused != self._said:
            self._said = self._refused
            self.emit("backfill.refused", error=self._refused[:300],
                      fix="run `hypertail migrate` and apply `hypertail migrate --print-grants ROLE`")

    def account(self, plan: Plan | None) -> None:
        """Count a committed batch's rows into old ranges; say how fast, every PROGRESS_S while it goes on."""
        if plan is None:
            return
        n = plan.backfill_rows
        now = time.monotonic()
        s = self.stats
        if not n:
            if s.active:
                self._finish(now)
            return
        for table, rows in plan.rows.items():
            s.rows[table] = s.rows.get(table, 0) + rows
        if not s.active:
            s.active = True
            self._window_start = self._total_start = plan.at
            self._window_rows = self._total_rows = 0
            self.emit("backfill.started", tables=sorted(plan.rows), data_time=_iso(plan.oldest))
        self._window_rows += n
        self._total_rows += n
        self._last_write = now
        if now - self._window_start >= PROGRESS_S:
            s.rows_per_second = self._window_rows / (now - self._window_start)
            self.emit("backfill.progress", rows=self._total_rows, rows_per_s=round(s.rows_per_second),
                      data_time=_iso(plan.oldest), chunks_decompressed=s.chunks_decompressed)
            self._window_start, self._window_rows = now, 0

    def close(self) -> None:
        """The agent stops: a backfill still going on says how far it got."""
        if self.stats.active:
            self._finish(time.monotonic())

    def _finish(self, now: float) -> None:
        s = self.stats
        seconds = max(self._last_write - self._total_start, 1e-3)  # until its last batch, not until now
        self.emit("backfill.done", rows=self._total_rows, seconds=round(seconds, 1),
                  rows_per_s=round(self._total_rows / seconds), chunks_decompressed=s.chunks_decompressed)
        s.active = False
        s.rows_per_second = 0.0


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()
