"""Batcher: flush policy, block tails and the in-memory merge rule (pure, no database)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import contract
from agent.batcher import ITEM_OVERHEAD, Batcher, FlushPolicy, build_tables, merge_in_order, merge_values
from agent.model import AppLog, DeadLetter, Rows
from tests.factories import FileWriter, file_ref, span_row, trace_row

TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def add(b: Batcher, fw: FileWriter, *seqs: int) -> None:
    b.add_block(*fw.block([span_row(s) for s in seqs]))


def test_flush_on_rows_bytes_and_age() -> None:
    b = Batcher(FlushPolicy(max_rows=3, max_bytes=10**9, max_age_s=0.2))
    fw = FileWriter()
    assert not b.due()
    add(b, fw, 0)
    created = b.current.created
    assert not b.due(now=created + 0.1)
    assert b.due(now=created + 0.21)
    add(b, fw, 1, 2)
    assert b.full()
    batch = b.take()
    assert len(batch) == 3 and not b.current.items
    small = Batcher(FlushPolicy(max_rows=10**6, max_bytes=2000, max_age_s=9))
    add(small, fw, 3)
    assert not small.full()
    add(small, fw, 4)
    assert small.full()


def test_a_block_fits_only_within_max_rows_and_its_tail_is_kept() -> None:
    b = Batcher(FlushPolicy(max_rows=4, max_bytes=10**9, max_age_s=9))
    fw, other = FileWriter(), FileWriter(file_ref("other.log", ino=2))
    assert b.fits(10)  # an empty batch takes any block
    add(b, fw, 0, 1)
    add(b, other, 2)
    assert b.fits(1) and not b.fits(2)
    add(b, fw, 3)
    assert b.current.tails == {**fw.tails(), **other.tails()}  # each file's last block's end and tail


def test_build_tables_groups_plain_rows_in_order_and_merges_merge_records() -> None:
    """Plain rows keep their order and repeats (the database keeps the first, or merges spans:
    see agent.batcher's rule); records that merge are merged in memory."""
    fw = FileWriter()
    items = [
        fw.item(span_row(1)), fw.item(span_row(1, name="again")), fw.item(span_row(2)),
        fw.item(DeadLetter("bad", None)), fw.item(AppLog("info")),
        fw.item(trace_row(TID, status="in_progress", operation_type="chat")),
        fw.item(trace_row(TID, status="completed", duration_ms=5)),
    ]
    t = build_tables(items)
    names = contract.COLUMNS["spans"].index("name")
    assert [r[names] for r in t.copy["spans"]] == ["op-1", "again", "op-2"]
    assert len(t.merge["traces"]) == 1
    merged = dict(zip(contract.COLUMNS["traces"], t.merge["traces"][0], strict=True))
    assert (merged["status"], merged["operation_type"], merged["duration_ms"]) == ("completed", "chat", 5)
    assert len(t.dead) == 1 and t.app_logs == 1 and t.rows == 4


def test_the_rows_of_one_line_take_its_place_and_its_dead_letter_is_the_lines() -> None:
    """An OTLP line (Rows): its rows join the tables in the line's order, between the lines around
    it, a root's trace row merges with the others of its key, and what it could not store is the
    line's dead letter; the log records its source only counts are counted."""
    fw = FileWriter()
    dead = DeadLetter("spans[3]: spanId: expected 16 hex digits", "spanId")
    otlp = Rows((span_row(2), trace_row(TID, status="completed", duration_ms=9), span_row(3)), dead, 4)
    items = [fw.item(span_row(1)), fw.item(trace_row(TID, status="in_progress", operation_type="chat")),
             fw.item(otlp), fw.item(span_row(4)), fw.item(Rows((), None, 2))]
    t = build_tables(items)
    names = contract.COLUMNS["spans"].index("name")
    assert [r[names] for r in t.copy["spans"]] == ["op-1", "op-2", "op-3", "op-4"]
    [merged] = t.merge["traces"]
    row = dict(zip(contract.COLUMNS["traces"], merged, strict=True))
    assert (row["status"], row["operation_type"], row["duration_ms"]) == ("completed", "chat", 9)
    assert t.dead == [(items[2], dead)]
    assert (t.app_logs, t.rows) == (6, 5)


def test_a_line_of_many_rows_counts_each_against_the_memory_budget() -> None:
    b = Batcher(FlushPolicy(max_rows=10, max_bytes=10**9, max_age_s=9))
    fw = FileWriter()
    b.add_block(*fw.block([span_row(1), Rows(tuple(span_row(i) for i in range(2, 52)))]))
    assert b.current.nbytes == 2 * 99 + ITEM_OVERHEAD * (2 + 50)


@pytest.mark.parametrize("end_first", [True, False])
def test_plain_row_joins_merge_set_for_same_key_in_arrival_order(end_first: bool) -> None:
    fw = FileWriter()
    start = span_row(7, status="in_progress", duration_ms=None, model="start-model")
    end = span_row(7, status="completed", duration_ms=70, model="end-model")
    other = span_row(8)
    t = build_tables([fw.item(r) for r in ([end, other, start] if end_first else [start, other, end])])
    assert len(t.copy["spans"]) == 1  # span 8 alone
    row = dict(zip(contract.COLUMNS["spans"], t.merge["spans"][0], strict=True))
    # the final status whatever the order; other columns: the later line's non-null value wins
    assert (row["status"], row["duration_ms"]) == ("completed", 70)
    assert row["model"] == ("start-model" if end_first else "end-model")


def test_merge_in_order_keeps_one_row_per_key() -> None:
    rows = [span_row(1).values, span_row(2).values, span_row(1, name="later").values]
    merged = merge_in_order("spans", rows)
    names = contract.COLUMNS["spans"].index("name")
    assert [r[names] for r in merged] == ["later", "op-2"]


statuses = st.sampled_from(["in_progress", "completed", "failed"])


@given(a=statuses, b=statuses, ma=st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=3),
       mb=st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=3))
def test_merge_rule_is_order_independent_for_start_and_end(a: str, b: str, ma: dict, mb: dict) -> None:
    """A final status always wins over in_progress, in whichever order records arrive."""
    ra = trace_row(TID, status=a, meta=ma).values
    rb = trace_row(TID, status=b, meta=mb).values
    status_i = contract.COLUMNS["traces"].index("status")
    meta_i = contract.COLUMNS["traces"].index("metadata")
    ab, ba = merge_values("traces", ra, rb), merge_values("traces", rb, ra)
    finals = {a, b} - {"in_progress"}
    if len(finals) == 1:
        assert ab[status_i] == ba[status_i] == finals.pop()
    assert orjson.loads(ab[meta_i]) == {**ma, **mb}


def test_dead_letter_metric_labels_stay_low_cardinality() -> None:
    from agent.runner import reason_class

    assert reason_class(DeadLetter("trace_id: expected 32 hex digits, got 'zz'", "trace_id")) == "field:trace_id"
    assert reason_class(DeadLetter("invalid UTF-8 at byte 17", None)) == "invalid UTF-8 at byte N"
    assert reason_class(DeadLetter("invalid JSON: unexpected character: line 1 column 9", None)) == "invalid JSON"
    assert reason_class(DeadLetter("database refused the row: 22P02 ...", None)) == "database refused the row"
