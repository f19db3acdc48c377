"""Filesystem events as wake-up calls: watchfiles on the folders the globs start from.

Events never decide anything; they only make the next scan come sooner, so lost or coalesced
events cost latency, never lines. Settings, from the watchfiles docs:

* ``debounce`` = ``debounce_ms`` (default 20): the most a burst of changes is grouped, which
  bounds the added latency while a writer appends continuously.
* ``step`` = min(5, debounce) ms: how long watchfiles waits for *more* changes after one; after
  a single write we wake within about two steps.
* ``stop_event``: an ``asyncio.Event`` (anything with ``is_set``) polled by the Rust thread every
  step; set it *before* cancelling, because cancellation waits for the thread to return.
* ``rust_timeout`` = 1000 ms so the thread re-checks regularly; ``watch_filter=None`` so no
  file name is filtered out (the default filter drops names like ``*.swp`` or ``*~``);
  ``ignore_permission_denied`` so one unreadable folder does not kill the watcher.
* Folders that do not exist yet cannot be watched; the periodic rescan finds them, and the
  watcher is restarted whenever the set of watchable folders changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from watchfiles import Change, awatch

from agent.sources.files import Emit

OnChanges = Callable[[set[tuple[Change, str]]], None]
RETRY_S = 60.0


class Watcher:
    """Runs ``awatch`` tasks for the current roots; call :meth:`update` after each rescan."""

    def __init__(self, debounce_ms: int, on_changes: OnChanges, emit: Emit) -> None:
        self.debounce_ms = debounce_ms
        self.on_changes = on_changes
        self.emit = emit
        self.roots: list[tuple[str, bool]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._failed_at = 0.0

    async def update(self, roots: list[tuple[str, bool]]) -> None:
        """(Re)start watching when the set of watchable folders changed, or a minute after a
        watcher died (inotify limits, a watched folder removed)."""
        died = any(task.done() for task in self._tasks)
        if roots == self.roots and not (died and time.monotonic() - self._failed_at >= RETRY_S):
            return
        await self.close()
        self.roots = roots
        self._stop = asyncio.Event()
        for recursive in (False, True):
            paths = [p for p, r in roots if r is recursive]
            if paths:
                self._tasks.append(asyncio.create_task(self._run(paths, recursive, self._stop)))

    async def close(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.roots = []

    async def _run(self, paths: list[str], recursive: bool, stop: asyncio.Event) -> None:
        step = max(1, min(5, self.debounce_ms))
        try:
            async for changes in awatch(
                *paths, watch_filter=None, debounce=self.debounce_ms, step=step, stop_event=stop,
                rust_timeout=1000, recursive=recursive, ignore_permission_denied=True,
            ):
                self.on_changes(changes)
        except Exception as exc:  # events are an optimisation: fall back to polling, loudly
            self._failed_at = time.monotonic()
            self.emit("watch.failed", {"paths": paths, "error": repr(exc), "retry_in_s": RETRY_S})
