"""What to tail and how: the values the runner hands to :class:`~agent.sources.Tailer`.

They are plain frozen dataclasses (not pydantic) so that the sources stage does not depend on the
configuration layer; ``agent.config`` validates operator input and builds these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from agent.errors import ConfigError
from agent.model import FileRef
from agent.sources.links import FOLLOW_MODES, FollowSymlinks
from agent.sources.reader import MAX_BLOCK_LINES

StartAt = Literal["beginning", "end"]

# Rotated-and-compressed files are never tailed: their bytes are not lines, and their content was
# already read from the plain file before logrotate compressed it.
COMPRESSED_SUFFIXES: tuple[str, ...] = (".gz", ".zst", ".bz2", ".xz")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One group of files: include globs (``**`` crosses folders), exclude globs, start policy.

    ``start_at`` applies only to files found by the first scan that no checkpoint knows (not even
    by device and inode): files that appear later are always read from their beginning, because
    they were created while we were watching and every line of them is new.
    """

    name: str
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    start_at: StartAt = "beginning"

    def __post_init__(self) -> None:
        if not self.paths or any(not p.strip() for p in self.paths):
            raise ConfigError(f"source {self.name!r}: paths must be non-empty globs", key="sources.paths")
        if self.start_at not in ("beginning", "end"):
            raise ConfigError(f"source {self.name!r}: start_at must be 'beginning' or 'end'",
                              key="sources.start_at", value=self.start_at)


@dataclass(frozen=True, slots=True)
class TailOptions:
    """Knobs of the tailing engine. Defaults suit ordinary application logs.

    * ``max_line_bytes``: a longer line becomes one ``oversize`` Block holding its first
      ``oversize_prefix_bytes`` bytes; memory stays bounded by this, whatever the line length.
    * ``rescan_interval_s``: the full glob + stat scan (the source of truth); events only wake it.
    * ``read_interval_s``: how often open files are checked for growth without any event, which
      also drains deleted files (writes to an unlinked inode raise no directory event).
    * ``use_events``: ``False`` = polling only, for filesystems that deliver no inotify events.
    * ``rotate_grace_s``: quiet period after which the unterminated tail of a rotated-away file
      is released as a line: its writer is gone, the newline will never come.
    * ``max_read_per_file`` / ``max_read_per_poll``: bytes read per step, so one huge file cannot
      starve the others nor build one enormous batch.
    * ``idle_close_s``: a fully read live file untouched this long is closed (reopened by path
      and verified by identity when it grows).
    * ``follow_symlinks``: ``within_roots`` | ``never`` | ``always``, see :mod:`.links`.
    * ``block_lines``: lines per :class:`~agent.model.Block` at most; a batch ends at a block end,
      so the runner keeps it no larger than ``batch.max_rows`` (see :mod:`.reader`).
    """

    max_line_bytes: int = 16 << 20
    oversize_prefix_bytes: int = 4096
    max_open_files: int = 256
    rescan_interval_s: float = 1.0
    read_interval_s: float = 0.25
    debounce_ms: int = 20
    use_events: bool = True
    rotate_grace_s: float = 5.0
    read_chunk: int = 1 << 18
    max_read_per_file: int = 1 << 20
    max_read_per_poll: int = 1 << 23
    idle_close_s: float = 60.0
    compressed_suffixes: tuple[str, ...] = COMPRESSED_SUFFIXES
    follow_symlinks: FollowSymlinks = "within_roots"
    block_lines: int = MAX_BLOCK_LINES

    def __post_init__(self) -> None:
        if self.follow_symlinks not in FOLLOW_MODES:
            raise ConfigError("tail.follow_symlinks must be within_roots, never or always",
                              key="tail.follow_symlinks", value=self.follow_symlinks)
        ints = {
            "max_line_bytes": self.max_line_bytes, "oversize_prefix_bytes": self.oversize_prefix_bytes,
            "max_open_files": self.max_open_files, "read_chunk": self.read_chunk,
            "max_read_per_file": self.max_read_per_file, "max_read_per_poll": self.max_read_per_poll,
            "debounce_ms": self.debounce_ms, "block_lines": self.block_lines,
        }
        for key, value in ints.items():
            if value < 1:
                raise ConfigError(f"tail.{key} must be at least 1", key=f"tail.{key}", value=value)
        floats = {
            "rescan_interval_s": self.rescan_interval_s, "read_interval_s": self.read_interval_s,
            "rotate_grace_s": self.rotate_grace_s, "idle_close_s": self.idle_close_s,
        }
        for key, fvalue in floats.items():
            if fvalue < 0 or math.isnan(fvalue):
                raise ConfigError(f"tail.{key} must be >= 0", key=f"tail.{key}", value=fvalue)


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One tracked file as status pages and metrics see it (``size - acked_offset`` = behind)."""

    file: FileRef
    path: str | None
    size: int
    read_offset: int
    acked_offset: int
    open: bool
    rotated: bool
