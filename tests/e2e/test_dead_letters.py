"""`hypertail dead-letters` (issue 22): list what could not be stored, and replay it after a fix
exactly once, also across a kill -9 in the middle of the replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.harness import Agent, assert_exact, fetchval_sync, span_line, wait_until

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1024  # tail.max_line_bytes while the lines are ingested: the two long ones become dead letters
LONG = (100, 101)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def long_line(seq: int) -> bytes:
    return span_line(seq, input_preview="p" * 400, notes="n" * 2500)  # 3000 bytes > LIMIT


def span_key(line: bytes) -> tuple[object, ...]:
    """(span_id, timestamp, trace_id) of the row a span line becomes (the parser derives the time)."""
    from agent import contract
    from agent.model import Row
    from agent.parse import parse

    row = parse(line.rstrip(b"\n"))
    assert isinstance(row, Row)
    values = dict(zip(contract.COLUMNS["spans"], row.values, strict=True))
    return values["span_id"], values["timestamp"], values["trace_id"]


def cli(agent: Agent, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "dead-letters", "--config", str(agent.config_path),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **env})


async def seqs(db: asyncpg.Connection) -> Counter[int]:
    return Counter(r["s"] for r in await db.fetch("SELECT (metadata->>'seq')::int AS s FROM observability.spans"))


async def dead_offsets(db: asyncpg.Connection) -> list[int]:
    return [r["byte_offset"] for r in await db.fetch("SELECT byte_offset FROM hypertail.dead_letters ORDER BY 1")]


def ingest_with_a_narrow_limit(agent: Agent, logs: Path) -> dict[int, int]:
    """Lines 0..99 then the two long ones then 102..109; returns each long line's offset."""
    lines = [span_line(s) for s in range(100)] + [long_line(s) for s in LONG] + [span_line(s) for s in range(102, 110)]
    (logs / "app.log").write_bytes(b"".join(lines))
    agent.env = {"HYPERTAIL_TAIL__MAX_LINE_BYTES": str(LIMIT)}
    agent.start("--exit-when-idle", "--idle-grace", "0.3")
    assert agent.wait(120) == 0, agent.output()
    offsets, at = {}, 0
    for s, line in zip([*range(100), *LONG, *range(102, 110)], lines, strict=True):
        offsets[s] = at
        at += len(line)
    return {s: offsets[s] for s in LONG}


async def test_list_then_replay_after_widening_the_limit(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    offsets = ingest_with_a_narrow_limit(agent, logs)
    assert await dead_offsets(db) == sorted(offsets.values())

    listed = cli(agent)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert f"{logs / 'app.log'}:{offsets[101]}  (3" in listed.stdout
    assert "longer than tail.max_line_bytes" in listed.stdout
    assert '"record_type":"span"' in listed.stdout  # the preview of the stored bytes
    data = json.loads(cli(agent, "--json", "--source", "app", "--reason", "MAX_LINE").stdout)
    assert [d["byte_offset"] for d in data] == sorted(offsets.values(), reverse=True)  # newest first
    assert all(d["stored_bytes"] <= LIMIT < d["line_length"] for d in data)

    still = cli(agent, "--replay", HYPERTAIL_TAIL__MAX_LINE_BYTES=str(LIMIT))  # nothing fixed yet
    assert still.returncode == 1 and "still longer than tail.max_line_bytes (1024)" in still.stdout, still.stdout
    assert "replayed 0 of 2 dead letters into rows; 2 left" in still.stdout
    dry = cli(agent, "--replay", "--dry-run")
    assert dry.returncode == 0 and "would replay 2 of 2 dead letters into rows (spans 2)" in dry.stdout, dry.stdout
    assert len(await dead_offsets(db)) == 2 and sum((await seqs(db)).values()) == 108

    done = cli(agent, "--replay")  # tail.max_line_bytes is back at its default (16 MiB)
    assert done.returncode == 0 and "replayed 2 of 2 dead letters into rows (spans 2); 0 left" in done.stdout, done
    assert await dead_offsets(db) == []
    assert_exact(await seqs(db), 110)
    row = await db.fetchrow("SELECT input_preview, metadata->>'notes' AS notes FROM observability.spans "
                            "WHERE (metadata->>'seq')::int = 101")
    assert row["input_preview"] == "p" * 400 and row["notes"] == "n" * 2500  # the whole line, read again
    again = cli(agent, "--replay")
    assert again.returncode == 0 and "no dead letters match" in again.stderr
    assert_exact(await seqs(db), 110)


async def test_a_kill_9_during_the_replay_leaves_the_dead_letter_or_the_row(agent: Agent, logs: Path, dsn: str,
                                                                           db: asyncpg.Connection) -> None:
    """The replay of the second dead letter is held inside its transaction (its row's key is being
    inserted by another, uncommitted, transaction) and killed there with SIGKILL: the first dead
    letter is a row, the second still a dead letter, none both, none lost; a second replay ends it."""
    offsets = ingest_with_a_narrow_limit(agent, logs)
    blocker = await asyncpg.connect(dsn)
    tx = blocker.transaction()
    await tx.start()
    key = span_key(long_line(101))
    await blocker.execute("INSERT INTO observability.spans (span_id, \"timestamp\", trace_id, name) "
                          "VALUES ($1, $2, $3, 'blocker')", *key)
    replay = subprocess.Popen([sys.executable, "-m", "agent.cli", "dead-letters", "--config", str(agent.config_path),
                               "--replay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_until(lambda: replay.poll() is not None or fetchval_sync(
            dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hypertail' "
            "AND wait_event_type = 'Lock'") == 1, what="the replay waiting inside its second transaction")
        assert replay.poll() is None, replay.communicate()
        replay.send_signal(signal.SIGKILL)
        assert replay.wait(30) == -signal.SIGKILL
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait(10)
        await tx.rollback()
        await blocker.close()
    wait_until(lambda: fetchval_sync(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                     "'hypertail' AND datname = current_database()") == 0,
               what="the killed replay's server process to end (its transaction rolled back)")
    got = await seqs(db)
    assert await dead_offsets(db) == [offsets[101]] and got[100] == 1 and got[101] == 0
    assert sum(got.values()) == 109

    done = cli(agent, "--replay")
    assert done.returncode == 0 and "replayed 1 of 1 dead letters into rows (spans 1)" in done.stdout, done
    assert await dead_offsets(db) == []
    assert_exact(await seqs(db), 110)


async def test_the_agents_role_may_list_but_a_replay_names_the_grant_it_needs(
        agent: Agent, logs: Path, dsn: str, db: asyncpg.Connection, tmp_path: Path) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from agent.sink.schema import grants_for

    ingest_with_a_narrow_limit(agent, logs)
    role = "ht_replay_test"
    await db.execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    try:
        await db.execute(grants_for(role))
        p = urlsplit(dsn)
        as_role = urlunsplit((p.scheme, f"{role}@{p.netloc.rpartition('@')[2]}", p.path, p.query, p.fragment))
        cfg = tmp_path / "ingest.toml"
        cfg.write_text(f'[database]\ndsn = "{as_role}"\n')
        run = [sys.executable, "-m", "agent.cli", "dead-letters", "--config", str(cfg)]
        listed = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert listed.returncode == 0 and "#" in listed.stdout, listed.stderr
        refused = subprocess.run([*run, "--replay"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert refused.returncode == 1 and "42501" in refused.stderr, refused.stderr
        assert "GRANT SELECT, DELETE ON hypertail.dead_letters TO <its role>" in refused.stderr
        assert len(await dead_offsets(db)) == 2 and sum((await seqs(db)).values()) == 108  # nothing half-done
        await db.execute(f"GRANT SELECT, DELETE ON hypertail.dead_letters TO {role}; "
                         f"GRANT SELECT ON hypertail.checkpoints TO {role}")
        done = subprocess.run([*run, "--replay"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_exact(await seqs(db), 110)
    finally:
        await db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
