"""Restart recovery of checkpointed content that left the globs while the agent was down.

Regression for a model failure: a copytruncate copy (outside the globs) was found after a restart
only when the truncated original still sat at a globbed path. After the original was renamed
away its copy was never looked for (its unread lines lost); after it was deleted the copy was
found or not depending on whether a new file happened to reuse the original's inode number.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from agent.sources import Tailer

from .support import Clock, Sink, Writer, tailer

Events = list[tuple[str, dict[str, object]]]


def _tailer(log: Path, sink: Sink, clock: Clock | None = None, events: Events | None = None) -> Tailer:
    """A polling tailer on ``log`` alone, resuming from ``sink``; nothing is released by grace."""
    return tailer([log], sink=sink, clock=clock, events=events, rotate_grace_s=1e9, idle_close_s=1e9)


def _copytruncate(log: Path, copy: Path) -> None:
    shutil.copyfile(log, copy)
    os.truncate(log, 0)


@pytest.mark.parametrize("fate", ["stays", "renamed", "deleted", "deleted_and_recreated"])
def test_copy_made_while_down_is_found_whatever_became_of_the_original(tmp_path: Path, fate: str) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    first = w.lines(3)
    sink.drain(_tailer(log, sink, clock))
    unread = w.lines(2)
    _copytruncate(log, tmp_path / "app.log.1")  # outside the glob
    if fate == "renamed":
        os.rename(log, tmp_path / "app.log.2")
        log.touch()
    elif fate.startswith("deleted"):
        os.unlink(log)
        if fate == "deleted_and_recreated":
            log.touch()  # may or may not get the deleted file's inode number
    w.close()
    later = Writer(log)
    after = later.lines(2)
    events: Events = []
    sink.drain(_tailer(log, sink, clock, events))
    later.close()
    assert sink.data() == Counter(first + unread + after)
    adopted = [f for n, f in events if n == "rotation.out_of_globs"]
    assert [f["new_path"] for f in adopted] == [str(tmp_path / "app.log.1")]
    assert [f["unread_bytes"] for f in adopted] == [sum(len(x) + 1 for x in unread)]


def test_copy_with_nothing_unread_is_not_adopted(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    sink = Sink()
    first = w.lines(3)
    sink.drain(_tailer(log, sink))
    _copytruncate(log, tmp_path / "app.log.1")
    os.unlink(log)
    events: Events = []
    sink.drain(_tailer(log, sink, events=events))
    w.close()
    assert sink.data() == Counter(first)
    assert [n for n, _ in events if n == "rotation.out_of_globs"] == []


def test_model_sequence_copytruncate_rename_delete_then_restart(tmp_path: Path) -> None:
    """The shrunk hypothesis example of ``TailModelOutsideGlobs``, step by step."""
    log = tmp_path / "app.log"
    clock, sink = Clock(), Sink()

    def new_tailer() -> Tailer:
        return _tailer(log, sink, clock)

    t = new_tailer()
    w = Writer(log)                                        # start_writer
    os.rename(log, tmp_path / "app.log.1")                 # rename_rotation
    log.touch()
    _copytruncate(log, tmp_path / "app.log.2")             # copytruncate(window=0) of an empty file
    os.unlink(tmp_path / "app.log.1")                      # delete
    w.reopen()                                             # writer_reopens
    written = w.lines(1)                                   # write_lines(n=1)
    sink.poll(t)                                           # read
    assert sink.data() == Counter(written)
    t.stop()                                               # restart
    t = new_tailer()
    written += w.lines(1)                                  # write_lines(n=1): unread at restart
    _copytruncate(log, tmp_path / "app.log.3")             # copytruncate(window=0)
    os.rename(log, tmp_path / "app.log.4")                 # rename_rotation
    log.touch()
    w.reopen()                                             # writer_reopens
    os.unlink(tmp_path / "app.log.4")                      # delete the truncated original
    os.rename(log, tmp_path / "app.log.5")                 # rename_rotation: the new app.log
    log.touch()                                            # often reuses the deleted inode number
    sink.poll(t)                                           # read
    w.close()
    t.stop()
    assert sink.data() == Counter(written)
