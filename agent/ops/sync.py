"""``observability.provider_sync_status``: one row per (agent, source file), kept current.

An operator can see in SQL which sidecar is behind, since when, and why: the row carries the
last commit time, a status (``synced``, ``behind``, ``error``, ``stalled``, or ``refused`` for a
symbolic link ``tail.follow_symlinks`` forbids, with the link's target), the last error
(never a secret: DSNs are masked) and how many attempts failed in a row. The same loop pings the
database so readiness notices an outage even when no batch is being committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PROVIDER = "hypertail"
ENTITY_TYPE = "file"
_ENTITY_MAX = 255

UPSERT_SQL = """
INSERT INTO observability.provider_sync_status
       (provider_name, entity_type, entity_id, last_synced_at, sync_status, error_message, retry_count, updated_at)
SELECT $1, $2, e, s, st, err, rc, now()
FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::int[]) AS u(e, s, st, err, rc)
ON CONFLICT (provider_name, entity_type, entity_id) DO UPDATE SET
    last_synced_at = COALESCE(EXCLUDED.last_synced_at, provider_sync_status.last_synced_at),
    sync_status = EXCLUDED.sync_status, error_message = EXCLUDED.error_message,
    retry_count = EXCLUDED.retry_count, updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class FileSync:
    """The sync state of one tailed file, as the runner sees it."""

    path: str
    size: int
    committed: int
    last_commit: float | None
    refused: str | None = None  # why the link policy refuses to read it (never its contents)


def entity_id(agent_id: str, path: str) -> str:
    """``agent:path``, shortened with a hash when longer than the column allows."""
    text = f"{agent_id}:{path}"
    if len(text) <= _ENTITY_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: _ENTITY_MAX - 18]}~{digest}"


def by_path(files: Sequence[FileSync]) -> list[FileSync]:
    """One entry per path: several versions of a file share one (a copytruncate copy and the
    truncated original, a renamed file still draining and its successor), and one upsert may
    not touch a row twice. Bytes behind add up; the latest commit of any version counts."""
    merged: dict[str, FileSync] = {}
    for f in files:
        m = merged.get(f.path)
        if m is None or f.refused:
            merged[f.path] = f
            continue
        if m.refused:
            continue
        commits = [c for c in (m.last_commit, f.last_commit) if c]
        behind = max(m.size - m.committed, 0) + max(f.size - f.committed, 0)
        size = m.size + f.size
        merged[f.path] = FileSync(f.path, size, size - behind, max(commits) if commits else None)
    return list(merged.values())


def status_of(f: FileSync, stalled: str | None, error: str | None) -> str:
    if f.refused:
        return "refused"
    if stalled:
        return "stalled"
    if error:
        return "error"
    return "behind" if f.committed < f.size else "synced"


async def report(
    conn: Any, agent_id: str, files: Sequence[FileSync], *, stalled: str | None, error: str | None,
    retries: int,
) -> int:
    """Upsert one row per file; returns how many rows were written."""
    if not files:
        return 0
    message = stalled or error
    rows = [
        (
            entity_id(agent_id, f.path),
            datetime.fromtimestamp(f.last_commit, UTC) if f.last_commit else None,
            status_of(f, stalled, error),
            (f.refused or message or "")[:1000] or None,
            retries,
        )
        for f in by_path(files)
    ]
    cols = list(zip(*rows, strict=True))
    await conn.execute(UPSERT_SQL, PROVIDER, ENTITY_TYPE, *[list(c) for c in cols])
    return len(rows)


AGENT_ENTITY_TYPE = "agent"


def agent_status(*, started: bool, stalled: str | None, error: str | None, final: bool = False) -> str:
    """The agent's own row: ``stalled`` and ``error`` as for files, else ``starting``, ``running``,
    or ``stopped`` (its last report on the way out)."""
    if stalled:
        return "stalled"
    if error:
        return "error"
    if final:
        return "stopped"
    return "running" if started else "starting"


async def table_ready(conn: Any) -> bool:
    """Whether provider_sync_status exists: before startup applied the schema of a new database
    it does not, and there is nothing to report into yet (which is not a failure)."""
    return bool(await conn.fetchval("SELECT to_regclass('observability.provider_sync_status') IS NOT NULL"))


async def report_agent(
    conn: Any, agent_id: str, *, started: bool, stalled: str | None, error: str | None, retries: int,
    last_commit: float | None, final: bool = False,
) -> None:
    """Upsert the agent's own row (entity type ``agent``).

    It exists because a stall can come before any file is known: a schema the server refuses, or
    a missing privilege at startup. Then no file row says why ingestion waits, and this row does.
    """
    message = stalled or error
    await conn.execute(
        UPSERT_SQL, PROVIDER, AGENT_ENTITY_TYPE, [agent_id[:_ENTITY_MAX]],
        [datetime.fromtimestamp(last_commit, UTC) if last_commit else None],
        [agent_status(started=started, stalled=stalled, error=error, final=final)],
        [message[:1000] if message else None], [retries],
    )
