"""The row of a record, as the contract defines it: the tolerant path, and the steps both paths share.

:func:`build_row` takes what ``orjson.loads`` gave and applies the contract field by field, in plain
Python: it accepts every form the contract allows (upper-case hex, epoch times, numbers as text,
NUL, over-long text to cut) and says what is wrong with the rest. The typed decoder
(:mod:`agent.parse.typed`) handles the common lines faster and hands everything else here; both
end with the same steps, defined once below: the defaults (:func:`apply_defaults`), the time
column (:func:`time_column`) and the metadata (:func:`metadata_of`). A :class:`KindPlan` is what
both read about a kind, derived from :mod:`agent.contract` alone, so a new record kind needs no
code here.

The semantics, per kind, in this order (the first failure names its field):
1. ``started_at`` (kinds that have one), ``timestamp`` and ``metadata`` are taken out of the record;
2. each field in contract order: missing or invalid required fields make a dead letter; an invalid
   optional one keeps its raw value under ``metadata["_invalid"]`` and a warning (an invalid
   app-given key column, such as a chat message's ``id``, is a dead letter: it is the row's key);
3. defaults: a span's status and type, a trace's status, a missing id (the caller's fallback);
4. the time column: the start of a trace or span (or ``timestamp`` minus ``duration_ms``), else
   ``timestamp``;
5. ``metadata``: the unknown keys, then a non-default ``event``, then the entries of the app's
   ``metadata`` object (which win on a clash), then ``_invalid``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.fieldtypes import Converter, converter

FallbackId = Callable[[], str]
Defaults = Callable[[list[Any], bytes, "FallbackId | None"], None]

_STARTED_F: Final = c.Field(c.STARTED_AT, c.TIME_T, required=True)
_WRITTEN_F: Final = c.Field(c.WRITTEN_AT, c.TIME_T, required=True)
_DROPPED: Final = tuple(sorted(c.BOOKKEEPING - {c.WRITTEN_AT}))  # structlog's, never kept in metadata


@dataclass(frozen=True, slots=True)
class Step:
    """One field of a kind: where its value goes and how the tolerant path converts it."""

    field: c.Field
    at: int  # its column's position
    convert: Converter
    fatal: bool  # invalid means a dead letter (required, or part of the row's key)


@dataclass(frozen=True, slots=True)
class KindPlan:
    """What both paths need to know about a record kind, derived from the contract."""

    kind: str
    table: str
    columns: tuple[str, ...]
    steps: tuple[Step, ...]  # the kind's fields but metadata, in contract order
    timed: bool  # the time column is the record's start (``started_at``), not when it was written
    time_at: int
    meta_at: int
    at: dict[str, int]  # column -> position
    defaults: Defaults | None  # what fills absent values (apply_defaults)
    status_at: int | None
    merging: frozenset[str] | None  # statuses whose rows merge ("": none), from contract.merges; None:
    # the kind's status is not a closed set, so contract.merges decides per row

    def get(self, row: list[Any], column: str) -> Any:
        """``row``'s value of ``column``, or ``None`` when the kind has no such column."""
        i = self.at.get(column)
        return None if i is None else row[i]


def plan_of(kind: str) -> KindPlan:
    table = c.TABLE_OF_KIND[kind]
    columns = c.COLUMNS[table]
    at = {col: i for i, col in enumerate(columns)}
    keys = set(c.KEY_COLUMNS[table])
    steps = tuple(Step(f, at[f.name], converter(kind, f), f.required or f.name in keys)
                  for f in c.FIELDS[kind] if f.name != c.METADATA)
    closed = kind in c.STATUSES or "status" not in at
    merging = frozenset(s for s in {"", *c.STATUSES.get(kind, ())} if c.merges(kind, s)) if closed else None
    return KindPlan(kind, table, columns, steps, c.STARTED_AT in c.RECORD_KEYS[kind], at[c.TIME_COLUMN],
                    at[c.METADATA], at, _defaults(kind, at), at.get("status"), merging)


def build_row(plan: KindPlan, obj: dict[str, Any], data: bytes, fallback_id: FallbackId | None) -> Row:
    """The row of one decoded record (``obj`` without its discriminator; it is consumed).

    Raises :class:`~agent.parse.fields.Invalid` for a dead letter.
    """
    pop = obj.pop
    started = pop(c.STARTED_AT, None) if plan.timed else None
    written = pop(c.WRITTEN_AT, None)
    explicit = pop(c.METADATA, None)
    row: list[Any] = [None] * len(plan.columns)
    invalid: dict[str, Any] | None = None
    for step in plan.steps:
        field = step.field
        value = pop(field.name, None)
        if value is None:
            if field.required:
                raise pf.Invalid(field.name, "a value", None, missing=True)
            continue
        try:
            row[step.at] = step.convert(value, field)
        except pf.Invalid:
            if step.fatal:
                raise
            if invalid is None:
                invalid = {}
            invalid[field.name] = value
    apply_defaults(plan, row, data, fallback_id)
    row[plan.time_at] = time_column(plan.timed, started, written, plan.get(row, "duration_ms"))
    event = pop(c.EVENT, None)
    for key in _DROPPED:
        pop(key, None)
    meta = metadata_of(plan.kind, obj, event, explicit, invalid)
    row[plan.meta_at] = pf.json_text(meta) if meta else "{}"
    return Row(plan.table, tuple(row), merges(plan, row), tuple(invalid) if invalid else ())


def merges(plan: KindPlan, row: list[Any]) -> bool:
    """:func:`contract.merges` of the row's kind and status (precomputed per kind)."""
    i = plan.status_at
    status = row[i] or "" if i is not None else ""
    return c.merges(plan.kind, status) if plan.merging is None else status in plan.merging


# --- the steps both paths share -------------------------------------------------------------------

def apply_defaults(plan: KindPlan, row: list[Any], data: bytes, fallback_id: FallbackId | None) -> None:
    """Fill what the contract gives absent values: statuses, a span's type, a derived id."""
    if plan.defaults is not None:
        plan.defaults(row, data, fallback_id)


def _defaults(kind: str, at: dict[str, int]) -> Defaults | None:
    """The kind's defaults, bound to its column positions (see agent.contract on statuses); a kind
    with an optional uuid key column (a chat message's ``id``) derives it when it is absent."""
    if kind == c.TRACE:
        status, ended, duration = at["status"], at["ended_at"], at["duration_ms"]

        def trace(row: list[Any], data: bytes, fallback_id: FallbackId | None) -> None:
            if row[status] is None:
                row[status] = c.COMPLETED if row[ended] is not None or row[duration] is not None else c.IN_PROGRESS
        return trace
    if kind == c.SPAN:
        status, span_type = at["status"], at["span_type"]

        def span(row: list[Any], data: bytes, fallback_id: FallbackId | None) -> None:
            if row[status] is None:
                row[status] = c.COMPLETED
            if row[span_type] is None:
                row[span_type] = c.DEFAULT_SPAN_TYPE
        return span
    keys = c.KEY_COLUMNS[c.TABLE_OF_KIND[kind]]
    derived = [f.name for f in c.FIELDS[kind] if f.type == c.UUID_T and not f.required and f.name in keys]
    if not derived:
        return None
    i = at[derived[0]]

    def derive_id(row: list[Any], data: bytes, fallback_id: FallbackId | None) -> None:
        if row[i] is None:
            row[i] = fallback(data, fallback_id)
    return derive_id


def fallback(data: bytes, fallback_id: FallbackId | None) -> str:
    """The caller's deterministic id, or a uuid5 of the line if there is no caller's (or it fails)."""
    if fallback_id is not None:
        try:
            value = fallback_id()
            if type(value) is str and pf.is_canonical_uuid(value):
                return value
        except Exception:  # a broken callback must not lose the line
            pass
    return pf.line_uuid(data)


def time_column(timed: bool, started: Any, written: Any, duration_ms: int | None) -> datetime:
    """The row's time: a trace's or span's start; else when the line was written."""
    if timed and started is not None:
        return pf.to_time(started, _STARTED_F)
    if written is None:
        name = c.STARTED_AT if timed else c.WRITTEN_AT
        raise pf.Invalid(name, "a time (started_at or timestamp)" if timed else "a time", None, missing=True)
    at = pf.to_time(written, _WRITTEN_F)
    if timed and duration_ms:
        try:
            at -= timedelta(milliseconds=duration_ms)
        except OverflowError:
            at = pf.TIME_MIN
        if at <= pf.TIME_MIN:
            raise pf.Invalid(c.WRITTEN_AT, "a time later than duration_ms after year 1", written)
    return at


def metadata_of(kind: str, rest: dict[str, Any], event: Any, explicit: Any,
                invalid: dict[str, Any] | None) -> dict[str, Any]:
    """``rest`` (the unknown keys) with a non-default ``event``, the app's ``metadata`` (whose
    entries win) and the raw values of invalid fields added."""
    if event is not None and event != kind:
        rest[c.EVENT] = event
    if explicit is not None:
        if type(explicit) is dict:
            rest.update(explicit)
        else:
            rest[c.METADATA] = explicit
    if invalid:
        rest[c.INVALID_MARKER] = invalid
    return rest


PLANS: Final[dict[str, KindPlan]] = {kind: plan_of(kind) for kind in c.RECORD_KINDS}
