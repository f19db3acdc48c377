"""What happens to a tracked file when its path stops leading to it, or its bytes change.

* **Moved out of the globs / deleted** with the descriptor open: drained through it, then (quiet
  for ``rotate_grace_s``) its unterminated tail is released and it is retired. Reported with
  the unread byte count when there was something left to read.
* **Moved out while closed** (idle or over the descriptor cap): looked for by inode in its old
  folder and drained from there; if it cannot be found, its unread bytes are reported as lost
  (``rotation.unread_outside_globs``) - never silent.
* **Rewritten in place** (shrunk below the read offset, or different bytes before it): this
  generation is finished. A copytruncate copy is looked for among the globbed files nobody reads
  and then in the file's folder (same head; the bytes before our offset must match too); when
  found, reading continues in the copy exactly where it stopped, partial line included. When not,
  the held-back partial line is released and any unread bytes are reported as lost. The inode's
  new content is then read from offset 0 as a new generation with its own identity key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.model import Block, FileIdentity, FileRef
from agent.sources.discovery import Found, Globs, siblings
from agent.sources.files import Emit, FileSet
from agent.sources.handles import current_path, read_before, read_head
from agent.sources.identity import identify, same_head
from agent.sources.matching import Matcher
from agent.sources.reader import LineSplitter
from agent.sources.tracked import DevIno, Tracked

MAX_COPY_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Copy:
    """An open candidate copy of a rewritten file; ``full`` = it holds every byte we read."""

    path: str
    fd: int
    st: os.stat_result
    in_globs: bool
    full: bool


class Rotation:
    """Rotation, truncation and removal handling for the tracked files."""

    def __init__(self, globs: Globs, files: FileSet, matcher: Matcher, emit: Emit, grace_s: float) -> None:
        self.globs = globs
        self.files = files
        self.matcher = matcher
        self.emit = emit
        self.grace_s = grace_s

    def vanished(self, t: Tracked, found: dict[DevIno, Found], now: float) -> list[Block]:
        """No globbed path leads to ``t`` any more: drain it through a descriptor if we can."""
        if t.fd is None and not self._find_moved(t):
            return self._lost(t)
        assert t.fd is not None
        st = os.fstat(t.fd)
        if st.st_size < t.pos or not t.unchanged():
            t.gone = t.rotated = True
            t.path = None
            return self.replace(t, "rewritten outside the globs", found, now)
        if not t.gone:
            t.gone = t.rotated = True
            t.path, t.size = None, st.st_size
            if t.unread or t.split.has_partial:
                name = "file.deleted" if st.st_nlink == 0 else "rotation.out_of_globs"
                self.emit(name, {"path": t.ref.path, "new_path": current_path(t.fd), "key": t.ref.identity.key,
                                 "unread_bytes": t.unread, "draining": True})
        return []

    def settle(self, now: float) -> list[Block]:
        """Release the held-back tails of rotated files quiet for the grace period."""
        out: list[Block] = []
        for t in self.files:
            if not t.rotated or t.fd is None or t.pos < t.size or now - t.last_growth < self.grace_s:
                continue
            line = t.release()
            if line is not None:
                out.append(line)
                self.emit("line.partial_released", {"path": t.ref.path, "key": t.ref.identity.key,
                                                    "start": line.start, "end": line.end})
            if t.gone:
                self.files.retire(t)
        return out

    def replace(self, t: Tracked, reason: str, found: dict[DevIno, Found] | None, now: float) -> list[Block]:
        """``t`` was rewritten in place: continue in its copy if there is one, then retire it."""
        out: list[Block] = []
        copy = self._find_copy(t, self.globs.scan() if found is None else found)
        if copy is not None:
            out += self._continue_in(t, copy, now)
        else:
            line = t.release()
            out += [line] if line is not None else []
            if t.unread:
                self.emit("rotation.unread_outside_globs", {"path": t.ref.path, "key": t.ref.identity.key,
                                                           "unread_bytes": t.unread, "reason": reason})
        self.emit("file.rewritten", {"path": t.ref.path, "key": t.ref.identity.key, "offset": t.pos,
                                     "reason": reason, "copy": copy.path if copy else None})
        t.replaced = True
        if t.fd is not None:
            self.files.await_next_generation(t, now)  # the inode's next content, same descriptor
        else:
            self.files.predecessors[t.devino] = t
        self.files.retire(t)
        return out

    def next_generations(self, found: dict[DevIno, Found], now: float) -> None:
        """Identify the new content of rewritten files, through the descriptor we kept: that
        also covers files only that descriptor still leads to (deleted, moved away)."""
        for devino, (pred, fd, since, _) in list(self.files.waiting.items()):
            f = found.get(devino)
            self.files.waiting[devino] = (pred, fd, since, f is not None)
            size = os.fstat(fd).st_size
            if size == 0:
                if f is None and now - since >= self.grace_s:
                    self.files.drop_waiting(devino)
                continue
            head = read_head(fd)
            gone = f is None
            if f is None:
                f = Found(pred.ref.source, (pred.ref.path,), devino[0], devino[1], size, 0)
            t = self.matcher.track(f, fd, head, identify(f.dev, f.ino, head, pred.ref.identity), 0, pred.ref, now)
            if gone:
                t.path, t.gone, t.rotated = None, True, True
            del self.files.waiting[devino]
            self.files.add(t)

    def _continue_in(self, t: Tracked, copy: Copy, now: float) -> list[Block]:
        st = copy.st
        ident = FileIdentity(st.st_dev, st.st_ino, t.ref.identity.fingerprint, t.ref.identity.fingerprint_len)
        ref = FileRef(t.ref.source, t.ref.path, ident)
        out: list[Block] = []
        if copy.full:
            split = t.split.moved_to(ref)
        else:  # we read bytes the copy never got (written between copy and truncate)
            line = t.release()
            out += [line] if line is not None else []
            split = LineSplitter(ref, st.st_size, t.split.max_line, t.split.prefix,
                                 read_before(copy.fd, st.st_size), t.split.block_lines)
        c = Tracked(ref, (st.st_dev, st.st_ino), copy.path if copy.in_globs else None, copy.fd,
                    split, t.head, now)
        c.size, c.rotated, c.gone = st.st_size, True, not copy.in_globs
        self.files.add(c)
        self.matcher.deferred.pop(c.devino, None)
        t.tail_source = c
        self.emit("rotation.copytruncate", {"path": t.ref.path, "copy": copy.path, "offset": split.pos,
                                            "in_globs": copy.in_globs})
        return out

    def _find_copy(self, t: Tracked, found: dict[DevIno, Found]) -> Copy | None:
        best: Copy | None = None
        for path, source, in_globs in self._candidates(t, found):
            opened = self.files.open_path(path, source)
            if opened is None:
                continue
            copy = _probe(t, path, opened, in_globs)
            if copy is None or (best is not None and _rank(best) >= _rank(copy)):
                self.files.give_back(opened[0])
                continue
            if best is not None:
                self.files.give_back(best.fd)
            best = copy
        return best

    def _candidates(self, t: Tracked, found: dict[DevIno, Found]) -> list[tuple[str, str, bool]]:
        taken = set(self.files.active) | set(self.files.waiting) | {t.devino}
        out = [(f.path, f.source, True) for d, f in found.items() if d not in taken and f.size > 0]
        near = [(st.st_mtime_ns, p) for p, st in siblings(t.path or t.ref.path, self.globs.compressed)
                if (st.st_dev, st.st_ino) not in taken and (st.st_dev, st.st_ino) not in found and st.st_size > 0]
        out += [(p, t.ref.source, False) for _, p in sorted(near, reverse=True)]
        return out[:MAX_COPY_CANDIDATES]

    def _find_moved(self, t: Tracked) -> bool:
        """Reopen a closed file that left the globs, found by inode next to its old path."""
        for path, st in siblings(t.path or t.ref.path, self.globs.compressed):
            if (st.st_dev, st.st_ino) == t.devino:
                t.path = path
                return self.files.reopen(t) is True
        return False

    def _lost(self, t: Tracked) -> list[Block]:
        line = t.release()
        if t.unread or line is not None:
            self.emit("rotation.unread_outside_globs", {"path": t.ref.path, "key": t.ref.identity.key,
                                                       "unread_bytes": t.unread, "reason": "not found"})
        t.gone = t.rotated = True
        t.path = None
        self.files.close(t)
        self.files.retire(t)
        return [line] if line is not None else []


def _probe(t: Tracked, path: str, opened: tuple[int, os.stat_result], in_globs: bool) -> Copy | None:
    fd, st = opened
    if not same_head(t.head, read_head(fd)):
        return None
    full = st.st_size >= t.pos and read_before(fd, t.pos) == t.tail
    if not full and st.st_size >= t.pos:
        return None  # same head, different bytes where we stopped: not a copy of what we read
    return Copy(path, fd, st, in_globs, full)


def _rank(c: Copy) -> tuple[bool, bool, int]:
    return (c.full, c.in_globs, c.st.st_mtime_ns)
