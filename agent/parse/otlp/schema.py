"""OTLP/JSON as msgspec Structs: the shapes of ``TracesData``, ``LogsData`` and ``MetricsData``.

The OTLP JSON encoding (opentelemetry-proto's ``docs/specification.md``, "JSON Protobuf Encoding")
is proto3's JSON mapping with two deviations: field names are lowerCamelCase only, and trace and
span ids are hex, not base64. What a receiver must accept, and so what these types allow:

* every field may be absent (proto3 leaves out default values: an ``INTERNAL`` span has no
  ``kind``, an unset status is ``{}``), so every field has its proto default;
* 64-bit integers (``*UnixNano``, ``intValue``, counts) as decimal strings or as numbers;
* enums (``kind``, ``status.code``, ``severityNumber``, ``aggregationTemporality``) as integers
  or as their names (``"SPAN_KIND_CLIENT"``);
* doubles as numbers or as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
* unknown fields, which are ignored (a newer proto's fields, vendor additions).

Ids stay text here: :mod:`agent.parse.otlp.values` reads hex of any case and, defensively,
base64. The Structs are not tracked by the garbage collector (``gc=False``): they live for one
line and hold no cycles.
"""

from __future__ import annotations

import msgspec

Int64 = int | str  # a 64-bit integer: a JSON number or its decimal text
Double = float | str  # a double: a JSON number, or "NaN" / "Infinity" / "-Infinity"
Enum = int | str  # an enum: its number, or its name


class _S(msgspec.Struct, rename="camel", gc=False, omit_defaults=True):
    """The common options: camelCase names, unknown fields ignored, no gc tracking."""


class AnyValue(_S):
    """One attribute value: exactly one of the fields is set (none for an empty value)."""

    string_value: str | None = None
    bool_value: bool | None = None
    int_value: Int64 | None = None
    double_value: Double | None = None
    array_value: ArrayValue | None = None
    kvlist_value: KeyValueList | None = None
    bytes_value: str | None = None  # base64, kept as it is


class ArrayValue(_S):
    values: list[AnyValue] = []


class KeyValue(_S):
    key: str = ""
    value: AnyValue | None = None


class KeyValueList(_S):
    values: list[KeyValue] = []


class Resource(_S):
    attributes: list[KeyValue] = []


class Scope(_S):
    name: str = ""
    version: str = ""
    attributes: list[KeyValue] = []


# --- traces ----------------------------------------------------------------------------------

class Status(_S):
    message: str = ""
    code: Enum = 0  # 0 unset, 1 ok, 2 error


class Event(_S):
    time_unix_nano: Int64 = 0
    name: str = ""
    attributes: list[KeyValue] = []


class Link(_S):
    trace_id: str = ""
    span_id: str = ""
    attributes: list[KeyValue] = []


class Span(_S):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    trace_state: str = ""
    name: str = ""
    kind: Enum = 0
    start_time_unix_nano: Int64 = 0
    end_time_unix_nano: Int64 = 0
    attributes: list[KeyValue] = []
    events: list[Event] = []
    links: list[Link] = []
    status: Status | None = None


class ScopeSpans(_S):
    scope: Scope | None = None
    spans: list[Span] = []


class ResourceSpans(_S):
    resource: Resource | None = None
    scope_spans: list[ScopeSpans] = []


# --- logs ------------------------------------------------------------------------------------

class LogRecord(_S):
    time_unix_nano: Int64 = 0
    observed_time_unix_nano: Int64 = 0
    severity_number: Enum = 0
    severity_text: str = ""
    body: AnyValue | None = None
    attributes: list[KeyValue] = []
    trace_id: str = ""
    span_id: str = ""
    event_name: str = ""


class ScopeLogs(_S):
    scope: Scope | None = None
    log_records: list[LogRecord] = []


class ResourceLogs(_S):
    resource: Resource | None = None
    scope_logs: list[ScopeLogs] = []


# --- metrics ---------------------------------------------------------------------------------

class Exemplar(_S):
    time_unix_nano: Int64 = 0
    as_double: Double | None = None
    as_int: Int64 | None = None
    span_id: str = ""
    trace_id: str = ""


class NumberDataPoint(_S):
    attributes: list[KeyValue] = []
    start_time_unix_nano: Int64 = 0
    time_unix_nano: Int64 = 0
    as_double: Double | None = None
    as_int: Int64 | None = None
    exemplars: list[Exemplar] = []
    flags: int = 0


class HistogramDataPoint(_S):
    attributes: list[KeyValue] = []
    start_time_unix_nano: Int64 = 0
    time_unix_nano: Int64 = 0
    count: Int64 = 0
    sum: Double | None = None
    bucket_counts: list[Int64] = []
    explicit_bounds: list[Double] = []
    exemplars: list[Exemplar] = []
    flags: int = 0
    min: Double | None = None
    max: Double | None = None


class Buckets(_S):
    offset: int = 0
    bucket_counts: list[Int64] = []


class ExponentialHistogramDataPoint(_S):
    attributes: list[KeyValue] = []
    start_time_unix_nano: Int64 = 0
    time_unix_nano: Int64 = 0
    count: Int64 = 0
    sum: Double | None = None
    scale: int = 0
    zero_count: Int64 = 0
    positive: Buckets | None = None
    negative: Buckets | None = None
    flags: int = 0
    exemplars: list[Exemplar] = []
    min: Double | None = None
    max: Double | None = None
    zero_threshold: Double = 0.0


class ValueAtQuantile(_S):
    quantile: Double = 0.0
    value: Double = 0.0


class SummaryDataPoint(_S):
    attributes: list[KeyValue] = []
    start_time_unix_nano: Int64 = 0
    time_unix_nano: Int64 = 0
    count: Int64 = 0
    sum: Double = 0.0
    quantile_values: list[ValueAtQuantile] = []
    flags: int = 0


class Sum(_S):
    data_points: list[NumberDataPoint] = []
    aggregation_temporality: Enum = 0  # 1 delta, 2 cumulative
    is_monotonic: bool = False


class Gauge(_S):
    data_points: list[NumberDataPoint] = []


class Histogram(_S):
    data_points: list[HistogramDataPoint] = []
    aggregation_temporality: Enum = 0


class ExponentialHistogram(_S):
    data_points: list[ExponentialHistogramDataPoint] = []
    aggregation_temporality: Enum = 0


class Summary(_S):
    data_points: list[SummaryDataPoint] = []


class Metric(_S):
    name: str = ""
    description: str = ""
    unit: str = ""
    gauge: Gauge | None = None
    sum: Sum | None = None
    histogram: Histogram | None = None
    exponential_histogram: ExponentialHistogram | None = None
    summary: Summary | None = None


class ScopeMetrics(_S):
    scope: Scope | None = None
    metrics: list[Metric] = []


class ResourceMetrics(_S):
    resource: Resource | None = None
    scope_metrics: list[ScopeMetrics] = []


# --- one line --------------------------------------------------------------------------------

class Line(_S):
    """One line of an OTLP JSON Lines file: a ``TracesData``, ``LogsData`` or ``MetricsData``
    (the exporters write one signal per file; a line holding several is read whole all the same).
    All three absent: the line is not OTLP."""

    resource_spans: list[ResourceSpans] | None = None
    resource_logs: list[ResourceLogs] | None = None
    resource_metrics: list[ResourceMetrics] | None = None
