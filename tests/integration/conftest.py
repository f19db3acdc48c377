"""Fixtures of the integration tests: a sink writer on its own connection to the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from agent.sink.writer import Writer
from tests.integration.support import writer_on


@pytest.fixture
async def writer(dsn: str) -> AsyncIterator[Writer]:
    """A Writer as the agent's committer uses it, on its own connection (no statement cache)."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    yield await writer_on(conn)
    await conn.close()
