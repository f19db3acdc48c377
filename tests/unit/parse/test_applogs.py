"""Ordinary log lines -> observability.logs rows (agent.parse.applogs, issue 13)."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import contract as c
from agent.model import Row
from agent.parse import Parser
from agent.parse.applogs import LOG_KEYS, AppLogPolicy, level_rank, log_row
from tests.strategies import json_values

LID = str(uuid.UUID(int=7))


def row(**fields: object) -> Row:
    return log_row(dict(fields), log_id=LID, source="app")


def as_dict(r: Row) -> dict[str, object]:
    assert isinstance(r, Row) and r.table == c.LOGS
    return dict(zip(c.COLUMNS[c.LOGS], r.values, strict=True))


def test_columns_and_metadata() -> None:
    d = as_dict(row(event="cache miss", level="WARNING", logger="app.cache", timestamp="2024-05-01T12:00:00.3Z",
                    trace_id="4BF92F3577B34DA6A3CE929D0E0E4736", span_id="00f067aa0ba902b7", user="u-7"))
    assert d == {
        "id": LID, "timestamp": dt.datetime(2024, 5, 1, 12, 0, 0, 300000, tzinfo=dt.UTC),
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "level": "warning",
        "logger": "app.cache", "event": "cache miss", "source": "app", "metadata": '{"user":"u-7"}',
    }


def test_bad_ids_are_kept_in_metadata_not_lost() -> None:
    r = row(event="x", timestamp=1714564800, trace_id="nope", span_id=5)
    d = as_dict(r)
    assert d["trace_id"] is None and d["span_id"] is None
    assert orjson.loads(str(d["metadata"])) == {c.INVALID_MARKER: {"trace_id": "nope", "span_id": 5}}
    assert isinstance(r, Row) and r.warnings == ("trace_id", "span_id")


def test_a_line_without_a_readable_time_is_stored_at_the_agents_time() -> None:
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    d = as_dict(log_row({"event": "x"}, log_id=LID, source="app", clock=lambda: now))
    assert d["timestamp"] == now and orjson.loads(str(d["metadata"])) == {c.LOG_TIME_FROM_AGENT: True}
    d = as_dict(log_row({"event": "x", "timestamp": "yesterday"}, log_id=LID, source="app", clock=lambda: now))
    meta = orjson.loads(str(d["metadata"]))
    assert meta == {c.LOG_TIME_FROM_AGENT: True, c.INVALID_MARKER: {"timestamp": "yesterday"}}


def test_odd_values_are_stored_as_text() -> None:
    d = as_dict(row(event={"a": 1}, level=3, logger="l" * 300, timestamp="2024-05-01T12:00:00Z"))
    assert d["event"] == '{"a":1}' and d["level"] == "3" and d["logger"] == "l" * 255
    assert as_dict(row(event="nul\x00", timestamp="2024-05-01T12:00:00Z"))["event"] == "nul\ufffd"


@pytest.mark.parametrize(("policy", "level", "kept"), [
    (AppLogPolicy(), "debug", True),
    (AppLogPolicy(store=False), "error", False),
    (AppLogPolicy(min_level="warning"), "info", False),
    (AppLogPolicy(min_level="warning"), "WARN", True),
    (AppLogPolicy(min_level="warning"), "exception", True),
    (AppLogPolicy(min_level="error"), None, True),        # no level: never filtered out
    (AppLogPolicy(min_level="error"), "notice", True),    # unknown level: never filtered out
])
def test_policy(policy: AppLogPolicy, level: str | None, kept: bool) -> None:
    assert policy.keeps(level) is kept


def test_level_ranks() -> None:
    assert [level_rank(x) for x in ("debug", "INFO", "warn", "critical", "fatal", "verbose")] == [0, 1, 2, 4, 4, None]


# --- the typed path of log lines against the tolerant one ------------------------------------------

LOG_VALUES = st.one_of(
    json_values(4), st.sampled_from(["2024-05-01T12:00:00Z", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7",
                                     "WARNING", 1714564800, "l" * 300, "a\x00b", 2**64 - 1]),
    st.integers(-(2**70), 2**70))
LOG_LINES = st.dictionaries(st.one_of(st.sampled_from([*LOG_KEYS, "record_type", "kind", "user", "request_id"]),
                                      st.text(max_size=6)), LOG_VALUES, max_size=8)


def strict_row(result: object) -> object:
    """A result compared by value type and repr; the agent's own read time is not compared."""
    if not isinstance(result, Row):
        return result
    values = [(type(v), repr(v)) for v in result.values]
    meta = orjson.loads(result.values[-1])
    if c.LOG_TIME_FROM_AGENT in meta:
        values[1] = None
    values[-1] = (str, orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
    return result.table, values, result.merge, result.warnings


@settings(max_examples=400, deadline=None)
@given(st.lists(LOG_LINES, min_size=1, max_size=4),
       st.sampled_from([AppLogPolicy(), AppLogPolicy(min_level="warning")]))
def test_typed_log_lines_equal_the_tolerant_path(records: list[dict[str, object]], policy: AppLogPolicy) -> None:
    parser = Parser(app_logs=policy, source="app")
    for record in records:  # the earlier lines teach the parser their keys
        data = _dumps(record)
        slow = parser.tolerant(data, lambda: LID)
        fast = parser.typed(data, lambda: LID)
        if fast is not None:
            assert strict_row(fast) == strict_row(slow), data
        assert strict_row(parser.parse(data, lambda: LID)) == strict_row(slow)


def _dumps(record: dict[str, object]) -> bytes:
    """JSON text of ``record``, integers of any size included (orjson writes 64 bits at most)."""
    parts = [orjson.dumps(k).decode() + ":" + (str(v) if type(v) is int else orjson.dumps(v).decode())
             for k, v in record.items()]
    return ("{" + ",".join(parts) + "}").encode()


def test_the_typed_path_takes_an_app_log_line_once_it_knows_its_keys() -> None:
    parser = Parser(app_logs=AppLogPolicy(), source="app")
    line = b'{"event":"cache miss","level":"info","timestamp":"2024-05-01T12:00:00Z","key":"k1"}'
    assert parser.typed(line, lambda: LID) is None
    slow = parser.parse(line, lambda: LID)
    fast = parser.typed(line, lambda: LID)
    assert isinstance(fast, Row) and strict_row(fast) == strict_row(slow)
    assert orjson.loads(fast.values[-1]) == {"key": "k1"}
    assert parser.typed(b'{"event":"x","record_type":"span"}', lambda: LID) is None  # a record: not a log line
