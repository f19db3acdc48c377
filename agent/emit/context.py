"""Trace context for :mod:`agent.emit`: W3C ids, ``traceparent``, the active span, OpenTelemetry.

The active context lives in a ``contextvars.ContextVar``: asyncio tasks inherit it when they are
created, ``asyncio.to_thread`` copies it, and plain threads get it through :func:`wrap`. When no
hypertail context is active but an OpenTelemetry span is, that span's ids are used (optional
import: nothing is needed when OpenTelemetry is not installed).
"""

from __future__ import annotations

import contextvars
import importlib
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

from agent.contract import w3c_id

try:  # OpenTelemetry is optional: when a span of it is active, its ids are used.
    _otel_trace: Any = importlib.import_module("opentelemetry.trace")
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None

P = ParamSpec("P")
R = TypeVar("R")
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def new_trace_id() -> str:
    """A random W3C trace id (32 lowercase hex digits, never all zero)."""
    value = secrets.token_hex(16)
    return value if w3c_id(value, 32) else new_trace_id()


def new_span_id() -> str:
    """A random W3C span id (16 lowercase hex digits, never all zero)."""
    value = secrets.token_hex(8)
    return value if w3c_id(value, 16) else new_span_id()


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Where new records belong: the trace, the current span (parent of new spans) and flags."""

    trace_id: str
    span_id: str | None = None
    flags: int = 1

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    def child(self) -> TraceContext:
        """A context for a new span under this one."""
        return TraceContext(self.trace_id, new_span_id(), self.flags)

    def traceparent(self) -> str:
        return format_traceparent(self)


def format_traceparent(ctx: TraceContext) -> str:
    """The W3C ``traceparent`` header (version 00); a root context gets a fresh parent id."""
    return f"00-{ctx.trace_id}-{ctx.span_id or new_span_id()}-{ctx.flags & 0xFF:02x}"


def parse_traceparent(header: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` header -> context, or ``None`` when it is not valid (spec rules)."""
    if not isinstance(header, str):
        return None
    m = _TRACEPARENT.fullmatch(header.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or w3c_id(trace_id, 32) is None or w3c_id(span_id, 16) is None:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16))


class Totals:
    """Token and cost sums of one trace; spans in other threads add to it, hence the lock."""

    __slots__ = ("cost", "input_tokens", "lock", "output_tokens")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0

    def add(self, fields: dict[str, Any]) -> None:
        i, o, cost = fields.get("input_tokens"), fields.get("output_tokens"), fields.get("cost_usd")
        with self.lock:
            if type(i) is int:
                self.input_tokens += i
            if type(o) is int:
                self.output_tokens += o
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                self.cost += float(cost)


class Active:
    __slots__ = ("ctx", "totals")

    def __init__(self, ctx: TraceContext, totals: Totals | None) -> None:
        self.ctx = ctx
        self.totals = totals


ACTIVE: contextvars.ContextVar[Active | None] = contextvars.ContextVar("hypertail_active", default=None)


def current() -> TraceContext | None:
    """The active context: hypertail's own, else an active OpenTelemetry span's, else ``None``."""
    active = ACTIVE.get()
    return active.ctx if active is not None else otel_context()


def current_ids() -> tuple[str, str | None] | None:
    ctx = current()
    return None if ctx is None else (ctx.trace_id, ctx.span_id)


def otel_context() -> TraceContext | None:
    if _otel_trace is None:
        return None
    try:
        sc = _otel_trace.get_current_span().get_span_context()
        if not sc.is_valid:
            return None
        return TraceContext(format(sc.trace_id, "032x"), format(sc.span_id, "016x"), int(sc.trace_flags))
    except Exception:
        return None


def leave(token: contextvars.Token[Active | None] | None, previous: Active | None) -> None:
    """Undo ``_enter``; if the exit runs in another context than the entry, restore by value."""
    if token is None:
        return
    try:
        ACTIVE.reset(token)
    except (ValueError, RuntimeError):
        ACTIVE.set(previous)


class use:
    """Make ``ctx`` (a :class:`TraceContext` or a ``traceparent`` header) the active context."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: TraceContext | str | None) -> None:
        self._ctx = parse_traceparent(ctx) if isinstance(ctx, str) else ctx
        self._token: contextvars.Token[Active | None] | None = None

    def __enter__(self) -> TraceContext | None:
        if self._ctx is not None:
            self._token = ACTIVE.set(Active(self._ctx, None))
        return self._ctx

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            leave(self._token, None)

    async def __aenter__(self) -> TraceContext | None:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the current context, for threads (``executor.submit(emit.wrap(fn))``)."""
    ctx = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run
