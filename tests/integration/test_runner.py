"""The runner in-process against the real database: lifecycle paths the e2e tests cannot force."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from agent.batcher import Tables, Tails
from agent.config import Settings
from agent.model import Item
from agent.runner import Runner
from agent.sink.writer import CommitStats
from tests.e2e.harness import span_line


def settings(dsn: str, logs: Path) -> Settings:
    return Settings.model_validate({
        "database": {"dsn": dsn},
        "sources": [{"name": "app", "paths": [str(logs / "*.log")]}],
        "tail": {"rescan_interval_ms": 50},
        "batch": {"max_age_ms": 20},
        "http": {"enabled": False},
        "ops": {"rollup_enabled": False},
        "agent": {"id": "runner-test", "shutdown_timeout_s": 5},
    })


async def test_exit_when_idle_commits_everything(dsn: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"".join(span_line(i) for i in range(300)))
    runner = Runner(settings(dsn, tmp_path), dsn, exit_when_idle=True, idle_grace_s=0.2)
    assert await runner.run() == 0
    assert await conn.fetchval("SELECT count(*) FROM observability.spans") == 300
    assert runner.lines_committed == 300


async def test_a_crashed_stage_stops_the_agent_with_exit_1(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.log").write_bytes(b"".join(span_line(i) for i in range(50)))
    runner = Runner(settings(dsn, tmp_path), dsn, exit_when_idle=True, idle_grace_s=0.2)
    real = inspect.signature(runner.sink.commit)
    calls: list[int] = []

    async def broken(items: Sequence[Item], tables: Tables | None = None, tails: Tails | None = None) -> CommitStats:
        calls.append(len(items))
        raise RuntimeError("a bug in the sink")

    assert inspect.signature(broken).parameters.keys() == real.parameters.keys()  # the stub stands in exactly
    monkeypatch.setattr(runner.sink, "commit", broken)
    assert await runner.run() == 1
    assert calls  # the pipeline reached the (broken) commit: the exit is the bug's, not a TypeError's
    assert await conn.fetchval("SELECT count(*) FROM hypertail.checkpoints") == 0
