"""Percentile rollups of spans into ``observability.metrics_aggregates`` (design §6), plus
request durations per operation type (``trace.duration_ms``) and log lines per level (``log.lines``).

Why it works the way it does:

* **Recompute, don't increment.** Percentiles cannot be merged from partial results, so every
  run recomputes every *closed* bucket inside a lookback window from the spans themselves
  (1-minute buckets over ``lookback_1m``, 1-hour buckets over ``lookback_1h``). A span that
  arrives late, or a span whose start record is merged with its end record later, lands in a
  bucket that the next run recomputes anyway. A span older than the lookback is not
  re-aggregated (raise the lookback, or run :func:`run_rollup` once with a long one, to backfill).
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

# pg_try_advisory_xact_lock key: the bytes of "hytrollu", unlikely to collide with an app's keys.
ROLLUP_LOCK_KEY = 0x6879_7472_6F6C_6C75
DEFAULT_LOOKBACK_1M = timedelta(hours=2)
DEFAULT_LOOKBACK_1H = timedelta(days=2)
METRIC_TYPES = ("span.duration_ms", "span.input_tokens", "span.output_tokens", "span.cost_usd")
# trace.duration_ms: one value per request (trace), by operation type; see _FRESH_TRACES.
SYNC_KEY = ("hypertail", "rollup", "metrics_aggregates")  # provider_sync_status row of the job


class Connection(Protocol):
    """The part of an ``asyncpg.Connection`` the rollup uses."""

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


_LOCK = "SELECT pg_try_advisory_xact_lock($1::bigint) AS locked, now() AS db_now"

_LAST_RUN = """
SELECT last_synced_at FROM observability.provider_sync_status
WHERE provider_name = $1 AND entity_type = $2 AND entity_id = $3
"""

_MARK_RUN = """
INSERT INTO observability.provider_sync_status AS p
    (provider_name, entity_type, entity_id, last_synced_at, sync_status, error_message, retry_count, updated_at)
VALUES ($1, $2, $3, $4, 'synced', NULL, 0, now())
ON CONFLICT (provider_name, entity_type, entity_id) DO UPDATE SET
    last_synced_at = EXCLUDED.last_synced_at, sync_status = 'synced', error_message = NULL,
    retry_count = 0, updated_at = now()
"""

# $1 date_trunc unit, $2 window start, $3 window end (exclusive), $4 granularity label,
# $5 metric types. Traces are looked up from one day before the window (a span's trace starts
# before it) to one hour after it (clock skew between services); DISTINCT ON guards against a
# trace stored twice under two start times.
_FRESH_SPANS = """
WITH tr AS (
    SELECT DISTINCT ON (trace_id) trace_id, operation_type, kb_id
    FROM observability.traces
    WHERE "timestamp" >= $2::timestamptz - interval '1 day' AND "timestamp" < $3::timestamptz + interval '1 hour'
    ORDER BY trace_id, "timestamp" DESC
),
fresh AS (
    SELECT date_trunc($1::text, s."timestamp", 'UTC') AS bucket,
           m.metric_type,
           jsonb_strip_nulls(jsonb_build_object(
               'granularity', $4::text, 'span_type', s.span_type, 'model', s.model,
               'operation_type', tr.operation_type, 'kb_id', tr.kb_id)) AS dimensions,
           count(*) AS n, sum(m.v) AS total, min(m.v) AS lo, max(m.v) AS hi, avg(m.v) AS mean,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY m.v) AS pct
    FROM observability.spans AS s
    LEFT JOIN tr ON tr.trace_id = s.trace_id
    CROSS JOIN LATERAL (VALUES
        ('span.duration_ms', s.duration_ms::float8),
        ('span.input_tokens', s.input_tokens::float8),
        ('span.output_tokens', s.output_tokens::float8),
        ('span.cost_usd', s.cost_usd::float8)
    ) AS m(metric_type, v)
    WHERE s."timestamp" >= $2 AND s."timestamp" < $3 AND m.v IS NOT NULL
    GROUP BY 1, 2, GROUPING SETS ((), (s.span_type), (s.model), (tr.operation_type), (tr.kb_id))
    -- the overall group (no dimension grouped: all four GROUPING bits set), and every
    -- per-dimension group whose value is known (a NULL model is not a model)
    HAVING GROUPING(s.span_type, s.model, tr.operation_type, tr.kb_id) = 15
        OR num_nonnulls(s.span_type, s.model, tr.operation_type, tr.kb_id) = 1
),
"""


# Distinct buckets with data in either statement (a trace's bucket usually has spans too).
_BUCKETS = """
SELECT count(*) FROM (
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.spans
    WHERE "timestamp" >= $2 AND "timestamp" < $3
      AND num_nonnulls(duration_ms, input_tokens, output_tokens, cost_usd) > 0
    UNION
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.traces
    WHERE "timestamp" >= $2 AND "timestamp" < $3 AND duration_ms IS NOT NULL
    UNION
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.logs
    WHERE "timestamp" >= $2 AND "timestamp" < $3
) b
"""

# Requests: one value per trace (its duration), per operation type, so that the dashboards'
# "requests and p95 latency per operation type" count requests, not the spans inside them.
_FRESH_TRACES = """
WITH fresh AS (
    SELECT date_trunc($1::text, t."timestamp", 'UTC') AS bucket,
           'trace.duration_ms'::text AS metric_type,
           jsonb_strip_nulls(jsonb_build_object('granularity', $4::text, 'operation_type', t.operation_type))
               AS dimensions,
           count(*) AS n, sum(t.duration_ms::float8) AS total, min(t.duration_ms::float8) AS lo,
           max(t.duration_ms::float8) AS hi, avg(t.duration_ms::float8) AS mean,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY t.duration_ms::float8) AS pct
    FROM observability.traces AS t
    WHERE t."timestamp" >= $2 AND t."timestamp" < $3 AND t.duration_ms IS NOT NULL
    GROUP BY 1, 2, GROUPING SETS ((), (t.operation_type))
    HAVING GROUPING(t.operation_type) = 1 OR t.operation_type IS NOT NULL
),
"""

# Log volume: ordinary log lines per level (a count; the value statistics stay NULL).
_FRESH_LOGS = """
WITH fresh AS (
    SELECT date_trunc($1::text, l."timestamp", 'UTC') AS bucket,
           'log.lines'::text AS metric_type,
           jsonb_strip_nulls(jsonb_build_object('granularity', $4::text, 'level', l.level)) AS dimensions,
           count(*) AS n, count(*)::float8 AS total, NULL::float8 AS lo, NULL::float8 AS hi,
           NULL::float8 AS mean, NULL::float8[] AS pct
    FROM observability.logs AS l
    WHERE l."timestamp" >= $2 AND l."timestamp" < $3
    GROUP BY 1, 2, GROUPING SETS ((), (l.level))
    HAVING GROUPING(l.level) = 1 OR l.level IS NOT NULL
),
"""

# The write half shared by all three: upsert the fresh groups, empty the vanished ones ($5: the
# metric types the statement owns, so neither empties the other's rows).
_WRITE = """
upserted AS (
    INSERT INTO observability.metrics_aggregates AS a
        (bucket, metric_type, dimensions, count, sum, min, max, avg, p50, p95, p99, updated_at)
    SELECT bucket, metric_type, dimensions, n, total, lo, hi, mean, pct[1], pct[2], pct[3], now()
    FROM fresh
    ON CONFLICT (bucket, metric_type, dimensions) DO UPDATE SET
        count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
        avg = EXCLUDED.avg, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
        updated_at = EXCLUDED.updated_at
    WHERE (a.count, a.sum, a.min, a.max, a.avg, a.p50, a.p95, a.p99)
          IS DISTINCT FROM (EXCLUDED.count, EXCLUDED.sum, EXCLUDED.min, EXCLUDED.max,
                            EXCLUDED.avg, EXCLUDED.p50, EXCLUDED.p95, EXCLUDED.p99)
    RETURNING 1
),
emptied AS (
    UPDATE observability.metrics_aggregates AS a
    SET count = 0, sum = NULL, min = NULL, max = NULL, avg = NULL, p50 = NULL, p95 = NULL, p99 = NULL,
        updated_at = now()
    WHERE a.bucket >= $2 AND a.bucket < $3 AND a.count <> 0
      AND a.metric_type = ANY($5::text[])
      AND a.dimensions ->> 'granularity' = $4::text
      AND NOT EXISTS (SELECT 1 FROM fresh f
                      WHERE f.bucket = a.bucket AND f.metric_type = a.metric_type AND f.dimensions = a.dimensions)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS rows,
       (SELECT count(DISTINCT bucket) FROM fresh) AS buckets,
       (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS changed
"""
_ROLLUP = _FRESH_SPANS + _WRITE
_ROLLUP_TRACES = _FRESH_TRACES + _WRITE
_ROLLUP_LOGS = _FRESH_LOGS + _WRITE
TRACE_METRIC_TYPES = ("trace.duration_ms",)
LOG_METRIC_TYPES = ("log.lines",)


async def _ran_recently(conn: Connection, now: datetime, min_interval: timedelta) -> bool:
    """Whether any agent finished a rollup less than ``min_interval`` before ``now``.

    A last run stamped in the future (a clock stepped back) does not count, so it cannot stop
    the rollup until the clock catches up.
    """
    if min_interval <= timedelta(0):
        return False
    last: datetime | None = await conn.fetchval(_LAST_RUN, *SYNC_KEY)
    return last is not None and timedelta(0) <= now - last < min_interval


async def _rollup_width(
    conn: Connection, g: Granularity, now: datetime, lookback: timedelta
) -> tuple[int, int, int]:
    """Recompute one width's closed buckets in its window: (buckets, rows, changed)."""
    lo, hi = window(now, g, lookback)
    if lo >= hi:
        return 0, 0, 0
    r = await conn.fetchrow(_ROLLUP, g.unit, lo, hi, g.label, list(METRIC_TYPES))
    t = await conn.fetchrow(_ROLLUP_TRACES, g.unit, lo, hi, g.label, list(TRACE_METRIC_TYPES))
    lg = await conn.fetchrow(_ROLLUP_LOGS, g.unit, lo, hi, g.label, list(LOG_METRIC_TYPES))
    buckets = await conn.fetchval(_BUCKETS, g.unit, lo, hi)
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
    """Recompute the closed 1-minute and 1-hour buckets of the lookback windows, in one transaction.

    Returns ``ran=False`` at once (writing nothing) when another session holds the rollup lock,
    or when a rollup finished less than ``min_interval`` ago. ``now`` defaults to the database's
    clock. Errors propagate; the transaction is then rolled back and the lock released. The
    statement timeout is ``SET LOCAL`` (0: none), so nothing outlives the transaction on a
    pooled connection.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        lock = await conn.fetchrow(_LOCK, ROLLUP_LOCK_KEY)
        if not lock["locked"]:
            return RollupResult(ran=False, buckets=0, rows=0, reason="locked")
        at: datetime = now if now is not None else lock["db_now"]
        if await _ran_recently(conn, at, min_interval):
            return RollupResult(ran=False, buckets=0, rows=0, reason="recent")
        totals = [0, 0, 0]
        for g, lookback in ((MINUTE, lookback_1m), (HOUR, lookback_1h)):
            for i, n in enumerate(await _rollup_width(conn, g, at, lookback)):
                totals[i] += n
        await conn.execute(_MARK_RUN, *SYNC_KEY, at)
    return RollupResult(ran=True, buckets=totals[0], rows=totals[1], changed=totals[2])


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
