"""GenAI span attributes -> the LLM columns of ``observability.spans`` (and the chat they carry).

Four naming schemes are in use, and a span may carry several (OpenLLMetry writes ``gen_ai.*`` and
``llm.request.type``); each column takes the first name present, in this order:

=================  =====================================================================================
column             attribute names
=================  =====================================================================================
``span_type``      ``gen_ai.operation.name`` (chat, text_completion, generate_content -> llm; embeddings ->
                   embedding; retrieval; execute_tool -> tool; invoke_agent, create_agent -> agent;
                   invoke_workflow -> workflow), OpenInference ``openinference.span.kind`` (LLM, EMBEDDING,
                   RETRIEVER -> retrieval, RERANKER -> rerank, TOOL, AGENT, CHAIN, ...), Traceloop
                   ``llm.request.type`` (chat, completion -> llm; embedding; rerank) and
                   ``traceloop.span.kind`` (workflow, task, agent, tool); else ``llm`` when a GenAI
                   provider is named (``gen_ai.provider.name``, ``gen_ai.system``, ``llm.vendor``), ``http``
                   for HTTP spans, ``db`` for database spans, ``custom``
``model``          ``gen_ai.response.model``, ``gen_ai.request.model``, ``llm.response.model``,
                   ``llm.request.model`` (Traceloop before 2024-05), OpenInference
                   ``llm.response.model_name``, ``llm.model_name``, ``llm.request.model_name``,
                   ``embedding.model_name``, ``reranker.model_name``
``input_tokens``   ``gen_ai.usage.input_tokens``, ``gen_ai.usage.prompt_tokens`` (before semconv 1.27),
                   ``llm.token_count.prompt`` (OpenInference), ``llm.usage.prompt_tokens`` (Traceloop)
``output_tokens``  ``gen_ai.usage.output_tokens``, ``gen_ai.usage.completion_tokens``,
                   ``llm.token_count.completion``, ``llm.usage.completion_tokens``
``temperature``    ``gen_ai.request.temperature``, ``llm.temperature``, the ``temperature`` of
                   OpenInference's ``llm.invocation_parameters`` (a JSON object in text)
``cost_usd``       ``gen_ai.usage.cost``, ``llm.cost.total`` (no convention has one; these two are
                   what Langfuse and OpenInference read)
previews           the last input message and the first output message (below), else OpenInference's
                   ``input.value``/``output.value``, Traceloop's ``traceloop.entity.input``/``output``
``result_count``   retrieval spans: the documents of ``gen_ai.retrieval.documents`` or OpenInference's
                   ``retrieval.documents.N.*``, or ``db.vector.query.result_count``
=================  =====================================================================================

**Messages.** ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (structured, or JSON text as the
Python instrumentations write it: ``[{"role", "parts": [{"type": "text", "content"}]}]``), the
deprecated ``gen_ai.prompt`` / ``gen_ai.completion`` texts, OpenLLMetry's indexed
``gen_ai.prompt.N.role``/``.content`` and ``gen_ai.completion.N.*`` (``llm.prompts.N.*`` and
``llm.completions.N.*`` before 2024-05), OpenInference's ``llm.input_messages.N.message.role``/
``.message.content`` and ``llm.output_messages.N.message.*``. The attributes that hold message
content (:func:`scan` finds them): the caller moves them to ``chat_messages`` when the span names
a conversation, else keeps them in ``metadata`` cut to the previews' length.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson

from agent import contract as c
from agent.parse import fields as pf

_OPERATION: Final = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "completion": "llm",
    "embeddings": "embedding", "embedding": "embedding", "retrieval": "retrieval", "rerank": "rerank",
    "execute_tool": "tool", "invoke_agent": "agent", "create_agent": "agent", "invoke_workflow": "workflow",
}
_OPENINFERENCE: Final = {"retriever": "retrieval", "reranker": "rerank"}
# (attribute, how its value becomes a span type); first present wins
_TYPE_KEYS: Final[tuple[tuple[str, dict[str, str]], ...]] = (
    ("gen_ai.operation.name", _OPERATION), ("openinference.span.kind", _OPENINFERENCE),
    ("llm.request.type", _OPERATION), ("traceloop.span.kind", {}),
)
_PROVIDER_KEYS: Final = ("gen_ai.provider.name", "gen_ai.system", "llm.vendor")
_HTTP_KEYS: Final = ("http.request.method", "http.method")
_DB_KEYS: Final = ("db.system.name", "db.system")
MODEL_KEYS: Final = ("gen_ai.response.model", "gen_ai.request.model", "llm.response.model", "llm.request.model",
                     "llm.response.model_name", "llm.model_name", "llm.request.model_name", "embedding.model_name",
                     "reranker.model_name")
INPUT_TOKEN_KEYS: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                           "llm.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS: Final = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                            "llm.token_count.completion", "llm.usage.completion_tokens")
TEMPERATURE_KEYS: Final = ("gen_ai.request.temperature", "llm.temperature")
COST_KEYS: Final = ("gen_ai.usage.cost", "llm.cost.total")
CONVERSATION_KEYS: Final = ("gen_ai.conversation.id", "session.id")
_INVOCATION: Final = "llm.invocation_parameters"
_INVOCATION_MAX: Final = 1 << 16  # a longer parameters text is not parsed for its temperature

# Attributes that hold message content: whole names, and prefixes of indexed ones.
_CONTENT_NAMES: Final = frozenset({
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.prompt",
    "gen_ai.completion", "input.value", "output.value", "traceloop.entity.input", "traceloop.entity.output",
})
# (prefix, side): indexed message attributes, "in" or "out"
_INDEXED: Final = (("gen_ai.prompt.", "in"), ("gen_ai.completion.", "out"), ("llm.prompts.", "in"),
                   ("llm.completions.", "out"), ("llm.input_messages.", "in"), ("llm.output_messages.", "out"))
_CONTENT_PREFIXES: Final = tuple(p for p, _ in _INDEXED)
_STRUCTURED: Final = (("gen_ai.input.messages", "in"), ("gen_ai.output.messages", "out"))
_VALUE_PREVIEW: Final = (("input.value", "traceloop.entity.input", "gen_ai.prompt"),
                         ("output.value", "traceloop.entity.output", "gen_ai.completion"))
_STRUCTURED_MAX: Final = 1 << 22  # message JSON text longer than this is not parsed into messages


# Every name the schemes above read starts with one of these: a span with none is no GenAI span.
_SCHEME_PREFIXES: Final = ("gen_ai.", "llm.", "openinference.", "traceloop.", "embedding.", "reranker.",
                           "input.value", "output.value", "retrieval.", "db.vector.")


def content_keys(attrs: dict[str, Any]) -> list[str]:
    """The attributes that hold message content (a prompt, a completion, a conversation)."""
    return [k for k in attrs if k.startswith(_SCHEME_PREFIXES)
            and (k in _CONTENT_NAMES or k.startswith(_CONTENT_PREFIXES))]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a span: who said it and its text (``extra``: what else it carried)."""

    role: str
    content: str
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class Llm:
    """The LLM columns of one span, and the messages it carried."""

    span_type: str = c.DEFAULT_SPAN_TYPE
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None
    temperature: float | None = None
    input_preview: str | None = None
    output_preview: str | None = None
    result_count: int | None = None
    conversation_id: str | None = None
    inputs: list[Message] = field(default_factory=list)
    outputs: list[Message] = field(default_factory=list)
    message_keys: list[str] = field(default_factory=list)  # the attributes the messages came from
    content: list[str] = field(default_factory=list)  # the attributes that hold message content


def span_type(attrs: dict[str, Any], genai: bool = True) -> str:
    """The span's type from the first naming scheme that says (see the module's table); ``genai``
    False (:func:`scan`) skips the GenAI names."""
    if genai:
        for key, names in _TYPE_KEYS:
            v = attrs.get(key)
            if type(v) is str and v:
                low = v.lower()
                t = names.get(low, low)
                if t != "unknown" and len(t) <= 50:
                    return t
        if _first(attrs, _PROVIDER_KEYS) is not None:
            return "llm"
    if _first(attrs, _HTTP_KEYS) is not None:
        return "http"
    if _first(attrs, _DB_KEYS) is not None:
        return "db"
    return c.DEFAULT_SPAN_TYPE


# Each column's names, ranked: the first present wins. One pass over a span's attributes finds them.
_SLOTS: Final = (MODEL_KEYS, INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS, TEMPERATURE_KEYS, COST_KEYS)
_MODEL, _INPUT, _OUTPUT, _TEMPERATURE, _COST = range(len(_SLOTS))
_RANK: Final = {key: (slot, rank) for slot, keys in enumerate(_SLOTS) for rank, key in enumerate(keys)}


def llm(attrs: dict[str, Any]) -> Llm:
    """The LLM columns of a span's ``attrs`` (and its message attributes, ``content``), from one
    pass over them: most spans of an app are no GenAI spans, and theirs end there."""
    genai = False
    content: list[str] = []
    found: dict[int, tuple[int, Any]] = {}
    for key, v in attrs.items():
        if not key.startswith(_SCHEME_PREFIXES):
            continue
        genai = True
        r = _RANK.get(key)
        if r is not None:
            old = found.get(r[0])
            if v is not None and (old is None or r[1] < old[0]):
                found[r[0]] = (r[1], v)
        elif key in _CONTENT_NAMES or key.startswith(_CONTENT_PREFIXES):
            content.append(key)
    out = Llm(span_type(attrs, genai), content=content)
    if not genai:
        return out
    model = found.get(_MODEL, (0, None))[1]
    if type(model) is str and 0 < len(model) <= 100 and "\x00" not in model:
        out.model = model
    out.input_tokens = _count(found.get(_INPUT, (0, None))[1])
    out.output_tokens = _count(found.get(_OUTPUT, (0, None))[1])
    out.temperature = _number(found.get(_TEMPERATURE, (0, None))[1])
    if out.temperature is None:
        out.temperature = _invocation_temperature(attrs)
    cost = found.get(_COST, (0, None))[1]
    if cost is not None:
        with contextlib.suppress(pf.Invalid):
            out.cost_usd = pf.to_numeric(cost, _COST_F)
    out.conversation_id = conversation(attrs)
    if content:
        _messages(attrs, content, out)
    if out.span_type == "retrieval":
        out.result_count = _results(attrs)
    return out


_COST_F: Final = c.FIELD_BY_NAME[c.SPAN]["cost_usd"]


def conversation(attrs: dict[str, Any]) -> str | None:
    """The conversation a span or event belongs to: ``gen_ai.conversation.id``, else ``session.id``."""
    conv = _first(attrs, CONVERSATION_KEYS)
    if type(conv) is str and 0 < len(conv) <= 255 and "\x00" not in conv:
        return conv
    return None


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None:
            return v
    return None


def _count(v: Any) -> int | None:
    if type(v) is float and v.is_integer():
        v = int(v)
    return v if type(v) is int and 0 <= v <= c.INT4_MAX else None


def _number(v: Any) -> float | None:
    if type(v) is int:
        return float(v)
    return v if type(v) is float else None


def _invocation_temperature(attrs: dict[str, Any]) -> float | None:
    """The ``temperature`` of OpenInference's ``llm.invocation_parameters`` (JSON in text)."""
    params = attrs.get(_INVOCATION)
    if type(params) is str and len(params) <= _INVOCATION_MAX:
        try:
            parsed = orjson.loads(params)
        except orjson.JSONDecodeError:
            return None
        if type(parsed) is dict:
            return _number(parsed.get("temperature"))
    return None


def _results(attrs: dict[str, Any]) -> int | None:
    docs = attrs.get("gen_ai.retrieval.documents")
    if type(docs) is str and len(docs) <= _STRUCTURED_MAX:
        docs = _loads(docs)
    if type(docs) is list:
        return _count(len(docs))
    seen = {k.split(".", 3)[2] for k in attrs if k.startswith("retrieval.documents.")}
    if seen:
        return _count(len(seen))
    return _count(attrs.get("db.vector.query.result_count"))


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


# --- messages ----------------------------------------------------------------------------------

def _messages(attrs: dict[str, Any], content: list[str], out: Llm) -> None:
    """The span's input and output messages, from the first scheme that has them, and the previews."""
    for key, side in _STRUCTURED:
        value = attrs.get(key)
        if type(value) is str and len(value) <= _STRUCTURED_MAX:
            value = _loads(value)
        if type(value) is list:
            msgs = [m for m in map(_structured, value) if m is not None]
            (out.inputs if side == "in" else out.outputs).extend(msgs)
            out.message_keys.append(key)
    if not out.inputs and not out.outputs:
        for prefix, side in _INDEXED:
            found = _indexed(attrs, content, prefix)
            if found:
                (out.inputs if side == "in" else out.outputs).extend(found)
                out.message_keys.extend(k for k in content if k.startswith(prefix))
    previews = (out.inputs[-1:], out.outputs[:1])
    for i, (msgs, keys) in enumerate(zip(previews, _VALUE_PREVIEW, strict=True)):
        text = msgs[0].content if msgs else _first_text(attrs, keys)
        if text:
            preview = pf.clean_str(text)[: c.PREVIEW_MAX]
            if i == 0:
                out.input_preview = preview
            else:
                out.output_preview = preview


def _first_text(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    v = _first(attrs, keys)
    if v is None:
        return None
    return v if type(v) is str else pf.json_text(v)


def _structured(m: Any) -> Message | None:
    """One message of ``gen_ai.input/output.messages``: ``{"role", "parts": [...]}`` (semconv 1.37+)
    or ``{"role", "content"}`` (earlier instrumentations, OpenAI's own shape)."""
    if type(m) is not dict:
        return None
    role = m.get("role")
    parts = m.get("parts")
    extra = {k: v for k, v in m.items() if k not in ("role", "parts", "content")} or None
    if type(parts) is list:
        texts = [t for p in parts if type(p) is dict and p.get("type") == "text" and type(t := p.get("content")) is str]
        if texts and len(texts) == len(parts):
            return Message(_role(role), "\n".join(texts), extra)
        return Message(_role(role), pf.json_text(parts), extra)
    return Message(_role(role), content_text(m.get("content")), extra)


def content_text(content: Any) -> str:
    """A message's ``content``: text as it is, OpenAI's parts (``[{"type": "text", "text"}]``) joined."""
    if type(content) is str:
        return content
    if type(content) is list:
        texts = [t for p in content if type(p) is dict and type(t := p.get("text")) is str]
        if texts and len(texts) == len(content):
            return "\n".join(texts)
    return "" if content is None else pf.json_text(content)


def _role(role: Any) -> str:
    return role if type(role) is str and 0 < len(role) <= 20 else "unknown"


def _indexed(attrs: dict[str, Any], content: list[str], prefix: str) -> list[Message]:
    """Messages flattened into ``prefix.N.field`` attributes, in index order."""
    fields: dict[int, dict[str, Any]] = {}
    n = len(prefix)
    for key in content:
        if key.startswith(prefix):
            index, _, name = key[n:].partition(".")
            if index.isdigit():
                fields.setdefault(int(index), {})[name] = attrs[key]
    out: list[Message] = []
    for _, f in sorted(fields.items()):
        role = f.get("role", f.get("message.role"))
        text = f.get("content", f.get("message.content", f.get("prompt.text", f.get("completion.text"))))
        if text is None:
            parts = sorted((k, v) for k, v in f.items() if k.startswith("message.contents.")
                           and k.endswith(".message_content.text"))
            text = "\n".join(str(v) for _, v in parts) if parts else None
        if role is None and text is None:
            continue
        out.append(Message(_role(role), text if type(text) is str else content_text(text)))
    return out
