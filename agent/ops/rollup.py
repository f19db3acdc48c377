"""Percentile rollups of spans into ``observability.metrics_aggregates`` (design §6), plus
request durations per operation type (``trace.duration_ms``), log lines per level (``log.lines``)
and the application's own metrics (``app.counter``, ``app.gauge``, ``app.histogram``: counter
rates, last gauge values and histogram percentiles per series; see :mod:`agent.ops.rollup_app`).

Why it works the way it does:

* **Recompute, don't increment.** Percentiles cannot be merged from partial results, so every
  run recomputes every *closed* bucket inside a lookback window from the spans themselves
  (1-minute buckets over ``lookback_1m``, 1-hour buckets over ``lookback_1h``). A span that
  arrives late, or a span whose start record is merged with its end record later, lands in a
  bucket that the next run recomputes anyway. A span older than the lookback is not
  re-aggregated (raise the lookback, or run :func:`run_rollup` once with a long one, to
  backfill). Application metrics are too voluminous for that: only the buckets whose rows
  changed are recomputed (:mod:`agent.ops.rollup_app`).
* **One statement per width.** ``GROUPING SETS`` computes the overall group and the
  span_type / model / operation_type / kb_id groups in one pass; data-modifying CTEs then upsert
  them and empty the rows of groups that no longer have data, so the table always equals what
  the spans say. Unchanged rows are not rewritten (no bloat from a job that runs every minute).
  Emptied groups keep their row with ``count = 0`` and NULL statistics instead of being deleted,
  because the least-privilege role (``hypertail migrate --print-grants``) has no DELETE.
* **One agent at a time.** Every sidecar runs this loop; ``pg_try_advisory_xact_lock`` lets exactly
  one of them work while the others skip at once. A transaction-level lock is released by COMMIT
  or ROLLBACK (even when the connection dies), and it works behind a transaction-pooling
  PgBouncer, where a session lock would leak to whichever client gets the server connection next.
  The run's time is recorded in ``provider_sync_status`` (entity ``rollup``), so with
  ``min_interval`` the other sidecars skip a rollup that just ran instead of repeating it: the
  work stays one rollup per interval however many sidecars there are.
* **The database's clock** decides which buckets are closed (``now()`` unless the caller passes
  ``now``), so sidecars with skewed clocks agree.

This module only speaks SQL through the connection it is given; asyncpg stays in ``agent.sink``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from agent.ops.rollup_app import KINDS as APP_KINDS
from agent.ops.rollup_app import rollup_app
from agent.ops.rollup_sql import BUCKETS, LAST_RUN, LOCK, MARK_RUN, ROLLUP, ROLLUP_LOGS, ROLLUP_TRACES

# pg_try_advisory_xact_lock key: the bytes of "hytrollu", unlikely to collide with an app's keys.
ROLLUP_LOCK_KEY = 0x6879_7472_6F6C_6C75
DEFAULT_LOOKBACK_1M = timedelta(hours=2)
DEFAULT_LOOKBACK_1H = timedelta(days=2)
METRIC_TYPES = ("span.duration_ms", "span.input_tokens", "span.output_tokens", "span.cost_usd")
# trace.duration_ms: one value per request (trace), by operation type; see FRESH_TRACES in agent.ops.rollup_sql.
SYNC_KEY = ("hypertail", "rollup", "metrics_aggregates")  # provider_sync_status row of the job


class Connection(Protocol):
    """The part of an ``asyncpg.Connection`` the rollup uses."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


@dataclass(frozen=True, slots=True)
class Granularity:
    """A bucket width: its label in ``dimensions``, its ``date_trunc`` unit, its length."""

    label: str
    unit: str
    width: timedelta


MINUTE = Granularity("1m", "minute", timedelta(minutes=1))
HOUR = Granularity("1h", "hour", timedelta(hours=1))


@dataclass(frozen=True, slots=True)
class RollupResult:
    """What one run did.

    ``ran`` is False when another agent held the lock or had just run (``reason`` says which);
    ``buckets`` counts the (width, bucket) pairs with data, ``rows`` the aggregate rows that
    describe them, ``changed`` the rows actually written (new, different, or emptied).
    """

    ran: bool
    buckets: int
    rows: int
    changed: int = 0
    reason: str = ""


def truncate(ts: datetime, width: timedelta) -> datetime:
    """``ts`` rounded down to a multiple of ``width`` since the Unix epoch, in UTC."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts.astimezone(UTC) - epoch) // width) * width


def window(now: datetime, g: Granularity, lookback: timedelta) -> tuple[datetime, datetime]:
    """The buckets to recompute: ``[lo, hi)`` where ``hi`` is the start of the open bucket.

    Every bucket starting before ``hi`` ends at or before ``now``, so it is closed.
    """
    return truncate(now - lookback, g.width), truncate(now, g.width)


TRACE_METRIC_TYPES = ("trace.duration_ms",)
LOG_METRIC_TYPES = ("log.lines",)


async def _ran_recently(conn: Connection, now: datetime, min_interval: timedelta) -> bool:
    """Whether any agent finished a rollup less than ``min_interval`` before ``now``.

    A last run stamped in the future (a clock stepped back) does not count, so it cannot stop
    the rollup until the clock catches up.
    """
    if min_interval <= timedelta(0):
        return False
    last: datetime | None = await conn.fetchval(LAST_RUN, *SYNC_KEY)
    return last is not None and timedelta(0) <= now - last < min_interval


async def _rollup_width(
    conn: Connection, g: Granularity, now: datetime, lookback: timedelta, app_lo: datetime
) -> tuple[int, int, int]:
    """Recompute one width's closed buckets in its window: (buckets, rows, changed). The buckets
    count application metrics from ``app_lo`` on, their window (see :mod:`agent.ops.rollup_app`)."""
    lo, hi = window(now, g, lookback)
    if lo >= hi:
        return 0, 0, 0
    r = await conn.fetchrow(ROLLUP, g.unit, lo, hi, g.label, list(METRIC_TYPES))
    t = await conn.fetchrow(ROLLUP_TRACES, g.unit, lo, hi, g.label, list(TRACE_METRIC_TYPES))
    lg = await conn.fetchrow(ROLLUP_LOGS, g.unit, lo, hi, g.label, list(LOG_METRIC_TYPES))
    buckets = await conn.fetchval(BUCKETS, g.unit, lo, hi, list(APP_KINDS), app_lo)
    parts = (r, t, lg)
    return int(buckets), sum(int(p["rows"]) for p in parts), sum(int(p["changed"]) for p in parts)


async def run_rollup(
    conn: Connection,
    *,
    now: datetime | None = None,
    lookback_1m: timedelta = DEFAULT_LOOKBACK_1M,
    lookback_1h: timedelta = DEFAULT_LOOKBACK_1H,
    min_interval: timedelta = timedelta(0),
    statement_timeout_ms: int = 0,
) -> RollupResult:
    """Recompute the closed 1-minute and 1-hour buckets of the lookback windows, in one transaction
    (application metrics: the buckets that changed, over ``lookback_1m``; see :mod:`agent.ops.rollup_app`).

    Returns ``ran=False`` at once (writing nothing) when another session holds the rollup lock,
    or when a rollup finished less than ``min_interval`` ago. ``now`` defaults to the database's
    clock. Errors propagate; the transaction is then rolled back and the lock released. The
    statement timeout is ``SET LOCAL`` (0: none), so nothing outlives the transaction on a
    pooled connection.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        lock = await conn.fetchrow(LOCK, ROLLUP_LOCK_KEY)
        if not lock["locked"]:
            return RollupResult(ran=False, buckets=0, rows=0, reason="locked")
        at: datetime = now if now is not None else lock["db_now"]
        if await _ran_recently(conn, at, min_interval):
            return RollupResult(ran=False, buckets=0, rows=0, reason="recent")
        totals = [0, 0, 0]
        app_lo = truncate(at - lookback_1m, HOUR.width)
        for g, lookback in ((MINUTE, lookback_1m), (HOUR, lookback_1h)):
            for i, n in enumerate(await _rollup_width(conn, g, at, lookback, app_lo)):
                totals[i] += n
        app = await rollup_app(conn, at, lookback_1m)
        await conn.execute(MARK_RUN, *SYNC_KEY, at)
    return RollupResult(ran=True, buckets=totals[0], rows=totals[1] + app.rows, changed=totals[2] + app.changed)


async def _run_once(
    borrow: Callable[[], AbstractAsyncContextManager[Connection]],
    run: Callable[[Connection], Awaitable[RollupResult]],
    log: Any,
) -> None:
    """One guarded run: log the outcome, swallow every error (the next interval retries)."""
    started = time.monotonic()
    try:
        async with borrow() as conn:
            result = await run(conn)
    except Exception as exc:
        log.warning("rollup.failed", error=f"{type(exc).__name__}: {exc}")
        return
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    if result.ran:
        log.info("rollup.done", buckets=result.buckets, rows=result.rows, changed=result.changed,
                 duration_ms=elapsed_ms)
    else:
        log.debug("rollup.done", ran=False, reason=result.reason)


async def rollup_loop(
    borrow: Callable[[], AbstractAsyncContextManager[Connection]],
    interval_s: float,
    stop: asyncio.Event,
    log: Any,
    *,
    lookback_1m: timedelta = DEFAULT_LOOKBACK_1M,
    lookback_1h: timedelta = DEFAULT_LOOKBACK_1H,
    min_interval: timedelta | None = None,
    statement_timeout_ms: int = 0,
) -> None:
    """Run the rollup now and then every ``interval_s`` seconds until ``stop`` is set.

    ``borrow()`` lends a live connection for one run (the agent's jobs connection, which the ping
    and sync-status report share, one at a time); the loop neither closes nor keeps it. Failures
    are logged as ``rollup.failed`` and never end the loop; only cancellation does.
    ``min_interval`` (default 90 % of the interval) makes sidecars skip a rollup that another
    sidecar has just done.
    """
    skip_within = min_interval if min_interval is not None else timedelta(seconds=0.9 * interval_s)
    run = partial(run_rollup, lookback_1m=lookback_1m, lookback_1h=lookback_1h, min_interval=skip_within,
                  statement_timeout_ms=statement_timeout_ms)
    while not stop.is_set():
        await _run_once(borrow, run, log)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
