"""A dead letter's bytes shown safely (issue 22): whatever the application wrote, the terminal gets
one printable line, with every byte that is not printable text written as an escape."""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from agent.views.deadletters import block, preview, stored_whole


def test_escapes_what_a_terminal_would_act_on() -> None:
    raw = b'{"a": "\x1b[31mred\x1b[0m"}\r\n\tend \xff\xfe \xe2\x80\xae gnirts \\ caf\xc3\xa9'
    assert preview(raw) == '{"a": "\\u001b[31mred\\u001b[0m"}\\r\\n\\tend \\xff\\xfe \\u202e gnirts \\\\ café'
    assert preview(b"x" * 10, 4) == "xxxx…"


@given(st.binary(max_size=300))
def test_any_bytes_become_one_printable_line(raw: bytes) -> None:
    text = preview(raw)
    assert not [ch for ch in text if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")]


@dataclass(frozen=True)
class Dead:
    id: int = 7
    received_at: dt.datetime = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    agent_id: str = "a"
    source: str = "app"
    path: str = "/var/log/app/app.log"
    file_key: str = "1:2:0123456789abcdef"
    byte_offset: int = 4096
    line_length: int = 3001
    reason: str = "line is 3001 bytes, longer than tail.max_line_bytes (1024); its first bytes are kept"
    field: str | None = None
    raw: bytes = b'{"record_type": "span"' + b"x" * 1002


def test_a_block_says_where_why_and_how_much_is_stored() -> None:
    lines = block(Dead(), 80)
    assert lines[:2] == ["#7  2026-05-01 12:00:00 UTC  app  /var/log/app/app.log:4096  (3001 bytes, the",
                         "            first 1024 stored)"]
    assert lines[2] == "    reason: line is 3001 bytes, longer than tail.max_line_bytes (1024); its"
    assert lines[3] == "            first bytes are kept"  # the reason is wrapped, never cut
    assert lines[4].startswith('    raw:    {"record_type"') and lines[4].endswith("…")
    assert all(len(line) <= 80 for line in lines)
    assert "stored" not in block(Dead(line_length=len(Dead.raw) + 1), None)[0]


def test_stored_whole_allows_the_newline_cr_and_a_bom_at_the_start() -> None:
    assert stored_whole(Dead(line_length=1024 + 2))  # raw + "\r\n"
    assert not stored_whole(Dead(line_length=1024 + 3))
    assert stored_whole(Dead(byte_offset=0, line_length=1024 + 5))  # + BOM + "\r\n"
    assert not stored_whole(Dead())
