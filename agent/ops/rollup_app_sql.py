"""The SQL of :mod:`agent.ops.rollup_app`: application metrics into ``metrics_aggregates``.

Parameters of every statement: $1 ``date_trunc`` unit, $2 window start, $3 window end (exclusive),
$4 granularity label, $5 the metric kinds rolled up; the rollup statements also $6 the buckets to
recompute, $7 the metric types they own (for emptying), $8 the bucket's length in seconds.

A metric row belongs to the bucket its interval *starts* in: agent.emit aligns intervals to
multiples of their length, so with an interval that divides a minute every row lies in one bucket
(its ``timestamp``, the write time, can fall just after the bucket's end). Rows are also looked up
by ``timestamp`` (up to a day after the window), which lets TimescaleDB skip chunks. Cumulative
counters and histograms (OTLP) are not summed.
"""

from __future__ import annotations

_SOURCE = """
WITH src AS (
    SELECT date_trunc($1::text, coalesce(m.start_time, m."timestamp"), 'UTC') AS bucket, m.kind, m.name,
           coalesce(m.attributes, '{}'::jsonb) AS attributes, m.value, m.count, m.sum, m.min, m.max, m.buckets,
           coalesce(m.start_time, m."timestamp") AS started, m."timestamp", m.id
    FROM observability.metrics AS m
    WHERE m."timestamp" >= $2 AND m."timestamp" < $3::timestamptz + interval '1 day'
      AND coalesce(m.start_time, m."timestamp") >= $2 AND coalesce(m.start_time, m."timestamp") < $3
      AND m.kind = ANY($5::text[]) AND (m.temporality IS NULL OR m.temporality = 'delta' OR m.kind = 'gauge')
"""

# The buckets whose rows differ from those the stored aggregates were computed from, newest first,
# with how many rows they have now.
# Each recomputed bucket keeps the count of its rows and the sum of their ids' hashes as an
# `app.rows` aggregate (exact in a double: 32-bit hashes, far fewer than 2^21 rows a bucket), so a
# run recomputes only what new (late) rows changed instead of the whole window.
CHANGED = _SOURCE + """),
now_rows AS (SELECT bucket, count(*) AS n, sum(hashtext(id::text))::float8 AS fp FROM src GROUP BY bucket),
stored AS (
    SELECT bucket, count AS n, sum AS fp FROM observability.metrics_aggregates
    WHERE metric_type = 'app.rows' AND dimensions = jsonb_build_object('granularity', $4::text)
      AND bucket >= $2 AND bucket < $3 AND count <> 0
)
SELECT coalesce(r.bucket, s.bucket) AS bucket, coalesce(r.n, 0) AS n
FROM now_rows AS r FULL JOIN stored AS s ON s.bucket = r.bucket
WHERE (r.n, r.fp) IS DISTINCT FROM (s.n, s.fp)
ORDER BY 1 DESC
"""

# Per bucket, per series (name and attributes) and per name over all attribute sets, across
# processes. Counters and up-down counters: count (increments), sum (the increase), rate (sum per
# second). Gauges: count (sets), min, max, avg of the rows' values, last (the value of the row
# with the latest start). Histograms: count, sum, min, max, avg here; percentiles and the merged
# buckets come from the _HIST_* part.
_STATS = """
      AND date_trunc($1::text, coalesce(m.start_time, m."timestamp"), 'UTC') = ANY($6::timestamptz[])
),
stats AS (
    SELECT bucket, kind, name, attributes, GROUPING(attributes) = 1 AS by_name,
           coalesce(sum(count), count(*))::bigint AS n,
           sum(CASE WHEN kind = 'histogram' THEN sum ELSE value END) AS total,
           min(CASE WHEN kind = 'gauge' THEN coalesce(min, value) ELSE min END) AS lo,
           max(CASE WHEN kind = 'gauge' THEN coalesce(max, value) ELSE max END) AS hi,
           avg(value) FILTER (WHERE kind = 'gauge') AS gauge_avg,
           (array_agg(value ORDER BY started DESC, "timestamp" DESC, id DESC))[1] AS latest
    FROM src
    GROUP BY bucket, kind, name, GROUPING SETS ((attributes), ())
),
keyed AS (
    SELECT *, CASE WHEN by_name THEN jsonb_build_object('name', name)
                   ELSE jsonb_build_object('name', name, 'attributes', attributes) END AS key
    FROM stats
),
"""

# Minutes: each histogram row's buckets, checked and unnested once (observability.histogram_buckets),
# summed per series, and per name from those.
_HIST_FROM_ROWS = """
per_series AS (
    SELECT s.bucket, s.name, s.attributes, b.scale, b.sign, b.idx, sum(b.n) AS n
    FROM src AS s CROSS JOIN LATERAL observability.histogram_buckets(s.buckets) AS b
    WHERE s.kind = 'histogram'
    GROUP BY 1, 2, 3, 4, 5, 6
),
grouped AS (
    SELECT bucket, jsonb_build_object('name', name, 'attributes', attributes) AS key, scale, sign, idx, n
    FROM per_series
    UNION ALL
    SELECT bucket, jsonb_build_object('name', name), scale, sign, idx, sum(n) FROM per_series GROUP BY 1, 2, 3, 4, 5
),
"""

# Hours: the merged buckets of their minutes (written by the minute pass just before), so an hour
# costs its series' 60 merged minutes, not every process's every interval.
_HIST_FROM_MINUTES = """
grouped AS (
    SELECT date_trunc('hour', a.bucket, 'UTC') AS bucket, a.dimensions - 'granularity' AS key,
           b.scale, b.sign, b.idx, sum(b.n) AS n
    FROM observability.metrics_aggregates AS a CROSS JOIN LATERAL observability.histogram_buckets(a.buckets) AS b
    WHERE a.metric_type = 'app.histogram' AND a.dimensions ->> 'granularity' = '1m' AND a.count <> 0
      AND a.bucket >= $2 AND a.bucket < $3 AND date_trunc('hour', a.bucket, 'UTC') = ANY($6::timestamptz[])
    GROUP BY 1, 2, 3, 4, 5
),
"""

# Each group merged at its smallest scale (bucket i at scale s is i >> (s - t) at scale t), ranked
# with one window; p50/p95/p99 are nearest-rank, within (base-1)/(base+1) of the true values,
# clamped to [min, max], and NULL when the buckets do not add up to the count (some row had explicit
# bounds or none). The merged buckets are kept (OTLP's exponential layout) for the hour above.
_TAIL = """
merged AS (
    SELECT bucket, key, sign, idx >> (scale - low) AS idx, low AS scale, sum(n)::bigint AS n
    FROM (SELECT *, min(scale) OVER (PARTITION BY bucket, key) AS low FROM grouped) AS g
    GROUP BY 1, 2, 3, 4, 5
),
ranked AS (
    SELECT bucket, key, observability.histogram_bucket_value(scale, sign, idx) AS v,
           sum(n) OVER (PARTITION BY bucket, key ORDER BY sign, sign * idx ROWS UNBOUNDED PRECEDING) AS running,
           sum(n) OVER (PARTITION BY bucket, key) AS total
    FROM merged
),
pct AS (
    SELECT bucket, key, max(total) AS total,
           min(v) FILTER (WHERE running >= greatest(1, ceil(0.5 * total))) AS p50,
           min(v) FILTER (WHERE running >= greatest(1, ceil(0.95 * total))) AS p95,
           min(v) FILTER (WHERE running >= greatest(1, ceil(0.99 * total))) AS p99
    FROM ranked GROUP BY 1, 2
),
sketch AS (
    SELECT bucket, key, jsonb_build_object(
               'scale', min(scale),
               'zero_count', coalesce(sum(n) FILTER (WHERE sign = 0), 0),
               'positive', observability.histogram_dense(array_agg(idx) FILTER (WHERE sign = 1),
                                                         array_agg(n) FILTER (WHERE sign = 1)),
               'negative', observability.histogram_dense(array_agg(idx) FILTER (WHERE sign = -1),
                                                         array_agg(n) FILTER (WHERE sign = -1))) AS buckets
    FROM merged GROUP BY 1, 2
),
fresh AS (
    SELECT k.bucket, 'app.' || k.kind AS metric_type,
           jsonb_build_object('granularity', $4::text) || k.key AS dimensions, k.n,
           CASE WHEN k.kind = 'gauge' THEN NULL ELSE k.total END AS total,
           CASE WHEN k.kind IN ('gauge', 'histogram') THEN k.lo END AS lo,
           CASE WHEN k.kind IN ('gauge', 'histogram') THEN k.hi END AS hi,
           CASE WHEN k.kind = 'gauge' THEN k.gauge_avg
                WHEN k.kind = 'histogram' AND k.n > 0 THEN k.total / k.n END AS mean,
           CASE WHEN k.kind = 'histogram' AND p.total = k.n  -- every value is in the buckets
                THEN ARRAY[greatest(k.lo, least(k.hi, p.p50)), greatest(k.lo, least(k.hi, p.p95)),
                           greatest(k.lo, least(k.hi, p.p99))] END AS pct,
           CASE WHEN k.kind = 'gauge' THEN k.latest END AS last,
           CASE WHEN k.kind IN ('counter', 'updown_counter') THEN k.total / $8::float8 END AS rate,
           sk.buckets
    FROM keyed AS k
    LEFT JOIN pct AS p ON k.kind = 'histogram' AND p.bucket = k.bucket AND p.key = k.key
    LEFT JOIN sketch AS sk ON k.kind = 'histogram' AND sk.bucket = k.bucket AND sk.key = k.key
    UNION ALL
    SELECT bucket, 'app.rows', jsonb_build_object('granularity', $4::text), count(*),
           sum(hashtext(id::text))::float8, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM src GROUP BY bucket
),
upserted AS (
    INSERT INTO observability.metrics_aggregates AS a
        (bucket, metric_type, dimensions, count, sum, min, max, avg, p50, p95, p99, last, rate, buckets, updated_at)
    SELECT bucket, metric_type, dimensions, n, total, lo, hi, mean, pct[1], pct[2], pct[3], last, rate, buckets, now()
    FROM fresh
    ON CONFLICT (bucket, metric_type, dimensions) DO UPDATE SET
        count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
        avg = EXCLUDED.avg, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
        last = EXCLUDED.last, rate = EXCLUDED.rate, buckets = EXCLUDED.buckets, updated_at = EXCLUDED.updated_at
    WHERE (a.count, a.sum, a.min, a.max, a.avg, a.p50, a.p95, a.p99, a.last, a.rate, a.buckets)
          IS DISTINCT FROM (EXCLUDED.count, EXCLUDED.sum, EXCLUDED.min, EXCLUDED.max, EXCLUDED.avg, EXCLUDED.p50,
                            EXCLUDED.p95, EXCLUDED.p99, EXCLUDED.last, EXCLUDED.rate, EXCLUDED.buckets)
    RETURNING 1
),
emptied AS (
    UPDATE observability.metrics_aggregates AS a
    SET count = 0, sum = NULL, min = NULL, max = NULL, avg = NULL, p50 = NULL, p95 = NULL, p99 = NULL,
        last = NULL, rate = NULL, buckets = NULL, updated_at = now()
    WHERE a.bucket = ANY($6::timestamptz[]) AND a.count <> 0
      AND a.metric_type = ANY($7::text[])
      AND a.dimensions ->> 'granularity' = $4::text
      AND NOT EXISTS (SELECT 1 FROM fresh f
                      WHERE f.bucket = a.bucket AND f.metric_type = a.metric_type AND f.dimensions = a.dimensions)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS rows,
       (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS changed
"""

ROLLUP_MINUTES = _SOURCE + _STATS + _HIST_FROM_ROWS + _TAIL
ROLLUP_HOURS = _SOURCE + _STATS + _HIST_FROM_MINUTES + _TAIL
