"""`hypertail check-config --connect` on real servers (issue 22): what the database says about the
server, the storage mode, the schema and the grants, and the exit code naming the failed check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from agent.cli import main
from agent.config import DatabaseSettings, SchemaSettings
from agent.sink.schema import SCHEMA_VERSION, grants_for
from agent.sink.validate import ConnectFailed, check_database

DB = DatabaseSettings(connect_timeout_s=2)


def as_user(dsn: str, user: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, f"{user}@{p.netloc.rpartition('@')[2]}", p.path, p.query, p.fragment))


@pytest.fixture
async def ingest_role(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A login role with exactly `hypertail migrate --print-grants`."""
    role = f"ht_check_{id(conn) % 100000}"
    await conn.execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    await conn.execute(grants_for(role))
    yield role
    await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_a_ready_database_passes_every_check(dsn: str) -> None:
    got = await check_database(DB, dsn, SchemaSettings())
    assert (got.mode.ok, got.schema.ok, got.grants.ok, got.missing) == (True, True, True, ())
    assert got.server.startswith("PostgreSQL ") and f"version {SCHEMA_VERSION}" in got.schema.text
    assert "as the tables are laid out" in got.mode.text


async def test_a_new_database_is_fine_when_the_agent_may_apply_the_schema(empty_dsn: str) -> None:
    got = await check_database(DB, empty_dsn, SchemaSettings())
    assert got.schema.ok and "not applied: the agent applies it at start" in got.schema.text
    refused = await check_database(DB, empty_dsn, SchemaSettings(apply_on_start=False))
    assert not refused.schema.ok and "run `hypertail migrate`" in refused.schema.text


async def test_missing_grants_are_named(dsn: str, conn: asyncpg.Connection, ingest_role: str) -> None:
    ok = await check_database(DB, as_user(dsn, ingest_role), SchemaSettings(apply_on_start=False))
    assert ok.grants.ok and ok.missing == ()
    await conn.execute(f"REVOKE UPDATE ON observability.spans FROM {ingest_role}; "
                       f"REVOKE INSERT ON hypertail.dead_letters FROM {ingest_role}")
    got = await check_database(DB, as_user(dsn, ingest_role), SchemaSettings(apply_on_start=False))
    assert got.missing == ("UPDATE on observability.spans", "INSERT on hypertail.dead_letters")
    assert not got.grants.ok and f"--print-grants {ingest_role}" in got.grants.text


async def test_require_where_timescaledb_cannot_be_used(empty_dsn: str, conn: asyncpg.Connection) -> None:
    got = await check_database(DB, empty_dsn, SchemaSettings(timescaledb="require"))
    usable = await conn.fetchval("SELECT current_setting('timescaledb.disable_load', true) IS NOT NULL")
    if usable:  # a TimescaleDB server: require is satisfied
        assert got.mode.ok and got.mode.text.startswith("TimescaleDB")
    else:
        assert not got.mode.ok and got.mode.text.startswith("schema.timescaledb = require, but ")


async def test_unreachable_is_one_line() -> None:
    with pytest.raises(ConnectFailed) as info:
        await check_database(DB, "postgresql://nobody@127.0.0.1:1/none", SchemaSettings())
    assert "cannot connect to postgresql://nobody@127.0.0.1:1/none" in str(info.value)


def _config(tmp_path: Path, dsn: str, globs: list[str]) -> str:
    p = tmp_path / "c.toml"
    p.write_text(f'[database]\ndsn = "{dsn}"\nconnect_timeout_s = 2\n[schema]\napply_on_start = false\n'
                 f'[[sources]]\nname = "app"\npaths = {json.dumps(globs)}\n')
    return str(p)


async def test_the_exit_code_names_the_first_failed_check(dsn: str, conn: asyncpg.Connection, ingest_role: str,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "app.log").write_text("")
    here, nowhere = str(tmp_path / "*.log"), str(tmp_path / "later" / "*.log")

    async def check(cfg: str) -> tuple[int, dict[str, object]]:
        code = await asyncio.to_thread(main, ["check-config", cfg, "--connect", "--json"])
        return code, json.loads(capsys.readouterr().out)

    user_dsn = as_user(dsn, ingest_role)
    code, report = await check(_config(tmp_path, user_dsn, [here]))
    assert (code, report["ok"]) == (0, True), report
    code, report = await check(_config(tmp_path, user_dsn, [here, nowhere]))
    assert code == 7 and any("later/*.log matches no file" in c["text"] for c in report["checks"]), report
    await conn.execute(f"REVOKE UPDATE ON observability.traces FROM {ingest_role}")
    code, _ = await check(_config(tmp_path, user_dsn, [here, nowhere]))
    assert code == 6  # grants come before sources
    code, report = await check(_config(tmp_path, "postgresql://nobody@127.0.0.1:1/none", [here]))
    assert code == 3 and [c["check"] for c in report["checks"]] == ["config", "server", "sources"]
    assert await asyncio.to_thread(main, ["check-config", _config(tmp_path, user_dsn, [here]), "--connect"]) == 6
    text = capsys.readouterr().out
    assert "grants   FAIL  missing UPDATE on observability.traces" in text and "server   ok" in text
