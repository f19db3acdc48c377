"""One line's bytes, read again from the file it came from (``hypertail dead-letters --replay``).

A dead letter keeps only part of a line that was too long (its first bytes) or longer than
64 KiB; replaying it after ``tail.max_line_bytes`` was raised needs the whole line. The file must
still be the same file *generation*: same device and inode, and its first bytes must still have
the fingerprint the checkpoint recorded (a file rewritten in place, or a new file on a reused
inode, is another generation whose bytes at that offset are another line). It is looked for
under the dead letter's path, then among the files beside it (a rotation renamed it). Nothing
else is opened: a candidate's first bytes are read only to compare them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from agent.model import FileIdentity
from agent.sources.discovery import siblings
from agent.sources.handles import close_quietly, default_open, open_regular, read_head
from agent.sources.identity import matches
from agent.sources.options import COMPRESSED_SUFFIXES
from agent.sources.reader import BOM


class LineGone(Exception):
    """The line cannot be read again; the message says why."""


def read_line(path: str, identity: FileIdentity, start: int, end: int) -> bytes:
    """The line at ``[start, end)`` of the file generation ``identity``, cleaned as the reader
    cleans lines (its newline, a ``\\r`` before it and a BOM at offset 0 removed)."""
    for candidate in _candidates(path, identity):
        try:
            fd, st = open_regular(default_open, candidate)
        except OSError:
            continue
        try:
            if (st.st_dev, st.st_ino) != (identity.dev, identity.ino) or not matches(identity, read_head(fd)):
                continue
            if st.st_size < end:
                raise LineGone(f"{candidate} is shorter ({st.st_size} bytes) than the line's end ({end})")
            return _clean(os.pread(fd, end - start, start), start)
        finally:
            close_quietly(fd)
    raise LineGone(f"no file at {path} or beside it is the file the line came from any more (rotated away "
                   "and deleted, or rewritten)")


def _candidates(path: str, identity: FileIdentity) -> Iterator[str]:
    yield os.path.realpath(path)
    for other, st in siblings(path, COMPRESSED_SUFFIXES):
        if (st.st_dev, st.st_ino) == (identity.dev, identity.ino):
            yield other


def _clean(data: bytes, start: int) -> bytes:
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data[3:] if start == 0 and data.startswith(BOM) else data
