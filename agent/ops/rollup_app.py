"""The application's own metrics (``observability.metrics``) in ``metrics_aggregates`` (issue 26).

Why not the spans' way (recompute every closed bucket of the lookback window on every run): a
histogram row carries a bucket set per series, process and interval, far more data than a span's
one value. Measured on a shared 2-core machine, 30 histogram series-processes at 10-second
intervals (518,400 rows over two days) took 884 s per run that way; this way a run takes about
0.4 s once caught up (the minute that closed, and an hour once an hour). So:

* **Only what changed.** Each computed bucket keeps the count and id-hash sum of the rows it was
  computed from (metric type ``app.rows``); a run first compares them with the rows there now (no
  unnesting) and recomputes only the buckets that differ: normally the minute that just closed.
  Late rows (an agent that was down) change their bucket's fingerprint and are picked up by the
  next run, as with spans.
* **Bounded work per run.** Changed minutes are taken newest first until they hold
  :data:`ROWS_PER_RUN` metric rows (at least one minute), so a backlog after an outage is worked
  off over several runs instead of one that outlasts the statement timeout (and, being one
  transaction with the spans' rollup, would take it down too).
* **Hours from minutes.** An hour's percentiles are merged from its minutes' merged buckets
  (stored in ``metrics_aggregates.buckets``), so an hour costs its series' 60 minutes, not every
  process's every interval; its count, sums, min, max and last come from the rows. An hour is
  recomputed only once none of its minutes is still waiting (it would merge stale minutes).
* **Window.** Both widths look back over ``lookback_1m`` (from the start of that hour); rows older
  than that are not re-aggregated by the periodic run (run :func:`~agent.ops.rollup.run_rollup`
  once with a longer ``lookback_1m`` to backfill).

This module only speaks SQL through the connection it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from agent.ops.rollup_app_sql import CHANGED, ROLLUP_HOURS, ROLLUP_MINUTES

KINDS: Final = ("counter", "updown_counter", "gauge", "histogram")
# The metric types the app rollup owns (app.rows: the rows a bucket was computed from).
METRIC_TYPES: Final = (*(f"app.{kind}" for kind in KINDS), "app.rows")
# About 4 s of database time for histogram rows of ~40 buckets on a shared, loaded 2-core machine
# (20,000 took 17 s there: too close to the default 30 s statement timeout).
ROWS_PER_RUN: Final = 5_000
_HOUR: Final = timedelta(hours=1)


class Connection(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class AppRollup:
    """What one run did: buckets recomputed (minutes, hours), rows written, rows changed, and
    minutes left for the next run."""

    minutes: int
    hours: int
    rows: int
    changed: int
    pending: int


def _floor(ts: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return epoch + ((ts - epoch) // width) * width


async def _changed(conn: Connection, unit: str, lo: datetime, hi: datetime, label: str) -> list[tuple[datetime, int]]:
    """The buckets to recompute, newest first, with their numbers of rows."""
    return [(r["bucket"], int(r["n"])) for r in await conn.fetch(CHANGED, unit, lo, hi, label, list(KINDS))]


def _budget(buckets: list[tuple[datetime, int]]) -> int:
    """How many of ``buckets`` (newest first) this run takes: up to ROWS_PER_RUN rows, at least one."""
    rows = 0
    for i, (_, n) in enumerate(buckets):
        rows += n
        if rows > ROWS_PER_RUN:
            return max(i, 1)
    return len(buckets)


async def rollup_app(conn: Connection, now: datetime, lookback: timedelta) -> AppRollup:
    """Recompute the changed closed minutes and hours of the window ``[hour of now - lookback, now)``."""
    lo = _floor(now - lookback, _HOUR)
    minutes_hi, hours_hi = _floor(now, timedelta(minutes=1)), _floor(now, _HOUR)
    minutes = await _changed(conn, "minute", lo, minutes_hi, "1m")
    take = _budget(minutes)
    todo, pending = [m for m, _ in minutes[:take]], [m for m, _ in minutes[take:]]
    rows = changed = 0
    if todo:
        r = await conn.fetchrow(ROLLUP_MINUTES, "minute", lo, minutes_hi, "1m", list(KINDS), todo,
                                list(METRIC_TYPES), 60.0)
        rows, changed = int(r["rows"]), int(r["changed"])
    waiting = {_floor(m, _HOUR) for m in pending}
    hours = [h for h, _ in await _changed(conn, "hour", lo, hours_hi, "1h") if h not in waiting]
    if hours:
        r = await conn.fetchrow(ROLLUP_HOURS, "hour", lo, hours_hi, "1h", list(KINDS), hours,
                                list(METRIC_TYPES), 3600.0)
        rows, changed = rows + int(r["rows"]), changed + int(r["changed"])
    return AppRollup(len(todo), len(hours), rows, changed, len(pending))
