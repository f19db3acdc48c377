"""Wire the stages and own the lifecycle: sources -> parse -> batcher -> sink.

Three tasks share one event loop: the *reader* pulls lines from the tailer, parses them and
fills the batcher; the *committer* takes full (or old enough) batches from a small bounded queue
and commits them, then acknowledges offsets to the tailer; the *ticker* flushes batches by age,
enforces the memory budget, and notices idleness. Parsing happens while the database copies, so
neither waits for the other.

Shutdown is two-phase: the first SIGTERM/SIGINT stops reading and drains what was read into a
final commit within ``agent.shutdown_timeout_s``; a second signal exits at once. Nothing is lost
either way: whatever was not committed is read again on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agent import __version__, contract
from agent.applogs import AppLogPolicy, log_row
from agent.batcher import Batch, Batcher, FlushPolicy
from agent.config import Settings, mask_dsn
from agent.model import NUL_RUN, AppLog, Checkpoint, DeadLetter, FileRef, Item, Line, ParseResult
from agent.ops.http import ProbeView, serve
from agent.ops.log import get_logger
from agent.ops.metrics import Metrics
from agent.ops.rollup import rollup_loop
from agent.ops.sync import FileSync, report, report_agent
from agent.parse import parse
from agent.sink.prune import prune_checkpoints
from agent.sink.sink import Sink
from agent.sink.writer import CommitStats
from agent.sources import SourceSpec, Tailer, TailOptions

_YIELD_EVERY = 64
_ROUTINE_SOURCE_EVENTS = frozenset({
    "rotation.copytruncate", "rotation.copy_adopted", "rotation.out_of_globs", "file.deleted",
    "file.permission_restored", "file.rewritten",
})
_STORE_ALL = AppLogPolicy()
ROW_ID_NAMESPACE = uuid.UUID("6f1c4a2e-52b8-4d7e-9a51-2f0c7d1e8b33")
_STOP = None
_BACKGROUND_GRACE_S = 2.0  # for background loops to see the stop event and end
_WATCHDOG_SLACK_S = 15.0  # beyond the drain's timeout: final report, HTTP and connection close


def row_id(agent_id: str, file_key: str, offset: int) -> uuid.UUID:
    """Deterministic id for a record the app gave none: a replayed line gets the same id."""
    return uuid.uuid5(ROW_ID_NAMESPACE, f"{agent_id}\x1f{file_key}\x1f{offset}")


@dataclass(slots=True)
class RunState:
    """Lifecycle flags the probes read."""

    started: bool = False
    stopping: bool = False
    loop_beat: float = field(default_factory=time.monotonic)
    committing: bool = False


class Runner:
    """One agent process: its tailer, batcher, sink, metrics and lifecycle."""

    def __init__(self, settings: Settings, dsn: str, *, exit_when_idle: bool = False, idle_grace_s: float = 1.0):
        self.settings = settings
        self.dsn = dsn
        self.exit_when_idle = exit_when_idle
        self.idle_grace_s = idle_grace_s
        self.log = get_logger(agent_id=settings.agent.id)
        self.metrics = Metrics()
        self.state = RunState()
        self.tailer: Tailer | None = None
        self.sink = Sink(settings, dsn, self._tail_hash)
        self.sink.on_retry = self._on_retry
        b = settings.batch
        self.batcher = Batcher(FlushPolicy(b.max_rows, b.max_bytes, b.max_age_ms / 1000))
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        self._enqueue_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._keys = {s.name: s.record_type_key for s in settings.sources}
        self._app_logs = {s.name: AppLogPolicy(s.app_logs == contract.APP_LOGS_STORE, s.app_logs_min_level)
                          for s in settings.sources}
        self._queued_bytes = 0
        self._signals = 0
        self._idle_since: float | None = None
        self._crashed = False
        self._db_ok = False
        self._stall_logged: str | None = None
        self._last_commit: dict[str, float] = {}
        self._http: Any = None
        self.lines_committed = 0
        self._started_at = time.time()
        self.metrics.seconds_since_last_commit.set_function(self._since_last_commit)
        self.exit_code = 0
        self._pruned = False
        self._watchdog: _ShutdownWatchdog | None = None

    # ---- wiring -------------------------------------------------------------------------------
    def _tail_hash(self, file: FileRef, offset: int) -> str:
        assert self.tailer is not None
        return self.tailer.tail_hash(file, offset)

    def _make_tailer(self, checkpoints: list[Checkpoint]) -> Tailer:
        t = self.settings.tail
        specs = [
            SourceSpec(name=s.name, paths=tuple(s.paths), exclude=tuple(s.exclude), start_at=s.start_at)
            for s in self.settings.sources
        ]
        options = TailOptions(
            max_line_bytes=t.max_line_bytes, oversize_prefix_bytes=t.oversize_prefix_bytes,
            max_open_files=t.max_open_files, rescan_interval_s=t.rescan_interval_ms / 1000,
            read_interval_s=t.read_interval_ms / 1000, use_events=t.use_events, debounce_ms=t.debounce_ms,
            rotate_grace_s=t.rotate_grace_ms / 1000, idle_close_s=t.idle_close_s,
            follow_symlinks=t.follow_symlinks,
        )
        return Tailer(specs, checkpoints, options, on_event=self._on_source_event)

    def _on_source_event(self, name: str, fields: dict[str, Any]) -> None:
        """Tailing events: routine rotations at info, anything that needs a look at warning."""
        self.metrics.source_events.labels(name).inc()
        level = "info" if name in _ROUTINE_SOURCE_EVENTS else "warning"
        getattr(self.log, level)("source.event", kind=name, **fields)

    def _on_retry(self, err: Exception, attempt: int, delay: float) -> None:
        """Log a transient failure at every retry, but a stall once per reason.

        A stall waits for a human and is retried on the same schedule so it resumes by itself;
        one event per retry would only bury the reason, which readiness, status and
        provider_sync_status keep showing.
        """
        stalled = self.sink.health.stalled
        self.metrics.retries.labels("stall" if stalled else "retryable").inc()
        error = self.sink.redact(str(err))[:500]
        if stalled is None:
            self._stall_logged = None
            self.log.warning("db.retry", error=error, attempt=attempt, delay_s=round(delay, 3))
        elif stalled != self._stall_logged:
            self._stall_logged = stalled
            self.log.error("db.stalled", error=error, attempt=attempt, delay_s=round(delay, 3))

    # ---- the stages ----------------------------------------------------------------------------
    def parse_line(self, line: Line) -> ParseResult:
        if line.oversize:
            if line.data == NUL_RUN:
                self.metrics.nul_bytes.inc(line.end - line.start)
                return DeadLetter(
                    reason=f"run of {line.end - line.start} NUL bytes at offset {line.start} "
                    "(a hole left by a writer without O_APPEND after a truncation); skipped",
                    field=None,
                )
            return DeadLetter(
                reason=f"line is {line.end - line.start} bytes, longer than tail.max_line_bytes "
                f"({self.settings.tail.max_line_bytes}); its first bytes are kept",
                field=None,
            )
        agent_id, key, start = self.settings.agent.id, line.file.identity.key, line.start
        result = parse(
            line.data,
            record_type_key=self._keys.get(line.file.source, "record_type"),
            fallback_id=lambda: row_id(agent_id, key, start),
        )
        if type(result) is AppLog:
            return self._app_log(result, line)
        return result

    def _app_log(self, result: AppLog, line: Line) -> ParseResult:
        """An ordinary log line becomes a ``logs`` row where its source stores them (the row id
        is the line's place, so a replayed line is the same row); else it is only counted."""
        source = line.file.source
        policy = self._app_logs.get(source, _STORE_ALL)
        if result.fields is None or not policy.keeps(result.level):
            return result
        log_id = row_id(self.settings.agent.id, line.file.identity.key, line.start)
        return log_row(result.fields, log_id=log_id, source=source)

    async def _reader(self) -> None:
        assert self.tailer is not None
        parse_line, batcher = self.parse_line, self.batcher
        async for lines in self.tailer.batches():
            for i, line in enumerate(lines, 1):
                batcher.add(Item(line, parse_line(line)))
                if batcher.full():
                    await self._enqueue()
                if i % _YIELD_EVERY == 0:
                    # Parsing is CPU work on the loop thread: step aside now and then so the
                    # committer's next round trip starts at once and the database never waits.
                    await asyncio.sleep(0)
            self._count_lines(lines)
            self._update_budget()
            if self._stop.is_set():
                break

    def _count_lines(self, lines: list[Line]) -> None:
        per_source: dict[str, int] = {}
        for line in lines:
            src = line.file.source
            per_source[src] = per_source.get(src, 0) + 1
        for src, n in per_source.items():
            self.metrics.lines_read.labels(src).inc(n)

    async def _enqueue(self) -> None:
        """Hand the current batch to the committer. Take and put happen under one lock: the
        reader and the ticker both enqueue, and a batch taken later but put first (the queue
        lets a fresh put overtake a waiting one) would commit a file's later lines first, and
        the sink then drops the earlier ones as already committed."""
        async with self._enqueue_lock:
            batch = self.batcher.take()
            if batch.items:
                self._queued_bytes += batch.nbytes
                await self.queue.put(batch)
                self.metrics.queue_depth.set(self.queue.qsize())

    async def _committer(self) -> None:
        while True:
            batch = await self.queue.get()
            self.metrics.queue_depth.set(self.queue.qsize())
            if batch is None:
                return
            self.state.committing = True
            t0 = time.perf_counter()
            stats = await self.sink.commit(batch.items)
            self._after_commit(batch, stats, time.perf_counter() - t0)
            self.state.committing = False

    def _after_commit(self, batch: Batch, stats: CommitStats, seconds: float) -> None:
        assert self.tailer is not None
        now = time.time()
        for key, c in stats.committed.items():
            self.tailer.ack(c.file, c.offset)
            self._last_commit[key] = now
        self._db_ok = True
        self._stall_logged = None
        self._queued_bytes -= batch.nbytes
        self.lines_committed += len(batch.items)
        self._update_budget()
        m = self.metrics
        for table, n in stats.rows.items():
            m.rows_written.labels(table).inc(n)
        for item, dl in stats.dead_letters:
            m.dead_letters.labels(reason_class(dl)).inc()
            self.log.info("line.dead_letter", path=item.line.file.path, offset=item.line.start,
                          reason=dl.reason[:300], field=dl.field)
        m.app_logs.inc(stats.app_logs)
        m.invalid_optional.inc(stats.warnings)
        m.commits.inc(stats.transactions)
        m.copy_attempts.inc(stats.attempts)
        m.batch_rows.observe(len(batch.items))
        m.commit_latency.observe(seconds)
        m.last_commit.set(time.time())
        self.log.debug("batch.committed", lines=len(batch.items), rows=stats.rows, dead_letters=len(stats.dead_letters),
                       attempts=stats.attempts, already_committed=stats.skipped_lines,
                       latency_ms=round(seconds * 1000, 1))
        if stats.attempts > stats.transactions:
            self.log.warning("batch.split", lines=len(batch.items), attempts=stats.attempts,
                             dead_letters=len(stats.dead_letters))

    def _update_budget(self) -> None:
        assert self.tailer is not None
        inflight = self._queued_bytes + self.batcher.current.nbytes
        self.metrics.inflight_bytes.set(inflight)
        budget = self.settings.batch.memory_budget_bytes
        if inflight >= budget:
            self.tailer.pause()
        elif inflight < budget // 2:
            self.tailer.resume()

    async def _ticker(self) -> None:
        period = min(0.05, self.batcher.policy.max_age_s / 2)
        while not self._stop.is_set():
            self.state.loop_beat = time.monotonic()
            if self.batcher.due():
                await self._enqueue()
            self._update_budget()
            self._check_idle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    def _check_idle(self) -> None:
        if not self.exit_when_idle or self.tailer is None:
            return
        busy = bool(self.batcher.current.items) or not self.queue.empty() or self.state.committing
        if busy or not self.tailer.idle():
            self._idle_since = None
            return
        now = time.monotonic()
        self._idle_since = self._idle_since or now
        if now - self._idle_since >= self.idle_grace_s:
            self.log.info("agent.idle_exit", grace_s=self.idle_grace_s)
            self.request_stop()

    def _since_last_commit(self) -> float:
        last = self.sink.health.last_commit or self._started_at
        return max(0.0, time.time() - last)

    # ---- operations ----------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Liveness: proves the loop turns, from the very start (also while the database is down)."""
        while not self._stop.is_set():
            self.state.loop_beat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.5)

    def bytes_behind(self) -> int:
        if self.tailer is None:
            return 0
        return sum(max(0, f.size - f.acked_offset) for f in self.tailer.files())

    def file_syncs(self) -> list[FileSync]:
        if self.tailer is None:
            return []
        out = []
        for f in self.tailer.files():
            key = f.file.identity.key
            out.append(FileSync(f.file.path, f.size, f.acked_offset, self._last_commit.get(key)))
            self.metrics.bytes_behind.labels(f.file.source, f.file.path).set(max(0, f.size - f.acked_offset))
        for _, path, target, reason in self.tailer.refused():
            out.append(FileSync(path, 0, 0, None, refused=f"{reason}: {target}"))
        return out

    async def _ops_loop(self) -> None:
        """Ping the database (readiness) and refresh provider_sync_status, until stopped.

        Each job is bounded by its connection's deadline (see :meth:`Sink.jobs`): a job that
        hangs on a connection the server dropped without a word cannot freeze the readiness
        this loop keeps, and the next round connects afresh.
        """
        period = self.settings.ops.sync_interval_ms / 1000
        while not self._stop.is_set():
            self._db_ok = await self.sink.ping()
            if self._db_ok and not self._stop.is_set():
                await self._report_sync()
                await self._prune_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    async def _prune_once(self) -> None:
        """After the first scan: forget checkpoints of files long gone (see agent.sink.prune)."""
        keys = self.tailer.gone_checkpoints() if self.tailer is not None else None
        if keys is None or self._pruned:
            return
        self._pruned = True
        days = self.settings.agent.checkpoint_retention_days
        try:
            async with self.sink.jobs(self.sink.job_deadline()) as conn, conn.transaction():  # one transaction
                n = await prune_checkpoints(conn, self.settings.agent.id, keys, days)
        except Exception as exc:
            self._pruned = False  # try again at the next round
            self.log.warning("checkpoints.prune_failed", error=self.sink.redact(str(exc))[:300])
            return
        if n:
            self.log.info("checkpoints.pruned", deleted=n, older_than_days=days)

    async def _report_sync(self, final: bool = False) -> None:
        h = self.sink.health
        deadline = 2.0 if final else self.sink.job_deadline()
        try:
            async with self.sink.jobs(deadline) as conn, conn.transaction():
                error = h.last_error if h.consecutive_failures else None
                await report_agent(conn, self.settings.agent.id, started=self.state.started, stalled=h.stalled,
                                   error=error, retries=h.consecutive_failures, last_commit=h.last_commit,
                                   final=final)
                if self.tailer is not None:
                    await report(conn, self.settings.agent.id, self.file_syncs(),
                                 stalled=h.stalled, error=error, retries=h.consecutive_failures)
        except Exception as exc:
            self.log.warning("sync.failed", error=self.sink.redact(str(exc))[:300])

    async def _start_http(self) -> None:
        http = self.settings.http
        if not http.enabled:
            return
        view = ProbeView(
            loop_beat=lambda: self.state.loop_beat, started=lambda: self.state.started,
            db_reachable=lambda: self._db_ok and self.sink.health.connected,
            stalled=lambda: self.sink.health.stalled, last_error=lambda: self.sink.health.last_error,
            bytes_behind=self.bytes_behind, max_lag_bytes=self.settings.ops.ready_max_lag_bytes,
            registry=self.metrics.registry,
        )
        self._http = await serve(view, http.host, http.port)
        self.log.info("http.listening", listen=http.listen)

    # ---- lifecycle -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self.state.stopping:
            self._watchdog = _ShutdownWatchdog(self.settings.agent.shutdown_timeout_s + _WATCHDOG_SLACK_S, self.log)
        self.state.stopping = True
        self._stop.set()
        if self.tailer is not None:
            self.tailer.stop()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A stage task died of a bug: stop with exit 1 (the orchestrator restarts us; nothing
        uncommitted is lost, it is read again) rather than hang with a live heartbeat."""
        if task.cancelled() or task.exception() is None or self.state.stopping:
            return
        exc = task.exception()
        self.log.error("agent.crashed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}"[:500])
        self.exit_code = 1
        self._crashed = True
        self.request_stop()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("agent.forced_exit", signal=signal.Signals(signum).name)
            os._exit(130)
        self.log.info("agent.stopping", signal=signal.Signals(signum).name)
        self.request_stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Run until stopped (or idle with ``exit_when_idle``); return the exit code."""
        self.log.info("agent.starting", version=__version__, database=mask_dsn(self.dsn),
                      sources=[s.name for s in self.settings.sources],
                      app_logs={s.name: s.app_logs for s in self.settings.sources})
        background = [asyncio.create_task(self._heartbeat(), name="heartbeat")]
        await self._start_http()
        background.append(asyncio.create_task(self._ops_loop(), name="ops"))
        checkpoints = await self._startup()
        if checkpoints is None:  # stopped before the database ever answered
            await self._shutdown_background(background)
            return self.exit_code
        self._db_ok = True
        self._stall_logged = None
        self.log.info("db.mode", mode=self.sink.health.mode)
        if self.sink.health.fallback:
            self.log.warning("db.timescaledb_unavailable", reason=self.sink.health.fallback, mode="plain PostgreSQL")
        if self.settings.ops.rollup_enabled:  # after startup: the schema exists by now
            ops = self.settings.ops
            background.append(asyncio.create_task(rollup_loop(
                self.sink.jobs, ops.rollup_interval_s, self._stop, self.log,
                lookback_1m=timedelta(seconds=ops.rollup_lookback_1m_s),
                lookback_1h=timedelta(seconds=ops.rollup_lookback_1h_s),
                statement_timeout_ms=self.settings.database.statement_timeout_ms), name="rollup"))
        self.tailer = self._make_tailer(checkpoints)
        self.state.started = True
        self.log.info("agent.ready", checkpoints=len(checkpoints))
        if on_ready is not None:
            on_ready()
        committer = asyncio.create_task(self._committer(), name="committer")
        ticker = asyncio.create_task(self._ticker(), name="ticker")
        reader = asyncio.create_task(self._reader(), name="reader")
        for task in (committer, ticker, reader):
            task.add_done_callback(self._task_ended)
        await self._stop.wait()
        await self._drain(reader, committer, ticker)
        await self._shutdown_background(background)
        return self.exit_code

    async def _startup(self) -> list[Checkpoint] | None:
        """Schema and checkpoints, retried while the database is away; None if stopped first."""
        task = asyncio.create_task(self.sink.startup(self.settings.schema_.apply_on_start))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.log.info("agent.stopped", before_ready=True)
        return None

    async def _shutdown_background(self, background: list[asyncio.Task[None]]) -> None:
        """End the background tasks without cancelling a query: the stop event ends their loops,
        and terminating the jobs connection fails whatever job is still running on it at once."""
        self._stop.set()
        self.sink.abort_jobs()
        _, pending = await asyncio.wait(background, timeout=_BACKGROUND_GRACE_S)
        for task in pending:  # the heartbeat, or a job that went on connecting
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._report_sync(final=True)
        if self._http is not None:
            await self._http.cleanup()
        await self.sink.close()
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _drain(
        self, reader: asyncio.Task[None], committer: asyncio.Task[None], ticker: asyncio.Task[None]
    ) -> None:
        timeout = self.settings.agent.shutdown_timeout_s
        try:
            if self._crashed:  # nothing can drain through a dead stage; what was read is read again
                return
            async with asyncio.timeout(timeout):
                await reader
                await self._enqueue()
                async with self._enqueue_lock:  # after any batch the ticker is still handing over
                    await self.queue.put(_STOP)
                await committer
            self.log.info("agent.stopped")
        except TimeoutError:
            self.log.error("agent.shutdown_timeout", timeout_s=timeout)
            self.exit_code = 1
        finally:
            if not committer.done():  # out of time: end the COPY without a CancelRequest
                self.sink.abort()
            for task in (reader, committer, ticker):
                task.cancel()
            await asyncio.gather(reader, committer, ticker, return_exceptions=True)


def reason_class(dl: DeadLetter) -> str:
    """A low-cardinality metric label for a dead letter: the field at fault, or the reason's kind."""
    if dl.field:
        return f"field:{dl.field}"
    head = dl.reason.split(":", 1)[0]
    return re.sub(r"(?<![\w-])\d+", "N", head)[:60] or "unknown"


class _ShutdownWatchdog:
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
