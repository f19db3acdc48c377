"""Which files the sources cover: include/exclude globs, stat, and the folders to watch.

The periodic scan here is the source of truth; filesystem events only make it run sooner. Globs
use :func:`glob.glob` with ``recursive=True``: ``**`` matches zero or more folders, ``*`` and
``?`` never cross a ``/``, and hidden files are matched only by patterns that name the dot.
Exclude patterns are matched against the full path, or against the file name when they contain
no ``/`` (so ``exclude = ["*.tmp"]`` does what it says).

Every matched path is ``lstat`` ed and resolved through :class:`~agent.sources.links.LinkPolicy`
before anything else: a link the policy refuses is never stat'ed through nor opened, only
remembered in :attr:`Globs.refused` for the report. Folders of sibling files (where rotations
land) are listed without following links for the same reason.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from agent.sources.links import LinkPolicy, LinkRefused
from agent.sources.options import SourceSpec

DevIno = tuple[int, int]
_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True, slots=True)
class Found:
    """A regular file some source's globs matched, as stat saw it during a scan."""

    source: str
    paths: tuple[str, ...]
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @property
    def path(self) -> str:
        return self.paths[0]

    @property
    def devino(self) -> DevIno:
        return (self.dev, self.ino)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching the paths ``pattern`` matches (``**`` = any number of folders)."""
    parts = pattern.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z")


def _segment(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        j = part.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif j > 0:
            body = part[i + 1 : j]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class Globs:
    """Compiled include/exclude rules of all sources, absolute paths."""

    def __init__(self, specs: Sequence[SourceSpec], compressed: tuple[str, ...],
                 policy: LinkPolicy | None = None) -> None:
        self.specs = [(s.name, [os.path.abspath(p) for p in s.paths], _excludes(s.exclude)) for s in specs]
        self.compressed = compressed
        self.policy = policy or LinkPolicy("within_roots", self.roots())
        self.refused: dict[str, tuple[str, LinkRefused]] = {}  # path -> (source, why), last scan

    def roots(self) -> list[str]:
        """The fixed folder prefix of every glob: where the files may really be."""
        return sorted({_static_base(p)[0] for _, patterns, _ in self.specs for p in patterns})

    def skip(self, path: str, excludes: list[tuple[re.Pattern[str], bool]]) -> bool:
        """Whether a matched path is excluded (by a pattern, or as a compressed file)."""
        if self.compressed and path.endswith(self.compressed):
            return True
        name = os.path.basename(path)
        return any(rx.match(name if by_name else path) for rx, by_name in excludes)

    def scan(self) -> dict[DevIno, Found]:
        """Stat every matching regular file; first source (then first path) wins a duplicate."""
        paths: dict[DevIno, list[str]] = {}
        found: dict[DevIno, Found] = {}
        self.refused = {}
        self.policy.begin_scan()
        for name, patterns, excludes in self.specs:
            for path in self._expand(patterns, excludes):
                st = self._stat(name, path)
                if st is None:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in found:
                    paths[key].append(path)
                    continue
                paths[key] = [path]
                found[key] = Found(name, (path,), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return {k: _with_paths(f, paths[k]) for k, f in found.items()}

    def _stat(self, source: str, path: str) -> os.stat_result | None:
        """Stat a regular file the policy lets us reach; remember refused links."""
        try:
            st = os.lstat(path)
            link = stat.S_ISLNK(st.st_mode)
            real = self.policy.resolve(path, link)
            if link:
                st = os.stat(real)
        except LinkRefused as exc:
            self.refused.setdefault(path, (source, exc))
            return None
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def per_glob(self) -> list[tuple[str, str, str, list[str]]]:
        """``(source, glob, its fixed folder, regular files it matches now)`` for every glob,
        excludes and the link policy applied as in :meth:`scan`: what the agent's start lines and
        ``check-config --connect`` report, glob by glob."""
        self.policy.begin_scan()
        return [(name, pattern, _static_base(pattern)[0],
                 [p for p in self._expand([pattern], excludes) if self._stat(name, p) is not None])
                for name, patterns, excludes in self.specs for pattern in patterns]

    def _expand(self, patterns: list[str], excludes: list[tuple[re.Pattern[str], bool]]) -> list[str]:
        out: set[str] = set()
        for pattern in patterns:
            out.update(p for p in glob.glob(pattern, recursive=True) if not self.skip(p, excludes))
        return sorted(out)

    def watch_roots(self) -> list[tuple[str, bool]]:
        """Existing folders to watch for events, and whether recursively."""
        roots: dict[str, bool] = {}
        for _, patterns, _ in self.specs:
            for pattern in patterns:
                base, recursive = _static_base(pattern)
                if os.path.isdir(base):
                    roots[base] = roots.get(base, False) or recursive
        return sorted(roots.items())


def _excludes(patterns: tuple[str, ...]) -> list[tuple[re.Pattern[str], bool]]:
    out = []
    for p in patterns:
        by_name = "/" not in p
        out.append((glob_regex(p if by_name else os.path.abspath(p)), by_name))
    return out


def _static_base(pattern: str) -> tuple[str, bool]:
    """The folder part of a pattern before any wildcard, and whether wildcards cross folders."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            return "/".join(fixed) or "/", True
        fixed.append(part)
    return "/".join(fixed) or "/", False


def _with_paths(f: Found, paths: list[str]) -> Found:
    if len(paths) == 1:
        return f
    return Found(f.source, tuple(paths), f.dev, f.ino, f.size, f.mtime_ns)


def siblings(path: str, compressed: tuple[str, ...]) -> Iterator[tuple[str, os.stat_result]]:
    """Regular, uncompressed files in the folder of ``path`` (where rotations usually land);
    symbolic links are not followed: a rotated file is never a link."""
    folder = os.path.dirname(path) or "."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if compressed and entry.name.endswith(compressed):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield entry.path, st
