"""The span fast path: per key layout, a compiled function that checks only what is present.

Lines written by one program come in a handful of key layouts ("shapes"): ``agent.emit`` always
writes a span's keys in the same order. For each new shape this module generates - with
``exec``, as :mod:`dataclasses` does for ``__init__`` - a function that unpacks ``obj.values()``
straight into local names and runs inline checks for exactly the fields the shape has. That
removes the per-field lookups, ``None`` tests and calls a generic loop pays on every line.

A compiled function decides nothing on its own: it returns the row only when every value is
already in its final form (lower-case ids, RFC 3339 start, text within limits, no unknown keys),
which is exactly when the generic path would return the same row; otherwise it returns ``None``
and the generic path handles the line. A test holds the two paths to equality.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from agent import contract as c
from agent import parse_fields as pf
from agent.model import Row

FastFn = Callable[[dict[str, Any]], Row | None]

_F: Final = c.FIELD_BY_NAME[c.SPAN]
_COLUMNS: Final = c.COLUMNS[c.TABLE_OF_KIND[c.SPAN]]
_IGNORED: Final = frozenset({c.WRITTEN_AT, "level", "logger"})  # bookkeeping the row does not keep
_ALLOWED: Final = frozenset(_F) - {c.METADATA} | {c.STARTED_AT, c.EVENT} | _IGNORED
_CONVERTED: Final = {"cost_usd": "to_numeric", "temperature": "to_float", "document_id": "to_uuid"}
_DEFAULTS: Final = {"span_type": repr(c.DEFAULT_SPAN_TYPE), "status": repr(c.COMPLETED)}
_SHAPES_MAX: Final = 256
# discriminator key -> shape -> compiled function (None: that shape never takes the fast path)
SHAPES: dict[str, dict[tuple[str, ...], FastFn | None]] = {}
UNSEEN: Final[Any] = object()

_NAMESPACE: Final[dict[str, Any]] = {
    "Row": Row, "SPANS": c.TABLE_OF_KIND[c.SPAN], "UTC": UTC, "fromiso": datetime.fromisoformat,
    "TMIN": pf.TIME_MIN, "TMAX": pf.TIME_MAX, "STATUSES": c.STATUSES[c.SPAN], "I4": c.INT4_MAX,
    "fromhex": bytes.fromhex, "F": _F, "to_numeric": pf.to_numeric, "to_float": pf.to_float,
    "to_uuid": pf.to_uuid, "Z16": "0" * 16, "Z32": "0" * 32, "EMPTY": "{}", "SPAN": c.SPAN,
}


def fast_span(obj: dict[str, Any], key: str) -> Row | None:
    """The row of a plain, well-formed span line, or ``None`` to use the generic path."""
    shape = tuple(obj)
    fn = SHAPES.get(key, {}).get(shape, UNSEEN)
    if fn is UNSEEN:
        fn = compile_shape(shape, key)
    return None if fn is None else fn(obj)


def compile_shape(shape: tuple[str, ...], key: str) -> FastFn | None:
    """Generate, cache and return the function of one shape (``None``: shape never fast)."""
    shapes = SHAPES.setdefault(key, {})
    if len(shapes) >= _SHAPES_MAX:
        shapes.clear()
    fn: FastFn | None = None
    names = set(shape) - {key}
    if (key in shape and key not in _ALLOWED and names <= _ALLOWED
            and {"span_id", "trace_id", "name", c.STARTED_AT} <= names):
        scope = dict(_NAMESPACE)
        exec(_source(shape, names), scope)  # the source holds only our own identifiers
        fn = scope["fast"]
    shapes[shape] = fn
    return fn


def _var(name: str) -> str:
    return "v_" + name


def _source(shape: tuple[str, ...], names: set[str]) -> str:
    """The Python source of the fast function for ``shape`` (keys used as identifiers are ours)."""
    targets = ", ".join(_var(k) if k in names and k not in _IGNORED else "_" for k in shape)
    checks = _checks(names)
    converts = [f"        {_var(n)} = {fn}({_var(n)}, F[{n!r}])" for n, fn in _CONVERTED.items() if n in names]
    values = []
    for column in _COLUMNS:
        if column == c.TIME_COLUMN:
            values.append("ts")
        elif column == c.METADATA:
            values.append("EMPTY")
        else:
            values.append(_var(column) if column in names else _DEFAULTS.get(column, "None"))
    merge = f"{_var('status')} == 'in_progress'" if "status" in names else "False"
    lines = [
        "def fast(obj):",
        f"    {targets}, = obj.values()",
        "    try:",
        f"        if not ({' and '.join(checks)}):",
        "            return None",
        f"        ts = fromiso({_var(c.STARTED_AT)})",
        "        if ts.tzinfo is not UTC:",
        "            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)",
        "        if not TMIN < ts < TMAX:",
        "            return None",
        *converts,
        "    except Exception:",
        "        return None",
        f"    return Row(SPANS, ({', '.join(values)},), {merge})",
    ]
    return "\n".join(lines) + "\n"


def _checks(names: set[str]) -> list[str]:
    """Inline conditions under which the generic path would keep each value unchanged."""
    ids = ["span_id", "trace_id"] + (["parent_span_id"] if "parent_span_id" in names else [])
    sizes = {"span_id": 16, "trace_id": 32, "parent_span_id": 16}
    out = [f"len({_var(i)}) == {sizes[i]}" for i in ids]
    # all ids at once: lower-case hex (fromhex raises on anything else; the except returns None)
    out.append(f"len(fromhex(cat := {' + '.join(_var(i) for i in ids)})) == {sum(sizes[i] for i in ids) // 2}")
    out.append("(cat.islower() or cat.isdigit())")
    out += [f"{_var(i)} != Z{sizes[i]}" for i in ids]
    if c.EVENT in names:
        out.append(f"{_var(c.EVENT)} == SPAN")
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
