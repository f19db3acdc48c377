"""OTLP JSON Lines -> rows: one line (a ``TracesData``, ``LogsData`` or ``MetricsData``) to the rows
of every span, log record and metric data point it holds (:class:`~agent.model.Rows`).

The OpenTelemetry file exporters (``opentelemetry-exporter-otlp-json-file``: ``FileSpanExporter``,
``FileLogExporter``, ``FileMetricExporter``; the Collector's ``fileexporter``) write one batch per
line, up to 512 spans. The line is the unit of exactly-once, as for a structlog line: its rows
commit with its offset. What each record becomes: :mod:`.spans`, :mod:`.logs`, :mod:`.metrics`
(and :mod:`.genai` for the LLM columns); docs/opentelemetry.md for users.

Two paths, one result, as for structlog lines (:mod:`agent.parse`):

* the *typed* path decodes the whole line into the Structs of :mod:`.schema` in one msgspec call
  (checked in C; most of the cost of a line is then the mapping in Python);
* a line it refuses (a value of the wrong type somewhere) takes the *tolerant* path: ``orjson.loads``,
  the envelope walked by hand, each record converted on its own (numbers in text accepted), so one
  malformed record costs only itself.

Either way, a record that cannot be a row (a span without a valid id or start time, a malformed
record) does not cost the line's other records: they are stored, and the line is *also* a dead
letter naming the first such record and how many there were (``Rows.dead``), so nothing of it is
lost and a replay after a fix stores the rest. A line whose envelope is malformed
(``resourceSpans`` not an array, a resource that is not an object) is one dead letter.

A line that is not OTLP (none of ``resourceSpans``, ``resourceLogs``, ``resourceMetrics``) is left
to the caller (:meth:`OtlpDecoder.parse` returns ``None``), which reads it as a structlog line: the
environment-variable form of the exporters writes to stdout, which an app may share with its own
JSON logs; a line that is no JSON at all becomes its dead letter there too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import orjson

from agent.model import DeadLetter, Row, Rows
from agent.parse import fields as pf
from agent.parse.applogs import AppLogPolicy
from agent.parse.otlp.common import Bad, Group, LineIds
from agent.parse.otlp.logs import log_rows
from agent.parse.otlp.metrics import metric_rows
from agent.parse.otlp.schema import (
    Line,
    LogRecord,
    Metric,
    Resource,
    ResourceLogs,
    ResourceMetrics,
    ResourceSpans,
    Scope,
    Span,
)
from agent.parse.otlp.spans import span_rows

__all__ = ["OtlpDecoder"]

_NUL_ESCAPE: Final = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")  # an escaped NUL, not an escaped backslash
_decode: Final = msgspec.json.Decoder(Line).decode
_TOPS: Final = (b'"resourceSpans"', b'"resourceLogs"', b'"resourceMetrics"')


@dataclass(frozen=True, slots=True)
class _Signal:
    """How one signal nests: ``{top: [{"resource", scopes: [{"scope", items: [...]}]}]}``."""

    top: str
    scopes: str
    items: str
    item: type
    rows: str  # what a record is called in a dead letter


_SIGNALS: Final = (
    _Signal("resourceSpans", "scopeSpans", "spans", Span, "spans"),
    _Signal("resourceLogs", "scopeLogs", "logRecords", LogRecord, "log records"),
    _Signal("resourceMetrics", "scopeMetrics", "metrics", Metric, "metrics"),
)


@dataclass(slots=True)
class _Batch:
    """One group's records (typed), or the converted ones and those that failed (tolerant)."""

    signal: _Signal
    where: str  # e.g. resourceSpans[0].scopeSpans[1]
    resource: Resource | None
    scope: Scope | None
    items: list[Any]
    places: list[int] | None = None  # each item's index in the group (tolerant: some failed)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (place, field, reason)


class OtlpDecoder:
    """One source's OTLP lines: its name (the ``logs`` rows' ``source``) and app-log policy."""

    def __init__(self, source: str = "", app_logs: AppLogPolicy | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.source = source
        self.app_logs = app_logs
        self._now = clock or _now

    def parse(self, data: bytes, line_id: Callable[[], str]) -> Rows | DeadLetter | None:
        """The line's rows (and dead letter), a dead letter, or ``None`` when it is not an OTLP line
        (or not JSON: the caller says why). ``line_id`` gives the line's deterministic id."""
        if _TOPS[0] not in data and _TOPS[1] not in data and _TOPS[2] not in data:
            return None
        data = without_nul(data)
        try:
            batches = self._typed(data)
        except msgspec.ValidationError:
            tolerant = self._tolerant(data)
            if not isinstance(tolerant, list):
                return tolerant
            batches = tolerant
        except (msgspec.DecodeError, RecursionError):
            return None
        if batches is None:
            return None
        return self._rows(batches, LineIds(line_id))

    def _typed(self, data: bytes) -> list[_Batch] | None:
        line = _decode(data)
        found: tuple[list[Any] | None, ...] = (line.resource_spans, line.resource_logs, line.resource_metrics)
        if found == (None, None, None):
            return None  # the names were in a string, or their values null: not an OTLP line
        out: list[_Batch] = []
        for signal, groups in zip(_SIGNALS, found, strict=True):
            for i, r in enumerate(groups or ()):
                for j, s in enumerate(_scopes(r)):
                    out.append(_Batch(signal, f"{signal.top}[{i}].{signal.scopes}[{j}]", r.resource, s.scope,
                                      _items(s)))
        return out

    def _tolerant(self, data: bytes) -> list[_Batch] | DeadLetter | None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict or all(obj.get(s.top) is None for s in _SIGNALS):
            return None
        try:
            return list(_walk(obj))
        except Bad as exc:
            return DeadLetter(f"not an OTLP line as the JSON encoding has it: {exc}", exc.field)

    def _rows(self, batches: list[_Batch], ids: LineIds) -> Rows | DeadLetter:
        rows: list[Row] = []
        failed: list[tuple[str, str, str]] = []
        counted = total = 0
        policy, now = self.app_logs, self._now
        for b in batches:
            g = Group.of(self.source, b.resource, b.scope)
            failed += b.failed
            total += len(b.items) + len(b.failed)
            kind = b.signal.item
            for k, item in enumerate(b.items):
                try:
                    if kind is Span:
                        span_rows(item, g, ids, rows)
                    elif kind is LogRecord:
                        if not log_rows(item, g, ids, rows, policy, now):
                            counted += 1
                    else:
                        metric_rows(item, g, ids, rows)
                except Bad as exc:
                    at = b.places[k] if b.places is not None else k
                    failed.append((f"{b.where}.{b.signal.items}[{at}]", exc.field, str(exc)))
        if not failed:
            return Rows(tuple(rows), None, counted)
        place, name, reason = failed[0]
        more = f" ({len(failed)} of the line's {total} records could not be stored, this the first)" \
            if len(failed) > 1 else ""
        dead = DeadLetter(f"{place}: {reason}{more}", name)
        return Rows(tuple(rows), dead, counted) if rows or counted else dead


def without_nul(data: bytes) -> bytes:
    """``data`` with every escaped NUL (``\\u0000``) made U+FFFD: PostgreSQL's text and jsonb cannot
    hold NUL (a structlog line's are replaced too). An escaped backslash before ``u0000`` is text."""
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", data) if b"\\u0000" in data else data


def _now() -> datetime:
    return datetime.now(UTC)


def _scopes(r: ResourceSpans | ResourceLogs | ResourceMetrics) -> list[Any]:
    if isinstance(r, ResourceSpans):
        return r.scope_spans
    return r.scope_logs if isinstance(r, ResourceLogs) else r.scope_metrics


def _items(s: Any) -> list[Any]:
    items: list[Any] = getattr(s, "spans", None) or getattr(s, "log_records", None) or getattr(s, "metrics", None) or []
    return items


# --- the tolerant path -----------------------------------------------------------------------------

def _walk(obj: dict[str, Any]) -> Iterator[_Batch]:
    """The line's groups, converted record by record; raises Bad for a malformed envelope."""
    for signal in _SIGNALS:
        groups = _array(obj.get(signal.top), signal.top)
        for i, r in enumerate(groups):
            where = f"{signal.top}[{i}]"
            r = _object(r, where)
            resource = _convert(r.get("resource"), Resource, f"{where}.resource")
            for j, s in enumerate(_array(r.get(signal.scopes), f"{where}.{signal.scopes}")):
                at = f"{where}.{signal.scopes}[{j}]"
                s = _object(s, at)
                scope = _convert(s.get("scope"), Scope, f"{at}.scope")
                batch = _Batch(signal, at, resource, scope, [], [])
                for k, item in enumerate(_array(s.get(signal.items), f"{at}.{signal.items}")):
                    try:
                        batch.items.append(msgspec.convert(item, signal.item, strict=False))
                        batch.places.append(k)  # type: ignore[union-attr]
                    except msgspec.ValidationError as exc:
                        field_, reason = _validation(exc)
                        batch.failed.append((f"{at}.{signal.items}[{k}]", field_, reason))
                yield batch


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise Bad(where, f"expected an array, got {_kind(value)}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise Bad(where, f"expected an object, got {_kind(value)}")
    return value


def _convert(value: Any, t: type, where: str) -> Any:
    if value is None:
        return None
    try:
        return msgspec.convert(value, t, strict=False)
    except msgspec.ValidationError as exc:
        field_, reason = _validation(exc)
        raise Bad(f"{where}{field_[1:] if field_.startswith('$') else '.' + field_}", reason) from None


_AT: Final = re.compile(r"^(.*) - at `(\$[^`]*)`$", re.S)


def _validation(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(the field, what is wrong) of msgspec's ``Expected `int`, got `str` - at `$.kind```."""
    m = _AT.match(str(exc))
    if m is None:
        return "$", pf.clean_str(str(exc))[:200]
    path = m.group(2)
    name = re.sub(r"\[\d+\]", "", path).rsplit(".", 1)[-1] or "$"
    return name, f"{path[2:] or '$'}: {pf.clean_str(m.group(1))[:200]}"


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
