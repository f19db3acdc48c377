"""Naming a newly seen inode: which checkpoint, generation or copy it continues, if any.

Order of the questions asked about a file seen for the first time (it has >= 1 byte):

1. Is it the next generation of an inode we just saw rewritten? Read it from 0, new identity.
2. Does a checkpoint with its (dev, ino) match its fingerprint (newest generation first)? Resume
   at the checkpoint offset, unless the file is now shorter or the tail hash differs: then it was
   rewritten in place while we were away, and it is read from 0 as a new generation.
3. Does its head equal the head of a live file we are reading? Then it is probably a
   copytruncate copy caught between the copy and the truncate: wait (up to ``rotate_grace_s``
   without growth) for the original to be truncated, which hands the copy its reading state.
4. Does an unclaimed checkpoint of another inode match its fingerprint and the tail hash at its
   offset? Then it is a copy made while we were away (copytruncate, cross-device move):
   continue from that offset under its own (dev, ino).
5. Is it on the inode number of a file we saw end (deleted, moved away, rewritten)? Then it is
   a new file, read from 0 as the next generation of that inode: its key must differ even when
   its first bytes are the same (a banner, a config dump), or the sink would drop its lines
   below the old file's committed offset.
6. Otherwise it is new: read from 0, or from the end for ``start_at = "end"`` on the first scan
   when no checkpoint knows its (dev, ino).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from agent.model import Checkpoint, FileIdentity, FileRef
from agent.sources.discovery import Found
from agent.sources.files import Emit, FileSet
from agent.sources.handles import last_line_start, read_before
from agent.sources.identity import identify, matches, newest_match, same_head, tail_ok
from agent.sources.options import SourceSpec, TailOptions
from agent.sources.reader import LineSplitter
from agent.sources.tracked import DevIno, Tracked

# Bytes of a file's head that index the live files: JSON log lines all start alike
# ('{"event":"span",...'), so the key must reach into the first line's timestamp or ids.
HEAD_KEY = 256


class Matcher:
    """Decides where reading starts for inodes seen for the first time."""

    def __init__(self, specs: Iterable[SourceSpec], checkpoints: Iterable[Checkpoint],
                 options: TailOptions, files: FileSet, emit: Emit) -> None:
        self.opt = options
        self.files = files
        self.emit = emit
        self.start_at = {s.name: s.start_at for s in specs}
        self.unclaimed: dict[FileIdentity, Checkpoint] = {}
        self.by_inode: dict[DevIno, list[Checkpoint]] = {}
        # by (fingerprint_len, fingerprint): finding the checkpoints a head matches costs one hash
        # per distinct window length, not one per checkpoint (100,000 old rows stay cheap)
        self.by_print: dict[tuple[int, str], list[Checkpoint]] = {}
        for cp in checkpoints:
            self.unclaimed[cp.identity] = cp
            self.by_inode.setdefault((cp.identity.dev, cp.identity.ino), []).append(cp)
            self.by_print.setdefault((cp.identity.fingerprint_len, cp.identity.fingerprint), []).append(cp)
        self.lengths = sorted({n for n, _ in self.by_print})
        self.deferred: dict[DevIno, tuple[float, int]] = {}
        self.heads: dict[bytes, list[Tracked]] = {}
        self.short_heads: list[Tracked] = []
        self.first_scan = True

    def identify(self, f: Found, fd: int, head: bytes, now: float) -> Tracked | None:
        """A Tracked for the new inode ``f`` (open as ``fd``), or ``None`` to look again later."""
        pred = self.files.predecessors.pop(f.devino, None)
        if pred is not None:
            ident = identify(f.dev, f.ino, head, pred.ref.identity)
            return self.track(f, fd, head, ident, 0, pred.ref, now)
        cp = newest_match(self._open_checkpoints(f.devino), head)
        if cp is not None:
            return self._resume(f, fd, head, cp, now)
        if self._defer(f, head, now):
            return None
        for cp in self._adoptable(f, head):
            t = self.adopt_exact(f, fd, head, cp, now)
            if t is not None:
                return t
        ended = self.files.ended.pop(f.devino, None)
        if ended is not None:  # a new file on the inode number of one we saw end
            return self.track(f, fd, head, identify(f.dev, f.ino, head, ended), 0, None, now)
        ident = identify(f.dev, f.ino, head)
        return self.track(f, fd, head, ident, self._start(f, fd), None, now)

    def track(self, f: Found, fd: int, head: bytes, ident: FileIdentity, pos: int,
              label: FileRef | Checkpoint | None, now: float) -> Tracked:
        """Build the Tracked for ``f``; ``label`` (a predecessor or checkpoint) names its home."""
        home = label.path if label is not None else f.path
        ref = FileRef(f.source, home, ident)
        split = LineSplitter(ref, pos, self.opt.max_line_bytes, self.opt.oversize_prefix_bytes,
                             read_before(fd, pos), self.opt.block_lines)
        t = Tracked(ref, f.devino, f.path, fd, split, head, now)
        t.size = f.size
        t.rotated = home not in f.paths
        return t

    def _open_checkpoints(self, devino: DevIno) -> list[Checkpoint]:
        return [c for c in self.by_inode.get(devino, ()) if c.identity in self.unclaimed]

    def _resume(self, f: Found, fd: int, head: bytes, cp: Checkpoint, now: float) -> Tracked:
        t = self.resume_exact(f, fd, head, cp, now)
        if t is not None:
            return t
        # Rewritten while we were away: a new generation, read from 0. The checkpoint stays
        # unclaimed: a copy of the old content may still turn up and continue from it.
        self.emit("file.rewritten", {"path": f.path, "key": cp.identity.key, "offset": cp.offset,
                                     "reason": "changed since its checkpoint", "copy": None})
        return self.track(f, fd, head, identify(f.dev, f.ino, head, cp.identity), 0, cp, now)

    def resume_exact(self, f: Found, fd: int, head: bytes, cp: Checkpoint, now: float) -> Tracked | None:
        """Continue ``f`` at ``cp``'s offset if its bytes there are still the checkpointed ones."""
        if not matches(cp.identity, head) or cp.offset > os.fstat(fd).st_size:
            return None
        if not tail_ok(cp.tail_hash, read_before(fd, cp.offset)):
            return None
        self.unclaimed.pop(cp.identity, None)
        t = self.track(f, fd, head, cp.identity, cp.offset, cp, now)
        t.acked = t.emitted = cp.offset
        return t

    def index_heads(self) -> None:
        """Index the live files by their first bytes, once per rescan: asking "does a live file
        start like this one?" for every new file must not cost a pass over all files."""
        self.heads, self.short_heads = {}, []
        for t in self.files:
            self.note_head(t)

    def note_head(self, t: Tracked) -> None:
        if t.rotated or t.gone or not t.head:
            return
        if len(t.head) < HEAD_KEY:
            self.short_heads.append(t)
        else:
            self.heads.setdefault(t.head[:HEAD_KEY], []).append(t)

    def _live_like(self, head: bytes) -> bool:
        if len(head) >= HEAD_KEY:
            near = self.heads.get(head[:HEAD_KEY], []) + self.short_heads
        else:
            near = [t for ts in self.heads.values() for t in ts] + self.short_heads
        return any(not t.rotated and not t.gone and same_head(t.head, head) for t in near)

    def _defer(self, f: Found, head: bytes, now: float) -> bool:
        live = self._live_like(head)
        if not live:
            self.deferred.pop(f.devino, None)
            return False
        since, size = self.deferred.get(f.devino, (now, f.size))
        if size != f.size:
            since = now
        if now - since >= self.opt.rotate_grace_s:
            self.deferred.pop(f.devino, None)
            return False
        self.deferred[f.devino] = (since, f.size)
        return True

    def matching(self, head: bytes) -> list[Checkpoint]:
        """Unclaimed checkpoints whose fingerprint matches a file starting with ``head``."""
        out: list[Checkpoint] = []
        if not self.unclaimed:
            return out
        h = hashlib.blake2b(digest_size=16)
        done = 0
        for n in self.lengths:
            if n > len(head):
                break
            h.update(head[done:n])
            done = n
            out += [c for c in self.by_print.get((n, h.copy().hexdigest()), ()) if c.identity in self.unclaimed]
        return out

    def _adoptable(self, f: Found, head: bytes) -> list[Checkpoint]:
        found = [c for c in self.matching(head) if (c.identity.dev, c.identity.ino) != f.devino]
        return sorted(found, key=lambda c: (c.identity.fingerprint_len, -c.offset))

    def adopt_exact(self, f: Found, fd: int, head: bytes, cp: Checkpoint, now: float) -> Tracked | None:
        """Continue a copy ``f`` of the checkpointed content at ``cp``'s offset, if its bytes agree."""
        if cp.offset > os.fstat(fd).st_size or not matches(cp.identity, head):
            return None
        if not tail_ok(cp.tail_hash, read_before(fd, cp.offset)):
            return None
        del self.unclaimed[cp.identity]
        ident = FileIdentity(f.dev, f.ino, cp.identity.fingerprint, cp.identity.fingerprint_len)
        self.emit("rotation.copy_adopted", {"path": f.path, "from_key": cp.identity.key, "offset": cp.offset})
        t = self.track(f, fd, head, ident, cp.offset, cp, now)
        t.acked = t.emitted = cp.offset
        return t

    def _start(self, f: Found, fd: int) -> int:
        if self.first_scan and self.start_at.get(f.source) == "end" and f.devino not in self.by_inode:
            return last_line_start(fd, os.fstat(fd).st_size, self.opt.max_line_bytes + 1)
        return 0

    def prune(self, present: Iterable[DevIno]) -> None:
        """Forget deferrals and predecessors of inodes that no longer exist in the globs."""
        keep = set(present)
        self.deferred = {d: v for d, v in self.deferred.items() if d in keep}
        self.files.predecessors = {d: t for d, t in self.files.predecessors.items() if d in keep}
