"""The tailing engine as the runner sees it: committed checkpoints in, blocks of complete lines out.

:meth:`Tailer.poll_once` is one synchronous scan + read step (tests drive it directly);
:meth:`Tailer.batches` loops it under asyncio, sleeping until a filesystem event, the read
interval or the next rescan. The step runs on the event loop thread: it reads local files from
the page cache in bounded chunks, which is faster than handing each step to a thread.

Reading runs ahead of acknowledgements; acks only tell the engine what it may release (finished
rotated files) and feed the status. The engine never writes checkpoints: the sink does, in the
same transaction as the rows, with the tail hash each block carries (see :mod:`.reader`).

Events reported through ``on_event(name, fields)`` (all carry ``path``; most carry ``key``):
``file.permission_denied`` / ``file.permission_restored`` (retried every rescan),
``file.open_failed``, ``files.open_cap_reached``, ``file.rewritten`` (read again from 0; ``copy``
names a copytruncate copy), ``rotation.copytruncate``, ``rotation.copy_adopted``,
``rotation.out_of_globs`` / ``file.deleted`` (unread bytes, drained through the open handle),
``rotation.unread_outside_globs`` (bytes that could not be read: lost, with the count),
``line.partial_released`` (an unterminated tail released after the grace period),
``file.read_failed`` (an I/O error; retried on the next step), ``file.link_refused`` (a
symbolic link the ``follow_symlinks`` policy forbids: its path and target, once while it stays),
``watch.failed`` (events off until the next rescan restarts the watcher; polling continues
meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from watchfiles import Change

from agent.model import Block, Checkpoint, FileRef
from agent.sources.discovery import Globs
from agent.sources.files import FileSet
from agent.sources.handles import Opener, default_open
from agent.sources.links import LinkPolicy
from agent.sources.options import FileStatus, SourceSpec, TailOptions
from agent.sources.scanner import Scanner
from agent.sources.watch import Watcher

OnEvent = Callable[[str, dict[str, Any]], None]


class Tailer:
    """Discovers, identifies and reads the files of ``sources`` through rotation and restarts.

    ``opener`` (a path -> descriptor function) and ``clock`` (monotonic seconds) are injectable
    for tests: permission errors and the rotation grace period are simulated through them.
    """

    def __init__(self, sources: Sequence[SourceSpec], checkpoints: Iterable[Checkpoint],
                 options: TailOptions | None = None, on_event: OnEvent | None = None, *,
                 opener: Opener = default_open, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or TailOptions()
        self._on_event = on_event
        self._clock = clock
        globs = Globs(sources, self.options.compressed_suffixes)
        globs.policy = policy = LinkPolicy(self.options.follow_symlinks, globs.roots())
        # Every open of a path goes through the link policy: the scan, reopen, copies, peeks.
        self._opener = functools.partial(policy.open, opener)
        self._files = FileSet(self.options, self._opener, self._emit)
        self._scanner = Scanner(sources, checkpoints, self.options, self._files, self._emit, globs)
        self._paused = False
        self._stopped = False
        self._rescan_due = 0.0
        self._need_rescan = True
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the synchronous step -------------------------------------------------------------
    def poll_once(self) -> list[Block]:
        """Rescan, read everything that grew (within the byte budget), settle rotations."""
        return self._step(rescan=True)

    def _step(self, rescan: bool) -> list[Block]:
        if self._stopped or self._paused:
            return []
        now = self._clock()
        scanner = self._scanner
        scanner.backlog = False
        out: list[Block] = []
        for _ in range(3):  # a rewrite seen while reading is rescanned at once
            if rescan:
                out += scanner.rescan(now)
                self._rescan_due, self._need_rescan = now + self.options.rescan_interval_s, False
            lines, rewritten = scanner.read_all(now)
            out += lines
            if not rewritten:
                break
            rescan = True
        out += scanner.settle(now)
        self._files.close_idle(now)
        return out

    # ---- the asynchronous loop ------------------------------------------------------------
    async def batches(self) -> AsyncIterator[list[Block]]:
        """Yield non-empty lists of Blocks (file order within each file) until stop()."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        watcher = Watcher(self.options.debounce_ms, self._on_changes, self._emit) if self.options.use_events else None
        try:
            while not self._stopped:
                if self._paused:
                    await self._sleep(None)
                    continue
                rescan = self._need_rescan or self._clock() >= self._rescan_due
                lines = self._step(rescan)
                if watcher is not None and rescan:
                    await watcher.update(self._scanner.globs.watch_roots())
                if lines:
                    yield lines
                    await asyncio.sleep(0)  # a busy file must not starve the other tasks
                elif self._scanner.backlog:
                    await asyncio.sleep(0)
                else:
                    await self._sleep(self._next_wait())
        finally:
            if watcher is not None:
                await watcher.close()

    def _next_wait(self) -> float:
        until_rescan = max(self._rescan_due - self._clock(), 0.0)
        return min(self.options.read_interval_s, until_rescan)

    async def _sleep(self, seconds: float | None) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _on_changes(self, changes: set[tuple[Change, str]]) -> None:
        """A filesystem event: appends to open files need only a read, anything else a rescan."""
        reading = {t.path for t in self._files if t.fd is not None}
        if any(c != Change.modified or p not in reading for c, p in changes):
            self._need_rescan = True
        self._poke()

    def _poke(self) -> None:
        if self._wake is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    # ---- control --------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop reading (the caller's memory budget is full); the files are the buffer."""
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._poke()

    def stop(self) -> None:
        """End :meth:`batches` after the current step and close every descriptor."""
        self._stopped = True
        self._poke()
        self._files.close_all()

    # ---- acknowledgements and status ------------------------------------------------------
    def ack(self, file: FileRef, offset: int) -> None:
        """The sink committed ``file`` up to ``offset``; finished files covered by it are released."""
        self._files.ack(file.identity, offset)

    def files(self) -> list[FileStatus]:
        """Every tracked file: size, read and acknowledged offsets (``size - acked`` = behind)."""
        tracked = list(self._files) + list(self._files.retired)
        return [FileStatus(t.ref, t.path, t.size, t.pos, t.acked, t.fd is not None, t.rotated) for t in tracked]

    def gone_checkpoints(self) -> list[str] | None:
        """Keys of the checkpoints nothing continued at the first scan (their files are gone),
        or ``None`` before that scan."""
        if not self._scanner.scanned:
            return None
        return [cp.identity.key for cp in self._scanner.matcher.unclaimed.values()]

    def refused(self) -> list[tuple[str, str, str, str]]:
        """Paths the link policy refused at the last scan: (source, link, target, reason)."""
        return [(src, path, exc.target, exc.reason) for path, (src, exc) in self._scanner.globs.refused.items()]

    def idle(self) -> bool:
        """Every tracked file is read to its end (a held-back partial line does not count)."""
        return self._scanner.idle()

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        with contextlib.suppress(Exception):  # a broken logger must not stop the tailing
            self._on_event(name, fields)
