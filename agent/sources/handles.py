"""Low-level file access: opening (injectable, for tests), positional reads, small probes.

Reads use ``os.pread`` on raw descriptors: no Python-level buffering to keep in sync with the
offsets, no shared seek position, and a rotated-away file stays readable through its descriptor.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable

from agent.sources.identity import FINGERPRINT_BYTES, TAIL_BYTES

Opener = Callable[[str], int]
"""Opens a path read-only and returns a descriptor; raises ``OSError`` like :func:`os.open`."""


def default_open(path: str) -> int:
    """Open read-only. ``O_NONBLOCK`` so a FIFO swapped in under a log's name cannot hang us;
    ``O_NOFOLLOW`` because the caller passes resolved paths (see :mod:`.links`): a link found
    there was swapped in after the check."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)


def open_regular(opener: Opener, path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` and fstat it; raise ``OSError`` unless it is a regular file."""
    fd = opener(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_head(fd: int) -> bytes:
    """The first bytes of the file (up to the fingerprint window)."""
    return os.pread(fd, FINGERPRINT_BYTES, 0)


def read_before(fd: int, offset: int) -> bytes:
    """The up to ``TAIL_BYTES`` bytes just before ``offset`` (fewer if the file is shorter)."""
    n = min(offset, TAIL_BYTES)
    return os.pread(fd, n, offset - n) if n else b""


def last_line_start(fd: int, size: int, limit: int) -> int:
    """Offset just after the last newline before ``size``, looking back at most ``limit`` bytes.

    Used by ``start_at = "end"``: complete lines already there are skipped, but a line being
    written right now is read whole. With no newline in reach the scan starts at 0 (a file that
    is one partial line) or at ``size`` (the line is oversize anyway).
    """
    pos = size
    chunk = 1 << 16
    while pos > 0 and size - pos < limit:
        n = min(chunk, pos)
        data = os.pread(fd, n, pos - n)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return pos - n + nl + 1
        pos -= n
    return 0 if pos == 0 else size


def close_quietly(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def current_path(fd: int) -> str | None:
    """Where an open file lives now (Linux ``/proc``), for reports; ``None`` if unknown."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return path
