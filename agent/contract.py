"""The log-line contract shared by the application side (``agent.emit``) and the agent.

Pure data: record kinds, field names (equal to the column names of ``schema.sql``), column order
for COPY, keys and limits. Nothing here does I/O, so both programs can import it.
"""

from __future__ import annotations

from typing import Final

SCHEMA: Final = "observability"
DEFAULT_RECORD_TYPE_KEY: Final = "record_type"

# Record kinds and the table each becomes.
TRACE: Final = "trace"
SPAN: Final = "span"
CHAT_MESSAGE: Final = "chat_message"
DOCUMENT_EVENT: Final = "document_event"
TABLE_OF_KIND: Final[dict[str, str]] = {
    TRACE: "traces",
    SPAN: "spans",
    CHAT_MESSAGE: "chat_messages",
    DOCUMENT_EVENT: "document_events",
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
}

# Primary keys (every one includes the time column, as hypertables require).
KEY_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "traces": ("trace_id", "timestamp"),
    "spans": ("span_id", "timestamp"),
    "chat_messages": ("id", "timestamp"),
    "document_events": ("id", "timestamp"),
}

# Status values.
IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
FAILED: Final = "failed"

# Truncation limits from the observability stories (characters, not bytes).
ERROR_MESSAGE_MAX: Final = 1000
PREVIEW_MAX: Final = 500
