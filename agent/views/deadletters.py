"""``hypertail dead-letters``: dead letters for a human (one block each) or for a script (JSON).

A dead letter's bytes are whatever an application wrote, so they are never printed as they are:
:func:`preview` shows them as text in which every byte that is not printable (control characters,
terminal escape sequences, invalid UTF-8, bidirectional overrides) is written as an escape, so
what reaches the terminal is exactly what the reader sees, and a line stays one line.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.views.table import cut

PREVIEW_CHARS = 400  # of a dead letter's bytes in the JSON listing; the block shows one line of them


class DeadLetterLike(Protocol):
    """The fields a dead letter is shown with (:class:`agent.sink.deadletters.StoredDeadLetter`)."""

    @property
    def id(self) -> int: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def file_key(self) -> str: ...
    @property
    def byte_offset(self) -> int: ...
    @property
    def line_length(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def field(self) -> str | None: ...
    @property
    def raw(self) -> bytes: ...


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if ch in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch]
    if 0xDC80 <= code <= 0xDCFF:  # an invalid byte, kept by the surrogateescape decoding
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def preview(raw: bytes, limit: int | None = None) -> str:
    """``raw`` as one printable line (see the module docstring); at most ``limit`` bytes of it."""
    data = raw if limit is None else raw[:limit]
    text = "".join(map(_escape, data.decode("utf-8", "surrogateescape")))
    return text + ("…" if limit is not None and len(raw) > limit else "")


def stored_whole(dl: DeadLetterLike) -> bool:
    """Whether ``raw`` holds the whole line. The reader hands a line over without its newline, a
    ``\r`` before it and (at offset 0) a UTF-8 BOM, so that many bytes fewer than its length;
    an oversize line keeps only its first bytes, and ``raw`` is capped at 64 KiB."""
    trimmed = 5 if dl.byte_offset == 0 else 2
    return 0 <= dl.line_length - len(dl.raw) <= trimmed


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def block(dl: DeadLetterLike, width: int | None) -> list[str]:
    """One dead letter: where it came from, why (both wrapped to ``width``, never cut: they are
    what to act on), and its bytes on one line (cut to ``width``)."""
    stored = "" if stored_whole(dl) else f", the first {len(dl.raw)} stored"
    head = (f"#{dl.id}  {_when(dl.received_at)} UTC  {dl.source}  {dl.path}:{dl.byte_offset}  "
            f"({dl.line_length} bytes{stored})")
    raw = f"    raw:    {preview(dl.raw, 4096)}"
    if width is None:
        return [head, f"    reason: {dl.reason}", raw]
    wrap = textwrap.TextWrapper(width, subsequent_indent=" " * 12, break_on_hyphens=False, break_long_words=True)
    return [*wrap.wrap(head), *wrap.wrap(f"    reason: {dl.reason}"), cut(raw, width)]


def listing(dead: Sequence[DeadLetterLike], total: int, width: int | None) -> list[str]:
    """The blocks, newest first, and a last line when more match than are shown."""
    out: list[str] = []
    for dl in dead:
        out += block(dl, width)
    if total > len(dead):
        out.append(f"{total - len(dead)} more match (newest {len(dead)} shown; --limit N, or narrow with --since, "
                   "--source, --path, --reason)")
    return out


def to_json(dl: DeadLetterLike) -> dict[str, Any]:
    return {
        "id": dl.id, "received_at": dl.received_at.astimezone(UTC).isoformat(), "agent_id": dl.agent_id,
        "source": dl.source, "path": dl.path, "file_key": dl.file_key, "byte_offset": dl.byte_offset,
        "line_length": dl.line_length, "reason": dl.reason, "field": dl.field, "stored_bytes": len(dl.raw),
        "preview": preview(dl.raw, PREVIEW_CHARS),
    }
