"""The SQL a commit runs: lock checkpoints, upsert rows, insert dead letters, move checkpoints.

Every statement takes its values as parameters (one array per column for the many-row ones) and
none depends on session state, so they run unchanged behind a transaction pooler (see
:mod:`agent.sink.writer` for the order they run in).
"""

from __future__ import annotations

from agent import contract

MERGE_TABLES = ("traces", "spans")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert_sql(table: str, types: dict[str, str]) -> str:
    """``INSERT ... SELECT FROM unnest($1::t1[], ...) ON CONFLICT``: merge for traces/spans,
    keep-first otherwise. ``types`` are the columns' SQL types as the catalog spells them."""
    cols = contract.COLUMNS[table]
    keys = contract.KEY_COLUMNS[table]
    collist = ", ".join(_q(c) for c in cols)
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(cols, 1))
    if table in MERGE_TABLES:
        sets = [_merge_set(c) for c in cols if c not in keys]
        action = "DO UPDATE SET " + ", ".join(sets)
    else:
        action = "DO NOTHING"
    return (
        f"INSERT INTO {contract.SCHEMA}.{table} AS t ({collist}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(_q(k) for k in keys)}) {action}"
    )


COLUMN_TYPES_SQL = """
SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
"""


def _merge_set(col: str) -> str:
    c = _q(col)
    if col == "status":
        return f"{c} = CASE WHEN EXCLUDED.{c} = '{contract.IN_PROGRESS}' THEN t.{c} ELSE EXCLUDED.{c} END"
    if col == "metadata":
        return f"{c} = t.{c} || EXCLUDED.{c}"
    return f"{c} = COALESCE(EXCLUDED.{c}, t.{c})"


# Lock the batch's checkpoint rows (creating missing ones) and read their committed offsets, in
# one round trip. A row another agent inserts concurrently is not visible to this statement's
# snapshot; the compare-and-set below catches that case.
LOCK_SQL = """
WITH locked AS (
    SELECT file_key, committed_offset FROM hypertail.checkpoints
    WHERE file_key = ANY($1::text[]) ORDER BY file_key FOR UPDATE
), created AS (
    INSERT INTO hypertail.checkpoints (file_key, agent_id, source, path, device, inode, fingerprint,
                                       fingerprint_len, committed_offset, tail_hash)
    SELECT k, $2, '', '', 0, 0, '', 0, 0, '' FROM unnest($1::text[]) AS k
    ON CONFLICT (file_key) DO NOTHING
)
SELECT file_key, committed_offset FROM locked
"""
# Compare-and-set: a checkpoint moves only from the offset this transaction read. `data_time` is
# the time column of the file's last row in the batch (kept when the batch made no row of the file),
# which `hypertail status` compares with the compression age (issue 20).
CHECKPOINT_SQL = """
UPDATE hypertail.checkpoints AS c
SET agent_id = $2, source = u.source, path = u.path, device = u.device, inode = u.inode,
    fingerprint = u.fp, fingerprint_len = u.fpl, committed_offset = u.off, tail_hash = u.th, updated_at = now(),
    data_time = coalesce(u.dt, c.data_time)
FROM unnest($1::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::int[],
            $9::bigint[], $10::text[], $11::bigint[], $12::timestamptz[])
     AS u(key, source, path, device, inode, fp, fpl, off, th, expected, dt)
WHERE c.file_key = u.key AND c.committed_offset = u.expected
RETURNING c.file_key
"""
DEAD_LETTER_SQL = """
INSERT INTO hypertail.dead_letters (agent_id, source, path, file_key, byte_offset, line_length, reason, field, raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (file_key, byte_offset) DO NOTHING
"""
