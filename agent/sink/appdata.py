"""Read application metrics and workflows for ``hypertail metrics`` and ``hypertail workflows``.

Series are merged in SQL across processes and intervals, so a histogram's percentiles come from
all its buckets at once (``observability.histogram_quantiles``, the function the rollup uses),
never from an average of per-interval percentiles. Workflows come from the view
``observability.workflows``, which orders each workflow's transitions by when they were recorded,
not by when they arrived. Driver errors become one-line :class:`AppDataReadError` s, so the
command prints one line and exits 1, never a traceback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from agent.config import DatabaseSettings, mask_dsn
from agent.errors import CommandError
from agent.sink.classify import DRIVER_ERRORS, one_line
from agent.sink.connect import connect
from agent.views.model import MetricFilter, MetricSeries, WorkflowFilter, WorkflowList, WorkflowView


class AppDataReadError(CommandError):
    """The database could not be read (unreachable, no schema, no privilege)."""


# Series written within the window. ``total``: a counter's increase or a histogram's sum (delta
# rows; a cumulative row carries a running total, shown as ``last``); ``last``: the value of the
# row with the latest start; ``low``/``high``: the range of gauge values and histogram values.
METRICS_SQL = """
SELECT m.name, m.kind, coalesce(m.attributes, '{}'::jsonb)::text AS attributes,
       count(*) AS rows, coalesce(sum(m.count), 0)::bigint AS n,
       min(coalesce(m.start_time, m."timestamp")) AS first, max(m."timestamp") AS last_at,
       sum(CASE WHEN m.kind = 'histogram' THEN m.sum ELSE m.value END)
           FILTER (WHERE m.temporality IS DISTINCT FROM 'cumulative') AS total,
       (array_agg(m.value ORDER BY coalesce(m.start_time, m."timestamp") DESC, m."timestamp" DESC, m.id DESC))[1]
           AS last,
       min(coalesce(m.min, m.value)) AS low, max(coalesce(m.max, m.value)) AS high,
       CASE WHEN m.kind = 'histogram' THEN
           observability.histogram_quantiles(array_agg(m.buckets), sum(m.count), ARRAY[0.5, 0.95, 0.99]) END AS pct
FROM observability.metrics AS m
WHERE m."timestamp" >= now() - $1::interval
  AND ($2::text IS NULL OR strpos(m.name, $2) > 0)
  AND ($3::text IS NULL OR m.kind = $3)
GROUP BY m.name, m.kind, coalesce(m.attributes, '{}'::jsonb)
ORDER BY m.name, m.kind, coalesce(m.attributes, '{}'::jsonb)::text
LIMIT $4
"""

_WORKFLOW_WHERE = """
WHERE ($1::interval IS NULL OR w.since >= now() - $1::interval)
  AND ($2::text IS NULL OR w.state = $2)
  AND ($3::text IS NULL OR w.workflow_type = $3)
"""
PER_STATE_SQL = "SELECT w.state, count(*) AS n FROM observability.workflows AS w" + _WORKFLOW_WHERE + \
    "GROUP BY w.state ORDER BY w.state"
# Longest in their state first within a state: the stuck ones are what a reader looks for.
WORKFLOWS_SQL = """
SELECT w.workflow_id, w.workflow_type, w.state, w.since, w.time_in_state, w.started_at, w.transitions,
       w.consistent, w.trace_id, w.history::text AS history
FROM observability.workflows AS w""" + _WORKFLOW_WHERE + """
ORDER BY w.state, w.since, w.workflow_id
LIMIT $4
"""


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _clamp(value: float | None, low: float | None, high: float | None) -> float | None:
    """A histogram quantile within the values' range (it can only get closer to the true one)."""
    if value is None:
        return None
    if high is not None:
        value = min(value, high)
    if low is not None:
        value = max(value, low)
    return value


def _series(r: asyncpg.Record) -> MetricSeries:
    first, last_at = _utc(r["first"]), _utc(r["last_at"])
    total = r["total"]
    span = (last_at - first).total_seconds()
    pct: list[Any] = list(r["pct"] or (None, None, None))
    low, high = r["low"], r["high"]
    counter = r["kind"] in ("counter", "updown_counter")
    return MetricSeries(
        name=r["name"], kind=r["kind"], attributes=orjson.loads(r["attributes"]), rows=int(r["rows"]),
        count=int(r["n"]), first=first, last_at=last_at, total=total,
        rate=total / span if counter and total is not None and span > 0 else None,
        last=r["last"], low=low, high=high,
        p50=_clamp(pct[0], low, high), p95=_clamp(pct[1], low, high), p99=_clamp(pct[2], low, high),
    )


def _workflow(r: asyncpg.Record) -> WorkflowView:
    history = orjson.loads(r["history"]) if r["history"] else []
    return WorkflowView(
        workflow_id=r["workflow_id"], workflow_type=r["workflow_type"], state=r["state"], since=_utc(r["since"]),
        time_in_state=r["time_in_state"], started_at=_utc(r["started_at"]), transitions=int(r["transitions"]),
        consistent=bool(r["consistent"]), trace_id=r["trace_id"], history=tuple(history),
    )


async def read_metrics(conn: asyncpg.Connection, f: MetricFilter) -> list[MetricSeries]:
    """The series that match ``f``, by name, kind and attributes."""
    return [_series(r) for r in await conn.fetch(METRICS_SQL, f.since, f.name, f.kind, f.limit)]


async def read_workflows(conn: asyncpg.Connection, f: WorkflowFilter) -> WorkflowList:
    """How many workflows are in each state, and the first ``f.limit`` of them by state."""
    args = (f.since, f.state, f.workflow_type)
    per_state = {r["state"]: int(r["n"]) for r in await conn.fetch(PER_STATE_SQL, *args)}
    rows = await conn.fetch(WORKFLOWS_SQL, *args, f.limit)
    return WorkflowList(per_state, tuple(_workflow(r) for r in rows))


async def fetch_metrics(db: DatabaseSettings, dsn: str, f: MetricFilter) -> list[MetricSeries]:
    """Connect, read the series, close; raises :class:`AppDataReadError`."""
    try:
        conn = await connect(db, dsn)
        try:
            return await read_metrics(conn, f)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise AppDataReadError(f"cannot read metrics from {mask_dsn(dsn)}: {one_line(exc)}") from None


async def fetch_workflows(db: DatabaseSettings, dsn: str, f: WorkflowFilter) -> WorkflowList:
    """Connect, read the workflows, close; raises :class:`AppDataReadError`."""
    try:
        conn = await connect(db, dsn)
        try:
            return await read_workflows(conn, f)
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise AppDataReadError(f"cannot read workflows from {mask_dsn(dsn)}: {one_line(exc)}") from None
