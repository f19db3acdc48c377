"""Symbolic links on a log volume the application controls: never read outside the log roots.

In a sidecar the application's container can create any name on the shared volume, including
``evil.log -> /var/run/secrets/.../token`` or a link to ``database.password_file``. Whatever the
agent reads ends up in the database (a row, or a dead letter's ``raw``), so a link is an attack
on the agent's own secrets. The policy, ``tail.follow_symlinks``:

* ``within_roots`` (default): a path may go through links (of files or folders) as long as where
  it really leads is inside a *root*, the fixed folder prefix of some glob (``/var/log/app`` for
  ``/var/log/app/**/*.log``). Roots are resolved once, so a root that is itself a link (an
  operator's choice) is fine;
* ``never``: no link anywhere below the root (the file's real path is its globbed path);
* ``always``: follow anything (only for volumes the agent alone can write).

Checked twice, because the application can swap a name between our check and our open:

1. before opening, the path is resolved and checked (a refused target is never opened: opening a
   device can have side effects);
2. the *resolved* path is opened with ``O_NOFOLLOW`` (a link swapped in at the last component
   fails with ``ELOOP``), and afterwards the kernel's name of the open descriptor
   (``/proc/self/fd``; without ``/proc``: ``fstat`` compared with an ``lstat`` of the resolved
   path) must still be inside a root. A swap of a folder in between is caught there.

A refused path is a :class:`LinkRefused` (an ``OSError``): the caller reports it once, with the
link and its target, and never its contents.

Hard links are not links here: a hard link is another name of the same inode, inside the root by
construction, and cannot point to another filesystem. The log volume should be a filesystem of
its own (an ``emptyDir``), then no hard link can reach the agent's files; two names of one inode
are read once (files are tracked by inode).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from typing import Literal

from agent.sources.handles import Opener, current_path

FollowSymlinks = Literal["within_roots", "never", "always"]
FOLLOW_MODES: tuple[FollowSymlinks, ...] = ("within_roots", "never", "always")


class LinkRefused(OSError):
    """A path whose real target the policy forbids; carries the link and where it leads."""

    def __init__(self, path: str, target: str, reason: str) -> None:
        super().__init__(errno.EACCES, f"{path}: {reason} ({target})")
        self.path = path
        self.target = target
        self.reason = reason


class LinkPolicy:
    """Resolves globbed paths and refuses those leading outside the roots (see module doc)."""

    def __init__(self, mode: FollowSymlinks, roots: Iterable[str]) -> None:
        self.mode = mode
        lexical = sorted({os.path.abspath(r) for r in roots}, key=len, reverse=True)
        self.roots = [(r, os.path.realpath(r)) for r in lexical]  # (as written, resolved)
        self._dirs: dict[str, str] = {}

    def begin_scan(self) -> None:
        """Forget the folder cache: resolutions are valid for one scan only."""
        self._dirs = {}

    def resolve(self, path: str, is_link: bool) -> str:
        """The real path of ``path`` (``is_link``: its last component is a link), or raise
        :class:`LinkRefused`. Folders are resolved once per scan."""
        path = os.path.abspath(path)
        if is_link:
            real = os.path.realpath(path)
        else:
            folder, name = os.path.split(path)
            real_folder = self._dirs.get(folder)
            if real_folder is None:
                real_folder = self._dirs[folder] = os.path.realpath(folder)
            real = os.path.join(real_folder, name)
        self.check(path, real)
        return real

    def check(self, path: str, real: str) -> None:
        """Raise :class:`LinkRefused` unless the policy allows ``path`` to lead to ``real``."""
        if self.mode == "always":
            return
        if self.mode == "never":
            if real != self._unlinked(path):
                raise LinkRefused(path, real, 'a symbolic link (tail.follow_symlinks = "never")')
            return
        if not self.inside(real):
            raise LinkRefused(path, real, "a symbolic link to outside the log roots")

    def inside(self, real: str) -> bool:
        """Whether a resolved path is one of the resolved roots or below one."""
        return any(real == r or real.startswith(r.rstrip("/") + "/") for _, r in self.roots)

    def _unlinked(self, path: str) -> str | None:
        """Where ``path`` would really be if nothing below its root were a link."""
        for lexical, real_root in self.roots:
            if path == lexical or path.startswith(lexical.rstrip("/") + "/"):
                return real_root + path[len(lexical):]
        return None

    def open(self, opener: Opener, path: str) -> int:
        """Check, open the resolved path (``O_NOFOLLOW`` in the opener), check the descriptor."""
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except FileNotFoundError:
            is_link = False
        real = os.path.realpath(path) if is_link or self.mode != "always" else path
        self.check(os.path.abspath(path), real)
        try:
            fd = opener(real)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link swapped in after the check
                raise LinkRefused(path, real, "replaced by a symbolic link while being opened") from None
            raise
        if self.mode != "always":
            try:
                self._verify(fd, path, real)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _verify(self, fd: int, path: str, real: str) -> None:
        now = current_path(fd)
        if now is not None:
            now = now.removesuffix(" (deleted)")
            if not self.inside(now):
                raise LinkRefused(path, now, "swapped for a link to outside the log roots while being opened")
            return
        st, lst = os.fstat(fd), os.lstat(real)
        if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
            raise LinkRefused(path, real, "swapped while being opened")
