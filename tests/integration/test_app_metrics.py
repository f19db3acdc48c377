"""Application metrics and workflows in the database (issue 26), on the test server's mode.

Lines are made the way ``agent.emit`` makes them (its histogram class), parsed by the real parser
and committed by the real writer, so a replayed batch is checked as the agent would meet it.
The rollup's app-metric rows, the ``hypertail metrics`` read and the ``observability.workflows``
view are then held to values computed here in Python from what the lines carried.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import asyncpg
import orjson
import pytest

from agent import contract as c
from agent.emit.histogram import ExpHistogram, bucket_index
from agent.model import Row
from agent.ops import rollup_app as rollup_app_module
from agent.ops.rollup import run_rollup
from agent.ops.rollup_app import METRIC_TYPES as APP_METRIC_TYPES
from agent.parse import parse
from agent.sink.appdata import read_metrics, read_workflows
from agent.views.model import MetricFilter, WorkflowFilter
from tests.factories import FileWriter, file_ref
from tests.integration.support import writer_on

NOW = datetime(2026, 11, 1, 12, 30, 30, tzinfo=UTC)
ALPHA = c.HISTOGRAM_RELATIVE_ERROR
_FILES = itertools.count(100)
QS = (Fraction(1, 2), Fraction(95, 100), Fraction(99, 100))


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass
class Interval:
    """One process's values of one series over one interval, and the line it becomes."""

    name: str
    kind: str
    attributes: dict[str, Any]
    start: datetime
    end: datetime
    values: list[float] = field(default_factory=list)
    pid: int = 1

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "record_type": "metric", "event": "metric", "level": "info", "name": self.name, "kind": self.kind,
            "attributes": self.attributes, "resource": {"process.pid": self.pid}, "start_time": iso(self.start),
            "timestamp": iso(self.end), "count": len(self.values),
        }
        if self.kind == "counter":
            rec.update(temporality="delta", value=sum(self.values))
        elif self.kind == "gauge":
            rec.update(value=self.values[-1], min=min(self.values), max=max(self.values))
        else:
            h = ExpHistogram()
            for v in self.values:
                h.add(v, bucket_index(v) if v else 0)
            rec.update(temporality="delta", sum=h.sum, min=h.min, max=h.max, buckets=h.buckets())
        return rec


def make_intervals(seed: int = 26) -> list[Interval]:
    """Three processes, 10-second intervals over 12:27-12:29 and 11:40, three series each: a
    counter with two attribute sets, a gauge, a latency histogram (dyadic values: sums are exact)."""
    rnd = random.Random(seed)
    out = []
    for minute in (datetime(2026, 11, 1, 12, m, tzinfo=UTC) for m in (27, 28, 29)):
        for start in (minute + timedelta(seconds=s) for s in range(0, 60, 10)):
            for pid in (1, 2, 3):
                end = start + timedelta(seconds=10, milliseconds=rnd.randint(0, 40))  # written just after
                for route in ("/a", "/b"):
                    out.append(Interval("jobs", "counter", {"route": route}, start, end,
                                        [rnd.randint(0, 5) for _ in range(rnd.randint(1, 4))], pid))
                out.append(Interval("depth", "gauge", {}, start + timedelta(seconds=pid), end,
                                    [rnd.randint(0, 100) for _ in range(3)], pid))
                out.append(Interval("latency_ms", "histogram", {"route": "/a"}, start, end,
                                    [round(rnd.lognormvariate(3, 1.2) * 256) / 256 for _ in range(40)], pid))
    old = datetime(2026, 11, 1, 11, 40, tzinfo=UTC)
    out.append(Interval("jobs", "counter", {"route": "/a"}, old, old + timedelta(seconds=10), [7], 1))
    return out


def lines_of(intervals: list[Interval]) -> list[bytes]:
    return [orjson.dumps(i.record()) for i in intervals]


async def commit_lines(conn: asyncpg.Connection, lines: list[bytes], fw: FileWriter | None = None) -> FileWriter:
    """Parse each line as the agent does and commit them in one batch with the real writer (by
    default as the next lines of a new file). Without an app-given id, a row's id is derived from
    the line's bytes here (the agent derives it from file and offset)."""
    fw = fw or FileWriter(file_ref(ino=next(_FILES)))
    items = []
    for data in lines:
        row = parse(data)
        assert isinstance(row, Row) and not row.warnings, (row, data)
        items.append(fw.item(row, data))
    await (await writer_on(conn, "app-metrics-test")).commit(items)
    return fw


def nearest_rank(values: list[float], q: Fraction) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_close(got: float | None, exact: float, where: object) -> None:
    assert got is not None, where
    assert abs(got - exact) <= ALPHA * abs(exact) * (1 + 1e-9), (where, got, exact)


async def aggregates(conn: asyncpg.Connection) -> dict[tuple[datetime, str, str], asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM observability.metrics_aggregates WHERE metric_type = ANY($1::text[]) "
                            "AND metric_type <> 'app.rows'", list(APP_METRIC_TYPES))
    return {(r["bucket"], r["metric_type"], json.dumps(json.loads(r["dimensions"]), sort_keys=True)): r
            for r in rows}


def dims(granularity: str, name: str, attributes: dict[str, Any] | None) -> str:
    d: dict[str, Any] = {"granularity": granularity, "name": name}
    if attributes is not None:
        d["attributes"] = attributes
    return json.dumps(d, sort_keys=True)


@pytest.fixture
async def intervals(conn: asyncpg.Connection) -> list[Interval]:
    data = make_intervals()
    await commit_lines(conn, lines_of(data))
    return data


# --- storage -----------------------------------------------------------------------------------

async def test_a_replayed_batch_is_one_row_per_line(conn: asyncpg.Connection) -> None:
    data = make_intervals()[:50]
    transitions = [orjson.dumps({"record_type": "workflow_transition", "workflow_id": f"w{i}", "state": "a",
                                 "timestamp": iso(NOW)}) for i in range(5)]
    first = await commit_lines(conn, [*lines_of(data), *transitions])
    await commit_lines(conn, [*lines_of(data), *transitions], FileWriter(first.file))  # read again after a crash
    await commit_lines(conn, [*lines_of(data), *transitions])  # the same lines in another file: the same ids
    assert await conn.fetchval("SELECT count(*) FROM observability.metrics") == 50
    assert await conn.fetchval("SELECT count(*) FROM observability.workflow_transitions") == 5


# --- the rollup --------------------------------------------------------------------------------

def expected_groups(intervals: list[Interval], granularity: str) -> dict[tuple[datetime, str, str], list[Interval]]:
    """The intervals of every (bucket, metric type, dimensions) the rollup must write."""
    width = timedelta(minutes=1) if granularity == "1m" else timedelta(hours=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    groups: dict[tuple[datetime, str, str], list[Interval]] = defaultdict(list)
    for i in intervals:
        bucket = epoch + (i.start - epoch) // width * width  # by the interval's start, not its write time
        groups[bucket, f"app.{i.kind}", dims(granularity, i.name, i.attributes)].append(i)
        groups[bucket, f"app.{i.kind}", dims(granularity, i.name, None)].append(i)
    return groups


async def assert_rollup_equals(conn: asyncpg.Connection, intervals: list[Interval], granularity: str) -> None:
    """Every app aggregate of ``granularity`` against what the intervals carried, in Python."""
    width = 60.0 if granularity == "1m" else 3600.0
    groups = expected_groups(intervals, granularity)
    got = {k: v for k, v in (await aggregates(conn)).items() if json.loads(k[2])["granularity"] == granularity}
    assert set(got) == set(groups)
    for k, members in groups.items():
        row, values = got[k], [v for i in members for v in i.values]
        assert row["count"] == len(values), k
        kind = k[1]
        if kind == "app.counter":
            assert row["sum"] == sum(values) and row["rate"] == sum(values) / width, k
            assert (row["last"], row["p95"], row["min"]) == (None, None, None)
        elif kind == "app.gauge":
            latest = max(members, key=lambda i: (i.start, i.end))
            assert row["last"] == latest.values[-1] and row["sum"] is None and row["rate"] is None, k
            assert (row["min"], row["max"]) == (min(values), max(values)), k
            assert row["avg"] == pytest.approx(sum(i.values[-1] for i in members) / len(members)), k
        else:
            assert (row["sum"], row["min"], row["max"]) == (sum(values), min(values), max(values)), k
            assert row["avg"] == pytest.approx(sum(values) / len(values)), k
            for q, name in zip(QS, ("p50", "p95", "p99"), strict=True):
                assert_close(row[name], nearest_rank(values, q), (k, name))
                assert min(values) <= row[name] <= max(values)


@pytest.mark.parametrize("granularity", ["1m", "1h"])
async def test_rollup_gives_counter_rates_last_gauges_and_histogram_percentiles(
        conn: asyncpg.Connection, intervals: list[Interval], granularity: str) -> None:
    result = await run_rollup(conn, now=NOW + timedelta(hours=1))
    assert result.ran
    await assert_rollup_equals(conn, intervals, granularity)


async def test_a_backlog_is_worked_off_over_several_runs_and_ends_exact(
        conn: asyncpg.Connection, intervals: list[Interval], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a small budget per run, each run recomputes the newest changed minutes only, an hour
    waits until all its minutes are done, and the last run leaves what one big run would."""
    monkeypatch.setattr(rollup_app_module, "ROWS_PER_RUN", 100)  # about two minutes of the fixture's rows
    at = NOW + timedelta(hours=1)
    done = []
    for _ in range(12):
        done.append(await rollup_app_module.rollup_app(conn, at, timedelta(hours=2)))
        if done[-1].pending == 0 and done[-1].minutes == 0:
            break
    assert done[0].pending > 0 and done[0].hours == 0  # the hours wait for their minutes
    assert [d.pending for d in done[:-1]] == sorted((d.pending for d in done[:-1]), reverse=True)
    assert sum(d.hours for d in done) == 2  # 11:00 and 12:00, each once
    for granularity in ("1m", "1h"):
        await assert_rollup_equals(conn, intervals, granularity)


async def test_app_metrics_hours_are_recomputed_over_the_1m_lookback_only(conn: asyncpg.Connection) -> None:
    """Histograms carry a bucket set per row: the periodic run recomputes their hours only where the
    1-minute lookback reaches (2 hours by default); a longer lookback_1m backfills the rest."""
    old = datetime(2026, 11, 1, 9, 10, tzinfo=UTC)  # inside the 2-day hour lookback, outside 2 hours
    await commit_lines(conn, lines_of([Interval("late", "counter", {}, old, old + timedelta(seconds=10), [4])]))
    await run_rollup(conn, now=NOW)
    assert not [k for k in await aggregates(conn) if '"late"' in k[2]]
    await run_rollup(conn, now=NOW, lookback_1m=timedelta(hours=4))
    hour = (datetime(2026, 11, 1, 9, tzinfo=UTC), "app.counter", dims("1h", "late", None))
    assert (await aggregates(conn))[hour]["sum"] == 4


async def test_rollup_twice_changes_nothing_and_a_late_row_updates_its_bucket(
        conn: asyncpg.Connection, intervals: list[Interval]) -> None:
    at = NOW + timedelta(hours=1)
    await run_rollup(conn, now=at)
    assert (await run_rollup(conn, now=at)).changed == 0
    start = datetime(2026, 11, 1, 12, 28, 30, tzinfo=UTC)
    late = Interval("jobs", "counter", {"route": "/a"}, start, start + timedelta(seconds=10), [1000], 9)
    await commit_lines(conn, lines_of([late]))
    await run_rollup(conn, now=at)
    k = (datetime(2026, 11, 1, 12, 28, tzinfo=UTC), "app.counter", dims("1m", "jobs", {"route": "/a"}))
    before = sum(sum(i.values) for i in intervals
                 if i.name == "jobs" and i.attributes == {"route": "/a"} and i.start.minute == 28)
    assert (await aggregates(conn))[k]["sum"] == before + 1000


@pytest.mark.parametrize("buckets", [
    {"scale": "five", "positive": {"offset": "x", "bucket_counts": [1.5, "2"]}},
    {"scale": 5, "positive": {"offset": 3, "bucket_counts": [1, -2]}},
    {"scale": 5, "positive": {"offset": 99_999_999, "bucket_counts": [1]}},  # beyond any double
    {"scale": 40}, [1, 2], "scale", {"explicit_bounds": [1, 10], "bucket_counts": [0, 1, 0]},
], ids=["types", "negative-count", "offset", "scale", "array", "string", "explicit-bounds"])
async def test_buckets_that_give_no_percentile_cost_their_group_only_that(
        conn: asyncpg.Connection, intervals: list[Interval], buckets: Any) -> None:
    """The parser stores any JSON in `buckets`; a row whose buckets are malformed (or OTLP explicit
    bounds) is counted, and its groups get no percentile rather than one of part of the data. The
    rollup and `hypertail metrics` never fail on it."""
    start = datetime(2026, 11, 1, 12, 29, 5, tzinfo=UTC)
    odd = {**Interval("latency_ms", "histogram", {"route": "/a"}, start, start + timedelta(seconds=5), [5.0]).record(),
           "buckets": buckets}
    await commit_lines(conn, [orjson.dumps(odd)])
    assert await conn.fetchval("SELECT count(*) FROM hypertail.dead_letters") == 0
    assert (await run_rollup(conn, now=NOW + timedelta(hours=1))).ran
    got = await aggregates(conn)
    for granularity, bucket in (("1m", datetime(2026, 11, 1, 12, 29, tzinfo=UTC)),
                                ("1h", datetime(2026, 11, 1, 12, tzinfo=UTC))):
        spoiled = got[bucket, "app.histogram", dims(granularity, "latency_ms", None)]
        counted = [i for i in intervals if i.name == "latency_ms" and (granularity == "1h" or i.start.minute == 29)]
        assert spoiled["p95"] is None and spoiled["count"] == 1 + sum(len(i.values) for i in counted)
    fine = got[datetime(2026, 11, 1, 12, 28, tzinfo=UTC), "app.histogram", dims("1m", "latency_ms", None)]
    assert fine["p95"] is not None
    (series,) = await read_metrics(conn, MetricFilter(since=timedelta(days=3650), name="latency_ms"))
    assert series.p95 is None and series.count == 1 + sum(len(i.values) for i in intervals if i.name == "latency_ms")


async def test_cumulative_counters_are_not_summed(conn: asyncpg.Connection) -> None:
    start = datetime(2026, 11, 1, 12, 10, tzinfo=UTC)
    rows = []
    for k, total in enumerate((100, 150, 190)):  # an OTLP cumulative sum: running totals
        rec = Interval("otel.requests", "counter", {}, start, start + timedelta(seconds=10 * (k + 1)), [0]).record()
        rec.update(temporality="cumulative", value=total, count=None)
        rows.append(orjson.dumps({key: v for key, v in rec.items() if v is not None}))
    await commit_lines(conn, rows)
    await run_rollup(conn, now=NOW)
    assert not [k for k in await aggregates(conn) if "otel.requests" in k[2]]
    (series,) = await read_metrics(conn, MetricFilter(since=timedelta(days=3650), name="otel."))
    assert (series.total, series.last, series.rate) == (None, 190, None)


# --- what `hypertail metrics` reads --------------------------------------------------------------

async def test_read_metrics_merges_processes_and_intervals(conn: asyncpg.Connection,
                                                           intervals: list[Interval]) -> None:
    got = {(s.name, json.dumps(s.attributes, sort_keys=True)): s
           for s in await read_metrics(conn, MetricFilter(since=timedelta(days=3650)))}
    by: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    for i in intervals:
        by[i.name, json.dumps(i.attributes, sort_keys=True)].append(i)
    assert set(got) == set(by)
    for k, members in by.items():
        s, values = got[k], [v for i in members for v in i.values]
        assert (s.count, s.rows) == (len(values), len(members)), k
        if s.kind == "counter":
            span = (max(i.end for i in members) - min(i.start for i in members)).total_seconds()
            assert s.total == sum(values) and s.rate == pytest.approx(sum(values) / span), k
        elif s.kind == "gauge":
            assert s.last == max(members, key=lambda i: (i.start, i.end)).values[-1], k
            assert (s.low, s.high) == (min(values), max(values))
        else:
            assert (s.total, s.low, s.high) == (sum(values), min(values), max(values))
            for q, p in zip(QS, (s.p50, s.p95, s.p99), strict=True):
                assert_close(p, nearest_rank(values, q), (k, q))
    only = await read_metrics(conn, MetricFilter(since=timedelta(days=3650), name="lat", kind="histogram"))
    assert [s.name for s in only] == ["latency_ms"]


async def test_quantiles_merge_histograms_of_different_scales(conn: asyncpg.Connection) -> None:
    """A row at a smaller scale (an OTLP exponential histogram, or an interval too wide) merges with
    scale-5 rows at the smaller scale: the bound is then that scale's."""
    rnd = random.Random(3)
    values = [rnd.lognormvariate(2, 1) for _ in range(2000)]
    fine, coarse = ExpHistogram(), ExpHistogram()
    for n, v in enumerate(values):
        (fine if n % 2 else coarse).add(v, bucket_index(v))
    b = coarse.buckets()
    halved: dict[int, int] = defaultdict(int)
    for k, n in enumerate(b["positive"]["bucket_counts"]):
        halved[(b["positive"]["offset"] + k) >> 2] += n
    lo = min(halved)
    b4 = {"scale": b["scale"] - 2, "zero_count": 0,
          "positive": {"offset": lo, "bucket_counts": [halved.get(lo + k, 0) for k in range(max(halved) - lo + 1)]}}
    got = await conn.fetchval("SELECT observability.histogram_quantiles($1::jsonb[], $2, $3::numeric[])",
                              [json.dumps(fine.buckets()), json.dumps(b4)], len(values), [0.5, 0.95, 0.99])
    base = 2 ** (2 ** -(c.HISTOGRAM_SCALE - 2))
    for q, p in zip(QS, got, strict=True):
        exact = nearest_rank(values, q)
        assert abs(p - exact) <= (base - 1) / (base + 1) * exact * (1 + 1e-9), (q, p, exact)


# --- workflows -----------------------------------------------------------------------------------

def transition(wid: str, state: str, at: datetime, seq: int, from_state: str | None = None,
               **extra: Any) -> bytes:
    rec = {"record_type": "workflow_transition", "workflow_id": wid, "state": state, "seq": seq,
           "timestamp": iso(at), "workflow_type": "document", **extra}
    if from_state is not None:
        rec["from_state"] = from_state
    return orjson.dumps(rec)


async def test_the_current_state_is_the_latest_transition_whatever_the_arrival_order(
        conn: asyncpg.Connection) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    steps = ("uploaded", "parsed", "embedded", "indexed")
    lines = []
    for w in range(20):
        prev = None
        for k, state in enumerate(steps[: 1 + w % 4]):
            # two processes take turns; process B's seq counter is far ahead of process A's
            seq = (1000 + k) if k % 2 else k
            lines.append(transition(f"doc-{w}", state, t0 + timedelta(seconds=10 * k + w), seq, prev))
            prev = state
    same_us = t0 + timedelta(seconds=500)  # one process, two transitions in one microsecond
    lines += [transition("fast", "b", same_us, 8, "a"), transition("fast", "a", same_us, 7)]
    lines.append(transition("skewed", "created", t0 - timedelta(seconds=5), 1))
    lines.append(transition("skewed", "queued", t0, 2, "created"))
    lines.append(transition("skewed", "done", t0 - timedelta(seconds=1), 9, "queued"))  # its host's clock is behind
    fw = await commit_lines(conn, lines[::-1][:30])  # latest first, in two batches
    await commit_lines(conn, lines[::-1][30:], fw)
    wl = await read_workflows(conn, WorkflowFilter(limit=1000))
    got = {w.workflow_id: w for w in wl.workflows}
    for w in range(20):
        view = got[f"doc-{w}"]
        assert (view.state, view.transitions) == (steps[w % 4], 1 + w % 4), w
        assert [h["state"] for h in view.history] == list(steps[: 1 + w % 4])
        assert view.consistent and view.workflow_type == "document"
        assert view.since == t0 + timedelta(seconds=10 * (w % 4) + w)
        assert timedelta(minutes=9) < view.time_in_state < timedelta(minutes=11)
        assert [h["seconds"] for h in view.history[:-1]] == [10.0] * (w % 4) and view.history[-1]["seconds"] is None
    assert got["fast"].state == "b" and got["fast"].consistent
    # ordered by time, "done" (from "queued") comes before "queued": the view says so rather than guess
    assert got["skewed"].state == "queued" and not got["skewed"].consistent
    assert wl.per_state == {"uploaded": 5, "parsed": 5, "embedded": 5, "indexed": 5, "b": 1, "queued": 1}
    failed = await read_workflows(conn, WorkflowFilter(state="indexed", limit=2))
    assert failed.per_state == {"indexed": 5} and len(failed.workflows) == 2
    none = await read_workflows(conn, WorkflowFilter(since=timedelta(seconds=1)))
    assert none.per_state == {} and none.workflows == ()
