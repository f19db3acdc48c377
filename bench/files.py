"""Many small files against one big file: the same lines, drained by ``hypertail run``, same run.

    python bench/files.py [--dsn ADMIN_DSN] [--files 10000] [--lines-per-file 50]

The many-files case is ``--files`` files of ``--lines-per-file`` span lines in 100 folders under a
``**`` glob; the baseline is one file holding the same number of lines. For each: lines/s over
the whole drain (``--exit-when-idle``, the fixed start/stop cost of an empty run subtracted),
peak RSS and peak open descriptors of the agent process (sampled every 50 ms), and whether every
line arrived exactly once. Prints JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import fresh_db, span_line  # noqa: E402
from tests.pgserver import admin_dsn  # noqa: E402


def config(tmp: Path, dsn: str, glob: str, max_open: int) -> Path:
    p = tmp / f"files-{len(list(tmp.glob('files-*.toml')))}.toml"
    p.write_text(f"""
[database]
dsn = "{dsn}"
[[sources]]
name = "bench"
paths = ["{glob}"]
[tail]
max_open_files = {max_open}
[http]
enabled = false
[ops]
rollup_enabled = false
[agent]
id = "bench-files"
""")
    return p


def drain(cfg: Path) -> dict[str, float]:
    """Run the agent until idle: wall seconds, peak RSS (bytes) and peak open descriptors."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--exit-when-idle",
                             "--idle-grace", "0.2"], stdout=subprocess.DEVNULL, cwd=ROOT)
    peak = {"rss": 0, "fds": 0}

    def sample() -> None:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                peak["rss"] = max(peak["rss"], p.memory_info().rss)
                peak["fds"] = max(peak["fds"], p.num_fds())
                time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    if code != 0:
        raise SystemExit(f"agent exited {code}")
    return {"wall": wall, "peak_rss": float(peak["rss"]), "peak_fds": float(peak["fds"])}


async def exact(dsn: str, n: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (metadata->>'seq')::int AS s, count(*) AS c FROM observability.spans GROUP BY 1")
    finally:
        await conn.close()
    return len(rows) == n and all(r["c"] == 1 for r in rows) and {r["s"] for r in rows} == set(range(n))


def write_many(root: Path, files: int, per_file: int) -> None:
    for i in range(files):
        folder = root / f"d{i % 100:02d}" / "app"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.log").write_bytes(b"".join(span_line(i * per_file + k) for k in range(per_file)))


def case(admin: str, tmp: Path, name: str, glob: str, n: int, max_open: int, fixed: float) -> dict[str, Any]:
    dsn = asyncio.run(fresh_db(admin, f"bench_{name}"))
    r = drain(config(tmp, dsn, glob, max_open))
    return {
        "lines": n, "wall_s": round(r["wall"], 2), "lines_per_s": round(n / max(r["wall"] - fixed, 1e-3)),
        "peak_rss_mb": round(r["peak_rss"] / 2**20, 1), "peak_open_fds": int(r["peak_fds"]),
        "exact": asyncio.run(exact(dsn, n)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="an admin DSN (default: start an embedded PostgreSQL)")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--lines-per-file", type=int, default=50)
    p.add_argument("--max-open-files", type=int, default=256)
    a = p.parse_args()
    n = a.files * a.lines_per_file
    with admin_dsn(a.dsn) as admin, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "empty").mkdir()
        (tmp / "empty" / "e.log").write_bytes(b"")
        fixed = drain(config(tmp, asyncio.run(fresh_db(admin, "bench_fixed")), f"{tmp}/empty/*.log", 256))["wall"]
        one = tmp / "one"
        one.mkdir()
        with (one / "all.log").open("wb") as fh:
            for start in range(0, n, 10_000):
                fh.write(b"".join(span_line(s) for s in range(start, min(n, start + 10_000))))
        baseline = case(admin, tmp, "one", f"{one}/*.log", n, a.max_open_files, fixed)
        many = tmp / "many"
        write_many(many, a.files, a.lines_per_file)
        files = case(admin, tmp, "many", f"{many}/**/*.log", n, a.max_open_files, fixed)
        print(json.dumps({"fixed_start_stop_s": round(fixed, 2), "max_open_files": a.max_open_files,
                          "one_file": baseline, f"{a.files}_files": files}, indent=2))


if __name__ == "__main__":
    main()
