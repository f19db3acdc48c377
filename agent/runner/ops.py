"""The ops wiring: what the agent tells the outside while the pipeline runs.

Liveness (a heartbeat), readiness (a database ping), the HTTP probes and Prometheus metrics,
``provider_sync_status`` rows, the one-time prune of checkpoints of files long gone, the rollup
task, how tailing events and database retries are logged, and what the agent says it does (the
sources' files at start, progress while it works, the run's totals at the end). None of it is on the data path:
a failure here is logged and retried, never allowed to stop ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

from agent.errors import ConfigError
from agent.ops.http import ProbeView, serve
from agent.ops.metrics import Totals
from agent.ops.rollup import rollup_loop
from agent.ops.sync import FileSync, report, report_agent, table_ready
from agent.runner.state import Shared
from agent.sink.prune import prune_checkpoints
from agent.sources import SourceSpec
from agent.sources.survey import survey

PATHS_LOGGED = 20  # a source's start line names this many files, then counts the rest

_ROUTINE_SOURCE_EVENTS = frozenset({
    "rotation.copytruncate", "rotation.copy_adopted", "rotation.out_of_globs", "file.deleted",
    "file.permission_restored", "file.rewritten",
})


class Ops:
    """Probes, sync status, checkpoint prune and event logging for one agent.

    Sets ``state.loop_beat`` of :class:`~agent.runner.state.Shared` (the heartbeat is its one
    writer) and keeps which stall it logged; reads everything else. Owns ``schema_ready``, which
    the lifecycle turns on through :meth:`schema_checked` once startup applied (or checked)
    the schema; before that a report first looks whether its table exists (a new database has
    none until startup creates it, while a stall during startup must still be reported).
    """

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._http: Any = None
        self._pruned = False
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self.schema_ready = False
        self._stall_logged: tuple[int, str] | None = None  # (stall episode, reason) already logged
        shared.metrics.seconds_since_last_commit.set_function(self._since_last_commit)
        shared.metrics.last_commit.set_function(lambda: shared.sink.health.last_commit or 0.0)

    def schema_checked(self) -> None:
        """Startup applied or checked the schema: reports need not look for their table any more."""
        self.schema_ready = True

    def on_source_event(self, name: str, fields: dict[str, Any]) -> None:
        """Tailing events: routine rotations at info, anything that needs a look at warning."""
        self.shared.metrics.source_events.labels(name).inc()
        level = "info" if name in _ROUTINE_SOURCE_EVENTS else "warning"
        getattr(self.shared.log, level)("source.event", kind=name, **fields)

    def on_retry(self, err: Exception, attempt: int, delay: float) -> None:
        """Log a transient failure at every retry, but a stall once per reason.

        A stall waits for a human and is retried on the same schedule so it resumes by itself;
        one event per retry would only bury the reason, which readiness, status and
        provider_sync_status keep showing.
        """
        shared = self.shared
        health = shared.sink.health
        stalled = health.stalled
        shared.metrics.retries.labels("stall" if stalled else "retryable").inc()
        error = shared.sink.redact(str(err))[:500]
        if stalled is None:
            shared.log.warning("db.retry", error=error, attempt=attempt, delay_s=round(delay, 3))
        elif (health.stall_episode, stalled) != self._stall_logged:
            self._stall_logged = (health.stall_episode, stalled)
            shared.log.error("db.stalled", error=error, attempt=attempt, delay_s=round(delay, 3))

    def on_backfill_event(self, name: str, fields: dict[str, Any]) -> None:
        """The sink's backfill events (agent.sink.backfill): a refusal or a timeout split at warning."""
        level = "warning" if name in ("backfill.refused", "batch.timeout_split") else "info"
        getattr(self.shared.log, level)(name, **fields)

    def _since_last_commit(self) -> float:
        last = self.shared.sink.health.last_commit or self._started_at
        return max(0.0, time.time() - last)

    async def heartbeat(self) -> None:
        """Liveness: proves the loop turns, from the very start (also while the database is down)."""
        stop = self.shared.stop
        while not stop.is_set():
            self.shared.state.loop_beat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    def bytes_behind(self) -> int:
        """Bytes written to the tailed files but not committed yet (readiness compares it)."""
        tailer = self.shared.tailer
        if tailer is None:
            return 0
        return sum(max(0, f.size - f.acked_offset) for f in tailer.files())

    def file_syncs(self) -> list[FileSync]:
        """Each tailed file's size against its committed offset, and each refused link."""
        tailer = self.shared.tailer
        if tailer is None:
            return []
        out = []
        behind: dict[str, int] = {}
        for f in tailer.files():
            key = f.file.identity.key
            out.append(FileSync(f.file.path, f.size, f.acked_offset, self.shared.last_commit.get(key)))
            behind[f.file.source] = behind.get(f.file.source, 0) + max(0, f.size - f.acked_offset)
        for source, n in behind.items():
            self.shared.metrics.bytes_behind.labels(source).set(n)
        for _, path, target, reason in tailer.refused():
            out.append(FileSync(path, 0, 0, None, refused=f"{reason}: {target}"))
        return out

    async def loop(self) -> None:
        """Ping the database (readiness) and refresh provider_sync_status, until stopped.

        Each job is bounded by its connection's deadline (:meth:`JobConnection.borrow`): a job that
        hangs on a connection the server dropped without a word cannot freeze the readiness
        this loop keeps, and the next round connects afresh.
        """
        shared = self.shared
        period = shared.settings.ops.sync_interval_ms / 1000
        while not shared.stop.is_set():
            if await shared.sink.ping() and not shared.stop.is_set():
                await self.report_sync()
                await self._prune_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.stop.wait(), timeout=period)

    async def _prune_once(self) -> None:
        """After the first scan: forget checkpoints of files long gone (see agent.sink.prune)."""
        shared = self.shared
        keys = shared.tailer.gone_checkpoints() if shared.tailer is not None else None
        if keys is None or self._pruned:
            return
        self._pruned = True
        days = shared.settings.agent.checkpoint_retention_days
        try:
            jobs = shared.sink.jobs
            async with jobs.borrow(jobs.deadline()) as conn, conn.transaction():  # one transaction
                n = await prune_checkpoints(conn, shared.settings.agent.id, keys, days)
        except Exception as exc:
            self._pruned = False  # try again at the next round (or the next start)
            if not shared.stop.is_set():  # else the stop terminated the jobs connection on purpose
                shared.log.warning("checkpoints.prune_failed", error=shared.sink.redact(str(exc))[:300])
            return
        if n:
            shared.log.info("checkpoints.pruned", deleted=n, older_than_days=days)

    async def report_sync(self, final: bool = False) -> None:
        """Write this agent's row and its files' rows of provider_sync_status (``final`` at exit;
        nothing while the table does not exist yet, see the class docstring)."""
        shared = self.shared
        h = shared.sink.health
        deadline = 2.0 if final else shared.sink.jobs.deadline()
        agent_id = shared.settings.agent.id
        try:
            async with shared.sink.jobs.borrow(deadline) as conn, conn.transaction():
                if not self.schema_ready and not await table_ready(conn):
                    return
                error = h.last_error if h.consecutive_failures else None
                await report_agent(conn, agent_id, started=shared.state.started, stalled=h.stalled,
                                   error=error, retries=h.consecutive_failures, last_commit=h.last_commit,
                                   final=final)
                if shared.tailer is not None:
                    await report(conn, agent_id, self.file_syncs(),
                                 stalled=h.stalled, error=error, retries=h.consecutive_failures)
        except Exception as exc:
            if shared.stop.is_set() and not final:
                # The stop terminated the jobs connection under this report on purpose (see
                # Runner._shutdown_background); the final report follows, so nothing failed.
                shared.log.debug("sync.stopped", error=shared.sink.redact(str(exc))[:300])
                return
            shared.log.warning("sync.failed", error=shared.sink.redact(str(exc))[:300])

    async def start_http(self) -> None:
        """Serve the probes and /metrics when ``[http]`` is enabled."""
        shared = self.shared
        http = shared.settings.http
        if not http.enabled:
            return
        view = ProbeView(
            loop_beat=lambda: shared.state.loop_beat, started=lambda: shared.state.started,
            db_reachable=lambda: shared.sink.health.reachable and shared.sink.health.connected,
            stalled=lambda: shared.sink.health.stalled, last_error=lambda: shared.sink.health.last_error,
            bytes_behind=self.bytes_behind, max_lag_bytes=shared.settings.ops.ready_max_lag_bytes,
            registry=shared.metrics.registry,
        )
        try:
            self._http = await serve(view, http.host, http.port)
        except OSError as exc:  # the port is taken, or the address is not this host's
            raise ConfigError(
                f"http.listen = {http.listen!r}: cannot serve the probes there ({exc.strerror or exc}); another "
                "process (another agent?) may hold the port: set [http] listen (HYPERTAIL_HTTP__LISTEN) to a free "
                "one, or [http] enabled = false", key="http.listen", value=http.listen) from None
        shared.log.info("http.listening", listen=http.listen)

    async def stop_http(self) -> None:
        """Stop serving the probes (if they were served)."""
        if self._http is not None:
            await self._http.cleanup()


    # ---- what the agent says it is doing -------------------------------------------------------
    def log_sources(self, specs: list[SourceSpec]) -> None:
        """One ``source.files`` line per source naming the files its globs match now, and a
        ``source.no_match`` warning per glob that matches nothing (a typo, or files to come)."""
        log = self.shared.log
        for found in survey(specs, self.shared.settings.tail.follow_symlinks):
            paths = found.paths
            log.info("source.files", source=found.source, files=len(paths), paths=paths[:PATHS_LOGGED],
                     more=max(0, len(paths) - PATHS_LOGGED))
            for g in found.globs:
                if not g.paths:
                    log.warning("source.no_match", source=found.source, glob=g.glob, folder=g.folder,
                                folder_exists=g.folder_exists)

    async def progress(self, period: float) -> None:
        """An ``ingest.progress`` line every ``period`` seconds while there is work; quiet when idle."""
        shared = self.shared
        last, since = shared.metrics.totals(), time.monotonic()
        while not shared.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.stop.wait(), timeout=period)
            if shared.stop.is_set():
                return
            now, at = shared.metrics.totals(), time.monotonic()
            delta, behind = now.minus(last), self.bytes_behind()
            if delta.lines or delta.rows or behind:
                shared.log.info("ingest.progress", interval_s=round(at - since, 1), lines=delta.lines,
                                lines_per_s=round(delta.lines / max(at - since, 1e-9), 1), rows=delta.rows,
                                dead_letters=delta.dead_letters, bytes_behind=behind,
                                files=len(shared.tailer.files()) if shared.tailer is not None else 0)
            last, since = now, at

    def run_totals(self) -> dict[str, Any]:
        """What this run ingested, for ``agent.stopped``."""
        t: Totals = self.shared.metrics.totals()
        return {"lines": t.lines, "rows": {k: v for k, v in t.rows.items() if v}, "dead_letters": t.dead_letters,
                "run_s": round(time.monotonic() - self._started_mono, 1)}


def rollup_task(shared: Shared) -> asyncio.Task[None] | None:
    """The rollup task when ``ops.rollup_enabled``; start it after startup (the schema exists)."""
    ops = shared.settings.ops
    if not ops.rollup_enabled:
        return None
    return asyncio.create_task(rollup_loop(
        shared.sink.jobs.borrow, ops.rollup_interval_s, shared.stop, shared.log,
        lookback_1m=timedelta(seconds=ops.rollup_lookback_1m_s),
        lookback_1h=timedelta(seconds=ops.rollup_lookback_1h_s),
        statement_timeout_ms=shared.settings.database.statement_timeout_ms), name="rollup")
