"""Prometheus metrics of one agent, in a registry of its own (so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.ops.log import DROP_REASONS, dropped

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
            "hypertail_bytes_behind", "Bytes written to a source's files but not committed yet (one series "
            "per source, not per file: a source may have thousands)", ["source"], registry=r
        )
        self.seconds_since_last_commit = Gauge(
            "hypertail_seconds_since_last_commit", "Seconds since the last commit (since start before one)",
            registry=r,
        )
        self.source_events = Counter(
            "hypertail_source_events", "Tailing events (rotation, truncation...)", ["event"], registry=r
        )
        r.register(LogDrops())

    def totals(self) -> Totals:
        """What this agent ingested so far: lines read, rows per table, dead letters."""
        return Totals(
            lines=int(sum(_values(self.lines_read).values())),
            rows={table: int(n) for table, n in _values(self.rows_written).items()},
            dead_letters=int(sum(_values(self.dead_letters).values())),
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """Counts since the agent started (:meth:`Metrics.totals`); ``minus`` gives an interval's."""

    lines: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0

    def minus(self, earlier: Totals) -> Totals:
        rows = {t: n - earlier.rows.get(t, 0) for t, n in self.rows.items() if n - earlier.rows.get(t, 0)}
        return Totals(self.lines - earlier.lines, rows, self.dead_letters - earlier.dead_letters)


def _values(counter: Counter) -> dict[str, float]:
    """A one-label counter's value per label value (its ``_total`` samples)."""
    out: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                label = next(iter(sample.labels.values()), "")
                out[label] = out.get(label, 0.0) + sample.value
    return out


class LogDrops(Collector):
    """``hypertail_log_lines_dropped_total{reason}``: lines of the agent's own log that were dropped
    (``write_failed``: stdout refused them, e.g. a closed pipe or a full disk; ``queue_full``: a
    reader too slow). They are counted in the process's log output, see :mod:`agent.ops.log`."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "hypertail_log_lines_dropped", "Lines of the agent's own log dropped (never blocks ingestion)",
            labels=["reason"],
        )
        counts = dropped()
        for reason in DROP_REASONS:
            family.add_metric([reason], counts.get(reason, 0))
        yield family


class BackfillCollector(Collector):
    """The sink's backfill figures (``agent.sink.backfill.BackfillStats``), read at each scrape.

    The sink owns and writes them; this only reads, through ``read`` (ops imports nothing of the
    agent, so it gets a callable returning the stats object).
    """

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.read()
        rows = CounterMetricFamily("hypertail_backfill_rows", "Rows committed into compressed ranges, or ranges "
                                   "the compression policy would compress next (a backfill), per table",
                                   labels=["table"])
        tables: Mapping[str, int] = s.rows
        for table, n in sorted(tables.items()):
            rows.add_metric([table], n)
        yield rows
        yield GaugeMetricFamily("hypertail_backfill_active", "1 while the agent is backfilling compressed ranges",
                                value=1.0 if s.active else 0.0)
        yield GaugeMetricFamily("hypertail_backfill_rows_per_second",
                                "Backfill rate over the last 10 s progress interval (0 when none runs)",
                                value=s.rows_per_second)
        yield CounterMetricFamily("hypertail_backfill_chunks_decompressed",
                                  "Compressed chunks decompressed once for a backfill", value=s.chunks_decompressed)
        yield CounterMetricFamily("hypertail_backfill_decompress_seconds",
                                  "Time spent decompressing chunks for backfills", value=s.decompress_seconds)
        yield CounterMetricFamily("hypertail_backfill_policies_postponed",
                                  "Compression policies postponed while a backfill fills their chunks",
                                  value=s.policies_postponed)
        yield CounterMetricFamily("hypertail_batch_timeout_splits",
                                  "Batches (or parts) split in halves after hitting the statement timeout",
                                  value=s.timeout_splits)
