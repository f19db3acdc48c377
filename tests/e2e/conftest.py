"""Fixtures of the end-to-end tests: a log folder and an agent process configured for it."""

from __future__ import annotations

import shutil
import tempfile
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
def embedded_dir() -> Iterator[Path]:
    """An ``agent.data_dir`` for the embedded PostgreSQL; its server is stopped afterwards, pass or fail.

    Not under tmp_path: as root the server runs as another user, which must traverse every parent
    folder, and each new pytest session on the machine chmods /tmp/pytest-of-<user> back to 0700.
    """
    base = Path(tempfile.mkdtemp(prefix="hypertail-test-embedded-"))
    base.chmod(0o755)
    yield base / "data"
    stop_embedded(base / "data")  # raises, leaving the folder to the server, if it cannot stop
    shutil.rmtree(base, ignore_errors=True)
