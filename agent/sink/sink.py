"""The sink as the runner sees it: connect, load checkpoints, commit forever.

``commit`` never gives up and never drops: transient failures wait with capped exponential
backoff and full jitter; errors only a human can fix (privileges, a missing table) stall with
``health.stalled`` set so readiness turns false, and are retried on the same schedule so
ingestion resumes by itself once the GRANT arrives. A batch that hits the statement timeout is
not retried whole but split (:mod:`agent.sink.progress`), and a batch that writes into compressed
chunks has them decompressed first when that is cheaper (:mod:`agent.sink.backfill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from agent.batcher import Tables, Tails
from agent.config import Settings, mask_dsn
from agent.errors import DataError, RetryableError, SinkError, StallError
from agent.model import Checkpoint, FileIdentity, Item
from agent.sink.backfill import Backfill
from agent.sink.classify import classify
from agent.sink.connect import connect_kwargs
from agent.sink.jobs import JobConnection
from agent.sink.progress import commit_in_time
from agent.sink.schema import SCHEMA_VERSION, apply_schema, detect_mode, installed_version
from agent.sink.session import Session
from agent.sink.writer import CommitStats, Writer

OnRetry = Callable[[SinkError, int, float], None]


@dataclass(slots=True)
class SinkHealth:
    """What probes, metrics and logs need to know about the database side; the sink alone writes it.

    ``reachable`` is the last answer the database gave (a commit, startup or a ping);
    ``stall_episode`` counts the stalls begun (a stall, its reason changing, or one after other
    failures), so a stall is logged once per episode; ``last_commit`` is when a batch last
    committed (wall clock).
    """

    connected: bool = False
    reachable: bool = False
    stalled: str | None = None
    stall_episode: int = 0
    last_error: str | None = None
    last_commit: float | None = None
    consecutive_failures: int = 0
    mode: str | None = None
    fallback: str | None = None  # why plain mode where TimescaleDB was wanted (schema.timescaledb = auto)


class Sink:
    """Two server connections per agent: one ingesting, one shared by the background jobs.

    Both are reconnected on demand; batches are committed with retries. Behind a pooler each
    agent still holds at most two client connections, and the jobs (ping, sync status, rollup)
    take turns on theirs, so none waits on a COPY and the count does not grow with the jobs.
    """

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.health = SinkHealth()
        self.on_retry: OnRetry | None = None
        self._writer: Writer | None = None
        self.jobs = JobConnection(settings.database, dsn)  # ping, sync status, prune, rollup
        self.backfill = Backfill(settings.database.statement_timeout_ms)  # writes into compressed ranges
        self._secret = settings.database.resolved_password()

    async def _connection(self) -> Writer:
        if self._writer is None or self._writer.session.is_closed():
            try:
                session = await Session.open(**connect_kwargs(self.settings.database, self.dsn))
            except Exception as exc:
                raise classify(exc) from exc
            self._writer = Writer(session, self.settings.agent.id,
                                  statement_timeout_ms=self.settings.database.statement_timeout_ms)
            self.health.connected = True
        return self._writer

    def _drop_writer(self) -> None:
        """Terminate the ingesting connection (it may be broken); the next commit reconnects."""
        writer, self._writer = self._writer, None
        self.health.connected = False
        if writer is not None:
            writer.session.terminate()

    def _backoff(self, attempt: int) -> float:
        db = self.settings.database
        cap = db.retry_max_ms / 1000
        return random.uniform(0, min(cap, db.retry_initial_ms / 1000 * 2 ** min(attempt, 30)))

    async def _failed(self, err: SinkError) -> None:
        """Record a failure, drop the connection if it may be broken, and wait."""
        message = self.redact(str(err))
        health = self.health
        health.last_error = message
        stalled = message if isinstance(err, StallError) else None
        if stalled is not None and stalled != health.stalled:
            health.stall_episode += 1
        health.stalled = stalled
        if isinstance(err, RetryableError):
            health.reachable = False
            self._drop_writer()
        delay = self._backoff(self.health.consecutive_failures)
        self.health.consecutive_failures += 1
        if self.on_retry is not None:
            self.on_retry(err, self.health.consecutive_failures, delay)
        await asyncio.sleep(delay)

    def _succeeded(self, committed: bool) -> None:
        h = self.health
        h.consecutive_failures = 0
        h.reachable = True
        h.stalled = None
        h.last_error = None
        if committed:
            h.last_commit = time.time()

    async def commit(self, items: Sequence[Item], tables: Tables | None = None,
                     tails: Tails | None = None) -> CommitStats:
        """Commit ``items`` (whose ``tables`` the caller may have built, and whose blocks' tail
        hashes are ``tails``) exactly once, retrying for as long as it takes."""
        while True:
            try:
                writer = await self._connection()
                stats = await commit_in_time(writer, self.backfill, items, tables, tails)
            except (RetryableError, StallError) as err:
                await self._failed(err)
                continue
            except DataError as err:  # a data error outside any row (should not happen): never drop
                await self._failed(StallError(f"unexpected data error outside the rows: {err}"))
                continue
            self._succeeded(committed=True)
            return stats

    async def startup(self, apply: bool) -> list[Checkpoint]:
        """Check (or apply) the schema and load checkpoints, retrying while the database is down."""
        while True:
            try:
                writer = await self._connection()
                # One transaction: behind a transaction-pooling PgBouncer a statement outside one
                # may be parsed on one server connection and executed on another.
                conn = writer.session.conn
                async with conn.transaction():
                    await self._check_schema(conn, apply)
                    checkpoints = await self._load_checkpoints(conn)
            except (RetryableError, StallError) as err:
                await self._failed(err)
                continue
            except asyncpg.PostgresError as exc:
                await self._failed(classify(exc))
                continue
            self._succeeded(committed=False)
            return checkpoints

    async def _check_schema(self, conn: asyncpg.Connection, apply: bool) -> None:
        if apply:
            mode = await apply_schema(conn, self.settings.schema_, only_if_changed=True)
        else:
            version = await installed_version(conn)
            if version is None or version < SCHEMA_VERSION:
                raise StallError(
                    f"schema version {version} is older than {SCHEMA_VERSION}: run `hypertail migrate` "
                    "or set schema.apply_on_start = true"
                )
            mode = await detect_mode(conn)
        self.health.mode = mode.describe()
        self.backfill.enabled = mode.timescaledb is not None
        self.health.fallback = mode.fallback

    async def _load_checkpoints(self, conn: asyncpg.Connection) -> list[Checkpoint]:
        rows = await conn.fetch(
            "SELECT file_key, source, path, device, inode, fingerprint, fingerprint_len, committed_offset, "
            "tail_hash FROM hypertail.checkpoints WHERE fingerprint <> ''"
        )
        return [
            Checkpoint(
                identity=FileIdentity(r["device"], r["inode"], r["fingerprint"], r["fingerprint_len"]),
                path=r["path"], source=r["source"], offset=r["committed_offset"], tail_hash=r["tail_hash"],
            )
            for r in rows
        ]

    def redact(self, text: str) -> str:
        """``text`` with the password (and any DSN password) masked: errors end up in logs and SQL."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return mask_dsn(text) if "://" in text else text

    async def ping(self) -> bool:
        """True when the database answers on the jobs connection (simple protocol: no statement)."""
        limit = self.settings.database.connect_timeout_s
        try:
            # Waiting for the jobs connection (another job holds it) is bounded by that job's own
            # deadline; connect and query are bounded here.
            async with self.jobs.borrow(deadline_s=2 * limit) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            self.health.last_error = self.redact(str(classify(exc)))
            self.health.reachable = False
            return False
        self.health.reachable = True
        return True

    def abort(self) -> None:
        """Terminate both connections now (a drain that ran out of time): an interrupted
        transaction is rolled back by the server and its lines are read again on restart."""
        self.jobs.abort()
        self._drop_writer()

    async def close(self) -> None:
        """Close the ingesting connection politely (asyncpg terminates it after 2 s) and the
        jobs connection at once."""
        self.jobs.abort()
        self.backfill.close()
        writer, self._writer = self._writer, None
        self.health.connected = False
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.session.close(grace_s=2)
