"""One synchronous step of the engine: rescan the globs, read what grew, settle rotations.

The rescan is the source of truth (events only make it come sooner). For every tracked inode it
decides: still here (maybe renamed, maybe rewritten), or gone from the globs. Inodes seen for the
first time are handed to :class:`~agent.sources.matching.Matcher`. The read pass then reads
every open file that grew, round-robin within a byte budget so one busy file cannot starve the
rest, and reopens closed files whose stat changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.model import Block, Checkpoint
from agent.sources.discovery import DevIno, Found, Globs
from agent.sources.files import Emit, FileSet
from agent.sources.handles import read_head
from agent.sources.matching import Matcher
from agent.sources.options import SourceSpec, TailOptions
from agent.sources.rotation import Rotation
from agent.sources.startup import Recovery
from agent.sources.tracked import Tracked


class Scanner:
    """Discovery, identification, reading and rotation, over one :class:`FileSet`."""

    def __init__(self, specs: Sequence[SourceSpec], checkpoints: Iterable[Checkpoint],
                 options: TailOptions, files: FileSet, emit: Emit, globs: Globs | None = None) -> None:
        self.opt = options
        self.files = files
        self.emit = emit
        self.globs = globs or Globs(specs, options.compressed_suffixes)
        self.reported_links: set[tuple[str, str]] = set()
        self.matcher = Matcher(specs, checkpoints, options, files, emit)
        self.rotation = Rotation(self.globs, files, self.matcher, emit, options.rotate_grace_s)
        self.recovery = Recovery(self.globs, files, self.matcher, emit)
        self.found: dict[DevIno, Found] = {}
        self.backlog = False
        self.scanned = False
        self._turn = 0

    def rescan(self, now: float) -> list[Block]:
        """Match the globs against what we track; pick up new inodes."""
        found = self.globs.scan()
        self.found = found
        self._report_refused()
        out: list[Block] = []
        for t in self.files:
            f = found.get(t.devino)
            out += self._seen(t, f, found, now) if f is not None else self.rotation.vanished(t, found, now)
        self.rotation.next_generations(found, now)
        fresh = [f for d, f in found.items() if d not in self.files.active and d not in self.files.waiting]
        fresh.sort(key=lambda f: f.devino not in self.matcher.by_inode)  # checkpointed inodes first
        if fresh:
            self.matcher.index_heads()
        for f in fresh:
            self._discover(f, now)
        if self.matcher.first_scan:
            self.recovery.run(found, now)
        self.matcher.prune(found)
        self.matcher.first_scan = False
        self.scanned = True
        return out

    def _report_refused(self) -> None:
        """One event per refused (link, target) while it stays; never what it points to."""
        now = {(path, exc.target) for path, (_, exc) in self.globs.refused.items()}
        for path, (source, exc) in self.globs.refused.items():
            if (path, exc.target) not in self.reported_links:
                self.emit("file.link_refused", {"path": path, "target": exc.target, "source": source,
                                                "reason": exc.reason, "policy": self.globs.policy.mode})
        self.reported_links = now

    def _seen(self, t: Tracked, f: Found, found: dict[DevIno, Found], now: float) -> list[Block]:
        home = t.ref.path
        t.gone = False
        t.path = home if home in f.paths else f.path
        if home not in f.paths and not t.rotated:
            t.rotated = True
        if f.size < t.pos:
            return self.rotation.replace(t, "shrunk below the read offset", found, now)
        if t.fd is None:
            t.stale = t.stale or (f.size, f.mtime_ns) != (t.size, t.mtime_ns)
            t.size = f.size
        elif not t.unchanged():
            return self.rotation.replace(t, "bytes before the read offset changed", found, now)
        return []

    def _discover(self, f: Found, now: float) -> None:
        if f.size == 0:
            return  # no identity before the first byte
        if not self.files.make_room():
            self.backlog = True  # over the descriptor cap: a later step gets to it
            return
        opened = self.files.open_path(f.path, f.source)
        if opened is None:
            return  # reported by open_path (permission...), retried at the next rescan
        fd, st = opened
        try:
            head = read_head(fd) if (st.st_dev, st.st_ino) == f.devino else b""
            t = self.matcher.identify(f, fd, head, now) if head else None
        except OSError as exc:
            self.emit("file.read_failed", {"path": f.path, "error": str(exc)})
            t = None
        if t is None:
            self.files.give_back(fd)
            self.backlog = self.backlog or f.devino in self.matcher.deferred
            return
        self.files.add(t)
        self.matcher.note_head(t)

    def read_all(self, now: float) -> tuple[list[Block], bool]:
        """Read every file that may have grown; return the lines and whether any file turned
        out rewritten (the caller rescans at once so the new generation is read too)."""
        out: list[Block] = []
        rewritten = False
        budget = self.opt.max_read_per_poll
        for t in self._round_robin():
            if budget <= 0:
                self.backlog = True
                break
            before = t.pos
            try:
                state = self._read_one(t, min(budget, self.opt.max_read_per_file), now, out)
            except OSError as exc:  # an I/O error on one file must not stop the others
                self.emit("file.read_failed", {"path": t.path or t.ref.path, "key": t.ref.identity.key,
                                               "error": str(exc)})
                continue
            budget -= t.pos - before
            if state == "rewritten":
                out += self.rotation.replace(t, "rewritten in place", None, now)
                rewritten = True
        return out, rewritten

    def _read_one(self, t: Tracked, budget: int, now: float, out: list[Block]) -> str:
        state = self._reopen(t, now) if t.fd is None else "open"
        if state != "open":
            return state
        lines, changed = t.read(budget, self.opt.read_chunk, now)
        out += lines
        self.backlog = self.backlog or t.pos < t.size
        return "rewritten" if changed else "open"

    def _reopen(self, t: Tracked, now: float) -> str:
        """Reopen a closed file that stat says changed: ``open``, ``skip`` or ``rewritten``."""
        if not (t.stale or t.size > t.pos):
            return "skip"
        same = self.files.reopen(t)
        if same is None:
            self.backlog = self.backlog or t.size > t.pos
            return "skip"
        t.stale, t.last_used = False, now
        return "open" if same and t.unchanged() else "rewritten"

    def _round_robin(self) -> list[Tracked]:
        files = list(self.files)
        if not files:
            return files
        self._turn = (self._turn + 1) % len(files)
        return files[self._turn :] + files[: self._turn]

    def settle(self, now: float) -> list[Block]:
        return self.rotation.settle(now)

    def idle(self) -> bool:
        """Everything known to exist is read (a held-back partial line does not count)."""
        if not self.scanned or self.backlog or self.matcher.deferred:
            return False
        return all(t.pos >= t.size for t in self.files)
