"""The log-line contract shared by the application side (``agent.emit``) and the agent.

Pure data: record kinds, field names (equal to the column names of ``schema.sql``), column order
for COPY, keys and limits, and the two rules both sides apply to values (:func:`w3c_id`,
:func:`json_native`). Nothing here does I/O, so both programs can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

SCHEMA: Final = "observability"
DEFAULT_RECORD_TYPE_KEY: Final = "record_type"

# Record kinds and the table each becomes.
TRACE: Final = "trace"
SPAN: Final = "span"
CHAT_MESSAGE: Final = "chat_message"
DOCUMENT_EVENT: Final = "document_event"
METRIC: Final = "metric"                            # one series' aggregate over one interval
WORKFLOW_TRANSITION: Final = "workflow_transition"  # one workflow moving into a state
TABLE_OF_KIND: Final[dict[str, str]] = {
    TRACE: "traces",
    SPAN: "spans",
    CHAT_MESSAGE: "chat_messages",
    DOCUMENT_EVENT: "document_events",
    METRIC: "metrics",
    WORKFLOW_TRANSITION: "workflow_transitions",
}

# Column order of each ingested table, as COPY writes it (explicit column lists, never "*").
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "traces": (
        "trace_id", "timestamp", "name", "operation_type", "user_id", "session_id", "kb_id",
        "status", "ended_at", "duration_ms", "error_type", "error_message",
        "total_input_tokens", "total_output_tokens", "total_cost_usd", "metadata",
    ),
    "spans": (
        "span_id", "timestamp", "trace_id", "parent_span_id", "name", "span_type", "status",
        "duration_ms", "error_type", "error_message", "model", "input_tokens", "output_tokens",
        "cost_usd", "temperature", "input_preview", "output_preview", "document_id",
        "chunk_count", "result_count", "metadata",
    ),
    "chat_messages": (
        "id", "timestamp", "trace_id", "span_id", "user_id", "kb_id", "session_id",
        "conversation_id", "turn_number", "role", "content", "input_tokens", "output_tokens",
        "model", "latency_ms", "sources", "citations", "feedback_type", "feedback_comment",
        "metadata",
    ),
    "document_events": (
        "id", "timestamp", "trace_id", "document_id", "kb_id", "event_type", "status",
        "duration_ms", "chunk_count", "token_count", "page_count", "file_size_bytes",
        "error_message", "metadata",
    ),
    "metrics": (
        "id", "timestamp", "start_time", "name", "kind", "temporality", "unit", "attributes", "resource",
        "value", "count", "sum", "min", "max", "buckets", "trace_id", "span_id", "metadata",
    ),
    "workflow_transitions": (
        "id", "timestamp", "workflow_id", "workflow_type", "state", "from_state", "seq", "trace_id",
        "span_id", "metadata",
    ),
    # Ordinary application log lines (no discriminator key), stored when the source says so.
    "logs": ("id", "timestamp", "trace_id", "span_id", "level", "logger", "event", "source", "metadata"),
}

# Primary keys (every one includes the time column, as hypertables require).
KEY_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "traces": ("trace_id", "timestamp"),
    "spans": ("span_id", "timestamp"),
    "chat_messages": ("id", "timestamp"),
    "document_events": ("id", "timestamp"),
    "metrics": ("id", "timestamp"),
    "workflow_transitions": ("id", "timestamp"),
    "logs": ("id", "timestamp"),
}

# Ordinary log lines: the table, and the per-source choices (``[[sources]] app_logs``).
LOGS: Final = "logs"
APP_LOGS_STORE: Final = "store"
APP_LOGS_SKIP: Final = "skip"
LOG_LEVEL_MAX: Final = 32       # varchar(32)
LOGGER_MAX: Final = 255         # varchar(255)
SOURCE_MAX: Final = 255         # varchar(255)
LOG_TIME_FROM_AGENT: Final = "_time_from_agent"  # metadata key: the line had no readable timestamp
# Level names in rising order; a line's level is compared by its place here (unknown or absent
# levels are never filtered out, so an odd level name cannot lose a line).
LOG_LEVELS: Final[tuple[str, ...]] = ("debug", "info", "warning", "error", "critical")
LOG_LEVEL_ALIASES: Final[dict[str, str]] = {"warn": "warning", "exception": "error", "fatal": "critical",
                                            "notset": "debug", "trace": "debug"}

# Status values.
IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
FAILED: Final = "failed"

# Truncation limits from the observability stories (characters, not bytes).
ERROR_MESSAGE_MAX: Final = 1000
PREVIEW_MAX: Final = 500

# ---------------------------------------------------------------------------------------------
# Field types: what the parser turns a JSON value into, so that asyncpg's binary COPY accepts it.
# Everything below is added to the names above and changes none of them.

RECORD_KINDS: Final[tuple[str, ...]] = (TRACE, SPAN, CHAT_MESSAGE, DOCUMENT_EVENT, METRIC, WORKFLOW_TRANSITION)
KIND_OF_TABLE: Final[dict[str, str]] = {table: kind for kind, table in TABLE_OF_KIND.items()}

# Type tags (strings rather than an enum so that the app side pays nothing to import them).
TRACE_ID_T: Final = "trace_id"      # 32 hex, lower-cased, not all zero -> str
SPAN_ID_T: Final = "span_id"        # 16 hex, lower-cased, not all zero -> str
UUID_T: Final = "uuid"              # RFC 4122 text -> its canonical text (str: lower case, hyphens)
TIME_T: Final = "timestamptz"       # RFC 3339 / epoch s / epoch ms -> aware UTC datetime
VARCHAR_T: Final = "varchar"        # str of at most max_len characters
TEXT_T: Final = "text"              # str, unlimited (or truncated at max_len)
INT4_T: Final = "int4"              # int, 0 <= v <= 2**31 - 1 (counts, durations)
INT8_T: Final = "int8"              # int, 0 <= v <= 2**63 - 1
NUMERIC_T: Final = "numeric"        # Decimal quantised to NUMERIC_SCALE places, |v| < NUMERIC_LIMIT
FLOAT8_T: Final = "float8"          # finite float
JSONB_T: Final = "jsonb"            # any JSON value -> JSON text PostgreSQL accepts

INT4_MAX: Final = 2**31 - 1
INT8_MAX: Final = 2**63 - 1
NUMERIC_SCALE: Final = 6            # numeric(10, 6)
NUMERIC_LIMIT: Final = 10**4        # numeric(10, 6) holds |v| < 10**4
JSON_MAX_DEPTH: Final = 128         # deeper JSON is replaced by JSON_TOO_DEEP (orjson stops at 254)
JSON_TOO_DEEP: Final = "<hypertail: nested deeper than 128 levels>"
NUL_REPLACEMENT: Final = "\ufffd"   # PostgreSQL text and jsonb cannot hold U+0000


@dataclass(frozen=True, slots=True)
class Field:
    """One record field and the column it fills.

    ``max_len`` is the varchar length (or the truncation limit of a text). ``truncate`` says what an
    over-long value means: a label or a message is cut (losing its tail is harmless), while an
    identifier or an enumerated value becomes invalid (cutting it would merge distinct values).
    ``required`` fields make the whole line a dead letter when missing or invalid; optional ones
    only lose their value to ``metadata["_invalid"]``.
    """

    name: str
    type: str
    max_len: int | None = None
    truncate: bool = False
    required: bool = False


def _f(name: str, type_: str, max_len: int | None = None, *, cut: bool = False, req: bool = False) -> Field:
    return Field(name, type_, max_len, cut, req)


# Time fields of a record (not columns themselves): the row's ``timestamp`` column is taken from
# STARTED_AT for traces and spans, and from WRITTEN_AT (structlog's TimeStamper) for the others.
STARTED_AT: Final = "started_at"
WRITTEN_AT: Final = "timestamp"
TIME_COLUMN: Final = "timestamp"
METADATA: Final = "metadata"
INVALID_MARKER: Final = "_invalid"  # metadata key holding raw values of invalid optional fields
# structlog bookkeeping that is not kept in metadata ("event" is kept unless it equals the kind).
BOOKKEEPING: Final[frozenset[str]] = frozenset({WRITTEN_AT, "level", "logger"})
EVENT: Final = "event"

# Fields of each kind, in COLUMNS order, except the time column (see STARTED_AT / WRITTEN_AT).
_COMMON_TRACE: Final = (
    _f("operation_type", VARCHAR_T, 50), _f("user_id", UUID_T), _f("session_id", VARCHAR_T, 255),
    _f("kb_id", UUID_T),
)
FIELDS: Final[dict[str, tuple[Field, ...]]] = {
    TRACE: (
        _f("trace_id", TRACE_ID_T, 32, req=True), _f("name", VARCHAR_T, 255, cut=True, req=True),
        *_COMMON_TRACE, _f("status", VARCHAR_T, 20), _f("ended_at", TIME_T),
        _f("duration_ms", INT4_T), _f("error_type", VARCHAR_T, 255, cut=True),
        _f("error_message", TEXT_T, ERROR_MESSAGE_MAX, cut=True), _f("total_input_tokens", INT4_T),
        _f("total_output_tokens", INT4_T), _f("total_cost_usd", NUMERIC_T), _f("metadata", JSONB_T),
    ),
    SPAN: (
        _f("span_id", SPAN_ID_T, 16, req=True), _f("trace_id", TRACE_ID_T, 32, req=True),
        _f("parent_span_id", SPAN_ID_T, 16), _f("name", VARCHAR_T, 255, cut=True, req=True),
        _f("span_type", VARCHAR_T, 50), _f("status", VARCHAR_T, 20), _f("duration_ms", INT4_T),
        _f("error_type", VARCHAR_T, 255, cut=True), _f("error_message", TEXT_T, ERROR_MESSAGE_MAX, cut=True),
        _f("model", VARCHAR_T, 100), _f("input_tokens", INT4_T), _f("output_tokens", INT4_T),
        _f("cost_usd", NUMERIC_T), _f("temperature", FLOAT8_T),
        _f("input_preview", VARCHAR_T, PREVIEW_MAX, cut=True),
        _f("output_preview", VARCHAR_T, PREVIEW_MAX, cut=True), _f("document_id", UUID_T),
        _f("chunk_count", INT4_T), _f("result_count", INT4_T), _f("metadata", JSONB_T),
    ),
    CHAT_MESSAGE: (
        _f("id", UUID_T), _f("trace_id", TRACE_ID_T, 32), _f("span_id", SPAN_ID_T, 16),
        _f("user_id", UUID_T), _f("kb_id", UUID_T), _f("session_id", VARCHAR_T, 255),
        _f("conversation_id", VARCHAR_T, 255), _f("turn_number", INT4_T),
        _f("role", VARCHAR_T, 20, req=True), _f("content", TEXT_T, req=True),
        _f("input_tokens", INT4_T), _f("output_tokens", INT4_T), _f("model", VARCHAR_T, 100),
        _f("latency_ms", INT4_T), _f("sources", JSONB_T), _f("citations", JSONB_T),
        _f("feedback_type", VARCHAR_T, 20), _f("feedback_comment", TEXT_T), _f("metadata", JSONB_T),
    ),
    DOCUMENT_EVENT: (
        _f("id", UUID_T), _f("trace_id", TRACE_ID_T, 32), _f("document_id", UUID_T),
        _f("kb_id", UUID_T), _f("event_type", VARCHAR_T, 50, req=True),
        _f("status", VARCHAR_T, 20, req=True), _f("duration_ms", INT4_T), _f("chunk_count", INT4_T),
        _f("token_count", INT4_T), _f("page_count", INT4_T), _f("file_size_bytes", INT8_T),
        _f("error_message", TEXT_T, ERROR_MESSAGE_MAX, cut=True), _f("metadata", JSONB_T),
    ),
    # The row's time is when the line was written (the end of the interval); start_time its start.
    METRIC: (
        _f("id", UUID_T), _f("start_time", TIME_T), _f("name", VARCHAR_T, 255, req=True),
        _f("kind", VARCHAR_T, 20, req=True), _f("temporality", VARCHAR_T, 20), _f("unit", VARCHAR_T, 63),
        _f("attributes", JSONB_T), _f("resource", JSONB_T), _f("value", FLOAT8_T), _f("count", INT8_T),
        _f("sum", FLOAT8_T), _f("min", FLOAT8_T), _f("max", FLOAT8_T), _f("buckets", JSONB_T),
        _f("trace_id", TRACE_ID_T, 32), _f("span_id", SPAN_ID_T, 16), _f("metadata", JSONB_T),
    ),
    # The row's time is when the transition was recorded: it orders a workflow's transitions.
    WORKFLOW_TRANSITION: (
        _f("id", UUID_T), _f("workflow_id", VARCHAR_T, 255, req=True), _f("workflow_type", VARCHAR_T, 100),
        _f("state", VARCHAR_T, 100, req=True), _f("from_state", VARCHAR_T, 100), _f("seq", INT8_T),
        _f("trace_id", TRACE_ID_T, 32), _f("span_id", SPAN_ID_T, 16), _f("metadata", JSONB_T),
    ),
}
FIELD_BY_NAME: Final[dict[str, dict[str, Field]]] = {
    kind: {f.name: f for f in fields} for kind, fields in FIELDS.items()
}
# Every key a record of the kind may carry besides unknown ones (which go to metadata).
RECORD_KEYS: Final[dict[str, frozenset[str]]] = {
    kind: frozenset(FIELD_BY_NAME[kind]) | {WRITTEN_AT} | ({STARTED_AT} if kind in (TRACE, SPAN) else set())
    for kind in RECORD_KINDS
}

# Status values. Traces and spans: absent means "completed" for spans (written when they end);
# for traces "completed" when ``ended_at`` or ``duration_ms`` is given, else "in_progress".
STARTED: Final = "started"
STATUSES: Final[dict[str, frozenset[str]]] = {
    TRACE: frozenset({IN_PROGRESS, COMPLETED, FAILED}),
    SPAN: frozenset({IN_PROGRESS, COMPLETED, FAILED}),
    DOCUMENT_EVENT: frozenset({STARTED, COMPLETED, FAILED}),
}
DEFAULT_SPAN_TYPE: Final = "custom"
SPAN_TYPES: Final[tuple[str, ...]] = (
    "llm", "retrieval", "embedding", "rerank", "tool", "parse", "chunk", "index", "http", "db", "custom",
)  # suggestions, not a closed set: any non-empty string of at most 50 characters is accepted
DOCUMENT_EVENT_TYPES: Final[tuple[str, ...]] = ("upload", "parse", "chunk", "embed", "index", "delete")
CHAT_ROLES: Final[tuple[str, ...]] = ("user", "assistant", "system", "tool")  # also open

# Application metrics (``agent.emit.counter/gauge/histogram``; OTLP data points map onto the same
# columns). ``kind`` says which columns a row fills: a counter (a monotonic sum) and an up-down
# counter its increase over the interval in ``value`` (``temporality`` delta; OTLP cumulative sums
# carry their running total instead), a gauge its last ``value`` (and ``min``/``max`` of the
# interval), a histogram ``count``/``sum``/``min``/``max`` and ``buckets``. Every kind has ``count``:
# the number of calls (increments, sets, values) the row aggregates.
COUNTER: Final = "counter"
UPDOWN_COUNTER: Final = "updown_counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"
METRIC_KINDS: Final[tuple[str, ...]] = (COUNTER, UPDOWN_COUNTER, GAUGE, HISTOGRAM)
DELTA: Final = "delta"
CUMULATIVE: Final = "cumulative"
# Histogram buckets are those of an OpenTelemetry exponential histogram: at scale s, bucket i holds
# the values v with base**i < |v| <= base**(i + 1), base = 2 ** (2 ** -s). ``buckets`` is
# {"scale", "zero_count", "positive": {"offset", "bucket_counts"}, "negative": {...}} (OTLP's
# ExponentialHistogramDataPoint in snake case): bucket_counts[k] counts bucket offset + k. Reporting
# a bucket by 2 * base**(i + 1) / (base + 1) is off by at most (base - 1) / (base + 1) of the true
# value, whatever the distribution (the DDSketch argument): at scale 5 that is 1.083 %.
HISTOGRAM_SCALE: Final = 5
HISTOGRAM_MAX_BUCKETS: Final = 4096  # per sign; a wider interval is written at a smaller scale
HISTOGRAM_BASE: Final = 2.0 ** (2.0**-HISTOGRAM_SCALE)
HISTOGRAM_RELATIVE_ERROR: Final = (HISTOGRAM_BASE - 1) / (HISTOGRAM_BASE + 1)

# Epoch numbers: |v| < EPOCH_MS_FROM are seconds (until year 5138), below EPOCH_MS_UNTIL they are
# milliseconds (1973-03-03 .. year 5138); anything larger is invalid.
EPOCH_MS_FROM: Final = 10**11
EPOCH_MS_UNTIL: Final = 10**14


def merges(kind: str, status: str) -> bool:
    """Whether a record must be merged with another of the same key rather than COPYed.

    Trace start and end records describe one row; so do a span's optional start record
    (``in_progress``) and its end record.
    """
    return kind == TRACE or (kind == SPAN and status == IN_PROGRESS)


HEX_DIGITS: Final = "0123456789abcdef"


def w3c_id(value: object, size: int) -> str | None:
    """``value`` as a W3C id of ``size`` hex digits (32: trace id, 16: span id), or ``None``.

    Any case is read and the lower-case text returned; all zeros is not an id (W3C Trace Context).
    The one definition shared by the app side (``traceparent``), the parser and the CLI.
    """
    if type(value) is not str or len(value) != size:
        return None
    if not value.strip(HEX_DIGITS):  # the common case: lower-case hex already
        return value if value.strip("0") else None
    try:
        raw = bytes.fromhex(value)  # any case; non-ASCII raises, whitespace shortens the result
    except ValueError:
        return None
    return raw.hex() if 2 * len(raw) == size and raw.strip(b"\0") else None


def json_native(value: Any, max_depth: int, too_deep: str, *, nul: str | None = None,
                other: Callable[[Any], Any] = str, depth: int = 0) -> Any:
    """A copy of ``value`` that ``orjson.dumps`` writes and that reads back as the same JSON.

    The one sanitiser of both sides: the app side makes any Python value loggable, the parser
    makes decoded JSON storable in jsonb. Strings become valid UTF-8 (a lone surrogate becomes
    ``?``) and, if ``nul`` is given, have U+0000 replaced by it (jsonb cannot hold it); integers
    beyond 64 bits become their text, non-finite floats ``null``; containers nested ``max_depth``
    deep become ``too_deep``; sets and tuples become lists, keys text; any other object goes
    through ``other`` (``str`` by default) and what that returns is made native in turn.
    """
    if type(value) is str:
        return _clean_text(value, nul)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return _clean_text(str(value), nul)
    if depth >= max_depth:
        return too_deep
    if isinstance(value, dict):
        return {_clean_text(_key_text(k), nul): json_native(v, max_depth, too_deep, nul=nul, other=other,
                                                            depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_native(v, max_depth, too_deep, nul=nul, other=other, depth=depth + 1) for v in value]
    return json_native(other(value), max_depth, too_deep, nul=nul, other=str, depth=depth + 1)


def _clean_text(text: str, nul: str | None) -> str:
    if nul is not None and "\x00" in text:
        text = text.replace("\x00", nul)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _key_text(key: Any) -> str:
    """``str(key)``, or a placeholder when its ``__str__`` fails."""
    try:
        return str(key)
    except Exception:
        return f"<unprintable {type(key).__name__}>"
