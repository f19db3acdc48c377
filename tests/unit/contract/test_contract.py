"""agent.contract agrees with schema.sql, and its tables are internally consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent import contract as c

SCHEMA = (Path(__file__).resolve().parents[3] / "schema.sql").read_text()
SQL_TYPE = {
    c.TRACE_ID_T: "varchar", c.SPAN_ID_T: "varchar", c.UUID_T: "uuid", c.TIME_T: "timestamptz",
    c.VARCHAR_T: "varchar", c.TEXT_T: "text", c.INT4_T: "integer", c.INT8_T: "bigint",
    c.NUMERIC_T: "numeric", c.FLOAT8_T: "double precision", c.JSONB_T: "jsonb",
}


def schema_columns(table: str) -> dict[str, str]:
    """column -> declared type, from the CREATE TABLE and ALTER TABLE ... ADD COLUMN statements."""
    cols: dict[str, str] = {}
    create = re.search(rf"CREATE TABLE IF NOT EXISTS observability\.{table} \((.*?)\n\);", SCHEMA, re.S)
    alter = re.search(rf"ALTER TABLE observability\.{table}\n(.*?);", SCHEMA, re.S)
    assert create and alter
    for m in re.finditer(r'^\s+"?(\w+)"?\s+(varchar\(\d+\)|uuid|timestamptz)\s+NOT NULL', create.group(1), re.M):
        cols[m.group(1)] = m.group(2)
    for m in re.finditer(r"ADD COLUMN IF NOT EXISTS (\w+)\s+([a-z ]+?(?:\(\d+(?:, \d+)?\))?)(?:\s+NOT NULL|,|$)",
                         alter.group(1), re.M):
        cols[m.group(1)] = m.group(2).strip()
    return cols


@pytest.mark.parametrize("kind", c.RECORD_KINDS)
def test_fields_follow_copy_columns(kind: str) -> None:
    table = c.TABLE_OF_KIND[kind]
    assert c.COLUMNS[table][1] == c.TIME_COLUMN
    assert [f.name for f in c.FIELDS[kind]] == [n for n in c.COLUMNS[table] if n != c.TIME_COLUMN]
    assert c.KEY_COLUMNS[table][1] == c.TIME_COLUMN and c.KEY_COLUMNS[table][0] == c.COLUMNS[table][0]


@pytest.mark.parametrize("kind", c.RECORD_KINDS)
def test_field_types_and_lengths_match_schema_sql(kind: str) -> None:
    declared = schema_columns(c.TABLE_OF_KIND[kind])
    assert declared[c.TIME_COLUMN] == "timestamptz"
    for f in c.FIELDS[kind]:
        sql = declared[f.name]
        assert sql.split("(")[0] == SQL_TYPE[f.type], (f.name, sql)
        if sql.startswith("varchar"):
            assert f.max_len == int(sql[8:-1]), (f.name, sql)
        if f.type == c.NUMERIC_T:
            assert sql == f"numeric(10, {c.NUMERIC_SCALE})"


def test_every_copied_column_exists_in_schema_sql() -> None:
    for table, columns in c.COLUMNS.items():
        assert set(columns) <= set(schema_columns(table)), table


def test_limits_of_the_stories() -> None:
    assert (c.ERROR_MESSAGE_MAX, c.PREVIEW_MAX) == (1000, 500)
    by = c.FIELD_BY_NAME
    assert by[c.SPAN]["input_preview"].max_len == by[c.SPAN]["output_preview"].max_len == c.PREVIEW_MAX
    assert all(by[k]["error_message"].max_len == c.ERROR_MESSAGE_MAX for k in (c.TRACE, c.SPAN, c.DOCUMENT_EVENT))
    truncated = {f.name for fields in c.FIELDS.values() for f in fields if f.truncate}
    assert truncated == {"name", "error_type", "error_message", "input_preview", "output_preview"}


def test_required_fields() -> None:
    required = {k: {f.name for f in fs if f.required} for k, fs in c.FIELDS.items()}
    assert required == {
        c.TRACE: {"trace_id", "name"}, c.SPAN: {"span_id", "trace_id", "name"},
        c.CHAT_MESSAGE: {"role", "content"}, c.DOCUMENT_EVENT: {"event_type", "status"},
        c.METRIC: {"name", "kind"}, c.WORKFLOW_TRANSITION: {"workflow_id", "state"},
    }


def test_kinds_tables_and_keys() -> None:
    assert tuple(c.TABLE_OF_KIND) == c.RECORD_KINDS
    assert {c.TABLE_OF_KIND[k]: k for k in c.RECORD_KINDS} == c.KIND_OF_TABLE
    assert c.STARTED_AT in c.RECORD_KEYS[c.SPAN] and c.STARTED_AT not in c.RECORD_KEYS[c.CHAT_MESSAGE]
    assert c.WRITTEN_AT in c.BOOKKEEPING and c.EVENT not in c.BOOKKEEPING


def test_merge_rule() -> None:
    assert c.merges(c.TRACE, c.IN_PROGRESS) and c.merges(c.TRACE, c.COMPLETED)
    assert c.merges(c.SPAN, c.IN_PROGRESS) and not c.merges(c.SPAN, c.FAILED)
    assert not c.merges(c.CHAT_MESSAGE, c.IN_PROGRESS) and not c.merges(c.DOCUMENT_EVENT, c.STARTED)


def test_constants_fit_postgres() -> None:
    assert c.INT4_MAX == 2**31 - 1 and c.INT8_MAX == 2**63 - 1
    assert c.JSON_MAX_DEPTH < 254  # orjson.dumps refuses deeper values
    assert str(c.JSON_MAX_DEPTH) in c.JSON_TOO_DEEP
    assert c.EPOCH_MS_FROM < c.EPOCH_MS_UNTIL
