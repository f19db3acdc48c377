-- hypertail schema, version 4 (2 added observability.logs; 3 added hypertail.checkpoints.data_time,
-- the backfill functions and compression by chunk creation time; 4 observability.metrics and
-- observability.workflow_transitions, with the view observability.workflows).
--
-- Idempotent: every statement is guarded, so applying this file again changes nothing, and
-- applying it over an older version adds what is missing (tables are created with their keys,
-- then every column is added with ADD COLUMN IF NOT EXISTS).
--
-- Two modes, chosen by what the server has:
--   * TimescaleDB available: the extension is created and the time-series tables become
--     hypertables with the chunk intervals of the observability stories, plus compression and
--     retention policies.
--   * plain PostgreSQL: the same tables, keys and indexes, with a BRIN index on each time column.
--
-- Policy lengths and the mode come from session settings so that `hypertail migrate` can pass the
-- configured values; with psql, run e.g. `SET hypertail.compress_after_days = '14';` first.
--   hypertail.compress_after_days   (default 7; a chunk is compressed once it was created this long
--                                   plus its chunk interval ago, see the layout block at the end)
--   hypertail.retention_days        (default 90)
--   hypertail.chat_retention_days   (default 365)
--   hypertail.logs_retention_days   (default 14)
--   hypertail.timescaledb           'on', 'off' or unset (unset: use TimescaleDB when it is installed
--                                   and preloaded). `hypertail migrate` decides schema.timescaledb
--                                   (auto/require/off) before it runs this file and passes on/off.
--
-- TimescaleDB refuses `ADD COLUMN ... DEFAULT <non-constant>` on a hypertable with compression
-- enabled, even with IF NOT EXISTS and even when the column exists. So a hypertable column with a
-- non-constant default (metrics_aggregates.updated_at) is added by a guarded block: with the
-- default evaluated once as a constant, then the real default set. Columns with constant defaults
-- (and nullable ones) are added to compressed hypertables directly, chunks compressed or not.
--
-- Every primary key and unique constraint of a time-series table includes its time column, as
-- hypertables require. No foreign keys on hypertables.

-- The extension only where it can load: CREATE EXTENSION on a server whose files are installed but
-- whose shared_preload_libraries lacks timescaledb fails and closes the connection. The loader's
-- GUC `timescaledb.disable_load` exists exactly when the library is preloaded (and any role can
-- read it, unlike shared_preload_libraries).
DO $$
BEGIN
    IF coalesce(current_setting('hypertail.timescaledb', true), '') <> 'off'
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('timescaledb.disable_load', true) IS NOT NULL THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS observability;
CREATE SCHEMA IF NOT EXISTS hypertail;

-- ---------------------------------------------------------------------------------------------
-- observability.traces: one row per trace (root operation), merged from start and end records.
CREATE TABLE IF NOT EXISTS observability.traces (
    trace_id    varchar(32) NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT traces_pkey PRIMARY KEY (trace_id, "timestamp")
);
ALTER TABLE observability.traces
    ADD COLUMN IF NOT EXISTS name                varchar(255) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS operation_type      varchar(50),
    ADD COLUMN IF NOT EXISTS user_id             uuid,
    ADD COLUMN IF NOT EXISTS session_id          varchar(255),
    ADD COLUMN IF NOT EXISTS kb_id               uuid,
    ADD COLUMN IF NOT EXISTS status              varchar(20) NOT NULL DEFAULT 'in_progress',
    ADD COLUMN IF NOT EXISTS ended_at            timestamptz,
    ADD COLUMN IF NOT EXISTS duration_ms         integer,
    ADD COLUMN IF NOT EXISTS error_type          varchar(255),
    ADD COLUMN IF NOT EXISTS error_message       text,
    ADD COLUMN IF NOT EXISTS total_input_tokens  integer,
    ADD COLUMN IF NOT EXISTS total_output_tokens integer,
    ADD COLUMN IF NOT EXISTS total_cost_usd      numeric(10, 6),
    ADD COLUMN IF NOT EXISTS metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS synced_to_langfuse  boolean NOT NULL DEFAULT false;

CREATE INDEX IF NOT EXISTS idx_traces_trace_id       ON observability.traces (trace_id);
CREATE INDEX IF NOT EXISTS idx_traces_user_id        ON observability.traces (user_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_traces_kb_id          ON observability.traces (kb_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_traces_session_id     ON observability.traces (session_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_traces_operation_type ON observability.traces (operation_type, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_traces_status         ON observability.traces (status, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_traces_error          ON observability.traces ("timestamp" DESC)
    WHERE status = 'failed';

-- ---------------------------------------------------------------------------------------------
-- observability.spans: one row per operation inside a trace (LLM calls, retrieval, parsing...).
CREATE TABLE IF NOT EXISTS observability.spans (
    span_id     varchar(16) NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT spans_pkey PRIMARY KEY (span_id, "timestamp")
);
ALTER TABLE observability.spans
    ADD COLUMN IF NOT EXISTS trace_id        varchar(32) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS parent_span_id  varchar(16),
    ADD COLUMN IF NOT EXISTS name            varchar(255) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS span_type       varchar(50) NOT NULL DEFAULT 'custom',
    ADD COLUMN IF NOT EXISTS status          varchar(20) NOT NULL DEFAULT 'in_progress',
    ADD COLUMN IF NOT EXISTS duration_ms     integer,
    ADD COLUMN IF NOT EXISTS error_type      varchar(255),
    ADD COLUMN IF NOT EXISTS error_message   text,
    ADD COLUMN IF NOT EXISTS model           varchar(100),
    ADD COLUMN IF NOT EXISTS input_tokens    integer,
    ADD COLUMN IF NOT EXISTS output_tokens   integer,
    ADD COLUMN IF NOT EXISTS cost_usd        numeric(10, 6),
    ADD COLUMN IF NOT EXISTS temperature     double precision,
    ADD COLUMN IF NOT EXISTS input_preview   varchar(500),
    ADD COLUMN IF NOT EXISTS output_preview  varchar(500),
    ADD COLUMN IF NOT EXISTS document_id     uuid,
    ADD COLUMN IF NOT EXISTS chunk_count     integer,
    ADD COLUMN IF NOT EXISTS result_count    integer,
    ADD COLUMN IF NOT EXISTS metadata        jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX IF NOT EXISTS idx_spans_trace_id  ON observability.spans (trace_id);
CREATE INDEX IF NOT EXISTS idx_spans_parent    ON observability.spans (parent_span_id);
CREATE INDEX IF NOT EXISTS idx_spans_span_type ON observability.spans (span_type, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_spans_model     ON observability.spans (model, "timestamp" DESC)
    WHERE model IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_spans_status    ON observability.spans (status, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_spans_document_id ON observability.spans (document_id)
    WHERE document_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_spans_error     ON observability.spans ("timestamp" DESC)
    WHERE status = 'failed';

-- ---------------------------------------------------------------------------------------------
-- observability.chat_messages: conversation turns with their sources and citations.
CREATE TABLE IF NOT EXISTS observability.chat_messages (
    id          uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT chat_messages_pkey PRIMARY KEY (id, "timestamp")
);
ALTER TABLE observability.chat_messages
    ADD COLUMN IF NOT EXISTS trace_id         varchar(32),
    ADD COLUMN IF NOT EXISTS span_id          varchar(16),
    ADD COLUMN IF NOT EXISTS user_id          uuid,
    ADD COLUMN IF NOT EXISTS kb_id            uuid,
    ADD COLUMN IF NOT EXISTS session_id       varchar(255),
    ADD COLUMN IF NOT EXISTS conversation_id  varchar(255),
    ADD COLUMN IF NOT EXISTS turn_number      integer,
    ADD COLUMN IF NOT EXISTS role             varchar(20) NOT NULL DEFAULT 'user',
    ADD COLUMN IF NOT EXISTS content          text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS input_tokens     integer,
    ADD COLUMN IF NOT EXISTS output_tokens    integer,
    ADD COLUMN IF NOT EXISTS model            varchar(100),
    ADD COLUMN IF NOT EXISTS latency_ms       integer,
    ADD COLUMN IF NOT EXISTS sources          jsonb,
    ADD COLUMN IF NOT EXISTS citations        jsonb,
    ADD COLUMN IF NOT EXISTS feedback_type    varchar(20),
    ADD COLUMN IF NOT EXISTS feedback_comment text,
    ADD COLUMN IF NOT EXISTS metadata         jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX IF NOT EXISTS idx_chat_trace_id        ON observability.chat_messages (trace_id);
CREATE INDEX IF NOT EXISTS idx_chat_user_id         ON observability.chat_messages (user_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_chat_kb_id           ON observability.chat_messages (kb_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_chat_session_id      ON observability.chat_messages (session_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_chat_conversation_id ON observability.chat_messages (conversation_id, turn_number);

-- ---------------------------------------------------------------------------------------------
-- observability.document_events: one row per document-processing step.
CREATE TABLE IF NOT EXISTS observability.document_events (
    id          uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT document_events_pkey PRIMARY KEY (id, "timestamp")
);
ALTER TABLE observability.document_events
    ADD COLUMN IF NOT EXISTS trace_id        varchar(32),
    ADD COLUMN IF NOT EXISTS document_id     uuid,
    ADD COLUMN IF NOT EXISTS kb_id           uuid,
    ADD COLUMN IF NOT EXISTS event_type      varchar(50) NOT NULL DEFAULT 'unknown',
    ADD COLUMN IF NOT EXISTS status          varchar(20) NOT NULL DEFAULT 'completed',
    ADD COLUMN IF NOT EXISTS duration_ms     integer,
    ADD COLUMN IF NOT EXISTS chunk_count     integer,
    ADD COLUMN IF NOT EXISTS token_count     integer,
    ADD COLUMN IF NOT EXISTS page_count      integer,
    ADD COLUMN IF NOT EXISTS file_size_bytes bigint,
    ADD COLUMN IF NOT EXISTS error_message   text,
    ADD COLUMN IF NOT EXISTS metadata        jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX IF NOT EXISTS idx_doc_events_trace_id    ON observability.document_events (trace_id);
CREATE INDEX IF NOT EXISTS idx_doc_events_document_id ON observability.document_events (document_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_doc_events_kb_id       ON observability.document_events (kb_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_doc_events_event_type  ON observability.document_events (event_type, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_doc_events_status      ON observability.document_events (status, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_doc_events_error       ON observability.document_events ("timestamp" DESC)
    WHERE status = 'failed';

-- ---------------------------------------------------------------------------------------------
-- observability.logs: the application's ordinary log lines (no record_type), beside its spans.
-- `id` is derived from (agent, file identity, byte offset), so a line read again after a crash
-- is the same row. `metadata` holds every key that is not a column.
CREATE TABLE IF NOT EXISTS observability.logs (
    id          uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT logs_pkey PRIMARY KEY (id, "timestamp")
);
ALTER TABLE observability.logs
    ADD COLUMN IF NOT EXISTS trace_id  varchar(32),
    ADD COLUMN IF NOT EXISTS span_id   varchar(16),
    ADD COLUMN IF NOT EXISTS level     varchar(32),
    ADD COLUMN IF NOT EXISTS logger    varchar(255),
    ADD COLUMN IF NOT EXISTS event     text,
    ADD COLUMN IF NOT EXISTS source    varchar(255) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS metadata  jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Few indexes on purpose: log lines are most of what an app writes, and each index costs every
-- insert. By trace (the waterfall), and the errors (like idx_spans_error); volume per level comes
-- from the rollup (log.lines), other searches from the time column (chunks, or BRIN).
CREATE INDEX IF NOT EXISTS idx_logs_trace_id ON observability.logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_logs_error    ON observability.logs ("timestamp" DESC)
    WHERE level IN ('error', 'critical');

-- ---------------------------------------------------------------------------------------------
-- Histogram buckets of observability.metrics (see agent/contract.py, HISTOGRAM_SCALE): OTLP's
-- exponential layout {"scale", "zero_count", "positive": {"offset", "bucket_counts"}, "negative"},
-- or its explicit-bounds layout {"explicit_bounds": [...], "bucket_counts": [...]}.
--
-- One sign's {"offset", "bucket_counts"} (absent is fine): integers, and every bucket's bounds
-- finite doubles (|index| + 1 below 1020 * 2^scale).
CREATE OR REPLACE FUNCTION observability.histogram_side_valid(side jsonb, scale integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN side IS NULL THEN true
        WHEN jsonb_typeof(side) <> 'object' OR jsonb_typeof(side -> 'bucket_counts') IS DISTINCT FROM 'array'
             OR NOT coalesce((side ->> 'offset') ~ '^-?[0-9]{1,9}$', false) THEN false
        WHEN jsonb_array_length(side -> 'bucket_counts') > 16384 THEN false
        ELSE (side -> 'bucket_counts')::text ~ '^\[([0-9]{1,18}(, [0-9]{1,18})*)?\]$'
             AND (abs((side ->> 'offset')::bigint) + jsonb_array_length(side -> 'bucket_counts') + 1)
                 * power(2::float8, -scale) < 1020
    END
$fn$;

-- Whether `b` is one of the two, well formed: integer scale -10..20, integer offsets, counts that
-- are non-negative integers (at most 16384 per sign), and bounds a double holds. The parser stores
-- any JSON in `buckets` (a line is never refused for it), so every reader checks each row once with
-- this before casting: a malformed row gives no buckets (and so no percentile for its group), never
-- an error that would stop the rollup. Casts sit behind CASE, which PostgreSQL evaluates in order.
CREATE OR REPLACE FUNCTION observability.histogram_buckets_valid(b jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE
        WHEN b IS NULL THEN true
        WHEN jsonb_typeof(b) <> 'object' THEN false
        WHEN b ? 'explicit_bounds' THEN
            NOT b ?| ARRAY['scale', 'zero_count', 'positive', 'negative']
            AND jsonb_typeof(b -> 'explicit_bounds') = 'array' AND jsonb_typeof(b -> 'bucket_counts') = 'array'
            AND jsonb_array_length(b -> 'bucket_counts') = jsonb_array_length(b -> 'explicit_bounds') + 1
            AND NOT jsonb_path_exists(b -> 'explicit_bounds', 'strict $[*] ? (@.type() != "number")')
            AND (b -> 'bucket_counts')::text ~ '^\[([0-9]{1,18}(, [0-9]{1,18})*)?\]$'
        WHEN NOT coalesce((b ->> 'scale') ~ '^-?[0-9]{1,2}$', false) THEN false
        WHEN (b ->> 'scale')::integer NOT BETWEEN -10 AND 20 THEN false
        ELSE (NOT b ? 'zero_count' OR coalesce((b ->> 'zero_count') ~ '^[0-9]{1,18}$', false))
             AND observability.histogram_side_valid(b -> 'positive', (b ->> 'scale')::integer)
             AND observability.histogram_side_valid(b -> 'negative', (b ->> 'scale')::integer)
    END
$fn$;

-- ---------------------------------------------------------------------------------------------
-- observability.metrics: application metrics, one row per series (name, kind, attributes) per
-- interval of one process (agent.emit aggregates in the process and writes one line per series per
-- interval; OTLP metric data points map onto the same columns). "timestamp" is when the interval
-- was written (its end), start_time its start. See docs/metrics.md.
CREATE TABLE IF NOT EXISTS observability.metrics (
    id          uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT metrics_pkey PRIMARY KEY (id, "timestamp")
);
ALTER TABLE observability.metrics
    ADD COLUMN IF NOT EXISTS start_time  timestamptz,
    ADD COLUMN IF NOT EXISTS name        varchar(255) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS kind        varchar(20) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS temporality varchar(20),
    ADD COLUMN IF NOT EXISTS unit        varchar(63),
    ADD COLUMN IF NOT EXISTS attributes  jsonb,
    ADD COLUMN IF NOT EXISTS resource    jsonb,
    ADD COLUMN IF NOT EXISTS value       double precision,
    ADD COLUMN IF NOT EXISTS count       bigint,
    ADD COLUMN IF NOT EXISTS sum         double precision,
    ADD COLUMN IF NOT EXISTS min         double precision,
    ADD COLUMN IF NOT EXISTS max         double precision,
    ADD COLUMN IF NOT EXISTS buckets     jsonb,
    ADD COLUMN IF NOT EXISTS trace_id    varchar(32),
    ADD COLUMN IF NOT EXISTS span_id     varchar(16),
    ADD COLUMN IF NOT EXISTS metadata    jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Series are read by name over a time range (`hypertail metrics`, the rollup, dashboards).
CREATE INDEX IF NOT EXISTS idx_metrics_name     ON observability.metrics (name, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_metrics_trace_id ON observability.metrics (trace_id) WHERE trace_id IS NOT NULL;

-- The non-empty buckets of one row's exponential histogram: (scale, sign, idx, n), sign 1 for
-- positive values, -1 for negative ones, 0 for the zero bucket. No rows for NULL, explicit bounds or
-- buckets that are not well formed. The row is checked once (OFFSET 0 keeps the planner from
-- copying the check into every use), and every cast is guarded by its result.
CREATE OR REPLACE FUNCTION observability.histogram_buckets(b jsonb)
RETURNS TABLE (scale integer, sign integer, idx bigint, n bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT v.scale, e.sign, e.idx, e.n
    FROM (SELECT CASE WHEN b ? 'scale' AND observability.histogram_buckets_valid(b)
                      THEN (b ->> 'scale')::integer END AS scale
          OFFSET 0) AS v
    CROSS JOIN LATERAL (
        SELECT 0 AS sign, 0::bigint AS idx,
               CASE WHEN v.scale IS NOT NULL THEN (b ->> 'zero_count')::bigint END AS n
        UNION ALL
        SELECT d.sign, (b -> d.side ->> 'offset')::bigint + u.o - 1, u.n
        FROM (VALUES ('positive', 1), ('negative', -1)) AS d(side, sign)
        CROSS JOIN LATERAL unnest(CASE WHEN v.scale IS NOT NULL
                                       THEN translate((b -> d.side -> 'bucket_counts')::text, '[]', '{}')::bigint[]
                                  END) WITH ORDINALITY AS u(n, o)
    ) AS e
    WHERE v.scale IS NOT NULL AND e.n > 0
$fn$;

-- The value that stands for bucket `idx` of `sign` at `scale`: 2 * base^(idx+1) / (base+1), off by
-- at most (base-1)/(base+1) of any value in the bucket; the zero bucket is 0.
CREATE OR REPLACE FUNCTION observability.histogram_bucket_value(scale integer, sign integer, idx bigint)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN sign = 0 THEN 0::float8
                ELSE sign * 2 * power(2::float8, (idx + 1) * power(2::float8, -scale))
                     / (power(2::float8, power(2::float8, -scale)) + 1) END
$fn$;

-- One sign's buckets in the dense layout {"offset", "bucket_counts"} from its non-empty (idx, n).
CREATE OR REPLACE FUNCTION observability.histogram_dense(idxs bigint[], ns bigint[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN idxs IS NULL OR cardinality(idxs) = 0 THEN '{"offset": 0, "bucket_counts": []}'::jsonb
           ELSE (SELECT jsonb_build_object('offset', min(g.i), 'bucket_counts', jsonb_agg(coalesce(x.n, 0) ORDER BY g.i))
                 FROM generate_series((SELECT min(i) FROM unnest(idxs) AS i), (SELECT max(i) FROM unnest(idxs) AS i)) AS g(i)
                 LEFT JOIN unnest(idxs, ns) AS x(i, n) ON x.i = g.i) END
$fn$;

-- Quantiles (nearest rank: the value of rank ceil(q * n)) of the merged exponential histograms `hs`
-- (the buckets of several rows: processes, intervals). Rows of different scales are merged at the
-- smallest one (bucket i at scale s is bucket i >> (s - t) at scale t). NULL entries when the
-- buckets do not add up to `total` (the rows' summed count): then some row's buckets were explicit
-- bounds (OTLP) or missing, and a quantile of the rest would lie.
CREATE OR REPLACE FUNCTION observability.histogram_quantiles(hs jsonb[], total numeric, qs numeric[])
RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    WITH b AS (
        SELECT hb.* FROM unnest(hs) AS h(b) CROSS JOIN LATERAL observability.histogram_buckets(h.b) AS hb
    ),
    t AS (SELECT min(scale) AS scale FROM b),
    merged AS (
        SELECT b.sign, b.idx >> (b.scale - t.scale) AS idx, t.scale, sum(b.n) AS n
        FROM b CROSS JOIN t GROUP BY 1, 2, 3
    ),
    ranked AS (
        SELECT observability.histogram_bucket_value(scale, sign, idx) AS v,
               sum(n) OVER (ORDER BY sign, sign * idx ROWS UNBOUNDED PRECEDING) AS running,
               sum(n) OVER () AS n
        FROM merged
    )
    SELECT array_agg(CASE WHEN (SELECT max(n) FROM ranked) = total THEN
                         (SELECT r.v FROM ranked r WHERE r.running >= greatest(1, ceil(u.q * r.n))
                          ORDER BY r.running LIMIT 1) END
                     ORDER BY u.o)
    FROM unnest(qs) WITH ORDINALITY AS u(q, o)
$fn$;

-- ---------------------------------------------------------------------------------------------
-- observability.workflow_transitions: every transition of an application's workflows (a document
-- through parse/embed/index, an order through paid/shipped), one row per emit.workflow() call.
-- The current state is the latest transition by ("timestamp", seq, id): see the view below.
CREATE TABLE IF NOT EXISTS observability.workflow_transitions (
    id          uuid NOT NULL,
    "timestamp" timestamptz NOT NULL,
    CONSTRAINT workflow_transitions_pkey PRIMARY KEY (id, "timestamp")
);
ALTER TABLE observability.workflow_transitions
    ADD COLUMN IF NOT EXISTS workflow_id   varchar(255) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS workflow_type varchar(100),
    ADD COLUMN IF NOT EXISTS state         varchar(100) NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS from_state    varchar(100),
    ADD COLUMN IF NOT EXISTS seq           bigint,
    ADD COLUMN IF NOT EXISTS trace_id      varchar(32),
    ADD COLUMN IF NOT EXISTS span_id       varchar(16),
    ADD COLUMN IF NOT EXISTS metadata      jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX IF NOT EXISTS idx_workflow_transitions_workflow
    ON observability.workflow_transitions (workflow_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_workflow_transitions_state
    ON observability.workflow_transitions (state, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_workflow_transitions_trace_id
    ON observability.workflow_transitions (trace_id) WHERE trace_id IS NOT NULL;

-- Each workflow's current state, since when, and its history, whatever order the transitions
-- arrived in. Order of a workflow's transitions: "timestamp" (when the app recorded it), then seq
-- (a counter of the recording process, for two transitions in one microsecond), then id. The
-- current state is the last one's. `consistent` is false when some transition's from_state (the
-- state the app knew before it) differs from the state before it in that order: a sign of clocks
-- that disagree between hosts, or of two processes moving one workflow at once.
CREATE OR REPLACE VIEW observability.workflows AS
WITH ordered AS (
    SELECT t.*,
           row_number() OVER w AS step,
           lag(t.state) OVER w AS previous_state,
           lead(t."timestamp") OVER w AS left_at
    FROM observability.workflow_transitions t
    WINDOW w AS (PARTITION BY t.workflow_id ORDER BY t."timestamp", t.seq NULLS FIRST, t.id)
)
SELECT o.workflow_id,
       (array_agg(o.workflow_type ORDER BY o.step DESC) FILTER (WHERE o.workflow_type IS NOT NULL))[1]
           AS workflow_type,
       (array_agg(o.state ORDER BY o.step DESC))[1] AS state,
       max(o."timestamp") AS since,
       now() - max(o."timestamp") AS time_in_state,
       min(o."timestamp") AS started_at,
       count(*) AS transitions,
       bool_and(o.from_state IS NULL OR o.previous_state IS NULL OR o.from_state = o.previous_state)
           AS consistent,
       (array_agg(o.trace_id ORDER BY o.step DESC))[1] AS trace_id,
       jsonb_agg(jsonb_build_object('state', o.state, 'from_state', o.from_state, 'at', o."timestamp",
                                    'seconds', extract(epoch FROM o.left_at - o."timestamp"),
                                    'trace_id', o.trace_id)
                 ORDER BY o.step) AS history
FROM ordered o
GROUP BY o.workflow_id;

-- ---------------------------------------------------------------------------------------------
-- observability.metrics_aggregates: pre-computed rollups (count, sum, min, max, avg, percentiles).
-- `dimensions` holds the bucket width ("granularity") and the dimension values of the group.
CREATE TABLE IF NOT EXISTS observability.metrics_aggregates (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    bucket      timestamptz NOT NULL,
    metric_type varchar(100) NOT NULL,
    dimensions  jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT metrics_aggregates_pkey PRIMARY KEY (id, bucket),
    CONSTRAINT uq_metrics_aggregates_bucket_type_dims UNIQUE (bucket, metric_type, dimensions)
);
ALTER TABLE observability.metrics_aggregates
    ADD COLUMN IF NOT EXISTS count      bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS sum        double precision,
    ADD COLUMN IF NOT EXISTS min        double precision,
    ADD COLUMN IF NOT EXISTS max        double precision,
    ADD COLUMN IF NOT EXISTS avg        double precision,
    ADD COLUMN IF NOT EXISTS p50        double precision,
    ADD COLUMN IF NOT EXISTS p95        double precision,
    ADD COLUMN IF NOT EXISTS p99        double precision;
DO $$
BEGIN
    -- updated_at DEFAULT now(): non-constant, so not through ADD COLUMN IF NOT EXISTS (see the top).
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'observability.metrics_aggregates'::regclass AND attname = 'updated_at'
          AND NOT attisdropped
    ) THEN
        EXECUTE format('ALTER TABLE observability.metrics_aggregates ADD COLUMN updated_at timestamptz '
                       'NOT NULL DEFAULT %L', now());
        ALTER TABLE observability.metrics_aggregates ALTER COLUMN updated_at SET DEFAULT now();
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS idx_metrics_type_bucket ON observability.metrics_aggregates (metric_type, bucket DESC);
CREATE INDEX IF NOT EXISTS idx_metrics_dimensions  ON observability.metrics_aggregates USING gin (dimensions);

-- Application metrics in the rollup (metric types app.counter, app.updown_counter, app.gauge,
-- app.histogram, and app.rows: how many metric rows a bucket was computed from): `rate` is a
-- counter's increase per second over the bucket, `last` a gauge's last value in it, `buckets` a
-- histogram's merged exponential buckets (the layout of observability.metrics.buckets), from which
-- the hour's percentiles are merged. NULL for every other metric type.
ALTER TABLE observability.metrics_aggregates
    ADD COLUMN IF NOT EXISTS last       double precision,
    ADD COLUMN IF NOT EXISTS rate       double precision,
    ADD COLUMN IF NOT EXISTS buckets    jsonb;

-- ---------------------------------------------------------------------------------------------
-- observability.provider_sync_status: sync state per (provider, entity). hypertail reports one
-- row per (agent, source file) here. A regular table, not a hypertable.
CREATE TABLE IF NOT EXISTS observability.provider_sync_status (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    provider_name varchar(50) NOT NULL,
    entity_type   varchar(50) NOT NULL,
    entity_id     varchar(255) NOT NULL,
    CONSTRAINT provider_sync_status_pkey PRIMARY KEY (id),
    CONSTRAINT uq_provider_sync_status_entity UNIQUE (provider_name, entity_type, entity_id)
);
ALTER TABLE observability.provider_sync_status
    ADD COLUMN IF NOT EXISTS last_synced_at timestamptz,
    ADD COLUMN IF NOT EXISTS sync_status    varchar(20) NOT NULL DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS error_message  text,
    ADD COLUMN IF NOT EXISTS retry_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS created_at     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at     timestamptz NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS idx_sync_status_status ON observability.provider_sync_status (sync_status);

-- ---------------------------------------------------------------------------------------------
-- Agent state: schema `hypertail`.
CREATE TABLE IF NOT EXISTS hypertail.schema_version (
    version    integer NOT NULL,
    CONSTRAINT schema_version_pkey PRIMARY KEY (version)
);
ALTER TABLE hypertail.schema_version
    ADD COLUMN IF NOT EXISTS applied_at timestamptz NOT NULL DEFAULT now(),
    -- What was applied (this file's text and the mode), so an agent's start skips an unchanged schema.
    ADD COLUMN IF NOT EXISTS checksum   text;
-- Version 2 added observability.logs, 3 the backfill functions and checkpoints.data_time, 4 the
-- metrics and workflow tables: an agent that may not apply the schema waits for them.
INSERT INTO hypertail.schema_version (version) VALUES (2), (3), (4) ON CONFLICT (version) DO NOTHING;

-- One row per tailed file identity; `committed_offset` moves in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS hypertail.checkpoints (
    file_key text NOT NULL,
    CONSTRAINT checkpoints_pkey PRIMARY KEY (file_key)
);
ALTER TABLE hypertail.checkpoints
    ADD COLUMN IF NOT EXISTS agent_id         text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS source           text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS path             text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS device           bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS inode            bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fingerprint      text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS fingerprint_len  integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS committed_offset bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tail_hash        text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The data time of the last row committed from the file (NULL until one was): how far behind in
    -- time the agent is, which `hypertail status` compares with the compression age.
    ADD COLUMN IF NOT EXISTS data_time        timestamptz;

CREATE INDEX IF NOT EXISTS idx_checkpoints_agent ON hypertail.checkpoints (agent_id);

-- Lines that could not become rows, with where they came from and why.
CREATE TABLE IF NOT EXISTS hypertail.dead_letters (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    CONSTRAINT dead_letters_pkey PRIMARY KEY (id)
);
ALTER TABLE hypertail.dead_letters
    ADD COLUMN IF NOT EXISTS received_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS agent_id    text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS source      text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS path        text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS file_key    text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS byte_offset bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS line_length bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reason      text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS field       text,
    ADD COLUMN IF NOT EXISTS raw         bytea;

CREATE UNIQUE INDEX IF NOT EXISTS uq_dead_letters_origin ON hypertail.dead_letters (file_key, byte_offset);
CREATE INDEX IF NOT EXISTS idx_dead_letters_received ON hypertail.dead_letters (received_at DESC);

-- ---------------------------------------------------------------------------------------------
-- Backfills into compressed ranges (agent/sink/backfill.py, docs/operations.md "Compression and
-- backfills"). Only a hypertable's owner may decompress a chunk or move a job, and the ingest role
-- owns nothing; so these two functions run as their owner (whoever applies this file), each does one
-- thing, on chunks and policies of observability's hypertables only, and only roles granted EXECUTE
-- (`hypertail migrate --print-grants`) may call them. They exist in both modes and do nothing
-- without TimescaleDB.
--
-- hypertail.decompress_chunk: decompress one compressed chunk of an observability hypertable, once,
-- so that a backfill into its range is COPYed at full speed instead of having every row's key
-- checked against the compressed batches. Returns false when there was nothing to do.
CREATE OR REPLACE FUNCTION hypertail.decompress_chunk(chunk regclass) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ext text := (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF ext IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.chunks c
        WHERE c.hypertable_schema = 'observability' AND c.is_compressed
          AND format('%I.%I', c.chunk_schema, c.chunk_name)::regclass = chunk
    ) THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT %s.decompress_chunk($1, if_compressed => true)', ext) USING chunk;
    RETURN true;
END
$fn$;

-- hypertail.postpone_compression: move the next start of the compression policies of `tables` to
-- `quiet` from now, while an agent writes into chunks those policies would compress (chunks it
-- decompressed for a backfill), so no policy compresses a chunk an agent is still filling. Never
-- earlier than planned, and never past two schedule intervals after the policy's last successful
-- run (TimescaleDB records -infinity before the first; then from now): an agent that keeps writing
-- old data cannot hold compression off for good. Returns how many policies were moved.
CREATE OR REPLACE FUNCTION hypertail.postpone_compression(tables text[], quiet interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ext text := (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb');
    j record;
    moved integer := 0;
BEGIN
    IF ext IS NULL THEN
        RETURN 0;
    END IF;
    FOR j IN
        SELECT jb.job_id, jb.next_start,
               least(now() + quiet, CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish
                                         ELSE now() END + 2 * jb.schedule_interval) AS target
        FROM timescaledb_information.jobs jb
        LEFT JOIN timescaledb_information.job_stats s ON s.job_id = jb.job_id
        WHERE jb.proc_name = 'policy_compression' AND jb.hypertable_schema = 'observability'
          AND jb.hypertable_name = ANY (tables)
    LOOP
        IF j.next_start IS NULL OR j.target > j.next_start THEN
            EXECUTE format('SELECT %s.alter_job($1, next_start => $2)', ext) USING j.job_id, j.target;
            moved := moved + 1;
        END IF;
    END LOOP;
    RETURN moved;
END
$fn$;
REVOKE ALL ON FUNCTION hypertail.decompress_chunk(regclass), hypertail.postpone_compression(text[], interval)
    FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Time-series layout: hypertables with TimescaleDB, BRIN indexes without it.
DO $$
DECLARE
    compress_after interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.compress_after_days', true), ''), '7')::int);
    retain interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.retention_days', true), ''), '90')::int);
    retain_chat interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.chat_retention_days', true), ''), '365')::int);
    retain_logs interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.logs_retention_days', true), ''), '14')::int);
    retain_metrics interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.metrics_retention_days', true), ''), '90')::int);
    retain_workflows interval := make_interval(days =>
        coalesce(nullif(current_setting('hypertail.workflows_retention_days', true), ''), '365')::int);
    t record;
    chunk_interval interval;
    created_before interval;
    job integer;
    job_config jsonb;
BEGIN
    IF coalesce(current_setting('hypertail.timescaledb', true), '') <> 'off'
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        FOR t IN
            SELECT * FROM (VALUES
                ('observability.traces',             'timestamp', INTERVAL '1 day',  'trace_id', retain),
                ('observability.spans',              'timestamp', INTERVAL '1 day',  'trace_id', retain),
                ('observability.document_events',    'timestamp', INTERVAL '1 day',  'kb_id',    retain),
                ('observability.chat_messages',      'timestamp', INTERVAL '7 days', 'conversation_id', retain_chat),
                ('observability.metrics_aggregates', 'bucket',    INTERVAL '7 days', 'metric_type', retain),
                -- logs are segmented by trace like spans: `hypertail trace` reads one segment
                ('observability.logs',               'timestamp', INTERVAL '1 day',  'trace_id', retain_logs),
                -- metrics: a line per series per interval per process, segmented by name, dropped after
                -- hypertail.metrics_retention_days (90); workflow_transitions: few rows, long-lived
                -- workflows, dropped after hypertail.workflows_retention_days (365): a workflow whose
                -- last transition is older than that leaves the view
                ('observability.metrics',              'timestamp', INTERVAL '1 day',  'name',        retain_metrics),
                ('observability.workflow_transitions', 'timestamp', INTERVAL '7 days', 'workflow_id', retain_workflows)
            ) AS v(tbl, time_col, chunk, segment_by, retention)
        LOOP
            PERFORM create_hypertable(t.tbl::regclass, t.time_col,
                                      chunk_time_interval => t.chunk,
                                      if_not_exists => TRUE);
            IF NOT EXISTS (
                SELECT 1 FROM timescaledb_information.hypertables h
                WHERE format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass = t.tbl::regclass
                  AND h.compression_enabled
            ) THEN
                EXECUTE format(
                    'ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                    'timescaledb.compress_orderby = %L)',
                    t.tbl, t.segment_by, format('%I DESC', t.time_col));
            END IF;
            -- Compression by chunk *creation* time, not data time: a chunk is compressed once it was
            -- created compress_after plus one chunk interval ago. A chunk made when its range began is
            -- compressed as before (when its newest data is compress_after old), but one an agent made
            -- minutes ago for old data (a backlog, a late file) is left alone while the agent fills it.
            -- Existing policies are converted in place (same job, schedule and paused state).
            SELECT d.time_interval INTO chunk_interval FROM timescaledb_information.dimensions d
            WHERE format('%I.%I', d.hypertable_schema, d.hypertable_name)::regclass = t.tbl::regclass
              AND d.dimension_number = 1;
            created_before := compress_after + coalesce(chunk_interval, t.chunk);
            SELECT j.job_id, j.config INTO job, job_config FROM timescaledb_information.jobs j
            WHERE j.proc_name = 'policy_compression'
              AND format('%I.%I', j.hypertable_schema, j.hypertable_name)::regclass = t.tbl::regclass;
            IF job IS NULL THEN
                PERFORM add_compression_policy(t.tbl::regclass, compress_created_before => created_before);
            ELSIF job_config ? 'compress_after'
                  OR (job_config->>'compress_created_before')::interval IS DISTINCT FROM created_before THEN
                PERFORM alter_job(job, config => (job_config - 'compress_after')
                                  || jsonb_build_object('compress_created_before', created_before::text));
            END IF;
            PERFORM add_retention_policy(t.tbl::regclass, t.retention, if_not_exists => TRUE);
        END LOOP;
        RAISE NOTICE 'hypertail schema: TimescaleDB % mode',
            (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb');
    ELSE
        CREATE INDEX IF NOT EXISTS brin_traces_timestamp
            ON observability.traces USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_spans_timestamp
            ON observability.spans USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_chat_messages_timestamp
            ON observability.chat_messages USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_document_events_timestamp
            ON observability.document_events USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_metrics_aggregates_bucket
            ON observability.metrics_aggregates USING brin (bucket);
        CREATE INDEX IF NOT EXISTS brin_logs_timestamp
            ON observability.logs USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_metrics_timestamp
            ON observability.metrics USING brin ("timestamp");
        CREATE INDEX IF NOT EXISTS brin_workflow_transitions_timestamp
            ON observability.workflow_transitions USING brin ("timestamp");
        RAISE NOTICE 'hypertail schema: plain PostgreSQL mode (TimescaleDB not available)';
    END IF;
END
$$;

