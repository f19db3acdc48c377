"""schema.sql against the spec of design §3, read back from the real catalog."""

from __future__ import annotations

import asyncpg
import pytest

from agent.config import SchemaSettings
from agent.sink.schema import SCHEMA_VERSION, apply_schema, detect_mode, grants_for, installed_version
from tests.integration import catalog

# "column type" with a trailing "!" for NOT NULL. Written from the design, not from schema.sql.
SPEC = {
    "observability.traces": """
        trace_id character varying(32)! | timestamp timestamp with time zone! |
        name character varying(255)! | operation_type character varying(50) | user_id uuid |
        session_id character varying(255) | kb_id uuid | status character varying(20)! |
        ended_at timestamp with time zone | duration_ms integer | error_type character varying(255) |
        error_message text | total_input_tokens integer | total_output_tokens integer |
        total_cost_usd numeric(10,6) | metadata jsonb! | synced_to_langfuse boolean!""",
    "observability.spans": """
        span_id character varying(16)! | timestamp timestamp with time zone! |
        trace_id character varying(32)! | parent_span_id character varying(16) |
        name character varying(255)! | span_type character varying(50)! | status character varying(20)! |
        duration_ms integer | error_type character varying(255) | error_message text |
        model character varying(100) | input_tokens integer | output_tokens integer |
        cost_usd numeric(10,6) | temperature double precision | input_preview character varying(500) |
        output_preview character varying(500) | document_id uuid | chunk_count integer |
        result_count integer | metadata jsonb!""",
    "observability.chat_messages": """
        id uuid! | timestamp timestamp with time zone! | trace_id character varying(32) |
        span_id character varying(16) | user_id uuid | kb_id uuid | session_id character varying(255) |
        conversation_id character varying(255) | turn_number integer | role character varying(20)! |
        content text! | input_tokens integer | output_tokens integer | model character varying(100) |
        latency_ms integer | sources jsonb | citations jsonb | feedback_type character varying(20) |
        feedback_comment text | metadata jsonb!""",
    "observability.document_events": """
        id uuid! | timestamp timestamp with time zone! | trace_id character varying(32) |
        document_id uuid | kb_id uuid | event_type character varying(50)! | status character varying(20)! |
        duration_ms integer | chunk_count integer | token_count integer | page_count integer |
        file_size_bytes bigint | error_message text | metadata jsonb!""",
    "observability.logs": """
        id uuid! | timestamp timestamp with time zone! | trace_id character varying(32) |
        span_id character varying(16) | level character varying(32) | logger character varying(255) |
        event text | source character varying(255)! | metadata jsonb!""",
    "observability.metrics_aggregates": """
        id uuid! | bucket timestamp with time zone! | metric_type character varying(100)! |
        dimensions jsonb! | count bigint! | sum double precision | min double precision |
        max double precision | avg double precision | p50 double precision | p95 double precision |
        p99 double precision | updated_at timestamp with time zone! | last double precision |
        rate double precision | buckets jsonb""",
    "observability.metrics": """
        id uuid! | timestamp timestamp with time zone! | start_time timestamp with time zone |
        name character varying(255)! | kind character varying(20)! | temporality character varying(20) |
        unit character varying(63) | attributes jsonb | resource jsonb | value double precision | count bigint |
        sum double precision | min double precision | max double precision | buckets jsonb |
        trace_id character varying(32) | span_id character varying(16) | metadata jsonb!""",
    "observability.workflow_transitions": """
        id uuid! | timestamp timestamp with time zone! | workflow_id character varying(255)! |
        workflow_type character varying(100) | state character varying(100)! | from_state character varying(100) |
        seq bigint | trace_id character varying(32) | span_id character varying(16) | metadata jsonb!""",
    "observability.provider_sync_status": """
        id uuid! | provider_name character varying(50)! | entity_type character varying(50)! |
        entity_id character varying(255)! | last_synced_at timestamp with time zone |
        sync_status character varying(20)! | error_message text | retry_count integer! |
        created_at timestamp with time zone! | updated_at timestamp with time zone!""",
    "hypertail.schema_version": "version integer! | applied_at timestamp with time zone! | checksum text",
    "hypertail.checkpoints": """
        file_key text! | agent_id text! | source text! | path text! | device bigint! | inode bigint! |
        fingerprint text! | fingerprint_len integer! | committed_offset bigint! | tail_hash text! |
        updated_at timestamp with time zone! | data_time timestamp with time zone""",
    "hypertail.dead_letters": """
        id bigint! | received_at timestamp with time zone! | agent_id text! | source text! | path text! |
        file_key text! | byte_offset bigint! | line_length bigint! | reason text! | field text | raw bytea""",
}

KEYS = {
    "observability.traces": {("p", 'PRIMARY KEY (trace_id, "timestamp")')},
    "observability.spans": {("p", 'PRIMARY KEY (span_id, "timestamp")')},
    "observability.chat_messages": {("p", 'PRIMARY KEY (id, "timestamp")')},
    "observability.document_events": {("p", 'PRIMARY KEY (id, "timestamp")')},
    "observability.logs": {("p", 'PRIMARY KEY (id, "timestamp")')},
    "observability.metrics": {("p", 'PRIMARY KEY (id, "timestamp")')},
    "observability.workflow_transitions": {("p", 'PRIMARY KEY (id, "timestamp")')},
    "observability.metrics_aggregates": {
        ("p", "PRIMARY KEY (id, bucket)"),
        ("u", "UNIQUE (bucket, metric_type, dimensions)"),
    },
    "observability.provider_sync_status": {
        ("p", "PRIMARY KEY (id)"),
        ("u", "UNIQUE (provider_name, entity_type, entity_id)"),
    },
    "hypertail.schema_version": {("p", "PRIMARY KEY (version)")},
    "hypertail.checkpoints": {("p", "PRIMARY KEY (file_key)")},
    "hypertail.dead_letters": {("p", "PRIMARY KEY (id)")},
}

# (table, indexed expression) pairs the seeds ask for; matched inside the index definitions.
INDEXED = [
    ("traces", "(trace_id)"), ("traces", "(user_id,"), ("traces", "(kb_id,"), ("traces", "(session_id,"),
    ("traces", "(operation_type,"), ("traces", "(status,"), ("traces", "WHERE ((status)::text = 'failed'"),
    ("spans", "(trace_id)"), ("spans", "(span_type,"), ("spans", "(model,"), ("spans", "(parent_span_id)"),
    ("spans", "WHERE ((status)::text = 'failed'"),
    ("chat_messages", "(conversation_id,"), ("chat_messages", "(user_id,"), ("chat_messages", "(kb_id,"),
    ("chat_messages", "(session_id,"), ("chat_messages", "(trace_id)"),
    ("document_events", "(document_id,"), ("document_events", "(kb_id,"), ("document_events", "(event_type,"),
    ("document_events", "(status,"), ("document_events", "(trace_id)"),
    ("document_events", "WHERE ((status)::text = 'failed'"),
    ("logs", "(trace_id)"), ("logs", "WHERE ((level)::text = ANY"),
    ("metrics_aggregates", "USING gin (dimensions)"), ("metrics_aggregates", "(metric_type, bucket DESC)"),
    ("metrics", "(name,"), ("metrics", "(trace_id)"), ("workflow_transitions", "(workflow_id,"),
    ("workflow_transitions", "(state,"), ("workflow_transitions", "(trace_id)"),
]
TIME_COLUMNS = {
    "traces": "timestamp", "spans": "timestamp", "chat_messages": "timestamp",
    "document_events": "timestamp", "metrics_aggregates": "bucket", "logs": "timestamp",
    "metrics": "timestamp", "workflow_transitions": "timestamp",
}


def parse_spec(text: str) -> dict[str, tuple[str, bool]]:
    out = {}
    for item in text.split("|"):
        name, typ = item.strip().split(" ", 1)
        out[name] = (typ.rstrip("!"), typ.endswith("!"))
    return out


async def test_tables_and_columns_match_spec(conn: asyncpg.Connection) -> None:
    cols = await catalog.columns(conn)
    assert set(cols) == set(SPEC)
    for table, spec in SPEC.items():
        assert cols[table] == parse_spec(spec), table


async def test_keys_and_no_foreign_keys(conn: asyncpg.Connection) -> None:
    cons = await catalog.constraints(conn)
    for table, expected in KEYS.items():
        assert cons.get(table, set()) == expected, table
    assert not any(kind == "f" for defs in cons.values() for kind, _ in defs)


async def test_seed_indexes_exist(conn: asyncpg.Connection) -> None:
    defs = list((await catalog.indexes(conn)).values())
    for table, fragment in INDEXED:
        hits = [d for d in defs if f"observability.{table} " in d and fragment in d]
        assert hits, f"no index on observability.{table} with {fragment!r}"
    assert any("UNIQUE INDEX" in d and "hypertail.dead_letters" in d and "(file_key, byte_offset)" in d
               for d in defs)


async def test_time_layout_for_the_mode(conn: asyncpg.Connection) -> None:
    """Plain PostgreSQL: a BRIN index on each time column. TimescaleDB: hypertables with the seeds'
    chunk intervals and compression/retention policies (checked wherever the fixture gets
    TimescaleDB: a container or HYPERTAIL_TEST_DSN)."""
    mode = await detect_mode(conn)
    if mode.timescaledb:
        await _check_timescaledb_layout(conn)
        return
    defs = list((await catalog.indexes(conn)).values())
    for table, col in TIME_COLUMNS.items():
        quoted = f'"{col}"' if col == "timestamp" else col
        assert any(f"observability.{table} USING brin ({quoted})" in d for d in defs), table


async def _check_timescaledb_layout(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = 'observability'"
    )
    got = {r["hypertable_name"]: (r["column_name"], r["time_interval"].days) for r in rows}
    assert got == {
        "traces": ("timestamp", 1), "spans": ("timestamp", 1), "document_events": ("timestamp", 1),
        "chat_messages": ("timestamp", 7), "metrics_aggregates": ("bucket", 7), "logs": ("timestamp", 1),
        "metrics": ("timestamp", 1), "workflow_transitions": ("timestamp", 7),
    }
    jobs = await conn.fetch(
        "SELECT proc_name, hypertable_name, config::text AS config FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = 'observability'"
    )
    compress = {j["hypertable_name"] for j in jobs if j["proc_name"] == "policy_compression"}
    retention = {j["hypertable_name"]: j["config"] for j in jobs if j["proc_name"] == "policy_retention"}
    assert compress == set(got) and set(retention) == set(got)
    assert "365 days" in retention["chat_messages"] and "90 days" in retention["spans"]
    assert "14 days" in retention["logs"]
    assert "90 days" in retention["metrics"] and "365 days" in retention["workflow_transitions"]


async def test_apply_twice_changes_nothing(conn: asyncpg.Connection) -> None:
    before = await catalog.snapshot(conn)
    mode = await apply_schema(conn, SchemaSettings())
    assert await catalog.snapshot(conn) == before
    assert mode.describe() in ("plain PostgreSQL", f"TimescaleDB {mode.timescaledb}")
    assert await installed_version(conn) == SCHEMA_VERSION


async def test_apply_over_older_version_adds_what_is_missing(conn: asyncpg.Connection) -> None:
    expected = await catalog.snapshot(conn)
    await conn.execute("DROP INDEX observability.idx_spans_model")
    await conn.execute("ALTER TABLE observability.spans DROP COLUMN result_count")
    await conn.execute("DROP TABLE hypertail.dead_letters")
    await apply_schema(conn, SchemaSettings())
    after = await catalog.snapshot(conn)
    assert after["indexes"] == expected["indexes"]
    assert set(after["columns"]["observability.spans"]) == set(expected["columns"]["observability.spans"])
    assert after["columns"]["hypertail.dead_letters"] == expected["columns"]["hypertail.dead_letters"]


async def test_migrate_reports_mode_and_layout(empty_dsn: str) -> None:
    from agent.config import load_settings
    from agent.sink.schema import migrate

    settings = load_settings(None)
    result = await migrate(settings.database, empty_dsn, settings.schema_)
    assert result.mode.describe().startswith(("plain PostgreSQL", "TimescaleDB "))
    assert [h.table for h in result.layout] == (
        ["chat_messages", "document_events", "logs", "metrics", "metrics_aggregates", "spans", "traces",
         "workflow_transitions"]
        if result.mode.timescaledb else []
    )
    c = await asyncpg.connect(empty_dsn)
    try:
        assert await installed_version(c) == SCHEMA_VERSION
    finally:
        await c.close()


async def test_print_grants_are_sufficient_and_minimal(conn: asyncpg.Connection, dsn: str) -> None:
    role = "ht_ingest_test"
    assert "TEMPORARY" not in grants_for(role)  # the writer stages nothing in temporary tables
    await conn.execute(f"DROP ROLE IF EXISTS {role}")
    await conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await conn.execute(grants_for(role))
        ingest = await asyncpg.connect(dsn, user=role)
        try:
            await ingest.execute(
                "INSERT INTO observability.document_events (id, \"timestamp\", event_type, status) "
                "VALUES (gen_random_uuid(), now(), 'upload', 'completed')"
            )
            await ingest.execute(
                "INSERT INTO observability.traces (trace_id, \"timestamp\", name) VALUES ('a', now(), 'n') "
                "ON CONFLICT (trace_id, \"timestamp\") DO UPDATE SET status = EXCLUDED.status"
            )
            await ingest.execute("INSERT INTO hypertail.dead_letters (reason) VALUES ('x')")
            for table, cols in (("metrics", "name, kind"), ("workflow_transitions", "workflow_id, state")):
                await ingest.execute(  # COPY, or the upsert after a duplicate key
                    f"INSERT INTO observability.{table} (id, \"timestamp\", {cols}) "
                    "VALUES (gen_random_uuid(), now(), 'a', 'b') ON CONFLICT DO NOTHING")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await ingest.execute(f"DELETE FROM observability.{table}")
            await _writer_commits_as(ingest)
            from agent.sink.prune import prune_checkpoints
            async with ingest.transaction():  # the agent forgets checkpoints of files long gone
                await ingest.execute("UPDATE hypertail.checkpoints SET updated_at = now() - interval '9 days'")
                keys = [r["file_key"] for r in await ingest.fetch("SELECT file_key FROM hypertail.checkpoints")]
                assert keys and await prune_checkpoints(ingest, "grants-test", keys, 7) == len(keys)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await ingest.execute("DELETE FROM observability.spans")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await ingest.execute("UPDATE observability.chat_messages SET content = ''")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await ingest.execute("DROP TABLE observability.spans")
        finally:
            await ingest.close()
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")


async def _writer_commits_as(ingest: asyncpg.Connection) -> None:
    """The writer's whole path with only the printed grants: COPY, the upsert after a duplicate,
    trace merges, a dead letter and checkpoints."""
    from agent.model import DeadLetter
    from tests.factories import FileWriter, span_row, trace_row
    from tests.integration.support import writer_on

    w, fw = await writer_on(ingest, "grants-test"), FileWriter()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    await w.commit([fw.item(span_row(1)), fw.item(trace_row(trace, status="in_progress"))])
    stats = await w.commit([fw.item(span_row(1)), fw.item(span_row(2)), fw.item(trace_row(trace, status="completed")),
                            fw.item(DeadLetter(reason="invalid JSON", field=None))])
    assert stats.rows == {"spans": 2, "traces": 1} and len(stats.dead_letters) == 1


async def test_the_agent_skips_an_unchanged_schema_but_migrate_repairs(conn: asyncpg.Connection) -> None:
    """At start the agent applies nothing when this schema.sql was applied in the same mode (no DDL
    locks while other agents ingest); ``migrate`` always applies, so it re-creates what was dropped."""
    await apply_schema(conn, SchemaSettings())  # records the fingerprint
    await conn.execute("DROP INDEX observability.idx_spans_model")
    await apply_schema(conn, SchemaSettings(), only_if_changed=True)
    assert "idx_spans_model" not in " ".join((await catalog.indexes(conn)).values())
    await apply_schema(conn, SchemaSettings())
    assert "idx_spans_model" in " ".join((await catalog.indexes(conn)).values())
    await conn.execute("UPDATE hypertail.schema_version SET checksum = 'an older schema.sql'")
    await conn.execute("DROP INDEX observability.idx_spans_model")
    await apply_schema(conn, SchemaSettings(), only_if_changed=True)  # changed: applied
    assert "idx_spans_model" in " ".join((await catalog.indexes(conn)).values())


async def test_an_agent_that_may_not_migrate_waits_for_the_current_version(conn: asyncpg.Connection,
                                                                            dsn: str) -> None:
    """A version-1 database (no observability.logs) with schema.apply_on_start = false: the agent
    stalls at startup with the reason instead of failing on its first batch of log lines."""
    from agent.config import Settings
    from agent.errors import StallError
    from agent.sink.sink import Sink

    await conn.execute("DELETE FROM hypertail.schema_version WHERE version >= 2")
    await conn.execute("INSERT INTO hypertail.schema_version (version) VALUES (1) ON CONFLICT DO NOTHING")
    sink = Sink(Settings.model_validate({"database": {"dsn": dsn}}), dsn)
    try:
        writer = await sink._connection()
        with pytest.raises(StallError, match=f"schema version 1 is older than {SCHEMA_VERSION}"):
            await sink._check_schema(writer.session.conn, apply=False)
    finally:
        await sink.close()
