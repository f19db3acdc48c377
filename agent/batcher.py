"""Per-flush batches of parsed lines, and the in-memory merge of records that share a key.

Pure logic, no I/O. A batch keeps the parsed :class:`~agent.model.Item` s in arrival order: lines
of one file arrive in file order, so any prefix of a batch holds a prefix of every file's lines.
That is what lets the sink split a batch the database refused (to find poison rows) and still
commit each part with a correct checkpoint, and lets it drop the lines another agent already
committed. Rows for COPY are built from the items only when a batch is committed
(:func:`build_tables`), where records with the same key are merged in memory first, because one
statement must not touch a key twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from agent import contract
from agent.model import AppLog, DeadLetter, Item, Row

# Columns that merge with "the final state wins" rules instead of "newest non-null wins".
_STATUS = "status"
_METADATA = "metadata"
# Index of the key columns and of special columns in each table's value tuples.
KEY_INDEX: dict[str, tuple[int, ...]] = {
    t: tuple(contract.COLUMNS[t].index(c) for c in contract.KEY_COLUMNS[t]) for t in contract.COLUMNS
}
# The key of a row's values in one C call (every key has two columns, so itemgetter gives a tuple).
assert all(len(ix) == 2 for ix in KEY_INDEX.values())
_KEY_OF: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {t: itemgetter(*ix) for t, ix in KEY_INDEX.items()}
_STATUS_INDEX = {t: cols.index(_STATUS) for t, cols in contract.COLUMNS.items() if _STATUS in cols}
_METADATA_INDEX = {t: cols.index(_METADATA) for t, cols in contract.COLUMNS.items()}
# Per-item overhead counted against the memory budget, on top of the line's bytes: measured with
# tracemalloc at ~840 bytes for a parsed span line (Line, Item, Row and its values).
ITEM_OVERHEAD = 1024


@dataclass(slots=True)
class Batch:
    """Items in arrival order and the bytes they hold (for the memory budget).

    The offsets a batch commits are derived by the sink from its items, after it has dropped the
    lines another agent already committed, so the batch keeps no per-file marks of its own.
    ``tables`` is what the items write, built when the batch is taken: by the reader, while the
    committer (the pipe's one serial path, which the database waits on) is busy with the batch
    before; the sink uses it when it drops no line.
    """

    items: list[Item] = field(default_factory=list)
    nbytes: int = 0
    created: float = field(default_factory=time.monotonic)
    tables: Tables | None = None

    def extend(self, items: list[Item], data_bytes: int) -> None:
        """Append ``items``, whose lines hold ``data_bytes`` (the caller has that sum at hand)."""
        self.items += items
        self.nbytes += data_bytes + ITEM_OVERHEAD * len(items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When a batch is ready: enough rows, enough bytes, or old enough."""

    max_rows: int
    max_bytes: int
    max_age_s: float


class Batcher:
    """Collects items into the current batch and says when it should be flushed."""

    def __init__(self, policy: FlushPolicy) -> None:
        self.policy = policy
        self.current = Batch()

    def add(self, item: Item) -> None:
        self.extend([item], len(item.line.data))

    def extend(self, items: list[Item], data_bytes: int) -> None:
        """Add a run of items at once (the reader adds a block's worth); see :meth:`room`."""
        if not self.current.items:
            self.current.created = time.monotonic()
        self.current.extend(items, data_bytes)

    def room(self) -> int:
        """How many more items the current batch takes before ``max_rows`` (at least one)."""
        return max(self.policy.max_rows - len(self.current.items), 1)

    def full(self) -> bool:
        b = self.current
        return len(b.items) >= self.policy.max_rows or b.nbytes >= self.policy.max_bytes

    def due(self, now: float | None = None) -> bool:
        """True when the current batch is non-empty and full or older than the age limit."""
        if not self.current.items:
            return False
        now = time.monotonic() if now is None else now
        return self.full() or now - self.current.created >= self.policy.max_age_s

    def take(self) -> Batch:
        """The current batch, with its tables built; a new one becomes current."""
        batch, self.current = self.current, Batch()
        batch.tables = build_tables(batch.items)
        return batch


@dataclass(slots=True)
class Tables:
    """What one commit writes: plain rows to COPY, merged rows to upsert, and dead letters."""

    copy: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    merge: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    dead: list[tuple[Item, DeadLetter]] = field(default_factory=list)
    app_logs: int = 0
    warnings: int = 0
    rows: int = 0


def build_tables(items: Iterable[Item]) -> Tables:
    """Group items by table, merging rows with the same key (in arrival order)."""
    copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    merge: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    out = Tables()
    for item in items:
        result = item.result
        if isinstance(result, Row):
            _add_row(copy, merge, result)
            out.warnings += len(result.warnings)
        elif isinstance(result, DeadLetter):
            out.dead.append((item, result))
        elif isinstance(result, AppLog):
            out.app_logs += 1
    # A plain row whose key also has merge records joins the merge set (same key, one statement).
    for table, rows in copy.items():
        target = merge.get(table)
        if target:
            for key in [k for k in rows if k in target]:
                target[key] = merge_values(table, rows.pop(key), target[key])
    out.copy = {t: list(r.values()) for t, r in copy.items() if r}
    out.merge = {t: list(r.values()) for t, r in merge.items() if r}
    out.rows = sum(map(len, out.copy.values())) + sum(map(len, out.merge.values()))
    return out


def _add_row(
    copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
    merge: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
    row: Row,
) -> None:
    table, values = row.table, row.values
    key = _KEY_OF[table](values)
    bucket = (merge if row.merge else copy).setdefault(table, {})
    old = bucket.get(key)
    if old is None and row.merge:
        old = copy.get(table, {}).pop(key, None)
    bucket[key] = values if old is None else merge_values(table, old, values)


def merge_values(table: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
    """Merge two records of one key: the same rule as the sink's ``ON CONFLICT DO UPDATE``.

    Newest non-null value wins per column; a final status (completed/failed) is never replaced
    by ``in_progress``; metadata objects are combined (newest keys win). So a trace's start and
    end records give the same row in whichever order they arrive.
    """
    merged = [n if n is not None else o for o, n in zip(old, new, strict=True)]
    si = _STATUS_INDEX.get(table)
    if si is not None and new[si] == contract.IN_PROGRESS and old[si] is not None:
        merged[si] = old[si]
    mi = _METADATA_INDEX[table]
    merged[mi] = _merge_json_objects(old[mi], new[mi])
    return tuple(merged)


def _merge_json_objects(old: Any, new: Any) -> Any:
    """Combine two jsonb object texts the way ``old || new`` does."""
    if not old or old == "{}":
        return new
    if not new or new == "{}":
        return old
    import orjson

    a, b = orjson.loads(old), orjson.loads(new)
    if isinstance(a, dict) and isinstance(b, dict):
        return orjson.dumps({**a, **b}).decode()
    return new
