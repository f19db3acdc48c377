"""The span fast path: per key layout, a compiled function that checks only what is present.

Lines written by one program come in a handful of key layouts ("shapes"): ``agent.emit`` always
writes a span's keys in the same order, and an application's own keys (bound context, a
``metadata`` object) come in a stable order too. For each new shape this module generates - with
``exec``, as :mod:`dataclasses` does for ``__init__`` - a function that unpacks ``obj.values()``
straight into local names and runs inline checks for exactly the fields the shape has. That
removes the per-field lookups, ``None`` tests and calls a generic loop pays on every line.

A compiled function decides nothing on its own: it returns the row only when every value is
already in its final form (lower-case ids, RFC 3339 start, text within limits, ``metadata`` that
``orjson.dumps`` writes as is), which is exactly when the generic path would return the same row;
otherwise it returns ``None`` and the generic path handles the line. Metadata is assembled in the
generic path's order (unknown keys as they appear, then a non-default ``event``, then the
entries of a ``metadata`` object, which win on a clash) and serialised with the same call; any
value that needs a repair (``\\u0000`` in the text, or a value ``orjson`` refuses) hands over.
Tests hold the two paths to equality.

Keys from the line never become identifiers or literals in the generated source: unknown keys
reach the function through its namespace (``K0``, ``K1``...).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from agent import contract as c
from agent import parse_fields as pf
from agent.model import Row

FastFn = Callable[[dict[str, Any]], Row | None]

_F: Final = c.FIELD_BY_NAME[c.SPAN]
_COLUMNS: Final = c.COLUMNS[c.TABLE_OF_KIND[c.SPAN]]
_IGNORED: Final = frozenset({c.WRITTEN_AT}) | c.BOOKKEEPING  # bookkeeping the row does not keep
_ALLOWED: Final = frozenset(_F) - {c.METADATA} | {c.STARTED_AT, c.EVENT} | _IGNORED
_REQUIRED: Final = frozenset({"span_id", "trace_id", "name", c.STARTED_AT})
_CONVERTED: Final = {"document_id": "to_uuid"}
_DEFAULTS: Final = {"span_type": repr(c.DEFAULT_SPAN_TYPE), "status": repr(c.COMPLETED)}
_ID_SIZES: Final = {"span_id": 16, "trace_id": 32, "parent_span_id": 16}
_SHAPES_MAX: Final = 256  # compiled shapes kept per discriminator key
_RETRY_AFTER: Final = 100_000  # lines of unseen shapes on a full table before it is cleared
_KEYS_MAX: Final = 96  # wider lines take the generic path (bounded source size and compile time)
# discriminator key -> shape -> compiled function (None: that shape never takes the fast path)
SHAPES: dict[str, dict[tuple[str, ...], FastFn | None]] = {}
_OVERFLOW: dict[str, int] = {}  # discriminator key -> unseen shapes met since its table filled
UNSEEN: Final[Any] = object()

_NAMESPACE: Final[dict[str, Any]] = {
    "Row": Row, "new": tuple.__new__, "SPANS": c.TABLE_OF_KIND[c.SPAN], "UTC": UTC,
    "fromiso": datetime.fromisoformat, "TMIN": pf.TIME_MIN, "TMAX": pf.TIME_MAX,
    "STATUSES": c.STATUSES[c.SPAN], "I4": c.INT4_MAX, "fromhex": bytes.fromhex, "F": _F,
    "to_numeric": pf.to_numeric, "to_float": pf.to_float, "to_uuid": pf.to_uuid,
    "Dec": Decimal, "Q6": Decimal(1).scaleb(-c.NUMERIC_SCALE), "CMAX": pf.NUMERIC_FLOAT_BOUND,
    "Z16": "0" * 16, "Z32": "0" * 32, "EMPTY": "{}", "SPAN": c.SPAN, "NO_WARNINGS": (),
    "dumps": orjson.dumps, "NUL_ESC": b"\\u0000", "EVENT": c.EVENT, "METADATA": c.METADATA,
}


def fast_span(obj: dict[str, Any], key: str) -> Row | None:
    """The row of a well-formed span line, or ``None`` to use the generic path."""
    shape = tuple(obj)
    fn = SHAPES.get(key, {}).get(shape, UNSEEN)
    if fn is UNSEEN:
        fn = compile_shape(shape, key)
    return None if fn is None else fn(obj)


def compile_shape(shape: tuple[str, ...], key: str) -> FastFn | None:
    """Generate, cache and return the function of one shape (``None``: shape never fast).

    A full table takes no new shapes (they use the generic path) until ``_RETRY_AFTER`` lines of
    unseen shapes have gone by; then it starts over. So lines whose keys never repeat cost one
    check each here, not a compilation each.
    """
    shapes = SHAPES.setdefault(key, {})
    if len(shapes) >= _SHAPES_MAX:
        missed = _OVERFLOW.get(key, 0) + 1
        if missed < _RETRY_AFTER:
            _OVERFLOW[key] = missed
            return None
        shapes.clear()
        _OVERFLOW[key] = 0
    fn: FastFn | None = None
    names = set(shape) - {key}
    if (key in shape and key not in _ALLOWED and key != c.METADATA and len(shape) <= _KEYS_MAX
            and names >= _REQUIRED):
        scope = dict(_NAMESPACE)
        unknown = [k for k in shape if k != key and k != c.METADATA and k not in _ALLOWED]
        scope.update({f"K{i}": k for i, k in enumerate(unknown)})
        exec(_source(shape, key, names, unknown), scope)  # the source holds only our own identifiers
        fn = scope["fast"]
    shapes[shape] = fn
    return fn


def _var(name: str) -> str:
    return "v_" + name


def _source(shape: tuple[str, ...], key: str, names: set[str], unknown: list[str]) -> str:
    """The Python source of the fast function for ``shape`` (keys used as identifiers are ours)."""
    slot = {k: f"u{i}" for i, k in enumerate(unknown)}
    targets = []
    for k in shape:
        if k == key or k in _IGNORED:
            targets.append("_")
        else:
            targets.append(slot.get(k) or _var(k))
    values = []
    for column in _COLUMNS:
        if column == c.TIME_COLUMN:
            values.append("ts")
        elif column == c.METADATA:
            values.append("meta")
        else:
            values.append(_var(column) if column in names else _DEFAULTS.get(column, "None"))
    merge = f"{_var('status')} == 'in_progress'" if "status" in names else "False"
    lines = [
        "def fast(obj):",
        f"    {', '.join(targets)}, = obj.values()",
        "    try:",
        f"        if not ({' and '.join(_checks(names))}):",
        "            return None",
        f"        ts = fromiso({_var(c.STARTED_AT)})",
        "        if ts.tzinfo is not UTC:",
        "            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)",
        "        if not TMIN < ts < TMAX:",
        "            return None",
        *_converts(names),
        *_metadata(names, unknown, slot),
        "    except Exception:",
        "        return None",
        f"    return new(Row, (SPANS, ({', '.join(values)},), {merge}, NO_WARNINGS))",
    ]
    return "\n".join(lines) + "\n"


def _converts(names: set[str]) -> list[str]:
    """Conversions that change the value (numeric, float, uuid); ``Invalid`` means ``None``."""
    out = [f"        {_var(n)} = {fn}({_var(n)}, F[{n!r}])" for n, fn in _CONVERTED.items() if n in names]
    if "cost_usd" in names:
        v = _var("cost_usd")
        # pf.to_numeric's own first branch, inlined (anything else calls it)
        out.append(f"        {v} = (Dec(repr({v})).quantize(Q6) if type({v}) is float and -CMAX <= {v} <= CMAX"
                   f" else to_numeric({v}, F['cost_usd']))")
    if "temperature" in names:
        v = _var("temperature")
        out.append(f"        if type({v}) is not float:")
        out.append(f"            {v} = to_float({v}, F['temperature'])")
    return out


def _metadata(names: set[str], unknown: list[str], slot: dict[str, str]) -> list[str]:
    """``meta``: the generic path's metadata text, built in its order, or hand the line over."""
    has_event, has_meta = c.EVENT in names, c.METADATA in names
    if not unknown and not has_meta:
        if not has_event:
            return ["        meta = EMPTY"]
        return [f"        if {_var(c.EVENT)} == SPAN or {_var(c.EVENT)} is None:",
                "            meta = EMPTY",
                "        else:",
                f"            out = dumps({{EVENT: {_var(c.EVENT)}}})",
                "            if NUL_ESC in out:",
                "                return None",
                "            meta = out.decode()"]
    items = ", ".join(f"K{i}: {slot[k]}" for i, k in enumerate(unknown))
    out = [f"        m = {{{items}}}"]
    if has_event:
        out += [f"        if {_var(c.EVENT)} != SPAN and {_var(c.EVENT)} is not None:",
                f"            m[EVENT] = {_var(c.EVENT)}"]
    if has_meta:
        v = _var(c.METADATA)
        out += [f"        if type({v}) is dict:",
                f"            m.update({v})",
                f"        elif {v} is not None:",
                f"            m[METADATA] = {v}"]
    out += ["        if m:",
            "            out = dumps(m)",
            "            if NUL_ESC in out:",
            "                return None",
            "            meta = out.decode()",
            "        else:",
            "            meta = EMPTY"]
    return out


def _checks(names: set[str]) -> list[str]:
    """Inline conditions under which the generic path would keep each value unchanged."""
    ids = [i for i in _ID_SIZES if i in names]
    out = [f"len({_var(i)}) == {_ID_SIZES[i]}" for i in ids]
    # all ids at once: exactly lower-case hex (fromhex raises on anything else, skips whitespace
    # but then its hex() differs; the except returns None)
    out.append(f"fromhex(cat := {' + '.join(_var(i) for i in ids)}).hex() == cat")
    out += [f"{_var(i)} != Z{_ID_SIZES[i]}" for i in ids]
    if "status" in names:
        out.append(f"{_var('status')} in STATUSES")
    for name in sorted(names & set(_F)):
        f = _F[name]
        v = _var(name)
        if f.type in (c.VARCHAR_T, c.TEXT_T) and name != "status":
            limit = "" if f.max_len is None else f" and len({v}) <= {f.max_len}"
            out.append(f"type({v}) is str{limit} and '\\x00' not in {v}")
        elif f.type == c.INT4_T:
            out.append(f"type({v}) is int and 0 <= {v} <= I4")
    out.append(_var("name"))  # not empty (its type and length are checked above)
    return out
