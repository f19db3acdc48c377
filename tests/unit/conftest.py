"""Unit-test fixtures shared across modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import emit


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app.log"
    emit.configure(path)
    yield path
    emit.shutdown()
