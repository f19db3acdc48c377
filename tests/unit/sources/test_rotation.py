"""Rotation, truncation, replacement and inode reuse, on real files, with exact multisets."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.model import Checkpoint
from agent.sources import Tailer, TailOptions
from agent.sources.identity import identify

from .support import Clock, Sink, Writer, spec, tailer

Events = list[tuple[str, dict[str, object]]]


def names(events: Events) -> list[str]:
    return [n for n, _ in events]


@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
def test_rename_rotation_writer_keeps_old_descriptor(tmp_path: Path, glob: str) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([tmp_path / glob], clock=clock)
    before = w.lines(5)
    sink.poll(t)
    unread = w.lines(3)  # written, not yet read, when the rotation happens
    os.rename(log, tmp_path / "app.log.1")
    w.raw(b"half of a line ")  # the app still writes through its old descriptor...
    sink.poll(t)
    w.raw(b"completed after the rename\n")
    after_rename = w.lines(4)
    new = Writer(log)  # ...while the new file starts
    fresh = new.lines(6)
    sink.poll(t)
    w.close()  # the app finally reopens
    new.lines(0)
    clock.advance(10)
    sink.drain(t)
    expected = before + unread + [b"half of a line completed after the rename"] + after_rename + fresh
    assert sink.data() == Counter(expected)
    rotated = [line for line in sink.lines if line.data in after_rename]
    assert {line.file.path for line in rotated} == {str(log)}  # the path label stays the home path


def test_rotated_file_is_released_after_grace_and_ack(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([log], clock=clock, rotate_grace_s=5)
    w.lines(2)
    w.raw(b"no newline ever")
    sink.poll(t)
    os.rename(log, tmp_path / "app.log.1")
    sink.poll(t)
    assert [f.rotated for f in t.files()] == [True]
    clock.advance(4)
    assert sink.poll(t) == []
    clock.advance(2)
    tail = sink.poll(t)
    assert [(x.data, x.end) for x in tail] == [(b"no newline ever", os.path.getsize(tmp_path / "app.log.1"))]
    assert t.files() == []  # acked to its end: forgotten, descriptor closed


@pytest.mark.parametrize("copy_name", ["app.log.1", "app.log-2024.old"])
def test_copytruncate_like_logrotate(tmp_path: Path, copy_name: str) -> None:
    """logrotate copytruncate: copy, then truncate in place; the writer keeps its O_APPEND fd.
    With the glob ``app.log*`` the copy is inside the globs for ``app.log.1`` and outside for the
    other name (found next to the original)."""
    log = tmp_path / "app.log"
    w = Writer(log)
    sink, events = Sink(), Events()
    t = tailer([tmp_path / "app.log*"] if copy_name.endswith(".1") else [log], events=events)
    w.raw(b"\xef\xbb\xbf")
    read = w.lines(20)
    w.raw(b"partial ")
    sink.poll(t)
    unread = w.lines(7)
    shutil.copyfile(log, tmp_path / copy_name)
    window = w.lines(2)  # written between copy and truncate: destroyed by copytruncate itself
    os.truncate(log, 0)
    w.raw(b"rest\n")
    after = w.lines(5)
    sink.drain(t)
    expected = [*read, b"partial " + unread[0], *unread[1:], b"rest", *after]
    assert sink.data() == Counter(expected)
    assert not set(window) & set(sink.data())
    assert "rotation.copytruncate" in names(events)


def test_copy_seen_before_the_truncate_is_not_read_twice(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([tmp_path / "app.log*"], clock=clock, rotate_grace_s=5)
    first = w.lines(10)
    sink.poll(t)
    more = w.lines(3)
    shutil.copyfile(log, tmp_path / "app.log.1")
    sink.poll(t)  # sees the copy (deferred: same head as the live file) and reads `more`
    clock.advance(1)
    os.truncate(log, 0)
    after = w.lines(4)
    sink.drain(t)
    assert sink.data() == Counter(first + more + after)


def test_truncate_and_rewrite_without_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    sink, events = Sink(), Events()
    t = tailer([log], events=events)
    old = w.lines(10)
    sink.poll(t)
    os.truncate(log, 0)
    new = w.lines(30)  # longer than before: the size alone would not show the rewrite
    sink.drain(t)
    assert sink.data() == Counter(old + new)
    keys = {line.file.identity.key for line in sink.lines}
    assert len(keys) == 2 and "file.rewritten" in names(events)


def test_truncate_and_rewrite_to_the_same_size(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"aaaa-0001\nbbbb-0002\n")
    sink = Sink()
    t = tailer([log])
    sink.poll(t)
    log.write_bytes(b"cccc-0003\ndddd-0004\n")  # O_TRUNC + same length
    sink.drain(t)
    assert sink.data() == Counter([b"aaaa-0001", b"bbbb-0002", b"cccc-0003", b"dddd-0004"])


def test_shrink_to_nonzero_size_policy_reads_again_from_zero(tmp_path: Path) -> None:
    """Policy: a file shorter than the read offset was rewritten; read it again from 0 under a
    new identity key. If the shrink kept a prefix, its lines come again (at-least-once for that
    prefix) - the alternative, skipping, would lose the lines of a fast truncate-and-rewrite."""
    log = tmp_path / "app.log"
    w = Writer(log)
    sink, events = Sink(), Events()
    t = tailer([log], events=events)
    kept = w.lines(3)
    cut = w.lines(7)
    sink.poll(t)
    os.truncate(log, sum(len(p) + 1 for p in kept))
    appended = w.lines(2)
    sink.drain(t)
    assert sink.data() == Counter(kept * 2 + cut + appended)
    first_key = sink.lines[0].file.identity.key
    assert {x.file.identity.key for x in sink.lines[10:]} != {first_key}
    assert [f["reason"] for n, f in events if n == "file.rewritten"] == ["shrunk below the read offset"]


def test_three_files_rotated_at_once_while_written(tmp_path: Path) -> None:
    paths = [tmp_path / f"svc{i}.log" for i in range(3)]
    writers = [Writer(p) for p in paths]
    clock, sink = Clock(), Sink()
    t = tailer([tmp_path / "*.log"], clock=clock)
    stop = threading.Event()

    def write(w: Writer) -> None:
        while not stop.is_set():
            w.lines(5)
            time.sleep(0.0005)

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for th in threads:
        th.start()
    for _ in range(20):
        sink.poll(t)
        time.sleep(0.003)
    for i, p in enumerate(paths):  # all three rotated while their writers keep writing
        os.rename(p, tmp_path / f"svc{i}.log.1")
    for _ in range(20):
        sink.poll(t)
        time.sleep(0.003)
    stop.set()
    for th in threads:
        th.join()
    new_writers = [Writer(p) for p in paths]
    for w in new_writers:
        w.lines(10)
    clock.advance(10)
    sink.drain(t)
    expected = Counter(x for w in writers + new_writers for x in w.written)
    assert sink.data() == expected and sum(expected.values()) > 100


def test_delete_and_recreate_same_path(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([log], clock=clock)
    old = w.lines(5)
    sink.poll(t)
    late = w.lines(2)
    os.unlink(log)
    w.lines(0)
    more_old = w.lines(1)  # still written to the deleted inode
    new = Writer(log)
    fresh = new.lines(4)
    sink.poll(t)
    clock.advance(10)
    sink.drain(t)
    assert sink.data() == Counter(old + late + more_old + fresh)
    assert len(t.files()) == 1


def test_atomic_replace(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([log], clock=clock)
    old = w.lines(5)
    sink.poll(t)
    unread = w.lines(2)
    tmp = tmp_path / "app.log.tmp"
    replacement = Writer(tmp)
    new = replacement.lines(3)
    os.replace(tmp, log)  # mv new old
    sink.poll(t)
    clock.advance(10)
    sink.drain(t)
    assert sink.data() == Counter(old + unread + new)


def test_inode_reuse_is_told_apart_by_fingerprint(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    lines = w.lines(6)
    st = os.stat(log)
    stale = identify(st.st_dev, st.st_ino, b"a different file that lived on this inode before\n")
    cp = Checkpoint(stale, str(log), "app", 30, "00" * 8)
    sink = Sink()
    sink.checkpoints[stale.key] = cp
    t = tailer([log], sink=sink, start_at="end")
    sink.drain(t)
    assert sink.data() == Counter(lines)  # from 0, not from offset 30 and not from the end
    assert sink.lines[0].file.identity.key != stale.key


def test_moved_out_of_globs_while_closed_is_found_next_to_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink, events = Clock(), Sink(), Events()
    t = tailer([log], clock=clock, events=events, idle_close_s=1)
    first = w.lines(3)
    sink.poll(t)
    clock.advance(2)
    sink.poll(t)  # idle: closed
    assert [f.open for f in t.files()] == [False]
    unread = w.lines(2)
    os.rename(log, tmp_path / "app.log.1")
    sink.poll(t)
    clock.advance(10)
    sink.drain(t)
    assert sink.data() == Counter(first + unread)


def test_moved_away_while_closed_with_unread_bytes_is_reported(tmp_path: Path) -> None:
    """Closed (idle), grown, could not be reopened (permission), then moved to another folder:
    the bytes cannot be read any more, and the report says how many."""
    log = tmp_path / "app.log"
    (tmp_path / "archive").mkdir()
    w = Writer(log)
    clock, sink, events = Clock(), Sink(), Events()
    deny = False

    def opener(path: str) -> int:
        if deny:
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, os.O_RDONLY)

    t = Tailer([spec(log)], [], TailOptions(use_events=False, idle_close_s=1),
               lambda n, f: events.append((n, f)), opener=opener, clock=clock)
    seen = w.lines(3)
    sink.poll(t)
    clock.advance(2)
    sink.poll(t)
    assert [f.open for f in t.files()] == [False]
    lost = w.lines(2)
    deny = True
    sink.poll(t)  # the scan sees the growth; the reopen is refused
    os.rename(log, tmp_path / "archive" / "app.log.1")
    sink.poll(t)
    assert sink.data() == Counter(seen)
    reports = [f for n, f in events if n == "rotation.unread_outside_globs"]
    assert reports and reports[0]["unread_bytes"] == sum(len(p) + 1 for p in lost)
    assert "file.permission_denied" in names(events)


def test_copytruncate_mid_line_releases_the_copy_tail_after_grace(tmp_path: Path) -> None:
    """The app is mid-line when logrotate copies and truncates; its remainder lands at offset 0
    of the truncated file. Both halves come out, each once: the copy's tail after the grace
    period (its writer is gone), the remainder as the first line of the new content."""
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink, events = Clock(), Sink(), Events()
    t = tailer([tmp_path / "app.log*"], clock=clock, events=events, rotate_grace_s=5)
    first = w.lines(3)
    w.raw(b"first half")
    sink.poll(t)
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    w.raw(b" second half\n")
    sink.poll(t)
    assert sink.data() == Counter([*first, b" second half"])
    clock.advance(6)
    sink.drain(t)
    assert sink.data() == Counter([*first, b" second half", b"first half"])
    assert "line.partial_released" in names(events)


def test_a_plain_copy_with_the_same_head_is_read_after_the_grace_period(tmp_path: Path) -> None:
    """Policy: a new file whose first bytes equal a live file's is held back as a probable
    copytruncate copy; if the original is not truncated within the grace period it is an
    ordinary file (a ``cp`` backup) and is read from 0 - a duplicate of the copied lines, never
    a loss."""
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    t = tailer([tmp_path / "*.log*"], clock=clock, rotate_grace_s=5)
    lines = w.lines(4)
    sink.poll(t)
    shutil.copyfile(log, tmp_path / "backup.log")
    assert sink.poll(t) == [] and not t.idle()
    clock.advance(6)
    sink.drain(t)
    assert sink.data() == Counter(lines * 2)


def test_a_blocks_tail_is_of_the_bytes_read_even_when_the_file_is_rewritten_before_the_commit(
        tmp_path: Path) -> None:
    """The sink stores the tail a block carries: a truncation (with or without a copy) between
    the read and the commit cannot change it, and the file is never read again for it."""
    from agent.sources import tail_hash

    for copy in (True, False):
        log = tmp_path / f"app{copy}.log"
        w = Writer(log)
        w.lines(3)
        t = tailer([tmp_path / f"app{copy}.log*"])
        blocks = t.poll_once()
        original = log.read_bytes()
        if copy:
            shutil.copyfile(log, tmp_path / f"app{copy}.log.1")
        os.truncate(log, 0)
        w.lines(5)
        t.poll_once()
        assert [b.tail for b in blocks] == [tail_hash(original[: b.end]) for b in blocks]


def test_new_file_on_a_reused_inode_gets_a_new_key_whatever_its_head(tmp_path: Path) -> None:
    """Issue 10: deleted, let go, recreated on the freed inode with byte-identical first bytes.
    The same key would make the sink drop the new file's lines below the old committed offset."""
    header = b"x" * 4095 + b"\n"
    log = tmp_path / "app.log"
    log.write_bytes(header + b"old-1\nold-2\n")
    ino = log.stat().st_ino
    clock, sink = Clock(), Sink()
    t = tailer([tmp_path / "*.log"], clock=clock, rotate_grace_s=1)
    sink.drain(t)
    old_key = sink.lines[-1].file.identity.key
    log.unlink()
    for _ in range(3):
        clock.advance(2)
        sink.poll(t)
    assert t.files() == []  # let go of: the inode is free
    for i in range(50):  # the freed inode number comes back at once on ext4; elsewhere skip
        log.write_bytes(header + b"new\n")
        if log.stat().st_ino == ino:
            break
        (tmp_path / f"hold{i}").write_bytes(b"")
        log.unlink()
    else:
        pytest.skip("this filesystem does not reuse inode numbers soon")
    got = sink.drain(t)
    assert [x.data for x in got] == [header[:-1], b"new"]
    assert {x.file.identity.key for x in got} != {old_key}
