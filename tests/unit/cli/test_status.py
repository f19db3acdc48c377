"""`hypertail status`: whether each source is behind by more than compress_after (issue 20)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.cli.status import build_status, render_table
from agent.sink.status import CheckpointStatus, StatusReport

NOW = dt.datetime.now(dt.UTC)
WEEK = dt.timedelta(days=7)


def checkpoint(path: Path, source: str, committed: int, data_time: dt.datetime | None) -> CheckpointStatus:
    st = path.stat()
    return CheckpointStatus(f"k-{path.name}", "a1", source, str(path), st.st_dev, st.st_ino, committed, NOW, 0,
                            data_time)


def test_a_source_is_behind_compress_after_only_with_more_to_read_and_old_data(tmp_path: Path) -> None:
    old, fresh, done = tmp_path / "old.log", tmp_path / "fresh.log", tmp_path / "done.log"
    for p in (old, fresh, done):
        p.write_bytes(b"x" * 100)
    report = StatusReport(files=[
        checkpoint(old, "backlog", 10, NOW - 3 * WEEK),      # more to read, 21 days back: behind
        checkpoint(done, "backlog", 100, NOW - 5 * WEEK),    # all read: an old file, not a lag
        checkpoint(fresh, "live", 10, NOW - dt.timedelta(minutes=1)),
    ], agents=[], hypertables=[], compress_after=WEEK)
    status = build_status("a1", report)
    files = {f["path"]: f for f in status["files"]}
    assert files[str(old)]["behind_compress_after"] is True
    assert files[str(done)]["behind_compress_after"] is False
    assert files[str(fresh)]["behind_compress_after"] is False
    assert status["compress_after"] == "7 days"
    sources = {s["source"]: s for s in status["sources"]}
    assert sources["backlog"]["behind_compress_after"] is True
    assert sources["backlog"]["data_time"] == (NOW - 3 * WEEK).isoformat()
    assert sources["live"]["behind_compress_after"] is False
    text = render_table(status)
    assert "source backlog: behind by more than compress_after (7 days)" in text
    assert "source live: within compress_after (7 days)" in text


def test_without_compression_nothing_is_said(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"x" * 100)
    status = build_status("a1", StatusReport([checkpoint(p, "s", 10, NOW - 3 * WEEK)], [], [], None))
    assert status["files"][0]["behind_compress_after"] is None
    assert status["sources"] == [{"source": "s", "behind_compress_after": None, "data_time": None}]
    assert "compress_after" not in render_table(status)
