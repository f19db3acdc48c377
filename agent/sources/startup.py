"""At startup: checkpointed content that left the globs while the agent was down.

After the first scan has matched the globbed files to their checkpoints, a checkpoint nobody
claimed names content no globbed path leads to any more. Two cases are recovered, looking only in
the folder of the checkpoint's path (where rotations land), and drained from the checkpoint
offset like a file rotated away while we held it:

* **moved**: its inode is there under a name outside the globs (rename rotation) with the same
  fingerprint and more bytes than the checkpoint covers;
* **copied**: its inode no longer holds the checkpointed content - it holds other content (a
  copytruncate happened, then maybe a rename), or it is gone (deleted) - and a file no checkpoint
  of its own describes has the same fingerprint and the checkpointed tail hash at the offset.

Where the checkpoint's inode is now never decides whether its copy is looked for: once the
original is deleted, its inode number may be reused by any new file (the next ``app.log``, a
rotated name), and what we read must not depend on that.

Both are reported as ``rotation.out_of_globs`` with the bytes left to read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from agent.model import Checkpoint, FileIdentity
from agent.sources.discovery import DevIno, Found, Globs, siblings
from agent.sources.files import Emit, FileSet
from agent.sources.handles import open_regular, read_head
from agent.sources.identity import matches
from agent.sources.matching import Matcher

MAX_CANDIDATES = 64


class Recovery:
    """Drains checkpointed content found next to the globs after a restart."""

    def __init__(self, globs: Globs, files: FileSet, matcher: Matcher, emit: Emit) -> None:
        self.globs = globs
        self.files = files
        self.matcher = matcher
        self.emit = emit

    def run(self, found: dict[DevIno, Found], now: float) -> None:
        for folder, cps in _by_folder(self.matcher.unclaimed.values()).items():
            listing = [(p, st) for p, st in siblings(os.path.join(folder, "."), self.globs.compressed)
                       if (st.st_dev, st.st_ino) not in found and (st.st_dev, st.st_ino) not in self.files.active]
            by_inode = {(st.st_dev, st.st_ino): (p, st) for p, st in listing}
            strangers = sorted(listing, key=lambda e: -e[1].st_mtime_ns)[:MAX_CANDIDATES]
            heads: dict[str, bytes] = {}
            # Only checkpoints some file here could continue are looked at: a folder of many
            # long-gone files' checkpoints costs one fingerprint lookup per file, not per pair.
            of: dict[str, set[FileIdentity]] = {
                e[0]: {c.identity for c in self.matcher.matching(self._head(heads, e[0]))} for e in strangers}
            mine = {c.identity for c in cps}
            hits = set().union(*of.values()) & mine if of else set()
            todo = [c for c in cps if c.identity in hits or (c.identity.dev, c.identity.ino) in by_inode]
            for cp in sorted(todo, key=lambda c: c.identity.fingerprint_len):
                inode = (cp.identity.dev, cp.identity.ino)
                if cp.identity not in self.matcher.unclaimed:
                    continue
                if inode in by_inode and self._drain(by_inode[inode], cp, now, copy=False):
                    continue
                # Not moved: whether the inode now holds other content, is gone, or its number was
                # reused by a new file, a copy of the checkpointed content may hold the rest.
                for entry in strangers:
                    if entry[1].st_size > cp.offset and cp.identity in of[entry[0]] \
                            and self._drain(entry, cp, now, copy=True):
                        break

    def _head(self, cache: dict[str, bytes], path: str) -> bytes:
        """The first bytes of ``path``, read once per folder through a short-lived descriptor."""
        head = cache.get(path)
        if head is None:
            try:
                fd, _ = open_regular(self.files.opener, path)
            except OSError:
                head = b""
            else:
                try:
                    head = read_head(fd)
                except OSError:
                    head = b""
                finally:
                    os.close(fd)
            cache[path] = head
        return head

    def _drain(self, entry: tuple[str, os.stat_result], cp: Checkpoint, now: float, copy: bool) -> bool:
        path, st = entry
        if st.st_size <= cp.offset or (st.st_dev, st.st_ino) in self.files.active:
            return False
        opened = self.files.open_path(path, cp.source)
        if opened is None:
            return False
        fd, st = opened
        f = Found(cp.source, (path,), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        head = read_head(fd)
        m = self.matcher
        if copy and any(matches(c.identity, head) for c in m.by_inode.get(f.devino, ())):
            t = None  # it has a checkpoint of its own: not a copy nobody read
        else:
            t = m.adopt_exact(f, fd, head, cp, now) if copy else m.resume_exact(f, fd, head, cp, now)
        if t is None:
            self.files.give_back(fd)
            return False
        t.gone = t.rotated = True
        t.path = None
        self.files.add(t)
        self.emit("rotation.out_of_globs", {"path": cp.path, "new_path": path, "key": cp.identity.key,
                                            "unread_bytes": st.st_size - cp.offset, "draining": True})
        return True


def _by_folder(cps: Iterable[Checkpoint]) -> dict[str, list[Checkpoint]]:
    out: dict[str, list[Checkpoint]] = {}
    for cp in cps:
        out.setdefault(os.path.dirname(cp.path), []).append(cp)
    return out

