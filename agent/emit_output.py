"""Where :mod:`agent.emit` writes: counters, the line writer, the JSON serializer, processors.

Kept apart from the record helpers so that an application which configures structlog itself can
reuse the pieces (``render_json``, ``add_trace_context``, ``LineWriter``) without the rest.
Nothing here may raise into the application: every failure is counted and swallowed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Final

import orjson
import structlog

from agent.contract import DEFAULT_RECORD_TYPE_KEY

_OPTS: Final = orjson.OPT_NON_STR_KEYS
_MAX_DEPTH: Final = 64


class Stats:
    """Thread-safe counters: lines written, records dropped, values coerced to text."""

    __slots__ = ("_lock", "coerced", "dropped", "written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.coerced = 0

    def add(self, *, written: int = 0, dropped: int = 0, coerced: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dropped += dropped
            self.coerced += coerced

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "coerced": self.coerced}


STATS: Final = Stats()


class State:
    """What ``emit.configure()`` decided: where records go and under which discriminator key.

    Until ``configure()`` runs, records go through the application's own structlog setup.
    """

    logger: Any = structlog.get_logger("hypertail")
    writer: LineWriter | None = None
    key: str = DEFAULT_RECORD_TYPE_KEY


STATE: Final = State()


def write_record(kind: str, record: dict[str, Any]) -> None:
    """Hand one record to structlog; whatever goes wrong is a counted drop, never an exception."""
    record[STATE.key] = kind
    try:
        STATE.logger.info(kind, **record)
    except Exception:
        STATS.add(dropped=1)


# --- serializer --------------------------------------------------------------------------------

def dumps(obj: Any, **_ignored: Any) -> bytes:
    """orjson with a lenient fallback: anything becomes *some* JSON rather than an exception.

    Accepts (and ignores) the ``default=`` that structlog's JSONRenderer passes, so it can be used
    as ``JSONRenderer(serializer=dumps)``. Unknown types are rendered with ``str()``; integers
    beyond 64 bits, lone surrogates and over-deep or cyclic containers go through :func:`_safe`.
    """
    try:
        return orjson.dumps(obj, default=_default, option=_OPTS)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return orjson.dumps(_safe(obj, 0), option=_OPTS)


def dumps_text(obj: Any, **_ignored: Any) -> str:
    """:func:`dumps` as ``str``, for renderers whose output goes to a text stream."""
    return dumps(obj).decode("utf-8")


def _default(value: Any) -> Any:
    STATS.add(coerced=1)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else text_of(value)


def text_of(value: Any) -> str:
    """``str(value)`` as valid UTF-8, or a placeholder when ``__str__`` itself fails."""
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "replace").decode("utf-8")


def _safe(value: Any, depth: int) -> Any:
    """A JSON-native copy of ``value``: bounded depth, 64-bit integers, valid UTF-8."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, dict):
        return {text_of(k): _safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v, depth + 1) for v in value]
    try:
        native = orjson.loads(orjson.dumps(value, option=_OPTS))  # UUID, datetime, dataclass...
    except (TypeError, orjson.JSONEncodeError, orjson.JSONDecodeError):
        STATS.add(coerced=1)
        return text_of(value)
    return _safe(native, depth + 1)


# --- writer ------------------------------------------------------------------------------------

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
        assert self.path is not None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
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


# --- processors --------------------------------------------------------------------------------

EventDict = MutableMapping[str, Any]


def make_add_trace_context(
    current: Callable[[], tuple[str, str | None] | None], record_type_key: str
) -> Callable[[Any, str, EventDict], EventDict]:
    """A processor that stamps ordinary log lines with the active ``trace_id``/``span_id``."""

    def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if record_type_key not in event_dict:
            ids = current()
            if ids is not None:
                event_dict.setdefault("trace_id", ids[0])
                if ids[1] is not None:
                    event_dict.setdefault("span_id", ids[1])
        return event_dict

    return add_trace_context
