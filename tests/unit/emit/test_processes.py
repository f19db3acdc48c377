"""Several processes of one app writing to one path (issue 10): rotation coordinated, nothing lost."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[3]

WORKER = """
import sys
from agent import emit
path, first, n, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
emit.configure(path, max_bytes=max_bytes, backup_count=500)
for seq in range(first, first + n):
    with emit.span("op", seq=seq):
        pass
emit.shutdown()
print(emit.stats()["dropped"], emit.stats()["written"])
"""


def run_writers(path: Path, procs: int, per_proc: int, max_bytes: int) -> list[tuple[int, int]]:
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(i * per_proc), str(per_proc),
                                 str(max_bytes)], stdout=subprocess.PIPE, cwd=ROOT) for i in range(procs)]
    out = []
    for w in workers:
        stdout, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        dropped, written = stdout.split()
        out.append((int(dropped), int(written)))
    return out


def seqs_in(folder: Path) -> Counter[int]:
    got: Counter[int] = Counter()
    for f in folder.iterdir():
        if f.name.startswith("."):
            continue
        for line in f.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec.get("record_type") == "span":
                got[rec["metadata"]["seq"]] += 1
    return got


def test_eight_processes_share_a_path_with_small_max_bytes(tmp_path: Path) -> None:
    stats = run_writers(tmp_path / "app.log", 8, 2500, 50_000)
    assert stats == [(0, 2500)] * 8
    got = seqs_in(tmp_path)
    assert sorted(got) == list(range(8 * 2500)) and set(got.values()) == {1}
    files = [f for f in tmp_path.iterdir() if not f.name.startswith(".")]
    assert 50 < len(files) < 500  # rotated many times, no backup deleted
    # about max_bytes: every writer saw the shared size (one line each may land after a check)
    assert max(f.stat().st_size for f in files) <= 50_000 + 8 * 400
