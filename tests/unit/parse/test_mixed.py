"""Every line of the mixed bench file becomes the row its generator says (tests/mixed.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import orjson

from agent import contract as c
from agent.model import AppLog, Row
from agent.parse import Parser, parse
from agent.parse.applogs import AppLogPolicy
from tests.mixed import BENCH_LINES, CUSTOM_KEY, SHAPES, mixed

FALLBACK = str(uuid.UUID(int=7))


def decoded(table: str, values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(c.COLUMNS[table], values, strict=True))
    jsonb = {f.name for fields in c.FIELDS.values() for f in fields if f.type == c.JSONB_T}
    for name in jsonb & set(row):
        if row.get(name) is not None:
            row[name] = orjson.loads(row[name])
    return row


def test_every_line_of_the_mixed_file_becomes_its_reference_row() -> None:
    tables: Counter[str | None] = Counter()
    for i, line in enumerate(mixed(BENCH_LINES)):
        result = parse(line.data, record_type_key=line.key, fallback_id=lambda: FALLBACK)
        tables[line.table] += 1
        if line.table is None:
            assert isinstance(result, AppLog), (i, line.data, result)
            continue
        assert isinstance(result, Row) and result.table == line.table and result.warnings == (), (i, result)
        got = decoded(result.table, result.values)
        assert got == line.expected, (i, line.data, {k: (got[k], v) for k, v in line.expected.items() if got[k] != v})
        assert isinstance(got["timestamp"], datetime) and got["timestamp"].utcoffset() is not None
    # app logs (table None here) become logs rows in the runner, per source (agent.parse.applogs)
    assert tables["spans"] > BENCH_LINES // 2 and all(tables[t] for t in (*c.COLUMNS, None) if t != c.LOGS)


def test_the_typed_path_takes_every_line_of_the_mixed_file_once_it_knows_the_app_keys() -> None:
    """The mixed file is what apps write: past the first line that shows a shape's app keys, no
    line of it needs the tolerant path (each source has its parser, as in the runner)."""
    parsers = {key: Parser(key, app_logs=AppLogPolicy(), source="app")
               for key in (c.DEFAULT_RECORD_TYPE_KEY, CUSTOM_KEY)}
    tolerant: Counter[bytes] = Counter()
    for line in mixed(BENCH_LINES // 10):
        parser = parsers[line.key]
        if parser.typed(line.data) is None:
            tolerant[line.data.split(b",", 1)[0]] += 1
            parser.parse(line.data)
    assert sum(tolerant.values()) <= len(SHAPES), tolerant
