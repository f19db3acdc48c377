"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling, in front of the test server.

The production shape for many sidecars: each agent holds client connections to PgBouncer, which
runs every transaction on whichever of its few server connections is free. Started on loopback
with a pool smaller than the number of agents, so that transactions really move between server
connections, and stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def available() -> bool:
    return Path(BINARY).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upstream(admin_dsn: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of the server behind ``admin_dsn``."""
    parts = urlsplit(admin_dsn)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or 5432
    if host.startswith("/"):  # a Unix socket directory: the port is in the socket's name
        sockets = sorted(Path(host).glob(".s.PGSQL.*[0-9]"))
        if sockets:
            port = int(sockets[0].name.rsplit(".", 1)[1])
    return host, port, parts.username or "postgres"


@dataclass
class PgBouncer:
    """One pgbouncer process; ``dsn_for(db)`` reaches ``db`` through it."""

    workdir: Path
    port: int
    user: str
    proc: subprocess.Popen[bytes]

    def dsn_for(self, database: str) -> str:
        return urlunsplit(("postgresql", f"{self.user}@127.0.0.1:{self.port}", "/" + database, "", ""))

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(admin_dsn: str, *, pool_size: int = 2, max_client_conn: int = 500) -> PgBouncer:
    """Start PgBouncer in ``pool_mode = transaction`` in front of the server at ``admin_dsn``."""
    host, upstream_port, user = _upstream(admin_dsn)
    workdir = Path(tempfile.mkdtemp(prefix="ht-pgbouncer-"))
    os.chmod(workdir, 0o755)
    port = _free_port()
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(f"""
[databases]
* = host={host} port={upstream_port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_client_conn}
max_db_connections = {pool_size}
server_reset_query =
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    cmd = [BINARY, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        owner = _run_as(host)
        shutil.chown(workdir, owner)
        for f in workdir.iterdir():
            shutil.chown(f, owner)
        cmd = [BINARY, "-u", owner, str(workdir / "pgbouncer.ini")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(workdir, port, user, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}: {log[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return bouncer
        time.sleep(0.05)
    bouncer.stop()
    raise RuntimeError("pgbouncer did not start listening within 20 s")


def _run_as(host: str) -> str:
    """A non-root user that can reach the server: the owner of its socket directory (the
    embedded server's keeps it private), else ``postgres``, else ``nobody``."""
    import pwd

    if host.startswith("/"):
        owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name
        if owner != "root":
            return owner
    return "postgres" if _user_exists("postgres") else "nobody"


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
