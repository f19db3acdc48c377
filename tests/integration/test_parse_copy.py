"""Every row the parser makes is COPY-able into the real tables (binary COPY through asyncpg).

Rows come from the JSONTestSuite corpus spliced into records, from the Hypothesis strategies
(valid records, invalid optional fields, wild values), from hand-picked extremes and from the
mixed bench file. Each line goes through a source's parser as in the runner (app-log lines
become logs rows), and then once more through its typed path, which has learned the line's app
keys by then: where it takes the line, its row is the one COPYed. Rows that share a key (trace
start/end merges, accidental duplicates) are deduplicated first so that the primary key is not
what fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import contract as c
from agent.model import Row
from agent.parse import Parser
from agent.parse.applogs import AppLogPolicy
from tests.mixed import mixed
from tests.strategies import (
    cases,
    cases_with_invalid_optional,
    corpus_as_lines,
    corpus_files,
    corpus_in_records,
    wild_records,
)

TID = "0af7651916cd43dd8448eb211c80319c"


def collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """Draw ``n`` examples through Hypothesis proper (not ``.example()``)."""
    out: list[Any] = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value: Any) -> None:
        out.append(value)

    draw()
    return out


def rows_of(lines: Iterable[bytes], key: str = c.DEFAULT_RECORD_TYPE_KEY) -> list[Row]:
    rows: list[Row] = []
    parser = Parser(key, app_logs=AppLogPolicy(), source="app")  # app-log lines: logs rows (issue 13)
    for i, line in enumerate(lines):
        line_id = str(uuid.UUID(int=i + 1))
        result = parser.parse(line, lambda line_id=line_id: line_id)  # type: ignore[misc]
        typed = parser.typed(line, lambda line_id=line_id: line_id)  # type: ignore[misc]
        result = result if typed is None else typed
        if isinstance(result, Row):
            rows.append(result)
    return rows


def corpus_rows() -> list[Row]:
    lines: list[bytes] = []
    for i, path in enumerate(corpus_files()):
        data = path.read_bytes()
        for line in [*corpus_in_records(data), *corpus_as_lines(data)]:
            lines.append(line.replace(b"b7ad6b7169203331", f"{i + 1:016x}".encode(), 1))
    return rows_of(lines)


def generated_rows() -> list[Row]:
    records = [case.record for case in collect(cases(), 250)]
    records += [case.record for case in collect(cases(plain=True), 100)]
    records += [case.record for case in collect(cases_with_invalid_optional(), 250)]
    records += collect(wild_records(), 300)
    # the same values as ordinary log lines (no record_type): the logs table takes whatever they hold
    records += [{k: v for k, v in r.items() if k != "record_type"} for r in records[:300]]
    lines = [orjson.dumps(r) for r in records if _dumpable(r)]
    return rows_of(lines)


def _dumpable(record: dict[str, Any]) -> bool:
    try:
        orjson.dumps(record)
    except TypeError:
        return False
    return True


def extreme_rows() -> list[Row]:
    span = {"record_type": "span", "trace_id": TID, "name": "n" * 300, "span_type": "s" * 50,
            "status": "in_progress", "duration_ms": c.INT4_MAX, "error_type": "e" * 300,
            "error_message": "\x00" * 2000, "model": "m" * 100, "input_tokens": c.INT4_MAX, "output_tokens": 0,
            "cost_usd": "9999.999999", "temperature": -1.7976931348623157e308, "input_preview": "é" * 600,
            "output_preview": "\U0001f600" * 600, "document_id": str(uuid.UUID(int=0)), "chunk_count": 0,
            "result_count": 1, "metadata": {"\x00": "\x00", "big": 18446744073709551615, "neg": -(2**63)}}
    lines = [
        orjson.dumps({**span, "span_id": "0000000000000001", "started_at": "0001-01-01T00:00:00.000001Z"}),
        orjson.dumps({**span, "span_id": "0000000000000002", "started_at": "9999-12-31T23:59:59.999998Z",
                      "cost_usd": -9999.999999}),
        orjson.dumps({**span, "span_id": "0000000000000003", "started_at": 99_999_999_999}),
        orjson.dumps({"record_type": "document_event", "event_type": "x" * 50, "status": "failed",
                      "timestamp": 0, "file_size_bytes": c.INT8_MAX, "error_message": "\x00"}),
        orjson.dumps({"record_type": "chat_message", "role": "r" * 20, "content": "\x00" * 10,
                      "timestamp": 10**14 - 1, "sources": [[[[["\x00"]]]]], "citations": "\x00",
                      "session_id": "s" * 255, "conversation_id": "c" * 255, "feedback_type": "f" * 20}),
        orjson.dumps({"record_type": "trace", "trace_id": "F" * 32, "name": "t", "started_at": -1,
                      "ended_at": "9999-12-31T23:59:59Z", "total_cost_usd": 0.0000004}),
    ]
    deep = b"[" * 1000 + b"1" + b"]" * 1000
    lines.append(lines[0][:-1].replace(b"0000000000000001", b"0000000000000004") + b',"deep":' + deep + b"}")
    rows = rows_of(lines)
    assert len(rows) == len(lines)
    return rows


def by_table(rows: Iterable[Row]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table, first of each primary key only."""
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in c.COLUMNS}
    for row in rows:
        key = (row.table, row.values[: len(c.KEY_COLUMNS[row.table])])
        if key not in seen:
            seen.add(key)
            out[row.table].append(row.values)
    return out


async def copy_all(conn: asyncpg.Connection, rows: list[Row]) -> dict[str, list[tuple[Any, ...]]]:
    tables = by_table(rows)
    for table, records in tables.items():
        if not records:
            continue
        try:
            await conn.copy_records_to_table(table, schema_name=c.SCHEMA, columns=list(c.COLUMNS[table]),
                                             records=records)
        except Exception as exc:
            culprits = await _find_culprits(conn, table, records)
            raise AssertionError(f"COPY into {table} failed: {exc!r}; rows: {culprits[:3]}") from exc
    return tables


async def _find_culprits(conn: asyncpg.Connection, table: str, records: list[tuple[Any, ...]]) -> list[Any]:
    bad = []
    for record in records:
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(table, schema_name=c.SCHEMA, columns=list(c.COLUMNS[table]),
                                                 records=[record])
                raise _Rollback
        except _Rollback:
            pass
        except Exception as exc:
            bad.append((repr(exc)[:200], record))
    return bad


class _Rollback(Exception):
    pass


async def _assert_stored_as_given(conn: asyncpg.Connection, tables: dict[str, list[tuple[Any, ...]]]) -> None:
    """Read every table back: same count, and every non-JSON column exactly as COPYed."""
    for table, records in tables.items():
        cols = c.COLUMNS[table]
        columns = ", ".join(f'"{name}"' for name in cols)
        got = await conn.fetch(f"SELECT {columns} FROM {c.SCHEMA}.{table}")
        assert len(got) == len(records), table
        stored = {tuple(map(_text_of_uuid, r[: len(c.KEY_COLUMNS[table])])): r for r in got}
        for record in records:
            back = stored[record[: len(c.KEY_COLUMNS[table])]]
            for name, want, have in zip(cols, record, back, strict=True):
                if name != c.METADATA and (table == c.LOGS or c.FIELD_BY_NAME[c.KIND_OF_TABLE[table]].get(
                        name, c.Field(name, c.TIME_T)).type != c.JSONB_T):
                    assert _text_of_uuid(have) == want, (table, name, want, have)


def _text_of_uuid(value: Any) -> Any:
    """A value read back, uuids as rows carry them: their canonical text."""
    return str(value) if isinstance(value, uuid.UUID) else value


async def test_corpus_rows_copy(conn: asyncpg.Connection) -> None:
    rows = corpus_rows()
    assert len(rows) > 150
    tables = await copy_all(conn, rows)
    await _assert_stored_as_given(conn, tables)


async def test_generated_rows_copy(conn: asyncpg.Connection) -> None:
    rows = generated_rows()
    assert {r.table for r in rows} == set(c.COLUMNS)
    assert any(r.warnings for r in rows) and any(r.merge for r in rows)
    tables = await copy_all(conn, rows)
    await _assert_stored_as_given(conn, tables)


async def test_mixed_file_rows_copy(conn: asyncpg.Connection) -> None:
    lines = list(mixed(2000))
    rows = [row for key in {line.key for line in lines}
            for row in rows_of([line.data for line in lines if line.key == key], key)]
    assert len(rows) == len(lines) and {r.table for r in rows} == set(c.COLUMNS)
    tables = await copy_all(conn, rows)
    await _assert_stored_as_given(conn, tables)


async def test_extreme_rows_copy(conn: asyncpg.Connection) -> None:
    tables = await copy_all(conn, extreme_rows())
    await _assert_stored_as_given(conn, tables)
    deep = await conn.fetchval(f"SELECT metadata->'deep' FROM {c.SCHEMA}.spans WHERE span_id = '0000000000000004'")
    assert c.JSON_TOO_DEEP in deep
