"""One generation of one tailed file: identity, descriptor and reading state.

A :class:`Tracked` lives from the moment a file is identified until everything read from it is
acknowledged and nothing more will be read. Its life, in flags:

* ``rotated``: its content is no longer the live file at its home path (renamed, moved out of
  the globs, deleted, or it is a copytruncate copy). Only then may an unterminated tail be
  released after a quiet grace period.
* ``gone``: no globbed path leads to it; it is drained through its open descriptor.
* ``replaced``: its bytes were rewritten in place (truncation, shrink, different bytes before the
  read offset); the inode now holds a new generation, tracked separately.
* ``done``: nothing more will be read; kept only until acks reach ``emitted``.

Before every read the up to 64 bytes just before the read offset are read again and compared
with what was read there last time (one ``pread``, the same call that reads the new bytes):
any in-place rewrite is caught even when the file grew past its old size in between.
"""

from __future__ import annotations

import os

from agent.model import Block, FileRef
from agent.sources.handles import close_quietly, read_before
from agent.sources.identity import FINGERPRINT_BYTES
from agent.sources.reader import LineSplitter

DevIno = tuple[int, int]


class Tracked:
    """Mutable state of one file generation: :class:`~agent.sources.files.FileSet` holds it, and
    only the sources' own modules (scan, matching, rotation, the tailer) change it."""

    __slots__ = (
        "acked", "devino", "done", "emitted", "fd", "gone", "head", "last_growth", "last_used",
        "mtime_ns", "path", "ref", "replaced", "rotated", "size", "split", "stale", "tail_source",
    )

    def __init__(self, ref: FileRef, devino: DevIno, path: str | None, fd: int | None,
                 split: LineSplitter, head: bytes, now: float) -> None:
        self.ref = ref
        self.devino = devino
        self.path = path  # where the globs found it last (None: no globbed path leads to it)
        self.fd = fd
        self.split = split
        self.head = head  # first bytes of this generation, up to the fingerprint window
        self.size = split.pos
        self.mtime_ns = 0
        self.acked = split.start
        self.emitted = split.start
        self.rotated = False
        self.gone = False
        self.replaced = False
        self.done = False
        self.stale = False  # closed, and stat says it changed: reopen and look
        self.tail_source: Tracked | None = None  # the copy that holds our bytes after copytruncate
        self.last_growth = now
        self.last_used = now

    @property
    def pos(self) -> int:
        return self.split.pos

    @property
    def tail(self) -> bytes:
        """The up to 64 bytes just before the read offset, as they were read (the splitter's)."""
        return self.split.window

    @property
    def unread(self) -> int:
        """Bytes known to exist past the read offset (from the last stat)."""
        return max(self.size - self.split.pos, 0)

    def read(self, budget: int, chunk: int, now: float) -> tuple[list[Block], bool]:
        """Read up to ``budget`` new bytes; return the completed lines and whether the file
        turned out to be rewritten (shrunk below, or different bytes before, the read offset)."""
        assert self.fd is not None
        st = os.fstat(self.fd)
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        if st.st_size < self.split.pos:
            return [], True
        lines: list[Block] = []
        start = self.split.pos
        while budget > 0:
            want = min(chunk, budget)
            k = len(self.tail)
            data = os.pread(self.fd, want + k, self.split.pos - k)
            if data[:k] != self.tail:
                return lines, True
            if len(data) == k:
                break
            data = data[k:]
            self._remember(data)
            lines += self.split.feed(data)
            budget -= len(data)
            if len(data) < want:
                break
        if self.split.pos > start:
            self.last_growth = self.last_used = now
            self.size = max(self.size, self.split.pos)
        if lines:
            self.emitted = lines[-1].end
        return lines, False

    def unchanged(self) -> bool:
        """Whether the bytes before the read offset are still the ones read there."""
        assert self.fd is not None
        try:
            return read_before(self.fd, self.split.pos) == self.tail
        except OSError:
            return False

    def release(self) -> Block | None:
        """Emit the held-back partial line: its writer is gone (see module docstring)."""
        line = self.split.release()
        if line is not None:
            self.emitted = line.end
        return line

    def close(self) -> bool:
        """Close the descriptor; return whether one was open."""
        was_open = self.fd is not None
        close_quietly(self.fd)
        self.fd = None
        return was_open

    def _remember(self, data: bytes) -> None:
        """Complete the head (the fingerprint window) from bytes about to be fed."""
        base = self.split.pos
        h = len(self.head)
        if h < FINGERPRINT_BYTES and base <= h < base + len(data):
            self.head += data[h - base : FINGERPRINT_BYTES - base]
