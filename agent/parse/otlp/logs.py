"""An OTLP log record -> its ``observability.logs`` row (and, for a GenAI message event of a
conversation, its ``chat_messages`` rows).

==============  =====================================================================================
column          from the record
==============  =====================================================================================
``id``          derived from the line's id and the record's place (see :mod:`.common`)
``timestamp``   ``timeUnixNano``, else ``observedTimeUnixNano``, else the time the agent read it
                (marked ``metadata._time_from_agent``, as for a structlog line without a time)
``trace_id``,   ``traceId``/``spanId`` (hex of any case; base64 accepted); an invalid one is NULL and
``span_id``     kept in ``metadata._invalid``
``level``       ``severityNumber``: 1-4 trace, 5-8 debug, 9-12 info, 13-16 warning, 17-20 error,
                21-24 critical; without one, ``severityText`` lower-cased
``logger``      the scope's name (Python's ``LoggingHandler`` makes it the logger's name)
``event``       ``body``: text as it is, any other value as its JSON; without a body, ``eventName``
``source``      the ``[[sources]]`` name
``metadata``    the attributes, ``resource``, ``event.name`` (``eventName``)
==============  =====================================================================================

A source's ``app_logs`` policy applies to log records as to structlog lines: ``skip``, or a level
below ``app_logs_min_level``, counts the record instead of storing it.

GenAI events: ``gen_ai.client.inference.operation.details`` (``gen_ai.input.messages`` /
``gen_ai.output.messages`` attributes) and the earlier ``gen_ai.system.message``,
``gen_ai.user.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message`` and ``gen_ai.choice``
(the message in the body) become ``chat_messages`` rows too when they name a conversation
(``gen_ai.conversation.id`` or ``session.id``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.applogs import AppLogPolicy
from agent.parse.otlp import genai
from agent.parse.otlp.common import Group, LineIds, Turn, chat_rows, keep_content
from agent.parse.otlp.schema import LogRecord
from agent.parse.otlp.values import any_value, attributes, enum, nanos, otlp_id, text, time_of

_new: Final = tuple.__new__
_LEVELS: Final = ("trace", "debug", "info", "warning", "error", "critical")
_SEVERITIES: Final = {f"SEVERITY_NUMBER_{name}{n if n > 1 else ''}": 4 * i + n
                      for i, name in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"))
                      for n in range(1, 5)}
_EVENT_MAX: Final = 1 << 20  # as for a structlog line's event
_EVENT_NAME: Final = "event.name"
_INFERENCE: Final = "gen_ai.client.inference.operation.details"
_MESSAGE_EVENTS: Final = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                          "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
_CHOICE: Final = "gen_ai.choice"


def level(number: int | str, severity_text: str) -> str | None:
    """The ``level`` of a record's severity (see the module's table)."""
    n = enum(number, _SEVERITIES)
    if 1 <= n <= 24:
        return _LEVELS[(n - 1) // 4]
    return text(severity_text, c.LOG_LEVEL_MAX).lower() or None


def log_rows(rec: LogRecord, g: Group, ids: LineIds, out: list[Row], policy: AppLogPolicy | None,
             now: Callable[[], datetime]) -> bool:
    """Append the record's rows to ``out``; False when the source's policy only counts it."""
    lvl = level(rec.severity_number, rec.severity_text)
    if policy is not None and not policy.keeps(lvl):
        return False
    meta = attributes(rec.attributes)
    invalid: dict[str, Any] = {}
    at = time_of(nanos(rec.time_unix_nano)) or time_of(nanos(rec.observed_time_unix_nano))
    if at is None:
        at = now()
        meta[c.LOG_TIME_FROM_AGENT] = True
        if rec.time_unix_nano:
            invalid["timeUnixNano"] = rec.time_unix_nano
    trace_id = otlp_id(rec.trace_id, 16)
    if trace_id is None and rec.trace_id:
        invalid["traceId"] = rec.trace_id
    span_id = otlp_id(rec.span_id, 8)
    if span_id is None and rec.span_id:
        invalid["spanId"] = rec.span_id
    name = rec.event_name or meta.get(_EVENT_NAME)
    if rec.event_name:
        meta[_EVENT_NAME] = rec.event_name
    body = any_value(rec.body)
    content = genai.content_keys(meta)
    if type(name) is str and name.startswith("gen_ai."):
        _chat(name, body, meta, content, at, trace_id, span_id, ids, out)
    elif content:
        keep_content(meta, content, [])
    event = body if type(body) is str else pf.json_text(body) if body is not None else name
    if g.resource:
        meta.setdefault("resource", g.resource)
    if invalid:
        meta[c.INVALID_MARKER] = invalid
    values = (ids(), at, trace_id, span_id, lvl, g.scope_name, text(event, _EVENT_MAX) if type(event) is str else None,
              g.source[: c.SOURCE_MAX], pf.json_text(meta))
    out.append(_new(Row, (c.LOGS, values, False, ())))
    return True


def _chat(name: str, body: Any, meta: dict[str, Any], content: list[str], at: datetime, trace_id: str | None,
          span_id: str | None, ids: LineIds, out: list[Row]) -> None:
    """The chat rows of a GenAI event that names a conversation (its content then leaves metadata)."""
    if name == _INFERENCE:
        llm = genai.llm(meta)
    else:
        llm = genai.Llm(conversation_id=genai.conversation(meta))
        msg = _body_message(name, body)
        if msg is not None:
            (llm.outputs if msg[1] else llm.inputs).append(msg[0])
    if llm.conversation_id is None or not (llm.inputs or llm.outputs):
        keep_content(meta, content, [])
        return
    turn = Turn(llm.conversation_id, trace_id, span_id, at, at, meta, llm.model, llm.input_tokens,
                llm.output_tokens)
    out.extend(chat_rows(turn, llm, ids))
    keep_content(meta, content, llm.message_keys)


def _body_message(name: str, body: Any) -> tuple[genai.Message, bool] | None:
    """(the message, whether it is the model's) of an earlier GenAI event's body."""
    if type(body) is not dict:
        return None
    if name == _CHOICE:
        msg = body.get("message")
        if type(msg) is not dict:
            return None
        role = msg.get("role", "assistant")
        return genai.Message(role if type(role) is str and 0 < len(role) <= 20 else "assistant",
                             genai.content_text(msg.get("content"))), True
    role = _MESSAGE_EVENTS.get(name)
    if role is None:
        return None
    given = body.get("role")
    return genai.Message(given if type(given) is str and 0 < len(given) <= 20 else role,
                         genai.content_text(body.get("content"))), role == "assistant"
