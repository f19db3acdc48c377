"""Read a database's catalog back as plain data, to compare with the spec and between runs."""

from __future__ import annotations

from typing import Any

import asyncpg

SCHEMAS = ("observability", "hypertail")


async def columns(conn: asyncpg.Connection) -> dict[str, dict[str, tuple[str, bool]]]:
    """{schema.table: {column: (type, not_null)}}."""
    rows = await conn.fetch(
        """
        SELECT n.nspname || '.' || c.relname AS tbl, a.attname AS col,
               format_type(a.atttypid, a.atttypmod) AS typ, a.attnotnull AS nn
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND a.attnum > 0
          AND NOT a.attisdropped
        ORDER BY 1, a.attnum
        """,
        list(SCHEMAS),
    )
    out: dict[str, dict[str, tuple[str, bool]]] = {}
    for r in rows:
        out.setdefault(r["tbl"], {})[r["col"]] = (r["typ"], r["nn"])
    return out


async def constraints(conn: asyncpg.Connection) -> dict[str, set[tuple[str, str]]]:
    """{schema.table: {(kind, definition)}} for primary keys, unique and foreign keys."""
    rows = await conn.fetch(
        """
        SELECT n.nspname || '.' || c.relname AS tbl, con.contype::text AS kind,
               pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND con.contype IN ('p', 'u', 'f')
        """,
        list(SCHEMAS),
    )
    out: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        out.setdefault(r["tbl"], set()).add((r["kind"], r["def"]))
    return out


async def indexes(conn: asyncpg.Connection) -> dict[str, str]:
    """{schema.index_name: definition} of the parent tables (not TimescaleDB chunks)."""
    rows = await conn.fetch(
        "SELECT schemaname || '.' || indexname AS name, indexdef FROM pg_indexes "
        "WHERE schemaname = ANY($1::text[])",
        list(SCHEMAS),
    )
    return {r["name"]: r["indexdef"] for r in rows}


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything the idempotence test compares between two applications of schema.sql."""
    snap: dict[str, Any] = {
        "columns": await columns(conn),
        "constraints": await constraints(conn),
        "indexes": await indexes(conn),
        "defaults": [tuple(r) for r in await conn.fetch(
            "SELECT table_schema, table_name, column_name, column_default "
            "FROM information_schema.columns WHERE table_schema = ANY($1::text[]) ORDER BY 1, 2, 3",
            list(SCHEMAS),
        )],
    }
    if await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        snap["hypertables"] = [tuple(r) for r in await conn.fetch(
            "SELECT hypertable_schema, hypertable_name, compression_enabled "
            "FROM timescaledb_information.hypertables ORDER BY 1, 2"
        )]
        snap["jobs"] = [tuple(r) for r in await conn.fetch(
            "SELECT proc_name, hypertable_schema, hypertable_name, schedule_interval::text "
            "FROM timescaledb_information.jobs WHERE hypertable_schema = 'observability' ORDER BY 1, 2, 3"
        )]
    return snap
