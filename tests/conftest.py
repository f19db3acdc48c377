"""Shared fixtures: one database server per session, one fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

from tests.pgserver import DbServer, start_test_server

# CI gates a merge: it replays a fixed set of generated examples so that a red run means a
# regression, not a new example drawn by chance (which a developer's random runs still find).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = (ROOT / "schema.sql").read_text()
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DbServer]:
    """The session's PostgreSQL (or TimescaleDB) server."""
    server = start_test_server()
    try:
        yield server
    finally:
        server.close()


async def _create_database(server: DbServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server: DbServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def empty_dsn(pg_server: DbServer) -> AsyncIterator[str]:
    """DSN of a fresh, empty database (no schema applied), dropped after the test."""
    name = f"ht_{os.getpid()}_{next(_counter)}"
    await _create_database(pg_server, name)
    try:
        yield pg_server.dsn_for(name)
    finally:
        if pg_server.restartable:
            pg_server.start()  # a test may have left the server stopped
        await _drop_database(pg_server, name)


@pytest.fixture
async def dsn(empty_dsn: str) -> str:
    """DSN of a fresh database with schema.sql applied."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("SET client_min_messages = warning")
        await conn.execute(SCHEMA_SQL)
        await pause_policies(conn)
    finally:
        await conn.close()
    return empty_dsn


async def pause_policies(conn: asyncpg.Connection) -> None:
    """On TimescaleDB, unschedule this database's compression and retention jobs.

    Tests write fixed timestamps (many from 2024, far outside the 90-day retention), and the
    background scheduler would drop those chunks at a moment of its choosing. Tests that are about
    the policies run them when they choose, with ``CALL run_job(id)``; the agent re-applying the
    schema keeps a paused job paused (``if_not_exists``).
    """
    if await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE hypertable_schema = 'observability'"
        )


async def _connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection to the per-test database (schema applied), closed afterwards."""
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


# Two independent connections to the same database; the second serves concurrency and locking tests.
conn = pytest.fixture(_connection, name="conn")
conn2 = pytest.fixture(_connection, name="conn2")
