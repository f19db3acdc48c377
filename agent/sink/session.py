"""The ingest connection as the writer uses it: few round trips, nothing parsed twice.

Without a statement cache (behind a transaction pooler a statement prepared in one transaction
may be missing in the next), every parametrised statement costs a Parse round trip, and
asyncpg's COPY asks the server for the table's column types before every COPY. A
:class:`Session` keeps both costs off the path without any session state a pooler would lose:

* At connect it tells whether the connection is *direct*: the process id the server announced
  in its BackendKeyData equals ``pg_backend_pid()`` only when nothing sits in between (a pooler
  answers the startup itself, with a cancel key of its own).
* On a direct connection each statement is prepared once, under a name made of the session's
  own number and the statement's text (two sessions on one connection never collide), and then
  runs as Bind/Execute only. Through a
  pooler statements stay unnamed and are parsed in the transaction that runs them.
* The column description a COPY needs is asked once per table and kept: it is client-side
  metadata (the codecs that encode the rows), true for any server connection behind a pooler.
* ``BEGIN`` and ``SET LOCAL statement_timeout`` travel as one simple-query message.

Both private hooks of asyncpg used here (``PreparedStatement._state`` and
``Connection._protocol.copy_in``, which ``copy_records_to_table`` itself calls with that state)
are kept to :meth:`Session.copy`; ``tests/integration/test_session.py`` runs them for real.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg

from agent import contract

_sessions = itertools.count(1)


def statement_name(session: int, sql: str) -> str:
    """A prepared statement's name: the session's number and a digest of the statement's text."""
    return f"hypertail_{session}_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:20]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Session:
    """One asyncpg connection plus what it has prepared; see the module docstring."""

    def __init__(self, conn: asyncpg.Connection, direct: bool) -> None:
        self.conn = conn
        self.direct = direct
        self._number = next(_sessions)
        self._prepared: dict[str, Any] = {}  # SQL -> asyncpg PreparedStatement (direct only)
        self._copy: dict[str, tuple[str, Any]] = {}  # table -> (COPY statement, column codecs)

    @classmethod
    async def open(cls, **connect_kwargs: Any) -> Session:
        """Connect and find out whether a pooler sits in between (see the module docstring)."""
        conn = await asyncpg.connect(**connect_kwargs)
        try:
            return await cls.on(conn)
        except BaseException:
            conn.terminate()
            raise

    @classmethod
    async def on(cls, conn: asyncpg.Connection) -> Session:
        """A session on an open connection (made with ``statement_cache_size=0``)."""
        async with conn.transaction():  # one server connection for the probe, also pooled
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        return cls(conn, pid == conn.get_server_pid())

    def is_closed(self) -> bool:
        return bool(self.conn.is_closed())

    @contextlib.asynccontextmanager
    async def transaction(self, statement_timeout_ms: int) -> AsyncIterator[None]:
        """One transaction with its statement timeout: BEGIN and SET LOCAL in one round trip;
        ROLLBACK on any error (quietly: a broken connection is dropped by the caller)."""
        await self.conn.execute(f"BEGIN; SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        try:
            yield
        except BaseException:
            if not self.conn.is_closed():
                with contextlib.suppress(Exception):
                    await self.conn.execute("ROLLBACK")
            raise
        await self.conn.execute("COMMIT")

    async def _statement(self, sql: str) -> Any:
        stmt = self._prepared.get(sql)
        if stmt is None:
            stmt = self._prepared[sql] = await self.conn.prepare(sql, name=statement_name(self._number, sql))
        return stmt

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if self.direct:
            return list(await (await self._statement(sql)).fetch(*args))
        return list(await self.conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> None:
        if self.direct:
            await (await self._statement(sql)).fetch(*args)
        else:
            await self.conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        if self.direct:
            await (await self._statement(sql)).executemany(args)
        else:
            await self.conn.executemany(sql, args)

    async def copy(self, table: str, records: Iterable[Sequence[Any]]) -> None:
        """Binary COPY of ``records`` into ``observability.table`` (its contract columns)."""
        known = self._copy.get(table)
        if known is None:
            name = f"{_quote(contract.SCHEMA)}.{_quote(table)}"
            cols = ", ".join(map(_quote, contract.COLUMNS[table]))
            described = await self.conn.prepare(f"SELECT {cols} FROM {name} LIMIT 1")
            known = self._copy[table] = (f"COPY {name} ({cols}) FROM STDIN (FORMAT binary)", described._state)
        statement, state = known
        await self.conn._protocol.copy_in(statement, None, None, records, state, None)

    def terminate(self) -> None:
        if not self.conn.is_closed():
            self.conn.terminate()

    async def close(self, grace_s: float) -> None:
        """Close politely; asyncpg terminates the connection after ``grace_s``."""
        if not self.conn.is_closed():
            await self.conn.close(timeout=grace_s)
