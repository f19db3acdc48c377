"""The hypertables as an operator checks them: chunking, policies, compression (``migrate``, ``status``).

The shipped compression policy goes by chunk creation time (``compress_created_before`` =
``compress_after`` plus the chunk interval, see schema.sql); ``compress_after`` here is the data age
it amounts to for a chunk made when its range began, whichever form the policy has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg


@dataclass(frozen=True, slots=True)
class HypertableLayout:
    """One hypertable as an operator checks it: chunking, policies, and what compression saved."""

    table: str
    chunk_interval: str
    compress_after: str | None
    retention: str | None
    chunks: int
    compressed_chunks: int
    bytes_before_compression: int | None
    bytes_after_compression: int | None
    total_bytes: int
    compress_created_before: str | None = None  # the policy's creation-time age, when it has that form


LAYOUT_SQL = """
SELECT h.hypertable_name AS table, d.time_interval::text AS chunk_interval, h.num_chunks AS chunks,
       coalesce(j.config->>'compress_after',
                ((j.config->>'compress_created_before')::interval - d.time_interval)::text) AS compress_after,
       j.config->>'compress_created_before' AS compress_created_before,
       (SELECT j.config->>'drop_after' FROM timescaledb_information.jobs j
         WHERE j.hypertable_schema = h.hypertable_schema AND j.hypertable_name = h.hypertable_name
           AND j.proc_name = 'policy_retention' LIMIT 1) AS retention,
       coalesce(s.number_compressed_chunks, 0) AS compressed_chunks,
       s.before_compression_total_bytes AS before, s.after_compression_total_bytes AS after,
       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) AS total
FROM timescaledb_information.hypertables h
JOIN timescaledb_information.dimensions d
  ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1
LEFT JOIN LATERAL hypertable_compression_stats(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) s
  ON true
LEFT JOIN LATERAL (SELECT jj.config FROM timescaledb_information.jobs jj
                   WHERE jj.hypertable_schema = h.hypertable_schema AND jj.hypertable_name = h.hypertable_name
                     AND jj.proc_name = 'policy_compression' LIMIT 1) j ON true
WHERE h.hypertable_schema = 'observability'
ORDER BY h.hypertable_name
"""


async def hypertable_layout(conn: asyncpg.Connection) -> list[HypertableLayout]:
    """The observability hypertables (empty in plain mode), for ``migrate`` and ``status``."""
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        return []
    return [
        HypertableLayout(
            table=r["table"], chunk_interval=r["chunk_interval"], compress_after=r["compress_after"],
            retention=r["retention"], chunks=int(r["chunks"]), compressed_chunks=int(r["compressed_chunks"]),
            bytes_before_compression=r["before"], bytes_after_compression=r["after"], total_bytes=int(r["total"] or 0),
            compress_created_before=r["compress_created_before"],
        )
        for r in await conn.fetch(LAYOUT_SQL)
    ]


# The youngest data the compression policies compress (the smallest compress_after over the tables).
COMPRESS_AGE_SQL = """
SELECT min(coalesce((j.config->>'compress_after')::interval,
                    (j.config->>'compress_created_before')::interval - d.time_interval))
FROM timescaledb_information.jobs j
JOIN timescaledb_information.dimensions d
  ON d.hypertable_schema = j.hypertable_schema AND d.hypertable_name = j.hypertable_name AND d.dimension_number = 1
WHERE j.proc_name = 'policy_compression' AND j.hypertable_schema = 'observability'
"""


async def compress_age(conn: asyncpg.Connection) -> timedelta | None:
    """How old data gets before a policy compresses it; None without TimescaleDB or policies.

    An agent whose committed data is older than this (and that has more to read) writes into
    ranges that are compressed or soon will be: ``hypertail status`` says so per source.
    """
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        return None
    value = await conn.fetchval(COMPRESS_AGE_SQL)
    return value if isinstance(value, timedelta) else None


def render_layout(layout: list[HypertableLayout]) -> list[str]:
    """One line per hypertable, for terminals."""
    lines = []
    for h in layout:
        saved = ""
        if h.bytes_before_compression and h.bytes_after_compression is not None:
            saved = f", compressed {_size(h.bytes_before_compression)} -> {_size(h.bytes_after_compression)}"
        created = f" (chunks created {h.compress_created_before} ago)" if h.compress_created_before else ""
        lines.append(
            f"  {h.table}: chunks of {h.chunk_interval}, compress after {h.compress_after or 'never'}{created}, "
            f"drop after {h.retention or 'never'}; {h.chunks} chunk(s), {h.compressed_chunks} compressed, "
            f"{_size(h.total_bytes)} on disk{saved}"
        )
    return lines


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
