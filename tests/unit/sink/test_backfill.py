"""The backfill decision (agent.sink.backfill.plan_batch): which chunks to decompress, which policy
to postpone, and which rows count as a backfill. Pure logic, no server."""

from __future__ import annotations

import datetime as dt

from agent.batcher import build_tables
from agent.model import DeadLetter
from agent.sink.backfill import DECOMPRESS_RATIO, Chunk, plan_batch, row_time, row_times
from tests.factories import FileWriter, span_row, trace_row

DAY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def chunk(start: dt.datetime, *, compressed: bool = True, rows: int | None = 10_000, batches: int | None = 10_000,
          policy: bool = True, due: bool = False, table: str = "spans") -> Chunk:
    return Chunk(table, f"_timescaledb_internal._hyper_{start.day}", start, start + dt.timedelta(days=1),
                 compressed, rows, batches, policy, due)


def at(*hours: float) -> list[dt.datetime]:
    return [DAY + h * HOUR for h in hours]


def test_nothing_mapped_or_nothing_old_plans_nothing() -> None:
    assert plan_batch({"spans": at(1, 2)}, {}).backfill_rows == 0
    mapped = {"spans": [chunk(DAY)]}
    newer = plan_batch({"spans": at(25, 30)}, mapped)  # past the newest compressed chunk's end
    assert (newer.decompress, newer.postpone, newer.rows) == ([], set(), {})
    assert plan_batch({"traces": at(1)}, mapped).rows == {}  # another table's chunk


def test_a_backlog_decompresses_and_a_late_line_goes_through_the_key_check() -> None:
    big = chunk(DAY, rows=10_000, batches=10_000)
    backlog = plan_batch({"spans": at(*[i / 100 for i in range(DECOMPRESS_RATIO)])}, {"spans": [big]})
    assert backlog.decompress == [big] and backlog.rows == {"spans": DECOMPRESS_RATIO}
    late = plan_batch({"spans": at(1, 2)}, {"spans": [big]})
    assert late.decompress == [] and late.rows == {"spans": 2}  # a backfill all the same
    # Few batches (a good segment-by): the key check stays cheaper for far more rows.
    few = chunk(DAY, rows=10_000, batches=10)
    assert plan_batch({"spans": at(*[i / 100 for i in range(1000)])}, {"spans": [few]}).decompress == []


def test_unknown_sizes_decompress_and_no_policy_never_does() -> None:
    assert plan_batch({"spans": at(1)}, {"spans": [chunk(DAY, rows=None, batches=None)]}).decompress != []
    orphan = chunk(DAY, policy=False)
    assert plan_batch({"spans": at(*range(20))}, {"spans": [orphan]}, force=True).decompress == []


def test_force_decompresses_whatever_the_cost() -> None:
    big = chunk(DAY, rows=10_000_000, batches=10)
    assert plan_batch({"spans": at(1)}, {"spans": [big]}).decompress == []
    assert plan_batch({"spans": at(1)}, {"spans": [big]}, force=True).decompress == [big]


def test_rows_are_counted_per_chunk_start_inclusive_end_exclusive() -> None:
    first, second = chunk(DAY, rows=1, batches=10**6), chunk(DAY + 24 * HOUR, rows=10**9, batches=1)
    plan = plan_batch({"spans": [DAY, DAY + 23.9 * HOUR, DAY + 24 * HOUR, DAY + 48 * HOUR]},
                      {"spans": [first, second]})
    assert plan.rows == {"spans": 3} and plan.decompress == [first] and plan.oldest == DAY


def test_the_policy_is_postponed_only_for_what_the_agent_fills_at_full_speed() -> None:
    due_plain = chunk(DAY, compressed=False, due=True)
    due_compressed_big = chunk(DAY + 24 * HOUR, due=True, rows=10**9, batches=1)
    assert plan_batch({"spans": at(1)}, {"spans": [due_plain]}).postpone == {"spans"}
    assert plan_batch({"spans": at(25)}, {"spans": [due_compressed_big]}).postpone == set()  # key check
    due_compressed = chunk(DAY, due=True)
    assert plan_batch({"spans": at(1)}, {"spans": [due_compressed]}, force=True).postpone == {"spans"}
    assert plan_batch({"spans": at(1)}, {"spans": [chunk(DAY, compressed=False)]}).postpone == set()


def test_row_times_agree_between_items_and_built_tables() -> None:
    fw = FileWriter()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    items = [fw.item(span_row(i)) for i in range(3)] + [
        fw.item(trace_row(trace, status="in_progress")), fw.item(trace_row(trace, status="completed")),
        fw.item(DeadLetter(reason="bad", field=None))]
    from_items = row_times(items, None)
    from_tables = row_times(items, build_tables(items))
    assert sorted(from_tables["spans"]) == sorted(from_items["spans"]) and len(from_tables["spans"]) == 3
    assert len(from_tables["traces"]) == 1 and len(from_items["traces"]) == 2  # merged in the tables
    assert row_time(items[0]) == span_row(0).values[1] and row_time(items[-1]) is None
