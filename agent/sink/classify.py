"""Classify driver errors once, by SQLSTATE and by client-side cause.

Each class says what the caller does: retry with backoff (:class:`RetryableError`), split the
batch to find the poison rows (:class:`DataError`), or stall until a human acts
(:class:`StallError`). Two places look at an asyncpg exception before it gets here, each for a
decision of its own: the writer takes a unique violation of its optimistic COPY as "upsert this
table instead" (:class:`~agent.sink.writer.KeyConflict`), and the schema's CREATE EXTENSION
attempt takes a refusal as "use plain mode".
"""

from __future__ import annotations

import asyncio

import asyncpg

from agent.errors import DataError, RetryableError, SinkError, StallError

# SQLSTATE classes and codes, per PostgreSQL's Appendix A.
_RETRY_CLASSES = ("08", "53", "57", "58", "40", "55", "XX")
_DATA_CLASSES = ("22", "23")
# Retrying cannot fix these until a human acts: 0A feature not supported (e.g. DDL TimescaleDB refuses),
# 28 auth, 2B dependent objects, 3D/3F missing database/schema, 42 syntax/privilege/missing object,
# 0L/0P invalid grantor/role, 44 check option, P0 an exception raised by a schema block.
_STALL_CLASSES = ("0A", "28", "2B", "42", "3D", "3F", "0L", "0P", "44", "P0")
_RETRY_CODES = {"57014"}  # query_canceled (statement_timeout) is class 57 anyway; listed for clarity


def classify(exc: BaseException) -> SinkError:
    """The :class:`SinkError` subclass for ``exc``, carrying its SQLSTATE and message."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        return _classify_server(exc)
    if isinstance(exc, asyncpg.exceptions.DataError | ValueError | TypeError | OverflowError | UnicodeError):
        # Client-side encode failures (asyncpg.DataError: "invalid input for query argument").
        return DataError(f"client-side encode error: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | ConnectionError | EOFError):
        return RetryableError(f"connection problem: {type(exc).__name__}: {exc}")
    return RetryableError(f"unexpected error: {type(exc).__name__}: {exc}")


def _classify_server(exc: asyncpg.PostgresError) -> SinkError:
    state = str(getattr(exc, "sqlstate", "") or "")
    message = f"{state} {type(exc).__name__}: {exc}"
    detail = getattr(exc, "detail", None)
    if detail:
        message += f" ({detail})"
    if state in _RETRY_CODES or state.startswith(_RETRY_CLASSES):
        return RetryableError(message, sqlstate=state)
    if state.startswith(_DATA_CLASSES):
        return DataError(message, sqlstate=state)
    if state.startswith(_STALL_CLASSES):
        return StallError(message, sqlstate=state)
    return RetryableError(message, sqlstate=state)


NO_SCHEMA_HINT = (
    "this database has no hypertail tables: read the one the agent writes to (database.dsn, or -d NAME on the "
    "command line; `hypertail demo` writes to hypertail_demo), or create them with `hypertail migrate`"
)


def one_line(exc: BaseException) -> str:
    """SQLSTATE, message, detail and hint on one line: what a command prints before exiting 1.

    Operators get the server's own words (and its hint, which often names the fix) instead of a
    traceback; connection failures say what failed without the driver's internals.
    """
    if isinstance(exc, asyncpg.PostgresError):
        parts = [f"{exc.sqlstate} {getattr(exc, 'message', None) or exc}"]  # str() adds DETAIL/HINT lines
        for label in ("detail", "hint"):
            value = getattr(exc, label, None)
            if value:
                parts.append(f"{label}: {value}")
        if exc.sqlstate == "42P01" and any(f'"{s}.' in str(exc) for s in ("observability", "hypertail")):
            parts.append(NO_SCHEMA_HINT)
        return "; ".join(parts)
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | ConnectionError | EOFError):
        return f"cannot reach the database: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError, EOFError)
