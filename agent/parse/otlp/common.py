"""What the OTLP mappings share: a line's row ids, a group's resource and scope, invalid records,
message content in metadata, and the ``chat_messages`` rows of a conversation.

**Row ids.** Spans and traces are keyed by their own ids. Every other row of a line (a log record,
a metric data point, a chat message) gets ``uuid5(line id, n)``, ``n`` counting the line's rows of
that kind in order, where the line id is the one the runner derives from (agent, file, offset):
a line read again gives the same ids, so exactly-once holds for each of its records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.otlp import genai
from agent.parse.otlp.schema import Resource, Scope
from agent.parse.otlp.values import attributes, text

_ID_NS: Final = b"\x7f\x1bOTLP-row\x00hypertail"  # the namespace of a line's derived row ids
_new: Final = tuple.__new__
TRUNCATED: Final = "_truncated"  # metadata key: the content attributes cut to the previews' length
_USER_KEYS: Final = ("user.id", "enduser.id")
_SESSION_KEYS: Final = ("session.id", "gen_ai.conversation.id")


class Bad(Exception):
    """One record of a line that cannot be a row: ``field`` is at fault (named as OTLP names it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def expected(field: str, what: str, got: Any) -> Bad:
    return Bad(field, f"expected {what}, got {pf.shorten(got) if got != '' else 'nothing'}")


class LineIds:
    """The derived row ids of one line (see the module docstring); the line id is asked for once."""

    __slots__ = ("_base", "_line_id", "_n")

    def __init__(self, line_id: Callable[[], str]) -> None:
        self._line_id = line_id
        self._base: hashlib._Hash | None = None
        self._n = 0

    def __call__(self) -> str:
        if self._base is None:
            self._base = hashlib.sha1(_ID_NS + self._line_id().encode(), usedforsecurity=False)
        h = self._base.copy()
        h.update(b"/%d" % self._n)
        self._n += 1
        return pf.uuid5_text(h.digest())


@dataclass(slots=True)
class Group:
    """The resource and scope a line's records share (one ``scopeSpans``, ``scopeLogs`` or
    ``scopeMetrics``), each turned into what rows hold once for all its records."""

    source: str
    resource: dict[str, Any]
    scope_name: str | None
    scope_version: str | None
    resource_json: str = field(init=False)

    def __post_init__(self) -> None:
        self.resource_json = pf.json_text(self.resource)

    @classmethod
    def of(cls, source: str, resource: Resource | None, scope: Scope | None) -> Group:
        res = attributes(resource.attributes) if resource is not None else {}
        name = text(scope.name, 255) if scope is not None and scope.name else None
        version = text(scope.version, 255) if scope is not None and scope.version else None
        return cls(source, res, name, version)

    def scoped(self, meta: dict[str, Any], *, resource: bool = True) -> dict[str, Any]:
        """``meta`` with the scope (``otel.scope.name``/``version``, the names the semantic
        conventions give them outside OTLP) and the resource (as ``resource``) added; its own keys win."""
        if self.scope_name is not None:
            meta.setdefault("otel.scope.name", self.scope_name)
            if self.scope_version is not None:
                meta.setdefault("otel.scope.version", self.scope_version)
        if resource and self.resource:
            meta.setdefault("resource", self.resource)
        return meta


def keep_content(meta: dict[str, Any], keys: list[str], moved: list[str]) -> None:
    """Message content stays in ``meta`` cut to the previews' length (named under ``_truncated``),
    except the attributes in ``moved``, whose messages went to ``chat_messages`` whole."""
    cut: list[str] = []
    gone = set(moved)
    for key in keys:
        if key in gone:
            del meta[key]
            continue
        v = meta[key]
        t = v if type(v) is str else pf.json_text(v)
        if len(t) > c.PREVIEW_MAX:
            meta[key] = t[: c.PREVIEW_MAX]
            cut.append(key)
    if cut:
        meta[TRUNCATED] = cut


def user_id(attrs: dict[str, Any]) -> str | None:
    """``user.id`` (OpenInference) or ``enduser.id`` when it is a UUID (the column's type); any
    other value stays in metadata only."""
    for key in _USER_KEYS:
        v = attrs.get(key)
        if type(v) is str:
            try:
                return pf.to_uuid(v, _USER_F)
            except pf.Invalid:
                return None
    return None


_USER_F: Final = c.FIELD_BY_NAME[c.TRACE]["user_id"]


def session_id(attrs: dict[str, Any]) -> str | None:
    for key in _SESSION_KEYS:
        v = attrs.get(key)
        if type(v) is str and 0 < len(v) <= 255:
            return text(v, 255)
    return None


@dataclass(frozen=True, slots=True)
class Turn:
    """Where a span's (or a GenAI event's) messages belong, for their ``chat_messages`` rows."""

    conversation_id: str
    trace_id: str | None
    span_id: str | None
    asked: datetime  # the input message's time
    answered: datetime  # the output messages' time
    attrs: dict[str, Any]
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: int | None = None


def chat_rows(turn: Turn, g: genai.Llm, ids: LineIds) -> list[Row]:
    """The rows of a conversation's turn: the last message sent (the earlier ones were rows of the
    turns before) and every message received; tokens, model and latency go with the first reply."""
    out: list[Row] = []
    user, session = user_id(turn.attrs), session_id(turn.attrs)
    for i, (msg, answer) in enumerate([*((m, False) for m in g.inputs[-1:]), *((m, True) for m in g.outputs)]):
        first_reply = answer and i == min(len(g.inputs), 1)
        meta = pf.json_text(msg.extra) if msg.extra else "{}"
        values = (ids(), turn.answered if answer else turn.asked, turn.trace_id, turn.span_id, user, None, session,
                  turn.conversation_id, None, msg.role, text(msg.content, len(msg.content)),
                  turn.input_tokens if first_reply else None, turn.output_tokens if first_reply else None,
                  turn.model, turn.latency_ms if first_reply else None, None, None, None, None, meta)
        out.append(_new(Row, (c.TABLE_OF_KIND[c.CHAT_MESSAGE], values, False, ())))
    return out
