"""How :mod:`agent.emit` renders: counters, the configured state, the JSON serializer, processors.

Kept apart from the record helpers so that an application which configures structlog itself can
reuse the pieces (:func:`dumps`, :func:`make_add_trace_context`; the file writer is in
:mod:`agent.emit.writer`) without the rest. Nothing here may raise into the application: every
failure is counted and swallowed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

from agent.contract import DEFAULT_RECORD_TYPE_KEY, json_native

if TYPE_CHECKING:  # the writer imports STATS from here; the state only names its type
    from agent.emit.writer import LineWriter

_OPTS: Final = orjson.OPT_NON_STR_KEYS
_MAX_DEPTH: Final = 64


class Stats:
    """Thread-safe counters: lines written, records dropped, values coerced to text."""

    __slots__ = ("_lock", "coerced", "dropped", "written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.coerced = 0

    def add(self, *, written: int = 0, dropped: int = 0, coerced: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dropped += dropped
            self.coerced += coerced

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "coerced": self.coerced}


STATS: Final = Stats()


class State:
    """What ``emit.configure()`` decided: where records go and under which discriminator key.

    Until ``configure()`` runs, records go through the application's own structlog setup.
    """

    logger: Any = structlog.get_logger("hypertail")
    writer: LineWriter | None = None
    key: str = DEFAULT_RECORD_TYPE_KEY


STATE: Final = State()


def write_record(kind: str, record: dict[str, Any]) -> None:
    """Hand one record to structlog; whatever goes wrong is a counted drop, never an exception."""
    record[STATE.key] = kind
    try:
        STATE.logger.info(kind, **record)
    except Exception:
        STATS.add(dropped=1)


# --- serializer --------------------------------------------------------------------------------

def dumps(obj: Any, **_ignored: Any) -> bytes:
    """orjson with a lenient fallback: anything becomes *some* JSON rather than an exception.

    Accepts (and ignores) the ``default=`` that structlog's JSONRenderer passes, so it can be used
    as ``JSONRenderer(serializer=dumps)``. Unknown types are rendered with ``str()``; integers
    beyond 64 bits, lone surrogates and over-deep or cyclic containers go through
    :func:`agent.contract.json_native` (the sanitiser the agent uses too).
    """
    try:
        return orjson.dumps(obj, default=_default, option=_OPTS)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return orjson.dumps(json_native(obj, _MAX_DEPTH, "<too deep>", other=_native), option=_OPTS)


def dumps_text(obj: Any, **_ignored: Any) -> str:
    """:func:`dumps` as ``str``, for renderers whose output goes to a text stream."""
    return dumps(obj).decode("utf-8")


def _default(value: Any) -> Any:
    STATS.add(coerced=1)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else text_of(value)


def text_of(value: Any) -> str:
    """``str(value)`` as valid UTF-8, or a placeholder when ``__str__`` itself fails."""
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "replace").decode("utf-8")


def _native(value: Any) -> Any:
    """An object orjson can write natively (UUID, datetime, dataclass...) as plain JSON values;
    anything else as its text, counted as coerced."""
    try:
        return orjson.loads(orjson.dumps(value, option=_OPTS))
    except (TypeError, orjson.JSONEncodeError, orjson.JSONDecodeError):
        STATS.add(coerced=1)
        return text_of(value)


# --- processors --------------------------------------------------------------------------------

EventDict = MutableMapping[str, Any]


def make_add_trace_context(
    current: Callable[[], tuple[str, str | None] | None], record_type_key: str
) -> Callable[[Any, str, EventDict], EventDict]:
    """A processor that stamps ordinary log lines with the active ``trace_id``/``span_id``."""

    def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if record_type_key not in event_dict:
            ids = current()
            if ids is not None:
                event_dict.setdefault("trace_id", ids[0])
                if ids[1] is not None:
                    event_dict.setdefault("span_id", ids[1])
        return event_dict

    return add_trace_context
