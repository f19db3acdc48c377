"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncpg

from agent.sink.session import Session
from agent.sink.writer import Writer


async def writer_on(conn: asyncpg.Connection, agent_id: str = "agent-test") -> Writer:
    """A Writer on ``conn``, as the agent's committer makes it (see agent.sink.sink.Sink)."""
    return Writer(await Session.on(conn), agent_id)
