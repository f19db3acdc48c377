"""What the runner's three parts share: the pipeline tasks, the ops wiring and the lifecycle.

One :class:`Shared` per agent process. Each field has one writer, named below; the others only
read it. What the database side knows (reachable, stalled, the last commit) is not here: the sink
owns it (:class:`agent.sink.sink.SinkHealth`) and everyone reads it there.
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
    """Lifecycle flags the probes read: ``started`` and ``stopping`` are written by the lifecycle,
    ``loop_beat`` by the ops heartbeat, ``committing`` by the pipeline's committer."""

    started: bool = False
    stopping: bool = False
    loop_beat: float = field(default_factory=time.monotonic)
    committing: bool = False


@dataclass(slots=True, eq=False)
class Shared:
    """The agent's settings, logger, metrics and sink, plus the state the parts hand each other.

    ``tailer`` is None until startup has loaded the checkpoints (set by the lifecycle); ``stop``
    is set once, by the first stop request (the lifecycle); ``last_commit`` maps a file key to the
    wall-clock time of its last committed batch (written by the pipeline, read by the sync report).
    """

    settings: Settings
    log: Any
    metrics: Metrics
    sink: Sink
    state: RunState = field(default_factory=RunState)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tailer: Tailer | None = None
    last_commit: dict[str, float] = field(default_factory=dict)
