"""What the runner's three parts share: the pipeline tasks, the ops wiring and the lifecycle.

One :class:`Shared` per agent process. Each part reads and sets only the fields named in its
own docstring; keeping them in one place shows who can see what (the probes, for instance, read
:class:`RunState` and ``db_ok``, which the pipeline and the ops loop both set).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from agent.config import Settings
from agent.ops.metrics import Metrics
from agent.sink.sink import Sink
from agent.sources import Tailer


@dataclass(slots=True)
class RunState:
    """Lifecycle flags the probes read."""

    started: bool = False
    stopping: bool = False
    loop_beat: float = field(default_factory=time.monotonic)
    committing: bool = False


@dataclass(slots=True, eq=False)
class Shared:
    """The agent's settings, logger, metrics and sink, plus the state the parts hand each other.

    ``tailer`` is None until startup has loaded the checkpoints; ``stop`` is set once, by the
    first stop request; ``db_ok`` is the last answer the database gave (commit or ping);
    ``stall_logged`` is the stall reason already logged (a stall is logged once per reason);
    ``last_commit`` maps a file key to the wall-clock time of its last committed batch.
    """

    settings: Settings
    log: Any
    metrics: Metrics
    sink: Sink
    state: RunState = field(default_factory=RunState)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tailer: Tailer | None = None
    db_ok: bool = False
    stall_logged: str | None = None
    last_commit: dict[str, float] = field(default_factory=dict)
