"""``hypertail status``: per source file, how far the database is behind the file.

The JSON shape (``--json``) is a stable interface, documented in docs/status.md::

    {"agent_id": str | null, "generated_at": RFC 3339, "files": [
        {"source": str, "path": str, "file_key": str, "agent_id": str,
         "committed_offset": int, "size": int | null, "bytes_behind": int | null,
         "state": "current" | "behind" | "rotated" | "missing",
         "last_commit": RFC 3339, "dead_letters_1h": int,
         "data_time": RFC 3339 | null, "behind_compress_after": bool | null}],
     "compress_after": str | null,
     "sources": [{"source": str, "behind_compress_after": bool | null, "data_time": RFC 3339 | null}]}

``size`` is the size of the file at ``path`` when it is still the same file (same device and
inode); a rotated-away or deleted file has ``size`` null and state ``rotated`` or ``missing``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.cli.output import wrapped
from agent.sink.layout import HypertableLayout, render_layout
from agent.sink.status import AgentStatus, CheckpointStatus, StatusReport
from agent.views.table import Column, fit


def _size_if_same(path: str, device: int, inode: int) -> tuple[int | None, str]:
    try:
        st = os.stat(path)
    except OSError:
        return None, "missing"
    if (st.st_dev, st.st_ino) != (device, inode):
        return None, "rotated"
    return st.st_size, "current"


def file_entry(c: CheckpointStatus, compress_after: timedelta | None = None) -> dict[str, Any]:
    size, state = _size_if_same(c.path, c.device, c.inode)
    behind = None if size is None else max(0, size - c.committed_offset)
    if behind:
        state = "behind"
    return {
        "source": c.source, "path": c.path, "file_key": c.file_key, "agent_id": c.agent_id,
        "committed_offset": c.committed_offset, "size": size, "bytes_behind": behind, "state": state,
        "last_commit": c.last_commit.astimezone(UTC).isoformat(), "dead_letters_1h": c.dead_letters_1h,
        "data_time": _iso(c.data_time), "behind_compress_after": _behind_compression(c, state, compress_after),
    }


def _behind_compression(c: CheckpointStatus, state: str, compress_after: timedelta | None) -> bool | None:
    """True when the file has more to read and what was committed last is older than compress_after:
    the agent writes into ranges that are compressed, or will be soon (issue 20). None without
    compression (plain PostgreSQL, no policy) or before a row was committed."""
    if compress_after is None or c.data_time is None:
        return None
    return state == "behind" and c.data_time < datetime.now(UTC) - compress_after


def source_entries(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source: behind by more than compress_after in any of its files, and the oldest data time there."""
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        e = out.setdefault(f["source"], {"source": f["source"], "behind_compress_after": None, "data_time": None})
        flag = f["behind_compress_after"]
        if flag is not None:
            e["behind_compress_after"] = bool(e["behind_compress_after"]) or flag
        if flag and (e["data_time"] is None or f["data_time"] < e["data_time"]):
            e["data_time"] = f["data_time"]
    return [out[k] for k in sorted(out)]


def _age(t: timedelta | None) -> str | None:
    if t is None:
        return None
    return f"{t.days} days" if t == timedelta(days=t.days) else str(t)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def agent_entry(a: AgentStatus) -> dict[str, Any]:
    return {"agent_id": a.agent_id, "status": a.status, "error": a.error, "retries": a.retries,
            "last_commit": _iso(a.last_commit), "reported_at": _iso(a.reported_at)}


def hypertable_entry(h: HypertableLayout) -> dict[str, Any]:
    return {"table": h.table, "chunk_interval": h.chunk_interval, "compress_after": h.compress_after,
            "retention": h.retention, "chunks": h.chunks, "compressed_chunks": h.compressed_chunks,
            "bytes_before_compression": h.bytes_before_compression,
            "bytes_after_compression": h.bytes_after_compression, "total_bytes": h.total_bytes,
            "compress_created_before": h.compress_created_before}


def build_status(agent_id: str | None, report: StatusReport) -> dict[str, Any]:
    files = [file_entry(r, report.compress_after) for r in report.files]
    return {
        "agent_id": agent_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "agents": [agent_entry(a) for a in report.agents],
        "files": files,
        "compress_after": _age(report.compress_after),
        "sources": source_entries(files),
        "hypertables": [hypertable_entry(h) for h in report.hypertables],
    }


def render_table(status: dict[str, Any], width: int | None = None) -> str:
    """The agents' states (with a stall's reason), one line per file (biggest lag first), and the
    hypertables' layout; the files' table fits ``width`` (None: a pipe, every column whole)."""
    lines = [_agent_line(a) for a in status.get("agents", [])]
    lines.append(_files_table(status["files"], width))
    lines.extend(_source_line(s, status.get("compress_after")) for s in status.get("sources", [])
                 if s["behind_compress_after"] is not None)
    if status.get("hypertables"):
        lines.append("hypertables:")
        lines.extend(wrapped(render_layout([HypertableLayout(**h) for h in status["hypertables"]]), width))
    return "\n".join(lines)


def _source_line(s: dict[str, Any], compress_after: str | None) -> str:
    if not s["behind_compress_after"]:
        return f"source {s['source']}: within compress_after ({compress_after})"
    return (f"source {s['source']}: behind by more than compress_after ({compress_after}), at data of "
            f"{s['data_time'][:19].replace('T', ' ')} UTC: writing into compressed ranges (backfill)")


def _agent_line(a: dict[str, Any]) -> str:
    why = f": {a['error']}" if a["error"] else ""
    return f"agent {a['agent_id']}: {a['status']}{why}"


FILE_COLUMNS = (
    Column("SOURCE", keep=7, shrink=6), Column("STATE", keep=8), Column("COMMITTED", right=True, keep=2),
    Column("SIZE", right=True, keep=1), Column("BEHIND", right=True, keep=6), Column("DEAD/1h", right=True, keep=5),
    Column("LAST COMMIT", keep=3), Column("PATH", keep=9, shrink=16, cut_left=True),
)


def _files_table(files: list[dict[str, Any]], width: int | None) -> str:
    files = sorted(files, key=lambda f: -(f["bytes_behind"] or 0))
    if not files:
        return "no checkpoints yet: nothing has been committed by this agent"
    rows = [
        (
            f["source"], f["state"], str(f["committed_offset"]), _num(f["size"]), _num(f["bytes_behind"]),
            str(f["dead_letters_1h"]), f["last_commit"][:19].replace("T", " "), f["path"],
        )
        for f in files
    ]
    fitted = fit(FILE_COLUMNS, rows, width)
    hidden = [f"hidden at {width} columns: {', '.join(fitted.hidden)} (--json shows all)"] if fitted.hidden else []
    return "\n".join(fitted.lines + hidden)


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)
