"""Commit a batch so that it always progresses: prepare its backfill, split it when it runs out of time.

A batch whose transaction hits ``database.statement_timeout_ms`` used to be retried whole, and a
batch too big for the time allowed (a slow server, a write into a compressed chunk) timed out
again, forever, while the backlog grew. Here a timed-out batch is split in halves, each committed
on its own (batches are prefix-closed per file, see :mod:`agent.batcher`, so any prefix commits
with a correct checkpoint and the halves commit in order), halving again until the parts fit.
Before the halves go, the chunk map is read again and the chunks the batch writes into are
decompressed whatever the cost rule says (:func:`agent.sink.backfill.plan_batch` with ``force``):
the key check just proved too slow. A single line that still times out is retried by the sink
with backoff like any transient error (a lock held by a long compression, an overloaded server).

Errors other than the timeout pass through unchanged: the writer has already classified them,
and the sink retries or stalls as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.batcher import Tables, Tails
from agent.errors import RetryableError
from agent.model import Item
from agent.sink.backfill import Backfill
from agent.sink.writer import CommitStats, Writer

QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request): the transaction was rolled back


async def commit_in_time(writer: Writer, backfill: Backfill, items: Sequence[Item], tables: Tables | None = None,
                         tails: Tails | None = None, *, force: bool = False) -> CommitStats:
    """Commit ``items`` exactly once, splitting on statement timeouts until every part fits
    (``tails``: the batch's block tails, see :meth:`agent.sink.writer.Writer.commit`)."""
    plan = await backfill.prepare(writer.session.conn, items, tables, force=force)
    try:
        stats = await writer.commit(items, tables=tables, tails=tails)
    except RetryableError as err:
        if err.sqlstate != QUERY_CANCELED or (len(items) == 1 and force):
            raise
        return await _after_timeout(writer, backfill, items, tails, err)
    backfill.account(plan)
    return stats


async def _after_timeout(writer: Writer, backfill: Backfill, items: Sequence[Item], tails: Tails | None,
                         err: RetryableError) -> CommitStats:
    backfill.stale()
    backfill.stats.timeout_splits += 1
    backfill.emit("batch.timeout_split", lines=len(items), timeout_ms=backfill.statement_timeout_ms,
                  error=str(err)[:200])
    stats = CommitStats(attempts=1)
    if len(items) == 1:
        stats.absorb(await commit_in_time(writer, backfill, items, tails=tails, force=True))
        return stats
    mid = len(items) // 2
    stats.absorb(await commit_in_time(writer, backfill, items[:mid], tails=tails, force=True))
    stats.absorb(await commit_in_time(writer, backfill, items[mid:], tails=tails, force=True))
    return stats
