"""What ``hypertail check-config --connect`` asks the database, without changing anything.

One read-only transaction answers: who we are and on which server; the storage mode the agent
would use (the tables' mode when the schema exists, else what ``schema.timescaledb`` would pick
on this server); the schema version and whether the agent can apply or upgrade it at start;
and which of the privileges the agent writes with (:data:`~agent.sink.schema.INGEST_TABLE_GRANTS`)
the role lacks. Each answer says what is wrong in words an operator can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from agent.config import DatabaseSettings, SchemaSettings, mask_dsn
from agent.errors import CommandError
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.sink.schema import (
    INGEST_SCHEMAS,
    INGEST_TABLE_GRANTS,
    SCHEMA_VERSION,
    detect_mode,
    installed_version,
    probe_timescaledb,
    unavailable_reason,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's outcome: ``ok``, and what to tell the operator either way."""

    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class DatabaseCheck:
    """The answers about the database (see the module docstring)."""

    server: str  # "PostgreSQL 15.4, database app as ingest"
    mode: Verdict
    schema: Verdict
    grants: Verdict
    missing: tuple[str, ...]  # "INSERT on observability.spans", ...


class ConnectFailed(CommandError):
    """The database could not be reached or refused the login (the message says which)."""


async def check_database(db: DatabaseSettings, dsn: str, schema: SchemaSettings) -> DatabaseCheck:
    """Connect to ``dsn`` and answer every question of the module docstring."""
    try:
        conn = await connect(db, dsn)
    except DRIVER_ERRORS as exc:
        raise ConnectFailed(f"cannot connect to {mask_dsn(dsn)}: {one_line(exc)}") from None
    try:
        async with conn.transaction(readonly=True):
            return await _check(conn, schema)
    except DRIVER_ERRORS as exc:
        raise CommandError(f"checking {mask_dsn(dsn)} failed: {one_line(exc)}") from None
    finally:
        await conn.close()


async def _check(conn: asyncpg.Connection, schema: SchemaSettings) -> DatabaseCheck:
    r = await conn.fetchrow("SELECT current_setting('server_version') AS v, current_user AS u, "
                            "current_database() AS d, has_database_privilege(current_database(), 'CREATE') AS c")
    server = f"PostgreSQL {r['v']}, database {r['d']} as {r['u']}"
    version = await installed_version(conn)
    mode = await _mode(conn, schema, applied=version is not None)
    verdict = _schema_verdict(version, schema.apply_on_start, bool(r["c"]), await _owns_tables(conn))
    if version is None:
        grants = Verdict(verdict.ok, "checked once the schema exists (the role that creates the tables owns them)")
        return DatabaseCheck(server, mode, verdict, grants, ())
    missing = tuple(await _missing(conn))
    if missing:
        text = f"missing {', '.join(missing)}: `hypertail migrate --print-grants {r['u']}` prints the GRANTs"
        return DatabaseCheck(server, mode, verdict, Verdict(False, text), missing)
    return DatabaseCheck(server, mode, verdict, Verdict(True, "every privilege the agent writes with"), ())


async def _mode(conn: asyncpg.Connection, schema: SchemaSettings, *, applied: bool) -> Verdict:
    """The tables' mode if they exist, else what ``schema.timescaledb`` would choose here."""
    wanted = schema.timescaledb
    if wanted == "off":
        return Verdict(True, "plain PostgreSQL (schema.timescaledb = off)")
    reason = unavailable_reason(await probe_timescaledb(conn))
    if reason is not None and wanted == "require":
        return Verdict(False, f"schema.timescaledb = require, but {reason}")
    if applied:
        mode = await detect_mode(conn)
        note = "" if mode.timescaledb or reason is None else f" ({reason})"
        return Verdict(True, f"{mode.describe()}, as the tables are laid out{note}")
    if reason is None:
        return Verdict(True, "TimescaleDB (hypertables, once the schema is applied)")
    return Verdict(True, f"plain PostgreSQL: {reason}")


def _schema_verdict(version: int | None, apply_on_start: bool, can_create: bool, owns: bool) -> Verdict:
    if version is not None and version >= SCHEMA_VERSION:
        return Verdict(True, f"version {version} (this agent writes version {SCHEMA_VERSION})")
    have = "not applied" if version is None else f"version {version}, this agent needs {SCHEMA_VERSION}"
    if not apply_on_start:
        return Verdict(False, f"{have} and schema.apply_on_start = false: run `hypertail migrate` as an admin")
    if version is None and not can_create:
        return Verdict(False, f"{have}, and this role may not create schemas in this database (CREATE): run "
                              "`hypertail migrate` as an admin, or grant it")
    if version is not None and not owns:
        return Verdict(False, f"{have}, and this role does not own the tables it would alter: run "
                              "`hypertail migrate` as their owner")
    return Verdict(True, f"{have}: the agent applies it at start (schema.apply_on_start = true)")


async def _owns_tables(conn: asyncpg.Connection) -> bool:
    """Whether the role may alter observability.spans (owns it, or is a member of its owner)."""
    return bool(await conn.fetchval(
        "SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), false) FROM pg_class c "
        "WHERE c.oid = to_regclass('observability.spans')"))


async def _missing(conn: asyncpg.Connection) -> list[str]:
    """``PRIVILEGE on object`` for each privilege of the ingest grants the role lacks."""
    out = [f"USAGE on schema {s}" for s in INGEST_SCHEMAS
           if not await conn.fetchval("SELECT has_schema_privilege($1, 'USAGE')", s)]
    for privileges, tables in INGEST_TABLE_GRANTS:
        for table in tables:
            if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                out.append(f"table {table} (missing: `hypertail migrate` creates it)")
                continue
            out += [f"{p} on {table}" for p in privileges
                    if not await conn.fetchval("SELECT has_table_privilege($1, $2)", table, p)]
    return out
