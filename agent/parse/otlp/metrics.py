"""An OTLP metric -> one ``observability.metrics`` row per data point (docs/metrics.md §2).

=================  ==================================================================================
column             from the metric and its data point
=================  ==================================================================================
``id``             derived from the line's id and the point's place (see :mod:`.common`)
``timestamp``      ``timeUnixNano`` (required: the end of the point's interval)
``start_time``     ``startTimeUnixNano`` (the start of a sum's or histogram's interval)
``name``, ``unit`` the metric's (``name`` required, at most 255 characters; ``unit`` at most 63)
``kind``           a ``sum``: ``counter`` when ``isMonotonic``, else ``updown_counter``; ``gauge``;
                   ``histogram`` and ``exponentialHistogram``: ``histogram``; ``summary``: ``summary``
                   (stored, left out of the rollup)
``temporality``    ``aggregationTemporality`` 1 ``delta``, 2 ``cumulative`` (a running total since
                   ``start_time``: shown as the latest value, never summed); gauges none
``attributes``     the point's attributes; ``resource`` the resource's
``value``          a sum's or gauge's ``asDouble``/``asInt``
``count``, ``sum``, a histogram's (and a summary's ``count``/``sum``)
``min``, ``max``
``buckets``        exponential: ``{"scale", "zero_count", "positive": {"offset", "bucket_counts"},
                   "negative": {...}}``; explicit bounds: ``{"explicit_bounds", "bucket_counts"}``
``trace_id``,      the point's first exemplar's
``span_id``
``metadata``       ``otel.scope.name``/``version``, ``description``; a summary's ``quantile_values``;
                   an exponential histogram's ``zero_threshold`` when not 0
=================  ==================================================================================
"""

from __future__ import annotations

from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.otlp.common import Bad, Group, LineIds, expected
from agent.parse.otlp.schema import (
    Buckets,
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from agent.parse.otlp.values import attributes, enum, integer, nanos, number, otlp_id, text, time_of

_new: Final = tuple.__new__
_METRICS: Final = c.TABLE_OF_KIND[c.METRIC]
_TEMPORALITY: Final = {"AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1,
                       "AGGREGATION_TEMPORALITY_CUMULATIVE": 2}
_TEMPORALITY_NAMES: Final = {1: c.DELTA, 2: c.CUMULATIVE}
SUMMARY: Final = "summary"
Point = NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint | SummaryDataPoint


def metric_rows(metric: Metric, g: Group, ids: LineIds, out: list[Row]) -> None:
    """Append a row per data point of ``metric``; raises :class:`~.common.Bad` (adding nothing)
    when a point cannot be one (no name, no time)."""
    name = metric.name
    if not name or len(name) > 255:
        raise expected("name", "a metric name of 1 to 255 characters", name)
    unit = text(metric.unit, 63) if metric.unit and len(metric.unit) <= 63 else None
    meta: dict[str, Any] = {}
    if metric.description:
        meta["description"] = metric.description
    if metric.unit and unit is None:
        meta[c.INVALID_MARKER] = {"unit": metric.unit}
    head = _Head(text(name, 255), unit, g.resource_json, g.scoped(meta, resource=False))
    rows: list[Row] = []
    if metric.sum is not None:
        s = metric.sum
        kind = c.COUNTER if s.is_monotonic else c.UPDOWN_COUNTER
        temporality = _TEMPORALITY_NAMES.get(enum(s.aggregation_temporality, _TEMPORALITY))
        rows += [_row(ids, head, kind, temporality, p, _number(p), None) for p in s.data_points]
    if metric.gauge is not None:
        rows += [_row(ids, head, c.GAUGE, None, p, _number(p), None) for p in metric.gauge.data_points]
    if metric.histogram is not None:
        h = metric.histogram
        temporality = _TEMPORALITY_NAMES.get(enum(h.aggregation_temporality, _TEMPORALITY))
        rows += [_row(ids, head, c.HISTOGRAM, temporality, p, None, _explicit(p)) for p in h.data_points]
    if metric.exponential_histogram is not None:
        e = metric.exponential_histogram
        temporality = _TEMPORALITY_NAMES.get(enum(e.aggregation_temporality, _TEMPORALITY))
        rows += [_row(ids, head, c.HISTOGRAM, temporality, p, None, _exponential(p)) for p in e.data_points]
    if metric.summary is not None:
        rows += [_row(ids, head, SUMMARY, None, p, None, None) for p in metric.summary.data_points]
    out.extend(rows)


class _Head:
    """What a metric's points share: name, unit, the resource's JSON, the metadata (and its JSON)."""

    __slots__ = ("meta", "meta_json", "name", "resource", "unit")

    def __init__(self, name: str, unit: str | None, resource: str, meta: dict[str, Any]) -> None:
        self.name, self.unit, self.resource, self.meta = name, unit, resource, meta
        self.meta_json = pf.json_text(meta)


def _row(ids: LineIds, head: _Head, kind: str, temporality: str | None, p: Point, value: float | None,
         buckets: dict[str, Any] | None) -> Row:
    at = time_of(nanos(p.time_unix_nano))
    if at is None:
        raise Bad("timeUnixNano", f"expected the time of a point of {head.name!r}, got {pf.shorten(p.time_unix_nano)}")
    count = total = low = high = None
    if not isinstance(p, NumberDataPoint):
        count = _count(integer(p.count))
        total = number(p.sum)
        if not isinstance(p, SummaryDataPoint):
            low, high = number(p.min), number(p.max)
    extra = _extra(p)
    meta = pf.json_text({**head.meta, **extra}) if extra else head.meta_json
    trace_id, span_id = _exemplar(p.exemplars if not isinstance(p, SummaryDataPoint) else [])
    values = (ids(), at, time_of(nanos(p.start_time_unix_nano)), head.name, kind, temporality, head.unit,
              pf.json_text(attributes(p.attributes)), head.resource, value, count, total, low, high,
              pf.json_text(buckets) if buckets is not None else None, trace_id, span_id, meta)
    return _new(Row, (_METRICS, values, False, ()))


def _extra(p: Point) -> dict[str, Any]:
    if isinstance(p, SummaryDataPoint) and p.quantile_values:
        return {"quantile_values": [{"quantile": number(q.quantile), "value": number(q.value)}
                                    for q in p.quantile_values]}
    if isinstance(p, ExponentialHistogramDataPoint) and number(p.zero_threshold):
        return {"zero_threshold": number(p.zero_threshold)}
    return {}


def _number(p: NumberDataPoint) -> float | None:
    if p.as_double is not None:
        return number(p.as_double)
    n = integer(p.as_int)
    return float(n) if n is not None else None


def _count(n: int | None) -> int | None:
    return n if n is not None and 0 <= n <= c.INT8_MAX else None


def _counts(values: list[int | str]) -> list[int] | None:
    out: list[int] = []
    for v in values:
        n = integer(v)
        if n is None or n < 0:
            return None
        out.append(n)
    return out


def _explicit(p: HistogramDataPoint) -> dict[str, Any] | None:
    counts = _counts(p.bucket_counts)
    bounds = [number(b) for b in p.explicit_bounds]
    if counts is None or any(b is None for b in bounds) or not counts:
        return None
    return {"explicit_bounds": bounds, "bucket_counts": counts}


def _side(b: Buckets | None) -> dict[str, Any] | None:
    if b is None:
        return None
    counts = _counts(b.bucket_counts)
    return None if counts is None else {"offset": b.offset, "bucket_counts": counts}


def _exponential(p: ExponentialHistogramDataPoint) -> dict[str, Any] | None:
    zero = integer(p.zero_count)
    out: dict[str, Any] = {"scale": p.scale, "zero_count": zero if zero is not None and zero >= 0 else 0}
    for key, side in (("positive", p.positive), ("negative", p.negative)):
        value = _side(side)
        if value is not None and value["bucket_counts"]:
            out[key] = value
    return out


def _exemplar(exemplars: list[Exemplar]) -> tuple[str | None, str | None]:
    for e in exemplars:
        trace_id = otlp_id(e.trace_id, 16)
        if trace_id is not None:
            return trace_id, otlp_id(e.span_id, 8)
    return None, None
