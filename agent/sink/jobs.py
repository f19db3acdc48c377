"""The background jobs' one connection: ping, sync status, checkpoint prune and rollup take turns.

One connection for all of them keeps an agent at two server connections (this and the ingesting
one) however many jobs it runs, also behind a pooler. Jobs are bounded by *terminating* the
connection when their time is up, never by cancelling them: a cancelled asyncpg query sends a
CancelRequest and then waits, without a limit, for the server (or a busy pooler) to acknowledge
it, which is how a shutdown used to hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from agent.config import DatabaseSettings
from agent.sink.classify import classify
from agent.sink.connect import connect_kwargs


class JobConnection:
    """Lends the jobs connection to one job at a time; reconnects after a job failed on it."""

    def __init__(self, db: DatabaseSettings, dsn: str) -> None:
        self.db = db
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def borrow(self, deadline_s: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """The connection for one job, terminated after ``deadline_s`` if the job still runs.

        A job that raises may have left the connection mid-transaction or broken, so it is
        closed and the next job connects afresh.
        """
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                try:
                    self._conn = await asyncpg.connect(**connect_kwargs(self.db, self.dsn))
                except Exception as exc:
                    raise classify(exc) from exc
            conn = self._conn
            timer = None if deadline_s is None else asyncio.get_running_loop().call_later(deadline_s, conn.terminate)
            try:
                yield conn
            except BaseException:
                conn.terminate()
                self._conn = None
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    def deadline(self) -> float:
        """How long one ping or status report may take: two connects and one statement."""
        return 2 * self.db.connect_timeout_s + self.db.statement_timeout_ms / 1000

    def abort(self) -> None:
        """Terminate the connection now: whatever job runs on it fails at once (no CancelRequest,
        no wait); the next job connects afresh."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
