"""Fixtures of the integration tests: a sink writer on its own connection to the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from agent.sink.writer import Writer
from tests.factories import fake_hash


@pytest.fixture
async def writer(dsn: str) -> AsyncIterator[Writer]:
    """A Writer as the agent's committer uses it, with a stand-in for the tailer's tail hash."""
    conn = await asyncpg.connect(dsn)
    yield Writer(conn, "agent-test", fake_hash)
    await conn.close()
