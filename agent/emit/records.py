"""The timed records of :mod:`agent.emit`: ``trace`` and ``span`` context managers.

Each is usable with ``with`` and ``async with``; both switch the active trace context on entry
and restore it on exit (even when the exit happens in another context than the entry). Nothing
here raises into the application: internal failures are counted as drops, while the
application's own exceptions pass through after being recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final

from agent import contract as c
from agent.emit.context import ACTIVE, Active, Totals, TraceContext, leave, new_span_id, new_trace_id, otel_context
from agent.emit.output import STATS, text_of, write_record

SPAN_FIELDS: Final = frozenset(c.FIELD_BY_NAME[c.SPAN]) - {"span_id", "trace_id", "parent_span_id", c.METADATA}
TRACE_FIELDS: Final = frozenset(c.FIELD_BY_NAME[c.TRACE]) - {"trace_id", c.METADATA}
_STRINGS: Final = frozenset({
    f.name for fields in c.FIELDS.values() for f in fields if f.type in (c.VARCHAR_T, c.TEXT_T)})
_CUT: Final = {"input_preview": c.PREVIEW_MAX, "output_preview": c.PREVIEW_MAX,
               "error_message": c.ERROR_MESSAGE_MAX, "error_type": 255, "name": 255}
_NEVER: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UUIDS: Final = frozenset(f.name for fields in c.FIELDS.values() for f in fields if f.type == c.UUID_T)
_WARNED: set[str] = set()


class InvalidFieldWarning(UserWarning):
    """A value the agent cannot store in its column (a user_id that is not a UUID...)."""


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


def _text(value: Any) -> Any:
    """UUIDs and datetimes as text, so any JSON renderer writes what the contract expects."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    return value


def split(fields: dict[str, Any], known: frozenset[str], into: dict[str, Any], meta: dict[str, Any]) -> None:
    """Contract fields go to the record (prepared), the rest to ``metadata``."""
    for key, value in fields.items():
        if key not in known:
            meta[key] = value
        elif value is not None:
            into[key] = _prepare(key, value)


def _prepare(key: str, value: Any) -> Any:
    """Text cut to its limit; a non-text label rendered with ``str()`` (and counted as coerced)."""
    if key in _UUIDS and key not in _WARNED and not isinstance(value, uuid.UUID):
        _check_uuid(key, value)
    if type(value) is str:
        top = _CUT.get(key)
        return value[:top] if top else value
    if key in _STRINGS:
        STATS.add(coerced=1)
        return _prepare(key, text_of(value))
    return _text(value)


def _check_uuid(key: str, value: Any) -> None:
    """The agent stores a UUID column's invalid value as NULL and keeps it only in
    ``metadata._invalid``, which no developer looks at: warn once per field, at the line of the
    application that passed it (a Python warning: visible in development, silenced as usual)."""
    try:
        uuid.UUID(str(value))
        return
    except (ValueError, TypeError):
        pass
    _WARNED.add(key)
    with contextlib.suppress(Exception):  # warnings turned into errors: never raise into the application
        warnings.warn(
            f"agent.emit: {key}={text_of(value)[:60]!r} is not a UUID, so hypertail stores NULL in the {key} "
            f"column (the value is kept in metadata._invalid); pass a uuid.UUID or its text, or give the value "
            f"another name so that it goes to metadata (warned once per field)",
            InvalidFieldWarning, stacklevel=_app_frame())


def _app_frame() -> int:
    """The ``stacklevel`` of the first frame outside agent.emit (the application's call)."""
    frame, level = sys._getframe(2), 2  # 1 is _check_uuid itself, which calls warnings.warn
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("agent.emit"):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _error_fields(exc: BaseException) -> dict[str, Any]:
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    return {"error_type": type(exc).__qualname__[:255], "error_message": message[: c.ERROR_MESSAGE_MAX]}


def _ms(ns: int) -> int:
    return (ns + 500_000) // 1_000_000


class _Timed:
    """Shared machinery of ``trace`` and ``span``: context switch, clock, error capture."""

    __slots__ = ("_fields", "_meta", "_prev", "_t0", "_token", "ctx", "started")

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self._token: contextvars.Token[Active | None] | None = None
        self._prev: Active | None = None
        self.ctx: TraceContext | None = None
        self.started = _NEVER  # set by __enter__
        self._t0 = 0

    def _clock(self) -> tuple[int, datetime]:
        elapsed = time.perf_counter_ns() - self._t0
        return _ms(elapsed), self.started + timedelta(microseconds=elapsed // 1000)

    def _outcome(self, exc: BaseException | None) -> dict[str, Any]:
        status = self._fields.get("status") or (c.FAILED if exc is not None else c.COMPLETED)
        out: dict[str, Any] = {"status": status}
        if exc is not None:
            out.update({k: v for k, v in _error_fields(exc).items() if k not in self._fields})
        return out

    def _metadata(self) -> dict[str, Any]:
        return {c.METADATA: self._meta} if self._meta else {}


class trace(_Timed):
    """A root operation: writes an ``in_progress`` start record and a final end record.

    Usable with ``with`` and ``async with``. Spans and LLM calls inside add their tokens and cost
    to the end record's totals. An exception passing through marks the trace ``failed``, is
    recorded (type and message) and re-raised.
    """

    __slots__ = ("_totals",)

    def __init__(self, name: str, operation_type: str | None = None, user_id: Any = None,
                 session_id: str | None = None, kb_id: Any = None, **metadata: Any) -> None:
        super().__init__()
        self._totals = Totals()
        fields = {"name": name, "operation_type": operation_type, "user_id": user_id,
                  "session_id": session_id, "kb_id": kb_id, **metadata}
        try:
            split(fields, TRACE_FIELDS, self._fields, self._meta)
        except Exception:
            STATS.add(coerced=1)

    @property
    def trace_id(self) -> str | None:
        return None if self.ctx is None else self.ctx.trace_id

    def set(self, **fields: Any) -> trace:
        """Add fields (status, totals, error...) or metadata to the end record."""
        try:
            split(fields, TRACE_FIELDS, self._fields, self._meta)
        except Exception:
            STATS.add(coerced=1)
        return self

    def __enter__(self) -> trace:
        try:
            self._start()
        except Exception:
            STATS.add(dropped=1)
        return self

    def _start(self) -> None:
        parent = ACTIVE.get()
        remote = otel_context() if parent is None else parent.ctx
        if parent is not None and parent.totals is not None:  # nested in a local trace: a new one
            self._meta.setdefault("parent_trace_id", parent.ctx.trace_id)
            if parent.ctx.span_id:
                self._meta.setdefault("parent_span_id", parent.ctx.span_id)
            remote = None
        elif remote is not None and remote.span_id:
            self._meta.setdefault("parent_span_id", remote.span_id)
        self.ctx = (TraceContext(remote.trace_id, remote.span_id, remote.flags) if remote
                    else TraceContext(new_trace_id()))
        self._token, self._prev = ACTIVE.set(Active(self.ctx, self._totals)), parent
        self.started, self._t0 = datetime.now(UTC), time.perf_counter_ns()
        start = {k: v for k, v in self._fields.items() if k != "status"}
        write_record(c.TRACE, {"trace_id": self.ctx.trace_id, **start, "status": c.IN_PROGRESS,
                         c.STARTED_AT: iso(self.started), **self._metadata()})

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._finish(exc)
        except Exception:
            STATS.add(dropped=1)
        finally:
            leave(self._token, self._prev)

    def _finish(self, exc: BaseException | None) -> None:
        if self.ctx is None:
            return
        duration, ended = self._clock()
        totals = self._totals
        with totals.lock:
            sums = {"total_input_tokens": totals.input_tokens, "total_output_tokens": totals.output_tokens,
                    "total_cost_usd": round(totals.cost, c.NUMERIC_SCALE)}
        record = {"trace_id": self.ctx.trace_id, **sums, **self._fields, **self._outcome(exc),
                  c.STARTED_AT: iso(self.started), "ended_at": iso(ended), "duration_ms": duration,
                  **self._metadata()}
        write_record(c.TRACE, record)

    async def __aenter__(self) -> trace:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class span(_Timed):
    """One operation inside a trace, written once when it ends (like OpenTelemetry).

    ``fields`` are span columns (model, input_tokens, result_count...) or, for any other name,
    metadata; ``.set()`` adds more before the end. ``write_start=True`` also writes an
    ``in_progress`` record at the start, for long-running work.
    """

    __slots__ = ("_parent_id", "_totals", "_write_start")

    def __init__(self, name: str, span_type: str = c.DEFAULT_SPAN_TYPE, *, write_start: bool = False,
                 **fields: Any) -> None:
        super().__init__()
        self._parent_id: str | None = None
        self._totals: Totals | None = None
        self._write_start = write_start
        self._fields["name"] = name if type(name) is str else _prepare("name", name)
        self._fields["span_type"] = span_type if type(span_type) is str else _prepare("span_type", span_type)
        if fields:
            self.set(**fields)

    @property
    def span_id(self) -> str | None:
        return None if self.ctx is None else self.ctx.span_id

    def set(self, **fields: Any) -> span:
        """Add span fields (tokens, cost, previews, counts...) or metadata to the record."""
        try:
            split(fields, SPAN_FIELDS, self._fields, self._meta)
        except Exception:
            STATS.add(coerced=1)
        return self

    def __enter__(self) -> span:
        try:
            parent = ACTIVE.get()
            base = parent.ctx if parent is not None else otel_context()
            self._totals = parent.totals if parent is not None else None
            trace_id = base.trace_id if base is not None else new_trace_id()
            self._parent_id = base.span_id if base is not None else None
            self.ctx = TraceContext(trace_id, new_span_id(), base.flags if base is not None else 1)
            self._token, self._prev = ACTIVE.set(Active(self.ctx, self._totals)), parent
            self.started, self._t0 = datetime.now(UTC), time.perf_counter_ns()
            if self._write_start:
                write_record(c.SPAN, self._record({"status": c.IN_PROGRESS}, None))
        except Exception:
            STATS.add(dropped=1)
        return self

    def _record(self, outcome: dict[str, Any], duration: int | None) -> dict[str, Any]:
        assert self.ctx is not None
        record: dict[str, Any] = {"span_id": self.ctx.span_id, "trace_id": self.ctx.trace_id}
        if self._parent_id is not None:
            record["parent_span_id"] = self._parent_id
        record.update(self._fields)
        record.update(outcome)
        record[c.STARTED_AT] = iso(self.started)
        if duration is not None:
            record["duration_ms"] = duration
        if self._meta:
            record[c.METADATA] = self._meta
        return record

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.ctx is not None:
                write_record(c.SPAN, self._record(self._outcome(exc), self._clock()[0]))
                if self._totals is not None:
                    self._totals.add(self._fields)
        except Exception:
            STATS.add(dropped=1)
        finally:
            leave(self._token, self._prev)

    def done(self, duration_ms: int) -> str | None:
        """Write the span at once, as work that just ended after ``duration_ms``; returns its id.

        For work timed elsewhere (an LLM client's own latency figure) instead of a ``with`` block.
        """
        if not (type(duration_ms) is int and 0 <= duration_ms <= c.INT4_MAX):
            STATS.add(coerced=1)
            duration_ms = 0
        self.__enter__()
        self.started -= timedelta(milliseconds=duration_ms)
        self._t0 -= duration_ms * 1_000_000
        self.__exit__(None, None, None)
        return self.span_id

    async def __aenter__(self) -> span:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)
