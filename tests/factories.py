"""Build pipeline values by hand for sink and batcher tests (no parser, no files)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import orjson

from agent import contract
from agent.batcher import Tails
from agent.model import Block, DeadLetter, FileIdentity, FileRef, Item, Line, Row

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def file_ref(name: str = "app.log", ino: int = 1) -> FileRef:
    return FileRef(source="app", path=f"/logs/{name}", identity=FileIdentity(1, ino, f"{ino:064x}", 64))


def values(table: str, **fields: Any) -> tuple[Any, ...]:
    cols = contract.COLUMNS[table]
    unknown = set(fields) - set(cols)
    assert not unknown, unknown
    return tuple(fields.get(c) for c in cols)


def span_row(seq: int, *, span_id: str | None = None, status: str = "completed", **extra: Any) -> Row:
    fields: dict[str, Any] = {
        "span_id": span_id or f"{seq + 1:016x}",
        "timestamp": T0 + dt.timedelta(milliseconds=seq),
        "trace_id": f"{seq + 1:032x}",
        "name": f"op-{seq}",
        "span_type": "llm",
        "status": status,
        "duration_ms": seq % 1000,
        "model": "gpt-4o",
        "input_tokens": seq,
        "output_tokens": 2 * seq,
        "cost_usd": Decimal("0.000123"),
        "metadata": orjson.dumps({"seq": seq}).decode(),
    }
    fields.update(extra)
    return Row("spans", values("spans", **fields), merge=status == contract.IN_PROGRESS)


def chat_row(message_id: str, content: str, **extra: Any) -> Row:
    """A chat message with its own id (uuid columns hold canonical text, as the parser gives)."""
    fields: dict[str, Any] = {"id": message_id, "timestamp": T0, "role": "user", "content": content,
                              "metadata": "{}"}
    fields.update(extra)
    return Row("chat_messages", values("chat_messages", **fields))


def trace_row(trace_id: str, *, status: str, **extra: Any) -> Row:
    fields: dict[str, Any] = {
        "trace_id": trace_id, "timestamp": T0, "name": "chat", "status": status,
        "metadata": orjson.dumps(extra.pop("meta", {})).decode(),
    }
    fields.update(extra)
    return Row("traces", values("traces", **fields), merge=True)


class FileWriter:
    """Hands out consecutive byte ranges of one (virtual) file, as the tailer would."""

    def __init__(self, file: FileRef | None = None, line_len: int = 100) -> None:
        self.file = file or file_ref()
        self.offset = 0
        self.line_len = line_len

    def item(self, result: Row | DeadLetter, data: bytes | None = None) -> Item:
        data = data if data is not None else b"x" * (self.line_len - 1)
        start, self.offset = self.offset, self.offset + len(data) + 1
        return Item(Line(self.file, start, self.offset, data), result)

    def block(self, results: list[Row | DeadLetter]) -> tuple[Block, list[Item]]:
        """The next lines as one block (with a stand-in tail hash, :func:`fake_tail`) and its items."""
        items = [self.item(r) for r in results]
        bounds = [items[0].line.start, *(i.line.end for i in items)]
        return Block(self.file, bounds, [i.line.data for i in items], False, fake_tail(self.offset)), items

    def tails(self) -> Tails:
        """The tail of everything handed out so far, as a batch of blocks ending here carries it."""
        return {self.file.identity.key: (self.offset, fake_tail(self.offset))}


def spans(writer: FileWriter, seqs: range | list[int]) -> list[Item]:
    return [writer.item(span_row(s)) for s in seqs]


def fake_tail(offset: int) -> str:
    """Stands in for a block's tail hash of the bytes before ``offset`` (the sink only stores it)."""
    return f"h{offset}"


def new_uuid() -> str:
    """A uuid as rows carry it: its canonical text."""
    return str(uuid.uuid4())
