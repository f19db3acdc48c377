"""The SQL of :mod:`agent.ops.rollup`: the lock, the run stamp, and one statement per metric family.

Each ``ROLLUP*`` statement is a ``FRESH_*`` part (compute the groups of the window's closed
buckets) followed by the shared ``WRITE`` part (upsert them, empty the groups that vanished).
"""

from __future__ import annotations

LOCK = "SELECT pg_try_advisory_xact_lock($1::bigint) AS locked, now() AS db_now"

LAST_RUN = """
SELECT last_synced_at FROM observability.provider_sync_status
WHERE provider_name = $1 AND entity_type = $2 AND entity_id = $3
"""

MARK_RUN = """
INSERT INTO observability.provider_sync_status AS p
    (provider_name, entity_type, entity_id, last_synced_at, sync_status, error_message, retry_count, updated_at)
VALUES ($1, $2, $3, $4, 'synced', NULL, 0, now())
ON CONFLICT (provider_name, entity_type, entity_id) DO UPDATE SET
    last_synced_at = EXCLUDED.last_synced_at, sync_status = 'synced', error_message = NULL,
    retry_count = 0, updated_at = now()
"""

# $1 date_trunc unit, $2 window start, $3 window end (exclusive), $4 granularity label,
# $5 metric types. Traces are looked up from one day before the window (a span's trace starts
# before it) to one hour after it (clock skew between services); DISTINCT ON guards against a
# trace stored twice under two start times.
FRESH_SPANS = """
WITH tr AS (
    SELECT DISTINCT ON (trace_id) trace_id, operation_type, kb_id
    FROM observability.traces
    WHERE "timestamp" >= $2::timestamptz - interval '1 day' AND "timestamp" < $3::timestamptz + interval '1 hour'
    ORDER BY trace_id, "timestamp" DESC
),
fresh AS (
    SELECT date_trunc($1::text, s."timestamp", 'UTC') AS bucket,
           m.metric_type,
           jsonb_strip_nulls(jsonb_build_object(
               'granularity', $4::text, 'span_type', s.span_type, 'model', s.model,
               'operation_type', tr.operation_type, 'kb_id', tr.kb_id)) AS dimensions,
           count(*) AS n, sum(m.v) AS total, min(m.v) AS lo, max(m.v) AS hi, avg(m.v) AS mean,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY m.v) AS pct
    FROM observability.spans AS s
    LEFT JOIN tr ON tr.trace_id = s.trace_id
    CROSS JOIN LATERAL (VALUES
        ('span.duration_ms', s.duration_ms::float8),
        ('span.input_tokens', s.input_tokens::float8),
        ('span.output_tokens', s.output_tokens::float8),
        ('span.cost_usd', s.cost_usd::float8)
    ) AS m(metric_type, v)
    WHERE s."timestamp" >= $2 AND s."timestamp" < $3 AND m.v IS NOT NULL
    GROUP BY 1, 2, GROUPING SETS ((), (s.span_type), (s.model), (tr.operation_type), (tr.kb_id))
    -- the overall group (no dimension grouped: all four GROUPING bits set), and every
    -- per-dimension group whose value is known (a NULL model is not a model)
    HAVING GROUPING(s.span_type, s.model, tr.operation_type, tr.kb_id) = 15
        OR num_nonnulls(s.span_type, s.model, tr.operation_type, tr.kb_id) = 1
),
"""


# Distinct buckets with data in any statement (a trace's bucket usually has spans too); $4 the app
# metric kinds, $5 the start of the app metrics' window (see agent.ops.rollup._rollup_width).
BUCKETS = """
SELECT count(*) FROM (
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.spans
    WHERE "timestamp" >= $2 AND "timestamp" < $3
      AND num_nonnulls(duration_ms, input_tokens, output_tokens, cost_usd) > 0
    UNION
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.traces
    WHERE "timestamp" >= $2 AND "timestamp" < $3 AND duration_ms IS NOT NULL
    UNION
    SELECT date_trunc($1::text, "timestamp", 'UTC') FROM observability.logs
    WHERE "timestamp" >= $2 AND "timestamp" < $3
    UNION
    SELECT date_trunc($1::text, coalesce(start_time, "timestamp"), 'UTC') FROM observability.metrics
    WHERE "timestamp" >= $5 AND "timestamp" < $3::timestamptz + interval '1 day'
      AND coalesce(start_time, "timestamp") >= $5 AND coalesce(start_time, "timestamp") < $3
      AND kind = ANY($4::text[]) AND (temporality IS NULL OR temporality = 'delta' OR kind = 'gauge')
) b
"""

# Requests: one value per trace (its duration), per operation type, so that the dashboards'
# "requests and p95 latency per operation type" count requests, not the spans inside them.
FRESH_TRACES = """
WITH fresh AS (
    SELECT date_trunc($1::text, t."timestamp", 'UTC') AS bucket,
           'trace.duration_ms'::text AS metric_type,
           jsonb_strip_nulls(jsonb_build_object('granularity', $4::text, 'operation_type', t.operation_type))
               AS dimensions,
           count(*) AS n, sum(t.duration_ms::float8) AS total, min(t.duration_ms::float8) AS lo,
           max(t.duration_ms::float8) AS hi, avg(t.duration_ms::float8) AS mean,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY t.duration_ms::float8) AS pct
    FROM observability.traces AS t
    WHERE t."timestamp" >= $2 AND t."timestamp" < $3 AND t.duration_ms IS NOT NULL
    GROUP BY 1, 2, GROUPING SETS ((), (t.operation_type))
    HAVING GROUPING(t.operation_type) = 1 OR t.operation_type IS NOT NULL
),
"""

# Log volume: ordinary log lines per level (a count; the value statistics stay NULL).
FRESH_LOGS = """
WITH fresh AS (
    SELECT date_trunc($1::text, l."timestamp", 'UTC') AS bucket,
           'log.lines'::text AS metric_type,
           jsonb_strip_nulls(jsonb_build_object('granularity', $4::text, 'level', l.level)) AS dimensions,
           count(*) AS n, count(*)::float8 AS total, NULL::float8 AS lo, NULL::float8 AS hi,
           NULL::float8 AS mean, NULL::float8[] AS pct
    FROM observability.logs AS l
    WHERE l."timestamp" >= $2 AND l."timestamp" < $3
    GROUP BY 1, 2, GROUPING SETS ((), (l.level))
    HAVING GROUPING(l.level) = 1 OR l.level IS NOT NULL
),
"""

# The write half shared by all three: upsert the fresh groups, empty the vanished ones ($5: the
# metric types the statement owns, so neither empties the other's rows).
WRITE = """
upserted AS (
    INSERT INTO observability.metrics_aggregates AS a
        (bucket, metric_type, dimensions, count, sum, min, max, avg, p50, p95, p99, updated_at)
    SELECT bucket, metric_type, dimensions, n, total, lo, hi, mean, pct[1], pct[2], pct[3], now()
    FROM fresh
    ON CONFLICT (bucket, metric_type, dimensions) DO UPDATE SET
        count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
        avg = EXCLUDED.avg, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
        updated_at = EXCLUDED.updated_at
    WHERE (a.count, a.sum, a.min, a.max, a.avg, a.p50, a.p95, a.p99)
          IS DISTINCT FROM (EXCLUDED.count, EXCLUDED.sum, EXCLUDED.min, EXCLUDED.max,
                            EXCLUDED.avg, EXCLUDED.p50, EXCLUDED.p95, EXCLUDED.p99)
    RETURNING 1
),
emptied AS (
    UPDATE observability.metrics_aggregates AS a
    SET count = 0, sum = NULL, min = NULL, max = NULL, avg = NULL, p50 = NULL, p95 = NULL, p99 = NULL,
        updated_at = now()
    WHERE a.bucket >= $2 AND a.bucket < $3 AND a.count <> 0
      AND a.metric_type = ANY($5::text[])
      AND a.dimensions ->> 'granularity' = $4::text
      AND NOT EXISTS (SELECT 1 FROM fresh f
                      WHERE f.bucket = a.bucket AND f.metric_type = a.metric_type AND f.dimensions = a.dimensions)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS rows,
       (SELECT count(DISTINCT bucket) FROM fresh) AS buckets,
       (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS changed
"""
ROLLUP = FRESH_SPANS + WRITE
ROLLUP_TRACES = FRESH_TRACES + WRITE
ROLLUP_LOGS = FRESH_LOGS + WRITE
