"""The shutdown watchdog: a stop whose shutdown hangs still ends the process, and says where."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

_HANG = textwrap.dedent("""
    import asyncio
    from agent.ops.log import configure_logging, get_logger
    from agent.runner.watchdog import ShutdownWatchdog

    async def stuck_forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        configure_logging()
        ShutdownWatchdog(0.3, get_logger())
        await asyncio.create_task(stuck_forever(), name="stuck-job")

    asyncio.run(main())
""")


def test_a_hung_shutdown_exits_1_naming_the_pending_task() -> None:
    proc = subprocess.run([sys.executable, "-c", _HANG], capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr.decode()
    events = [orjson.loads(line) for line in proc.stdout.splitlines() if line.startswith(b"{")]
    stuck = [e for e in events if e.get("event") == "agent.shutdown_stuck"]
    assert len(stuck) == 1, proc.stdout.decode()
    assert any(p.startswith("stuck-job at ") and "<string>" in p for p in stuck[0]["pending"]), stuck[0]


def test_a_cancelled_watchdog_never_fires() -> None:
    code = _HANG.replace("ShutdownWatchdog(0.3, get_logger())", "ShutdownWatchdog(0.3, get_logger()).cancel()")
    code = code.replace('await asyncio.create_task(stuck_forever(), name="stuck-job")', "await asyncio.sleep(0.8)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"agent.shutdown_stuck" not in proc.stdout
