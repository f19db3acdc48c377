"""The last guarantee that a stop ends the process, whatever a shutdown step hangs on."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from agent.ops.log import flush_logs

_EXIT_FLUSH_S = 1.0  # for the report to reach stdout (bounded: stdout may be a stalled pipe)

class ShutdownWatchdog:
    """The last guarantee that a stop ends the process, as a thread so a blocked loop cannot
    hold it up: if the shutdown outlives its budget, name the tasks still pending and exit 1.

    Nothing is lost by that: what was not committed is read again on the next start. It only
    fires when a shutdown step hangs, which is a bug to report, so it says where.
    """

    def __init__(self, seconds: float, log: Any) -> None:
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.timer = threading.Timer(seconds, self._fire, args=(seconds,))
        self.timer.daemon = True
        self.timer.start()

    def cancel(self) -> None:
        """The shutdown finished in time."""
        self.timer.cancel()

    def _fire(self, seconds: float) -> None:
        pending = [_where(task) for task in asyncio.all_tasks(self.loop)]
        self.log.error("agent.shutdown_stuck", after_s=seconds, pending=pending)
        flush_logs(_EXIT_FLUSH_S)
        os._exit(1)


def _where(task: asyncio.Task[Any]) -> str:
    """A task's name and its chain of awaits (outermost first), for the watchdog's report."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frame = coro.cr_frame
        chain.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return f"{task.get_name()} at {' > '.join(chain) or '?'}"
