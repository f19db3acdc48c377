"""The typed decoder: the common record line decoded and checked in C (msgspec), with the contract exact.

For each record kind, a msgspec ``Struct`` generated from the contract (:mod:`agent.parse.fieldtypes`
gives each field's type) reads the line in one call: the discriminator picks the kind (a tagged
union), strings are checked against their lengths, counts against their ranges, statuses against
their values. What the decoder accepts is already its column's value, or nearly (lower-case hex,
Decimal, jsonb text: ``finish``); anything it refuses, and anything a ``finish`` refuses, goes to
the tolerant path (:func:`agent.parse.build.build_row`), which gives the same row or says what is
wrong. So the typed decoder never decides a line differently, it only decides the common ones
sooner; the property tests hold the two paths and the reference to each other.

Unknown keys: msgspec drops keys a Struct does not name, while the contract keeps them in
``metadata``. So the Structs forbid unknown keys, and a line with one goes to the tolerant path,
which tells this decoder the keys it met: each kind's Struct *learns* them (as ``Any`` fields whose
absence is ``UNSET``), up to :data:`MAX_LEARNED` per kind, so that the next line with the same app
keys (a request id, a tenant) is decoded here. The cap keeps lines with ever new keys from
growing the Structs without bound; past it they keep taking the tolerant path, and stay exact.

A line that escapes NUL (``\\u0000``) never comes here: text columns and jsonb cannot hold NUL,
and the tolerant path is where it is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from operator import is_not
from typing import Any, Final, Union

import msgspec
import orjson
from msgspec.structs import astuple

from agent import contract as c
from agent.model import Row
from agent.parse import fields as pf
from agent.parse.build import PLANS, FallbackId, KindPlan, metadata_of, time_column
from agent.parse.fieldtypes import Converter, decode_as, finisher

MAX_LEARNED: Final = 32  # app keys a kind's Struct learns, at most (per decoder: one per source)
_UNSET: Final = msgspec.UNSET
Finish = tuple[int, Converter, c.Field]  # (column position, finish, field)
_fromiso: Final = datetime.fromisoformat
_dumps: Final = orjson.dumps
_new: Final = tuple.__new__
# What hands a line to the tolerant path: the decoder's refusal (or nesting deeper than it follows),
# a finishing step's, a time fromisoformat does not read, metadata orjson.dumps does not write.
REFUSED: Final = (msgspec.MsgspecError, RecursionError, pf.Invalid, ValueError, OverflowError, TypeError)


def learnable(key: str) -> bool:
    """Whether msgspec can name a field ``key``: no quote, backslash or control character."""
    return '"' not in key and "\\" not in key and not any(ch < " " for ch in key)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a kind's decoded values sit in its Struct (``astuple`` order).

    The first ``len(columns)`` values are the columns in COPY order (the time column holding the raw
    ``timestamp``, the metadata column the app's raw ``metadata``); then the other keys of the kind
    (``event``, ``level``, ``logger``, ``started_at``), then the learned app keys.
    """

    plan: KindPlan
    finish: tuple[Finish, ...]  # columns whose decoded value needs a step
    started_at: int | None
    event_at: int
    learned: tuple[str, ...]
    names: frozenset[str]  # every key the Struct reads (learned ones too), the discriminator aside


RowOf = Callable[[Any, bytes, "FallbackId | None"], Row]


def row_of(layout: Layout) -> RowOf:
    """The function that turns a decoded Struct of ``layout`` into its row (a closure over the
    layout's positions, so the per-line code reads locals). It raises (:data:`REFUSED`) to hand the
    line to the tolerant path: a value a ``finish`` refuses, a time it does not read as it is,
    metadata ``orjson.dumps`` refuses."""
    plan = layout.plan
    n, table, kind, timed = len(plan.columns), plan.table, plan.kind, plan.timed
    time_at, meta_at, status_at, merging, defaults = plan.time_at, plan.meta_at, plan.status_at, plan.merging, \
        plan.defaults
    finishes, started_at, event_at, learned = layout.finish, layout.started_at, layout.event_at, layout.learned
    duration_at = plan.at.get("duration_ms") if timed else None
    learned_from = -len(learned)
    one_learned = learned[0] if len(learned) == 1 else None
    low, high = pf.TIME_MIN, pf.TIME_MAX

    def row(s: Any, data: bytes, fallback_id: FallbackId | None) -> Row:
        values = astuple(s)
        row = list(values[:n])
        for i, finish, field in finishes:
            v = row[i]
            if v is not None:
                row[i] = finish(v, field)
        if defaults is not None:
            defaults(row, data, fallback_id)
        # the time column: RFC 3339 text here, anything else as the tolerant path reads it
        started = None if started_at is None else values[started_at]
        at = row[time_at] if started is None else started
        if type(at) is str:
            ts = _fromiso(at)
            if ts.tzinfo is not UTC:
                ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
            if not low < ts < high:
                raise ValueError("out of range")
            if started is None and duration_at is not None and row[duration_at]:
                ts -= timedelta(milliseconds=row[duration_at])
                if ts <= low:
                    raise ValueError("out of range")
            row[time_at] = ts
        else:
            row[time_at] = time_column(timed, started, row[time_at], None if duration_at is None else row[duration_at])
        # metadata: the learned keys the line has, a non-default event, the app's metadata object
        if one_learned is not None:
            v = values[-1]
            rest = {} if v is _UNSET else {one_learned: v}
        elif learned:
            tail = values[learned_from:]
            rest = dict(zip(learned, tail, strict=False))  # as long: both are the learned keys
            if _UNSET in tail:
                rest = {k: v for k, v in rest.items() if v is not _UNSET}
        else:
            rest = {}
        event, explicit = values[event_at], row[meta_at]
        if (event is not None and event != kind) or explicit is not None:
            rest = metadata_of(kind, rest, event, explicit, None)
        row[meta_at] = _dumps(rest).decode() if rest else "{}"
        status = row[status_at] or "" if status_at is not None else ""
        merge = status in merging if merging is not None else c.merges(kind, status)
        return _new(Row, (table, tuple(row), merge, ()))

    return row


def learned_values(names: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """The learned keys a line had (the last ``len(names)`` values; absent ones are ``UNSET``)."""
    tail = values[len(values) - len(names):]
    return dict(compress(zip(names, tail, strict=True), map(is_not, tail, repeat(_UNSET))))


def _struct(plan: KindPlan, key: str, learned: tuple[str, ...]) -> type | None:
    """The kind's Struct under discriminator ``key``, or ``None`` if ``key`` is one of its names."""
    by_name = {f.name: f for f in c.FIELDS[plan.kind]}
    others = sorted((c.RECORD_KEYS[plan.kind] | c.BOOKKEEPING | {c.EVENT}) - set(plan.columns))
    names = [*plan.columns, *others, *learned]
    if key in names:
        return None
    specs: list[tuple[str, Any, Any]] = []
    for name in names:
        field = by_name.get(name)
        if field is None or name in (c.TIME_COLUMN, c.METADATA):
            default = _UNSET if name in learned else None
            specs.append((name, Any, default))
        else:
            t = decode_as(plan.kind, field)
            specs.append((name, t, msgspec.NODEFAULT) if field.required else (name, t, None))
    fields = [(f"f{i}", t, d) if d is not msgspec.NODEFAULT else (f"f{i}", t) for i, (_, t, d) in enumerate(specs)]
    started = names.index(c.STARTED_AT) if plan.timed else None
    finish = tuple((plan.at[f.name], fin, f) for f in c.FIELDS[plan.kind]
                   if f.name != c.METADATA and (fin := finisher(plan.kind, f)) is not None)
    layout = Layout(plan, finish, started, names.index(c.EVENT), learned, frozenset(names))
    return msgspec.defstruct(
        f"{plan.kind}_record", fields, rename={f"f{i}": name for i, name in enumerate(names)},
        tag_field=key, tag=plan.kind, forbid_unknown_fields=True, kw_only=True,
        gc=False,  # lives for one line and holds JSON values only: no cycle to collect
        namespace={"layout": layout, "row": staticmethod(row_of(layout))})


class RecordDecoder:
    """The typed decoder of one discriminator key (one per source): every record kind's Struct in
    one tagged union, and the app keys each has learned."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._structs: dict[str, type] = {}
        for kind, plan in PLANS.items():
            struct = _struct(plan, key, ())
            if struct is not None:
                self._structs[kind] = struct
        self.decode = self._decoder()

    def _decoder(self) -> Callable[[bytes], Any] | None:
        """Bytes -> a Struct of the line's kind, whose ``row(s, data, fallback_id)`` is its row
        (raising one of :data:`REFUSED` to hand the line to the tolerant path); ``None``: no kind
        can be decoded under this key."""
        if not self._structs:
            return None
        decoder: Any = msgspec.json.Decoder(Union[tuple(self._structs.values())])  # noqa: UP007
        return decoder.decode  # type: ignore[no-any-return]

    def learn(self, kind: str, keys: Iterable[str]) -> None:
        """Keys the tolerant path met in a ``kind`` record: unknown ones become fields, within the cap."""
        struct = self._structs.get(kind)
        if struct is None:
            return
        layout: Layout = struct.layout  # type: ignore[attr-defined]
        new = [k for k in keys if k not in layout.names and k != self.key and learnable(k)]
        if not new or len(layout.learned) + len(new) > MAX_LEARNED:
            return
        try:
            grown = _struct(layout.plan, self.key, layout.learned + tuple(new))
        except (TypeError, ValueError):  # a name msgspec refuses after all: keep the Struct as it is
            return
        if grown is not None:
            self._structs[kind] = grown
            self.decode = self._decoder()
