"""Application metrics: :func:`counter`, :func:`gauge` and :func:`histogram`, aggregated in the process.

Why aggregate here rather than write a line per call: a counter bumped on every cache lookup
would otherwise write as many lines as the app does lookups. Like the OpenTelemetry SDK and statsd
clients, each process keeps one aggregate per series (kind, name and attribute set) and a flusher
thread writes **one ``metric`` record per series per interval** (default 10 s, aligned to
multiples of the interval since the epoch, so that the rows of all processes line up), then
starts afresh: delta temporality, nothing cumulative to reset.

Why it is safe:

* **Nothing raises.** A value that is not a finite number (or a negative counter increment) is
  not recorded and counts as a drop in ``emit.stats()``; any internal failure is a drop too.
* **Threads.** One lock guards the aggregates; a call holds it for a dict lookup and an addition.
  The flusher swaps the aggregates out under the lock and renders and writes them outside it.
* **Processes.** Each process writes its own lines (through the same writer as every other
  record, so the file handling across processes is the writer's). After ``fork`` the child starts
  empty: the parent's pending aggregates are the parent's to write, never written twice. Each
  process has its own ``resource`` (``service.instance.id``, pid, host), so a gauge set in two
  processes is two series.
* **Exit.** :func:`flush` runs at ``emit.shutdown()`` and at interpreter exit (``atexit``, and
  ``multiprocessing``'s exit of a forked worker, which skips ``atexit``), so the last partial
  interval is written. A process killed with SIGKILL (or ending in a bare ``os._exit``) loses at
  most its current interval, as with any in-process aggregation.

Each record carries ``start_time`` (the first value of the series in this interval) and is
stamped with the time it is written (its end), so every value it aggregates lies between the two.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from agent import contract as c
from agent.emit.context import ACTIVE, TraceContext, otel_context
from agent.emit.histogram import ExpHistogram, bucket_index
from agent.emit.output import STATS, dumps, text_of, write_record
from agent.emit.records import iso

DEFAULT_INTERVAL_S: Final = 10.0
_INF: Final = math.inf


class _Series:
    """What one series carries besides its aggregate: its labels, first time and example ids."""

    __slots__ = ("attributes", "ids", "name", "start")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = attributes
        self.start = time.time()
        self.ids: TraceContext | None = None


class _Sum(_Series):
    __slots__ = ("count", "value")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        super().__init__(name, attributes)
        self.value: float = 0
        self.count = 0


class _Gauge(_Series):
    __slots__ = ("count", "max", "min", "value")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        super().__init__(name, attributes)
        self.value: float = 0
        self.count = 0
        self.min = _INF
        self.max = -_INF


class _Hist(_Series):
    __slots__ = ("hist", "top")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        super().__init__(name, attributes)
        self.hist = ExpHistogram()
        self.top = -_INF  # the value whose ids are kept: the largest (the slow request's trace)


def _resource(extra: dict[str, Any]) -> dict[str, Any]:
    """Who writes: OpenTelemetry's resource attributes for this process (``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES`` as the SDK reads them), plus what ``configure_metrics`` adds."""
    res: dict[str, Any] = {}
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            res[key.strip()] = value.strip()
    name = os.environ.get("OTEL_SERVICE_NAME") or res.get("service.name")
    res["service.name"] = name or f"unknown_service:{os.path.basename(sys.executable) or 'python'}"
    res["service.instance.id"] = str(uuid.uuid4())
    res["host.name"] = socket.gethostname()
    res["process.pid"] = os.getpid()
    res.update(extra)
    return res


class Registry:
    """The aggregates of this process, the flusher thread and the settings they share.

    One owner for each piece of state: calls add to the current aggregates under ``lock``;
    :meth:`take` swaps them for empty ones (under the lock) and hands them to whoever writes them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: dict[Any, _Sum] = {}
        self.gauges: dict[Any, _Gauge] = {}
        self.hists: dict[Any, _Hist] = {}
        self.interval_s = DEFAULT_INTERVAL_S
        self.extra: dict[str, Any] = {}
        self.resource = _resource(self.extra)
        self.flusher: Flusher | None = None

    def take(self) -> tuple[dict[Any, _Sum], dict[Any, _Gauge], dict[Any, _Hist]]:
        with self.lock:
            out = self.sums, self.gauges, self.hists
            self.sums, self.gauges, self.hists = {}, {}, {}
        return out

    def ensure_flusher(self) -> None:
        """Start the flusher if it is not running (first series, after a fork, after shutdown)."""
        with self.lock:
            started = self.flusher is None or not self.flusher.is_alive()
            if started:
                self.flusher = Flusher(self, self.interval_s)
                self.flusher.start()
        if started:
            _flush_at_multiprocessing_exit()

    def stop_flusher(self) -> None:
        with self.lock:
            flusher, self.flusher = self.flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.stop.set()
            flusher.join(timeout=5)

    def after_fork_in_child(self) -> None:
        """A forked child: new lock, nothing pending, no flusher, its own identity."""
        self.lock = threading.Lock()
        self.sums, self.gauges, self.hists = {}, {}, {}
        self.flusher = None
        self.resource = _resource(self.extra)


class Flusher(threading.Thread):
    """Writes every series once per interval, at multiples of the interval since the epoch."""

    def __init__(self, registry: Registry, interval_s: float) -> None:
        super().__init__(name="hypertail-metrics", daemon=True)
        self.registry = registry
        self.interval_s = interval_s
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self._until_boundary()):
            flush()

    def _until_boundary(self) -> float:
        now = time.time()
        return (math.floor(now / self.interval_s) + 1) * self.interval_s - now


REGISTRY: Final = Registry()


# --- recording ---------------------------------------------------------------------------------
# The three helpers are written out rather than shared, because every call counts on a hot path:
# a type check, the key, the current context, one lock, one dict lookup, an addition.

def _label(name: Any) -> str:
    if type(name) is str:
        return name
    STATS.add(coerced=1)
    return text_of(name)


def _text_key(name: Any, attributes: dict[str, Any]) -> Any:
    """The key when an attribute value is not hashable (a list, a dict): values as JSON text."""
    return _label(name), tuple((k, dumps(v)) for k, v in sorted(attributes.items()))


def _context() -> TraceContext | None:
    """The trace context current at the call, kept as the series' example ids (an OTel exemplar)."""
    active = ACTIVE.get()
    return active.ctx if active is not None else otel_context()


def _first(table: str, cls: type[_Series], key: Any, name: Any, attributes: dict[str, Any],
           add: Callable[..., None], *args: Any) -> None:
    """A series' first value in its interval, or a key that had to become text: create the series
    (labels cleaned, outside the lock), then add under the lock, looking the current table up there
    (the flusher may have swapped it; another thread may have created the series first)."""
    try:
        fresh = cls(_label(name), dict(attributes))
        r = REGISTRY
        with r.lock:
            s = getattr(r, table).setdefault(key, fresh)
            add(s, *args)
            running = r.flusher is not None
    except TypeError:  # an attribute value that cannot be a dict key
        _first(table, cls, _text_key(name, attributes), name, attributes, add, *args)
        return
    if not running:
        with contextlib.suppress(RuntimeError):  # no new threads at interpreter exit: atexit writes it
            REGISTRY.ensure_flusher()


def counter(name: str, value: float = 1, **attributes: Any) -> None:
    """Add ``value`` (default 1, never negative) to the counter ``name`` with these attributes.

    Cheap enough for a hot path: a dict lookup and an addition under a lock. The total since the
    last interval is written once per interval as a ``metric`` record of kind ``counter``.
    """
    try:
        t = type(value)
        if not ((t is int and value >= 0) or (t is float and 0.0 <= value < _INF)):  # NaN fails too
            STATS.add(dropped=1)
            return
        key = (name, tuple(sorted(attributes.items()))) if attributes else name
        ctx = _context()
        r = REGISTRY
        try:
            with r.lock:
                s = r.sums.get(key)
                if s is not None:
                    s.value += value
                    s.count += 1
                    if ctx is not None:
                        s.ids = ctx
                    return
        except TypeError:
            pass  # not hashable: _first keys it on text
        _first("sums", _Sum, key, name, attributes, _add_sum, value, ctx)
    except Exception:
        STATS.add(dropped=1)


def _add_sum(s: _Sum, value: float, ctx: TraceContext | None) -> None:
    s.value += value
    s.count += 1
    if ctx is not None:
        s.ids = ctx


def gauge(name: str, value: float, **attributes: Any) -> None:
    """Set the gauge ``name`` (with these attributes) to ``value``: a queue's depth, a pool's size.

    The last value of each interval is written (with the interval's min and max and how many
    times it was set), as a ``metric`` record of kind ``gauge``.
    """
    try:
        t = type(value)
        if not (t is int or (t is float and -_INF < value < _INF)):
            STATS.add(dropped=1)
            return
        key = (name, tuple(sorted(attributes.items()))) if attributes else name
        ctx = _context()
        r = REGISTRY
        try:
            with r.lock:
                s = r.gauges.get(key)
                if s is not None:
                    _set_gauge(s, value, ctx)
                    return
        except TypeError:
            pass
        _first("gauges", _Gauge, key, name, attributes, _set_gauge, value, ctx)
    except Exception:
        STATS.add(dropped=1)


def _set_gauge(s: _Gauge, value: float, ctx: TraceContext | None) -> None:
    s.value = value
    s.count += 1
    if value < s.min:
        s.min = value
    if value > s.max:
        s.max = value
    if ctx is not None:
        s.ids = ctx


def histogram(name: str, value: float, **attributes: Any) -> None:
    """Record ``value`` (a duration, a size) in the histogram ``name`` with these attributes.

    Each interval writes count, sum, min, max and exponential buckets from which p50/p95/p99 are
    read within 1.083 % of the true value (see :mod:`agent.emit.histogram`). The trace current at
    the interval's largest value is kept with it.
    """
    try:
        t = type(value)
        if not (t is int or (t is float and -_INF < value < _INF)):
            STATS.add(dropped=1)
            return
        index = bucket_index(value) if value else 0
        key = (name, tuple(sorted(attributes.items()))) if attributes else name
        ctx = _context()
        r = REGISTRY
        try:
            with r.lock:
                s = r.hists.get(key)
                if s is not None:
                    _add_hist(s, value, index, ctx)
                    return
        except TypeError:
            pass
        _first("hists", _Hist, key, name, attributes, _add_hist, value, index, ctx)
    except Exception:
        STATS.add(dropped=1)


def _add_hist(s: _Hist, value: float, index: int, ctx: TraceContext | None) -> None:
    s.hist.add(value, index)
    if ctx is not None and value >= s.top:
        s.top, s.ids = value, ctx


# --- writing -----------------------------------------------------------------------------------

def _base(kind: str, s: _Series, resource: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"name": s.name, "kind": kind, "attributes": s.attributes, "resource": resource,
                              "start_time": iso(datetime.fromtimestamp(s.start, UTC))}
    if s.ids is not None:
        record["trace_id"] = s.ids.trace_id
        if s.ids.span_id is not None:
            record["span_id"] = s.ids.span_id
    return record


def _records(sums: dict[Any, _Sum], gauges: dict[Any, _Gauge], hists: dict[Any, _Hist],
             resource: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in sums.values():
        out.append({**_base(c.COUNTER, s, resource), "temporality": c.DELTA, "value": s.value, "count": s.count})
    for g in gauges.values():
        out.append({**_base(c.GAUGE, g, resource), "value": g.value, "count": g.count, "min": g.min, "max": g.max})
    for h in hists.values():
        hist = h.hist
        out.append({**_base(c.HISTOGRAM, h, resource), "temporality": c.DELTA, "count": hist.count,
                    "sum": hist.sum, "min": hist.min, "max": hist.max, "buckets": hist.buckets()})
    return out


_flush_lock = threading.Lock()  # one writer at a time, so intervals leave in order


def flush() -> int:
    """Write every series' aggregate now (one ``metric`` record each) and start a new interval.

    Called by the flusher at each interval, by ``emit.shutdown()`` and at exit; safe to call from
    the application too (before a fork, say). Returns the number of records written.
    """
    try:
        with _flush_lock:
            resource = REGISTRY.resource
            records = _records(*REGISTRY.take(), resource)
            for record in records:
                record[c.WRITTEN_AT] = iso(datetime.now(UTC))
                write_record(c.METRIC, record)
            return len(records)
    except Exception:
        STATS.add(dropped=1)
        return 0


def configure_metrics(*, interval_s: float = DEFAULT_INTERVAL_S, **resource: Any) -> None:
    """How often each series is written (seconds; default 10), and what to add to ``resource``.

    ``resource`` keys describe the process, OpenTelemetry style, e.g. ``service.name`` given as
    ``**{"service.name": "rag-api"}`` (``OTEL_SERVICE_NAME`` is read by default). An interval that
    divides 60 keeps every row inside one minute of the rollup. Pending values are written first.
    """
    if not (type(interval_s) in (int, float) and 0 < interval_s < _INF):
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    flush()
    REGISTRY.stop_flusher()
    with REGISTRY.lock:
        REGISTRY.interval_s = float(interval_s)
        REGISTRY.extra = dict(resource)
        REGISTRY.resource = _resource(REGISTRY.extra)


def shutdown_metrics() -> None:
    """Write what is pending and stop the flusher (``emit.shutdown()``); a later call starts it again."""
    REGISTRY.stop_flusher()
    flush()


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        flush()


_exit_hooks = {"pid": 0}  # the process whose multiprocessing exit already flushes


def _flush_at_multiprocessing_exit() -> None:
    """A ``multiprocessing`` child started by fork ends with ``os._exit``, past ``atexit``; its
    finalizers still run, so the flush is registered there too (once per process, and only in a
    process that records metrics, after multiprocessing has reset the child's finalizers)."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or _exit_hooks["pid"] == os.getpid():
        return
    _exit_hooks["pid"] = os.getpid()
    util.Finalize(None, _at_exit, exitpriority=0)


def _before_fork() -> None:  # the order flush() takes them in
    _flush_lock.acquire()
    REGISTRY.lock.acquire()


def _after_fork_in_parent() -> None:
    REGISTRY.lock.release()
    _flush_lock.release()


def _after_fork_in_child() -> None:
    global _flush_lock
    _flush_lock = threading.Lock()
    REGISTRY.after_fork_in_child()


atexit.register(_at_exit)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
