"""Prometheus metrics of one agent, in a registry of its own (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROW_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)


class Metrics:
    """Every metric the agent exports; names carry the ``hypertail_`` prefix."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.lines_read = Counter("hypertail_lines_read", "Complete lines read from files", ["source"], registry=r)
        self.rows_written = Counter("hypertail_rows_written", "Rows committed per table", ["table"], registry=r)
        self.dead_letters = Counter(
            "hypertail_dead_letters", "Lines committed as dead letters, by reason class", ["reason"], registry=r
        )
        self.nul_bytes = Counter(
            "hypertail_nul_bytes_skipped", "Bytes of NUL runs skipped (each run is one dead letter)", registry=r
        )
        self.app_logs = Counter(
            "hypertail_app_log_lines",
            "Ordinary log lines counted, not stored (app_logs = skip, or below app_logs_min_level)", registry=r,
        )
        self.invalid_optional = Counter(
            "hypertail_invalid_optional_fields", "Optional fields kept only in metadata because invalid", registry=r
        )
        self.retries = Counter("hypertail_db_retries", "Failed database attempts, by class", ["class"], registry=r)
        self.commits = Counter("hypertail_commits", "Committed transactions", registry=r)
        self.copy_attempts = Counter("hypertail_copy_attempts", "Transaction attempts incl. poison splits", registry=r)
        self.batch_rows = Histogram(
            "hypertail_batch_rows", "Lines per committed batch", buckets=_ROW_BUCKETS, registry=r
        )
        self.commit_latency = Histogram(
            "hypertail_commit_latency_seconds", "Time to commit a batch, retries included",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("hypertail_queue_depth", "Batches waiting for the sink", registry=r)
        self.inflight_bytes = Gauge("hypertail_inflight_bytes", "Bytes read but not yet committed", registry=r)
        self.last_commit = Gauge(
            "hypertail_last_commit_timestamp_seconds", "Unix time of the last commit", registry=r
        )
        self.bytes_behind = Gauge(
            "hypertail_bytes_behind", "File size minus committed offset", ["source", "path"], registry=r
        )
        self.seconds_since_last_commit = Gauge(
            "hypertail_seconds_since_last_commit", "Seconds since the last commit (since start before one)",
            registry=r,
        )
        self.source_events = Counter(
            "hypertail_source_events", "Tailing events (rotation, truncation...)", ["event"], registry=r
        )
