"""The lifecycle of one agent process: startup, the stage tasks, signals, drain and shutdown.

Startup applies (or checks) the schema and loads the checkpoints, retried while the database is
away; only then is the tailer made, from those checkpoints, and the stage tasks of
:mod:`agent.runner.pipeline` started. The ops wiring (:mod:`agent.runner.ops`) runs from the
very start, so liveness and readiness answer while the database is still down.

Shutdown is two-phase: the first SIGTERM/SIGINT stops reading and drains what was read into a
final commit within ``agent.shutdown_timeout_s``; a second signal exits at once. Nothing is lost
either way: whatever was not committed is read again on the next start. A signal acts first and
logs after: the agent's own log (:mod:`agent.ops.log`) never raises nor blocks, and even so,
stopping must not depend on stdout (a closed pipe, a stalled reader).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.config import Settings, mask_dsn
from agent.model import Checkpoint
from agent.ops.log import flush_logs, get_logger
from agent.ops.metrics import BackfillCollector, Metrics
from agent.runner.ops import Ops, rollup_task
from agent.runner.parsing import LineParser
from agent.runner.pipeline import Pipeline
from agent.runner.state import Shared
from agent.runner.watchdog import ShutdownWatchdog
from agent.sink.sink import Sink
from agent.sources import MAX_BLOCK_LINES, SourceSpec, Tailer, TailOptions

_BACKGROUND_GRACE_S = 2.0  # for background loops to see the stop event and end
# Container allocations between two young-generation collections (CPython's default is 700).
# The pipe keeps thousands of lines in flight (parsed items waiting for their commit), and they
# all survive into the older generations, which the default threshold walks again and again:
# about a tenth of the agent's CPU on the mixed bench file (measured against the collector off),
# and no more than with it off at this value. Garbage cycles are rare here (everything per line
# is freed by reference counting), so the larger threshold costs no memory to speak of.
_GC_YOUNG_THRESHOLD = 100_000
_WATCHDOG_SLACK_S = 15.0  # beyond the drain's timeout: final report, HTTP and connection close
_FORCED_EXIT_FLUSH_S = 0.2  # a second signal exits at once: its log line gets this long, no more


class Runner:
    """One agent process: builds the parts, runs them, and stops them in order."""

    def __init__(self, settings: Settings, dsn: str, *, exit_when_idle: bool = False, idle_grace_s: float = 1.0):
        self.settings = settings
        self.dsn = dsn
        self.log = get_logger(agent_id=settings.agent.id)
        self.metrics = Metrics()
        self.sink = Sink(settings, dsn)
        self.shared = Shared(settings, self.log, self.metrics, self.sink)
        self.ops = Ops(self.shared)
        self.sink.on_retry = self.ops.on_retry
        self.sink.backfill.on_event = self.ops.on_backfill_event
        self.metrics.registry.register(BackfillCollector(lambda: self.sink.backfill.stats))
        self.pipeline = Pipeline(self.shared, LineParser(settings, self.metrics), exit_when_idle=exit_when_idle,
                                 idle_grace_s=idle_grace_s, on_idle=self.request_stop)
        self._signals = 0
        self._crashed = False
        self.exit_code = 0
        self._watchdog: ShutdownWatchdog | None = None

    @property
    def lines_committed(self) -> int:
        """Lines committed so far (the demo's progress bar reads it)."""
        return self.pipeline.lines_committed

    # ---- stopping ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop reading and start the drain; the first request also arms the watchdog."""
        state = self.shared.state
        if not state.stopping:
            self._watchdog = ShutdownWatchdog(self.settings.agent.shutdown_timeout_s + _WATCHDOG_SLACK_S, self.log)
        state.stopping = True
        self.shared.stop.set()
        if self.shared.tailer is not None:
            self.shared.tailer.stop()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A stage task died of a bug: stop with exit 1 (the orchestrator restarts us; nothing
        uncommitted is lost, it is read again) rather than hang with a live heartbeat."""
        if task.cancelled() or task.exception() is None or self.shared.state.stopping:
            return
        exc = task.exception()
        self.log.error("agent.crashed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}"[:500])
        self.exit_code = 1
        self._crashed = True
        self.request_stop()

    def _on_signal(self, signum: int) -> None:
        """Act first, log after (see the module docstring)."""
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            self.log.warning("agent.forced_exit", signal=name)
            flush_logs(_FORCED_EXIT_FLUSH_S)
            os._exit(130)
        self.request_stop()
        self.log.info("agent.stopping", signal=name)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: the first drains, a second exits at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    # ---- running -------------------------------------------------------------------------------
    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Run until stopped (or idle with ``exit_when_idle``); return the exit code."""
        shared, ops, pipeline = self.shared, self.ops, self.pipeline
        self.log.info("agent.starting", version=__version__, database=mask_dsn(self.dsn),
                      sources=[s.name for s in self.settings.sources],
                      app_logs={s.name: s.app_logs for s in self.settings.sources})
        await ops.start_http()  # first: a port clash is a config error before anything runs
        background = [asyncio.create_task(ops.heartbeat(), name="heartbeat"),
                      asyncio.create_task(ops.loop(), name="ops")]
        checkpoints = await self._startup()
        if checkpoints is None:  # stopped before the database ever answered
            await self._shutdown_background(background)
            return self.exit_code
        ops.schema_checked()
        self.log.info("db.mode", mode=self.sink.health.mode)
        if self.sink.health.fallback:
            self.log.warning("db.timescaledb_unavailable", reason=self.sink.health.fallback, mode="plain PostgreSQL")
        rollup = rollup_task(shared)  # after startup: the schema exists by now
        if rollup is not None:
            background.append(rollup)
        shared.tailer = make_tailer(self.settings, checkpoints, ops.on_source_event)
        shared.state.started = True
        self.log.info("agent.ready", checkpoints=len(checkpoints))
        ops.log_sources(source_specs(self.settings))
        if self.settings.ops.progress_interval_s > 0:
            background.append(asyncio.create_task(ops.progress(self.settings.ops.progress_interval_s),
                                                  name="progress"))
        if on_ready is not None:
            on_ready()
        _settle_gc()
        committer = asyncio.create_task(pipeline.committer(), name="committer")
        ticker = asyncio.create_task(pipeline.ticker(), name="ticker")
        reader = asyncio.create_task(pipeline.reader(), name="reader")
        for task in (committer, ticker, reader):
            task.add_done_callback(self._task_ended)
        await shared.stop.wait()
        await self._drain(reader, committer, ticker)
        await self._shutdown_background(background)
        return self.exit_code

    async def _startup(self) -> list[Checkpoint] | None:
        """Schema and checkpoints, retried while the database is away; None if stopped first."""
        task = asyncio.create_task(self.sink.startup(self.settings.schema_.apply_on_start))
        stop = asyncio.create_task(self.shared.stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.log.info("agent.stopped", before_ready=True)
        return None

    async def _drain(
        self, reader: asyncio.Task[None], committer: asyncio.Task[None], ticker: asyncio.Task[None]
    ) -> None:
        """Commit what was read within ``agent.shutdown_timeout_s``, then end the stage tasks."""
        timeout = self.settings.agent.shutdown_timeout_s
        try:
            if self._crashed:  # nothing can drain through a dead stage; what was read is read again
                return
            async with asyncio.timeout(timeout):
                await self.pipeline.finish(reader, committer)
            self.log.info("agent.stopped", **self.ops.run_totals())
        except TimeoutError:
            self.log.error("agent.shutdown_timeout", timeout_s=timeout)
            self.exit_code = 1
        finally:
            if not committer.done():  # out of time: end the COPY without a CancelRequest
                self.sink.abort()
            for task in (reader, committer, ticker):
                task.cancel()
            await asyncio.gather(reader, committer, ticker, return_exceptions=True)

    async def _shutdown_background(self, background: list[asyncio.Task[None]]) -> None:
        """End the background tasks without cancelling a query: the stop event ends their loops,
        and terminating the jobs connection fails whatever job is still running on it at once."""
        self.shared.stop.set()
        self.sink.jobs.abort()
        _, pending = await asyncio.wait(background, timeout=_BACKGROUND_GRACE_S)
        for task in pending:  # a job still connecting: no query runs yet, so cancelling is safe
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.ops.report_sync(final=True)
        await self.ops.stop_http()
        await self.sink.close()
        if self._watchdog is not None:
            self._watchdog.cancel()


def _settle_gc() -> None:
    """Before the pipe starts: what startup built lives as long as the process, so it moves out
    of the collector's way (``gc.freeze``), and collections of the young generation get rarer
    (see ``_GC_YOUNG_THRESHOLD``)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, older, oldest)


def make_tailer(settings: Settings, checkpoints: list[Checkpoint],
                on_event: Callable[[str, dict[str, Any]], None]) -> Tailer:
    """The tailer for ``[[sources]]`` and ``[tail]``, resuming from the committed checkpoints."""
    t = settings.tail
    options = TailOptions(
        max_line_bytes=t.max_line_bytes, oversize_prefix_bytes=t.oversize_prefix_bytes,
        max_open_files=t.max_open_files, rescan_interval_s=t.rescan_interval_ms / 1000,
        read_interval_s=t.read_interval_ms / 1000, use_events=t.use_events, debounce_ms=t.debounce_ms,
        rotate_grace_s=t.rotate_grace_ms / 1000, idle_close_s=t.idle_close_s,
        follow_symlinks=t.follow_symlinks, block_lines=min(MAX_BLOCK_LINES, settings.batch.max_rows),
    )
    return Tailer(source_specs(settings), checkpoints, options, on_event=on_event)


def source_specs(settings: Settings) -> list[SourceSpec]:
    """``[[sources]]`` as the sources stage takes them (the tailer, and the start lines' survey)."""
    return [SourceSpec(name=s.name, paths=tuple(s.paths), exclude=tuple(s.exclude), start_at=s.start_at)
            for s in settings.sources]
