"""Connection arguments from :class:`~agent.config.DatabaseSettings`.

TLS settings travel inside the DSN's query string (``sslmode``, ``sslrootcert``, ``sslcert``,
``sslkey``), which asyncpg understands the same way libpq does, so what an operator knows from
``psql`` works unchanged. The password is passed separately so it never appears in a DSN that
could be logged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from agent.config import DatabaseSettings


def dsn_with_tls(db: DatabaseSettings, dsn: str) -> str:
    """``dsn`` with the TLS settings of ``db`` merged into its query string."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    extra = {
        "sslmode": db.sslmode,
        "sslrootcert": db.sslrootcert,
        "sslcert": db.sslcert,
        "sslkey": db.sslkey,
    }
    for key, value in extra.items():
        if value is not None:
            query[key] = str(value)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def connect_kwargs(db: DatabaseSettings, dsn: str) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect``: nothing that needs a session of its own.

    The same connection works directly and behind PgBouncer in transaction pooling (where each
    transaction may run on another server connection): no statement cache, so asyncpg names no
    prepared statement that a later transaction would miss; and no ``statement_timeout`` in the
    startup packet, which PgBouncer refuses; transactions ``SET LOCAL`` it instead. Only
    ``application_name`` is sent, which PgBouncer passes on.
    """
    kwargs: dict[str, Any] = {
        "dsn": dsn_with_tls(db, dsn),
        "timeout": db.connect_timeout_s,
        "statement_cache_size": 0,
        "server_settings": {"application_name": "hypertail"},
    }
    password = db.resolved_password()
    if password is not None:
        kwargs["password"] = password
    return kwargs


async def connect(db: DatabaseSettings, dsn: str) -> asyncpg.Connection:
    """One connection (for migrate, status and checks)."""
    return await asyncpg.connect(**connect_kwargs(db, dsn))
