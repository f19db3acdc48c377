"""provider_sync_status against the real database: several file versions on one path (issue 10)."""

from __future__ import annotations

import asyncpg

from agent.ops.sync import FileSync, report


async def test_versions_sharing_a_path_are_one_row(conn: asyncpg.Connection) -> None:
    files = [
        FileSync("/l/app.log", 100, 100, 10.0),  # the copytruncate copy, drained
        FileSync("/l/app.log", 50, 20, 20.0),  # the truncated original, behind
        FileSync("/l/other.log", 5, 5, None),
    ]
    assert await report(conn, "a1", files, stalled=None, error=None, retries=0) == 2
    rows = await conn.fetch("SELECT entity_id, sync_status, extract(epoch FROM last_synced_at) AS t "
                            "FROM observability.provider_sync_status ORDER BY entity_id")
    assert [(r["entity_id"], r["sync_status"], r["t"]) for r in rows] == [
        ("a1:/l/app.log", "behind", 20), ("a1:/l/other.log", "synced", None)]
