"""agent.emit's metrics: aggregation per series, one line per series per interval, flush at
shutdown and at exit, fork safety, never raising; and the rows those lines parse into."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import contract as c
from agent import emit
from agent.emit.histogram import ExpHistogram, bucket_index, bucket_value
from agent.model import Row
from agent.parse import parse
from tests.e2e.harness import wait_until

ROOT = Path(__file__).resolve().parents[3]
ALPHA = c.HISTOGRAM_RELATIVE_ERROR


def metric_records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().splitlines():
        rec = orjson.loads(line)
        if rec.get("record_type") == "metric":
            out.append(rec)
    return out


@pytest.fixture
def metrics_log(tmp_path: Path) -> Iterator[Path]:
    """emit configured to a file, with an interval long enough that only explicit flushes write."""
    path = tmp_path / "app.log"
    emit.configure(path)
    emit.configure_metrics(interval_s=3600)
    yield path
    emit.shutdown()
    emit.configure_metrics()


# --- aggregation -------------------------------------------------------------------------------

def test_counters_sum_per_name_and_attribute_set(metrics_log: Path) -> None:
    for _ in range(1000):
        emit.counter("cache.hits")
    emit.counter("cache.hits", 5, route="/q", method="GET")
    emit.counter("cache.hits", 2.5, method="GET", route="/q")  # same set, other keyword order
    emit.counter("cache.hits", route="/other")
    emit.counter("cache.misses", 0)
    assert emit.flush_metrics() == 4
    got = {(r["name"], orjson.dumps(r["attributes"], option=orjson.OPT_SORT_KEYS)): r
           for r in metric_records(metrics_log)}
    assert got["cache.hits", b"{}"]["value"] == 1000 and got["cache.hits", b"{}"]["count"] == 1000
    q = got["cache.hits", b'{"method":"GET","route":"/q"}']
    assert (q["value"], q["count"], q["kind"], q["temporality"]) == (7.5, 2, "counter", "delta")
    assert got["cache.hits", b'{"route":"/other"}']["value"] == 1
    assert got["cache.misses", b"{}"]["value"] == 0


def test_one_line_per_series_per_flush_and_deltas_between(metrics_log: Path) -> None:
    emit.counter("jobs", 3)
    emit.gauge("depth", 7)
    emit.flush_metrics()
    emit.counter("jobs", 4)
    emit.flush_metrics()
    assert emit.flush_metrics() == 0  # nothing new: no line
    recs = metric_records(metrics_log)
    assert [(r["name"], r.get("value")) for r in recs] == [("jobs", 3), ("depth", 7), ("jobs", 4)]
    for r in recs:
        assert r["start_time"] <= r["timestamp"].replace("Z", "+00:00")


def test_gauge_keeps_last_min_max_and_count(metrics_log: Path) -> None:
    for v in (5, -2, 9.5, 3):
        emit.gauge("queue.depth", v, queue="email")
    emit.flush_metrics()
    (r,) = metric_records(metrics_log)
    assert (r["kind"], r["value"], r["min"], r["max"], r["count"]) == ("gauge", 3, -2, 9.5, 4)
    assert "temporality" not in r


def test_histogram_counts_sums_and_buckets(metrics_log: Path) -> None:
    values = [0.5, 1, 2, 3, 0, -4, 1e6, 1e-6, 250.25]
    for v in values:
        emit.histogram("latency_ms", v, route="/q")
    emit.flush_metrics()
    (r,) = metric_records(metrics_log)
    assert (r["count"], r["sum"], r["min"], r["max"]) == (9, sum(values), -4, 1e6)
    b = r["buckets"]
    assert b["scale"] == c.HISTOGRAM_SCALE and b["zero_count"] == 1
    assert sum(b["positive"]["bucket_counts"]) == 7 and b["negative"]["bucket_counts"] == [1]
    hit = {b["positive"]["offset"] + i for i, n in enumerate(b["positive"]["bucket_counts"]) if n}
    assert hit == {bucket_index(v) for v in values if v > 0}


def test_exotic_attributes_and_names_are_kept_not_raised(metrics_log: Path) -> None:
    emit.counter("tags", 1, tags=["a", "b"], meta={"k": 1})
    emit.counter("tags", 1, meta={"k": 1}, tags=["a", "b"])
    emit.counter(42)  # type: ignore[arg-type]
    emit.flush_metrics()
    recs = metric_records(metrics_log)
    assert {(r["name"], r["value"]) for r in recs} == {("tags", 2), ("42", 1)}
    assert recs[0]["attributes"] == {"tags": ["a", "b"], "meta": {"k": 1}}


@pytest.mark.parametrize("call", [
    lambda: emit.counter("c", -1), lambda: emit.counter("c", math.nan), lambda: emit.counter("c", math.inf),
    lambda: emit.counter("c", "3"), lambda: emit.counter("c", True), lambda: emit.gauge("g", None),
    lambda: emit.gauge("g", math.inf), lambda: emit.histogram("h", math.nan), lambda: emit.histogram("h", "1"),
])
def test_values_that_are_not_finite_numbers_are_dropped_and_counted(metrics_log: Path, call: Any) -> None:
    before = emit.stats()["dropped"]
    call()  # never raises
    assert emit.stats()["dropped"] == before + 1
    assert emit.flush_metrics() == 0


def test_the_current_trace_rides_along(metrics_log: Path) -> None:
    with emit.trace("request") as t, emit.span("work") as s:
        emit.counter("in_trace")
        emit.histogram("slow", 900)
        big = (t.trace_id, s.span_id)
    with emit.trace("other"):
        emit.histogram("slow", 10)  # smaller: the largest value's trace stays
    emit.counter("outside")
    emit.flush_metrics()
    got = {r["name"]: r for r in metric_records(metrics_log)}
    assert (got["in_trace"]["trace_id"], got["in_trace"]["span_id"]) == big
    assert (got["slow"]["trace_id"], got["slow"]["span_id"]) == big
    assert "trace_id" not in got["outside"]


def test_threads_lose_nothing(metrics_log: Path) -> None:
    def work(i: int) -> None:
        for _ in range(5000):
            emit.counter("hits", worker=i % 2)
            emit.histogram("h", 1.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit.flush_metrics()
    got = defaultdict(int)
    for r in metric_records(metrics_log):
        got[r["name"]] += r["count"]
    assert got == {"hits": 20_000, "h": 20_000}


def test_nothing_is_lost_while_the_flusher_swaps_intervals(tmp_path: Path) -> None:
    """Threads recording while the flusher takes interval after interval (every 2 ms): every value is in
    exactly one line, also a series' first value of an interval, which races the swap."""
    path = tmp_path / "app.log"
    emit.configure(path)
    emit.configure_metrics(interval_s=0.002)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between any two bytecodes, as on a busy machine
    try:
        def work(i: int) -> None:
            for n in range(20_000):
                emit.counter("hits", 1, worker=i, parity=n % 2)
                emit.histogram("h", 0.5)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
        emit.shutdown()
        emit.configure_metrics()
    recs = metric_records(path)
    assert len(recs) > 8  # many intervals
    assert sum(r["value"] for r in recs if r["name"] == "hits") == 80_000
    assert sum(r["count"] for r in recs if r["name"] == "h") == 80_000


# --- interval, shutdown, exit, fork --------------------------------------------------------------

def test_the_flusher_writes_each_interval_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    emit.configure(path)
    emit.configure_metrics(interval_s=0.05)
    try:
        emit.counter("ticks", 2)
        wait_until(lambda: len(metric_records(path)) == 1, timeout=10, what="the first interval")
        emit.counter("ticks", 3)
        wait_until(lambda: len(metric_records(path)) == 2, timeout=10, what="the second interval")
    finally:
        emit.shutdown()
        emit.configure_metrics()
    assert [r["value"] for r in metric_records(path)] == [2, 3]


def test_shutdown_writes_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    emit.configure(path)
    emit.configure_metrics(interval_s=3600)
    emit.counter("at.shutdown", 11)
    emit.workflow("w", "done")
    emit.shutdown()
    emit.configure_metrics()
    assert [(r["name"], r["value"]) for r in metric_records(path)] == [("at.shutdown", 11)]


EXIT_APP = """
import os, sys
from agent import emit
emit.configure(sys.argv[1])
emit.configure_metrics(interval_s=3600)
emit.counter("at.exit", 5, mode=sys.argv[2])
emit.histogram("h", 2.0)
if sys.argv[2] == "fork":
    emit.counter("parent.before.fork", 1)
    pid = os.fork()
    if pid == 0:
        emit.counter("child", 2)
        sys.exit(0)  # the child's own atexit flush: its values, never the parent's
    os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("mode", ["plain", "fork"])
def test_values_are_written_at_exit_once(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "app.log"
    subprocess.run([sys.executable, "-c", EXIT_APP, str(path), mode], check=True, cwd=ROOT, timeout=60)
    got = defaultdict(list)
    for r in metric_records(path):
        got[r["name"]].append((r.get("value"), r["count"], r["resource"]["process.pid"]))
    assert got["at.exit"] == [(5, 1, got["at.exit"][0][2])]
    assert [n for _, n, _ in got["h"]] == [1]
    if mode == "fork":
        assert [v for v, _, _ in got["parent.before.fork"]] == [1]
        ((value, _, child_pid),) = got["child"]
        assert value == 2 and child_pid != got["at.exit"][0][2]


MP_APP = """
import multiprocessing, sys
from agent import emit

def work(n, path, method):
    if method == "spawn":  # a fresh interpreter: the worker sets up emit itself
        emit.configure(path)
    for _ in range(n):
        emit.counter("mp.work")

if __name__ == "__main__":
    emit.configure(sys.argv[1])
    emit.configure_metrics(interval_s=3600)
    ctx = multiprocessing.get_context(sys.argv[2])
    procs = [ctx.Process(target=work, args=(100 * (i + 1), sys.argv[1], sys.argv[2])) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers_write_their_values_when_they_end(tmp_path: Path, method: str) -> None:
    """A forked multiprocessing worker ends with os._exit, past atexit: its values are written anyway."""
    path, app = tmp_path / "app.log", tmp_path / "mp_app.py"
    app.write_text(MP_APP)
    subprocess.run([sys.executable, str(app), str(path), method], check=True, cwd=ROOT, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    got = sorted(r["value"] for r in metric_records(path))
    assert got == [100, 200, 300]


def test_configure_metrics_refuses_a_bad_interval() -> None:
    for bad in (0, -1, math.nan, "10"):
        with pytest.raises(ValueError, match="interval_s"):
            emit.configure_metrics(interval_s=bad)  # type: ignore[arg-type]


def test_resource_names_the_process(metrics_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=from-attrs")
    emit.configure_metrics(interval_s=3600, **{"service.version": "1.2"})
    emit.counter("x")
    emit.flush_metrics()
    res = metric_records(metrics_log)[0]["resource"]
    assert res["service.name"] == "from-attrs" and res["deployment.environment"] == "prod"
    assert res["service.version"] == "1.2" and res["process.pid"] == os.getpid()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rag-api")
    emit.configure_metrics(interval_s=3600)
    emit.counter("x")
    emit.flush_metrics()
    assert metric_records(metrics_log)[1]["resource"]["service.name"] == "rag-api"


# --- the lines as the agent reads them --------------------------------------------------------

def test_metric_lines_parse_into_metrics_rows(metrics_log: Path) -> None:
    emit.counter("hits", 3, route="/q")
    emit.gauge("depth", -1.5)
    emit.histogram("lat", 12.5)
    emit.flush_metrics()
    rows = [parse(line) for line in metrics_log.read_bytes().splitlines()]
    assert all(isinstance(r, Row) and r.table == "metrics" and not r.warnings for r in rows), rows
    by = {dict(zip(c.COLUMNS["metrics"], r.values, strict=True))["name"]: dict(zip(c.COLUMNS["metrics"], r.values,
                                                                                    strict=True))
          for r in rows if isinstance(r, Row)}
    assert by["hits"]["value"] == 3.0 and orjson.loads(by["hits"]["attributes"]) == {"route": "/q"}
    assert by["depth"]["value"] == -1.5 and by["depth"]["kind"] == "gauge"
    assert by["lat"]["count"] == 1 and orjson.loads(by["lat"]["buckets"])["scale"] == c.HISTOGRAM_SCALE
    assert by["lat"]["metadata"] == "{}" and by["lat"]["start_time"] <= by["lat"]["timestamp"]


# --- the histogram's guarantee ---------------------------------------------------------------------

def nearest_rank(values: list[float], q: Fraction) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def sketch_quantile(h: ExpHistogram, q: Fraction) -> float:
    """What the SQL function computes (observability.histogram_quantiles), for positive values."""
    rank = max(1, math.ceil(q * h.count))
    seen = 0
    for index in sorted(h.pos):
        seen += h.pos[index]
        if seen >= rank:
            return bucket_value(index)
    raise AssertionError("rank beyond the buckets")


positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
powers_of_two = st.integers(-1000, 1000).map(lambda e: math.ldexp(1.0, e))


@given(st.lists(st.one_of(positive, powers_of_two, positive.map(lambda v: v * (1 + 1e-15))), min_size=1,
                max_size=300), st.sampled_from([Fraction(1, 100), Fraction(1, 2), Fraction(95, 100),
                                                Fraction(99, 100), Fraction(1)]))
def test_a_quantile_from_the_buckets_is_within_the_stated_relative_error(values: list[float], q: Fraction) -> None:
    h = ExpHistogram()
    for v in values:
        h.add(v, bucket_index(v))
    exact = nearest_rank(values, q)
    assert abs(sketch_quantile(h, q) - exact) <= ALPHA * exact * (1 + 1e-12)


@given(powers_of_two)
def test_powers_of_two_sit_at_the_top_of_their_bucket(v: float) -> None:
    i = bucket_index(v)
    step = 2.0 ** -c.HISTOGRAM_SCALE
    assert 2.0 ** (i * step) < v <= 2.0 ** ((i + 1) * step)


def test_an_interval_too_wide_for_its_buckets_is_written_at_a_smaller_scale() -> None:
    h = ExpHistogram()
    for v in (1e-300, 1.0, 1e300):
        h.add(v, bucket_index(v))
    b = h.buckets()
    assert b["scale"] < c.HISTOGRAM_SCALE and len(b["positive"]["bucket_counts"]) <= c.HISTOGRAM_MAX_BUCKETS
    assert sum(b["positive"]["bucket_counts"]) == 3
    step = 2.0 ** -b["scale"]
    for k, n in enumerate(b["positive"]["bucket_counts"]):  # each value still in its (wider) bucket
        if n:
            i = b["positive"]["offset"] + k
            assert any(2.0 ** (i * step) < v <= 2.0 ** ((i + 1) * step) for v in (1e-300, 1.0, 1e300))

