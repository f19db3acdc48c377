"""The application side stands alone: agent.emit with only structlog and orjson installed.

A user program imports ``agent.emit`` (and through it ``agent.contract``) and nothing else of
hypertail; it must not need asyncpg, pydantic or any other dependency of the agent. This test
builds a virtual environment whose site-packages holds copies of the installed ``structlog``
and ``orjson`` packages (no network needed) and of ``agent/__init__.py``, ``agent/contract.py``
and ``agent/emit/`` only, runs an app there in isolated mode (``-I``: no PYTHONPATH, no user
site, not the current directory) that writes every record kind, and checks the lines it wrote
and that nothing outside the stdlib, structlog, orjson, agent.contract and agent.emit was loaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import orjson
import structlog

ROOT = Path(__file__).resolve().parents[3]

APP = """
import json, sys

import structlog

from agent import emit

emit.configure(sys.argv[1])
log = structlog.get_logger("app")
with emit.trace("answer", operation_type="chat", user_id="8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f"):
    with emit.span("retrieve", "retrieval", result_count=3):
        log.info("retrieved", hits=3)
    emit.llm_call("gpt-4o-mini", input_tokens=120, output_tokens=30, cost_usd=0.0004, duration_ms=5)
    emit.chat_message("assistant", "an answer", conversation_id="conv-1", turn_number=2)
    emit.document_event("upload", "completed", document_id="0b9c7a52-3f1e-4c8a-9d2b-6e5f4a3b2c1d",
                        file_size_bytes=10)
    emit.counter("answers", route="/q")
    emit.histogram("answer_ms", 12.5)
    emit.workflow("doc-1", "uploaded")
log.warning("after the trace")
emit.gauge("queue.depth", 3)
emit.shutdown()
print(json.dumps({"modules": sorted(sys.modules), "stats": emit.stats(), "path": sys.path}))
"""


def _copy_package(module: Any, into: Path) -> None:
    """Copy an installed package's folder (its ``__init__.py``'s directory) into ``into``."""
    src = Path(module.__file__).parent
    shutil.copytree(src, into / src.name, ignore=shutil.ignore_patterns("__pycache__"))


def _app_environment(tmp: Path) -> Path:
    """A venv with only structlog, orjson and the application side of hypertail; its python."""
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(env)
    python = env / "bin" / "python"
    purelib = subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    site = Path(purelib)
    _copy_package(structlog, site)
    _copy_package(orjson, site)
    (site / "agent").mkdir()
    shutil.copy(ROOT / "agent" / "__init__.py", site / "agent" / "__init__.py")
    shutil.copy(ROOT / "agent" / "contract.py", site / "agent" / "contract.py")
    shutil.copytree(ROOT / "agent" / "emit", site / "agent" / "emit", ignore=shutil.ignore_patterns("__pycache__"))
    return python


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "agent":
        return name in ("agent", "agent.contract", "agent.emit") or name.startswith("agent.emit.")
    # sitecustomize: what the interpreter's own installation adds (Debian ships one), not the app
    return (top in sys.stdlib_module_names or top in sys.builtin_module_names
            or top in ("structlog", "orjson", "__main__", "sitecustomize"))


def test_the_app_side_runs_with_only_structlog_and_orjson(tmp_path: Path) -> None:
    python = _app_environment(tmp_path)
    out = tmp_path / "app.log"
    proc = subprocess.run([python, "-I", "-c", APP, str(out)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = orjson.loads(proc.stdout)
    assert not any(str(ROOT) in p for p in report["path"]), report["path"]  # the repository is not reachable

    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    kinds = [(r.get("record_type"), r.get("status"), r.get("span_type")) for r in lines]
    assert kinds == [
        ("trace", "in_progress", None),
        (None, None, None),  # the log line inside the span
        ("span", "completed", "retrieval"),
        ("span", "completed", "llm"),
        ("chat_message", None, None),
        ("document_event", "completed", None),
        ("workflow_transition", None, None),
        ("trace", "completed", None),
        (None, None, None),  # the log line after the trace
        ("metric", None, None),  # counter, gauge and histogram, written at shutdown
        ("metric", None, None),
        ("metric", None, None),
    ], lines
    trace_id = lines[0]["trace_id"]
    assert all(r["trace_id"] == trace_id for r in lines[:8])
    assert [(m["name"], m["kind"], m["count"]) for m in lines[9:]] == [
        ("answers", "counter", 1), ("queue.depth", "gauge", 1), ("answer_ms", "histogram", 1)]
    lines = lines[:6] + lines[7:9]  # the records of before, in their order
    inside, retrieve, llm = lines[1], lines[2], lines[3]
    assert inside["event"] == "retrieved" and inside["span_id"] == retrieve["span_id"]
    assert llm["model"] == "gpt-4o-mini" and llm["input_tokens"] == 120 and llm["duration_ms"] == 5
    assert lines[4]["content"] == "an answer" and lines[4]["turn_number"] == 2
    assert lines[5]["event_type"] == "upload" and lines[5]["file_size_bytes"] == 10
    assert lines[6]["total_input_tokens"] == 120 and lines[6]["total_output_tokens"] == 30
    assert lines[7]["event"] == "after the trace" and lines[7]["level"] == "warning" and "trace_id" not in lines[7]
    assert report["stats"] == {"written": 12, "dropped": 0, "coerced": 0}

    foreign = [m for m in report["modules"] if not _allowed(m)]
    assert foreign == [], f"the app side loaded more than stdlib + structlog + orjson + agent.emit: {foreign}"
    assert "agent.emit" in report["modules"] and "agent.contract" in report["modules"]
