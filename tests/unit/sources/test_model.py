"""Model-based test: random writes, rotations, truncations, deletions and restarts.

The model tracks, per physical file, the complete lines the current tailer has not read yet.
A poll reads every file it can reach (a globbed name, or a descriptor it already holds), so after
each poll the multiset of emitted lines must equal, exactly, the multiset of lines that were in a
reachable file at some poll. Lines are destroyed (and so never expected) only when:

* a truncation (plain, or logrotate's copytruncate after its copy) cuts lines nobody read yet -
  including the lines written in copytruncate's window between the copy and the truncate;
* a file is deleted before the tailer ever held it open, or the tailer restarts while the only
  way to the file was its old descriptor.

A truncation also releases, as one line, the partial line the tailer had read from the truncated
file (its completion was cut away) - unless a copytruncate copy that continues it is still there
when the tailer notices; the model expects that fragment at the next poll of the same tailer.
Writers complete their partial line before they reopen or a truncation, so the rotation grace
period (infinite here, with a frozen clock) never decides anything.

Partial lines are at least 8 bytes, which makes them unique: a truncation followed by a rewrite
with exactly the bytes we had read is invisible by content (see the rewrite-detection policy),
and the model would otherwise expect a fragment no tailer could produce.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from agent.sources import Tailer

from .support import Clock, Sink, payload, tailer


@dataclass
class MFile:
    """A physical file as the model sees it."""

    name: str | None
    unread: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    held: bool = False  # the current tailer holds a descriptor on it
    read_partial: bytes = b""  # the partial line the tailer had read at its last poll
    known: bool = False  # the current tailer identified this generation (saw it with bytes)
    checkpointed: bool = False  # a line of this generation was committed (a checkpoint exists)
    copy_of: MFile | None = None  # a copytruncate copy not found yet: its original...
    copy_known: bool = False  # ...whether the tailer knew the copied generation...
    copy_checkpointed: bool = False  # ...and whether that generation had a checkpoint



class TailModel(RuleBasedStateMachine):
    """Rotated names match the globs (``app.log*``)."""

    GLOB = "app.log*"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tailmodel")
        self.live = os.path.join(self.dir, "app.log")
        self.files: list[MFile] = []
        self.sink = Sink()
        self.clock = Clock()
        self.expected: Counter[bytes] = Counter()
        self.fragments_due: list[bytes] = []
        self.rotations = 0
        self.tailer = self._new_tailer()
        self.restarted = True  # the next poll is a tailer's first scan
        self.wfd = -1
        self.wfile = MFile(None)
        self.partial = b""  # the whole line being written; its first len(written_part) bytes are out
        self.written_part = 0

    def _new_tailer(self) -> Tailer:
        return tailer([os.path.join(self.dir, self.GLOB)], sink=self.sink, clock=self.clock,
                      rotate_grace_s=1e9, idle_close_s=1e9)

    @initialize()
    def start_writer(self) -> None:
        self._open_writer()

    def _open_writer(self) -> None:
        self.wfd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        current = self._by_name(self.live)
        if current is None:
            current = MFile(self.live)
            self.files.append(current)
        self.wfile = current

    def _by_name(self, path: str) -> MFile | None:
        return next((f for f in self.files if f.name == path), None)

    def _write(self, data: bytes) -> None:
        os.write(self.wfd, data)
        self.wfile.nbytes += len(data)

    def _complete_partial(self) -> None:
        if self.partial:
            self._write(self.partial[self.written_part :] + b"\n")
            self.wfile.unread.append(self.partial)
            self.partial, self.written_part = b"", 0

    # ---- the application ---------------------------------------------------------------
    @rule(n=st.integers(1, 3))
    def write_lines(self, n: int) -> None:
        self._complete_partial()
        lines = [payload("m") for _ in range(n)]
        self._write(b"".join(x + b"\n" for x in lines))
        self.wfile.unread += lines

    @precondition(lambda self: not self.partial)
    @rule(cut=st.integers(8, 20))
    def write_partial_line(self, cut: int) -> None:
        self.partial = payload("p")
        self.written_part = cut
        self._write(self.partial[:cut])

    @rule()
    def writer_reopens(self) -> None:
        self._complete_partial()
        os.close(self.wfd)
        self._open_writer()

    # ---- logrotate and friends ---------------------------------------------------------
    def _rotated_name(self) -> str:
        self.rotations += 1
        return f"{self.live}.{self.rotations}"

    @precondition(lambda self: os.path.exists(self.live))
    @rule()
    def rename_rotation(self) -> None:
        name = self._rotated_name()
        os.rename(self.live, name)
        moved = self._by_name(self.live)
        assert moved is not None
        moved.name = name
        open(self.live, "xb").close()  # logrotate "create"; the app keeps its old descriptor
        self.files.append(MFile(self.live))

    @precondition(lambda self: os.path.exists(self.live))
    @rule(window=st.integers(0, 2))
    def copytruncate(self, window: int) -> None:
        original = self._by_name(self.live)
        assert original is not None
        if self.wfile is original:
            self._complete_partial()
        name = self._rotated_name()
        shutil.copyfile(self.live, name)
        # the copy takes the unread lines, and will continue the tailer's held-back line
        self.files.append(MFile(name, unread=original.unread, nbytes=original.nbytes,
                                read_partial=original.read_partial, copy_of=original,
                                copy_known=original.known, copy_checkpointed=original.checkpointed))
        original.unread, original.read_partial = [], b""
        if window and self.wfile is original:
            self._write(b"".join(payload("w") + b"\n" for _ in range(window)))  # destroyed below
        self._truncate(original)

    @precondition(lambda self: os.path.exists(self.live))
    @rule()
    def truncate(self) -> None:
        original = self._by_name(self.live)
        assert original is not None
        if self.wfile is original:
            self._complete_partial()
        self._truncate(original)

    def _truncate(self, f: MFile) -> None:
        os.truncate(self.live, 0)
        if f.read_partial:
            self.fragments_due.append(f.read_partial)
        f.unread, f.nbytes, f.read_partial = [], 0, b""
        f.known = f.checkpointed = False  # a new generation

    @precondition(lambda self: any(f.name is not None for f in self.files))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        f = data.draw(st.sampled_from([f for f in self.files if f.name is not None]))
        assert f.name is not None
        os.unlink(f.name)
        f.name = None
        if not f.held and f.read_partial:  # a copy deleted before the tailer found it
            self.fragments_due.append(f.read_partial)
            f.read_partial = b""

    # ---- the agent ---------------------------------------------------------------------
    @rule()
    def restart(self) -> None:
        self.tailer.stop()
        self.tailer = self._new_tailer()
        self.fragments_due = []
        self.restarted = True
        for f in self.files:
            f.held, f.read_partial, f.known = False, b"", False

    def _in_globs(self, f: MFile) -> bool:
        return f.name is not None and fnmatch.fnmatch(os.path.basename(f.name), self.GLOB)

    def _copy_found(self, c: MFile, first_scan: bool) -> bool:
        """Whether the tailer finds a copytruncate copy at this poll."""
        if c.name is None:
            return False
        if self._in_globs(c):
            return True  # continued where the original stopped, or read as a new file
        if not first_scan:
            return c.copy_known  # looked for next to the original when its truncation is seen
        # after a restart: found through the original's checkpoint, wherever the original is now
        # (still live, renamed, or deleted - its inode number may even be reused by a new file)
        return c.copy_checkpointed and bool(c.unread)

    def _recovered(self, f: MFile) -> bool:
        """First scan after a restart: a checkpointed file outside the globs with more bytes."""
        more = bool(f.unread) or (f is self.wfile and self.written_part > 0)
        return f.name is not None and not self._in_globs(f) and f.checkpointed and more

    @rule()
    def read(self) -> None:
        self.sink.poll(self.tailer)
        first, self.restarted = self.restarted, False
        for f in self.files:
            if f.copy_of is not None:
                f.held = f.held or self._copy_found(f, first)
                f.copy_of = None
            elif first and not f.held:
                f.held = self._recovered(f)
            if self._in_globs(f) or f.held:
                f.checkpointed = f.checkpointed or bool(f.unread)
                self.expected.update(f.unread)
                f.unread = []
                f.held, f.known = f.held or f.nbytes > 0, f.known or f.nbytes > 0
                f.read_partial = self.partial[: self.written_part] if f is self.wfile else b""
        self.expected.update(self.fragments_due)
        self.fragments_due = []
        assert self.sink.data() == self.expected

    def teardown(self) -> None:
        try:
            if self.wfd >= 0:
                self._complete_partial()
                self.read()
        finally:
            self.tailer.stop()
            if self.wfd >= 0:
                os.close(self.wfd)
            shutil.rmtree(self.dir, ignore_errors=True)


class TailModelOutsideGlobs(TailModel):
    """Only ``app.log`` matches: rotated names are outside the globs (the common ``*.log`` setup).

    Such files are read through descriptors the tailer holds, found next to the original
    (copytruncate copies), or, after a restart, found by their checkpoints: a renamed file by its
    inode, a copytruncate copy by the checkpoint of the generation it copied - whatever became of
    the original since (truncated, renamed, deleted, its inode number reused)."""

    GLOB = "app.log"


_SETTINGS = settings(
    max_examples=int(os.environ.get("HYPERTAIL_MODEL_EXAMPLES", "300")), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TailModel.TestCase.settings = _SETTINGS
TailModelOutsideGlobs.TestCase.settings = _SETTINGS
test_tail_model = TailModel.TestCase
test_tail_model_outside_globs = TailModelOutsideGlobs.TestCase
