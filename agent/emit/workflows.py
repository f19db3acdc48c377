"""Workflow states: :func:`workflow` records one transition of a workflow as it happens.

A workflow is anything the application moves through states and wants to see the state of: a
document through parse, embed and index, an order through paid and shipped, a job through queued
and running. Each call writes one ``workflow_transition`` record (a row of
``observability.workflow_transitions``); the view ``observability.workflows`` gives each
workflow's current state, how long it has been in it and its history.

Why records of transitions rather than a stored "current state": the app never talks to the
database, and transitions of one workflow may be recorded by several processes whose lines reach
the database in any order. A transition carries when it was recorded (``timestamp``) and a counter
of the recording process (``seq``, which orders two transitions of one process in one
microsecond), so the database orders them the same way whatever the arrival order.
``from_state`` is the state the app knew before this one: given by the caller, or else the last
state this process recorded for the workflow (kept for the most recent
:data:`KNOWN_WORKFLOWS` workflows).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Final

from agent import contract as c
from agent.emit.context import current
from agent.emit.output import STATS, text_of, write_record
from agent.emit.records import iso, split

KNOWN_WORKFLOWS: Final = 100_000
_FIELDS: Final = frozenset({"workflow_type"})
_UNSET: Final = object()


class _Known:
    """The last state this process recorded per workflow (least recently moved forgotten first)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states: OrderedDict[str, str] = OrderedDict()
        self.seq = itertools.count(1)

    def move(self, workflow_id: str, state: str) -> tuple[str | None, int]:
        """Record ``state`` as the workflow's latest; return the one before and this call's seq."""
        with self.lock:
            before = self.states.pop(workflow_id, None)
            self.states[workflow_id] = state
            if len(self.states) > KNOWN_WORKFLOWS:
                self.states.popitem(last=False)
            return before, next(self.seq)

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()


KNOWN: Final = _Known()
os.register_at_fork(after_in_child=KNOWN.after_fork_in_child)


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    STATS.add(coerced=1)
    return text_of(value)


def workflow(workflow_id: Any, state: str, *, from_state: Any = _UNSET, workflow_type: str | None = None,
             **fields: Any) -> None:
    """Record that workflow ``workflow_id`` is now in ``state``, in the current trace.

    ``from_state`` defaults to the state this process last recorded for it (none for the first);
    pass it when another process moved the workflow before (a queue message says where it was).
    ``workflow_type`` names the kind of workflow (``document``, ``order``); other keyword arguments
    go into ``metadata``.
    """
    try:
        wid, to = _text(workflow_id), _text(state)
        before, seq = KNOWN.move(wid, to)
        record: dict[str, Any] = {"workflow_id": wid, "state": to, "seq": seq}
        previous = before if from_state is _UNSET else from_state
        if previous is not None:
            record["from_state"] = _text(previous)
        meta: dict[str, Any] = {}
        split({"workflow_type": workflow_type, **fields}, _FIELDS, record, meta)
        ctx = current()
        if ctx is not None:
            record["trace_id"] = ctx.trace_id
            if ctx.span_id:
                record["span_id"] = ctx.span_id
        record[c.WRITTEN_AT] = iso(datetime.now(UTC))
        if meta:
            record[c.METADATA] = meta
        write_record(c.WORKFLOW_TRANSITION, record)
    except Exception:
        STATS.add(dropped=1)
