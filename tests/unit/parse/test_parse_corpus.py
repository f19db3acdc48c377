"""The JSONTestSuite corpus as log lines: every file gives a row, a dead letter or an app log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import contract as c
from agent.model import AppLog, DeadLetter, Row
from agent.parse import parse
from tests.strategies import corpus_as_lines, corpus_files, corpus_in_records

FILES = corpus_files()


def check(result: Row | DeadLetter | AppLog) -> None:
    assert type(result) in (Row, DeadLetter, AppLog)
    if isinstance(result, DeadLetter):
        assert result.reason and not result.reason.startswith("internal"), result.reason
        result.reason.encode("utf-8")  # storable as text
        assert "\x00" not in result.reason
    if isinstance(result, Row):
        for value in result.values:
            if isinstance(value, str):
                value.encode("utf-8")
                assert "\x00" not in value


def has_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 anywhere (jsonb would refuse it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_file_as_a_line(path: Path) -> None:
    data = path.read_bytes()
    for line in corpus_as_lines(data):
        result = parse(line)
        check(result)
        if path.name.startswith("n_"):
            assert isinstance(result, DeadLetter)  # must be rejected
        if path.name.startswith("y_"):  # must be accepted: an object is an app log, the rest is "not an object"
            assert isinstance(result, AppLog) or result.reason.startswith("not a JSON object")  # type: ignore[union-attr]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_value_inside_a_record(path: Path) -> None:
    data = path.read_bytes()
    try:
        orjson.loads(data)
        valid = True
    except orjson.JSONDecodeError:
        valid = False
    for line in corpus_in_records(data):
        result = parse(line)
        check(result)
        assert isinstance(result, Row) == valid, result
        if isinstance(result, Row):
            for name, value in zip(c.COLUMNS[result.table], result.values, strict=True):
                if name in ("metadata", "sources") and value is not None:
                    assert not has_nul(orjson.loads(value))
