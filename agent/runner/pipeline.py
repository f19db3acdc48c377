"""The stage tasks: read -> parse -> batch -> commit -> ack, within the memory budget.

Three tasks share one event loop: the *reader* pulls lines from the tailer, parses them and
fills the batcher; the *committer* takes full (or old enough) batches from a small bounded queue
and commits them, then acknowledges offsets to the tailer; the *ticker* flushes batches by age,
enforces the memory budget, and notices idleness. Parsing happens while the database copies, so
neither waits for the other.

Offsets are acknowledged only after the sink committed them (rows, dead letters and checkpoints
in one transaction), so whatever was read but not committed is read again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from agent.batcher import Batch, Batcher, FlushPolicy
from agent.model import Block
from agent.ops.metrics import Metrics
from agent.runner.parsing import LineParser, reason_class
from agent.runner.state import Shared
from agent.sink.writer import CommitStats

_STOP = None


class Pipeline:
    """The reader, committer and ticker of one agent, and the bytes they hold in flight.

    Sets ``state.committing`` and ``last_commit`` of :class:`~agent.runner.state.Shared`; reads
    ``tailer`` and ``stop``.
    """

    def __init__(self, shared: Shared, parser: LineParser, *, exit_when_idle: bool, idle_grace_s: float,
                 on_idle: Callable[[], None]) -> None:
        self.shared = shared
        self.parser = parser
        self.exit_when_idle = exit_when_idle
        self.idle_grace_s = idle_grace_s
        self.on_idle = on_idle
        b = shared.settings.batch
        self.batcher = Batcher(FlushPolicy(b.max_rows, b.max_bytes, b.max_age_ms / 1000))
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        self._enqueue_lock = asyncio.Lock()
        self._queued_bytes = 0
        self._idle_since: float | None = None
        self.lines_committed = 0

    async def reader(self) -> None:
        """Parse what the tailer hands over into the batcher, handing full batches on.

        A batch grows by whole blocks (at most ``batch.max_rows`` lines each, see
        :func:`agent.runner.lifecycle.make_tailer`): one that would not fit hands the batch on
        first, so ``batch.max_rows`` holds exactly and every batch ends at a block end. After each
        block the reader steps aside: parsing is CPU work on the loop thread, and the committer's
        next round trip should start at once so that the database never waits.
        """
        tailer = self.shared.tailer
        assert tailer is not None
        parse_block, batcher = self.parser.parse_block, self.batcher
        async for blocks in tailer.batches():
            for block in blocks:
                if not batcher.fits(len(block.data)):
                    await self.enqueue()
                batcher.add_block(block, parse_block(block))
                if batcher.full():
                    await self.enqueue()
                await asyncio.sleep(0)
            self._count_lines(blocks)
            self.update_budget()
            if self.shared.stop.is_set():
                break

    def _count_lines(self, blocks: list[Block]) -> None:
        per_source: dict[str, int] = {}
        for block in blocks:
            src = block.file.source
            per_source[src] = per_source.get(src, 0) + len(block.data)
        for src, n in per_source.items():
            self.shared.metrics.lines_read.labels(src).inc(n)

    async def enqueue(self) -> None:
        """Hand the current batch to the committer. Take and put happen under one lock: the
        reader and the ticker both enqueue, and a batch taken later but put first (the queue
        lets a fresh put overtake a waiting one) would commit a file's later lines first, and
        the sink then drops the earlier ones as already committed."""
        async with self._enqueue_lock:
            batch = self.batcher.take()
            if batch.items:
                self._queued_bytes += batch.nbytes
                await self.queue.put(batch)
                self.shared.metrics.queue_depth.set(self.queue.qsize())

    async def committer(self) -> None:
        """Commit queued batches in order until the stop marker arrives."""
        while True:
            batch = await self.queue.get()
            self.shared.metrics.queue_depth.set(self.queue.qsize())
            if batch is None:
                return
            self.shared.state.committing = True
            t0 = time.perf_counter()
            stats = await self.shared.sink.commit(batch.items, batch.tables, batch.tails)
            self._after_commit(batch, stats, time.perf_counter() - t0)
            self.shared.state.committing = False

    def _after_commit(self, batch: Batch, stats: CommitStats, seconds: float) -> None:
        """Acknowledge the committed offsets to the tailer, release the batch's bytes, count it."""
        shared = self.shared
        assert shared.tailer is not None
        now = time.time()
        for key, c in stats.committed.items():
            shared.tailer.ack(c.file, c.offset)
            shared.last_commit[key] = now
        self._queued_bytes -= batch.nbytes
        self.lines_committed += len(batch.items)
        self.update_budget()
        _count_commit(shared.metrics, shared.log, batch, stats, seconds)

    def update_budget(self) -> None:
        """Pause the tailer at the memory budget, resume it below half of it."""
        tailer = self.shared.tailer
        assert tailer is not None
        inflight = self._queued_bytes + self.batcher.current.nbytes
        self.shared.metrics.inflight_bytes.set(inflight)
        budget = self.shared.settings.batch.memory_budget_bytes
        if inflight >= budget:
            tailer.pause()
        elif inflight < budget // 2:
            tailer.resume()

    async def ticker(self) -> None:
        """Until stopped: flush batches by age, enforce the budget, notice idleness."""
        period = min(0.05, self.batcher.policy.max_age_s / 2)
        stop = self.shared.stop
        while not stop.is_set():
            if self.batcher.due():
                await self.enqueue()
            self.update_budget()
            self._check_idle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)

    def _check_idle(self) -> None:
        tailer = self.shared.tailer
        if not self.exit_when_idle or tailer is None:
            return
        busy = bool(self.batcher.current.items) or not self.queue.empty() or self.shared.state.committing
        if busy or not tailer.idle():
            self._idle_since = None
            return
        now = time.monotonic()
        self._idle_since = self._idle_since or now
        if now - self._idle_since >= self.idle_grace_s:
            self.shared.log.info("agent.idle_exit", grace_s=self.idle_grace_s)
            self.on_idle()

    async def finish(self, reader: asyncio.Task[None], committer: asyncio.Task[None]) -> None:
        """Drain: let the (stopped) reader end, hand over its last batch and commit everything
        queued before the stop marker."""
        await reader
        await self.enqueue()
        async with self._enqueue_lock:  # after any batch the ticker is still handing over
            await self.queue.put(_STOP)
        await committer


def _count_commit(m: Metrics, log: Any, batch: Batch, stats: CommitStats, seconds: float) -> None:
    """Metrics and log events of one committed batch."""
    for table, n in stats.rows.items():
        m.rows_written.labels(table).inc(n)
    for item, dl in stats.dead_letters:
        m.dead_letters.labels(reason_class(dl)).inc()
        log.info("line.dead_letter", path=item.line.file.path, offset=item.line.start,
                 reason=dl.reason[:300], field=dl.field)
    m.app_logs.inc(stats.app_logs)
    m.invalid_optional.inc(stats.warnings)
    m.commits.inc(stats.transactions)
    m.copy_attempts.inc(stats.attempts)
    m.batch_rows.observe(len(batch.items))
    m.commit_latency.observe(seconds)
    log.debug("batch.committed", lines=len(batch.items), rows=stats.rows,
              dead_letters=len(stats.dead_letters), attempts=stats.attempts, already_committed=stats.skipped_lines,
              latency_ms=round(seconds * 1000, 1))
    if stats.attempts > stats.transactions:
        log.warning("batch.split", lines=len(batch.items), attempts=stats.attempts,
                    dead_letters=len(stats.dead_letters))
