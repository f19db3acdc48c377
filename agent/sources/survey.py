"""What the globs of each source match right now, glob by glob, without tailing anything.

The agent logs it once at start (``source.files``, and ``source.no_match`` for a glob that
matches nothing), and ``hypertail check-config --connect`` reports it. It is the same discovery
as the tailer's scan (:class:`~agent.sources.discovery.Globs`: excludes, compressed files and
the symbolic-link policy applied), so what it names is what the agent reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from agent.sources.discovery import Globs
from agent.sources.links import FollowSymlinks, LinkPolicy
from agent.sources.options import COMPRESSED_SUFFIXES, SourceSpec


@dataclass(frozen=True, slots=True)
class GlobMatch:
    """One glob of a source: the files it matches, and the folder it is watched from."""

    glob: str
    paths: tuple[str, ...]
    folder: str  # the fixed part before any wildcard: where new files would be noticed
    folder_exists: bool


@dataclass(frozen=True, slots=True)
class SourceFiles:
    """A source and what each of its globs matches (a file two globs match counts once)."""

    source: str
    globs: tuple[GlobMatch, ...]

    @property
    def paths(self) -> list[str]:
        return sorted({p for g in self.globs for p in g.paths})


def survey(specs: Sequence[SourceSpec], follow_symlinks: FollowSymlinks = "within_roots") -> list[SourceFiles]:
    """Each source's globs with the regular files they match now, in configuration order."""
    globs = Globs(specs, COMPRESSED_SUFFIXES)
    globs.policy = LinkPolicy(follow_symlinks, globs.roots())
    per_source: dict[str, list[GlobMatch]] = {s.name: [] for s in specs}
    for source, pattern, folder, paths in globs.per_glob():
        per_source[source].append(GlobMatch(pattern, tuple(paths), folder, os.path.isdir(folder)))
    return [SourceFiles(name, tuple(found)) for name, found in per_source.items()]

