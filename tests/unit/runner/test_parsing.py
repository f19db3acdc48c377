"""LineParser.parse_block: a block of lines becomes one item per line, in order, with exact bounds.

What the runner adds to :func:`agent.parse.parse` is per block: the source's discriminator key
and app-log policy, and the deterministic ids derived from the line's place. Each item must be
what parsing that line alone gives (the parser is held to its reference elsewhere).
"""

from __future__ import annotations

import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agent import contract
from agent.config import Settings
from agent.model import AppLog, Block, DeadLetter, FileIdentity, FileRef, Line, Row
from agent.ops.metrics import Metrics
from agent.parse import parse
from agent.runner.parsing import ROW_ID_NAMESPACE, LineParser, RowIds

IDENT = FileIdentity(8, 99, "ab" * 16, 1024)
APP = FileRef("app", "/logs/app.log", IDENT)
OTHER = FileRef("other", "/logs/other.log", IDENT)


def settings() -> Settings:
    return Settings.model_validate({
        "agent": {"id": "agent-1"},
        "sources": [{"name": "app", "paths": ["/logs/app.log"]},
                    {"name": "other", "paths": ["/logs/other.log"], "record_type_key": "kind",
                     "app_logs": "store", "app_logs_min_level": "warning"}],
    })


PARSER = LineParser(settings(), Metrics())


def chat(key: str, **extra: object) -> bytes:
    return orjson.dumps({key: "chat_message", "timestamp": "2026-11-01T12:00:00Z", "role": "user",
                         "content": "hi", "conversation_id": "c1", **extra})


def block_of(ref: FileRef, lines: list[bytes], start: int = 0) -> Block:
    bounds = [start]
    for line in lines:
        bounds.append(bounds[-1] + len(line) + 1)
    return Block(ref, bounds, lines)


def test_each_line_becomes_one_item_with_its_own_bounds_in_order() -> None:
    lines = [chat("record_type"), b"not json", b'{"event":"cache miss","level":"info"}', chat("record_type")]
    items = PARSER.parse_block(block_of(APP, lines, start=100))
    ends = [100 + sum(len(x) + 1 for x in lines[: k + 1]) for k in range(len(lines))]
    assert [i.line for i in items] == [
        Line(APP, start, end, data) for start, end, data in zip([100, *ends], ends, lines, strict=False)]
    kinds = [type(i.result) for i in items]
    assert kinds == [Row, DeadLetter, Row, Row]
    assert items[2].result.table == contract.LOGS  # type: ignore[union-attr]


def test_ids_come_from_the_lines_place_and_equal_uuid5() -> None:
    lines = [chat("record_type"), chat("record_type")]
    items = PARSER.parse_block(block_of(APP, lines, start=40))
    ids = [i.result.values[0] for i in items]  # type: ignore[union-attr]
    starts = [40, 41 + len(lines[0])]
    assert ids == [str(uuid.uuid5(ROW_ID_NAMESPACE, f"agent-1\x1f{IDENT.key}\x1f{s}")) for s in starts]
    given_id = "2f19a3c3-112a-5919-bd1a-b33d1b5eb01c"
    (item,) = PARSER.parse_block(block_of(APP, [chat("record_type", id=given_id)]))
    assert item.result.values[0] == given_id  # type: ignore[union-attr]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)))  # encodable: ids are of real config text


@given(TEXT, TEXT, st.integers(min_value=0, max_value=2**63))
def test_row_ids_equal_uuid5_of_agent_file_and_offset(agent_id: str, file_key: str, offset: int) -> None:
    expected = uuid.uuid5(ROW_ID_NAMESPACE, f"{agent_id}\x1f{file_key}\x1f{offset}")
    got = RowIds(agent_id, file_key)(offset)
    assert type(got) is str and got == str(expected)  # canonical text, version and variant bits as uuid5's


def test_the_sources_key_and_app_log_policy_apply() -> None:
    lines = [chat("kind"), chat("record_type"), b'{"event":"x","level":"info"}', b'{"event":"y","level":"error"}']
    items = PARSER.parse_block(block_of(OTHER, lines))
    assert isinstance(items[0].result, Row) and items[0].result.table == "chat_messages"
    # "record_type" is not this source's key: an ordinary log line, stored (no level: never filtered)
    assert isinstance(items[1].result, Row) and items[1].result.table == contract.LOGS
    assert isinstance(items[2].result, AppLog)  # below warning: only counted
    assert isinstance(items[3].result, Row) and items[3].result.table == contract.LOGS


def test_items_equal_parsing_each_line_alone() -> None:
    lines = [chat("record_type"), chat("record_type", turn_number=-1), b"[1]", b'{"record_type":"nope"}']
    items = PARSER.parse_block(block_of(APP, lines))
    for item in items:
        alone = parse(item.line.data, fallback_id=lambda s=item.line.start: RowIds("agent-1", IDENT.key)(s))
        assert item.result == alone


def test_an_oversize_block_is_one_dead_letter_naming_its_size() -> None:
    (item,) = PARSER.parse_block(Block(APP, [10, 5010], [b"{" * 16], True))
    assert isinstance(item.result, DeadLetter)
    assert item.result.reason.startswith("line is 5000 bytes, longer than tail.max_line_bytes")
    assert item.line == Line(APP, 10, 5010, b"{" * 16, True)


def test_an_otlp_json_source_turns_a_line_into_the_rows_of_its_records() -> None:
    """``format = "otlp_json"``: a line is the rows of all its records, their ids derived from the
    line's place (the same line read again gives the same ids); a structlog source reads the same
    line as an ordinary log line."""
    from tests.otlp import log_record, logs_line, span, traces_line

    s = Settings.model_validate({"agent": {"id": "agent-1"}, "sources": [
        {"name": "otel", "paths": ["/logs/*.jsonl"], "format": "otlp_json"},
        {"name": "app", "paths": ["/logs/*.log"]}]})
    otel = FileRef("otel", "/logs/otel.jsonl", IDENT)
    parser = LineParser(s, Metrics())
    lines = [traces_line(span("00f067aa0ba902b7")), logs_line(log_record("a"), log_record("b"))]
    first, second = parser.parse_block(block_of(otel, lines))
    assert [r.table for r in first.result.rows] == ["spans", "traces"]  # type: ignore[union-attr]
    ids = [r.values[0] for r in second.result.rows]  # type: ignore[union-attr]
    again = LineParser(s, Metrics()).parse_block(block_of(otel, lines))[1]
    assert [r.values[0] for r in again.result.rows] == ids and len(set(ids)) == 2  # type: ignore[union-attr]
    moved = parser.parse_block(block_of(otel, lines[1:], start=second.line.start + 1))[0]
    assert not set(ids) & {r.values[0] for r in moved.result.rows}  # type: ignore[union-attr]
    [plain] = parser.parse_block(block_of(APP, lines[1:]))
    assert type(plain.result) is Row and plain.result.table == contract.LOGS
