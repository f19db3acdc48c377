"""Fixtures of the end-to-end tests: a log folder and an agent process configured for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.embedded import stop_embedded
from tests.e2e.harness import Agent


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def agent(tmp_path: Path, logs: Path, dsn: str) -> Iterator[Agent]:
    a = Agent(workdir=tmp_path, dsn=dsn, logs=logs)
    yield a
    a.stop_quietly()


@pytest.fixture
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    """An ``agent.data_dir`` for the embedded PostgreSQL; its server is stopped afterwards, pass or fail."""
    d = tmp_path / "data"
    yield d
    stop_embedded(d)
