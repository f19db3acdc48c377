"""A TCP proxy in front of a PostgreSQL server (or a pooler) that counts round trips.

A round trip is a burst of client bytes that waits for the server: the proxy counts the client
writes that come after the server last answered (or first on a connection). A COPY's rows,
streamed in many writes without an answer in between, are one round trip, as they are on the
wire. Byte-transparent: the server's BackendKeyData reaches the client unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from tests.pgbouncer import _upstream


class RoundTrips:
    """The proxy: ``dsn_for(database)`` reaches the server through it; ``turns`` counts."""

    def __init__(self, upstream_dsn: str) -> None:
        self.host, self.port, self.user = _upstream(upstream_dsn)
        self.turns = 0
        self._server: asyncio.Server | None = None
        self._listen = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._listen = self._server.sockets[0].getsockname()[1]

    def dsn_for(self, database: str) -> str:
        return urlunsplit(("postgresql", f"{self.user}@127.0.0.1:{self._listen}", "/" + database, "", ""))

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        return await asyncio.open_connection(self.host, self.port)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await self._open_upstream()
        waiting = [False]  # the client has spoken since the server last answered

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: bool) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if client and not waiting[0]:
                        self.turns += 1
                    waiting[0] = client
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        tasks = [asyncio.create_task(pump(c_reader, s_writer, True)),
                 asyncio.create_task(pump(s_reader, c_writer, False))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks)
        self._tasks.difference_update(tasks)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def counting(upstream_dsn: str) -> AsyncIterator[RoundTrips]:
    """A started proxy in front of ``upstream_dsn``'s server, closed afterwards."""
    proxy = RoundTrips(upstream_dsn)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"
