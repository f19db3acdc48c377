"""Forget checkpoints of files long gone, so they do not pile up over months of rotations.

Every rotated-away and deleted file leaves its checkpoint row behind (one per file generation).
They cost startup time and memory, and nothing needs them once their file is gone for good. A row
is deleted only when all of these hold, so pruning never loses a line:

* the tailer found nothing that continues it at its first scan (no globbed file, no moved or
  copied file next to its path): the runner passes exactly those keys;
* it belongs to this agent (``agent_id``): another agent may see files we cannot;
* it has not moved for ``agent.checkpoint_retention_days`` (0 turns pruning off).

A file that comes back after that (a volume remounted months later) is read again from 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

PRUNE_SQL = """
DELETE FROM hypertail.checkpoints
WHERE agent_id = $1 AND file_key = ANY($2::text[]) AND updated_at < now() - make_interval(days => $3)
"""
_CHUNK = 10_000


async def prune_checkpoints(conn: asyncpg.Connection, agent_id: str, keys: Sequence[str], days: int) -> int:
    """Delete the gone-and-old checkpoints among ``keys``; returns how many rows went."""
    if days <= 0:
        return 0
    deleted = 0
    for i in range(0, len(keys), _CHUNK):
        status = await conn.execute(PRUNE_SQL, agent_id, list(keys[i : i + _CHUNK]), days)
        deleted += int(status.split()[-1])
    return deleted
