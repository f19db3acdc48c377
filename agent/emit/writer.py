"""Where :mod:`agent.emit` writes: whole lines appended to a file (rotated by rename) or a descriptor.

Nothing here may raise into the application once the file is open: a failed write is counted as
a drop (:data:`agent.emit.output.STATS`) and swallowed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import threading
from collections.abc import Iterator

from agent.emit.output import STATS


class LineWriter:
    """Appends whole lines to a file descriptor; rotates a file by rename when it grows too big.

    One ``os.write`` per line under a lock keeps lines whole across threads (and, with
    ``O_APPEND``, across processes). A short write (disk full) is rolled back with ``ftruncate`` so
    the tailing agent never sees half a line glued to the next one. Errors are counted as drops.

    **Several processes may share one path** (gunicorn/uvicorn/Celery workers each calling
    ``configure(path)``): before each line the writer ``stat`` s the path, so it always appends to
    the live file and sees its real size, not only its own bytes. Rotation is coordinated through
    an ``flock`` on a hidden lock file next to the log (``.<name>.lock``): under the lock, a
    process that finds the path already rotated by another one just reopens it, and the backups
    are shifted only by the process that rotates, so no freshly rotated file is ever renamed over.
    The oldest backup beyond ``backup_count`` is deleted, as with a single process.
    """

    def __init__(self, path: str | None = None, *, fd: int | None = None,
                 max_bytes: int = 64 * 2**20, backup_count: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._lock = threading.Lock()
        self._owned = fd is None and path is not None
        self._devino = (0, 0)
        self.fd = self._open() if self._owned else (_stdout_fd() if fd is None else fd)
        self._size = self._current_size()

    def _open(self) -> int:
        """Open ``path`` for appending, creating it and, like ``mkdir -p``, its missing folders:
        a log folder that does not exist yet (a first start) or no longer (a clean-up removed
        it) costs no line once it can be created again."""
        assert self.path is not None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        info = os.fstat(fd)
        self._devino = (info.st_dev, info.st_ino)
        return fd

    def _current_size(self) -> int:
        try:
            info = os.fstat(self.fd)
        except OSError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def write(self, line: bytes) -> bool:
        """Write one line (newline included by the caller); ``False`` if it was dropped."""
        with self._lock:
            try:
                if self._owned:
                    self._follow(len(line))
                self._write_all(line)
            except OSError:
                STATS.add(dropped=1)
                return False
            self._size += len(line)
        STATS.add(written=1)
        return True

    def _follow(self, n: int) -> None:
        """Point at the live file at ``path`` (another process may have rotated it, or someone
        removed it) and rotate it first if ``n`` more bytes would pass ``max_bytes``."""
        if not self._is_live():
            self._reopen()
        if self._size and self._size + n > self.max_bytes:
            self._rotate(n)

    def _is_live(self) -> bool:
        """Whether our descriptor is the file at ``path``; refreshes the shared size if so."""
        assert self.path is not None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (info.st_dev, info.st_ino) != self._devino:
            return False
        self._size = info.st_size
        return True

    def _reopen(self) -> None:
        old, self.fd = self.fd, self._open()
        self._size = self._current_size()
        os.close(old)

    def _write_all(self, line: bytes) -> None:
        done = 0
        try:
            while done < len(line):
                n = os.write(self.fd, line[done:] if done else line)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                done += n
        except OSError:
            if done:
                self._roll_back(done)
            raise

    def _roll_back(self, written: int) -> None:
        """Remove the partial line just appended, so the file still ends with a newline."""
        try:
            size = os.fstat(self.fd).st_size
            os.ftruncate(self.fd, max(0, size - written))
        except OSError:
            pass  # not a regular file: nothing to truncate

    def _rotate(self, n: int) -> None:
        """Rename ``path`` to ``path.1`` (shifting the backups), once across processes."""
        assert self.path is not None
        with _locked(_lock_path(self.path)):
            if not self._is_live():  # another process rotated while we waited for the lock
                self._reopen()
                if not self._size or self._size + n <= self.max_bytes:
                    return
            self._shift_backups()
            self._reopen()

    def _shift_backups(self) -> None:
        """Under the rotation lock: drop the oldest backup, move each one up, ``path`` to ``.1``.
        Each rename's target was just moved away (or never existed), so none overwrites a file."""
        assert self.path is not None
        if self.backup_count <= 0:
            os.unlink(self.path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.backup_count}")
        for i in range(self.backup_count - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.rename(self.path, f"{self.path}.1")

    def close(self) -> None:
        with self._lock:
            if self._owned:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self._owned = False


def _lock_path(path: str) -> str:
    """``dir/.name.lock``: hidden, so the agent's globs (``*.log``, ``*.log.*``) never match it."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.lock")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released on close. ``flock``
    rather than a lock library: the app side should pull in nothing it does not need, and a
    lock held by a process that dies is released by the kernel."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stdout_fd() -> int:
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return 1


class WriterLogger:
    """The structlog "logger" on top of a :class:`LineWriter`: every level writes one line."""

    __slots__ = ("writer",)

    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer

    def msg(self, message: bytes | str) -> None:
        data = message.encode("utf-8", "replace") if isinstance(message, str) else message
        self.writer.write(data + b"\n")

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = log = msg
