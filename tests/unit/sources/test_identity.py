"""Identity, generations, tail hashes (pure) and glob discovery."""

from __future__ import annotations

import os
from pathlib import Path

from agent.model import Checkpoint
from agent.sources.discovery import Globs, glob_regex
from agent.sources.identity import (
    FINGERPRINT_BYTES,
    fingerprint,
    identify,
    matches,
    newest_match,
    tail_hash,
    tail_ok,
)
from agent.sources.options import SourceSpec


def test_small_file_is_fingerprinted_over_what_it_has_and_still_matches_when_grown() -> None:
    ident = identify(1, 2, b"x" * 40)
    assert ident.fingerprint_len == 40
    assert matches(ident, b"x" * 40 + b"more bytes")
    assert not matches(ident, b"x" * 39)
    assert not matches(ident, b"y" + b"x" * 45)


def test_window_is_capped() -> None:
    assert identify(1, 2, b"a" * 5000).fingerprint_len == FINGERPRINT_BYTES


def test_next_generation_with_the_same_head_gets_another_key() -> None:
    first = identify(1, 2, b"same head, different tail\n")
    again = identify(1, 2, b"same head, different tail\nand more", predecessor=first)
    assert again.key != first.key and again.fingerprint_len == first.fingerprint_len - 1
    other = identify(1, 2, b"new content", predecessor=first)
    assert other == identify(1, 2, b"new content")
    cps = [Checkpoint(i, "/p", "s", 5, "") for i in (first, again)]
    assert newest_match(cps, b"same head, different tail\nxyz") is cps[1]


def test_tail_hash_covers_the_last_64_bytes() -> None:
    assert tail_hash(b"a" * 100 + b"b" * 64) == tail_hash(b"b" * 64)
    assert tail_hash(b"") != tail_hash(b"x")
    assert tail_ok("", b"anything") and not tail_ok("rewritten", b"")
    assert fingerprint(b"x") != fingerprint(b"y")


def test_glob_regex() -> None:
    rx = glob_regex("/var/log/**/app-?.log")
    assert rx.match("/var/log/app-1.log") and rx.match("/var/log/a/b/app-2.log")
    assert not rx.match("/var/log/app-10.log") and not rx.match("/var/log/app-1.log.1")
    assert glob_regex("*.[!t]xt").match("a.cxt") and not glob_regex("*.[!t]xt").match("a.txt")
    assert glob_regex("/a/**").match("/a/b/c")


def test_discovery_with_double_star_excludes_and_compressed(tmp_path: Path) -> None:
    for rel in ["a.log", "sub/deep/b.log", "sub/c.log.gz", "sub/skip.log", "d.txt", "e.log.1", "x.tmp.log"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"1\n")
    os.symlink(tmp_path / "a.log", tmp_path / "link.log")
    spec = SourceSpec("s", (f"{tmp_path}/**/*.log*",), exclude=("*.tmp.log", f"{tmp_path}/sub/skip.log"))
    found = Globs([spec], (".gz",)).scan()
    names = sorted(os.path.relpath(p, tmp_path) for f in found.values() for p in f.paths)
    assert names == ["a.log", "e.log.1", "link.log", "sub/deep/b.log"]
    assert len(found) == 3  # the symlink is the same inode as a.log


def test_watch_roots(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    specs = [SourceSpec("a", (f"{tmp_path}/logs/*.log", f"{tmp_path}/**/x.log", f"{tmp_path}/missing/*.log"))]
    assert Globs(specs, ()).watch_roots() == [(str(tmp_path), True), (f"{tmp_path}/logs", False)]
