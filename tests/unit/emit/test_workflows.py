"""agent.emit.workflow: one transition record per call, the previous state the process knew,
a per-process sequence for transitions in one microsecond, and the row it parses into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import contract as c
from agent import emit
from agent.emit import workflows
from agent.model import Row
from agent.parse import parse


def transitions(path: Path) -> list[dict[str, Any]]:
    recs = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in recs if r.get("record_type") == c.WORKFLOW_TRANSITION]


def test_each_call_is_one_transition_from_the_state_this_process_knew(log_path: Path) -> None:
    emit.workflow("doc-1", "uploaded", workflow_type="document", size=10)
    emit.workflow("doc-1", "parsed")
    emit.workflow("doc-2", "uploaded")
    emit.workflow("doc-1", "indexed", from_state="embedded")  # another process embedded it
    emit.workflow("doc-2", "failed", from_state=None)  # the caller says: no known previous state
    got = [(r["workflow_id"], r.get("from_state"), r["state"]) for r in transitions(log_path)]
    assert got == [("doc-1", None, "uploaded"), ("doc-1", "uploaded", "parsed"), ("doc-2", None, "uploaded"),
                   ("doc-1", "embedded", "indexed"), ("doc-2", None, "failed")]
    first = transitions(log_path)[0]
    assert first["workflow_type"] == "document" and first["metadata"] == {"size": 10}
    seqs = [r["seq"] for r in transitions(log_path)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_transition_in_a_trace_carries_its_ids(log_path: Path) -> None:
    with emit.trace("job") as t, emit.span("step") as s:
        emit.workflow(42, "running")  # any id type: rendered as text
        ids = (t.trace_id, s.span_id)
    (r,) = transitions(log_path)
    assert (r["workflow_id"], r["trace_id"], r["span_id"]) == ("42", *ids)


def test_the_known_states_are_bounded(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows, "KNOWN_WORKFLOWS", 3)
    for i in range(5):
        emit.workflow(f"w{i}", "a")
    emit.workflow("w0", "b")  # forgotten: the oldest went first
    emit.workflow("w4", "b")
    got = {(r["workflow_id"], r["state"]): r.get("from_state") for r in transitions(log_path)}
    assert got["w0", "b"] is None and got["w4", "b"] == "a"
    assert len(workflows.KNOWN.states) <= 3


def test_it_never_raises(log_path: Path) -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    emit.workflow(Bad(), Bad(), from_state=Bad())
    (r,) = transitions(log_path)
    assert r["workflow_id"] == "<unprintable Bad>"


def test_transition_lines_parse_into_rows(log_path: Path) -> None:
    emit.workflow("order-7", "paid", workflow_type="order", amount=12)
    emit.workflow("order-7", "shipped")
    rows = [parse(line) for line in log_path.read_bytes().splitlines()]
    assert all(isinstance(r, Row) and r.table == "workflow_transitions" and not r.warnings for r in rows), rows
    values = [dict(zip(c.COLUMNS["workflow_transitions"], r.values, strict=True)) for r in rows if isinstance(r, Row)]
    assert [(v["state"], v["from_state"], v["workflow_type"]) for v in values] == [
        ("paid", None, "order"), ("shipped", "paid", None)]
    assert orjson.loads(values[0]["metadata"]) == {"amount": 12} and values[0]["seq"] < values[1]["seq"]
