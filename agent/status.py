"""``hypertail status``: per source file, how far the database is behind the file.

The JSON shape (``--json``) is a stable interface, documented in docs/status.md::

    {"agent_id": str | null, "generated_at": RFC 3339, "files": [
        {"source": str, "path": str, "file_key": str, "agent_id": str,
         "committed_offset": int, "size": int | null, "bytes_behind": int | null,
         "state": "current" | "behind" | "rotated" | "missing",
         "last_commit": RFC 3339, "dead_letters_1h": int}]}

``size`` is the size of the file at ``path`` when it is still the same file (same device and
inode); a rotated-away or deleted file has ``size`` null and state ``rotated`` or ``missing``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from agent.sink.status import CheckpointStatus


def _size_if_same(path: str, device: int, inode: int) -> tuple[int | None, str]:
    try:
        st = os.stat(path)
    except OSError:
        return None, "missing"
    if (st.st_dev, st.st_ino) != (device, inode):
        return None, "rotated"
    return st.st_size, "current"


def file_entry(c: CheckpointStatus) -> dict[str, Any]:
    size, state = _size_if_same(c.path, c.device, c.inode)
    behind = None if size is None else max(0, size - c.committed_offset)
    if behind:
        state = "behind"
    return {
        "source": c.source, "path": c.path, "file_key": c.file_key, "agent_id": c.agent_id,
        "committed_offset": c.committed_offset, "size": size, "bytes_behind": behind, "state": state,
        "last_commit": c.last_commit.astimezone(UTC).isoformat(), "dead_letters_1h": c.dead_letters_1h,
    }


def build_status(agent_id: str | None, rows: list[CheckpointStatus]) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "files": [file_entry(r) for r in rows],
    }


def render_table(status: dict[str, Any]) -> str:
    """A readable table: one line per file, biggest lag first."""
    files = sorted(status["files"], key=lambda f: -(f["bytes_behind"] or 0))
    if not files:
        return "no checkpoints yet: nothing has been committed by this agent"
    head = ("SOURCE", "STATE", "COMMITTED", "SIZE", "BEHIND", "DEAD/1h", "LAST COMMIT", "PATH")
    rows = [head] + [
        (
            f["source"], f["state"], str(f["committed_offset"]), _num(f["size"]), _num(f["bytes_behind"]),
            str(f["dead_letters_1h"]), f["last_commit"][:19].replace("T", " "), f["path"],
        )
        for f in files
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)
