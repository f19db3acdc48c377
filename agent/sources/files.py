"""The set of tracked files: open-descriptor budget, identity index, acks and retirement.

Kept apart from the scan logic so that the rules about descriptors live in one place:

* at most ``max_open_files`` descriptors; to make room, an eighth of the budget is closed at
  once among the *reopenable* files (still reachable by a globbed path), fully read ones first,
  then the least recently used, so the next opens find room without another pass. Files that
  are gone from the globs are never closed before they are drained: they cannot be reopened.
* a descriptor is reopened by path and accepted only if device, inode and fingerprint agree.
* a finished (``done``) file gives its descriptor back at once (its blocks carry their tail
  hashes, so nothing reads it again) and is forgotten once acks reach the end of what it emitted.
"""

from __future__ import annotations

import errno
import heapq
import os
from collections.abc import Callable, Iterator
from typing import Any

from agent.model import FileIdentity
from agent.sources.handles import Opener, close_quietly, open_regular, read_head
from agent.sources.identity import matches
from agent.sources.links import LinkRefused
from agent.sources.options import TailOptions
from agent.sources.tracked import DevIno, Tracked

Emit = Callable[[str, dict[str, Any]], None]
# Inodes whose last identity is remembered (about 200 bytes each): far more files than are ever
# deleted between two restarts of an agent; on restart the checkpoints' tail hashes decide.
MAX_ENDED = 100_000


class FileSet:
    """Tracked files by inode (being read) and by identity (anything an ack may name)."""

    def __init__(self, options: TailOptions, opener: Opener, emit: Emit) -> None:
        self.opt = options
        self.opener = opener
        self.emit = emit
        self.active: dict[DevIno, Tracked] = {}
        self.by_identity: dict[FileIdentity, Tracked] = {}
        self.retired: list[Tracked] = []  # done, waiting for acks
        # Rewritten files keep their descriptor until the inode's next content has a byte, so
        # that content is read even if no globbed path leads to it any more:
        # inode -> (previous generation, descriptor, since, still globbed)
        self.waiting: dict[DevIno, tuple[Tracked, int, float, bool]] = {}
        # previous generation of inodes whose next content discovery will open by path
        self.predecessors: dict[DevIno, Tracked] = {}
        # The last identity of every inode whose file we finished (deleted, moved away,
        # rewritten): a new file on a reused inode number is a new generation of it, whatever
        # its first bytes, so it never gets a key whose committed offset would drop its lines.
        self.ended: dict[DevIno, FileIdentity] = {}
        # Active files that may hold a descriptor: where make_room looks for one to close, so
        # that its cost follows max_open_files, not the number of files (10,000 and more).
        self.holding: dict[DevIno, Tracked] = {}
        self.open_count = 0
        self.denied: set[str] = set()
        self._cap_reported = False

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self.active.values()))

    def add(self, t: Tracked) -> None:
        """Start tracking ``t`` (its descriptor, if any, came from :meth:`open_path`)."""
        self.active[t.devino] = t
        self.by_identity[t.ref.identity] = t
        if t.fd is not None:
            self.holding[t.devino] = t

    def retire(self, t: Tracked) -> None:
        """Nothing more will be read from ``t``; forget it once acks cover what it emitted."""
        t.done = True
        if self.active.get(t.devino) is t:
            del self.active[t.devino]
        self.ended.pop(t.devino, None)  # re-inserted last: the oldest entries go first
        self.ended[t.devino] = t.ref.identity
        if len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]
        self.close(t)
        self.retired.append(t)
        self.forget_acked()

    def ack(self, identity: FileIdentity, offset: int) -> None:
        t = self.by_identity.get(identity)
        if t is not None and offset > t.acked:
            t.acked = offset
            if t.done:
                self.forget_acked()

    def forget_acked(self) -> None:
        keep = []
        for t in self.retired:
            if t.acked >= t.emitted:
                if self.by_identity.get(t.ref.identity) is t:
                    del self.by_identity[t.ref.identity]
            else:
                keep.append(t)
        self.retired = keep

    # ---- descriptors ------------------------------------------------------------------------
    def await_next_generation(self, t: Tracked, now: float) -> None:
        """Keep ``t``'s descriptor for the inode's next content (``t`` itself is finished)."""
        assert t.fd is not None
        self.waiting[t.devino] = (t, t.fd, now, t.path is not None)
        t.fd = None

    def drop_waiting(self, devino: DevIno) -> None:
        """Close a kept descriptor; if a globbed path still leads to the inode, discovery will
        open its next content by path, knowing its predecessor."""
        pred, fd, _, globbed = self.waiting.pop(devino)
        if globbed:
            self.predecessors[devino] = pred
        self._drop_fd(fd)

    def close(self, t: Tracked) -> None:
        if t.close():
            self.open_count -= 1

    def open_path(self, path: str, source: str) -> tuple[int, os.stat_result] | None:
        """Open a file for reading within the budget; report permission problems once."""
        if not self.make_room():
            return None
        try:
            fd, st = open_regular(self.opener, path)
        except LinkRefused:
            return None  # reported by the scan that lists it (file.link_refused)
        except PermissionError as exc:
            if path not in self.denied:
                self.denied.add(path)
                self.emit("file.permission_denied", {"path": path, "source": source, "error": str(exc)})
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # vanished between scan and open
                self.emit("file.open_failed", {"path": path, "source": source, "error": str(exc)})
            return None
        if path in self.denied:
            self.denied.discard(path)
            self.emit("file.permission_restored", {"path": path, "source": source})
        self.open_count += 1
        return fd, st

    def reopen(self, t: Tracked) -> bool | None:
        """Reopen a closed file by its path: ``True`` if it is the same file, ``False`` if the
        path holds the same inode with other content (rewritten), ``None`` if not possible now."""
        if t.path is None:
            return None
        opened = self.open_path(t.path, t.ref.source)
        if opened is None:
            return None
        fd, st = opened
        if (st.st_dev, st.st_ino) != t.devino:
            self._drop_fd(fd)
            return None
        t.fd = fd
        self.holding[t.devino] = t
        try:
            same = matches(t.ref.identity, read_head(fd))
        except OSError:
            same = False
        return same

    def give_back(self, fd: int) -> None:
        """Close a descriptor obtained from :meth:`open_path` that no file kept."""
        self._drop_fd(fd)

    def make_room(self) -> bool:
        """Ensure one more descriptor fits, closing the least useful reopenable file if needed."""
        if self.open_count < self.opt.max_open_files:
            self._cap_reported = False
            return True
        globbed = [d for d, w in self.waiting.items() if w[3]]
        if globbed:
            self.drop_waiting(globbed[0])
            return True
        if len(self.holding) > 2 * self.opt.max_open_files:  # forget the closed ones now and then
            self.holding = {d: t for d, t in self.holding.items() if t.fd is not None and self.active.get(d) is t}
        victims = [t for d, t in self.holding.items()
                   if t.fd is not None and self.active.get(d) is t and _reopenable(t)]
        if not victims:
            if not self._cap_reported:
                self._cap_reported = True
                self.emit("files.open_cap_reached", {"max_open_files": self.opt.max_open_files})
            return False
        # Close an eighth of the budget at once (fully read, least recently used first): the
        # next opens then find room without another pass over the open files.
        for victim in heapq.nsmallest(max(1, self.opt.max_open_files // 8), victims,
                                      key=lambda t: (t.pos < t.size, t.last_used)):
            self.close(victim)
        return True

    def close_idle(self, now: float) -> None:
        """Close fully read, reopenable files nobody wrote to for ``idle_close_s``."""
        for t in self.active.values():
            if t.fd is not None and _reopenable(t) and t.pos >= t.size and \
                    now - t.last_used >= self.opt.idle_close_s:
                self.close(t)

    def close_all(self) -> None:
        for t in list(self.active.values()) + self.retired:
            self.close(t)
        for devino in list(self.waiting):
            self.drop_waiting(devino)

    def _drop_fd(self, fd: int) -> None:
        close_quietly(fd)
        self.open_count -= 1


def _reopenable(t: Tracked) -> bool:
    """A globbed path still leads to it, and no held-back line depends on it being rotated."""
    return not t.gone and t.path is not None and not (t.rotated and t.split.has_partial)
